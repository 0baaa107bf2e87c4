"""Covariance: Monte-Carlo check of sigma^2 H^-1, engine -> ROS conversion, SPD guarantees."""
import numpy as np
import pytest
import torch

from feature_scene import BoxScene, perturb, true_pose
from pixloc_ros.core.geometry.camera import Camera
from pixloc_ros.core.engine.covariance import (EIGENVALUE_FLOOR, engine_to_ros_covariance,
    engine_to_ros_jacobian, make_spd, normalized_min_eigenvalue, pose_covariance, residual_variance,
    ros_pose_error)
from pixloc_ros.core.geometry.pose import Pose, so3_exp
from pixloc_ros.core.engine.interpolation import interpolate
from pixloc_ros.core.engine.lm.config import LMConfig
from pixloc_ros.core.engine.lm.optimizer import optimize_level


def test_covariance_matches_monte_carlo():
    """Toy problem: the fine level of the box scene at 160x120, 300 points whose reference
    features are the query map sampled at the true projections plus i.i.d. Gaussian noise
    (std 0.02 per channel). Over 300 noise draws the empirical covariance of the estimated
    pose (engine coordinates) must match the mean predicted sigma^2 H^-1 on every diagonal
    entry within 25 %.

    Tolerance: the sample variance of 300 draws has a relative standard deviation of
    sqrt(2 / 299) ~ 8.2 %, so 25 % is three standard deviations of pure sampling noise; the
    remaining slack covers the linearisation (the bilinear interpolant is piecewise linear) and
    the Cauchy weights, which here stay above ~0.8.
    """
    torch.manual_seed(0)
    scene = BoxScene(channels=16, seed=1)
    cam = Camera.from_params(160, 120, 125.0, 125.0, 79.5, 59.5)
    T = true_pose()
    fmap = scene.render(cam, T, 0).double()
    xyz = scene.sample_points(cam, T, 300, seed=2, margin=8)
    p2d, _ = cam.world2image(T.transform(xyz))
    ref_clean = interpolate(fmap, p2d[None]).values[0]  # exact at the true pose: no model error
    sigma_n = 0.02
    config = LMConfig(num_iters=20, pad=1.0, dtype=torch.float64, stop_dt=1e-4, stop_dw_deg=1e-3)
    damping = torch.full((6,), 1e-6)
    gen = torch.Generator().manual_seed(3)
    draws = 300
    # all draws in one batch: one hypothesis per draw, each with its own noisy reference features
    refs = ref_clean + sigma_n * torch.randn(draws, *ref_clean.shape, generator=gen, dtype=torch.float64)
    res = optimize_level(fmap, None, xyz, refs, None, cam, Pose.stack([T] * draws), damping, config)
    assert res.converged.float().mean() > 0.95 and (res.num_valid == 300).all()
    errors = (res.cam_from_world @ T.inv()).log().numpy()  # xi with est = exp(xi) @ true
    s2 = [residual_variance(float(res.weighted_sq_residual[b]), int(res.num_valid[b]), res.num_channels)
          for b in range(draws)]
    predicted = np.mean([pose_covariance(res.hessian[b], s2[b]) for b in range(draws)], 0)
    empirical = np.cov(errors.T)
    ratio = np.diag(empirical) / np.diag(predicted)
    assert np.all(np.abs(ratio - 1) < 0.25), ratio
    # the estimate is unbiased to well within its spread
    assert np.all(np.abs(errors.mean(0)) < 3 * np.sqrt(np.diag(empirical) / len(errors)) + 1e-9)
    # sigma^2 is the noise variance in units of the weights: E[w] sigma_n^2 (w ~ 0.76 here)
    mean_w = float(res.weights.mean())
    assert 0.9 < np.mean(s2) / (mean_w * sigma_n ** 2) < 1.1


def test_engine_to_ros_jacobian_is_the_derivative():
    cam_from_world = perturb(true_pose(), 20.0, 3.0, seed=1)
    base_from_cam = Pose.from_Rt(so3_exp(torch.tensor([-1.2, 0.1, -1.5], dtype=torch.float64)),
                                 torch.tensor([1.5, 0.1, 1.2], dtype=torch.float64))
    A = engine_to_ros_jacobian(cam_from_world, base_from_cam)
    map_from_base = cam_from_world.inv() @ base_from_cam.inv()
    eps = 1e-6
    for k in range(6):
        xi = torch.zeros(6, dtype=torch.float64)
        xi[k] = eps
        moved = (Pose.exp(xi) @ cam_from_world).inv() @ base_from_cam.inv()
        xi[k] = -eps
        moved_neg = (Pose.exp(xi) @ cam_from_world).inv() @ base_from_cam.inv()
        d = (ros_pose_error(moved, map_from_base) - ros_pose_error(moved_neg, map_from_base)) / (2 * eps)
        np.testing.assert_allclose(d, A[:, k], atol=1e-7)
    # and the covariance propagates through it: Monte Carlo with a small engine covariance
    L = np.diag([0.02, 0.01, 0.05, 0.002, 0.004, 0.001])
    cov_engine = L @ L
    samples = torch.from_numpy(np.random.default_rng(0).multivariate_normal(np.zeros(6), cov_engine, 4000))
    errs = ros_pose_error((Pose.exp(samples) @ cam_from_world).inv() @ base_from_cam.inv(), map_from_base)
    ros = engine_to_ros_covariance(cov_engine, cam_from_world, base_from_cam)
    np.testing.assert_allclose(np.cov(errs.T), ros, atol=0.1 * np.abs(ros).max())
    np.testing.assert_allclose(np.sqrt(np.diag(np.cov(errs.T))), np.sqrt(np.diag(ros)), rtol=0.1)


def test_identity_extrinsic_gives_camera_pose_covariance():
    cam_from_world = perturb(true_pose(), 10.0, 1.0, seed=2)
    cov = np.diag([1e-2, 2e-2, 3e-2, 1e-4, 2e-4, 3e-4])
    ros = engine_to_ros_covariance(cov, cam_from_world, Pose.identity(dtype=torch.float64))
    R_wc = cam_from_world.inv().R.numpy()
    # rotation block: rotated into the map frame
    np.testing.assert_allclose(ros[3:, 3:], R_wc @ cov[3:, 3:] @ R_wc.T, atol=1e-12)


def test_make_spd_and_floor():
    rng = np.random.default_rng(1)
    Q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    bad = Q @ np.diag([-1e-3, 0.0, 1e-12, 1.0, 2.0, 3.0]) @ Q.T
    bad[0, 1] += 1e-9  # slightly asymmetric
    out = make_spd(bad)
    np.testing.assert_array_equal(out, out.T)
    assert np.linalg.eigvalsh(out).min() >= EIGENVALUE_FLOOR * 0.999
    np.linalg.cholesky(out)
    good = Q @ np.diag([1.0, 2, 3, 4, 5, 6]) @ Q.T
    np.testing.assert_allclose(make_spd(good), good, atol=1e-12)


def test_pose_covariance_rejects_singular_and_non_finite():
    H = np.diag([1.0, 1, 1, 1, 1, 0])
    assert pose_covariance(H, 1.0) is None
    assert pose_covariance(np.eye(6), float("inf")) is None
    assert pose_covariance(np.full((6, 6), np.nan), 1.0) is None
    cov = pose_covariance(torch.diag(torch.tensor([4.0, 4, 4, 100, 100, 100], dtype=torch.float64)), 2.0)
    np.testing.assert_allclose(np.diag(cov), [0.5, 0.5, 0.5, 0.02, 0.02, 0.02])
    assert normalized_min_eigenvalue(H) == 0.0
    assert normalized_min_eigenvalue(np.diag([1.0, 10, 100, 1e3, 1e4, 1e5])) == pytest.approx(1.0)


def test_residual_variance():
    assert residual_variance(12.0, 10, 2) == pytest.approx(12.0 / 14)
    assert residual_variance(1.0, 3, 2) == float("inf")
