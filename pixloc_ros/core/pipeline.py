"""The per-frame relocalization logic, free of ROS: priors, state machine, retrieval, PixLoc,
gating, covariance. The ROS node and the offline evaluator both drive this one class, so that
what `pixloc-ros evaluate` measures is what the node publishes.

States (the numbers are LocalizationStatus.STATE_*):
- NOT_INITIALIZED: no prior yet (no /initialpose, no GNSS fix).
- RELOCALIZING: a coarse prior (RViz initial pose or GNSS) -> several hypotheses from the
  nearest keyframes. An accepted alignment becomes a *candidate*; it is published only once the
  next frame, tracked from it with the odometry, confirms it (``confirmations``). A wrong
  alignment rarely survives that, and publishing nothing is better than publishing it.
- TRACKING: prior = last accepted pose composed with the odometry delta between the two image
  stamps (or the last pose itself without odometry), one hypothesis, Mahalanobis gate.
- LOST: ``lost_after`` consecutive rejections while tracking; the next frames relocalize.
A clock jump backwards (a bag restarted) resets everything.

Poses inside this module are (4, 4) float64 numpy arrays named ``a_from_b``.
"""
from __future__ import annotations

import math
import time
from bisect import bisect_left
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np
import torch
from scipy.spatial.transform import Rotation, Slerp

from .camera import Camera
from .covariance import engine_to_ros_covariance
from .gating import GatingConfig, gate
from .geometry import Pose
from .localizer import LocalizationResult, Localizer
from .query_points import QueryPoints
from .retrieval import MapIndex, RetrievalConfig, open_map_index


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
    num_hypotheses: int = 4  # initial poses tried at once while relocalizing
    max_points: int = 4000  # residual rows per frame at most (random subset): bounds the LM cost
    confirmations: int = 1  # tracked frames that must agree with a relocalization before it is published
    lost_after: int = 3  # consecutive rejections while tracking before the state becomes LOST
    max_prior_distance_m: float = 30.0  # a prior farther than this from every keyframe is outside the map
    gnss_max_age_s: float = 2.0  # a GNSS fix older than this (by image stamp) is not used as a prior
    gnss_min_sigma_m: float = 1.0  # floor of the GNSS standard deviation (NavSatFix covariances are often optimistic)
    gnss_gate_sigmas: float = 3.0  # a relocalization must lie within this many GNSS sigmas (+ 2 m) of the fix
    initialpose_max_age_s: float = 10.0  # an RViz initial pose older than this (by image stamp) is ignored
    track_sigma_floor_m: float = 0.15  # tracking prior std, translation floor per axis
    track_sigma_floor_deg: float = 1.0  # tracking prior std, rotation floor per axis
    odom_sigma_per_m: float = 0.05  # prior std grows by this fraction of the distance driven since the last fix
    odom_sigma_deg_per_m: float = 0.2  # and by this many degrees per metre driven
    no_odom_sigma_m: float = 1.0  # tracking without odometry: prior std per axis (the car moved by an unknown amount)
    no_odom_sigma_deg: float = 5.0
    no_odom_max_translation_m: float = 4.0  # tracking without odometry: max jump from the last pose
    odom_buffer_s: float = 60.0  # odometry history kept for interpolation
    odom_max_extrapolation_s: float = 0.2  # image stamps this far past the newest odometry use the newest sample
    clock_jump_tolerance_s: float = 0.5  # a stamp earlier than the last one by more than this resets the state
    # Added to the published covariance: the Hessian-based estimate ignores correlated residuals,
    # map errors and calibration errors, and an EKF fed near-zero variances trusts the pose blindly.
    covariance_floor_m: float = 0.03  # std, per position axis
    covariance_floor_deg: float = 0.3  # std, per rotation axis
    seed: int = 0  # subsampling of points is deterministic per frame stamp and seed

    def __post_init__(self):
        if self.num_hypotheses < 1:
            raise ValueError(f"num_hypotheses must be >= 1, got {self.num_hypotheses}")
        if self.max_points < 10:
            raise ValueError(f"max_points must be >= 10, got {self.max_points}")
        if self.lost_after < 1 or self.confirmations < 0:
            raise ValueError("lost_after must be >= 1 and confirmations >= 0")


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
    keyframe_ids: list[int] = field(default_factory=list)
    points_xyz: np.ndarray | None = None  # (N, 3) map points used (after subsampling)
    point_weights: np.ndarray | None = None  # (N,) their final fine-level weights
    prior_map_from_base: np.ndarray | None = None  # (4, 4) the prior this frame started from
    prior_distance_m: float = math.nan  # estimate vs prior, base_link position
    prior_rotation_deg: float = math.nan
    timings: Timings = field(default_factory=Timings)


def _check_pose(T: np.ndarray, what: str) -> np.ndarray:
    T = np.asarray(T, np.float64)
    if T.shape != (4, 4) or not np.isfinite(T).all():
        raise ValueError(f"{what} must be a finite (4, 4) transform, got shape {T.shape}"
                         f"{'' if T.shape != (4, 4) else ' with NaN/inf'}")
    R = T[:3, :3]
    if abs(np.linalg.det(R) - 1.0) > 1e-3 or np.abs(R @ R.T - np.eye(3)).max() > 1e-3:
        raise ValueError(f"{what} has an invalid rotation (not orthonormal)")
    return T


def _rotation_deg(R: np.ndarray) -> float:
    return math.degrees(Rotation.from_matrix(R).magnitude())


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
class _Prior:
    """Where a frame starts from."""

    kind: str  # "tracking", "confirming", "initialpose", "gnss"
    map_from_base: np.ndarray  # (4, 4) best guess
    hypotheses_map_from_cam: list[np.ndarray]  # initial camera poses to try
    covariance_ros: np.ndarray | None  # (6, 6) of map_from_cam for the Mahalanobis gate, or None
    gnss_xyz: np.ndarray | None = None  # (3,) map position of the GNSS fix (relocalization gate)
    gnss_sigma_m: float = math.nan


class RelocalizationPipeline:
    """Turn frames, odometry, GNSS and initial poses into published poses (see the module doc)."""

    def __init__(self, localizer: Localizer, index: MapIndex, config: PipelineConfig | None = None):
        self.localizer = localizer
        self.index = index
        self.config = config or PipelineConfig()
        self.odometry = OdometryBuffer(self.config.odom_buffer_s)
        self._last_stamps: dict[str, int] = {}  # newest stamp per input (clock-jump detection)
        self._gnss: tuple[int, np.ndarray, float] | None = None  # (stamp, map xyz, sigma m)
        self._initial_pose: tuple[int, np.ndarray, np.ndarray | None, bool] | None = None
        self.clock_jumps = 0  # resets caused by stamps going backwards (the node logs each)
        self.reset("start")

    # ---- state ----------------------------------------------------------------------------
    def reset(self, reason: str) -> None:
        """Forget the tracked pose, odometry and priors (e.g. the clock jumped back)."""
        self.state = State.NOT_INITIALIZED
        self.reset_reason = reason
        self._anchor: tuple[int, np.ndarray, np.ndarray] | None = None  # (stamp, map_from_base, cov ros)
        self._candidate_confirmations = 0
        self._failures = 0
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
        T = _check_pose(odom_from_base, "odometry pose")
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
        """
        T = _check_pose(map_from_base, "initial pose")
        self._check_clock(stamp_ns, "initial pose")
        self._initial_pose = (int(stamp_ns), T, None, is_2d)
        self.index.prefetch(T[:3, 3])
        self.state = State.RELOCALIZING
        self._anchor = None
        self._candidate_confirmations = 0
        self._failures = 0

    # ---- priors ---------------------------------------------------------------------------
    def _odom_delta(self, t0: int, t1: int) -> np.ndarray | None:
        """base(t0)_from_base(t1) from odometry, or None when not covered."""
        ext = int(self.config.odom_max_extrapolation_s * 1e9)
        a, b = self.odometry.at(t0, ext), self.odometry.at(t1, ext)
        if a is None or b is None:
            return None
        return np.linalg.inv(a) @ b

    def _keyframe_hypotheses(self, position: np.ndarray, view_dir: np.ndarray | None, base_from_cam: np.ndarray,
                             max_heading_deg: float, radius_m: float) -> list[np.ndarray]:
        """map_from_cam hypotheses from the keyframes nearest ``position``: each keyframe's own
        pose (PixLoc's retrieval initialisation), nearest first."""
        cfg = self.config
        idx, _, _ = self.index.nearest_keyframes(position, view_dir, k=cfg.num_hypotheses,
                                                 max_heading_diff_deg=max_heading_deg, max_distance_m=radius_m,
                                                 require_observations=True)
        return [self.index.keyframe_world_from_cam[i] for i in idx]

    def _prior(self, frame: FrameInput) -> _Prior | str:
        """The prior for this frame, or a string saying why there is none."""
        cfg = self.config
        base_from_cam = frame.base_from_cam
        stamp = frame.stamp_ns
        if self._anchor is not None:
            t0, map_from_base0, cov0 = self._anchor
            delta = self._odom_delta(t0, stamp) if self.has_odometry else None
            if delta is None and self.has_odometry:
                return f"no odometry at the image stamp ({stamp / 1e9:.3f} s); newest sample at " \
                       f"{self.odometry.stamps[-1] / 1e9:.3f} s"
            if delta is not None:
                dist = float(np.linalg.norm(delta[:3, 3]))
                sig_t = math.hypot(math.sqrt(cov0[0, 0]), cfg.odom_sigma_per_m * dist)
                sig_r = math.hypot(math.degrees(math.sqrt(cov0[5, 5])), cfg.odom_sigma_deg_per_m * dist)
                prior = map_from_base0 @ delta
            else:
                sig_t, sig_r, prior = cfg.no_odom_sigma_m, cfg.no_odom_sigma_deg, map_from_base0
            sig_t = max(sig_t, cfg.track_sigma_floor_m)
            sig_r = math.radians(max(sig_r, cfg.track_sigma_floor_deg))
            cov = np.diag([sig_t ** 2] * 3 + [sig_r ** 2] * 3)
            kind = "tracking" if self.state == State.TRACKING else "confirming"
            return _Prior(kind, prior, [prior @ base_from_cam], cov)

        if self._initial_pose is not None:
            t_init, T, _, is_2d = self._initial_pose
            if (stamp - t_init) / 1e9 <= cfg.initialpose_max_age_s:
                if is_2d:
                    yaw = math.atan2(T[1, 0], T[0, 0])
                    T = self.index.lift_2d_pose(T[0, 3], T[1, 3], yaw, base_from_cam)
                map_from_cam = T @ base_from_cam
                hyps = [map_from_cam] + self._keyframe_hypotheses(
                    map_from_cam[:3, 3], map_from_cam[:3, 2], base_from_cam, 45.0, 15.0)
                return _Prior("initialpose", T, hyps[:cfg.num_hypotheses], None)
            self._initial_pose = None

        if self._gnss is not None:
            t_fix, xyz, sigma = self._gnss
            age = (stamp - t_fix) / 1e9
            if abs(age) <= cfg.gnss_max_age_s:
                radius = max(cfg.gnss_gate_sigmas * sigma + 2.0, 5.0)
                hyps = self._keyframe_hypotheses(xyz, None, base_from_cam, 180.0, radius + 10.0)
                if not hyps:
                    dist = self.index.distance_to_map(xyz)
                    return f"prior_outside_map: GNSS fix is {dist:.0f} m from the nearest keyframe"
                guess = hyps[0] @ np.linalg.inv(base_from_cam)
                return _Prior("gnss", guess, hyps, None, xyz, sigma)
            return f"no_prior: newest GNSS fix is {age:.1f} s old (max {cfg.gnss_max_age_s} s)"
        return "no_prior: waiting for an initial pose (/initialpose) or a GNSS fix"

    # ---- points ---------------------------------------------------------------------------
    def _points(self, prior: _Prior, camera: Camera, stamp_ns: int) -> tuple[QueryPoints, list[int]]:
        """Reference rows for the prior's hypotheses: the union of their retrievals, subsampled."""
        cfg = self.config
        parts, keyframes, seen = [], [], set()
        per_hyp = cfg.retrieval if prior.kind in ("tracking", "confirming") else RetrievalConfig(
            **{**cfg.retrieval.__dict__, "num_keyframes": max(1, cfg.retrieval.num_keyframes // 2)})
        for map_from_cam in prior.hypotheses_map_from_cam:
            r = self.index.retrieve(np.linalg.inv(map_from_cam), camera=camera, config=per_hyp)
            new = [i for i, kf in enumerate(r.keyframe_ids) if int(kf) not in seen]
            if not new:
                continue
            keep = torch.isin(r.points.keyframe_ids, torch.as_tensor(r.keyframe_ids[new]))
            parts.append(r.points.select(keep))
            for i in new:
                seen.add(int(r.keyframe_ids[i]))
                keyframes.append(int(r.keyframe_ids[i]))
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
        base_from_cam = _check_pose(frame.base_from_cam, "camera extrinsic base_from_cam")
        self._check_clock(frame.stamp_ns, "image")
        out = FrameOutput(frame.stamp_ns, self.state, False, "")

        prior = self._prior(frame)
        if isinstance(prior, str):
            out.reason, out.state = prior, self.state
            out.timings.total_s = time.perf_counter() - t_start
            return out
        if self.state == State.NOT_INITIALIZED:
            self.state = State.RELOCALIZING
        out.prior_map_from_base = prior.map_from_base
        dist_to_map = self.index.distance_to_map(prior.map_from_base[:3, 3])
        if dist_to_map > self.config.max_prior_distance_m:
            return self._reject(out, prior, f"prior_outside_map: prior is {dist_to_map:.0f} m from the nearest "
                                            f"keyframe (max {self.config.max_prior_distance_m:g} m)", t_start)

        t0 = time.perf_counter()
        points, keyframes = self._points(prior, frame.camera, frame.stamp_ns)
        out.timings.retrieval_s = time.perf_counter() - t0
        out.keyframe_ids = keyframes
        if len(points) < self.config.gating.min_valid_points:
            why = self.index.unavailable_reason(prior.map_from_base[:3, 3])  # tiles loading or damaged
            return self._reject(out, prior, f"too_few_map_points: {len(points)} rows near the prior"
                                            + (f" ({why})" if why else ""), t_start)

        init = _to_pose(np.linalg.inv(np.stack(prior.hypotheses_map_from_cam)))
        result = self.localizer.localize(image, frame.camera, points, init)
        out.result = result
        out.timings.network_s = result.timings.network_s
        out.timings.optimizer_s = float(sum(result.timings.levels_s))
        out.points_xyz = points.xyz.numpy()
        out.point_weights = result.point_weights

        gate_prior = None if prior.kind in ("gnss", "initialpose") else _to_pose(prior.hypotheses_map_from_cam[0])
        decision = gate(result, gate_prior, prior.covariance_ros, self.config.gating)
        if not decision.accepted:
            return self._reject(out, prior, decision.reason, t_start)

        map_from_cam = result.cam_from_world.inv().to_4x4_numpy()
        map_from_base = map_from_cam @ np.linalg.inv(base_from_cam)
        out.prior_distance_m = float(np.linalg.norm(map_from_base[:3, 3] - prior.map_from_base[:3, 3]))
        out.prior_rotation_deg = _rotation_deg(map_from_base[:3, :3] @ prior.map_from_base[:3, :3].T)
        if prior.kind == "gnss":
            horiz = float(np.linalg.norm(map_from_base[:2, 3] - prior.gnss_xyz[:2]))
            limit = self.config.gnss_gate_sigmas * prior.gnss_sigma_m + 2.0
            if horiz > limit:
                return self._reject(out, prior, f"far_from_gnss: {horiz:.1f} m from the fix (max {limit:.1f} m)",
                                    t_start)
        cov = engine_to_ros_covariance(result.covariance, result.cam_from_world, _to_pose(base_from_cam))
        cov = cov + np.diag([self.config.covariance_floor_m ** 2] * 3
                            + [math.radians(self.config.covariance_floor_deg) ** 2] * 3)
        self._anchor = (frame.stamp_ns, map_from_base, cov)
        self._failures = 0
        if prior.kind in ("gnss", "initialpose"):
            self._initial_pose = None
            self._candidate_confirmations = 0
            if self.config.confirmations > 0:
                out.state = self.state = State.RELOCALIZING
                out.reason = f"relocalization_candidate: needs {self.config.confirmations} confirming frame(s)"
                out.timings.total_s = time.perf_counter() - t_start
                return out
        elif prior.kind == "confirming":
            self._candidate_confirmations += 1
            if self._candidate_confirmations < self.config.confirmations:
                out.reason = (f"relocalization_candidate: confirmed {self._candidate_confirmations}/"
                              f"{self.config.confirmations}")
                out.timings.total_s = time.perf_counter() - t_start
                return out
        out.state = self.state = State.TRACKING
        out.success, out.reason = True, "ok"
        out.map_from_base, out.covariance_ros = map_from_base, cov
        odom_from_base = self.odometry.at(frame.stamp_ns, int(self.config.odom_max_extrapolation_s * 1e9))
        if odom_from_base is not None:
            out.map_from_odom = map_from_base @ np.linalg.inv(odom_from_base)
        out.timings.total_s = time.perf_counter() - t_start
        return out

    def _reject(self, out: FrameOutput, prior: _Prior, reason: str, t_start: float) -> FrameOutput:
        """Record a rejected frame and advance the state machine."""
        out.reason = reason
        if prior.kind == "tracking":
            self._failures += 1
            if self._failures >= self.config.lost_after:
                self.state = State.LOST
                self._anchor = None
                out.reason = f"{reason}; lost after {self._failures} rejections, relocalizing"
        elif prior.kind == "confirming":
            # The candidate did not hold up: drop it and relocalize from the coarse prior again.
            self._anchor = None
            self.state = State.RELOCALIZING
        out.state = self.state
        out.timings.total_s = time.perf_counter() - t_start
        return out


def load_pipeline(map_file: str, weights: str, device: str = "auto",
                  config: PipelineConfig | None = None, localizer_config=None) -> RelocalizationPipeline:
    """Open the weights and the map (refusing a map built with other weights) and build the pipeline.

    ``map_file``: a map file or a tiled map folder (``core/tiles.py``; its tiles then load in
    the background around the priors). Setup errors raise with a message that says what to fix:
    ``WeightsError`` for the weights, ``FileNotFoundError``/``ValueError`` (from ``mapfile``) for the map.
    """
    from dataclasses import replace as _replace

    from .checkpoint import load_weights, weights_fingerprint
    from .localizer import LocalizerConfig

    model = load_weights(weights, device="cpu")
    loc_cfg = _replace(localizer_config or LocalizerConfig(), device=device)
    localizer = Localizer(model, loc_cfg)
    index = open_map_index(map_file, expected_fingerprint=weights_fingerprint(model),
                           expected_profile=localizer.profile.name)
    return RelocalizationPipeline(localizer, index, config)
