"""Covariance calibration (core/tracking/covariance_calibration.py): the fit recovers a known model, the
inflation covers heavy tails, files are validated and tied to the weights."""
import json
import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from pixloc_ros.core.tracking.covariance_calibration import (NEES_BOUND_95, CalibrationSample,
    CovarianceCalibration, calibration_path_for, fit_calibration, nees, rotation_blocks)

TRUE = CovarianceCalibration(hessian_scale=0.02, floor_std=(0.12, 0.05, 0.03, 0.002, 0.001, 0.004),
                             slopes=(2.0, 1.5), z_reference=(0.5, math.log(0.1)), default_jitter_m=0.3)


def samples_from(model: CovarianceCalibration, n: int, seed: int, tail_scale: float = 1.0, fresh_every: int = 0):
    """Frames whose errors are drawn from ``model`` (times tail_scale on every 5th frame); every
    ``fresh_every``-th frame starts a hypothesis (no jitter history)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        A = np.array([0.004, 0.004, 0.004, 1e-4, 1e-4, 1e-4])[:, None] * rng.normal(size=(6, 6))
        hessian_cov = A @ A.T + np.diag([1e-6] * 3 + [1e-9] * 3)  # sigma^2 H^-1 of one frame
        inliers = rng.uniform(0.2, 0.8)
        jitter = 0.1 * math.exp(rng.normal(0.0, 0.6) + 1.5 * (0.5 - inliers))  # correlated with the inliers
        jitter = None if fresh_every and i % fresh_every == 0 else jitter
        cov = model.covariance_base(hessian_cov, inliers, jitter)
        error = rng.multivariate_normal(np.zeros(6), cov) * (tail_scale if i % 5 == 0 else 1.0)
        out.append(CalibrationSample(hessian_cov, inliers, jitter, error))
    return out


def test_fit_recovers_a_known_model():
    samples = samples_from(TRUE, 3000, seed=0)
    fit = fit_calibration(samples)
    np.testing.assert_allclose(fit.slopes, TRUE.slopes, atol=0.4)
    # The fit centres the features on its data's median, which rescales Hessian term and floor alike:
    # compare what is identifiable, their ratio and the covariances they predict.
    np.testing.assert_allclose(np.array(fit.floor_std) ** 2 / fit.hessian_scale,
                               np.array(TRUE.floor_std) ** 2 / TRUE.hessian_scale, rtol=0.25)
    ratio = [np.diag(fit.covariance_base(s.hessian_covariance, s.inlier_ratio, s.jitter_m))
             / np.diag(TRUE.covariance_base(s.hessian_covariance, s.inlier_ratio, s.jitter_m)) for s in samples]
    np.testing.assert_allclose(np.median(ratio, 0), 1.0, atol=0.1)
    # Gaussian errors need no inflation: the 90 % quantile of chi^2(6) is below its 95 % bound.
    assert fit.inflation == 1.0
    values = [nees(s.error, fit.covariance_base(s.hessian_covariance, s.inlier_ratio, s.jitter_m)) for s in samples]
    assert np.mean(values) == pytest.approx(6.0, abs=0.3)
    assert np.mean(np.array(values) <= NEES_BOUND_95) == pytest.approx(0.95, abs=0.015)


def test_hypotheses_without_history_get_a_high_jitter():
    samples = samples_from(TRUE, 500, seed=5, fresh_every=10)
    fit = fit_calibration(samples)
    known = [s.jitter_m for s in samples if s.jitter_m is not None]
    assert fit.default_jitter_m == pytest.approx(np.quantile(known, 0.75))


def test_inflation_covers_the_worst_group():
    clean = samples_from(TRUE, 400, seed=1)
    heavy = samples_from(TRUE, 400, seed=2, tail_scale=4.0)  # one frame in five 4x off
    fit = fit_calibration(clean + heavy, ["clean"] * 400 + ["heavy"] * 400, coverage=0.9)
    assert fit.inflation > 1.0
    groups = fit.fitted_on["groups"]
    assert groups["heavy"]["share_inside_95"] >= 0.9 and groups["clean"]["share_inside_95"] > 0.95
    # Also for a small group: at least the asked share of its frames, not the interpolated one.
    small = fit_calibration(clean[:100] + heavy[:28], ["clean"] * 100 + ["heavy"] * 28, coverage=0.85)
    assert small.fitted_on["groups"]["heavy"]["share_inside_95"] >= 0.85
    # The inflation is the smallest that does it: 2 % less and the heavy group drops below 90 %.
    narrower = CovarianceCalibration(fit.hessian_scale, fit.floor_std, fit.slopes, fit.z_reference,
                                     fit.default_jitter_m, fit.inflation * 0.98)
    inside = np.mean([nees(s.error, narrower.covariance_base(s.hessian_covariance, s.inlier_ratio, s.jitter_m))
                      <= NEES_BOUND_95 for s in heavy])
    assert inside < 0.9


def test_ros_covariance_is_the_base_covariance_rotated_into_the_map():
    R = Rotation.from_euler("zyx", [70, 3, -2], degrees=True).as_matrix()
    A = rotation_blocks(R)
    hessian_base = np.diag([1e-4, 4e-4, 9e-4, 1e-6, 4e-6, 9e-6])
    ros = TRUE.covariance_ros(A @ hessian_base @ A.T, R, 0.6, 0.08)
    np.testing.assert_allclose(A.T @ ros @ A, TRUE.covariance_base(hessian_base, 0.6, 0.08), rtol=1e-9, atol=1e-15)
    # More jitter widens it by ((j' + floor) / (j + floor)) ** slope; no history means the default jitter.
    wider = TRUE.covariance_ros(A @ hessian_base @ A.T, R, 0.6, 0.18)
    np.testing.assert_allclose(wider, ros * 2.0 ** TRUE.slopes[1], rtol=1e-9)
    np.testing.assert_allclose(TRUE.covariance_ros(A @ hessian_base @ A.T, R, 0.6, None),
                               TRUE.covariance_ros(A @ hessian_base @ A.T, R, 0.6, TRUE.default_jitter_m), rtol=1e-12)


def test_file_round_trip_and_fingerprint(tmp_path):
    calib = CovarianceCalibration(2.0, (0.1,) * 6, (1.0, 0.5), (0.4, -4.0), 0.25, 1.5, "abc123", {"samples": 20})
    path = calib.save(tmp_path / "w.covariance.json")
    back = CovarianceCalibration.load(path, expected_fingerprint="abc123")
    assert back == calib
    with pytest.raises(ValueError, match="fitted for other weights"):
        CovarianceCalibration.load(path, expected_fingerprint="def456")
    doc = json.loads(path.read_text())
    doc["floor_std"] = [0.1] * 5
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="6 floor_std"):
        CovarianceCalibration.load(path)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="cannot read"):
        CovarianceCalibration.load(path)
    assert calibration_path_for("/x/pixloc_synth_vgg16.safetensors").name == "pixloc_synth_vgg16.covariance.json"


def test_too_few_or_bad_samples_are_refused():
    with pytest.raises(ValueError, match="at least 12"):
        fit_calibration(samples_from(TRUE, 5, seed=3))
    bad = samples_from(TRUE, 20, seed=4)
    bad[3].error[0] = math.nan
    with pytest.raises(ValueError, match="NaN"):
        fit_calibration(bad)
