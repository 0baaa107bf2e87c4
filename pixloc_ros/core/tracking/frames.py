"""What goes into the pipeline per camera frame and what comes out: the node state, the frame, the
estimate a decision was about (shared with the offline records), and the frame's output with its
reason code and events. Poses are (4, 4) float64 numpy arrays named ``a_from_b``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

from ..engine.localizer import LocalizationResult, NetworkOutput
from ..geometry.camera import Camera
from ..geometry.transforms import check_transform
from .reasons import OK, Why


class State(IntEnum):
    """Node state; the values match LocalizationStatus.STATE_*."""

    NOT_INITIALIZED = 0
    RELOCALIZING = 1
    TRACKING = 2
    LOST = 3


@dataclass
class FrameInput:
    """One camera frame: the image, its camera and the camera's mounting on base_link."""

    stamp_ns: int
    image_rgb: np.ndarray  # (H, W, 3) uint8
    camera: Camera  # single camera of that image, pixel-centre origin
    base_from_cam: np.ndarray  # (4, 4) camera optical frame -> base_link


def check_frame(frame: FrameInput) -> np.ndarray:
    """ValueError for an image that is not (H, W, 3) uint8, or does not match its camera, or a
    broken extrinsic; the checked ``base_from_cam`` (4, 4)."""
    image = frame.image_rgb
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8 RGB, got "
                         f"{getattr(image, 'shape', None)} {getattr(image, 'dtype', type(image).__name__)}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError("image is empty (0 pixels)")
    w, h = (float(v) for v in frame.camera.size.reshape(-1)[:2])
    if (int(round(w)), int(round(h))) != (image.shape[1], image.shape[0]):
        raise ValueError(f"camera is {w:.0f}x{h:.0f} but the image is {image.shape[1]}x{image.shape[0]}")
    return check_transform(frame.base_from_cam, "camera extrinsic base_from_cam")


@dataclass
class FrameFeatures:
    """The network's stage of one frame (``RelocalizationPipeline.extract``), for ``process``."""

    stamp_ns: int  # the frame's stamp (``process`` checks it matches)
    network: NetworkOutput  # the camera's (a rig instant's: the anchor camera's)
    rig: list[NetworkOutput] | None = None  # a rig instant's: every camera's, rig order; None for one camera

    @property
    def started_s(self) -> float:
        """``time.perf_counter()`` when the first extraction began (the frame's latency starts there)."""
        return min(n.started_s for n in (self.rig or [self.network]))


@dataclass
class Timings:
    """Seconds spent per stage of one frame."""

    retrieval_s: float = 0.0
    network_s: float = 0.0
    optimizer_s: float = 0.0
    total_s: float = 0.0


@dataclass
class GateStats:
    """How the frame's estimate compared with the prediction of the hypothesis it continued."""

    mahalanobis_d2: float = math.nan  # squared Mahalanobis distance (6 dof) to the prediction
    limit_d2: float = math.nan  # the gate's chi^2 quantile
    hypotheses: int = 0  # live hypotheses after the frame
    lead_frames: int = 0  # frames the leading hypothesis has led in a row
    lead_travel_m: float = 0.0  # travel over that streak
    margin: float = math.nan  # relative cost lead of the leader over the runner-up (inf: no rival)


@dataclass
class Estimate:
    """One optimised pose of base_link in the map and the figures it was judged by, before gating:
    what ``FrameOutput.estimate`` and the offline records (``data.evaluation.FrameRecord``) hold."""

    map_from_base: np.ndarray  # (4, 4)
    covariance: np.ndarray | None  # (6, 6) ROS order (x y z rx ry rz, map frame), as it would be published
    hessian_covariance: np.ndarray | None  # (6, 6) sigma^2 H^-1 in the same order, uncalibrated
    inlier_ratio: float = math.nan  # share of valid fine-level points with a small residual
    cost: float = math.nan  # fine-level mean robust cost
    num_valid: int = 0  # valid fine-level points
    jitter_m: float | None = None  # jitter of its hypothesis before this frame (None: a seed, or no history)

    def to_json(self) -> dict:
        """Plain lists and numbers (``None`` for missing covariances)."""
        return {"map_from_base": self.map_from_base.tolist(),
                "covariance": None if self.covariance is None else self.covariance.tolist(),
                "hessian_covariance": None if self.hessian_covariance is None else self.hessian_covariance.tolist(),
                "inlier_ratio": float(self.inlier_ratio), "cost": float(self.cost), "num_valid": int(self.num_valid),
                "jitter_m": self.jitter_m}


@dataclass
class CameraView:
    """One rig camera's share of a frame, for display (heatmaps and markers per camera)."""

    name: str
    base_from_camera: np.ndarray  # (4, 4) its extrinsic: map_from_base @ this = the camera's pose
    points_xyz: np.ndarray  # (N_k, 3) map points it used (after subsampling)
    point_weights: np.ndarray | None  # (N_k,) their final fine-level weights (None: no level ran)
    confidences: list[np.ndarray] | None  # per level (H_l, W_l) float32 query confidence (None: not kept)


@dataclass
class FrameOutput:
    """What the pipeline decided for one frame. Pose fields are None when nothing is published."""

    stamp_ns: int
    state: State
    success: bool = False  # a pose is published for this frame
    why: Why = OK  # the reason code and its detail (OK on success)
    # Events of this frame, for counters: a challenger beat the tracked pose; the tracked pose was
    # dropped after ``lost_after`` frames without a consistent result.
    wrong_lock: bool = False
    lost: bool = False
    map_from_base: np.ndarray | None = None  # (4, 4)
    covariance_ros: np.ndarray | None = None  # (6, 6) x y z rx ry rz of map_from_base (map frame)
    map_from_odom: np.ndarray | None = None  # (4, 4), when odometry covers the stamp
    result: LocalizationResult | None = None  # the raw engine result (also for rejected frames)
    # The estimate the decision was about: the committed hypothesis' result while tracking, the
    # leading hypothesis' while relocalizing, else the localizer's best.
    estimate: Estimate | None = None
    gate: GateStats = field(default_factory=GateStats)
    covariance_calibrated: bool = False  # the covariance comes from a fitted calibration
    # The online scale of the published covariance (``innovation``: >= 1, from consecutive poses
    # against the odometry); covariance_ros already includes it.
    covariance_scale: float = 1.0
    keyframe_ids: list[int] = field(default_factory=list)
    points_xyz: np.ndarray | None = None  # (N, 3) map points used (after subsampling)
    point_weights: np.ndarray | None = None  # (N,) their final fine-level weights
    cameras: list[CameraView] | None = None  # a rig instant: each camera's share (rig order), else None
    prior_map_from_base: np.ndarray | None = None  # (4, 4) the prior this frame started from
    prior_distance_m: float = math.nan  # estimate vs prior, base_link position
    prior_rotation_deg: float = math.nan
    timings: Timings = field(default_factory=Timings)

    @property
    def reason(self) -> str:
        """The reason as text: "ok" or "<key>: <detail>" (``Why.text``)."""
        return self.why.text


__all__ = ["CameraView", "Estimate", "FrameFeatures", "FrameInput", "FrameOutput", "GateStats", "State", "Timings"]
