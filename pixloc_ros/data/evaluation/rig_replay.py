"""Offline replay of a rig drive (issue 30): every camera of one bag, grouped by stamp, through the
pipeline as ``RigFrameInput``s, scored like a single-camera drive (``offline.replay_frames``).

A rig bag records camera ``<name>`` on ``/<name>/image_raw`` and ``/<name>/camera_info``
(``synth --rig``'s layout; ``data.bags.rig_camera_topics``), the cameras' extrinsics on /tf_static, and one drive's
odometry, GNSS and ground truth. Frames are grouped as the node would group them
(``core.tracking.rig_frames.RigFrameGrouper``): a camera missing from an instant leaves that
group only.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from ...core.geometry.rig import Rig, RigCamera
from ...core.tracking.pipeline import RelocalizationPipeline
from ...core.tracking.rig_frames import RigFrameGrouper, RigGroup
from ...core.tracking.rig_observe import RigFrameInput
from ..bags import BASE_FRAME, Drive, read_drive, rig_camera_topics
from .offline import DriveEvaluation, camera_from_info, replay_frames


def read_rig_drive(bag_dir: str | Path, names, base_frame: str = BASE_FRAME) -> tuple[Rig, dict[str, Drive]]:
    """(the rig: intrinsics from each camera's first CameraInfo, extrinsics from /tf_static; {camera:
    its Drive}) of a rig bag. ValueError naming a camera without images, CameraInfo or extrinsic."""
    drives, cameras = {}, []
    for name in names:
        topics = rig_camera_topics(name)
        drive = read_drive(bag_dir, topics)
        if not drive.frames or drive.camera_info is None:
            raise ValueError(f"rig camera {name!r}: no images with CameraInfo on {topics.image} / {topics.camera_info} "
                             f"in {bag_dir}")
        try:
            base_from_cam = drive.base_from_camera(base_frame)
        except KeyError:
            raise ValueError(f"rig camera {name!r}: no {base_frame} -> {drive.frames[0].frame_id!r} on /tf_static "
                             f"in {bag_dir}") from None
        drives[name] = drive
        cameras.append(RigCamera(name, camera_from_info(drive.camera_info), base_from_cam))
    return Rig(cameras), drives


def group_rig_frames(rig: Rig, drives: dict[str, Drive], tolerance_ns: int) -> list[RigGroup]:
    """Every camera's frames grouped by stamp (``RigFrameGrouper``; waiting one frame period at most)."""
    items = sorted(((f.stamp_ns, k, name, f) for k, name in enumerate(rig.names) for f in drives[name].frames),
                   key=lambda x: (x[0], x[1]))
    stamps = sorted({s for s, *_ in items})
    period = min((b - a for a, b in zip(stamps, stamps[1:]) if b - a > tolerance_ns), default=10 ** 9)
    grouper = RigFrameGrouper(rig.names, tolerance_ns, wait_ns=period, out_after_ns=3 * period)
    groups = []
    for stamp, _, name, frame in items:
        groups += grouper.add(name, stamp, frame)
    return groups + grouper.flush()


def evaluate_rig_drive(pipeline: RelocalizationPipeline, bag_dir: str | Path, names, *, max_frames: int | None = None,
                       use_gnss: bool = True, on_frame: Callable | None = None, progress: bool = False,
                       tolerance_ns: int = 10_000_000, overlap: bool = False) -> DriveEvaluation:
    """Replay the rig bag at ``bag_dir`` (cameras ``names``, the first the anchor) through ``pipeline``
    and score it against the ground truth. max_frames: stop after this many instants; ``on_frame``
    receives each output with the anchor camera's ``FrameInput`` (plots and heatmaps);
    tolerance_ns: largest stamp difference of one instant's frames; overlap: the next instant's
    networks on a second thread (``evaluate_drive``'s)."""
    rig, drives = read_rig_drive(bag_dir, names)
    groups = group_rig_frames(rig, drives, tolerance_ns)[:max_frames]

    def make_frame(group: RigGroup) -> RigFrameInput:
        sub = rig.subset(group.frames)
        return RigFrameInput(group.stamp_ns, sub, [group.frames[n].image for n in sub.names])

    def anchor_view(out, frame: RigFrameInput):
        on_frame(out, frame.anchor_frame())

    return replay_frames(pipeline, drives[rig.names[0]], [(g.stamp_ns, g) for g in groups], make_frame,
                         use_gnss=use_gnss, on_frame=anchor_view if on_frame else None, progress=progress,
                         overlap=overlap)


__all__ = ["evaluate_rig_drive", "group_rig_frames", "read_rig_drive"]
