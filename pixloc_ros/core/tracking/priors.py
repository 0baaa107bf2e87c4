"""Where the vehicle roughly is when no hypothesis is tracked: the operator's initial pose (RViz "2D
Pose Estimate") and the newest GNSS fix, each usable for a while after its stamp. Typed: a fresh
fix, or why there is none. Positions in the map frame, metres; poses (4, 4) float64.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .reasons import Reason, Why


@dataclass
class PriorConfig:
    """How priors are used."""

    max_prior_distance_m: float = 30.0  # a prior farther than this from every keyframe is outside the map
    gnss_max_age_s: float = 2.0  # a GNSS fix older than this (by image stamp) is not used as a prior
    gnss_min_sigma_m: float = 1.0  # floor of the GNSS standard deviation (NavSatFix covariances are often optimistic)
    gnss_gate_sigmas: float = 3.0  # an uncommitted hypothesis must lie within this many GNSS sigmas (+ 2 m) of the fix
    initialpose_max_age_s: float = 10.0  # an RViz initial pose older than this (by image stamp) is ignored


@dataclass(frozen=True)
class GnssPrior:
    """A GNSS fix in the map frame."""

    stamp_ns: int
    xyz: np.ndarray  # (3,) map frame, metres
    sigma_m: float  # horizontal standard deviation, floored at gnss_min_sigma_m

    def gate_m(self, sigmas: float) -> float:
        """Largest horizontal distance (m) of a hypothesis consistent with this fix: ``sigmas`` x sigma + 2 m."""
        return sigmas * self.sigma_m + 2.0


@dataclass(frozen=True)
class InitialPose:
    """An operator's initial pose of base_link in the map."""

    stamp_ns: int
    map_from_base: np.ndarray  # (4, 4)
    is_2d: bool  # only x, y and yaw are meaningful; height and tilt come from the map


@dataclass(frozen=True)
class GnssLookup:
    """The GNSS prior at an image stamp: a fresh ``fix``, or ``stale`` saying why the newest fix is
    not used; both None when no fix ever came."""

    fix: GnssPrior | None = None
    stale: Why | None = None


class Priors:
    """The newest GNSS fix and operator initial pose (stamps in ns, on the data's timeline)."""

    def __init__(self, config: PriorConfig):
        self.config = config
        self.gnss: GnssPrior | None = None
        self.initial_pose: InitialPose | None = None

    def clear(self) -> None:
        self.gnss = None
        self.initial_pose = None

    def gnss_sigma(self, covariance_enu: np.ndarray | None) -> float:
        """Horizontal std (m) of a fix from its (3, 3) ENU covariance (None: unknown), floored."""
        sigma = self.config.gnss_min_sigma_m
        if covariance_enu is not None:
            cov = np.asarray(covariance_enu, np.float64).reshape(3, 3)
            if np.isfinite(cov).all() and np.trace(cov[:2, :2]) > 0:
                sigma = max(sigma, math.sqrt(0.5 * np.trace(cov[:2, :2])))
        return sigma

    def set_gnss(self, stamp_ns: int, xyz: np.ndarray, sigma_m: float) -> None:
        self.gnss = GnssPrior(int(stamp_ns), np.asarray(xyz, np.float64).reshape(3), float(sigma_m))

    def gnss_at(self, stamp_ns: int) -> GnssLookup:
        """The fix usable at ``stamp_ns`` (within ``gnss_max_age_s`` either way)."""
        if self.gnss is None:
            return GnssLookup()
        age = (stamp_ns - self.gnss.stamp_ns) / 1e9
        if abs(age) > self.config.gnss_max_age_s:
            return GnssLookup(stale=Why(Reason.NO_PRIOR, f"newest GNSS fix is {age:.1f} s old "
                                                         f"(max {self.config.gnss_max_age_s} s)"))
        return GnssLookup(fix=self.gnss)

    def set_initial_pose(self, stamp_ns: int, map_from_base: np.ndarray, is_2d: bool) -> None:
        self.initial_pose = InitialPose(int(stamp_ns), map_from_base, is_2d)

    def initial_pose_at(self, stamp_ns: int) -> InitialPose | None:
        """The operator's pose if it is at most ``initialpose_max_age_s`` old at ``stamp_ns``; an
        older one is forgotten."""
        pose = self.initial_pose
        if pose is None:
            return None
        if (stamp_ns - pose.stamp_ns) / 1e9 <= self.config.initialpose_max_age_s:
            return pose
        self.initial_pose = None
        return None


__all__ = ["GnssLookup", "GnssPrior", "InitialPose", "PriorConfig", "Priors"]
