"""Accept or reject a localization before it is published.

A PixLoc alignment can converge to a wrong minimum (repeated structure, a wrong prior, a
changed scene) and still look "converged". Checks, in order (first failure wins):
1. the localizer succeeded (enough valid points, a finite covariance);
2. enough valid points at the fine level;
3. enough inliers: the share of valid points whose residual is small (rho' >= 0.5);
4. the cost did not grow at any level that ran (final <= factor x initial);
5. consistency with the prior: the Mahalanobis distance of the pose difference under
   (prior covariance + estimate covariance) below the chi-square quantile (6 dof) when a prior
   covariance is given; otherwise the translation / rotation difference below fixed limits.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from scipy.stats import chi2

from ..engine.covariance import engine_to_ros_covariance, ros_pose_error
from ..engine.localizer import LocalizationResult
from ..geometry.pose import Pose
from .inlier_gates import DEFAULT_MIN_INLIER_RATIO, DEFAULT_TRACK_MIN_INLIER_RATIO, InlierGates
from .reasons import OK, Reason, Why


@dataclass
class GatingConfig:
    """Thresholds of ``gate``."""

    min_valid_points: int = 100  # fine-level valid points needed to publish
    # Share of valid fine-level points with a small residual; wrong alignments score low. The share
    # depends on the weights: None takes the thresholds fitted for them (their calibration file,
    # core/tracking/inlier_gates.py), else DEFAULT_MIN_INLIER_RATIO (0.2).
    min_inlier_ratio: float | None = None
    max_cost_ratio: float = 1.1  # final cost may not exceed this x the cost where the level started (any level)
    # While tracking a committed hypothesis, a frame whose pose agrees with the odometry-propagated
    # prior may have fewer inliers: the prior, not the inlier share, rules out a wrong minimum there
    # (in autumn light most correct tracked frames of the first weights measured 0.07-0.2).
    # Relocalization keeps min_inlier_ratio, which also bounds which hypotheses may ever be
    # committed. None: fitted, else DEFAULT_TRACK_MIN_INLIER_RATIO (0.08).
    track_min_inlier_ratio: float | None = None
    mahalanobis_probability: float = 0.999  # chi^2(6) quantile used with a prior covariance (d^2 <= 22.46)
    max_translation_m: float = 5.0  # without prior covariance: max camera-centre distance from the prior
    max_rotation_deg: float = 20.0  # without prior covariance: max rotation from the prior

    def inlier_threshold(self, tracked: bool = False) -> float:
        """The inlier-ratio threshold in use: relocalization's, or the committed hypothesis' (tracked)."""
        if tracked:
            return DEFAULT_TRACK_MIN_INLIER_RATIO if self.track_min_inlier_ratio is None else self.track_min_inlier_ratio
        return DEFAULT_MIN_INLIER_RATIO if self.min_inlier_ratio is None else self.min_inlier_ratio

    def with_gates(self, gates: InlierGates | None) -> "GatingConfig":
        """A copy whose unset (None) thresholds take ``gates``' fitted ones (or stay None: defaults)."""
        if gates is None:
            return replace(self)
        return replace(self, min_inlier_ratio=gates.min_inlier_ratio if self.min_inlier_ratio is None
                       else self.min_inlier_ratio,
                       track_min_inlier_ratio=gates.track_min_inlier_ratio if self.track_min_inlier_ratio is None
                       else self.track_min_inlier_ratio)


@dataclass
class GateDecision:
    """Outcome of ``gate``; distances are None when no prior was given."""

    accepted: bool
    why: Why  # OK, or the reason code and its detail
    mahalanobis_d2: float | None = None  # squared Mahalanobis distance to the prior (6 dof)
    translation_m: float | None = None  # camera-centre distance to the prior
    rotation_deg: float | None = None  # rotation angle to the prior

    @property
    def reason(self) -> str:
        """"ok" or "<key>: <detail>", e.g. "prior_mahalanobis: d2 = 40.1 > 22.5 (...)"."""
        return self.why.text


def quality_failure(num_valid: int, inlier_ratio: float, cost, initial_cost, config: GatingConfig,
                    tracked: bool = False) -> Why | None:
    """Checks 2-4 of the module doc on one hypothesis' figures; None when they pass, else why not.

    cost, initial_cost: final / starting mean cost per level, finest first (inf where a level did
    not run); tracked: the committed hypothesis' own continuation (a lower inlier threshold).
    """
    min_inliers = config.inlier_threshold(tracked)
    if num_valid < config.min_valid_points:
        return Why(Reason.TOO_FEW_VALID_POINTS, f"{num_valid} < {config.min_valid_points}")
    if not inlier_ratio >= min_inliers:
        return Why(Reason.LOW_INLIER_RATIO, f"{inlier_ratio:.3f} < {min_inliers:.3g}")
    for level, (final, initial) in enumerate(zip(cost, initial_cost)):
        if math.isfinite(initial) and not final <= config.max_cost_ratio * initial:
            return Why(Reason.COST_INCREASED, f"level {level} cost {final:.4g} > "
                                              f"{config.max_cost_ratio} x initial {initial:.4g}")
    return None


def mahalanobis_d2(error: np.ndarray, covariance: np.ndarray) -> float:
    """``e^T S^-1 e`` of a (6,) pose difference under a (6, 6) covariance; inf when S is singular."""
    try:
        d2 = float(error @ np.linalg.solve(0.5 * (covariance + covariance.T), error))
    except np.linalg.LinAlgError:
        return math.inf
    return d2 if d2 >= 0 else math.inf


def gate(result: LocalizationResult, prior_map_from_cam: Pose | None = None,
         prior_covariance: np.ndarray | None = None, config: GatingConfig | None = None) -> GateDecision:
    """Decide whether ``result`` may be published.

    prior_map_from_cam: the prior pose of the camera in the map (``world_from_cam``), or None;
    prior_covariance: (6, 6) covariance of that prior in the ROS convention (x y z rx ry rz,
    position and left rotation vector in the map frame), or None.
    """
    cfg = config or GatingConfig()
    if not result.success or result.cam_from_world is None:
        return GateDecision(False, Why(Reason.LOCALIZATION_FAILED, result.reason))
    failure = quality_failure(result.num_valid, result.inlier_ratio, result.cost, result.initial_cost, cfg)
    if failure is not None:
        return GateDecision(False, failure)
    if prior_map_from_cam is None:
        return GateDecision(True, OK)

    if prior_map_from_cam.shape.numel() != 1:
        raise ValueError(f"expected one prior pose, got batch shape {tuple(prior_map_from_cam.shape)}")
    estimate = result.cam_from_world.double().cpu().inv().reshape()  # map_from_cam
    prior = prior_map_from_cam.double().cpu().reshape()
    err = ros_pose_error(estimate, prior)
    trans = float(np.linalg.norm(err[:3]))
    rot = math.degrees(float(np.linalg.norm(err[3:])))
    if prior_covariance is not None:
        prior_cov = np.asarray(prior_covariance, np.float64)
        if prior_cov.shape != (6, 6) or not np.isfinite(prior_cov).all():
            raise ValueError(f"prior covariance must be a finite (6, 6) matrix, got shape {prior_cov.shape}")
        identity = Pose.identity(dtype=estimate.dtype)
        est_cov = (engine_to_ros_covariance(result.covariance, result.cam_from_world.double().cpu(), identity)
                   if result.covariance is not None else np.zeros((6, 6)))
        d2 = mahalanobis_d2(err, 0.5 * (prior_cov + prior_cov.T) + est_cov)
        limit = float(chi2.ppf(cfg.mahalanobis_probability, 6))
        if not (d2 >= 0 and d2 <= limit):
            return GateDecision(False, Why(Reason.PRIOR_MAHALANOBIS, f"d2 = {d2:.3g} > {limit:.3g} "
                                           f"({trans:.2f} m, {rot:.2f} deg from the prior)"), d2, trans, rot)
        return GateDecision(True, OK, d2, trans, rot)
    if trans > cfg.max_translation_m or rot > cfg.max_rotation_deg:
        return GateDecision(False, Why(Reason.FAR_FROM_PRIOR, f"{trans:.2f} m / {rot:.2f} deg exceeds "
                                       f"{cfg.max_translation_m} m / {cfg.max_rotation_deg} deg"), None, trans, rot)
    return GateDecision(True, OK, None, trans, rot)
