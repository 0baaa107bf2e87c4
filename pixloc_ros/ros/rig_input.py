"""The node's camera rig input (issue 30): one image/CameraInfo subscription per rig camera, frames
grouped by stamp (``core.tracking.rig_frames.RigFrameGrouper``), one ``RigFrame`` per instant for
the worker, which turns it into a ``RigFrameInput`` (one base_link pose from every camera).

Camera ``<name>`` listens to ``/<name>/image_raw`` and ``/<name>/camera_info`` unless the
``rig_image_topics`` / ``rig_camera_info_topics`` parameters say otherwise (``synth --rig``'s
layout, ``data.bags.rig_camera_topics``). Extrinsics (``base_from_camera``) come from the
``rig_extrinsics`` parameter (checked at start) or from /tf_static, looked up per instant for the
cameras present (``ros.rig_tf``), from each image's frame_id. Grouping is stamp-driven, so a bag
gives the same groups however fast it plays. A camera that stops leaves the group after
``2 x rig_wait_s`` of stamp time and rejoins with its next frame (one log line each, throttled
per camera and direction; ``active()`` and ``diagnostics()`` say who is in). A camera whose frame
of an instant is bad (undecodable image, bad CameraInfo) is left out of that instant only
(``frame_input``); the instant fails only when no camera is left.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from pixloc_ros.core.geometry.rig import Rig, RigCamera, extrinsics_from_parameters
from pixloc_ros.core.tracking.rig_frames import RigFrameGrouper, RigGroup
from pixloc_ros.core.tracking.rig_observe import RigFrameInput
from pixloc_ros.ros import conversions as conv
from pixloc_ros.ros.rig_tf import extrinsics_from_tf
from pixloc_ros.ros.sync import CameraSubscriber, Unmatched


@dataclass
class RigFrame:
    """One rig instant for the worker: each present camera's raw (image, CameraInfo), decoded on the worker."""

    stamp_ns: int  # the group's stamp: its first camera's in rig order (``RigGroup.stamp_ns``)
    frames: dict[str, tuple[Any, Any]]  # camera name -> (Image or CompressedImage, CameraInfo), rig order
    missing: tuple[str, ...]  # rig cameras without a frame at this instant
    received_s: float  # time.monotonic() when the group was complete (latency statistic)

    @property
    def image(self):
        """The first present camera's image (its frame_id names the heatmaps' frame)."""
        return next(iter(self.frames.values()))[0]


def rig_topics(names, image_topics, info_topics) -> list[tuple[str, str, str]]:
    """[(camera, image topic, CameraInfo topic)] in rig order; empty topic lists: ``/<name>/image_raw``,
    ``/<name>/camera_info``."""
    names = [str(n) for n in names]
    images = list(image_topics) or [f"/{n}/image_raw" for n in names]
    infos = list(info_topics) or [f"/{n}/camera_info" for n in names]
    return list(zip(names, images, infos))


class RigInput:
    """The rig's subscriptions and grouper. ``submit(RigFrame)`` gets each instant; ``admit(msg,
    is_image, camera)`` judges each message first (the node's stamp guard, one stream per camera);
    ``on_unmatched(item, camera, info_topic)`` gets images without CameraInfo; ``log``: a
    ``ThrottledLogger``."""

    def __init__(self, node, settings, qos, submit: Callable[[RigFrame], None],
                 admit: Callable[[Any, bool, str], bool], on_unmatched: Callable[[Unmatched, str, str], None],
                 log, warn: Callable[[str], None]):
        s = settings
        self.settings = s
        self.names = tuple(str(n) for n in s.rig_cameras)
        self.topics = rig_topics(self.names, s.rig_image_topics, s.rig_camera_info_topics)
        # Parameters are checked now (a setup error), tf per instant (it may come after the first frames).
        self.param_extrinsics = (extrinsics_from_parameters(list(self.names), [float(v) for v in s.rig_extrinsics])
                                 if s.rig_extrinsics else None)
        wait_ns = int(round(s.rig_wait_s * 1e9))
        self.grouper = RigFrameGrouper(self.names, int(round(s.rig_tolerance_s * 1e9)), wait_ns)
        self._submit, self._log = submit, log
        self.subs = []
        for name, image_topic, info_topic in self.topics:
            if s.image_transport == "compressed":
                image_topic = image_topic.rstrip("/") + "/compressed"
            self.subs.append(CameraSubscriber(
                node, image_topic, info_topic, qos, lambda image, info, n=name: self._on_pair(n, image, info),
                lambda item, n=name, t=info_topic: on_unmatched(item, n, t),
                compressed=s.image_transport == "compressed", tolerance_ns=int(round(s.sync_tolerance_s * 1e9)),
                image_reliability=s.image_reliability, admit=lambda msg, is_image, n=name: admit(msg, is_image, n),
                log=warn))
        self.events = 0  # membership changes since activation (diagnostics)

    @property
    def image_sub(self):
        """The anchor camera's image subscription (the diagnostics' reliability)."""
        return self.subs[0].image_sub

    def describe(self) -> str:
        """For the start log line: each camera's topics."""
        return ", ".join(f"{n}: {i} + {c}" for n, i, c in self.topics)

    def active(self) -> tuple[str, ...]:
        """Cameras in the group now, rig order."""
        return self.grouper.active()

    def diagnostics(self) -> dict[str, str]:
        """Key-values for /diagnostics: who is in the group, who is out."""
        active = self.active()
        return {"rig_cameras": ",".join(self.names), "rig_cameras_active": ",".join(active),
                "rig_cameras_out": ",".join(n for n in self.names if n not in active),
                "rig_membership_changes": str(self.events), "rig_late_frames": str(self.grouper.late_frames)}

    def reset(self) -> None:
        """Forget queued messages and frames (a restart of the data): every camera is in again."""
        for sub in self.subs:
            sub.sync.reset()
        self.grouper.reset()

    def destroy(self) -> None:
        """Remove every subscription (deactivate)."""
        for sub in self.subs:
            sub.destroy()
        self.grouper.reset()

    def _on_pair(self, name: str, image, info) -> None:
        groups = self.grouper.add(name, conv.stamp_to_ns(image.header.stamp), (image, info))
        for event in self.grouper.pop_events():
            self.events += 1
            active = ", ".join(self.grouper.active()) or "none"
            text = (f"Rig camera {event.camera!r} {'rejoined' if event.joined else 'left'} the group at "
                    f"{event.stamp_ns * 1e-9:.3f} s: {event.reason}; active: {active}")
            # Throttled per camera and direction: a flapping camera must not flood the log.
            self._log.warn(text, key=f"rig {event.camera} {event.joined}")
        for group in groups:
            self._submit(self._frame(group))

    @staticmethod
    def _frame(group: RigGroup) -> RigFrame:
        return RigFrame(group.stamp_ns, dict(group.frames), group.missing, time.monotonic())

    def frame_input(self, frame: RigFrame, base_frame: str, lookup, use_rectified: bool,
                    skipped: Callable[[str, str], None]) -> tuple[RigFrameInput, np.ndarray]:
        """On the worker: RigFrame -> (RigFrameInput, the anchor's rgb (H, W, 3) uint8). A camera
        whose image, CameraInfo or extrinsic is bad is left out of this instant (``skipped(camera,
        why)``); ValueError naming every camera's problem when none is left."""
        cameras, images, problems = [], [], []
        for name, (image, info) in frame.frames.items():
            try:
                rgb, camera = conv.camera_frame_to_rgb(image, info, self.settings.image_transport == "compressed",
                                                       use_rectified)
                if self.param_extrinsics is not None:
                    T = self.param_extrinsics[name]
                else:
                    T = extrinsics_from_tf(lookup, base_frame, {name: image.header.frame_id.lstrip("/")})[name]
                cameras.append(RigCamera(name, camera, T))
                images.append(rgb)
            except ValueError as err:
                problems.append(f"camera {name!r}: {err}")
                skipped(name, str(err))
        if not cameras:
            raise ValueError("no rig camera usable at this instant: " + "; ".join(problems))
        return RigFrameInput(frame.stamp_ns, Rig(cameras), images), images[0]


__all__ = ["RigFrame", "RigInput", "rig_topics"]
