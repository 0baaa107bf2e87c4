"""The fused LM level (core/engine/lm/fused.py, core/engine/lm/kernels.py) against the torch level solver.

Same inputs, same ``LevelResult``: poses, iterations, stop flags, costs, Hessians and weights
must agree within float32 round-off, for both image gradients and both stopping rules. On a
machine without CUDA the Triton kernels run in Triton's interpreter (test/conftest.py sets
``TRITON_INTERPRET=1``), so problems are kept small; with CUDA they compile and the loop runs as
CUDA graphs. Skipped when triton is not installed.
"""
import math

import pytest
import torch

from feature_scene import STRIDES, BoxScene, default_camera, perturb, true_pose
from pixloc_ros.core.geometry.camera import Camera
from pixloc_ros.core.geometry.pose import Pose
from pixloc_ros.core.engine.lm.config import LMConfig
from pixloc_ros.core.engine.lm.optimizer import optimize_level, resolve_lm_path

triton = pytest.importorskip("triton")
from pixloc_ros.core.engine.lm.fused import interpreted, segments_of  # noqa: E402

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
LAMBDA = torch.full((6,), 1e-2)


pytestmark = pytest.mark.skipif(DEVICE.type == "cpu" and not interpreted(),
                                reason="no CUDA and TRITON_INTERPRET was not set before triton was imported")


@pytest.fixture(scope="module")
def scene():
    s = BoxScene()
    cam, T = default_camera(), true_pose()
    xyz = s.sample_points(cam, T, 150)
    qp = s.query_points(xyz, noise_std=0.02)
    return s, cam, T, qp


def solve(problem, path, **config):
    fmap, conf, xyz, ref, c_ref, cam, init, damping = problem
    cfg = LMConfig(path=path, **{"point_bucket": 128, **config})  # small buckets: the interpreter is slow
    dev = DEVICE
    return optimize_level(fmap.to(dev), None if conf is None else conf.to(dev), xyz.to(dev), ref.to(dev),
                          None if c_ref is None else c_ref.to(dev), cam, init.to(dev), damping.to(dev), cfg)


def assert_same_result(a, b, atol_m=2e-5, atol_rad=2e-6):
    """Two LevelResults of the same problem agree within float32 round-off."""
    assert a.iterations.tolist() == b.iterations.tolist()
    assert a.converged.tolist() == b.converged.tolist()
    assert a.failed.tolist() == b.failed.tolist() and a.singular.tolist() == b.singular.tolist()
    assert a.num_valid.tolist() == b.num_valid.tolist()
    assert a.num_valid_initial.tolist() == b.num_valid_initial.tolist()
    torch.testing.assert_close(a.cam_from_world.t.cpu(), b.cam_from_world.t.cpu(), atol=atol_m, rtol=0)
    torch.testing.assert_close(a.cam_from_world.R.cpu(), b.cam_from_world.R.cpu(), atol=atol_rad, rtol=0)
    for name in ("cost", "initial_cost", "inlier_ratio"):
        torch.testing.assert_close(getattr(a, name).cpu(), getattr(b, name).cpu(), atol=1e-6, rtol=1e-4,
                                   msg=lambda m: f"{name}: {m}")
    scale = a.hessian.abs().amax(dim=(-1, -2), keepdim=True).clamp(min=1e-12).cpu()
    torch.testing.assert_close(a.hessian.cpu() / scale, b.hessian.cpu() / scale, atol=1e-4, rtol=0)
    torch.testing.assert_close(a.gradient.cpu(), b.gradient.cpu(), atol=1e-4 * float(scale.max()), rtol=1e-3)
    torch.testing.assert_close(a.weighted_sq_residual.cpu(), b.weighted_sq_residual.cpu(), atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(a.weights.cpu(), b.weights.cpu(), atol=1e-4, rtol=0)
    assert a.weights.shape == b.weights.shape and a.num_channels == b.num_channels


def box_problem(scene, level, inits):
    s, cam, T, qp = scene
    return (s.render(cam, T, level), None, qp.xyz, qp.features[level], qp.confidences[level],
            cam.scale(1 / STRIDES[level]), inits, LAMBDA)


@pytest.mark.parametrize("gradient,stopping", [("analytic", "native"), ("central", "reference"),
                                               ("central", "native"), ("analytic", "reference")])
def test_fused_level_equals_the_torch_level(scene, gradient, stopping):
    """Both engine profiles' variants (and the two mixed ones): hypotheses near, far, converging at
    different iterations; every field of the result."""
    T = scene[2]
    inits = Pose.stack([perturb(T, 0.3, 0.05, 1), perturb(T, 3.0, 0.7, 2), perturb(T, 1.0, 0.3, 3)]).float()
    problem = box_problem(scene, 1, inits)
    config = dict(num_iters=12, gradient=gradient, stopping=stopping, check_every=1)
    ref = solve(problem, "torch", **config)
    fused = solve(problem, "fused", **config)
    assert_same_result(ref, fused)
    assert len(set(ref.iterations.tolist())) > 1  # the hypotheses stopped at different iterations


def test_distortion_confidence_and_pad():
    """A distorted camera, a query confidence map, reference confidences, a border pad and points
    behind the camera or with non-finite coordinates: the projection, its Jacobian and the weights."""
    g = torch.Generator().manual_seed(4)
    C, H, W = 8, 30, 40
    fmap = torch.nn.functional.avg_pool2d(torch.randn(1, C, H + 4, W + 4, generator=g), 5, 1)[0]
    fmap = torch.nn.functional.normalize(fmap, dim=0)
    conf = torch.rand(1, H, W, generator=g)
    cam = Camera.from_params(W, H, 32.0, 33.0, 19.3, 14.6, [-0.1, 0.02, 1e-3, -1e-3, 0.001], dtype=torch.float32)
    n = 90
    xyz = torch.cat([torch.rand(n, 2, generator=g) * 4 - 2, 3 + torch.rand(n, 1, generator=g) * 3], -1)
    xyz[0, 2] = -4.0  # behind the camera
    xyz[1] = float("nan")
    ref = torch.nn.functional.normalize(torch.randn(n, C, generator=g), dim=-1)
    c_ref = torch.rand(n, generator=g)
    inits = Pose.exp(torch.tensor([[0.05, -0.03, 0.1, 0.01, -0.02, 0.015],
                                   [-0.1, 0.02, 0.0, -0.02, 0.01, 0.0]]))
    problem = (fmap, conf, xyz, ref, c_ref, cam, inits, torch.tensor([1e-3, 1e-2, 1e-3, 0.1, 1e-2, 1.0]))
    for gradient in ("analytic", "central"):
        config = dict(num_iters=4, gradient=gradient, pad=1.5, stop_dt=0.0, stop_dw_deg=0.0)
        ref_res = solve(problem, "torch", **config)
        fused = solve(problem, "fused", **config)
        assert_same_result(ref_res, fused)
        assert 0 < int(fused.num_valid.min()) < n - 1 and fused.weights[:, :2].eq(0).all()


def test_reference_failure_rule_and_zero_iterations(scene):
    """A hypothesis 40 m away fails (fewer than 10 valid points) and never moves, as in the torch
    loop; with no iterations the result is the evaluation at the initial poses."""
    T = scene[2]
    away = Pose.exp(torch.tensor([[40.0, 0.0, 0.0, 0.0, 0.0, 0.0]], dtype=torch.float64))[0] @ T
    inits = Pose.stack([perturb(T, 1.0, 0.2, 3), away]).float()
    problem = box_problem(scene, 2, inits)
    ref = solve(problem, "torch", num_iters=11, stopping="reference", gradient="central")
    fused = solve(problem, "fused", num_iters=11, stopping="reference", gradient="central")
    assert fused.failed.tolist() == [False, True]
    assert_same_result(ref, fused)
    torch.testing.assert_close(fused.cam_from_world[1].t.cpu(), inits[1].t, atol=1e-6, rtol=0)
    zero_ref, zero = solve(problem, "torch", num_iters=0), solve(problem, "fused", num_iters=0)
    assert zero.iterations.tolist() == [0, 0]
    assert_same_result(zero_ref, zero)


def test_no_valid_points_give_infinite_cost_and_no_nan(scene):
    s, cam, T, qp = scene
    behind = Pose.exp(torch.tensor([[0.0, 0.0, -100.0, 0.0, 0.0, 0.0]], dtype=torch.float64))[0] @ T
    problem = box_problem(scene, 2, Pose.stack([behind]).float())
    fused = solve(problem, "fused", num_iters=3)
    assert fused.num_valid.tolist() == [0] and math.isinf(float(fused.cost[0]))
    assert torch.isfinite(fused.cam_from_world.t).all() and torch.isfinite(fused.hessian).all()
    empty = (problem[0], None, torch.zeros(0, 3), torch.zeros(0, 16), None, problem[5], problem[6], LAMBDA)
    out = solve(empty, "fused", num_iters=2)
    assert out.num_valid.tolist() == [0] and out.weights.shape == (1, 0)


def test_many_hypotheses_in_one_pass(scene):
    """64 initial poses (keyframe pose x yaw / position offsets) run as one batch; each equals
    the torch result."""
    T = scene[2]
    inits = Pose.stack([perturb(T, 0.5 + 0.05 * i, 0.1 + 0.01 * i, 100 + i) for i in range(64)]).float()
    s, cam, _, qp = scene
    problem = (s.render(cam, T, 2), None, qp.xyz[:40], qp.features[2][:40], None, cam.scale(1 / 16), inits, LAMBDA)
    config = dict(num_iters=3, check_every=1)
    assert_same_result(solve(problem, "torch", **config), solve(problem, "fused", **config))


def test_segments_end_where_the_host_may_stop():
    assert segments_of(100, True, 5) == [1] + [10] * 9 + [9]  # right after the tests at 0, 10, 20, ...
    assert segments_of(25, False, 5) == [5] * 5
    assert segments_of(7, False, 5) == [5, 2] and segments_of(0, False, 5) == []
    assert segments_of(1, True, 5) == [1] and sum(segments_of(37, True, 5)) == 37


def test_path_selection():
    """"auto" takes the fused kernels only on CUDA; "fused" refuses what they do not handle."""
    xyz, ref = torch.zeros(5, 3), torch.zeros(5, 4)
    init, damping = Pose.exp(torch.zeros(1, 6)), torch.zeros(6)
    fmap = torch.zeros(4, 6, 6)
    assert resolve_lm_path(LMConfig(), fmap, None, xyz, ref, None, init, damping) == "torch"
    assert resolve_lm_path(LMConfig(path="fused"), fmap, None, xyz, ref, None, init, damping) == "fused"
    with pytest.raises(ValueError, match="per-hypothesis"):
        resolve_lm_path(LMConfig(path="fused"), fmap, None, xyz, ref.expand(1, 5, 4), None, init, damping)
    with pytest.raises(ValueError, match="autograd"):
        resolve_lm_path(LMConfig(path="fused"), fmap.requires_grad_(), None, xyz, ref, None, init, damping)
    with pytest.raises(ValueError, match="Unsupported LM path"):
        LMConfig(path="cuda")


def _random_problem(C: int, n: int, B: int, seed: int = 5):
    """A smooth random C-channel map, points in view, hypotheses near the identity."""
    g = torch.Generator().manual_seed(seed)
    H, W = 24, 32
    fmap = torch.nn.functional.avg_pool2d(torch.randn(1, C, H + 4, W + 4, generator=g), 5, 1)[0]
    fmap = torch.nn.functional.normalize(fmap, dim=0)
    cam = Camera.from_params(W, H, 30.0, 30.0, 15.5, 11.5, dtype=torch.float32)
    xyz = torch.cat([torch.rand(n, 2, generator=g) * 3 - 1.5, 3 + torch.rand(n, 1, generator=g) * 2], -1)
    ref = torch.nn.functional.normalize(torch.randn(n, C, generator=g), dim=-1)
    inits = Pose.exp(0.02 * torch.randn(B, 6, generator=g))
    return (fmap, None, xyz, ref, None, cam, inits, LAMBDA)


def test_many_channels_run_in_chunks():
    """40 channels: two chunks of the channel pass, the second one partly masked."""
    problem = _random_problem(40, 60, 2)
    config = dict(num_iters=3, gradient="central", stop_dt=0.0, stop_dw_deg=0.0)
    assert_same_result(solve(problem, "torch", **config), solve(problem, "fused", **config))


def test_launches_match_the_compiled_variants(monkeypatch):
    """The constexpr values fused_lm passes at launch (with the GPU's block size) are exactly
    those scripts/check_gpu_kernels.py compiles (lm_variants.kernel_variants)."""
    from pixloc_ros.core.engine.lm import fused as fused_lm, kernels as lm_kernels
    from pixloc_ros.core.engine.lm.variants import kernel_variants

    launched = set()
    real = fused_lm.kernels

    class Recorder:
        def __init__(self, kernel):
            self.kernel = kernel

        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                names = self.kernel.arg_names
                consts = {k: v for k, v in kwargs.items() if k in names}
                label = ",".join(f"{k}={int(v) if isinstance(v, bool) else v}" for k, v in consts.items())
                launched.add((f"{self.kernel.__name__}[{label}]", kwargs.get("num_warps")))
                return self.kernel[grid](*args, **kwargs)
            return launch

    monkeypatch.setattr(fused_lm, "kernels", lambda device: tuple(Recorder(k) for k in real(device)))
    monkeypatch.setattr(fused_lm, "channel_block", lambda device: lm_kernels.BLOCK_N)
    fused_lm.clear_cache()
    for gradient, stopping in (("central", "reference"), ("analytic", "native")):
        solve(_random_problem(32, 20, 1), "fused", num_iters=1, gradient=gradient, stopping=stopping)
    fused_lm.clear_cache()
    compiled = {(v.name, v.num_warps) for v in kernel_variants((32,))}
    assert launched == compiled


def test_buckets():
    """Hypotheses pad to 4, 16, 64, ...; points to the granule times a power of two."""
    from pixloc_ros.core.engine.lm.fused import hypothesis_bucket, point_bucket, warm_up_shapes

    assert [hypothesis_bucket(b) for b in (1, 3, 4, 5, 16, 17, 64, 65)] == [4, 4, 4, 16, 16, 64, 64, 256]
    assert [point_bucket(n, 1024) for n in (0, 1, 800, 1024, 1025, 3000, 5000)] == [1024, 1024, 1024, 1024, 2048,
                                                                                   4096, 8192]
    assert point_bucket(100, 1000) == 1024 and point_bucket(129, 1) == 256  # granules of whole blocks
    shapes = warm_up_shapes(4000, 4, 1024)
    assert shapes == [(4, 1024), (4, 2048), (4, 4000)]
    # Every frame a node with max_points 4000 and 4 hypotheses can see falls in a warmed-up bucket.
    warm = {(hypothesis_bucket(b), point_bucket(n, 1024)) for b, n in shapes}
    assert all((hypothesis_bucket(b), point_bucket(n, 1024)) in warm for b in range(1, 5) for n in range(1, 4001, 37))


def test_padding_does_not_change_results():
    """The same problem in a tight bucket (2 hypotheses -> 4 rows, 90 -> 128 points) and in a wide
    one (point_bucket 512): equal results, and equal to the torch loop."""
    problem = _random_problem(16, 90, 2, seed=9)
    config = dict(num_iters=4, check_every=2)
    tight = solve(problem, "fused", point_bucket=128, **config)
    wide = solve(problem, "fused", point_bucket=512, **config)
    assert_same_result(tight, wide, atol_m=1e-6, atol_rad=1e-7)
    assert_same_result(solve(problem, "torch", **config), tight)


def test_varying_frames_reuse_one_bucket():
    """A node-like sequence (1-4 hypotheses, 60-128 points) builds one bucket state (on CUDA: one
    set of graph captures), replayed by every later frame."""
    from pixloc_ros.core.engine.lm import fused as fused_lm

    fused_lm.clear_cache()
    before = fused_lm.cache_stats()
    for i, (b, n) in enumerate([(1, 60), (4, 128), (2, 97), (3, 75), (1, 128), (4, 61)]):
        out = solve(_random_problem(16, n, b, seed=i), "fused", num_iters=2)
        assert out.cam_from_world.shape == (b,) and out.weights.shape == (b, n)
    after = fused_lm.cache_stats()
    assert after.states_built - before.states_built == 1 and after.cached == 1
    if DEVICE.type == "cuda":
        assert after.graphs_captured - before.graphs_captured == 1  # segments [2]: one graph
    fused_lm.clear_cache()


def test_the_cache_is_bounded(monkeypatch):
    """Evicted buckets take their map buffers along once no cached bucket uses them."""
    from pixloc_ros.core.engine.lm import fused as fused_lm

    fused_lm.clear_cache()
    monkeypatch.setattr(fused_lm, "MAX_CACHED", 2)
    for size in (10, 11, 12):
        fused_lm._level_state(torch.device("cpu"), 4, 128, size, size, 8, False, False)
    assert fused_lm.cache_stats().cached == 2 and sorted(k[1] for k in fused_lm._MAPS) == [11, 12]
    fused_lm.clear_cache()
