"""The synthetic GNSS prior of the importers: the noise is what was asked (spread, correlation,
stated covariance), it is applied in ENU whatever the map's heading, and zero noise is exact."""
import math

import numpy as np
import pytest

from pixloc_ros.core.geometry.georef import Georeference
from pixloc_ros.data.importers.gnss import GnssNoise, synthesize_gnss

GEOREF = Georeference(40.4406, -79.9959, 300.0, heading_deg=30.0)  # map x points NNE, not east


def _track(n, dt_s=1.0):
    stamps = (1_300_000_000 + np.arange(n) * dt_s) * 1e9
    s = np.arange(n) * 0.5
    return stamps.astype(np.int64), np.stack([s, 0.2 * s, np.full(n, 2.0)], 1)


def _errors_enu(fixes, positions):
    p = GEOREF.to_map(fixes.latitude_deg, fixes.longitude_deg, fixes.altitude_m)
    return (p - positions) @ GEOREF.map_from_enu  # map -> ENU


def test_zero_noise_is_the_ground_truth():
    stamps, pos = _track(50)
    fixes = synthesize_gnss(stamps, pos, GEOREF, GnssNoise(0, 0, 0, 0))
    assert np.abs(_errors_enu(fixes, pos)).max() < 1e-6


def test_errors_are_applied_in_enu_and_reported():
    stamps, pos = _track(200)
    fixes = synthesize_gnss(stamps, pos, GEOREF, GnssNoise(0.5, 0.8, 0.8, 1.2, seed=1))
    assert np.allclose(_errors_enu(fixes, pos), fixes.error_enu, atol=1e-5)


def test_white_noise_spread_matches_the_request():
    stamps, pos = _track(20000)
    noise = GnssNoise(white_horizontal_m=1.5, white_up_m=3.0, bias_horizontal_m=0.0, bias_up_m=0.0, seed=2)
    err = _errors_enu(synthesize_gnss(stamps, pos, GEOREF, noise), pos)
    assert np.allclose(err.std(0), [1.5, 1.5, 3.0], rtol=0.05)
    assert np.abs(err.mean(0)).max() < 0.1
    lag1 = [np.corrcoef(err[:-1, k], err[1:, k])[0, 1] for k in range(3)]
    assert np.abs(lag1).max() < 0.05  # white: uncorrelated from fix to fix


def test_bias_is_gauss_markov_with_the_requested_correlation_time():
    stamps, pos = _track(40000)
    noise = GnssNoise(white_horizontal_m=0.0, white_up_m=0.0, bias_horizontal_m=0.8, bias_up_m=1.2,
                      correlation_time_s=30.0, seed=3)
    err = _errors_enu(synthesize_gnss(stamps, pos, GEOREF, noise), pos)
    assert np.allclose(err.std(0), [0.8, 0.8, 1.2], rtol=0.15)
    lag1 = np.array([np.corrcoef(err[:-1, k], err[1:, k])[0, 1] for k in range(3)])
    assert np.allclose(lag1, math.exp(-1.0 / 30.0), atol=0.01)


def test_stated_covariance_is_the_total_variance():
    noise = GnssNoise(0.5, 0.8, 0.8, 1.2)
    assert np.allclose(noise.covariance_enu, np.diag([0.89, 0.89, 2.08]))
    with pytest.raises(ValueError, match="non-negative"):
        GnssNoise(-1.0)
    with pytest.raises(ValueError, match="increasing"):
        synthesize_gnss(np.array([2, 1]), np.zeros((2, 3)), GEOREF, noise)
