"""One rig drive of an import (issue 30): every camera of one drive in one bag, the extrinsics from the
dataset's poses on /tf_static, one ground truth and GNSS fix per instant (``output.write_import``
calls ``write_rig_sequence`` per drive when the plan is a rig).

The bag is what ``synth --rig`` writes and ``pixloc-ros evaluate --rig <cameras>`` and the node's
``rig_cameras`` read as they are: ``/<camera>/image_raw`` + ``/<camera>/camera_info`` (frame
``<camera>_camera_optical_frame``), base_link -> each camera on ``/tf_static``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from pixloc_ros.core.geometry.georef import Georeference
from pixloc_ros.core.geometry.transforms import quat_xyzw_from_matrix

from .common import Frame, ImportPlan
from .gnss import GnssNoise, synthesize_gnss
from .rig import RigExtrinsics, check_extrinsics_agree, group_instants, instant_truth, rig_extrinsics


@dataclass(frozen=True)
class RigCheck:
    """How a rig import groups and checks: the largest stamp difference of one instant's frames
    (the node's ``rig_tolerance_s`` and ``evaluate --rig`` group with 0.01 s), and how far one
    instant's relative camera pose may be from the drive's mean."""

    tolerance_ns: int = 10_000_000
    max_deviation_m: float = 0.1
    max_deviation_deg: float = 1.0


@dataclass
class RigDrive:
    """What ``write_rig_sequence`` wrote."""

    instants: int
    frames: int
    posed_instants: int
    extrinsics: RigExtrinsics
    published_deviation: tuple[float, float] | None  # (m, deg) from the dataset's published extrinsics
    start_ns: int  # first instant's stamp
    end_ns: int  # last instant's stamp


def reference_extrinsics(plan: ImportPlan, reference: list[Frame], check: RigCheck) -> RigExtrinsics:
    """The rig's extrinsics from the reference images' instants (for a drive whose own instants pair
    no camera with the anchor), else the dataset's published ones; ValueError when neither exists."""
    cams = plan.rig_cameras
    ext = rig_extrinsics(group_instants(reference, cams, check.tolerance_ns), cams, plan.base_from_cam_of(cams[0]),
                         "the reference images", check.max_deviation_m, check.max_deviation_deg)
    if ext is not None:
        return ext
    if all(c in plan.base_from_cam for c in cams):
        return RigExtrinsics({c: plan.base_from_cam_of(c) for c in cams}, "published extrinsics")
    raise ValueError(f"cannot compute the extrinsics of cameras {cams}: no instant (frames within "
                     f"{check.tolerance_ns * 1e-9:g} s) where the anchor {cams[0]} and each other camera have a pose, "
                     "neither in the query drives nor in the reference images: import with --per-camera, or, when the "
                     "cameras' clocks are further apart, raise --rig-tolerance (and the node's rig_tolerance_s with it)")


def write_rig_sequence(queries_dir: Path, name: str, frames: list[Frame], plan: ImportPlan, georef: Georeference,
                       noise: GnssNoise, compressed: bool, check: RigCheck,
                       fallback: Callable[[], RigExtrinsics], max_instants: int | None = None) -> RigDrive:
    """One rig drive (``frames``: every camera's frames, map frame) -> ``queries_dir/<name>/`` (MCAP) and
    ``<name>_gt.txt`` (TUM map_from_base per instant with a pose).

    Extrinsics: from the drive's own posed instants (``rig.rig_extrinsics``, checked constant), else
    ``fallback()``. max_instants: keep the first so many instants.
    """
    from .bagwriter import write_rig_bag

    cams = plan.rig_cameras
    instants = group_instants(frames, cams, check.tolerance_ns)[:max_instants]
    if not instants:
        raise ValueError(f"drive {name}: no frame of cameras {cams}")
    ext = rig_extrinsics(instants, cams, plan.base_from_cam_of(cams[0]), f"drive {name}", check.max_deviation_m,
                         check.max_deviation_deg) or fallback()
    truth = {}
    for inst in instants:
        T = instant_truth(inst, ext.base_from_cam)
        if T is not None:
            truth[inst.stamp_ns] = T
    stamps = np.array(sorted(truth), np.int64)
    fixes = synthesize_gnss(stamps, np.array([truth[s][:3, 3] for s in stamps]).reshape(-1, 3), georef, noise)
    from pixloc_ros.data.bags import GnssFix
    gnss = {int(s): GnssFix(int(s), float(fixes.latitude_deg[i]), float(fixes.longitude_deg[i]),
                            float(fixes.altitude_m[i]), fixes.covariance_enu) for i, s in enumerate(stamps)}
    queries_dir.mkdir(parents=True, exist_ok=True)
    write_rig_bag(queries_dir / name, instants, {c: plan.cameras[c] for c in cams}, ext.base_from_cam, truth, gnss,
                  compressed)
    lines = ["# stamp_s x y z qx qy qz qw  (map_from_base_link, one per rig instant)"]
    for s in stamps:
        T = truth[int(s)]
        q = quat_xyzw_from_matrix(T[:3, :3])
        lines.append(f"{s // 10**9}.{s % 10**9:09d} " + " ".join(f"{v:.9f}" for v in (*T[:3, 3], *q)))
    (queries_dir / f"{name}_gt.txt").write_text("\n".join(lines) + "\n")
    published = ({c: plan.base_from_cam[c] for c in cams}
                 if all(c in plan.base_from_cam for c in cams) else None)
    return RigDrive(len(instants), sum(len(i.frames) for i in instants), len(truth), ext,
                    check_extrinsics_agree(ext.base_from_cam, published) if published else None,
                    instants[0].stamp_ns, instants[-1].stamp_ns)


__all__ = ["RigCheck", "RigDrive", "reference_extrinsics", "write_rig_sequence"]
