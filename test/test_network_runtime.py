"""The network through OpenVINO / ONNX Runtime on the CPU (core/engine/network_runtime.py).

The maps must equal PyTorch's within 1e-3 (they do within about 1e-6), for both image
handlings (the native profile's padding, the reference's cropping) and odd sizes; the compiled
graph must follow weight changes; training and autograd stay in torch. Each runtime's tests skip
when it is not installed.
"""
import math

import numpy as np
import pytest
import torch

from pixloc_ros.core.engine import network_runtime
from pixloc_ros.core.geometry.camera import Camera
from pixloc_ros.core.geometry.pose import Pose
from pixloc_ros.core.engine.localizer import Localizer, LocalizerConfig
from pixloc_ros.core.engine.network import NetworkConfig, PixLocModel
from pixloc_ros.core.engine.network_runtime import CompiledUNet, resolve_cpu_runtime, runtime_installed
from pixloc_ros.core.engine.query_points import QueryPoints

RUNTIMES = [pytest.param(name, marks=pytest.mark.skipif(not runtime_installed(name), reason=f"{name} not installed"))
            for name in ("openvino", "onnxruntime")]
TOLERANCE = 1e-3  # the bound on |runtime - torch| for features and confidences


@pytest.fixture(scope="module")
def weights():
    torch.manual_seed(3)
    return PixLocModel().eval().state_dict()


def model_with(weights, runtime: str, pad_mode="replicate") -> PixLocModel:
    model = PixLocModel(config=NetworkConfig(pad_mode=pad_mode, cpu_runtime=runtime))
    model.load_state_dict(weights)
    return model.eval()


def max_difference(a, b) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a.features + a.confidences, b.features + b.confidences))


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("pad_mode,size", [("replicate", (45, 70)), (None, (50, 67))])
def test_runtime_maps_equal_torch(weights, runtime, pad_mode, size):
    image = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(1))
    expected = model_with(weights, "torch", pad_mode).extract(image)
    model = model_with(weights, runtime, pad_mode)
    got = model.extract(image)
    assert model._compiled is not None and model._compiled.runtime == runtime  # the runtime really ran
    assert [f.shape for f in got.features] == [f.shape for f in expected.features]
    assert max_difference(got, expected) < TOLERANCE
    # channels-last storage: the LM's gather table is a view of the map
    assert got.features[0][0].permute(1, 2, 0).is_contiguous()


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_compiled_graph_follows_the_weights(weights, runtime):
    """An in-place weight update (an optimizer step, load_state_dict) rebuilds the graph."""
    image = torch.rand(1, 3, 32, 48, generator=torch.Generator().manual_seed(2))
    model = model_with(weights, runtime)
    before = model.extract(image)
    with torch.no_grad():
        model.extractor.adaptation[0][0].weight.mul_(-1.0)
    after = model.extract(image)
    reference = model_with(model.state_dict(), "torch").extract(image)
    assert max_difference(after, reference) < TOLERANCE
    assert float((after.features[0] - before.features[0]).abs().max()) > 0.1


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_autograd_and_training_stay_in_torch(weights, runtime):
    model = model_with(weights, runtime)
    image = torch.rand(1, 3, 32, 32)
    assert model._compiled_unet(image) is None  # grad enabled
    with torch.no_grad():
        assert isinstance(model._compiled_unet(image), CompiledUNet)
        model.train()
        assert model._compiled_unet(image) is None  # batch statistics
        model.eval()
        assert model._compiled_unet(image.double()) is None and model._compiled_unet(image.expand(2, -1, -1, -1)) is None
    out = model(image)
    assert out.features[0].requires_grad


def test_runtime_names_and_missing_runtimes(monkeypatch):
    with pytest.raises(ValueError, match="Unsupported CPU runtime"):
        resolve_cpu_runtime("tensorrt")
    with pytest.raises(ValueError, match="Unsupported cpu_runtime"):
        NetworkConfig(cpu_runtime="gpu")
    monkeypatch.setattr(network_runtime, "runtime_installed", lambda name: name == "torch")
    assert resolve_cpu_runtime("auto") == "torch"
    with pytest.raises(ValueError, match="pip install openvino"):
        resolve_cpu_runtime("openvino")
    with pytest.raises(ValueError, match="not installed"):
        Localizer(PixLocModel(), LocalizerConfig(device="cpu", cpu_runtime="onnxruntime"))


@pytest.mark.skipif(resolve_cpu_runtime("auto") == "torch", reason="no CPU runtime installed")
def test_localizer_uses_the_runtime_and_finds_the_same_pose(weights):
    """End to end: the localizer's default ("auto") against torch on the same image and points."""
    h, w = 96, 128
    cam = Camera.from_params(w, h, 100.0, 100.0, 63.5, 47.5)
    g = torch.Generator().manual_seed(0)
    xyz = torch.cat([torch.rand(300, 2, generator=g) * 4 - 2, 4 + torch.rand(300, 1, generator=g) * 4], -1)
    image = (np.random.default_rng(0).random((h, w, 3)) * 255).astype(np.uint8)
    torch_model = model_with(weights, "torch")
    pyramid = torch_model.extract(image)
    feats, confs = [], []
    for level, stride in enumerate(pyramid.strides):  # reference features: the image's own, at the true pose
        from pixloc_ros.core.engine.interpolation import BilinearSampler
        p2d, _ = cam.scale(1.0 / stride).world2image(xyz.double())
        s = BilinearSampler(pyramid.features[level], confidence=pyramid.confidences[level])
        M, _, c = s.sample_with_confidence(p2d[None].float())
        feats.append(torch.nn.functional.normalize(M[0, :, 0], dim=-1))
        confs.append(c[0])
    pts = QueryPoints(xyz, feats, confs, torch.arange(300), torch.zeros(300, dtype=torch.long))
    init = Pose.exp(torch.tensor([[0.05, -0.02, 0.1, 0.01, 0.005, -0.01]]))
    results = {}
    for runtime in ("torch", "auto"):
        model = model_with(weights, "torch")
        loc = Localizer(model, LocalizerConfig(device="cpu", cpu_runtime=runtime, iterations=(5, 5, 5), min_valid_points=5))
        results[runtime] = loc.localize(image, cam, pts, init)
        assert (model._compiled is not None) == (runtime == "auto")
    a, b = results["torch"], results["auto"]
    assert a.iterations == b.iterations and a.num_valid == b.num_valid
    torch.testing.assert_close(a.cam_from_world.t, b.cam_from_world.t, atol=1e-4, rtol=0)
    assert math.isclose(a.cost[0], b.cost[0], rel_tol=1e-3, abs_tol=1e-6)


@pytest.mark.skipif(resolve_cpu_runtime("auto") == "torch", reason="no CPU runtime installed")
def test_warm_up_builds_the_runtime_for_the_frame_size(weights):
    model = model_with(weights, "torch")
    loc = Localizer(model, LocalizerConfig(device="cpu"))
    compiled = model._compiled
    assert compiled is not None and compiled._onnx  # exported at start-up
    assert loc.warm_up(64, 48) > 0
    assert (1, 3, 48, 64) in [k[0] for k in compiled._sessions]


def test_precision_names_and_where_bf16_cannot_run(monkeypatch):
    with pytest.raises(ValueError, match="Unsupported cpu_precision"):
        NetworkConfig(cpu_precision="fp8")
    with pytest.raises(ValueError, match="Unsupported cpu_precision"):
        network_runtime.resolve_cpu_precision("fp16", "openvino")
    assert network_runtime.resolve_cpu_precision("f32", "openvino") == "f32"
    assert network_runtime.resolve_cpu_precision("auto", "torch") == "f32"
    assert network_runtime.resolve_cpu_precision("auto", "onnxruntime") == "f32"
    with pytest.raises(ValueError, match="needs the openvino CPU runtime"):
        network_runtime.resolve_cpu_precision("bf16", "onnxruntime")
    monkeypatch.setattr(network_runtime, "cpu_has_bf16", lambda: False)  # a processor without bf16 units
    assert network_runtime.resolve_cpu_precision("auto", "openvino") == "f32"
    with pytest.raises(ValueError, match="no bf16 units"):
        network_runtime.resolve_cpu_precision("bf16", "openvino")
    with pytest.raises(ValueError, match="needs the openvino|no bf16 units"):  # at start-up, not in a frame
        Localizer(PixLocModel(), LocalizerConfig(device="cpu", cpu_precision="bf16"))
    # auto's rule on a processor without bf16 units: int8 only with a checked int8 network, else f32
    assert network_runtime.resolve_cpu_precision("auto", "openvino", "checked") == "int8"
    assert network_runtime.resolve_cpu_precision("auto", "openvino", "unchecked") == "f32"
    assert network_runtime.resolve_cpu_precision("int8", "openvino", "unchecked") == "int8"  # asked for: runs
    with pytest.raises(ValueError, match="pixloc-ros quantize"):
        network_runtime.resolve_cpu_precision("int8", "openvino")  # no int8 network: what to run
    with pytest.raises(ValueError, match="needs the openvino CPU runtime"):
        network_runtime.resolve_cpu_precision("int8", "onnxruntime", "checked")
    monkeypatch.setattr(network_runtime, "cpu_has_bf16", lambda: True)
    assert network_runtime.resolve_cpu_precision("auto", "openvino") == "bf16"
    assert network_runtime.resolve_cpu_precision("auto", "openvino", "unchecked") == "bf16"
    assert network_runtime.resolve_cpu_precision("auto", "openvino", "checked") == "bf16"  # bf16 first
    assert network_runtime.resolve_cpu_precision("int8", "openvino", "checked") == "int8"
    with pytest.raises(ValueError, match="exactly when the precision is int8"):
        CompiledUNet(torch.nn.Identity(), "openvino", "int8")
    with pytest.raises(ValueError, match="f32 only"):
        CompiledUNet(torch.nn.Identity(), "onnxruntime", "bf16")


BF16 = pytest.mark.skipif(not (runtime_installed("openvino") and network_runtime.cpu_has_bf16()),
                          reason="no OpenVINO or no bf16 units on this processor")
BF16_TOLERANCE = 5e-2  # bf16 keeps 8 bits of mantissa: about 1 % of a feature (BENCHMARKS.md)


@BF16
def test_bf16_maps_are_close_to_f32_and_really_bf16(weights):
    image = torch.rand(1, 3, 45, 70, generator=torch.Generator().manual_seed(1))
    f32 = model_with(weights, "torch").extract(image)
    model = PixLocModel(config=NetworkConfig(cpu_runtime="openvino", cpu_precision="auto"))
    model.load_state_dict(weights)
    got = model.eval().extract(image)
    assert model._compiled.precision == "bf16"
    assert [f.dtype for f in got.features] == [torch.float32] * 3  # float32 out, like the fp16 network on CUDA
    difference = max_difference(got, f32)
    assert 1e-4 < difference < BF16_TOLERANCE  # not the f32 graph, and not far from it
    model.config.cpu_precision = "f32"  # switching back rebuilds the f32 graph
    assert max_difference(model.extract(image), f32) < TOLERANCE and model._compiled.precision == "f32"
