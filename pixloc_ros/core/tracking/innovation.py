"""The published covariance checked online against the odometry (innovation-based adaptive
estimation), for weights and seasons no calibration has seen.

Two consecutive published poses and the odometry between them must agree: the second pose minus
the first moved by the odometry is the *innovation* e, whose covariance under the published model
is about S = Sigma_k + Sigma_(k-1) + the odometry's own uncertainty over that motion. The
normalised innovation squared NIS = e^T S^-1 e follows chi^2(6) when the model is right. This module
keeps the NIS of the last ``window`` pairs and scales every published covariance by
``max(1, median(NIS) / median(chi^2(6)))`` (the median: a rare jump, e.g. a wrong-lock frame the
gate let through, must not inflate the covariance for the next window), bounded by ``max_scale``.
It never shrinks a covariance: what it cannot see (below) is a reason to keep the calibration's
floor.

What it cannot see: an error shared by consecutive frames (a bias along the road, a map error, a
biased minimum that drifts slowly) cancels in e, so the scale measures only the frame-to-frame
part of the error; the calibration (``covariance_calibration``, from drives or from the map) has to
carry the rest. Positively correlated errors make the NIS smaller, never larger: the scale is a
lower bound of the inflation a season needs.
Poses (4, 4) float64 ``map_from_base``; covariances (6, 6) ROS order (x y z rx ry rz, map frame).
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np
from scipy.stats import chi2

from ..geometry.transforms import pose_difference
from .gating import mahalanobis_d2

NIS_MEDIAN_6 = float(chi2.median(6))  # 5.35: the median NIS of a consistent 6-DoF model


@dataclass
class InnovationConfig:
    """Online covariance scaling from consecutive published poses and the odometry."""

    window: int = 20  # innovations kept (consecutive published pairs)
    min_samples: int = 6  # innovations needed before the scale leaves 1
    max_scale: float = 25.0  # the scale's upper bound (covariance factor; 5x the standard deviations)
    max_gap_s: float = 1.5  # a pair further apart in time is not compared (odometry drift, a gap)
    odom_sigma_per_m: float = 0.01  # odometry's own relative error: std per metre driven (each axis)
    odom_sigma_deg_per_m: float = 0.05  # ... and degrees per metre
    enabled: bool = True


class CovarianceScaler:
    """Keeps the NIS of consecutive published poses and the scale it implies (module doc)."""

    def __init__(self, config: InnovationConfig | None = None):
        self.config = config or InnovationConfig()
        self.nis: deque[float] = deque(maxlen=self.config.window)
        self.scale = 1.0
        self._last: tuple[int, np.ndarray, np.ndarray, np.ndarray] | None = None  # stamp, pose, cov, odom pose

    def reset(self) -> None:
        """Forget the history (a reset of the pipeline; the scale returns to 1)."""
        self.nis.clear()
        self.scale = 1.0
        self._last = None

    def forget_last(self) -> None:
        """The next published pose is not consecutive with the last one (frames without a pose between)."""
        self._last = None

    def observe(self, stamp_ns: int, map_from_base: np.ndarray, covariance: np.ndarray,
                odom_from_base: np.ndarray | None) -> float | None:
        """A published pose with its model covariance (before scaling) and the odometry at its stamp
        (None: no odometry). Returns this pair's NIS (None when there was no pair) and updates
        ``scale``."""
        cfg = self.config
        last, self._last = self._last, (None if odom_from_base is None else
                                        (int(stamp_ns), map_from_base, covariance, odom_from_base))
        if not cfg.enabled or last is None or odom_from_base is None:
            return None
        t0, pose0, cov0, odom0 = last
        if not 0 < (stamp_ns - t0) / 1e9 <= cfg.max_gap_s:
            return None
        motion = np.linalg.inv(odom0) @ odom_from_base  # base(t0)_from_base(t1)
        predicted = pose0 @ motion
        distance = float(np.linalg.norm(motion[:3, 3]))
        odom = np.diag([(cfg.odom_sigma_per_m * distance) ** 2] * 3
                       + [math.radians(cfg.odom_sigma_deg_per_m * distance) ** 2] * 3)
        nis = mahalanobis_d2(pose_difference(map_from_base, predicted), covariance + cov0 + odom)
        if not math.isfinite(nis):
            return None
        self.nis.append(nis)
        if len(self.nis) >= cfg.min_samples:
            self.scale = float(np.clip(np.median(self.nis) / NIS_MEDIAN_6, 1.0, cfg.max_scale))
        return nis


__all__ = ["CovarianceScaler", "InnovationConfig", "NIS_MEDIAN_6"]
