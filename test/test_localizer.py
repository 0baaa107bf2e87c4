"""Coarse-to-fine localization: convergence, hypothesis choice, degenerate inputs, network path."""
import math

import numpy as np
import pytest
import torch

from feature_scene import BoxScene, default_camera, perturb, true_pose
from pixloc_ros.core.geometry.camera import Camera
from pixloc_ros.core.geometry.pose import Pose, pose_error
from pixloc_ros.core.engine.localizer import Localizer, LocalizerConfig, level_pads
from pixloc_ros.core.engine.network import FeaturePyramid
from pixloc_ros.core.engine.query_points import QueryPoints

DAMPING = torch.full((3, 6), 1e-2)


@pytest.fixture(scope="module")
def scene_setup():
    scene = BoxScene()
    cam = default_camera()
    T = true_pose()
    maps = [scene.render(cam, T, level)[None] for level in range(3)]
    confs = [torch.ones(1, 1, *m.shape[-2:]) for m in maps]
    qp = scene.query_points(scene.sample_points(cam, T, 600))
    return scene, cam, T, FeaturePyramid(maps, confs, (480, 640)), qp


@pytest.fixture(scope="module")
def localizer():
    return Localizer(None, LocalizerConfig(device="cpu"))


def assert_nan_free(result):
    for v in (*result.cost, *result.initial_cost, result.sigma2, result.inlier_ratio):
        assert not math.isnan(v)
    if result.cam_from_world is not None:
        assert torch.isfinite(result.cam_from_world.R).all() and torch.isfinite(result.cam_from_world.t).all()
    if result.point_weights is not None:
        assert np.isfinite(result.point_weights).all()


@pytest.mark.parametrize("seed", [0, 5])
def test_coarse_to_fine_recovers_pose_from_5deg_1m(scene_setup, localizer, seed):
    _, cam, T, pyramid, qp = scene_setup
    init = perturb(T, 5.0, 1.0, seed)
    assert pose_error(init, T)[1] > 0.9
    r = localizer.localize_features(pyramid, cam, qp, Pose.stack([init]), DAMPING)
    assert r.success, r.reason
    deg, m = pose_error(r.cam_from_world, T)
    assert deg < 0.05 and m < 0.02, (deg, m)
    assert r.cost[0] < r.initial_cost[2]
    assert all(0 < it < 25 for it in r.iterations)
    assert r.num_valid > 500 and r.inlier_ratio > 0.5
    cov = r.covariance
    assert cov.shape == (6, 6) and np.allclose(cov, cov.T) and np.linalg.eigvalsh(cov).min() > 0
    assert r.point_weights.shape == (600,) and r.point_weights.dtype == np.float32
    assert [c.shape for c in r.confidences] == [(480, 640), (120, 160), (30, 40)]
    assert r.timings.total_s > 0 and all(t > 0 for t in r.timings.levels_s)
    assert_nan_free(r)


def test_good_hypothesis_wins(scene_setup, localizer):
    _, cam, T, pyramid, qp = scene_setup
    bad = perturb(T, 30.0, 5.0, seed=2)
    good = perturb(T, 4.0, 0.8, seed=3)
    r = localizer.localize_features(pyramid, cam, qp, Pose.stack([bad, good]), DAMPING)
    assert r.success and r.hypothesis == 1
    assert r.hypothesis_costs.shape == (2,) and r.hypothesis_costs[1] < r.hypothesis_costs[0]
    deg, m = pose_error(r.cam_from_world, T)
    assert deg < 0.05 and m < 0.02


def test_single_level_and_skipped_levels(scene_setup):
    _, cam, T, pyramid, qp = scene_setup
    loc = Localizer(None, LocalizerConfig(device="cpu", iterations=(30, 0, 0)))
    r = loc.localize_features(pyramid, cam, qp, perturb(T, 0.3, 0.05, 1), DAMPING)  # a single Pose works too
    assert r.success and r.iterations[1:] == (0, 0) and r.timings.levels_s[1:] == (0.0, 0.0)
    assert math.isinf(r.cost[2])
    deg, m = pose_error(r.cam_from_world, T)
    assert deg < 0.05 and m < 0.02


def test_no_points(scene_setup, localizer):
    _, cam, T, pyramid, qp = scene_setup
    empty = qp.select(torch.zeros(len(qp), dtype=torch.bool))
    r = localizer.localize_features(pyramid, cam, empty, Pose.stack([T]), DAMPING)
    assert not r.success and r.reason.startswith("no_points") and r.covariance is None
    assert_nan_free(r)


def test_points_behind_camera(scene_setup, localizer):
    _, cam, T, pyramid, qp = scene_setup
    p_c = T.transform(qp.xyz.double())
    behind = T.inv().transform(p_c * torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64)).float()
    pts = QueryPoints(behind, qp.features, qp.confidences, qp.point_ids, qp.keyframe_ids)
    r = localizer.localize_features(pyramid, cam, pts, Pose.stack([T, T]), DAMPING)
    assert not r.success and r.reason.startswith("points_behind_camera")
    assert_nan_free(r)


def test_too_few_points(scene_setup, localizer):
    _, cam, T, pyramid, qp = scene_setup
    r = localizer.localize_features(pyramid, cam, qp.select(torch.arange(10)), Pose.stack([T]), DAMPING)
    assert not r.success and r.reason.startswith("too_few_valid_points")
    assert r.num_valid <= 10
    assert_nan_free(r)


def test_collinear_points_are_degenerate(scene_setup, localizer):
    scene, cam, T, pyramid, _ = scene_setup
    s = torch.linspace(0, 1, 300, dtype=torch.float64)[:, None]
    centre = T.inv().t
    line = centre + torch.tensor([-1.0, 1.2, 5.0], dtype=torch.float64) + s * torch.tensor([0.5, 0.0, 20.0], dtype=torch.float64)
    r = localizer.localize_features(pyramid, cam, scene.query_points(line), Pose.stack([T]), DAMPING)
    assert r.num_valid >= 250  # plenty of points: the geometry, not the count, is the problem
    assert not r.success and r.reason.startswith("degenerate_geometry") and r.covariance is None
    assert_nan_free(r)


def test_bad_input_raises(scene_setup, localizer):
    _, cam, T, pyramid, qp = scene_setup
    with pytest.raises(ValueError, match="damping"):
        localizer.localize_features(pyramid, cam, qp, Pose.stack([T]), torch.ones(6))
    with pytest.raises(ValueError, match="model"):
        localizer.localize(np.zeros((480, 640, 3), np.uint8), cam, qp, T)


def random_network_problem(seed):
    """(model, localizer, camera, points, image): a random PixLoc network (torch seed 0), a 128x96
    pinhole camera, 200 random points 4-8 m ahead with random unit features, a random image."""
    network = pytest.importorskip("pixloc_ros.core.engine.network")
    torch.manual_seed(0)
    model = network.PixLocModel()
    loc = Localizer(model, LocalizerConfig(device="cpu", iterations=(3, 3, 3), min_valid_points=5))
    cam = Camera.from_params(128, 96, 100.0, 100.0, 63.5, 47.5)
    g = torch.Generator().manual_seed(seed)
    xyz = torch.cat([torch.rand(200, 2, generator=g) * 4 - 2, 4 + torch.rand(200, 1, generator=g) * 4], -1)
    feats = [torch.nn.functional.normalize(torch.randn(200, c, generator=g), dim=-1) for c in (32, 128, 128)]
    pts = QueryPoints(xyz, feats, [torch.rand(200, generator=g) for _ in range(3)], torch.arange(200),
                      torch.zeros(200, dtype=torch.long))
    image = (np.random.default_rng(seed).random((96, 128, 3)) * 255).astype(np.uint8)
    return model, loc, cam, pts, image


def test_localize_with_random_network():
    model, loc, cam, pts, image = random_network_problem(0)
    r = loc.localize(image, cam, pts, Pose.identity((2,)))
    assert isinstance(r.reason, str) and r.reason
    assert [c.shape for c in r.confidences] == [(96, 128), (24, 32), (6, 8)]
    assert r.timings.network_s > 0 and r.timings.total_s >= r.timings.network_s
    assert_nan_free(r)
    # max_image_size downsizes the image and the camera together
    small = Localizer(model, LocalizerConfig(device="cpu", iterations=(2, 2, 2), max_image_size=64, min_valid_points=5))
    r2 = small.localize(image, cam, pts, Pose.identity((1,)))
    assert r2.confidences[0].shape == (48, 64)
    with pytest.raises(ValueError, match="camera is 128x96 but the image is 100x96"):
        loc.localize(image[:, :100], cam, pts, Pose.identity((1,)))


def test_warm_up_runs_the_network_and_the_lm_and_changes_no_result():
    """warm_up(w, h, num_points, hypotheses) runs the LM once on that many synthetic points and
    initial poses (what compiles CUDA kernels before the first frame); a localization after it
    equals one before it."""
    _, loc, cam, pts, image = random_network_problem(1)
    before = loc.localize(image, cam, pts, Pose.identity((2,)))
    runs, real = [], loc.localize_features
    loc.localize_features = lambda pyr, camera, points, inits, damping: (
        runs.append((tuple(camera.size.tolist()), len(points), inits.shape)) or real(pyr, camera, points, inits, damping))
    assert loc.warm_up(128, 96, num_points=300, hypotheses=4) > 0
    assert runs == [((128.0, 96.0), 300, (4,))]
    assert loc.warm_up(128, 96) > 0 and len(runs) == 1  # the network alone
    after = loc.localize(image, cam, pts, Pose.identity((2,)))
    torch.testing.assert_close(after.cam_from_world.t, before.cam_from_world.t, atol=0, rtol=0)
    assert after.cost == before.cost and after.iterations == before.iterations


def test_default_pads_keep_the_reference_at_cmu_size_and_shrink_on_small_maps():
    cmu = [(768, 1024), (192, 256), (48, 64)]  # level maps of a 1024x768 image, finest first
    assert level_pads(None, cmu) == (4.0, 4.0, 4.0)  # the reference's 4 px everywhere
    small = [(240, 320), (60, 80), (15, 20)]
    pads = level_pads(None, small)
    assert pads[:2] == (4.0, 4.0) and 0 < pads[2] < 4.0  # only the 20x15 coarse map gets a smaller pad
    # the share of the coarse map left valid stays well above a 4 px pad's 25 %
    h, w = small[2]
    share = lambda p: max(h - 1 - 2 * p, 0) * max(w - 1 - 2 * p, 0) / ((h - 1) * (w - 1))
    assert share(pads[2]) > 0.7 and share(4.0) < 0.3
    assert level_pads(2.5, small) == (2.5, 2.5, 2.5) and level_pads((1, 2, 3), small) == (1.0, 2.0, 3.0)
    with pytest.raises(ValueError, match="3 levels"):
        LocalizerConfig(pad=(4.0, 4.0))
    with pytest.raises(ValueError, match=">= 0"):
        LocalizerConfig(pad=(4.0, -1.0, 4.0))
    assert LocalizerConfig(pad=[1, 2, 3]).pad == (1.0, 2.0, 3.0)


def test_pad_tuple_applies_per_level(scene_setup):
    """Each entry of a pad tuple acts on its own level: a pad wider than the coarse map leaves
    that level without valid points (the pose does not move there), the finest entry alone
    decides how many points count at the end."""
    _, cam, T, pyramid, qp = scene_setup
    init = perturb(T, 2.0, 0.4, seed=4)

    def run(pad, iterations):
        loc = Localizer(None, LocalizerConfig(device="cpu", pad=pad, iterations=iterations, min_valid_points=1))
        return loc.localize_features(pyramid, cam, qp, Pose.stack([init]), DAMPING)

    # Coarse level only: 4 px lets it converge, 100 px (wider than the 40x30 map) freezes it.
    moved = run((4.0, 4.0, 4.0), (0, 0, 25))
    frozen = run((4.0, 4.0, 100.0), (0, 0, 25))
    assert pose_error(moved.cam_from_world, T)[1] < 0.5 * pose_error(init, T)[1]
    assert pose_error(frozen.cam_from_world, init) == pytest.approx((0.0, 0.0), abs=1e-6)
    # All levels: a frozen coarse level does not stop the finer ones; num_valid counts the
    # fine-level points inside the finest pad at the final pose.
    r = run((60.0, 4.0, 100.0), (25, 25, 25))
    p2d, visible = cam.world2image(r.cam_from_world.transform(qp.xyz.double()))
    w, h = (float(v) for v in cam.size)
    inside = visible & (p2d[:, 0] >= 60) & (p2d[:, 0] <= w - 61) & (p2d[:, 1] >= 60) & (p2d[:, 1] <= h - 61)
    assert r.num_valid == int(inside.sum()) < int(visible.sum())
    deg, m = pose_error(r.cam_from_world, T)
    assert deg < 0.1 and m < 0.05, (deg, m)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("compile_mode", [None, "reduce-overhead"])
def test_cuda_matches_cpu(scene_setup, localizer, compile_mode):
    """The same problem on CUDA (eager, or torch.compile with CUDA graphs) lands where the CPU does."""
    from pixloc_ros.core.engine.lm.config import LMConfig

    _, cam, T, pyramid, qp = scene_setup
    init = Pose.stack([perturb(T, 5.0, 1.0, 0), perturb(T, 3.0, 0.5, 1)])
    cpu = localizer.localize_features(pyramid, cam, qp, init, DAMPING)
    lm = LMConfig(compile=compile_mode is not None, compile_mode=compile_mode)
    cuda = Localizer(None, LocalizerConfig(device="cuda", lm=lm))
    for _ in range(2):  # the second call replays the compiled graphs
        r = cuda.localize_features(pyramid, cam, qp, init, DAMPING.cuda())
    assert r.success and cpu.success, (r.reason, cpu.reason)
    deg, m = pose_error(r.cam_from_world, cpu.cam_from_world)
    assert deg < 0.01 and m < 0.005, (deg, m)
    np.testing.assert_allclose(r.covariance, cpu.covariance, rtol=0.05, atol=1e-9)
    assert_nan_free(r)


def test_lm_runs_with_its_own_cpu_threads(scene_setup, monkeypatch):
    """LocalizerConfig.lm_cpu_threads: the LM's small tensors run on one thread, whatever the
    network uses; torch's setting is restored afterwards."""
    from pixloc_ros.core.engine.lm import guard as guard_module  # the localizer's levels go through lm_guard

    _, cam, T, pyramid, qp = scene_setup
    seen = []
    real = guard_module.optimize_level
    monkeypatch.setattr(guard_module, "optimize_level",
                        lambda *a, **k: seen.append(torch.get_num_threads()) or real(*a, **k))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        Localizer(None, LocalizerConfig(device="cpu", iterations=(1, 1, 1))).localize_features(
            pyramid, cam, qp, perturb(T, 1.0, 0.1, 0), DAMPING)
        assert seen == [1, 1, 1] and torch.get_num_threads() == 2
        seen.clear()
        Localizer(None, LocalizerConfig(device="cpu", iterations=(1, 1, 1), lm_cpu_threads=None)).localize_features(
            pyramid, cam, qp, perturb(T, 1.0, 0.1, 0), DAMPING)
        assert seen == [2, 2, 2]
    finally:
        torch.set_num_threads(before)


def test_images_go_to_the_device_as_uint8_and_convert_there():
    """upload_rgb (pinned uint8 upload on CUDA) gives rgb_to_tensor's values on any device."""
    from pixloc_ros.core.engine.images import rgb_to_tensor, upload_rgb

    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    expected = rgb_to_tensor(rgb)
    assert torch.equal(upload_rgb(rgb, torch.device("cpu")), expected)
    assert torch.equal(upload_rgb(rgb[:, ::-1], torch.device("cpu")), rgb_to_tensor(rgb[:, ::-1]))  # a view
    if torch.cuda.is_available():
        assert torch.equal(upload_rgb(rgb, torch.device("cuda")).cpu(), expected)
