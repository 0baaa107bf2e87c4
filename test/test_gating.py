"""Gating: wrong alignments are rejected, correct ones accepted, with and without a prior."""
import dataclasses
import math

import numpy as np
import pytest
import torch

from feature_scene import BoxScene, default_camera, perturb, true_pose
from pixloc_ros.core.geometry.pose import Pose, pose_error
from pixloc_ros.core.tracking.gating import GatingConfig, gate
from pixloc_ros.core.engine.localizer import Localizer, LocalizerConfig
from pixloc_ros.core.engine.network import FeaturePyramid

DAMPING = torch.full((3, 6), 1e-2)
PRIOR_COV = np.diag([1.0, 1.0, 1.0, math.radians(5) ** 2, math.radians(5) ** 2, math.radians(5) ** 2])


@pytest.fixture(scope="module")
def runs():
    """Localizations of the box scene from a near and from several far initial poses."""
    scene = BoxScene()
    cam = default_camera()
    T = true_pose()
    pyramid = FeaturePyramid([scene.render(cam, T, level)[None] for level in range(3)], [None] * 3, (480, 640))
    qp = scene.query_points(scene.sample_points(cam, T, 600))
    loc = Localizer(None, LocalizerConfig(device="cpu"))

    def run(init):
        return loc.localize_features(pyramid, cam, qp, Pose.stack([init]), DAMPING)

    good_init = perturb(T, 4.0, 0.8, seed=0)
    far_inits = [perturb(T, rot, trans, seed) for seed, (rot, trans) in
                 enumerate([(10, 2), (20, 4), (10, 2), (20, 4), (40, 8), (10, 2)], start=2)]
    return T, good_init, run(good_init), [(i, run(i)) for i in far_inits]


def off(result, T):
    deg, m = pose_error(result.cam_from_world, T)
    return float(deg) > 5 or float(m) > 1


def test_correct_alignment_is_accepted_with_and_without_prior(runs):
    T, good_init, good, _ = runs
    assert good.success and not off(good, T)
    assert gate(good).accepted
    d = gate(good, good_init.inv(), PRIOR_COV)  # the prior is where we started: 4 deg / 0.8 m away
    assert d.accepted, d.reason
    assert d.mahalanobis_d2 is not None and 0 < d.mahalanobis_d2 < 22.46
    assert d.translation_m == pytest.approx(float(pose_error(good.cam_from_world, good_init)[1]), abs=1e-6)
    d = gate(good, good_init.inv())  # prior without covariance: fixed limits
    assert d.accepted and d.mahalanobis_d2 is None


def test_converged_but_wrong_alignments_are_rejected(runs):
    T, _, _, far = runs
    wrong = [(init, r) for init, r in far if r.success and off(r, T)]
    assert len(wrong) >= 2  # the scene does produce wrong minima from far initial poses
    for init, r in wrong:
        assert r.iterations[0] > 0  # the fine level ran: a "converged" alignment...
        d = gate(r)
        assert not d.accepted and d.reason.startswith("low_inlier_ratio"), d.reason  # ...that fits badly
        assert not gate(r, T.inv(), PRIOR_COV).accepted  # and, with a good prior, is inconsistent with it


def test_never_accepts_a_pose_off_by_more_than_1m_or_5deg(runs):
    T, good_init, good, far = runs
    for init, r in [(good_init, good)] + far:
        for prior, cov in [(None, None), (init.inv(), None), (init.inv(), PRIOR_COV * 100)]:
            d = gate(r, prior, cov)
            if d.accepted:
                assert not off(r, T)


def test_prior_consistency_checks(runs):
    T, _, good, _ = runs
    far_prior = perturb(T, 2.0, 8.0, seed=9).inv()  # the localization is right, the prior is 8 m away
    d = gate(good, far_prior, PRIOR_COV)
    assert not d.accepted and d.reason.startswith("prior_mahalanobis") and d.mahalanobis_d2 > 22.46
    d = gate(good, far_prior)
    assert not d.accepted and d.reason.startswith("far_from_prior")
    assert gate(good, far_prior, PRIOR_COV * 100).accepted  # a 10 m prior std allows it
    rotated_prior = perturb(T, 30.0, 0.0, seed=10).inv()
    assert gate(good, rotated_prior).reason.startswith("far_from_prior")
    assert gate(good, rotated_prior, config=GatingConfig(max_rotation_deg=45)).accepted
    with pytest.raises(ValueError, match="6, 6"):
        gate(good, far_prior, np.eye(3))


def test_failure_cost_increase_and_point_count(runs):
    _, _, good, _ = runs
    failed = dataclasses.replace(good, success=False, reason="too_few_valid_points: 3 < 50")
    d = gate(failed)
    assert not d.accepted and d.reason == "localization_failed: too_few_valid_points: 3 < 50"
    worse = dataclasses.replace(good, cost=(good.initial_cost[0] * 2, *good.cost[1:]))
    assert gate(worse).reason.startswith("cost_increased: level 0")
    assert gate(good, config=GatingConfig(min_valid_points=good.num_valid + 1)).reason.startswith("too_few_valid_points")
