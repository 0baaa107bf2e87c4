"""A camera rig's extrinsics on tf (issue 30): from /tf_static or from parameters, and back.

``rig_extrinsics(base_frame, camera_frames, lookup, parameter_values)`` gives each camera's
``base_from_camera`` (4x4): from the ``rig_extrinsics`` parameter when it is set (7 values per
camera, ``x y z qx qy qz qw``, ``geometry.rig.extrinsics_from_parameters``), else from the static
tf tree (``tf.StaticTransformLookup``: tf2_ros where installed, chains through intermediate frames
such as ``camera_link`` included). ``rig_static_transforms`` is the other direction: the
``TransformStamped`` list that puts a rig on /tf_static (what a robot_state_publisher with the
vehicle's URDF, or a bag's /tf_static, carries).
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from geometry_msgs.msg import TransformStamped

from pixloc_ros.core.geometry.rig import Rig, extrinsics_from_parameters
from pixloc_ros.ros.conversions import make_header, matrix_to_transform_msg


def camera_frame_map(names, frames) -> dict[str, str]:
    """{camera name: its optical frame id} from two equal-length lists (parameters); ValueError
    for unequal lengths, empty or repeated frame ids (two cameras cannot share an optical frame)."""
    names, frames = [str(n) for n in names], [str(f) for f in frames]
    if len(names) != len(frames):
        raise ValueError(f"{len(names)} rig cameras {names} but {len(frames)} camera frames {frames}")
    if any(not f or f.startswith("/") for f in frames):
        raise ValueError(f"rig camera frames must be non-empty tf frame ids without a leading '/', got {frames}")
    if len(set(frames)) != len(frames):
        raise ValueError(f"rig cameras need distinct optical frames, got {frames}")
    return dict(zip(names, frames))


def rig_static_transforms(rig: Rig, base_frame: str, camera_frames: Mapping[str, str],
                          stamp_ns: int = 0) -> list[TransformStamped]:
    """One ``base_frame -> camera frame`` TransformStamped per rig camera (``base_from_camera``),
    for a StaticTransformBroadcaster or a bag's /tf_static. camera_frames: {camera name: frame id}."""
    missing = [n for n in rig.names if n not in camera_frames]
    if missing:
        raise ValueError(f"no frame id for rig cameras {missing}")
    out = []
    for rc in rig.cameras:
        t = TransformStamped(child_frame_id=camera_frames[rc.name])
        t.header = make_header(stamp_ns, base_frame)
        t.transform = matrix_to_transform_msg(rc.base_from_camera)
        out.append(t)
    return out


def extrinsics_from_tf(lookup, base_frame: str, camera_frames: Mapping[str, str]) -> dict[str, np.ndarray]:
    """{camera name: base_from_camera (4, 4)} looked up on the static tf tree (``lookup.lookup(target,
    source)``, never waiting). ValueError naming every camera whose transform is not there yet, so
    a caller can retry (the node: skip the frame with that status) or fail at start."""
    found, missing = {}, []
    for name, frame in camera_frames.items():
        T = lookup.lookup(base_frame, frame)
        if T is None:
            missing.append(f"{name} ({frame})")
        else:
            found[name] = np.asarray(T, np.float64)
    if missing:
        raise ValueError(f"no transform {base_frame} <- camera frame on /tf_static for rig cameras "
                         f"{', '.join(missing)} (or set the rig_extrinsics parameter)")
    return found


def rig_extrinsics(base_frame: str, camera_frames: Mapping[str, str], lookup=None,
                   parameter_values=None) -> dict[str, np.ndarray]:
    """Every rig camera's ``base_from_camera``: from ``parameter_values`` (flat, 7 per camera in the
    order of ``camera_frames``) when given and non-empty, else from tf through ``lookup``.
    ValueError: malformed parameters, or cameras not on tf (naming them)."""
    if parameter_values is not None and len(parameter_values) > 0:
        return extrinsics_from_parameters(list(camera_frames), parameter_values)
    if lookup is None:
        raise ValueError("rig extrinsics need the rig_extrinsics parameter or a tf lookup")
    return extrinsics_from_tf(lookup, base_frame, camera_frames)


__all__ = ["camera_frame_map", "extrinsics_from_tf", "rig_extrinsics", "rig_static_transforms"]
