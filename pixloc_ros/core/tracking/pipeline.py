"""The per-frame relocalization logic, free of ROS. The ROS node and the offline evaluator both drive
this one class, so that what `pixloc-ros evaluate` measures is what the node publishes.

States (the numbers are LocalizationStatus.STATE_*):
- NOT_INITIALIZED: no prior yet (no /initialpose, no GNSS fix).
- RELOCALIZING: nothing is published. Several hypotheses are alive (``hypothesis_books``): each
  frame optimises every one of them, propagated with the odometry, plus fresh seeds (``seeds``: the
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

One frame (``process``): move the hypotheses with the odometry (``odometry``), plan the initial
poses (``seeds``), gather the map points (``frame_points``), run PixLoc on all of them at once (the
engine's localizer), judge every result and give it its covariance (``candidates``; calibrated with
``covariance_calibration`` when the weights come with a calibration, else the Hessian plus a floor),
update the books, and turn their decision into a verdict (``decide``) with a reason code
(``reasons``). Poses inside are (4, 4) float64 numpy arrays named ``a_from_b``.
"""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..engine.localizer import Localizer
from ..geometry.transforms import check_transform, rotation_angle_deg
from ..maps.open_index import open_map_index
from ..maps.retrieval import MapIndex, RetrievalConfig
from .candidates import CandidateJudge, CovarianceConfig
from .covariance_calibration import CovarianceCalibration, calibration_path_for
from .decide import Prediction, Verdict, decide
from .frame_points import frame_points
from .frames import FrameFeatures, FrameInput, FrameOutput, State, check_frame
from .gating import GatingConfig
from .hypothesis_books import HypothesisConfig, HypothesisTracker, Observation
from .innovation import CovarianceScaler, InnovationConfig
from .odometry import Motion, MotionConfig, OdometryBuffer
from .priors import PriorConfig, Priors
from .reasons import Reason, Why
from .rig_observe import RigFrameInput, anchor_seeds, camera_views, concat_points, localize_rig_frame, rig_frame_points
from .seeds import SeedConfig, SeedPlanner, follow_odometry, to_pose

# A rig frame's GNSS / initial-pose seeds look at this many times num_hypotheses keyframes: a rig's
# map holds each camera's keyframe of every place (synth --rig: 3, CMU: 2, RobotCar: 3), and
# ``anchor_seeds`` keeps one per place of the frame's cameras (without it, the frame's few starts
# were the same place three times over, and a rig of the front camera alone got a quarter of them).
RIG_KEYFRAME_OVERSAMPLE = 4


@dataclass
class PipelineConfig:
    """Everything the per-frame logic decides with, each part owned by the module that uses it; the
    node fills it from its parameters (same names)."""

    retrieval: RetrievalConfig = field(default_factory=lambda: RetrievalConfig(num_keyframes=3))
    gating: GatingConfig = field(default_factory=GatingConfig)
    hypotheses: HypothesisConfig = field(default_factory=HypothesisConfig)
    seeds: SeedConfig = field(default_factory=SeedConfig)
    priors: PriorConfig = field(default_factory=PriorConfig)
    motion: MotionConfig = field(default_factory=MotionConfig)
    covariance: CovarianceConfig = field(default_factory=CovarianceConfig)
    innovation: InnovationConfig = field(default_factory=InnovationConfig)
    max_points: int = 4000  # residual rows per frame at most (random subset): bounds the LM cost
    clock_jump_tolerance_s: float = 0.5  # a stamp earlier than the last one by more than this resets the state
    seed: int = 0  # subsampling of points is deterministic per frame stamp and seed

    def __post_init__(self):
        if self.max_points < 10:
            raise ValueError(f"max_points must be >= 10, got {self.max_points}")


@dataclass(frozen=True)
class PipelineSummary:
    """What the pipeline runs with, for a start-up log line."""

    num_keyframes: int
    num_points: int
    device: str  # where the network runs
    calibrated: bool  # the covariance comes from a calibration fitted for the weights
    min_inlier_ratio: float  # the relocalization inlier gate in use
    inlier_gate_fitted: bool  # that gate was fitted for the weights (else set in the params or the default)
    network_precision: str = ""  # on the CPU: "f32", "bf16" or "int8" (the resolved cpu_precision); "" on CUDA
    int8: str = ""  # the map's int8 network: "" (not asked for), "cache", "built", "rebuilt-...", "none: <why>"


class RelocalizationPipeline:
    """Turn frames, odometry, GNSS and initial poses into published poses (see the module doc)."""

    def __init__(self, localizer: Localizer, index: MapIndex, config: PipelineConfig | None = None,
                 calibration: CovarianceCalibration | None = None):
        """calibration: the weights' covariance calibration, or None (Hessian estimate plus a floor);
        its fitted inlier gates fill the thresholds ``config.gating`` leaves unset."""
        self.localizer = localizer
        self.index = index
        cfg = config or PipelineConfig()
        self.config = cfg = replace(cfg, gating=cfg.gating.with_gates(calibration.inlier_gates if calibration else None))
        self.calibration = calibration
        self.tracker = HypothesisTracker(cfg.hypotheses, cfg.gating.mahalanobis_probability)
        self.motion = Motion(cfg.motion)
        self.priors = Priors(cfg.priors)
        self.planner = SeedPlanner(cfg.seeds, cfg.priors, index)
        self.judge = CandidateJudge(cfg.gating, cfg.covariance, localizer.config, calibration,
                                    cfg.priors.gnss_gate_sigmas)
        self.scaler = CovarianceScaler(cfg.innovation)  # the online check of the published covariance
        self._last_stamps: dict[str, int] = {}  # newest stamp per input (clock-jump detection)
        self.clock_jumps = 0  # resets caused by stamps going backwards (the node logs each)
        self.reset("start")

    # ---- state ----------------------------------------------------------------------------
    @property
    def odometry(self) -> OdometryBuffer:
        """The odometry samples kept for interpolation."""
        return self.motion.buffer

    @property
    def has_odometry(self) -> bool:
        return len(self.odometry) > 0

    def reset(self, reason: str) -> None:
        """Forget the hypotheses, odometry and priors (e.g. the clock jumped back)."""
        self.state = State.NOT_INITIALIZED
        self.reset_reason = reason
        self.tracker.clear()
        self._last_frame_stamp: int | None = None  # stamp of the last frame the hypotheses were moved to
        self._frames = 0  # processed frames (alternates the challenger seeds)
        self.odometry.clear()
        self.priors.clear()
        self.scaler.reset()
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
        sigma = self.priors.gnss_sigma(covariance_enu)
        self._check_clock(stamp_ns, "GNSS")
        self.priors.set_gnss(stamp_ns, xyz, sigma)
        self.index.prefetch(xyz)  # a tiled map starts loading the tiles around the fix

    def set_initial_pose(self, stamp_ns: int, map_from_base: np.ndarray, is_2d: bool = True) -> None:
        """An operator's initial pose (RViz "2D Pose Estimate"): relocalize from it next frame.

        ``is_2d``: only x, y and yaw are meaningful; height and tilt come from the map.
        Every live hypothesis is dropped: the operator says the pose is elsewhere.
        """
        T = check_transform(map_from_base, "initial pose")
        self._check_clock(stamp_ns, "initial pose")
        self.priors.set_initial_pose(stamp_ns, T, is_2d)
        self.index.prefetch(T[:3, 3])
        self.state = State.RELOCALIZING
        self.tracker.clear()
        self._last_frame_stamp = None

    def check_initial_pose(self, map_from_base: np.ndarray, is_2d: bool) -> None:
        """ValueError when an operator's pose lies outside the map (farther from every keyframe than
        ``max_prior_distance_m``): it would replace good tracking with a relocalization that cannot
        succeed. The same limit applies to every prior of a frame."""
        x, y = float(map_from_base[0, 3]), float(map_from_base[1, 3])
        position = (self.index.lift_2d_pose(x, y, math.atan2(map_from_base[1, 0], map_from_base[0, 0]))[:3, 3]
                    if is_2d else map_from_base[:3, 3])
        distance = self.index.distance_to_map(position)
        limit = self.config.priors.max_prior_distance_m
        if distance > limit:
            raise ValueError(f"({x:.1f}, {y:.1f}) m is {distance:.0f} m from the nearest keyframe, outside the map "
                             f"(max_prior_distance_m {limit:g} m); the current localization is kept")

    # ---- the frame --------------------------------------------------------------------------
    def extract(self, frame: FrameInput | RigFrameInput) -> FrameFeatures:
        """The network's stage of ``process`` for ``frame`` (a rig instant: every camera's network,
        rig order): independent of the pipeline's state, so it may run on another thread, the next
        frame's while this one's ``process`` runs the LM (what the node's worker and
        ``evaluate_drive(overlap=True)`` do). ValueError for malformed input."""
        if isinstance(frame, RigFrameInput):
            frame.anchor_frame()  # checks every camera's image
            networks = [self.localizer.extract(image, rc.camera)
                        for image, rc in zip(frame.images_rgb, frame.rig.cameras)]
            return FrameFeatures(frame.stamp_ns, networks[frame.rig.anchor], networks)
        check_frame(frame)
        return FrameFeatures(frame.stamp_ns, self.localizer.extract(frame.image_rgb, frame.camera))

    def process(self, frame: FrameInput | RigFrameInput, features: FrameFeatures | None = None) -> FrameOutput:
        """Localize one frame, or one instant of a camera rig (``rig_observe``: the anchor camera's
        pose, every camera's points). ValueError for malformed input (nothing changes then).

        features: ``extract(frame)`` done beforehand (the same result as without; the output's
        ``timings.total_s`` then runs from the start of that extraction, the frame's latency)."""
        t_start = time.perf_counter() if features is None else features.started_s
        if features is not None and features.stamp_ns != frame.stamp_ns:
            raise ValueError(f"features of the frame at {features.stamp_ns} ns handed with the frame at {frame.stamp_ns} ns")
        rig_frame = frame if isinstance(frame, RigFrameInput) else None
        if features is not None and (features.rig is None) != (rig_frame is None):
            raise ValueError("features of a " + ("single camera" if features.rig is None else "rig")
                             + " handed with a " + ("rig instant" if rig_frame is not None else "single-camera frame"))
        if features is not None and rig_frame is not None and len(features.rig) != len(rig_frame.rig):
            raise ValueError(f"features of {len(features.rig)} cameras handed with a rig instant of "
                             f"{len(rig_frame.rig)} {list(rig_frame.rig.names)}")
        frame = frame if rig_frame is None else rig_frame.anchor_frame()
        base_from_cam = check_frame(frame)
        self._check_clock(frame.stamp_ns, "image")
        out = FrameOutput(frame.stamp_ns, self.state, covariance_calibrated=self.calibration is not None)

        # 1. Move the live hypotheses to this frame with the odometry.
        travel = self._predict(frame.stamp_ns)
        if travel is None:
            return self._finish(out, Why(Reason.NO_ODOMETRY, f"no odometry at the image stamp "
                                                             f"({frame.stamp_ns / 1e9:.3f} s); newest sample at "
                                                             f"{self.odometry.stamps[-1] / 1e9:.3f} s"), t_start)
        committed = self.tracker.committed
        predicted = None if committed is None else Prediction(committed.map_from_base.copy(),
                                                              committed.covariance.copy())

        # 2. This frame's initial poses (every live hypothesis, then seeds) and their map points.
        seeds, why = self.planner.seeds(frame, self.priors, 1 if rig_frame is None else RIG_KEYFRAME_OVERSAMPLE)
        if rig_frame is not None:  # a keyframe is the pose of the camera that took it, not the anchor's
            seeds = anchor_seeds(seeds, rig_frame.rig, self.index.keyframe_names, self.config.seeds.num_hypotheses)
            if not seeds and why is None:  # the keyframes near the prior were all other cameras'
                why = Why(Reason.PRIOR_OUTSIDE_MAP, f"no keyframe of the rig's cameras {list(rig_frame.rig.names)} "
                                                    "near the prior")
        # Keyframes near a GNSS fix are where the vehicle was at the fix's stamp: moved to this frame.
        seeds = follow_odometry(seeds, base_from_cam, lambda stamp: self.motion.delta(stamp, frame.stamp_ns))
        if not self.tracker.hypotheses and not seeds:
            return self._finish(out, why, t_start)
        if self.state == State.NOT_INITIALIZED:
            self.state = State.RELOCALIZING
        starts = self.planner.batch(frame, seeds, self.tracker, self._frames)
        out.prior_map_from_base = starts[0].map_from_cam @ np.linalg.inv(base_from_cam)
        dist_to_map = self.index.distance_to_map(out.prior_map_from_base[:3, 3])
        if dist_to_map > self.config.priors.max_prior_distance_m:
            return self._no_observation(out, Why(Reason.PRIOR_OUTSIDE_MAP, f"prior is {dist_to_map:.0f} m from the "
                                                 f"nearest keyframe (max {self.config.priors.max_prior_distance_m:g} m)"),
                                        travel, t_start)
        t0 = time.perf_counter()
        gather = frame_points if rig_frame is None else rig_frame_points
        points, out.keyframe_ids = gather(self.index, self.config.retrieval, [s.map_from_cam for s in starts],
                                          frame.camera if rig_frame is None else rig_frame.rig, frame.stamp_ns,
                                          committed is not None, self.config.max_points, self.config.seed)
        per_camera, points = (None, points) if rig_frame is None else (points, concat_points(points))
        out.timings.retrieval_s = time.perf_counter() - t0
        if len(points) < self.config.gating.min_valid_points:
            why = self.index.unavailable_reason(out.prior_map_from_base[:3, 3])  # tiles loading or damaged
            return self._no_observation(out, Why(Reason.TOO_FEW_MAP_POINTS, f"{len(points)} rows near the prior"
                                                 + (f" ({why})" if why else "")), travel, t_start)

        # 3. PixLoc on all of them at once, the candidates judged, then the books and the verdict.
        if rig_frame is None:
            network = features.network if features is not None else self.localizer.extract(frame.image_rgb,
                                                                                           frame.camera)
            result = self.localizer.localize_extracted(network, points,
                                                       to_pose(np.linalg.inv(np.stack([s.map_from_cam for s in starts]))))
        else:
            rig_out = localize_rig_frame(self.localizer, rig_frame, per_camera, [s.map_from_cam for s in starts],
                                         None if features is None else features.rig)
            result, out.cameras = rig_out.result, camera_views(rig_out, per_camera)
        out.result, out.points_xyz, out.point_weights = result, points.xyz.numpy(), result.point_weights
        out.timings.network_s = result.timings.network_s
        out.timings.optimizer_s = float(sum(result.timings.levels_s))
        gnss = self.priors.gnss_at(frame.stamp_ns).fix if self.priors.initial_pose is None else None
        sources = [s.source for s in starts]
        candidates = self.judge.judge(result, base_from_cam, sources, gnss, self.tracker,
                                      None if gnss is None else self.motion.delta(gnss.stamp_ns, frame.stamp_ns))
        observations = [Observation(b, c.map_from_base, c.covariance, c.cost, c.strong, sources[b], c.gate_covariance)
                        for b, c in enumerate(candidates) if c.failure is None]
        decision = self.tracker.update(observations, travel)
        verdict = decide(self.state, decision, candidates, sources, committed, predicted, result,
                         self.tracker.config, self.config.gating, self.tracker.gate_d2)
        gate = out.gate
        gate.hypotheses, gate.margin, gate.limit_d2 = decision.live, decision.margin, self.tracker.gate_d2
        if decision.leader is not None:
            gate.lead_frames, gate.lead_travel_m = decision.leader.lead_frames, decision.leader.lead_travel_m
        return self._apply(out, verdict, frame.stamp_ns, t_start)

    def _predict(self, stamp_ns: int) -> float | None:
        """Move the live hypotheses to ``stamp_ns`` with the odometry and widen them; the travel (m),
        or None when odometry is used but does not cover the stamp (nothing moved then)."""
        travel = 0.0
        if self.tracker.hypotheses and self._last_frame_stamp is not None:
            if self.has_odometry:
                delta = self.motion.delta(self._last_frame_stamp, stamp_ns)
                if delta is None:
                    return None
                travel = float(np.linalg.norm(delta[:3, 3]))
                self.tracker.predict(delta, self.motion.grow(travel))
            else:
                self.tracker.predict(None, self.motion.grow(None))
        self._last_frame_stamp = stamp_ns
        self._frames += 1
        return travel

    def _finish(self, out: FrameOutput, why: Why, t_start: float) -> FrameOutput:
        out.why, out.state, out.covariance_scale = why, self.state, self.scaler.scale
        out.timings.total_s = time.perf_counter() - t_start
        return out

    def _no_observation(self, out: FrameOutput, why: Why, travel: float, t_start: float) -> FrameOutput:
        """A frame that could not run PixLoc: every live hypothesis misses it."""
        decision = self.tracker.update([], travel, allow_spawn=False)
        if decision.dropped_committed is not None:
            self.state = State.LOST
            why = why.with_suffix(f"; lost after {self.tracker.config.lost_after} rejections, relocalizing")
            out.lost = True
        out.gate.hypotheses = decision.live
        return self._finish(out, why, t_start)

    def _apply(self, out: FrameOutput, verdict: Verdict, stamp_ns: int, t_start: float) -> FrameOutput:
        """The verdict into the frame's output and the next state."""
        self.state = verdict.state
        out.gate.mahalanobis_d2 = verdict.mahalanobis_d2
        out.wrong_lock, out.lost = verdict.wrong_lock, verdict.lost
        if verdict.newly_committed:
            self.priors.initial_pose = None  # used up: the next relocalization needs a new one
        if verdict.estimate is not None:
            out.estimate = est = verdict.estimate.estimate()
            prior = out.prior_map_from_base
            out.prior_distance_m = float(np.linalg.norm(est.map_from_base[:3, 3] - prior[:3, 3]))
            out.prior_rotation_deg = rotation_angle_deg(est.map_from_base[:3, :3] @ prior[:3, :3].T)
        if verdict.newly_committed or verdict.wrong_lock or verdict.lost:
            self.scaler.forget_last()  # a new track: its first pose is no innovation of the last one
        published = verdict.publish
        if published is not None:
            out.success = True
            odom_from_base = self.motion.at(stamp_ns)
            covariance = self.judge.publication_covariance(published)
            self.scaler.observe(stamp_ns, published.map_from_base, covariance, odom_from_base)
            out.map_from_base = published.map_from_base
            out.covariance_ros = covariance * self.scaler.scale
            if odom_from_base is not None:
                out.map_from_odom = published.map_from_base @ np.linalg.inv(odom_from_base)
        return self._finish(out, verdict.why, t_start)

    # ---- for the node: the map, the engine, start-up ------------------------------------------
    def summary(self) -> PipelineSummary:
        fitted = (self.calibration is not None and self.calibration.inlier_gates is not None
                  and self.config.gating.min_inlier_ratio == self.calibration.inlier_gates.min_inlier_ratio)
        return PipelineSummary(self.index.num_keyframes, self.index.num_points, str(self.localizer.device),
                               self.calibration is not None, self.config.gating.inlier_threshold(), fitted,
                               network_precision=self.localizer.network_precision(),
                               int8=getattr(self, "int8_source", ""))

    def verify_map(self) -> None:
        """Check every checksum of the map (reads it once); MapFileError naming the damaged part."""
        self.index.verify()

    def warm_up(self, width: int, height: int, num_points: int | None = None, hypotheses: int | None = None) -> float:
        """Prepare the network and the LM for frames of ``width`` x ``height`` (compiled CPU model,
        CUDA kernels); seconds taken. Defaults: the config's ``max_points`` and the most hypotheses a
        frame can optimise (``num_hypotheses`` or the relocalization grid)."""
        seeds = self.config.seeds
        return self.localizer.warm_up(width, height, num_points=num_points or self.config.max_points,
                                      hypotheses=hypotheses or max(seeds.num_hypotheses, seeds.relocalization_grid))

    @property
    def covariance_scale(self) -> float:
        """The online scale of the published covariance (``innovation.CovarianceScaler``, >= 1)."""
        return self.scaler.scale

    def lm_status(self):
        """The LM path in use and why (``engine.lm.guard.LMPathStatus``)."""
        return self.localizer.lm_status()

    def set_lm_warning_handler(self, handler) -> None:
        """Where the fused LM's one fallback warning goes (a callable taking the text)."""
        self.localizer.set_lm_warning_handler(handler)

    def keyframe_poses(self, keyframe_ids: list[int]) -> np.ndarray:
        """(K, 4, 4) ``map_from_cam`` of the given map keyframe ids (those in the map, map order)."""
        rows = np.flatnonzero(np.isin(self.index.keyframe_ids, np.asarray(keyframe_ids, np.int64)))
        return self.index.keyframe_world_from_cam[rows]

    def map_health(self):
        """A tiled map's tile health (``maps.tile_loader.TileHealth``); None for one map file."""
        return self.index.health()

    def close(self) -> None:
        """Stop a tiled map's loader thread (and release the map)."""
        self.index.close()


def load_pipeline(map_file: str, weights: str, device: str = "auto",
                  config: PipelineConfig | None = None, localizer_config=None,
                  calibration: str | Path | None = None, tile_loader_config=None,
                  on_warning=None) -> RelocalizationPipeline:
    """Open the weights, the map (refusing a map built with other weights) and the weights'
    covariance calibration, and build the pipeline.

    ``map_file``: a map file or a tiled map folder (``core/maps/tiles.py``; its tiles then load in
    the background around the priors, as ``tile_loader_config`` (a ``TileLoaderConfig``; None:
    its defaults) says). calibration: a calibration file (``pixloc-ros calibrate``);
    None: the one stored next to the weights (``<weights>.covariance.json``) when it exists, else
    none; "": never calibrate. Setup errors raise with a message that says what to fix:
    ``WeightsError`` for the weights, ``FileNotFoundError``/``ValueError`` (from ``mapfile``) for
    the map, ``ValueError`` for a calibration that is malformed or belongs to other weights.
    ``cpu_precision`` int8 (or auto) on the CPU: the map's int8 network (``int8_map``) is loaded from
    ``<map>.int8/`` (rebuilt when stale or unreadable); an explicit int8 without one fails here
    (``Int8Unavailable``), auto goes on without it (with one ``on_warning(text)`` when it broke).
    """
    from ..engine.checkpoint import load_weights, weights_fingerprint
    from ..engine.localizer import LocalizerConfig

    model = load_weights(weights, device="cpu")
    fingerprint = weights_fingerprint(model)
    localizer_config = replace(localizer_config or LocalizerConfig(), device=device)
    profile = localizer_config.profile or model.engine_profile
    index = open_map_index(map_file, expected_fingerprint=fingerprint, expected_profile=profile.name,
                           tile_loader_config=tile_loader_config)
    try:
        int8_source = _map_int8(model, index, map_file, fingerprint, localizer_config, on_warning)
        localizer = Localizer(model, localizer_config)
    except BaseException:
        index.close()
        raise
    calib = None
    path = calibration_path_for(weights) if calibration is None else (Path(calibration) if calibration else None)
    if path is not None and (calibration is not None or path.exists()):
        if not path.exists():
            raise FileNotFoundError(f"no covariance calibration at {path} (pixloc-ros calibrate writes one)")
        calib = CovarianceCalibration.load(path, expected_fingerprint=fingerprint)
    pipeline = RelocalizationPipeline(localizer, index, config, calib)
    pipeline.int8_source = int8_source
    return pipeline


def _map_int8(model, index: MapIndex, map_file, fingerprint: str, config, on_warning) -> str:
    """Hand ``model`` the map's int8 network where ``config.cpu_precision`` may run it (int8 or auto,
    the CPU, OpenVINO); how it was had ("cache", "built", ...), "none: <why>" or "" (not asked for)."""
    from ..engine import network_runtime
    from ..engine.localizer import resolve_device
    from .int8_map import Int8Unavailable, int8_folder, load_int8

    if (config.cpu_precision not in ("int8", "auto") or resolve_device(config.device).type != "cpu"
            or network_runtime.resolve_cpu_runtime(config.cpu_runtime) != "openvino"):
        return ""
    if config.cpu_precision == "auto" and network_runtime.cpu_has_bf16():
        return ""  # auto runs bf16 here (resolve_cpu_precision): no int8 network to load or rebuild
    if config.cpu_precision == "auto" and not int8_folder(map_file).exists():
        return "none: no <map>.int8 (pixloc-ros quantize)"  # auto never starts a quantisation from nothing
    try:
        net = load_int8(model, index, map_file, fingerprint, localizer_config=config, warn=on_warning)
    except Int8Unavailable as err:
        if config.cpu_precision == "int8":
            raise
        return f"none: {err}"
    except Exception as err:  # auto: a broken int8 path falls back with one warning
        if config.cpu_precision == "int8":
            raise
        model.set_int8_unet(None, False)
        text = f"int8 network unavailable ({type(err).__name__}: {err}); running without it"
        if on_warning is None:
            warnings.warn(text, RuntimeWarning, stacklevel=3)
        else:
            on_warning(text)
        return f"none: {err}"
    return net.source + ("" if net.check.passed else " (accuracy check failed)")


__all__ = ["PipelineConfig", "PipelineSummary", "RelocalizationPipeline", "load_pipeline"]
