"""A dataset's cameras as one rig (issue 30): instants, extrinsics from the per-image poses, the rig's
ground truth.

CMU Seasons and RobotCar Seasons publish one pose per image, not a calibrated rig. The cameras of
one vehicle are rigid, so at every instant where two of them have a pose, their relative pose is the
same: ``anchor_from_cam = anchor_from_world @ world_from_cam``. ``rig_extrinsics`` takes that relative
pose over every posed instant of a drive, averages it (rotation: ``scipy``'s chordal mean, translation:
the mean), checks that each instant lies within a tolerance of the mean (a camera that is not rigid
with the others, or clocks further apart than the grouping tolerance while the car moves, fail here
with one line that says so) and chains it to ``base_from_anchor`` (the dataset's published car frame
when there is one, else the anchor camera upright: ``ImportPlan.base_from_cam_of``).

Instants (``group_instants``): the frames of the rig's cameras whose stamps lie within
``tolerance_ns`` of the instant's first frame, one per camera; the instant's stamp is the anchor
camera's (the first camera in rig order present), as ``core.tracking.rig_frames.RigGroup``'s.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.spatial.transform import Rotation

from pixloc_ros.core.geometry.metrics import pose_errors
from pixloc_ros.core.geometry.transforms import invert_transform, make_transform

from .common import Frame


@dataclass
class Instant:
    """The frames of the rig's cameras taken at (about) one time."""

    frames: dict[str, Frame]  # camera name -> its frame, rig order

    @property
    def stamp_ns(self) -> int:
        """The stamp of the first camera present in rig order (the anchor's when it is there)."""
        return next(iter(self.frames.values())).stamp_ns

    @property
    def spread_ns(self) -> int:
        """Newest minus oldest frame stamp."""
        stamps = [f.stamp_ns for f in self.frames.values()]
        return max(stamps) - min(stamps)


@dataclass
class RigExtrinsics:
    """The extrinsics of one drive's rig and how well the instants agree on them."""

    base_from_cam: dict[str, np.ndarray]  # camera -> (4, 4), rig order
    source: str  # where they come from (for import.json): "poses of N instants", ...
    max_deviation_m: float = 0.0  # largest distance of one instant's relative pose from the mean, metres
    max_deviation_deg: float = 0.0  # and its largest rotation from the mean, degrees
    instants: dict[str, int] = field(default_factory=dict)  # camera -> posed instants it was estimated from


def group_instants(frames: list[Frame], cameras: list[str], tolerance_ns: int) -> list[Instant]:
    """The frames of ``cameras`` (rig order) grouped into instants, in time order.

    A frame joins the open instant when it is within ``tolerance_ns`` of the instant's first frame and
    its camera has no frame there yet; otherwise it opens the next instant. Frames of other cameras
    are ignored. ValueError when one camera has two frames within the tolerance (duplicate stamps).
    """
    order = {name: k for k, name in enumerate(cameras)}
    ordered = sorted((f for f in frames if f.camera in order), key=lambda f: (f.stamp_ns, order[f.camera]))
    instants: list[dict[str, Frame]] = []
    first = None
    for f in ordered:
        if instants and f.stamp_ns - first <= tolerance_ns and f.camera not in instants[-1]:
            instants[-1][f.camera] = f
            continue
        if instants and f.camera in instants[-1] and f.stamp_ns - instants[-1][f.camera].stamp_ns <= tolerance_ns:
            raise ValueError(f"camera {f.camera} has two frames {f.stamp_ns - instants[-1][f.camera].stamp_ns} ns "
                             f"apart ({instants[-1][f.camera].name}, {f.name}): within the rig's stamp tolerance "
                             f"({tolerance_ns * 1e-9:g} s)")
        instants.append({f.camera: f})
        first = f.stamp_ns
    return [Instant({name: inst[name] for name in cameras if name in inst}) for inst in instants]


def cam_from_world(f: Frame) -> np.ndarray:
    """(4, 4) cam_from_world of a posed frame."""
    return make_transform(f.R, f.t)


def rig_extrinsics(instants: list[Instant], cameras: list[str], base_from_anchor: np.ndarray, what: str,
                   max_deviation_m: float, max_deviation_deg: float) -> RigExtrinsics | None:
    """Each camera's ``base_from_cam`` (4, 4) from the relative poses of the posed ``instants``.

    cameras: rig order, the first the anchor (``base_from_anchor`` (4, 4) its extrinsic). what: names
    the drive in errors. Returns None when some camera shares no posed instant with the anchor (the
    caller falls back to other instants). ValueError when one instant's relative pose is more than
    ``max_deviation_m`` metres or ``max_deviation_deg`` degrees from the mean: the cameras are then
    no rigid rig of one instant.
    """
    anchor = cameras[0]
    out = {anchor: np.asarray(base_from_anchor, np.float64)}
    counts = {anchor: sum(1 for i in instants if anchor in i.frames and i.frames[anchor].has_pose)}
    worst_m = worst_deg = 0.0
    for name in cameras[1:]:
        pairs = [i for i in instants if anchor in i.frames and name in i.frames
                 and i.frames[anchor].has_pose and i.frames[name].has_pose]
        if not pairs:
            return None
        # anchor_from_cam = anchor_from_world @ world_from_cam, one per instant
        rel = np.stack([cam_from_world(i.frames[anchor]) @ invert_transform(cam_from_world(i.frames[name]))
                        for i in pairs])
        mean_R = Rotation.from_matrix(rel[:, :3, :3]).mean().as_matrix()
        mean_t = rel[:, :3, 3].mean(0)
        dist = np.linalg.norm(rel[:, :3, 3] - mean_t, axis=1)
        angle = Rotation.from_matrix(np.einsum("ji,njk->nik", mean_R, rel[:, :3, :3])).magnitude()
        angle_deg = np.degrees(angle)
        k = int(np.argmax(np.maximum(dist / max(max_deviation_m, 1e-12), angle_deg / max(max_deviation_deg, 1e-12))))
        if dist[k] > max_deviation_m or angle_deg[k] > max_deviation_deg:
            i = pairs[k]
            raise ValueError(
                f"{what}: the pose of camera {name} relative to {anchor} is not constant: at "
                f"{i.frames[anchor].name} / {i.frames[name].name} it is {dist[k]:.3f} m / {angle_deg[k]:.2f} deg from "
                f"its mean over {len(pairs)} instants (limit {max_deviation_m:g} m / {max_deviation_deg:g} deg): "
                "the cameras are no rigid rig or their stamps are too far apart; import with --per-camera, "
                "or loosen --extrinsics-tolerance")
        worst_m, worst_deg = max(worst_m, float(dist.max())), max(worst_deg, float(angle_deg.max()))
        out[name] = out[anchor] @ make_transform(mean_R, mean_t)
        counts[name] = len(pairs)
    n = min(counts[c] for c in cameras[1:]) if len(cameras) > 1 else counts[anchor]
    return RigExtrinsics(out, f"the relative poses at {n} instants of {what}", worst_m, worst_deg, counts)


def instant_truth(instant: Instant, base_from_cam: dict[str, np.ndarray]) -> np.ndarray | None:
    """(4, 4) world_from_base of an instant from its first posed camera in rig order
    (``world_from_cam @ cam_from_base``); None when no camera of the instant has a pose."""
    for name, f in instant.frames.items():
        if f.has_pose:
            return invert_transform(cam_from_world(f)) @ invert_transform(base_from_cam[name])
    return None


def check_extrinsics_agree(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> tuple[float, float]:
    """Largest (metres, degrees) between two sets of extrinsics of the same cameras."""
    worst_m = worst_deg = 0.0
    for name in a:
        if name in b:
            dt, dr = pose_errors(a[name][:3, :3], a[name][:3, 3], b[name][:3, :3], b[name][:3, 3])
            worst_m, worst_deg = max(worst_m, float(dt)), max(worst_deg, float(dr))
    return worst_m, worst_deg


__all__ = ["Instant", "RigExtrinsics", "cam_from_world", "check_extrinsics_agree", "group_instants",
           "instant_truth", "rig_extrinsics"]
