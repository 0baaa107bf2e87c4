"""The fused LM's safety net (core/engine/lm/guard.py) through the code path the node uses (Localizer).

Each failure is injected where it would happen on a GPU machine -- the kernel launch raising
Triton's CompilationError, CUDA graph capture raising, the kernels returning wrong numbers, a
later launch failing, the fused path unavailable where it was asked for -- and each must give
exactly one warning with the reason, then torch LM results for the rest of the run (equal to a
torch-only localizer's). Without CUDA the fused kernels run in Triton's interpreter
(test/conftest.py), so problems are small.
"""
import pytest
import torch

from feature_scene import BoxScene, default_camera, perturb, true_pose
from pixloc_ros.core.geometry.pose import Pose
from pixloc_ros.core.engine.localizer import Localizer, LocalizerConfig
from pixloc_ros.core.engine.network import FeaturePyramid
from pixloc_ros.core.engine.lm.config import LMConfig

triton = pytest.importorskip("triton")
from pixloc_ros.core.engine.lm import fused as fused_lm  # noqa: E402
from pixloc_ros.core.engine.lm.guard import PROBE_TOL_M, compare_results, probe_problem  # noqa: E402

DAMPING = torch.full((3, 6), 1e-2)
ITERS = (3, 3, 0)  # levels 0 and 1 (the 32- and 16-channel maps of the box scene are all alike here)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available() and not fused_lm.interpreted(),
                                reason="no CUDA and TRITON_INTERPRET was not set before triton was imported")


@pytest.fixture(scope="module")
def scene():
    s = BoxScene()
    cam, T = default_camera(), true_pose()
    maps = [s.render(cam, T, level)[None] for level in range(3)]
    confs = [torch.ones(1, 1, *m.shape[-2:]) for m in maps]
    qp = s.query_points(s.sample_points(cam, T, 100))
    return cam, T, FeaturePyramid(maps, confs, (480, 640)), qp


def localizer(path: str, warnings: list) -> Localizer:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    loc = Localizer(None, LocalizerConfig(device=device, iterations=ITERS, min_valid_points=20,
                                          lm=LMConfig(path=path, point_bucket=128)))
    loc.set_lm_warning_handler(warnings.append)
    return loc


def run(loc: Localizer, scene, seed: int = 0):
    cam, T, pyramid, qp = scene
    inits = Pose.stack([perturb(T, 1.0, 0.2, seed), perturb(T, 2.0, 0.3, seed + 1)])
    return loc.localize_features(pyramid, cam, qp, inits, DAMPING)


@pytest.fixture(scope="module")
def torch_results(scene):
    """What the torch loop gives for the frames of these tests (seeds 0 and 1)."""
    loc = localizer("torch", [])
    return [run(loc, scene, seed) for seed in (0, 1)]


@pytest.fixture(autouse=True)
def fresh_cache():
    fused_lm.clear_cache()
    yield
    fused_lm.clear_cache()


def assert_torch_result(result, expected):
    assert result.lm_path == "torch" and result.success == expected.success
    torch.testing.assert_close(result.cam_from_world.t, expected.cam_from_world.t, atol=0, rtol=0)
    assert result.iterations == expected.iterations


def test_probe_passes_and_levels_run_fused(scene, torch_results):
    warnings = []
    loc = localizer("fused", warnings)
    result = run(loc, scene)
    assert warnings == [] and result.lm_path == "fused" and result.success
    status = loc.lm_status()
    assert (status.requested, status.path, status.reason) == ("fused", "fused", "")
    assert len(loc.lm_guard.probed) == 2  # one bucket per level run
    torch.testing.assert_close(result.cam_from_world.t, torch_results[0].cam_from_world.t, atol=2e-5, rtol=0)
    assert result.iterations == torch_results[0].iterations


def test_compilation_error_falls_back_once(scene, torch_results, monkeypatch):
    from triton.compiler.errors import CompilationError

    real = fused_lm.kernels

    class Broken:
        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                raise CompilationError("lm_kernels.py", None, "NameError('Cannot access global variable MIN_DEPTH')")
            return launch

    monkeypatch.setattr(fused_lm, "kernels", lambda device: (Broken(), *real(device)[1:]))
    warnings = []
    loc = localizer("auto" if torch.cuda.is_available() else "fused", warnings)
    results = [run(loc, scene, seed) for seed in (0, 1)]
    assert len(warnings) == 1 and "CompilationError" in warnings[0] and "MIN_DEPTH" in warnings[0]
    assert "torch LM for the rest of the run" in warnings[0]
    for result, expected in zip(results, torch_results):
        assert_torch_result(result, expected)
    status = loc.lm_status()
    assert status.path == "torch" and "CompilationError" in status.reason


def test_cuda_graph_capture_error_falls_back_once(scene, torch_results, monkeypatch):
    def capture(self, lengths):
        raise RuntimeError("CUDA error: operation not permitted when stream is capturing")

    monkeypatch.setattr(fused_lm, "use_cuda_graphs", lambda device: True)
    monkeypatch.setattr(fused_lm._FusedLevel, "_capture", capture)
    warnings = []
    loc = localizer("fused", warnings)
    results = [run(loc, scene, seed) for seed in (0, 1)]
    assert len(warnings) == 1 and "RuntimeError" in warnings[0] and "stream is capturing" in warnings[0]
    for result, expected in zip(results, torch_results):
        assert_torch_result(result, expected)


def wrong_partials(monkeypatch, factor: float, after_calls: int = 0):
    """Make the per-point pass return its partial sums times ``factor`` from call ``after_calls`` on."""
    real = fused_lm.kernels
    calls = [0]

    class Scaled:
        def __init__(self, kernel):
            self.kernel = kernel

        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                out = self.kernel[grid](*args, **kwargs)
                calls[0] += 1
                if calls[0] > after_calls:
                    args[8].mul_(factor)  # partial_ptr
                return out
            return launch

    monkeypatch.setattr(fused_lm, "kernels", lambda device: (real(device)[0], Scaled(real(device)[1]), real(device)[2]))
    return calls


def test_wrong_numbers_fail_the_probe(scene, torch_results, monkeypatch):
    wrong_partials(monkeypatch, 1.5)
    warnings = []
    loc = localizer("fused", warnings)
    results = [run(loc, scene, seed) for seed in (0, 1)]
    assert len(warnings) == 1 and "FusedLMMismatch" in warnings[0] and "differs from the torch LM" in warnings[0]
    for result, expected in zip(results, torch_results):
        assert_torch_result(result, expected)


def test_failure_after_the_probe_falls_back_mid_run(scene, torch_results, monkeypatch):
    """The probe passes, the first frame runs fused; then a launch fails (e.g. a CUDA error): the
    level is redone with the torch loop, one warning, torch from then on."""
    warnings = []
    loc = localizer("fused", warnings)
    first = run(loc, scene, 0)
    assert first.lm_path == "fused" and warnings == []
    real = fused_lm.kernels

    def failing(device):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(fused_lm, "kernels", failing)
    second = run(loc, scene, 1)
    monkeypatch.setattr(fused_lm, "kernels", real)
    third = run(loc, scene, 1)
    assert len(warnings) == 1 and "illegal memory access" in warnings[0]
    assert_torch_result(second, torch_results[1])
    assert_torch_result(third, torch_results[1])


def test_fused_asked_for_where_it_cannot_run(scene, torch_results, monkeypatch):
    """lm_path fused on a CPU without Triton's interpreter (the node test does it for real)."""
    if torch.cuda.is_available():
        pytest.skip("CUDA runs the fused kernels")
    monkeypatch.setattr(fused_lm, "interpreted", lambda: False)
    warnings = []
    loc = localizer("fused", warnings)
    results = [run(loc, scene, seed) for seed in (0, 1)]
    assert len(warnings) == 1 and "unavailable" in warnings[0] and "CUDA tensors" in warnings[0]
    for result, expected in zip(results, torch_results):
        assert_torch_result(result, expected)


def test_auto_on_a_cpu_is_the_torch_loop_without_a_word(scene, torch_results):
    if torch.cuda.is_available():
        pytest.skip("auto means fused on CUDA")
    warnings = []
    loc = localizer("auto", warnings)
    assert_torch_result(run(loc, scene, 0), torch_results[0])
    assert warnings == [] and loc.lm_status().path == "torch" and loc.lm_status().reason == ""


def test_probe_problem_and_comparison():
    """The probe's problem has the bucket's exact shape (so its CUDA graphs are the frames'), and
    the comparison notices a pose off by more than the tolerance."""
    from pixloc_ros.core.geometry.camera import Camera
    from pixloc_ros.core.engine.lm.optimizer import optimize_level

    device = "cuda" if torch.cuda.is_available() else "cpu"
    cam = Camera.from_params(40, 30, 35.0, 35.0, 19.5, 14.5)
    key = fused_lm.bucket_key(torch.device(device), 3, 200, (8, 30, 40), LMConfig(point_bucket=128))
    fmap, conf, xyz, ref, c_ref, init = probe_problem(key, cam, True)
    assert fmap.shape == (8, 30, 40) and conf.shape == (1, 30, 40) and init.shape == (4,)
    assert xyz.shape == (256, 3) and ref.shape == (256, 8) and c_ref.shape == (256,)
    assert fused_lm.bucket_key(torch.device(device), 4, 256, fmap.shape, LMConfig(point_bucket=128)) == key
    config = LMConfig(num_iters=3, path="torch", stop_dt=0.0, stop_dw_deg=0.0)
    a = optimize_level(fmap, conf, xyz, ref, c_ref, cam, init, DAMPING[0], config)
    assert compare_results(a, a) is None and int(a.num_valid.min()) > 100
    shifted = optimize_level(fmap, conf, xyz, ref, c_ref, cam, init, DAMPING[0], config)
    shifted.cam_from_world = Pose(shifted.cam_from_world.R, shifted.cam_from_world.t + 3 * PROBE_TOL_M)
    assert "poses differ" in compare_results(a, shifted)


def test_malformed_input_is_not_blamed_on_the_accelerator(scene):
    """Input the torch loop rejects too (reference features of the wrong width, a map under 2x2
    pixels) raises its ValueError as before, and the fused path stays in use."""
    from pixloc_ros.core.geometry.camera import Camera

    warnings = []
    loc = localizer("fused", warnings)
    fmap = torch.randn(8, 30, 40)
    xyz = torch.tensor([[0.0, 0.0, 5.0]] * 20)
    cam = Camera.from_params(40, 30, 35.0, 35.0, 19.5, 14.5)
    init = Pose.identity((1,))
    config = LMConfig(path="fused", num_iters=1, point_bucket=128)
    with pytest.raises(ValueError):
        loc.lm_guard.optimize_level(fmap, None, xyz, torch.randn(20, 5), None, cam, init, DAMPING[0], config)
    assert warnings == [] and loc.lm_status().reason == ""
    tiny = Camera.from_params(40, 1, 35.0, 35.0, 19.5, 0.0)
    with pytest.raises(ValueError, match="too small"):
        loc.lm_guard.optimize_level(torch.randn(8, 1, 40), None, xyz, torch.randn(20, 8), None, tiny, init,
                                    DAMPING[0], config)
    assert warnings == [] and loc.lm_status().reason == ""
    run(loc, scene)
    assert loc.lm_status().path == "fused" and warnings == []
