"""The synthetic car's camera rig (issue 30): where each camera sits on base_link, and the topics
and frame a rig bag records it under.

``rig_mounts(names)`` places the cameras named in ``MOUNTS`` (front, left, right, rear) on the roof,
each the project's forward camera (``drive.base_from_camera``: optical frame pitched down 2 deg,
1.5 m up) turned about base_link's z by its yaw. The front camera of a rig is exactly the
single-camera ``base_from_cam``. Each camera records on ``/<name>/image_raw`` and
``/<name>/camera_info`` with frame id ``<name>_camera_optical_frame`` (``RigMount``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pixloc_ros.core.geometry.transforms import make_transform, rot_z
from pixloc_ros.data.bags import DriveTopics, rig_camera_frame, rig_camera_topics
from pixloc_ros.data.sim.drive import base_from_camera

DEFAULT_RIG = ("front", "left", "right")
# name -> (yaw about base_link z in degrees, (x, y) on base_link in metres): a roof rack.
MOUNTS = {"front": (0.0, (1.2, 0.0)), "left": (90.0, (0.9, 0.6)), "right": (-90.0, (0.9, -0.6)),
          "rear": (180.0, (-0.6, 0.0))}


@dataclass(frozen=True)
class RigMount:
    """One camera of the synthetic rig."""

    name: str
    base_from_cam: np.ndarray  # (4, 4) base_link -> this camera's optical frame
    topics: DriveTopics  # its image and camera_info topics (the drive's other topics as usual)
    frame_id: str  # its optical frame id (images, CameraInfo, /tf_static child)


def parse_rig(text: str) -> tuple[str, ...]:
    """"front,left,right" -> ("front", "left", "right"); ValueError for unknown or repeated names."""
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in MOUNTS]
    if not names or unknown:
        raise ValueError(f"unknown rig cameras {unknown or [text]}; known: {sorted(MOUNTS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"rig cameras repeat: {list(names)}")
    return names


def rig_mounts(names=DEFAULT_RIG, height_m: float = 1.5, pitch_down_deg: float = 2.0) -> list[RigMount]:
    """The mounts of the named cameras, in the order given (the first is the rig's anchor)."""
    names = parse_rig(",".join(names))
    front = base_from_camera(height_m=height_m, forward_m=0.0, pitch_down_deg=pitch_down_deg)
    out = []
    for name in names:
        yaw, (x, y) = MOUNTS[name]
        T = make_transform(rot_z(math.radians(yaw)) @ front[:3, :3], (x, y, height_m))
        out.append(RigMount(name, T, rig_camera_topics(name), rig_camera_frame(name)))
    return out


__all__ = ["DEFAULT_RIG", "MOUNTS", "RigMount", "parse_rig", "rig_mounts"]
