"""Every optimised initial pose of a frame, judged before the hypothesis books see it: quality
(valid points, inliers, cost), a well-posed Hessian, the covariance it would be published with
(calibrated when the weights have a calibration, else the Hessian plus a floor), whether that
covariance allows publishing, and consistency with a GNSS fix. Poses (4, 4), covariances (6, 6)
in ROS order (x y z rx ry rz, map frame); metres, radians (degrees in the config).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..engine.covariance import engine_to_ros_covariance, make_spd, normalized_min_eigenvalue, pose_covariance
from ..engine.localizer import LocalizationResult, LocalizerConfig
from .covariance_calibration import CovarianceCalibration
from .frames import Estimate
from .gating import GatingConfig, quality_failure
from .hypothesis_books import HypothesisTracker
from .priors import GnssPrior
from .reasons import Reason, Why
from .seeds import to_pose


@dataclass
class CovarianceConfig:
    """The published covariance and how wide it may be."""

    # Added to the Hessian-based covariance, which ignores correlated residuals, map errors and
    # calibration errors: the continuation gate's covariance, and (times the inflation below) the
    # published one of weights without a calibration. With a calibration its fitted model is published.
    covariance_floor_m: float = 0.03  # std, per position axis
    covariance_floor_deg: float = 0.3  # std, per rotation axis
    # Weights without a calibration weigh their results in the hypothesis books with (Hessian +
    # floor) x this: 4x the standard deviations (issue 14: Hessian + floor alone gave the shipped
    # weights a mean NEES of 4.9 in overcast, 35 in autumn and 90 in snow).
    uncalibrated_inflation: float = 16.0
    # ... and publish the Hessian's covariance plus these standard deviations per axis: without a
    # calibration nothing says how wrong a pose that passed the gates can be, so it goes out with
    # the largest uncertainty the node publishes at all (``max_sigma_m`` / ``max_sigma_deg``).
    # x16 was not enough for other weights: the first shipped ones tracked 0.5-2.6 m off in snow
    # and dusk with a Hessian of centimetres (mean NEES 27 and 57, BENCHMARKS issue 28).
    uncalibrated_sigma_m: float = 0.5
    uncalibrated_sigma_deg: float = 3.0
    # With a covariance calibration: a result whose calibrated 1-sigma uncertainty (largest
    # position / rotation axis) exceeds these is not published (the calibration says the frame
    # matched the map too badly to be a measurement an EKF should take; it still continues its
    # hypothesis, with little weight).
    max_sigma_m: float = 0.5
    max_sigma_deg: float = 3.0


@dataclass
class Candidate:
    """One optimised initial pose of this frame, before the books."""

    map_from_base: np.ndarray | None  # (4, 4), None when the localizer has no pose for it
    failure: Why | None  # why it is no observation (None: it is one)
    strong: bool = False  # passed the relocalization-grade checks
    covariance: np.ndarray | None = None  # (6, 6) its weight in the books; published too with a calibration
    gate_covariance: np.ndarray | None = None  # (6, 6) what the continuation gate uses (see ``judge``)
    uncertain: Why | None = None  # why its calibrated uncertainty does not allow publishing it
    hessian_covariance: np.ndarray | None = None  # (6, 6) sigma^2 H^-1 of map_from_base, ROS order (no calibration)
    inlier_ratio: float = math.nan
    cost: float = math.inf
    num_valid: int = 0
    jitter_m: float | None = None  # jitter of the hypothesis it started from (None: a seed, or no history)

    @property
    def publishable(self) -> bool:
        return self.uncertain is None

    def estimate(self) -> Estimate:
        """The candidate as the frame's estimate (its pose must exist)."""
        return Estimate(self.map_from_base, self.covariance, self.hessian_covariance, self.inlier_ratio,
                        self.cost, self.num_valid, self.jitter_m)


def largest_sigmas(covariance_ros: np.ndarray) -> tuple[float, float]:
    """Largest 1-sigma of a ROS covariance: position (m) and rotation (deg), worst direction."""
    pos = float(np.sqrt(np.linalg.eigvalsh(covariance_ros[:3, :3])[-1]))
    rot = math.degrees(float(np.sqrt(np.linalg.eigvalsh(covariance_ros[3:, 3:])[-1])))
    return pos, rot


class CandidateJudge:
    """Checks a frame's optimised poses and gives each its covariance."""

    def __init__(self, gating: GatingConfig, covariance: CovarianceConfig, localizer: LocalizerConfig,
                 calibration: CovarianceCalibration | None, gnss_gate_sigmas: float):
        self.gating = gating
        self.config = covariance
        self.localizer = localizer
        self.calibration = calibration
        self.gnss_gate_sigmas = gnss_gate_sigmas

    def published_covariance(self, hessian_covariance_ros: np.ndarray, R_map_base: np.ndarray,
                             inlier_ratio: float, jitter_m: float | None) -> np.ndarray:
        """(6, 6) ROS covariance to publish from the Hessian-based one (map axes): calibrated when
        the weights have a calibration, else the gate's covariance times ``uncalibrated_inflation``.
        Symmetric positive definite. jitter_m: the jitter of the hypothesis the result continues
        (None: unknown)."""
        if self.calibration is not None:
            return make_spd(self.calibration.covariance_ros(hessian_covariance_ros, R_map_base, inlier_ratio,
                                                            jitter_m))
        return self.config.uncalibrated_inflation * self.gate_covariance(hessian_covariance_ros)

    def publication_covariance(self, candidate: Candidate) -> np.ndarray:
        """(6, 6) ROS covariance (map axes) a published ``candidate`` goes out with: its own when the
        weights have a calibration, else its Hessian-based covariance plus ``uncalibrated_sigma_*``
        per axis (wider than what weighs it in the books: conservative, never optimistic)."""
        if self.calibration is not None or candidate.hessian_covariance is None:
            return candidate.covariance
        cfg = self.config
        widen = np.diag([cfg.uncalibrated_sigma_m ** 2] * 3 + [math.radians(cfg.uncalibrated_sigma_deg) ** 2] * 3)
        return make_spd(candidate.hessian_covariance + widen)

    def gate_covariance(self, hessian_covariance_ros: np.ndarray) -> np.ndarray:
        """(6, 6) the continuation gate's covariance: the Hessian-based one plus the configured floor."""
        cfg = self.config
        floor = np.diag([cfg.covariance_floor_m ** 2] * 3 + [math.radians(cfg.covariance_floor_deg) ** 2] * 3)
        return make_spd(hessian_covariance_ros + floor)

    def judge(self, result: LocalizationResult, base_from_cam: np.ndarray, sources: list[int | None],
              gnss: GnssPrior | None, tracker: HypothesisTracker,
              base_fix_from_base: np.ndarray | None = None) -> list[Candidate]:
        """One ``Candidate`` per optimised initial pose (``sources``: the live hypothesis each one
        continues, None for seeds); ``gnss``: a fix the uncommitted ones must agree with;
        ``base_fix_from_base`` (4, 4): the odometry's motion from the fix's stamp to the frame's
        (None: unknown). Each candidate is compared with the fix where it would have been at the
        fix's stamp (``map_from_base @ inv(base_fix_from_base)``): a fix is up to
        ``gnss_max_age_s`` old, metres at road speed, and the true pose would fail the gate."""
        hyps = result.hypotheses
        if hyps is None:
            return [Candidate(None, Why(Reason.LOCALIZATION_FAILED, result.reason)) for _ in sources]
        gating, loc = self.gating, self.localizer
        committed = tracker.committed
        jitters = {h.id: h.jitter_m for h in tracker.hypotheses}
        base_pose = to_pose(base_from_cam)
        out = []
        for b, source in enumerate(sources):
            cam_from_world = hyps.cam_from_world[b]
            map_from_base = cam_from_world.inv().to_4x4_numpy() @ np.linalg.inv(base_from_cam)
            cost, initial, nv, inl = hyps.cost[:, b], hyps.initial_cost[:, b], int(hyps.num_valid[b]), \
                float(hyps.inlier_ratio[b])
            tracked = committed is not None and source == committed.id
            cand = Candidate(map_from_base, None, inlier_ratio=inl, cost=float(cost[0]), num_valid=nv,
                             jitter_m=jitters.get(source))
            cand.failure = quality_failure(nv, inl, cost, initial, gating, tracked)
            if cand.failure is None:
                H = hyps.hessian[b]
                min_eig = normalized_min_eigenvalue(H)
                cov = None if min_eig < loc.min_normalized_eigenvalue or bool(hyps.singular[b]) else \
                    pose_covariance(H, float(hyps.sigma2[b]) * loc.covariance_scale)
                if cov is None:
                    cand.failure = Why(Reason.DEGENERATE_GEOMETRY, f"the points do not constrain all 6 pose directions "
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
                    cand.gate_covariance = self.gate_covariance(cand.hessian_covariance)
            if cand.failure is None and self.calibration is not None:
                sigma_m, sigma_deg = largest_sigmas(cand.covariance)
                if sigma_m > self.config.max_sigma_m or sigma_deg > self.config.max_sigma_deg:
                    cand.uncertain = Why(Reason.UNCERTAIN, f"calibrated sigma {sigma_m:.2f} m / {sigma_deg:.2f} deg "
                                                           f"exceeds {self.config.max_sigma_m:g} m / "
                                                           f"{self.config.max_sigma_deg:g} deg")
            if cand.failure is None and not tracked and gnss is not None:
                at_fix = map_from_base if base_fix_from_base is None else map_from_base @ np.linalg.inv(base_fix_from_base)
                horiz = float(np.linalg.norm(at_fix[:2, 3] - gnss.xyz[:2]))
                limit = gnss.gate_m(self.gnss_gate_sigmas)
                if horiz > limit:
                    cand.failure = Why(Reason.FAR_FROM_GNSS, f"{horiz:.1f} m from the fix (max {limit:.1f} m)")
            if cand.failure is None:
                cand.strong = quality_failure(nv, inl, cost, initial, gating) is None
            out.append(cand)
        return out


__all__ = ["Candidate", "CandidateJudge", "CovarianceConfig", "largest_sigmas"]
