"""A GNSS-like prior synthesised from ground-truth positions (the benchmarks record none).

The fix is the ground-truth base_link position (antenna assumed there) moved to WGS84 through
the map's georeference, plus an error in East/North/Up made of a slowly varying bias
(first-order Gauss-Markov with correlation time ``correlation_time_s``) and white noise, the
same error model as the synthetic drives (``data/sim/drive.py``) so that imported and synthetic
bags behave alike. The NavSatFix covariance states the total variance (bias^2 + white^2).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pixloc_ros.core.geometry.georef import Georeference


@dataclass(frozen=True)
class GnssNoise:
    """Error model of the synthetic fixes; metres, 1 sigma per axis."""

    white_horizontal_m: float = 0.5  # East and North each, drawn per fix
    white_up_m: float = 0.8
    bias_horizontal_m: float = 0.8  # East and North each, stationary std of the slow bias
    bias_up_m: float = 1.2
    correlation_time_s: float = 30.0  # of the bias
    seed: int = 0

    def __post_init__(self):
        values = (self.white_horizontal_m, self.white_up_m, self.bias_horizontal_m, self.bias_up_m)
        if not all(v >= 0 and math.isfinite(v) for v in values) or not self.correlation_time_s > 0:
            raise ValueError(f"GNSS noise needs non-negative sigmas and a positive correlation time, got {self}")

    @property
    def sigma_enu(self) -> np.ndarray:
        """(3,) total std per axis (E, N, U), metres."""
        return np.array([math.hypot(self.white_horizontal_m, self.bias_horizontal_m)] * 2
                        + [math.hypot(self.white_up_m, self.bias_up_m)])

    @property
    def covariance_enu(self) -> np.ndarray:
        """(3, 3) stated position covariance in ENU, m^2 (NavSatFix's convention)."""
        return np.diag(self.sigma_enu ** 2)


@dataclass
class GnssFixes:
    """Synthetic fixes, one per input position."""

    latitude_deg: np.ndarray  # (N,)
    longitude_deg: np.ndarray  # (N,)
    altitude_m: np.ndarray  # (N,) above the WGS84 ellipsoid
    covariance_enu: np.ndarray  # (3, 3) m^2, the same for every fix
    error_enu: np.ndarray  # (N, 3) the error that was added, metres (for tests and reports)


def synthesize_gnss(stamps_ns: np.ndarray, positions_map: np.ndarray, georef: Georeference, noise: GnssNoise,
                    rng: np.random.Generator | None = None) -> GnssFixes:
    """Ground-truth positions (N, 3) in the map frame at increasing ``stamps_ns`` (N,) -> noisy fixes.

    ``rng`` defaults to a generator seeded with ``noise.seed`` (reproducible imports).
    """
    p = np.asarray(positions_map, np.float64).reshape(-1, 3)
    t = np.asarray(stamps_ns, np.int64).reshape(-1) * 1e-9
    if len(t) != len(p):
        raise ValueError(f"{len(t)} stamps for {len(p)} positions")
    if np.any(np.diff(t) < 0):
        raise ValueError("GNSS stamps must be increasing")
    rng = np.random.default_rng(noise.seed) if rng is None else rng
    sig_b = np.array([noise.bias_horizontal_m, noise.bias_horizontal_m, noise.bias_up_m])
    sig_w = np.array([noise.white_horizontal_m, noise.white_horizontal_m, noise.white_up_m])
    bias = np.zeros_like(p)
    if len(p):
        bias[0] = rng.standard_normal(3) * sig_b
    for k in range(1, len(p)):
        phi = math.exp(-(t[k] - t[k - 1]) / noise.correlation_time_s)
        bias[k] = phi * bias[k - 1] + math.sqrt(1.0 - phi * phi) * rng.standard_normal(3) * sig_b
    error_enu = bias + rng.standard_normal(p.shape) * sig_w
    # georef.map_from_enu rotates ENU vectors into the map frame (a rotation about Up only).
    lat, lon, alt = georef.to_geodetic(p + error_enu @ georef.map_from_enu.T)
    return GnssFixes(np.atleast_1d(lat), np.atleast_1d(lon), np.atleast_1d(alt), noise.covariance_enu, error_enu)
