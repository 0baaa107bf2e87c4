"""Levenberg-Marquardt level solver: derivatives, convergence, batching, degenerate inputs."""

import pytest
import torch

from feature_scene import STRIDES, BoxScene, default_camera, perturb, true_pose
from pixloc_ros.core.geometry.camera import Camera
from pixloc_ros.core.geometry.pose import Pose, pose_error
from pixloc_ros.core.engine.lm.config import LMConfig
from pixloc_ros.core.engine.lm.optimizer import LevelProblem, optimize_level
from pixloc_ros.core.engine.lm.solve import cholesky_solve_spd, damped_solve

LAMBDA = torch.full((6,), 1e-2)


@pytest.fixture(scope="module")
def setup():
    scene = BoxScene()
    cam = default_camera()
    T = true_pose()
    xyz = scene.sample_points(cam, T, 800)
    qp = scene.query_points(xyz)
    maps = [scene.render(cam, T, level) for level in range(3)]
    return scene, cam, T, qp, maps


def run_level(setup, level, inits, config=None, damping=LAMBDA):
    _, cam, _, qp, maps = setup
    return optimize_level(maps[level], None, qp.xyz, qp.features[level], qp.confidences[level],
                          cam.scale(1 / STRIDES[level]), inits, damping, config or LMConfig(num_iters=50))


def test_gradient_and_hessian_match_autograd():
    """g = sum w J^T r and H = sum w J^T J, with J from autograd through projection (distorted
    camera), bilinear sampling and the left pose update, in float64."""
    torch.manual_seed(0)
    C, Hh, W = 6, 40, 50
    fmap = torch.nn.functional.avg_pool2d(torch.randn(1, C, Hh + 4, W + 4, dtype=torch.float64), 5, 1)[0]
    conf = torch.rand(1, Hh, W, dtype=torch.float64)
    cam = Camera.from_params(W, Hh, 40.0, 42.0, 24.3, 19.6, [-0.1, 0.02, 1e-3, -1e-3, 0.001])
    xyz = torch.cat([torch.rand(60, 2, dtype=torch.float64) * 4 - 2, 3 + torch.rand(60, 1, dtype=torch.float64) * 3], -1)
    ref = torch.randn(60, C, dtype=torch.float64) * 0.3
    c_ref = torch.rand(60, dtype=torch.float64)
    config = LMConfig(pad=1.0, dtype=torch.float64)
    prob = LevelProblem(fmap, conf, xyz, ref, c_ref, cam, config)
    pose = Pose.exp(torch.tensor([[0.05, -0.03, 0.1, 0.01, -0.02, 0.015],
                                  [-0.1, 0.02, 0.0, -0.02, 0.01, 0.0]], dtype=torch.float64))
    terms = prob.evaluate(pose.R, pose.t)
    assert terms.valid.sum() > 80

    for b in range(2):
        def residuals(xi):
            P = Pose.exp(xi) @ pose[b]
            p_c = P.transform(xyz)
            p2d, _ = cam.world2image(p_c)
            s = prob.sampler.sample(p2d[None], config.pad, gradients=False)
            return s.values[0, :, :C] - ref

        J = torch.autograd.functional.jacobian(residuals, torch.zeros(6, dtype=torch.float64),
                                               vectorize=True)  # (N, C, 6)
        r = residuals(torch.zeros(6, dtype=torch.float64))
        w = terms.w[b]
        g_auto = torch.einsum("n,nck,nc->k", w, J, r)
        H_auto = torch.einsum("n,nck,ncl->kl", w, J, J)
        torch.testing.assert_close(terms.g[b], g_auto, atol=1e-9, rtol=1e-7)
        torch.testing.assert_close(terms.H[b], H_auto, atol=1e-9, rtol=1e-7)


# (level, rotation deg, translation m) of the initial perturbation; (deg, m) required at the end.
LEVEL_CASES = [(2, 5.0, 1.0, 0.3, 0.1), (1, 2.0, 0.3, 0.05, 0.02), (0, 0.5, 0.1, 0.02, 0.01)]


@pytest.mark.parametrize("level,rot,trans,tol_deg,tol_m", LEVEL_CASES)
def test_each_level_recovers_the_pose(setup, level, rot, trans, tol_deg, tol_m):
    T = setup[2]
    inits = Pose.stack([perturb(T, rot, trans, seed) for seed in range(4)]).float()
    res = run_level(setup, level, inits)
    deg, m = pose_error(res.cam_from_world.double(), T.expand(4))
    assert (deg < tol_deg).all(), deg
    assert (m < tol_m).all(), m
    assert res.converged.all() and (res.iterations < 50).all()
    assert (res.cost < res.initial_cost).all()
    assert not res.singular.any()
    assert torch.isfinite(res.hessian).all() and res.weights.shape == (4, 800)


def test_batched_hypotheses_are_independent_and_good_one_has_lower_cost(setup):
    T = setup[2]
    good = perturb(T, 4.0, 0.8, seed=11)
    bad = perturb(T, 35.0, 6.0, seed=12)
    batch = run_level(setup, 2, Pose.stack([bad, good]).float())
    alone = run_level(setup, 2, Pose.stack([good]).float())
    torch.testing.assert_close(batch.cam_from_world[1].R, alone.cam_from_world[0].R, atol=1e-5, rtol=0)
    torch.testing.assert_close(batch.cam_from_world[1].t, alone.cam_from_world[0].t, atol=1e-4, rtol=0)
    deg, m = pose_error(batch.cam_from_world.double(), T.expand(2))
    assert deg[1] < 0.3 and m[1] < 0.1
    assert deg[0] > 5 or m[0] > 1  # the bad one does not get there...
    assert batch.cost[1] < batch.cost[0]  # ...and its cost says so
    assert batch.inlier_ratio[1] > batch.inlier_ratio[0]


def test_converged_hypotheses_stop_moving(setup):
    T = setup[2]
    inits = Pose.stack([perturb(T, 0.2, 0.02, 1), perturb(T, 3.0, 0.7, 2)]).float()
    res = run_level(setup, 1, inits, LMConfig(num_iters=40, check_every=1))
    assert res.iterations[0] < res.iterations[1]
    # re-running the first one for exactly its iteration count gives the same pose: it did not
    # move after it converged while the other kept iterating
    again = run_level(setup, 1, inits[:1], LMConfig(num_iters=int(res.iterations[0]), check_every=1))
    torch.testing.assert_close(again.cam_from_world.t[0], res.cam_from_world.t[0], atol=1e-6, rtol=0)


def test_huge_damping_freezes_an_axis(setup):
    T = setup[2]
    init = perturb(T, 2.0, 0.5, seed=3).float()
    damping = torch.tensor([1e-2, 1e8, 1e-2, 1e-2, 1e-2, 1e-2])
    res = run_level(setup, 2, Pose.stack([init]), LMConfig(num_iters=1), damping=damping)
    # one step t <- dR t + dt: with dt_y frozen, t_y changes only through the rotation
    dR = res.cam_from_world.R[0] @ init.R.T
    assert abs(float(res.cam_from_world.t[0, 1] - (dR @ init.t)[1])) < 1e-4


def test_damped_solve_never_raises():
    H = torch.zeros(5, 6, 6)
    g = torch.ones(5, 6)
    H[0] = torch.eye(6) * 4
    H[1] = -torch.eye(6)  # indefinite
    H[2, 0, 0] = float("nan")
    g[3, 2] = float("inf")
    A = torch.randn(6, 6)
    H[4] = A @ A.T + torch.eye(6)
    delta, ok = damped_solve(H, g, torch.zeros(6), 1e-6)
    assert torch.isfinite(delta).all()
    assert ok.tolist() == [True, False, False, False, True]
    torch.testing.assert_close(delta[0], -g[0] / 4)
    torch.testing.assert_close(delta[4].double(), -torch.linalg.solve(H[4].double(), g[4].double()), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(delta[2], torch.zeros(6))


def test_unrolled_cholesky_matches_linalg_and_its_gradients():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(7, 6, 6, generator=g, dtype=torch.float64)
    # SPD with condition numbers up to ~1e8, like damped Gauss-Newton Hessians
    scales = torch.logspace(-4, 4, 6, dtype=torch.float64)
    H = A @ A.transpose(-1, -2) * scales[None, :, None] * scales[None, None, :] + 1e-6 * torch.eye(6, dtype=torch.float64)
    b = torch.randn(7, 6, generator=g, dtype=torch.float64)
    x, ok = cholesky_solve_spd(H, b)
    assert ok.all()
    torch.testing.assert_close(x, torch.linalg.solve(H, b), rtol=1e-6, atol=1e-9)
    # gradients agree with autograd through torch.linalg.solve (both see a symmetrised matrix)
    S = (A[:2] @ A[:2].transpose(-1, -2) + torch.eye(6, dtype=torch.float64)).requires_grad_(True)
    br = b[:2].clone().requires_grad_(True)
    sym = lambda M: 0.5 * (M + M.transpose(-1, -2))  # noqa: E731
    torch.autograd.gradcheck(lambda S_, b_: cholesky_solve_spd(sym(S_), b_)[0], (S, br))
    w = torch.randn(2, 6, generator=g, dtype=torch.float64)
    ours = torch.autograd.grad((cholesky_solve_spd(sym(S), br)[0] * w).sum(), (S, br))
    ref = torch.autograd.grad((torch.linalg.solve(sym(S), br) * w).sum(), (S, br))
    for o, r in zip(ours, ref):
        torch.testing.assert_close(o, r, rtol=1e-7, atol=1e-10)
    # not positive definite -> ok False, finite output
    bad = torch.stack([-torch.eye(6, dtype=torch.float64), torch.zeros(6, 6, dtype=torch.float64)])
    x, ok = cholesky_solve_spd(bad, torch.ones(2, 6, dtype=torch.float64))
    assert ok.tolist() == [False, False] and torch.isfinite(x).all()


def test_empty_point_set_is_nan_free(setup):
    _, cam, T, _, maps = setup
    res = optimize_level(maps[1], None, torch.zeros(0, 3), torch.zeros(0, 16), None, cam.scale(0.25),
                         Pose.stack([T, T]).float(), LAMBDA)
    assert res.num_valid.tolist() == [0, 0]
    assert torch.isinf(res.cost).all()
    for x in (res.cam_from_world.R, res.cam_from_world.t, res.hessian, res.gradient, res.inlier_ratio):
        assert not torch.isnan(x).any()
    torch.testing.assert_close(res.cam_from_world.t, T.t.float().expand(2, 3))


def test_points_behind_camera_are_invalid(setup):
    _, cam, T, qp, maps = setup
    behind = T.inv().transform((T.transform(qp.xyz.double()) * torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64)))
    res = optimize_level(maps[0], None, behind.float(), qp.features[0], None, cam, Pose.stack([T]).float(), LAMBDA)
    assert res.num_valid.item() == 0 and res.num_valid_initial.item() == 0
    assert not torch.isnan(res.cam_from_world.t).any()
    assert (res.weights == 0).all()


def test_gradients_flow_through_the_solver():
    """Training back-propagates through optimize_level: d(pose)/d(damping) must match central
    differences (float64, 2 iterations), and features / confidences must receive gradients."""
    scene = BoxScene(channels=8, seed=2)
    cam = Camera.from_params(160, 120, 125.0, 125.0, 79.5, 59.5)
    T = true_pose()
    fmap = scene.render(cam, T, 0).double().requires_grad_()
    conf = torch.rand(1, 120, 160, dtype=torch.float64, requires_grad=True)
    xyz = scene.sample_points(cam, T, 200, margin=8)
    ref = scene.features(xyz, 0)
    init = Pose.stack([perturb(T, 0.5, 0.05, 0)])
    config = LMConfig(num_iters=2, pad=1.0, dtype=torch.float64, stop_dt=0.0, stop_dw_deg=0.0)

    def loss(log_lam, fm=fmap, cf=conf):
        res = optimize_level(fm, cf, xyz, ref, None, cam, init, 10 ** log_lam, config)
        return (res.cam_from_world.log() - T.log()).pow(2).sum()

    log_lam = torch.full((6,), -1.0, dtype=torch.float64, requires_grad=True)
    value = loss(log_lam)
    value.backward()
    assert fmap.grad.abs().sum() > 0 and conf.grad.abs().sum() > 0
    eps = 1e-5
    with torch.no_grad():
        for k in range(6):
            d = torch.zeros(6, dtype=torch.float64)
            d[k] = eps
            fd = (loss(log_lam + d) - loss(log_lam - d)) / (2 * eps)
            assert float(log_lam.grad[k]) == pytest.approx(float(fd), rel=1e-4, abs=1e-12)


def test_elementwise_formulation_matches_matmuls(setup, monkeypatch):
    """The CUDA formulation of the per-point products (core/engine/small_ops.py), run here on the CPU,
    gives the same LM trajectory as the batched matmuls."""
    from pixloc_ros.core.engine import small_ops

    T = setup[2]
    init = Pose.stack([perturb(T, 3.0, 0.5, seed=1), perturb(T, 2.0, 0.3, seed=2)]).float()
    results = []
    for force in (False, True):
        monkeypatch.setattr(small_ops, "FORCE", force)
        results.append(run_level(setup, 1, init, LMConfig(num_iters=8)))
    a, b = results
    torch.testing.assert_close(b.cam_from_world.R, a.cam_from_world.R, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(b.cam_from_world.t, a.cam_from_world.t, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(b.hessian, a.hessian, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(b.cost, a.cost, rtol=1e-4, atol=1e-7)


def test_central_gradient_terms_are_the_finite_difference_jacobian():
    """With the reference's image gradient, g and H use J = G_central @ dp/dxi, where G_central is
    (F(p + 1px) - F(p - 1px)) / 2 of the bilinear map and dp/dxi the projection's autograd
    Jacobian (float64, distorted camera)."""
    from reference_equations import central_gradient

    torch.manual_seed(1)
    C, Hh, W = 5, 40, 50
    fmap = torch.randn(C, Hh, W, dtype=torch.float64)  # rough on purpose: central != analytic here
    cam = Camera.from_params(W, Hh, 40.0, 42.0, 24.3, 19.6, [-0.1, 0.02, 1e-3, -1e-3, 0.001])
    xyz = torch.cat([torch.rand(60, 2, dtype=torch.float64) * 4 - 2, 3 + torch.rand(60, 1, dtype=torch.float64) * 3], -1)
    ref = torch.randn(60, C, dtype=torch.float64) * 0.3
    pose = Pose.exp(torch.tensor([[0.05, -0.03, 0.1, 0.01, -0.02, 0.015]], dtype=torch.float64))
    terms = {}
    for gradient in ("central", "analytic"):
        prob = LevelProblem(fmap, None, xyz, ref, None, cam, LMConfig(pad=1.0, dtype=torch.float64, gradient=gradient))
        terms[gradient] = prob.evaluate(pose.R, pose.t)
    t = terms["central"]
    p2d, _ = cam.world2image(pose[0].transform(xyz))
    J_p = torch.autograd.functional.jacobian(
        lambda xi: cam.world2image((Pose.exp(xi) @ pose[0]).transform(xyz))[0], torch.zeros(6, dtype=torch.float64))
    J = central_gradient(fmap, p2d) @ J_p  # (N, C, 2) @ (N, 2, 6)
    r = torch.nn.functional.grid_sample(fmap[None], (p2d / torch.tensor([W - 1.0, Hh - 1.0], dtype=torch.float64) * 2 - 1)[None, None],
                                        align_corners=True)[0, :, 0].T - ref
    w = t.w[0]
    torch.testing.assert_close(t.g[0], torch.einsum("n,nck,nc->k", w, J, r), atol=1e-9, rtol=1e-7)
    torch.testing.assert_close(t.H[0], torch.einsum("n,nck,ncl->kl", w, J, J), atol=1e-9, rtol=1e-7)
    assert float((terms["analytic"].H - t.H).norm() / t.H.norm()) > 0.1


def test_reference_stopping_tests_only_every_tenth_iteration(setup):
    T = setup[2]
    inits = Pose.stack([perturb(T, 0.2, 0.02, 1), perturb(T, 3.0, 0.7, 2), perturb(T, 1.0, 0.2, 3)]).float()
    native = run_level(setup, 1, inits, LMConfig(num_iters=60, check_every=1))
    ref = run_level(setup, 1, inits, LMConfig(num_iters=60, stopping="reference"))
    assert set(native.iterations.tolist()) - {1, 11, 21, 31, 41, 51}  # the native rule stops anywhere...
    assert set(ref.iterations.tolist()) <= {1, 11, 21, 31, 41, 51, 60}  # ... the reference's after 1, 11, 21, ...
    assert ref.converged.all() and not ref.failed.any()
    assert (ref.iterations >= native.iterations).all()
    # The gradient criterion alone: a huge threshold stops everything after the first iteration ...
    first = run_level(setup, 1, inits, LMConfig(num_iters=60, stopping="reference", grad_stop=1e12))
    assert first.iterations.tolist() == [1, 1, 1]
    # ... and with both criteria off, every iteration runs.
    never = run_level(setup, 1, inits, LMConfig(num_iters=25, stopping="reference", grad_stop=0.0, stop_dt=0.0,
                                                stop_dw_deg=0.0))
    assert never.iterations.tolist() == [25, 25, 25] and not never.converged.any()


def test_reference_rule_fails_a_hypothesis_with_too_few_points(setup):
    """Fewer than min_valid_points valid points: the hypothesis fails and never moves again, the
    others are not affected."""
    _, cam, T, qp, maps = setup
    good = perturb(T, 1.0, 0.2, 3)
    away = Pose.exp(torch.tensor([[40.0, 0.0, 0.0, 0.0, 0.0, 0.0]], dtype=torch.float64))[0] @ T  # 40 m to the side
    inits = Pose.stack([good, away]).float()
    res = run_level(setup, 1, inits, LMConfig(num_iters=30, stopping="reference"))
    assert res.failed.tolist() == [False, True] and res.converged.tolist() == [True, False]
    torch.testing.assert_close(res.cam_from_world[1].t, inits[1].t, atol=1e-6, rtol=0)
    alone = run_level(setup, 1, inits[:1], LMConfig(num_iters=30, stopping="reference"))
    torch.testing.assert_close(res.cam_from_world[0].t, alone.cam_from_world[0].t, atol=1e-5, rtol=0)
