"""The per-frame relocalization logic, free of ROS: priors, hypotheses, retrieval, PixLoc,
gating, covariance. The ROS node and the offline evaluator both drive this one class, so that
what `pixloc-ros evaluate` measures is what the node publishes.

States (the numbers are LocalizationStatus.STATE_*):
- NOT_INITIALIZED: no prior yet (no /initialpose, no GNSS fix).
- RELOCALIZING: nothing is published. Several hypotheses are alive (core/tracking/hypothesis_books.py): each
  frame optimises every one of them, propagated with the odometry, plus fresh seeds (the
  keyframes nearest the GNSS fix or the operator's initial pose, and the leader moved along the
  road, where PixLoc's wrong minima lie). A hypothesis is committed only once it has led frame
  after frame, with a clear cost margin over every rival or over several metres of travel.
- TRACKING: the committed hypothesis is published when its frame's result is consistent with its
  odometry prediction (Mahalanobis gate). It keeps competing with the other live hypotheses and
  a challenger seed per frame: a challenger that wins the same way as a commit is a *wrong lock*,
  and the state drops back to RELOCALIZING (reason ``wrong_lock``) instead of rejecting the
  evidence frame after frame.
- LOST: the committed hypothesis found no consistent result ``lost_after`` frames in a row; the
  next frames relocalize.
A clock jump backwards (a bag restarted) resets everything.

The published covariance is calibrated (core/tracking/covariance_calibration.py) when the weights come
with a calibration file; otherwise it is the Hessian estimate plus a floor (``covariance_floor_*``).

Poses inside this module are (4, 4) float64 numpy arrays named ``a_from_b``.
"""
from __future__ import annotations

import math
import time
from bisect import bisect_left
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path

import numpy as np
import torch
from scipy.spatial.transform import Rotation, Slerp

from ..geometry.camera import Camera
from ..engine.covariance import engine_to_ros_covariance, make_spd, normalized_min_eigenvalue, pose_covariance
from .covariance_calibration import CovarianceCalibration, calibration_path_for
from .gating import GatingConfig, mahalanobis_d2, quality_failure
from ..geometry.pose import Pose
from .seed_grid import relocalization_grid
from .hypothesis_books import HypothesisConfig, HypothesisTracker, Observation, TrackerDecision
from ..geometry.transforms import check_transform, pose_difference, rotation_angle_deg
from ..engine.localizer import LocalizationResult, Localizer
from ..engine.query_points import QueryPoints
from ..maps.retrieval import MapIndex, RetrievalConfig
from ..maps.open_index import open_map_index


class State(IntEnum):
    """Node state; the values match LocalizationStatus.STATE_*."""

    NOT_INITIALIZED = 0
    RELOCALIZING = 1
    TRACKING = 2
    LOST = 3


@dataclass
class PipelineConfig:
    """Everything the per-frame logic decides with; the node fills it from its parameters."""

    retrieval: RetrievalConfig = field(default_factory=lambda: RetrievalConfig(num_keyframes=3))
    gating: GatingConfig = field(default_factory=GatingConfig)
    num_hypotheses: int = 4  # initial poses optimised per frame at most (live hypotheses + seeds)
    # Relocalizing with a wide search: the seeds of a frame spread over at least this many initial
    # poses in all (hypotheses.relocalization_grid: sideways / forward shifts of +-0.5 m around
    # each seed, and yaw steps over +-10 deg once there are 8 or more poses per seed), for priors
    # further off than PixLoc's basin (about 1 m and a few degrees). 0: the seeds alone. The LM cost grows with the count: with the fused CUDA
    # kernels 64 cost about what 4 do; on a CPU each one costs about as much as a seed.
    relocalization_grid: int = 0
    max_points: int = 4000  # residual rows per frame at most (random subset): bounds the LM cost
    confirmations: int = 1  # frames a hypothesis must lead after the first before it is committed
    lost_after: int = 3  # frames in a row without a consistent result before a hypothesis is dropped (LOST)
    max_live_hypotheses: int = 3  # hypotheses kept alive across frames
    commit_margin: float = 0.05  # relative cost lead over every rival that makes a frame a clear win
    commit_baseline_m: float = 5.0  # or lead over this much travel (clear or not) to commit
    merge_distance_m: float = 0.5  # results closer than this (and merge_rotation_deg) are one hypothesis
    merge_rotation_deg: float = 3.0
    probe_distance_m: float = 2.5  # along-road probe: the leader moved this far forward / backward
    tracking_challengers: int = 1  # seeds tried per tracked frame against the committed hypothesis (0: none)
    # With a covariance calibration: a result whose calibrated 1-sigma uncertainty (largest
    # position / rotation axis) exceeds these is not published (the calibration says the frame
    # matched the map too badly to be a measurement an EKF should take; it still continues its
    # hypothesis, with little weight).
    max_sigma_m: float = 0.5
    max_sigma_deg: float = 3.0
    max_prior_distance_m: float = 30.0  # a prior farther than this from every keyframe is outside the map
    gnss_max_age_s: float = 2.0  # a GNSS fix older than this (by image stamp) is not used as a prior
    gnss_min_sigma_m: float = 1.0  # floor of the GNSS standard deviation (NavSatFix covariances are often optimistic)
    gnss_gate_sigmas: float = 3.0  # an uncommitted hypothesis must lie within this many GNSS sigmas (+ 2 m) of the fix
    initialpose_max_age_s: float = 10.0  # an RViz initial pose older than this (by image stamp) is ignored
    track_sigma_floor_m: float = 0.15  # prediction std of a hypothesis, translation floor per axis
    track_sigma_floor_deg: float = 1.0  # prediction std, rotation floor per axis
    odom_sigma_per_m: float = 0.05  # prediction std grows by this fraction of the distance driven since the last fix
    odom_sigma_deg_per_m: float = 0.2  # and by this many degrees per metre driven
    no_odom_sigma_m: float = 1.0  # without odometry: prediction std per axis (the car moved by an unknown amount)
    no_odom_sigma_deg: float = 5.0
    odom_buffer_s: float = 60.0  # odometry history kept for interpolation
    odom_max_extrapolation_s: float = 0.2  # image stamps this far past the newest odometry use the newest sample
    clock_jump_tolerance_s: float = 0.5  # a stamp earlier than the last one by more than this resets the state
    # Without a covariance calibration for the weights: added to the Hessian-based covariance,
    # which ignores correlated residuals, map errors and calibration errors (an EKF fed near-zero
    # variances trusts the pose blindly). With a calibration its fitted floor is used instead.
    covariance_floor_m: float = 0.03  # std, per position axis
    covariance_floor_deg: float = 0.3  # std, per rotation axis
    seed: int = 0  # subsampling of points is deterministic per frame stamp and seed

    def __post_init__(self):
        if self.num_hypotheses < 1:
            raise ValueError(f"num_hypotheses must be >= 1, got {self.num_hypotheses}")
        if self.relocalization_grid < 0:
            raise ValueError(f"relocalization_grid must be >= 0, got {self.relocalization_grid}")
        if self.max_points < 10:
            raise ValueError(f"max_points must be >= 10, got {self.max_points}")
        if self.lost_after < 1 or self.confirmations < 0:
            raise ValueError("lost_after must be >= 1 and confirmations >= 0")
        if self.max_live_hypotheses < 1 or self.tracking_challengers < 0:
            raise ValueError("max_live_hypotheses must be >= 1 and tracking_challengers >= 0")

    def hypothesis_config(self) -> HypothesisConfig:
        """The hypothesis books' settings (confirmations and lost_after included)."""
        return HypothesisConfig(max_hypotheses=self.max_live_hypotheses, merge_distance_m=self.merge_distance_m,
                                merge_rotation_deg=self.merge_rotation_deg,
                                gate_probability=self.gating.mahalanobis_probability,
                                commit_frames=self.confirmations + 1, commit_margin=self.commit_margin,
                                commit_baseline_m=self.commit_baseline_m, max_misses=self.lost_after)


@dataclass
class FrameInput:
    """One camera frame: the image, its camera and the camera's mounting on base_link."""

    stamp_ns: int
    image_rgb: np.ndarray  # (H, W, 3) uint8
    camera: Camera  # single camera of that image, pixel-centre origin
    base_from_cam: np.ndarray  # (4, 4) camera optical frame -> base_link


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
class FrameOutput:
    """What the pipeline decided for one frame. Pose fields are None when nothing is published."""

    stamp_ns: int
    state: State
    success: bool  # a pose is published for this frame
    reason: str  # "ok" or why not
    map_from_base: np.ndarray | None = None  # (4, 4)
    covariance_ros: np.ndarray | None = None  # (6, 6) x y z rx ry rz of map_from_base (map frame)
    map_from_odom: np.ndarray | None = None  # (4, 4), when odometry covers the stamp
    result: LocalizationResult | None = None  # the raw engine result (also for rejected frames)
    # The estimate the decision was about, before gating: the committed hypothesis' result while
    # tracking, the leading hypothesis' while relocalizing, else the localizer's best.
    estimate_map_from_base: np.ndarray | None = None  # (4, 4)
    estimate_covariance_ros: np.ndarray | None = None  # (6, 6), as it would be published
    estimate_hessian_covariance_ros: np.ndarray | None = None  # (6, 6) sigma^2 H^-1 of it, uncalibrated
    estimate_inlier_ratio: float = math.nan
    estimate_cost: float = math.nan  # its fine-level mean robust cost
    estimate_num_valid: int = 0  # its valid fine-level points
    estimate_jitter_m: float | None = None  # jitter of its hypothesis before this frame (core/tracking/hypothesis_books.py)
    gate: GateStats = field(default_factory=GateStats)
    covariance_calibrated: bool = False  # the covariance comes from a fitted calibration
    keyframe_ids: list[int] = field(default_factory=list)
    points_xyz: np.ndarray | None = None  # (N, 3) map points used (after subsampling)
    point_weights: np.ndarray | None = None  # (N,) their final fine-level weights
    prior_map_from_base: np.ndarray | None = None  # (4, 4) the prior this frame started from
    prior_distance_m: float = math.nan  # estimate vs prior, base_link position
    prior_rotation_deg: float = math.nan
    timings: Timings = field(default_factory=Timings)


def _to_pose(T: np.ndarray) -> Pose:
    return Pose.from_numpy(T[..., :3, :3], T[..., :3, 3])


class OdometryBuffer:
    """``odom_from_base`` samples by stamp, interpolated (slerp + lerp) at image stamps."""

    def __init__(self, horizon_s: float):
        self.horizon_ns = int(horizon_s * 1e9)
        self.stamps: list[int] = []
        self.poses: list[np.ndarray] = []

    def __len__(self) -> int:
        return len(self.stamps)

    def clear(self) -> None:
        self.stamps.clear()
        self.poses.clear()

    def add(self, stamp_ns: int, odom_from_base: np.ndarray) -> None:
        """Append a sample (stamps must not go backwards: the caller resets on a jump)."""
        if self.stamps and stamp_ns <= self.stamps[-1]:
            if stamp_ns == self.stamps[-1]:
                self.poses[-1] = odom_from_base
            return  # out-of-order duplicate within tolerance: ignore
        self.stamps.append(stamp_ns)
        self.poses.append(odom_from_base)
        cut = bisect_left(self.stamps, stamp_ns - self.horizon_ns)
        if cut > 0:
            del self.stamps[:cut], self.poses[:cut]

    def at(self, stamp_ns: int, max_extrapolation_ns: int) -> np.ndarray | None:
        """Interpolated ``odom_from_base`` (4, 4) at ``stamp_ns``, or None when not covered."""
        if not self.stamps:
            return None
        if stamp_ns >= self.stamps[-1]:
            if stamp_ns - self.stamps[-1] > max_extrapolation_ns:
                return None
            if len(self.stamps) < 2 or stamp_ns == self.stamps[-1]:
                return self.poses[-1]
            # Constant velocity (in the body frame) over the last interval: odometry often lags
            # the camera by a message or two, and holding the last sample would put the prior
            # behind by the distance driven meanwhile.
            t0, t1 = self.stamps[-2], self.stamps[-1]
            step = np.linalg.inv(self.poses[-2]) @ self.poses[-1]
            s = (stamp_ns - t1) / (t1 - t0)
            out = np.eye(4)
            out[:3, :3] = Rotation.from_rotvec(s * Rotation.from_matrix(step[:3, :3]).as_rotvec()).as_matrix()
            out[:3, 3] = s * step[:3, 3]
            return self.poses[-1] @ out
        if stamp_ns < self.stamps[0]:
            return self.poses[0] if self.stamps[0] - stamp_ns <= max_extrapolation_ns else None
        i = bisect_left(self.stamps, stamp_ns)
        if self.stamps[i] == stamp_ns:
            return self.poses[i]
        t0, t1 = self.stamps[i - 1], self.stamps[i]
        a, b = self.poses[i - 1], self.poses[i]
        s = (stamp_ns - t0) / (t1 - t0)
        out = np.eye(4)
        out[:3, :3] = Slerp([0.0, 1.0], Rotation.from_matrix(np.stack([a[:3, :3], b[:3, :3]])))(s).as_matrix()
        out[:3, 3] = (1 - s) * a[:3, 3] + s * b[:3, 3]
        return out


@dataclass
class _Seed:
    """An initial pose tried this frame that continues no live hypothesis."""

    map_from_cam: np.ndarray  # (4, 4)
    kind: str  # "initialpose", "keyframe", "probe", "grid"


@dataclass
class _Candidate:
    """One optimised initial pose of this frame, before the books."""

    map_from_base: np.ndarray | None  # (4, 4), None when the localizer has no pose for it
    failure: str | None  # why it is no observation (None: it is one)
    strong: bool = False  # passed the relocalization-grade checks
    covariance: np.ndarray | None = None  # (6, 6) as published
    gate_covariance: np.ndarray | None = None  # (6, 6) what the continuation gate uses (see _candidates)
    publishable: bool = True  # its calibrated uncertainty allows publishing it
    uncertain: str = ""  # why not, when it does not
    hessian_covariance: np.ndarray | None = None  # (6, 6) sigma^2 H^-1 of map_from_base, ROS order (no calibration)
    inlier_ratio: float = math.nan
    cost: float = math.inf
    num_valid: int = 0
    jitter_m: float | None = None  # jitter of the hypothesis it started from (None: a seed, or no history)


def _sigmas(covariance_ros: np.ndarray) -> tuple[float, float]:
    """Largest 1-sigma of a ROS covariance: position (m) and rotation (deg), worst direction."""
    pos = float(np.sqrt(np.linalg.eigvalsh(covariance_ros[:3, :3])[-1]))
    rot = math.degrees(float(np.sqrt(np.linalg.eigvalsh(covariance_ros[3:, 3:])[-1])))
    return pos, rot


class RelocalizationPipeline:
    """Turn frames, odometry, GNSS and initial poses into published poses (see the module doc)."""

    def __init__(self, localizer: Localizer, index: MapIndex, config: PipelineConfig | None = None,
                 calibration: CovarianceCalibration | None = None):
        """calibration: the weights' covariance calibration, or None (Hessian estimate plus a floor)."""
        self.localizer = localizer
        self.index = index
        self.config = config or PipelineConfig()
        self.calibration = calibration
        self.tracker = HypothesisTracker(self.config.hypothesis_config())
        self.odometry = OdometryBuffer(self.config.odom_buffer_s)
        self._last_stamps: dict[str, int] = {}  # newest stamp per input (clock-jump detection)
        self._gnss: tuple[int, np.ndarray, float] | None = None  # (stamp, map xyz, sigma m)
        self._initial_pose: tuple[int, np.ndarray, bool] | None = None  # (stamp, map_from_base, is_2d)
        self.clock_jumps = 0  # resets caused by stamps going backwards (the node logs each)
        self.reset("start")

    # ---- state ----------------------------------------------------------------------------
    def reset(self, reason: str) -> None:
        """Forget the hypotheses, odometry and priors (e.g. the clock jumped back)."""
        self.state = State.NOT_INITIALIZED
        self.reset_reason = reason
        self.tracker.clear()
        self._last_frame_stamp: int | None = None  # stamp of the last frame the hypotheses were moved to
        self._frames = 0  # processed frames (alternates the challenger seeds)
        self.odometry.clear()
        self._gnss = None
        self._initial_pose = None
        self._last_stamps = {}

    def _check_clock(self, stamp_ns: int, source: str) -> None:
        """Reset when a source's stamp goes back by more than the tolerance (a bag restarted).

        Per source: topics legitimately arrive out of order with each other (a camera lagging
        the odometry), but each one's own stamps only go back when time itself did."""
        tol = int(self.config.clock_jump_tolerance_s * 1e9)
        last = self._last_stamps.get(source)
        if last is not None and stamp_ns < last - tol:
            self.reset(f"clock jumped back by {(last - stamp_ns) / 1e9:.2f} s ({source} stamp)")
            self.clock_jumps += 1
        self._last_stamps[source] = stamp_ns if last is None or stamp_ns > last else last

    @property
    def has_odometry(self) -> bool:
        return len(self.odometry) > 0

    # ---- inputs ---------------------------------------------------------------------------
    def add_odometry(self, stamp_ns: int, odom_from_base: np.ndarray) -> None:
        """An odometry sample (pose of base_link in the odom frame). ValueError on NaN/invalid."""
        T = check_transform(odom_from_base, "odometry pose")
        self._check_clock(stamp_ns, "odometry")
        self.odometry.add(int(stamp_ns), T)

    def add_gnss(self, stamp_ns: int, latitude_deg: float, longitude_deg: float, altitude_m: float,
                 covariance_enu: np.ndarray | None = None) -> None:
        """A GNSS fix. ValueError for NaN, out-of-range values or a map without georeference."""
        values = np.array([latitude_deg, longitude_deg, altitude_m], np.float64)
        if not np.isfinite(values).all():
            raise ValueError(f"GNSS fix holds NaN/inf: lat={latitude_deg}, lon={longitude_deg}, alt={altitude_m}")
        if not (-90 <= latitude_deg <= 90 and -180 <= longitude_deg <= 180):
            raise ValueError(f"GNSS fix out of range: lat={latitude_deg}, lon={longitude_deg}")
        xyz = self.index.gnss_to_map(latitude_deg, longitude_deg, altitude_m).reshape(3)
        sigma = self.config.gnss_min_sigma_m
        if covariance_enu is not None:
            cov = np.asarray(covariance_enu, np.float64).reshape(3, 3)
            if np.isfinite(cov).all() and np.trace(cov[:2, :2]) > 0:
                sigma = max(sigma, math.sqrt(0.5 * np.trace(cov[:2, :2])))
        self._check_clock(stamp_ns, "GNSS")
        self._gnss = (int(stamp_ns), xyz, sigma)
        self.index.prefetch(xyz)  # a tiled map starts loading the tiles around the fix

    def set_initial_pose(self, stamp_ns: int, map_from_base: np.ndarray, is_2d: bool = True) -> None:
        """An operator's initial pose (RViz "2D Pose Estimate"): relocalize from it next frame.

        ``is_2d``: only x, y and yaw are meaningful; height and tilt come from the map.
        Every live hypothesis is dropped: the operator says the pose is elsewhere.
        """
        T = check_transform(map_from_base, "initial pose")
        self._check_clock(stamp_ns, "initial pose")
        self._initial_pose = (int(stamp_ns), T, is_2d)
        self.index.prefetch(T[:3, 3])
        self.state = State.RELOCALIZING
        self.tracker.clear()
        self._last_frame_stamp = None

    # ---- priors ---------------------------------------------------------------------------
    def _odom_delta(self, t0: int, t1: int) -> np.ndarray | None:
        """base(t0)_from_base(t1) from odometry, or None when not covered."""
        ext = int(self.config.odom_max_extrapolation_s * 1e9)
        a, b = self.odometry.at(t0, ext), self.odometry.at(t1, ext)
        if a is None or b is None:
            return None
        return np.linalg.inv(a) @ b

    def _grow(self, distance_m: float | None):
        """The covariance widening of a prediction over ``distance_m`` of odometry (None: no odometry)."""
        cfg = self.config

        def grow(cov: np.ndarray) -> np.ndarray:
            if distance_m is None:
                add = np.array([cfg.no_odom_sigma_m ** 2] * 3 + [math.radians(cfg.no_odom_sigma_deg) ** 2] * 3)
            else:
                add = np.array([(cfg.odom_sigma_per_m * distance_m) ** 2] * 3
                               + [math.radians(cfg.odom_sigma_deg_per_m * distance_m) ** 2] * 3)
            out = cov + np.diag(add)
            floor = np.array([cfg.track_sigma_floor_m ** 2] * 3 + [math.radians(cfg.track_sigma_floor_deg) ** 2] * 3)
            return out + np.diag(np.clip(floor - np.diag(out), 0.0, None))
        return grow

    def _keyframe_hypotheses(self, position: np.ndarray, view_dir: np.ndarray | None,
                             max_heading_deg: float, radius_m: float) -> list[np.ndarray]:
        """map_from_cam hypotheses from the keyframes nearest ``position``: each keyframe's own
        pose (PixLoc's retrieval initialisation), nearest first."""
        idx, _, _ = self.index.nearest_keyframes(position, view_dir, k=self.config.num_hypotheses,
                                                 max_heading_diff_deg=max_heading_deg, max_distance_m=radius_m,
                                                 require_observations=True)
        return [self.index.keyframe_world_from_cam[i] for i in idx]

    def _gnss_now(self, stamp: int) -> tuple[np.ndarray, float] | str | None:
        """(map xyz, sigma m) of a fresh GNSS fix, a reason string when it is stale, None without fixes."""
        if self._gnss is None:
            return None
        t_fix, xyz, sigma = self._gnss
        age = (stamp - t_fix) / 1e9
        if abs(age) > self.config.gnss_max_age_s:
            return f"no_prior: newest GNSS fix is {age:.1f} s old (max {self.config.gnss_max_age_s} s)"
        return xyz, sigma

    def _seeds(self, frame: FrameInput) -> tuple[list[_Seed], str | None]:
        """Fresh initial poses from the operator's initial pose or the GNSS fix (nearest keyframes),
        and a reason string when there are none."""
        cfg = self.config
        stamp, base_from_cam = frame.stamp_ns, frame.base_from_cam
        if self._initial_pose is not None:
            t_init, T, is_2d = self._initial_pose
            if (stamp - t_init) / 1e9 <= cfg.initialpose_max_age_s:
                if is_2d:
                    yaw = math.atan2(T[1, 0], T[0, 0])
                    T = self.index.lift_2d_pose(T[0, 3], T[1, 3], yaw, base_from_cam)
                map_from_cam = T @ base_from_cam
                near = self._keyframe_hypotheses(map_from_cam[:3, 3], map_from_cam[:3, 2], 45.0, 15.0)
                return [_Seed(map_from_cam, "initialpose")] + [_Seed(k, "keyframe") for k in near], None
            self._initial_pose = None
        gnss = self._gnss_now(stamp)
        if isinstance(gnss, tuple):
            xyz, sigma = gnss
            radius = max(cfg.gnss_gate_sigmas * sigma + 2.0, 5.0)
            near = self._keyframe_hypotheses(xyz, None, 180.0, radius + 10.0)
            if not near:
                dist = self.index.distance_to_map(xyz)
                return [], f"prior_outside_map: GNSS fix is {dist:.0f} m from the nearest keyframe"
            return [_Seed(k, "keyframe") for k in near], None
        return [], gnss or "no_prior: waiting for an initial pose (/initialpose) or a GNSS fix"

    def _probe(self, map_from_base: np.ndarray, base_from_cam: np.ndarray) -> _Seed:
        """``map_from_base`` moved along its forward axis by +-probe_distance_m (alternating per frame):
        the along-road place where PixLoc's wrong minima lie."""
        sign = 1.0 if self._frames % 2 == 0 else -1.0
        T = map_from_base.copy()
        T[:3, 3] += sign * self.config.probe_distance_m * T[:3, 0]
        return _Seed(T @ base_from_cam, "probe")

    def _batch(self, frame: FrameInput, seeds: list[_Seed]) -> list[tuple[np.ndarray, int | None]]:
        """Initial poses of this frame as (map_from_cam, id of the hypothesis it continues or None)."""
        cfg = self.config
        live = self.tracker.ordered()
        inits: list[tuple[np.ndarray, int | None]] = [(h.map_from_base @ frame.base_from_cam, h.id) for h in live]
        slots = cfg.num_hypotheses - len(inits)
        if self.tracker.committed is not None:
            slots = min(slots, cfg.tracking_challengers)
        extra: list[_Seed] = []
        operator = any(s.kind == "initialpose" for s in seeds)
        if live and slots > 0 and not operator:
            # The leader moved along the road on even frames (or always, with room), a fresh seed else.
            if self._frames % 2 == 0 or slots > 1 or not seeds:
                extra.append(self._probe(live[0].map_from_base, frame.base_from_cam))
        fresh = iter(seeds[self._frames % max(len(seeds), 1):] + seeds[:self._frames % max(len(seeds), 1)]
                     if self.tracker.committed is not None else seeds)
        while len(extra) < slots:
            seed = next(fresh, None)
            if seed is None:
                break
            extra.append(seed)
        extra = extra[:max(slots, 0)]
        wide = cfg.relocalization_grid - len(inits) - len(extra)
        if self.tracker.committed is None and extra and wide > 0:
            # Spread the seeds (each kept as it is) over the grid; the books merge what converges
            # to one place and keep the cheapest places (max_live_hypotheses).
            cam_from_world = _to_pose(np.linalg.inv(np.stack([s.map_from_cam for s in extra])))
            grid = np.linalg.inv(relocalization_grid(cam_from_world, count=wide).to_4x4_numpy())
            extra += [_Seed(map_from_cam, "grid") for map_from_cam in grid]
        return inits + [(s.map_from_cam, None) for s in extra]

    # ---- points ---------------------------------------------------------------------------
    def _points(self, inits_map_from_cam: list[np.ndarray], camera: Camera, stamp_ns: int,
                tracking: bool) -> tuple[QueryPoints, list[int]]:
        """Reference rows for the initial poses, subsampled. While tracking: the first (committed)
        pose's retrieval of ``num_keyframes`` only, so that the tracked pose is optimised on the
        points it would have alone (on one measured frame the points a challenger's keyframes
        added moved the tracked result from 0.04 m to 0.52 m off) and the challengers are judged
        on the same points; while
        relocalizing: the union of every pose's retrieval of half as many."""
        cfg = self.config
        half = RetrievalConfig(**{**cfg.retrieval.__dict__,
                                  "num_keyframes": max(1, cfg.retrieval.num_keyframes // 2)})
        if tracking:
            inits_map_from_cam = inits_map_from_cam[:1]
        parts, keyframes, seen = [], [], set()
        for i, map_from_cam in enumerate(inits_map_from_cam):
            per_hyp = cfg.retrieval if tracking else half
            r = self.index.retrieve(np.linalg.inv(map_from_cam), camera=camera, config=per_hyp)
            new = [j for j, kf in enumerate(r.keyframe_ids) if int(kf) not in seen]
            if not new:
                continue
            keep = torch.isin(r.points.keyframe_ids, torch.as_tensor(r.keyframe_ids[new]))
            parts.append(r.points.select(keep))
            for j in new:
                seen.add(int(r.keyframe_ids[j]))
                keyframes.append(int(r.keyframe_ids[j]))
        if not parts:
            return QueryPoints(torch.zeros(0, 3), [torch.zeros(0, lv.dim) for lv in self.index.levels],
                               [torch.zeros(0)] * 3, torch.zeros(0, dtype=torch.int64),
                               torch.zeros(0, dtype=torch.int64)), []
        points = parts[0] if len(parts) == 1 else QueryPoints(
            torch.cat([p.xyz for p in parts]), [torch.cat([p.features[l] for p in parts]) for l in range(3)],
            [torch.cat([p.confidences[l] for p in parts]) for l in range(3)],
            torch.cat([p.point_ids for p in parts]), torch.cat([p.keyframe_ids for p in parts]))
        if len(points) > cfg.max_points:
            gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + stamp_ns % 1_000_000_007)
            points = points.select(torch.randperm(len(points), generator=gen)[:cfg.max_points].sort().values)
        return points, keyframes

    # ---- covariance ---------------------------------------------------------------------------
    def published_covariance(self, hessian_covariance_ros: np.ndarray, R_map_base: np.ndarray,
                             inlier_ratio: float, jitter_m: float | None, calibrated: bool = True) -> np.ndarray:
        """(6, 6) ROS covariance to publish from the Hessian-based one (map axes): calibrated when
        the weights have a calibration, else plus the configured floor. Symmetric positive definite.
        jitter_m: the jitter of the hypothesis the result continues (None: unknown); calibrated:
        False gives the uncalibrated one even when a calibration is loaded."""
        if calibrated and self.calibration is not None:
            return make_spd(self.calibration.covariance_ros(hessian_covariance_ros, R_map_base, inlier_ratio,
                                                            jitter_m))
        cfg = self.config
        floor = np.diag([cfg.covariance_floor_m ** 2] * 3 + [math.radians(cfg.covariance_floor_deg) ** 2] * 3)
        return make_spd(hessian_covariance_ros + floor)

    def _candidates(self, result: LocalizationResult, base_from_cam: np.ndarray,
                    sources: list[int | None], gnss: tuple[np.ndarray, float] | None) -> list[_Candidate]:
        """Every optimised initial pose, checked (quality, covariance, GNSS) and given its covariance."""
        hyps = result.hypotheses
        if hyps is None:
            return [_Candidate(None, f"localization_failed: {result.reason}") for _ in sources]
        gating, loc = self.config.gating, self.localizer.config
        committed = self.tracker.committed
        jitters = {h.id: h.jitter_m for h in self.tracker.hypotheses}
        base_pose = _to_pose(base_from_cam)
        out = []
        for b, source in enumerate(sources):
            cam_from_world = hyps.cam_from_world[b]
            map_from_base = cam_from_world.inv().to_4x4_numpy() @ np.linalg.inv(base_from_cam)
            cost, initial, nv, inl = hyps.cost[:, b], hyps.initial_cost[:, b], int(hyps.num_valid[b]), \
                float(hyps.inlier_ratio[b])
            tracked = committed is not None and source == committed.id
            cand = _Candidate(map_from_base, None, inlier_ratio=inl, cost=float(cost[0]), num_valid=nv,
                              jitter_m=jitters.get(source))
            cand.failure = quality_failure(nv, inl, cost, initial, gating,
                                           gating.track_min_inlier_ratio if tracked else None)
            if cand.failure is None:
                H = hyps.hessian[b]
                min_eig = normalized_min_eigenvalue(H)
                cov = None if min_eig < loc.min_normalized_eigenvalue or bool(hyps.singular[b]) else \
                    pose_covariance(H, float(hyps.sigma2[b]) * loc.covariance_scale)
                if cov is None:
                    cand.failure = (f"degenerate_geometry: the points do not constrain all 6 pose directions "
                                    f"(normalised Hessian min eigenvalue {min_eig:.2e})")
                else:
                    cand.hessian_covariance = engine_to_ros_covariance(cov, cam_from_world, base_pose)
                    cand.covariance = self.published_covariance(cand.hessian_covariance, map_from_base[:3, :3], inl,
                                                                cand.jitter_m)
                    # The gate compares consecutive results of one hypothesis. Their errors are
                    # strongly correlated (a biased minimum drifts, it does not jump), so the
                    # calibrated covariance, which describes the error against the truth, would
                    # let metre-sized jumps through; the gate keeps the Hessian estimate plus the
                    # fixed floor and the prediction's own floor (track_sigma_floor_*).
                    cand.gate_covariance = self.published_covariance(cand.hessian_covariance, map_from_base[:3, :3],
                                                                     inl, None, calibrated=False)
            if cand.failure is None and self.calibration is not None:
                sigma_m, sigma_deg = _sigmas(cand.covariance)
                if sigma_m > self.config.max_sigma_m or sigma_deg > self.config.max_sigma_deg:
                    cand.publishable = False
                    cand.uncertain = (f"uncertain: calibrated sigma {sigma_m:.2f} m / {sigma_deg:.2f} deg exceeds "
                                      f"{self.config.max_sigma_m:g} m / {self.config.max_sigma_deg:g} deg")
            if cand.failure is None and not tracked and gnss is not None:
                xyz, sigma = gnss
                horiz = float(np.linalg.norm(map_from_base[:2, 3] - xyz[:2]))
                limit = self.config.gnss_gate_sigmas * sigma + 2.0
                if horiz > limit:
                    cand.failure = f"far_from_gnss: {horiz:.1f} m from the fix (max {limit:.1f} m)"
            if cand.failure is None:
                cand.strong = quality_failure(nv, inl, cost, initial, gating) is None
            out.append(cand)
        return out

    # ---- the frame --------------------------------------------------------------------------
    def process(self, frame: FrameInput) -> FrameOutput:
        """Localize one frame. ValueError for malformed input (nothing changes then)."""
        t_start = time.perf_counter()
        image = frame.image_rgb
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image must be (H, W, 3) uint8 RGB, got "
                             f"{getattr(image, 'shape', None)} {getattr(image, 'dtype', type(image).__name__)}")
        if image.shape[0] == 0 or image.shape[1] == 0:
            raise ValueError("image is empty (0 pixels)")
        w, h = (float(v) for v in frame.camera.size.reshape(-1)[:2])
        if (int(round(w)), int(round(h))) != (image.shape[1], image.shape[0]):
            raise ValueError(f"camera is {w:.0f}x{h:.0f} but the image is {image.shape[1]}x{image.shape[0]}")
        base_from_cam = check_transform(frame.base_from_cam, "camera extrinsic base_from_cam")
        self._check_clock(frame.stamp_ns, "image")
        cfg = self.config
        out = FrameOutput(frame.stamp_ns, self.state, False, "", covariance_calibrated=self.calibration is not None)

        def finish(reason: str) -> FrameOutput:
            out.reason, out.state = reason, self.state
            out.timings.total_s = time.perf_counter() - t_start
            return out

        # 1. Move the live hypotheses to this frame with the odometry.
        travel = 0.0
        if self.tracker.hypotheses and self._last_frame_stamp is not None:
            if self.has_odometry:
                delta = self._odom_delta(self._last_frame_stamp, frame.stamp_ns)
                if delta is None:
                    return finish(f"no odometry at the image stamp ({frame.stamp_ns / 1e9:.3f} s); newest sample "
                                  f"at {self.odometry.stamps[-1] / 1e9:.3f} s")
                travel = float(np.linalg.norm(delta[:3, 3]))
                self.tracker.predict(delta, self._grow(travel))
            else:
                self.tracker.predict(None, self._grow(None))
        self._last_frame_stamp = frame.stamp_ns
        self._frames += 1
        committed = self.tracker.committed
        predicted = None if committed is None else (committed.map_from_base.copy(), committed.covariance.copy())

        # 2. This frame's initial poses: every live hypothesis, then seeds.
        seeds, why = self._seeds(frame)
        if not self.tracker.hypotheses and not seeds:
            return finish(why)
        if self.state == State.NOT_INITIALIZED:
            self.state = State.RELOCALIZING
        batch = self._batch(frame, seeds)
        inits = [m for m, _ in batch]
        out.prior_map_from_base = inits[0] @ np.linalg.inv(base_from_cam)
        dist_to_map = self.index.distance_to_map(out.prior_map_from_base[:3, 3])
        if dist_to_map > cfg.max_prior_distance_m:
            return self._no_observation(out, f"prior_outside_map: prior is {dist_to_map:.0f} m from the nearest "
                                             f"keyframe (max {cfg.max_prior_distance_m:g} m)", travel, t_start)
        t0 = time.perf_counter()
        points, keyframes = self._points(inits, frame.camera, frame.stamp_ns, committed is not None)
        out.timings.retrieval_s = time.perf_counter() - t0
        out.keyframe_ids = keyframes
        if len(points) < cfg.gating.min_valid_points:
            why = self.index.unavailable_reason(out.prior_map_from_base[:3, 3])  # tiles loading or damaged
            return self._no_observation(out, f"too_few_map_points: {len(points)} rows near the prior"
                                        + (f" ({why})" if why else ""), travel, t_start)

        # 3. PixLoc on all of them at once, then the books.
        result = self.localizer.localize(image, frame.camera, points, _to_pose(np.linalg.inv(np.stack(inits))))
        out.result = result
        out.timings.network_s = result.timings.network_s
        out.timings.optimizer_s = float(sum(result.timings.levels_s))
        out.points_xyz = points.xyz.numpy()
        out.point_weights = result.point_weights
        gnss = self._gnss_now(frame.stamp_ns) if self._initial_pose is None else None
        candidates = self._candidates(result, base_from_cam, [s for _, s in batch],
                                      gnss if isinstance(gnss, tuple) else None)
        observations = [Observation(b, c.map_from_base, c.covariance, c.cost, c.strong, batch[b][1], c.gate_covariance)
                        for b, c in enumerate(candidates) if c.failure is None]
        decision = self.tracker.update(observations, travel)
        return self._decide(out, decision, candidates, batch, committed, predicted, frame, t_start)

    def _no_observation(self, out: FrameOutput, reason: str, travel: float, t_start: float) -> FrameOutput:
        """A frame that could not run PixLoc: every live hypothesis misses it."""
        decision = self.tracker.update([], travel, allow_spawn=False)
        if decision.dropped_committed is not None:
            self.state = State.LOST
            reason = f"{reason}; lost after {self.config.lost_after} rejections, relocalizing"
        out.reason, out.state = reason, self.state
        out.gate.hypotheses = decision.live
        out.timings.total_s = time.perf_counter() - t_start
        return out

    def _decide(self, out: FrameOutput, decision: TrackerDecision, candidates: list[_Candidate], batch,
                committed_before, predicted, frame: FrameInput, t_start: float) -> FrameOutput:
        """Turn the books' decision into the frame's output and the next state."""
        cfg = self.config
        hcfg = self.tracker.config
        committed = decision.committed
        leader = decision.leader
        gate = out.gate
        gate.hypotheses, gate.margin = decision.live, decision.margin
        gate.limit_d2 = self.tracker.gate_d2
        if leader is not None:
            gate.lead_frames, gate.lead_travel_m = leader.lead_frames, leader.lead_travel_m

        # Which estimate this frame is about: the committed hypothesis' own result, else the leader's.
        focus = committed if committed is not None and committed.observation is not None else None
        if focus is None and committed_before is not None and decision.wrong_lock is None:
            own = next((b for b, (_, s) in enumerate(batch) if s == committed_before.id), None)
            cand = candidates[own] if own is not None else None
        elif focus is None and leader is not None:
            cand = candidates[leader.observation.index]
            gate.mahalanobis_d2 = leader.predicted_d2
        else:
            cand = None if focus is None else candidates[focus.observation.index]
        if cand is None and out.result is not None and out.result.hypothesis >= 0:
            cand = candidates[out.result.hypothesis]
        if cand is not None and cand.map_from_base is not None:
            out.estimate_map_from_base = cand.map_from_base
            out.estimate_covariance_ros = cand.covariance
            out.estimate_hessian_covariance_ros = cand.hessian_covariance
            out.estimate_inlier_ratio = cand.inlier_ratio
            out.estimate_cost, out.estimate_num_valid = cand.cost, cand.num_valid
            out.estimate_jitter_m = cand.jitter_m
            prior = out.prior_map_from_base
            out.prior_distance_m = float(np.linalg.norm(cand.map_from_base[:3, 3] - prior[:3, 3]))
            out.prior_rotation_deg = rotation_angle_deg(cand.map_from_base[:3, :3] @ prior[:3, :3].T)

        if focus is not None and decision.wrong_lock is None:
            if decision.newly_committed:
                self._initial_pose = None
            gate.mahalanobis_d2 = focus.predicted_d2
            self.state = State.TRACKING
            published = candidates[focus.observation.index]
            if not published.publishable:
                return self._finish(out, published.uncertain, t_start)
            # Published: this frame's result itself (the hypothesis' filtered pose only gates it).
            out.success, out.reason = True, "ok"
            out.map_from_base, out.covariance_ros = published.map_from_base, published.covariance
            odom_from_base = self.odometry.at(frame.stamp_ns, int(cfg.odom_max_extrapolation_s * 1e9))
            if odom_from_base is not None:
                out.map_from_odom = published.map_from_base @ np.linalg.inv(odom_from_base)
            out.state = self.state
            out.timings.total_s = time.perf_counter() - t_start
            return out

        if decision.wrong_lock is not None:
            lock = decision.wrong_lock
            away = float(np.linalg.norm(leader.position - lock.position))
            versus = (f"cost {leader.observation.cost:.4g} vs {lock.observation.cost:.4g}" if lock.observation
                      else "the tracked pose had no consistent result")
            reason = (f"wrong_lock: the tracked pose lost to a hypothesis {away:.2f} m away that led "
                      f"{leader.lead_frames} frames / {leader.lead_travel_m:.1f} m ({versus}); relocalizing")
            self.state = State.RELOCALIZING
        elif committed_before is not None and committed is not None:
            # Still tracking, but this frame's result is not consistent with the committed pose.
            reason = cand.failure if cand is not None and cand.failure else self._gate_reason(cand, predicted)
        elif decision.dropped_committed is not None:
            why = cand.failure if cand is not None and cand.failure else self._gate_reason(cand, predicted)
            reason = f"{why}; lost after {cfg.lost_after} rejections, relocalizing"
            self.state = State.LOST
        elif leader is None:
            failed = [c.failure for c in candidates if c.failure]
            best = out.result.hypothesis if out.result is not None else -1
            reason = (candidates[best].failure if 0 <= best < len(candidates) and candidates[best].failure
                      else failed[0] if failed else "no_hypothesis")
            if self.state != State.LOST:
                self.state = State.RELOCALIZING
        else:
            if self.state != State.LOST or decision.live:
                self.state = State.RELOCALIZING
            travel = f"{leader.lead_travel_m:.1f}/{hcfg.commit_baseline_m:g} m"
            margin = (f"cost margin {100 * decision.margin:.1f}%" if math.isfinite(decision.margin)
                      else "no rival" if decision.live <= 1 else "no rival with a result")
            if not leader.observation.strong:
                weak = quality_failure(*self._figures(out.result, leader.observation.index), cfg.gating)
                reason = f"relocalization_weak: the leading hypothesis fails the relocalization checks ({weak})"
            elif math.isfinite(decision.margin) and decision.margin < hcfg.commit_margin:
                reason = (f"relocalization_ambiguous: {decision.live} hypotheses, the leader's {margin} < "
                          f"{100 * hcfg.commit_margin:g}% (led {leader.lead_frames} frames, {travel})")
            else:
                reason = (f"relocalization_candidate: leads {leader.lead_frames}/{hcfg.commit_frames} frames, "
                          f"{margin}, {travel}, {decision.live} hypotheses")
        return self._finish(out, reason, t_start)

    def _finish(self, out: FrameOutput, reason: str, t_start: float) -> FrameOutput:
        out.reason, out.state = reason, self.state
        out.timings.total_s = time.perf_counter() - t_start
        return out

    @staticmethod
    def _figures(result: LocalizationResult, b: int):
        h = result.hypotheses
        return int(h.num_valid[b]), float(h.inlier_ratio[b]), h.cost[:, b], h.initial_cost[:, b]

    def _gate_reason(self, cand: _Candidate | None, predicted) -> str:
        """Why a quality-passing result of the committed hypothesis did not continue it."""
        if cand is None or cand.map_from_base is None or predicted is None:
            return "no_result: the tracked hypothesis was not optimised this frame"
        pose, cov = predicted
        err = pose_difference(cand.map_from_base, pose)
        d2 = mahalanobis_d2(err, cov + cand.gate_covariance)
        return (f"prior_mahalanobis: d2 = {d2:.3g} > {self.tracker.gate_d2:.3g} ({np.linalg.norm(err[:3]):.2f} m, "
                f"{math.degrees(np.linalg.norm(err[3:])):.2f} deg from the prior)")


def load_pipeline(map_file: str, weights: str, device: str = "auto",
                  config: PipelineConfig | None = None, localizer_config=None,
                  calibration: str | Path | None = None, tile_loader_config=None) -> RelocalizationPipeline:
    """Open the weights, the map (refusing a map built with other weights) and the weights'
    covariance calibration, and build the pipeline.

    ``map_file``: a map file or a tiled map folder (``core/maps/tiles.py``; its tiles then load in
    the background around the priors, as ``tile_loader_config`` (a ``TileLoaderConfig``; None:
    its defaults) says). calibration: a calibration file (``pixloc-ros calibrate``);
    None: the one stored next to the weights (``<weights>.covariance.json``) when it exists, else
    none; "": never calibrate. Setup errors raise with a message that says what to fix:
    ``WeightsError`` for the weights, ``FileNotFoundError``/``ValueError`` (from ``mapfile``) for
    the map, ``ValueError`` for a calibration that is malformed or belongs to other weights.
    """
    from dataclasses import replace as _replace

    from ..engine.checkpoint import load_weights, weights_fingerprint
    from ..engine.localizer import LocalizerConfig

    model = load_weights(weights, device="cpu")
    fingerprint = weights_fingerprint(model)
    loc_cfg = _replace(localizer_config or LocalizerConfig(), device=device)
    localizer = Localizer(model, loc_cfg)
    index = open_map_index(map_file, expected_fingerprint=fingerprint, expected_profile=localizer.profile.name,
                           tile_loader_config=tile_loader_config)
    calib = None
    path = calibration_path_for(weights) if calibration is None else (Path(calibration) if calibration else None)
    if path is not None and (calibration is not None or path.exists()):
        if not path.exists():
            raise FileNotFoundError(f"no covariance calibration at {path} (pixloc-ros calibrate writes one)")
        calib = CovarianceCalibration.load(path, expected_fingerprint=fingerprint)
    return RelocalizationPipeline(localizer, index, config, calib)
