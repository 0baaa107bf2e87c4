"""The inlier-ratio gates fitted for a set of weights (core/tracking/inlier_gates.py): the rule,
the calibration file round trip, and the pipeline / params taking them where nothing is set."""
from __future__ import annotations

import json

import numpy as np
import pytest

from pixloc_ros.core.tracking.covariance_calibration import CovarianceCalibration
from pixloc_ros.core.tracking.gating import GatingConfig, quality_failure
from pixloc_ros.core.tracking.inlier_gates import (DEFAULT_MIN_INLIER_RATIO, DEFAULT_TRACK_MIN_INLIER_RATIO,
                                                   InlierGates, fit_inlier_gates)
from pixloc_ros.core.tracking.reasons import Reason
from pixloc_ros.data.evaluation.offline import inlier_ratio_samples


def test_rule_keeps_correct_locks_and_rejects_wrong_ones():
    rng = np.random.default_rng(3)
    correct = rng.uniform(0.1, 0.6, 400)
    wrong = rng.uniform(0.0, 0.05, 100)
    gates = fit_inlier_gates(correct, wrong)
    # The lower 5 % of the correct ones is above every wrong one: that quantile decides.
    assert gates.min_inlier_ratio == pytest.approx(np.quantile(correct, 0.05))
    assert gates.fitted_on["correct_kept"] >= 0.95 and gates.fitted_on["wrong_rejected"] == 1.0
    assert gates.track_min_inlier_ratio == pytest.approx(gates.min_inlier_ratio * 0.4)
    # Wrong locks scoring high: the stricter side (reject 75 % of them) wins over keeping 95 %.
    wrong_high = rng.uniform(0.0, 0.4, 100)
    strict = fit_inlier_gates(correct, wrong_high)
    assert strict.min_inlier_ratio == pytest.approx(np.quantile(wrong_high, 0.75))
    assert strict.fitted_on["wrong_rejected"] >= 0.74 and strict.fitted_on["correct_kept"] < 0.95


def test_rule_scales_with_the_weights():
    """Two weights whose ratios differ by a factor get thresholds that differ by that factor."""
    rng = np.random.default_rng(5)
    correct, wrong = rng.beta(4, 5, 300), rng.beta(1, 8, 80) * 0.5
    a, b = fit_inlier_gates(correct, wrong), fit_inlier_gates(correct * 0.25, wrong * 0.25)
    assert b.min_inlier_ratio == pytest.approx(0.25 * a.min_inlier_ratio)


def test_rule_needs_enough_correct_locks_and_ignores_nan():
    with pytest.raises(ValueError, match="at least 20 correct locks"):
        fit_inlier_gates(np.full(19, 0.3), np.zeros(10))
    g = fit_inlier_gates(np.r_[np.full(30, 0.3), np.nan], np.r_[np.nan, np.zeros(2)])
    assert g.fitted_on["correct"] == 30 and g.fitted_on["wrong"] == 2 and g.fitted_on["wrong_quantile"] is None
    # A handful of wrong locks scoring high does not decide the gate (too few for a quantile).
    few = fit_inlier_gates(np.linspace(0.01, 0.5, 50), np.full(19, 0.4))
    assert few.min_inlier_ratio == pytest.approx(np.quantile(np.linspace(0.01, 0.5, 50), 0.05))
    assert fit_inlier_gates(np.linspace(0.01, 0.5, 50), np.full(20, 0.4)).min_inlier_ratio == pytest.approx(0.4)
    with pytest.raises(ValueError, match=r"shares in \[0, 1\]"):
        InlierGates(1.5, 0.1)


def test_gates_round_trip_through_the_calibration_file(tmp_path):
    gates = fit_inlier_gates(np.linspace(0.05, 0.5, 50), np.linspace(0.0, 0.03, 10))
    calib = CovarianceCalibration(0.01, (0.1,) * 3 + (0.01,) * 3, (1.0, 0.5), (0.5, -2.0), inlier_gates=gates)
    path = calib.save(tmp_path / "w.covariance.json")
    loaded = CovarianceCalibration.load(path)
    assert loaded.inlier_gates == gates
    # A file written before the gates existed loads without them (the node keeps the defaults).
    doc = json.loads(path.read_text())
    del doc["inlier_gates"]
    path.write_text(json.dumps(doc))
    assert CovarianceCalibration.load(path).inlier_gates is None
    doc["inlier_gates"] = {"min_inlier_ratio": 0.1}
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="track_min_inlier_ratio"):
        CovarianceCalibration.load(path)


def test_gating_config_takes_fitted_gates_only_where_unset():
    gates = InlierGates(0.03, 0.012)
    unset = GatingConfig().with_gates(gates)
    assert unset.inlier_threshold() == 0.03 and unset.inlier_threshold(tracked=True) == 0.012
    explicit = GatingConfig(min_inlier_ratio=0.25, track_min_inlier_ratio=0.1).with_gates(gates)
    assert explicit.inlier_threshold() == 0.25 and explicit.inlier_threshold(tracked=True) == 0.1
    default = GatingConfig().with_gates(None)
    assert (default.inlier_threshold(), default.inlier_threshold(True)) == (DEFAULT_MIN_INLIER_RATIO,
                                                                             DEFAULT_TRACK_MIN_INLIER_RATIO)
    cost = np.array([1.0, 1.0, 1.0])
    why = quality_failure(500, 0.05, cost, cost, default)
    assert why is not None and why.code is Reason.LOW_INLIER_RATIO and "0.050 < 0.2" in why.text
    assert quality_failure(500, 0.05, cost, cost, unset) is None
    assert quality_failure(500, 0.02, cost, cost, unset, tracked=True) is None
    assert quality_failure(500, 0.01, cost, cost, unset, tracked=True) is not None


BASE = {"map_file": "map.pxmap", "weights": "w.safetensors"}  # required, never opened here


def test_params_negative_means_the_weights_gates():
    from pixloc_ros.ros.params import NodeSettings, engine_configs

    auto = engine_configs(NodeSettings.from_values({**BASE, "min_inlier_ratio": -1.0})).pipeline.gating
    assert auto.min_inlier_ratio is None and auto.track_min_inlier_ratio is None
    set_ = engine_configs(NodeSettings.from_values({**BASE, "min_inlier_ratio": 0.3})).pipeline.gating
    assert set_.inlier_threshold() == 0.3 and set_.inlier_threshold(True) == pytest.approx(0.12)


def test_inlier_ratio_samples_split_records_by_error():
    gt = np.eye(4).tolist()
    records = [
        {"gt_map_from_base": gt, "raw_translation_error_m": 0.1, "raw_rotation_error_deg": 0.5, "estimate_inlier_ratio": 0.4},
        {"gt_map_from_base": gt, "raw_translation_error_m": 0.5, "raw_rotation_error_deg": 0.5, "estimate_inlier_ratio": 0.3},
        {"gt_map_from_base": gt, "raw_translation_error_m": 3.0, "raw_rotation_error_deg": 0.5, "estimate_inlier_ratio": 0.02},
        {"gt_map_from_base": gt, "raw_translation_error_m": 0.1, "raw_rotation_error_deg": 9.0, "estimate_inlier_ratio": 0.05},
        {"gt_map_from_base": gt, "raw_translation_error_m": float("nan"), "raw_rotation_error_deg": 0.1,
         "estimate_inlier_ratio": float("nan")},
        {"gt_map_from_base": None, "raw_translation_error_m": 0.1, "raw_rotation_error_deg": 0.1,
         "estimate_inlier_ratio": 0.9},
    ]
    correct, wrong = inlier_ratio_samples(records)
    assert correct.tolist() == [0.4] and sorted(wrong.tolist()) == [0.02, 0.05]
