"""PixLoc network: official state-dict layout, forward shapes, outputs, wiring, damping."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pixloc_ros.core.engine.checkpoint import init_weights
from pixloc_ros.core.engine.network import STRIDES, FeaturePyramid, NetworkConfig, PixLocModel

# Convs per VGG block, from DESIGN.md ("PixLoc facts"), written out independently of the code.
VGG_CONVS = {"vgg16": (2, 2, 3, 3, 3), "vgg19": (2, 2, 4, 4, 4)}
VGG_WIDTHS = (64, 128, 256, 512, 512)


def expected_state_dict_shapes(encoder: str) -> dict[str, tuple[int, ...]]:
    """Every key and shape of the released checkpoints, as listed in DESIGN.md."""
    shapes: dict[str, tuple[int, ...]] = {}
    in_ch = 3
    for block, (n_convs, width) in enumerate(zip(VGG_CONVS[encoder], VGG_WIDTHS)):
        # Block 0 has convs at 0, 2; later blocks start with their max-pool: convs at 1, 3, 5, ...
        indices = [2 * i for i in range(n_convs)] if block == 0 else [2 * i + 1 for i in range(n_convs)]
        for index in indices:
            shapes[f"extractor.encoder.{block}.{index}.weight"] = (width, in_ch, 3, 3)
            shapes[f"extractor.encoder.{block}.{index}.bias"] = (width,)
            in_ch = width
    for i, (out, inp) in enumerate(zip((64, 64, 64, 32), (1024, 320, 192, 128))):
        shapes[f"extractor.decoder.{i}.layers.0.weight"] = (out, inp, 3, 3)
        for name in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"extractor.decoder.{i}.layers.1.{name}"] = (out,)
        shapes[f"extractor.decoder.{i}.layers.1.num_batches_tracked"] = ()
    for level, (out, inp) in enumerate(zip((32, 128, 128), (32, 64, 512))):
        shapes[f"extractor.adaptation.{level}.0.weight"] = (out, inp, 1, 1)
        shapes[f"extractor.adaptation.{level}.0.bias"] = (out,)
        shapes[f"extractor.uncertainty.{level}.0.weight"] = (1, inp, 1, 1)
        shapes[f"extractor.uncertainty.{level}.0.bias"] = (1,)
        shapes[f"optimizer.{level}.dampingnet.const"] = (6,)
    return shapes


@pytest.fixture(scope="module")
def model() -> PixLocModel:
    m = init_weights("vgg16", seed=3)
    # Non-trivial BatchNorm statistics, so a wrong BN wiring shows in the outputs.
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.copy_(torch.randn(mod.num_features, generator=g) * 0.1)
                mod.running_var.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
                mod.weight.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
                mod.bias.copy_(torch.randn(mod.num_features, generator=g) * 0.1)
    return m.eval()


@pytest.mark.parametrize("encoder", ["vgg16", "vgg19"])
def test_state_dict_keys_and_shapes_are_the_official_ones(encoder):
    state = PixLocModel(encoder).state_dict()
    expected = expected_state_dict_shapes(encoder)
    assert sorted(state) == sorted(expected)
    for key, shape in expected.items():
        assert tuple(state[key].shape) == shape, key


def test_unknown_encoder_is_rejected():
    with pytest.raises(ValueError, match="resnet50"):
        PixLocModel("resnet50")
    with pytest.raises(ValueError, match="pad_mode"):
        NetworkConfig(pad_mode="wrap")


@pytest.mark.parametrize("size", [(97, 131), (64, 96), (33, 17)])
def test_forward_shapes_cover_the_image(model, size):
    h, w = size
    out = model.extract(torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(0)))
    assert isinstance(out, FeaturePyramid) and out.image_size == (h, w)
    for level, (stride, dim) in enumerate(zip(STRIDES, (32, 128, 128))):
        hl, wl = math.ceil(h / stride), math.ceil(w / stride)
        assert out.features[level].shape == (2, dim, hl, wl)
        assert out.confidences[level].shape == (2, 1, hl, wl)
        assert out.features[level].dtype == torch.float32


def test_reference_cropping_mode_shapes(model):
    cropped = PixLocModel("vgg16", NetworkConfig(pad_mode=None))
    cropped.load_state_dict(model.state_dict())
    out = cropped.eval().extract(torch.rand(1, 3, 97, 131))
    # The reference floors at every pool: the maps cover the top-left 96 x 128 pixels.
    assert [tuple(f.shape[-2:]) for f in out.features] == [(96, 128), (24, 32), (6, 8)]
    with pytest.raises(ValueError, match="smaller than"):
        cropped.extract(torch.rand(1, 3, 15, 40))


def test_features_unit_norm_and_confidences_in_open_interval(model):
    out = model.extract(torch.rand(1, 3, 97, 131, generator=torch.Generator().manual_seed(1)))
    for feat, conf in zip(out.features, out.confidences):
        assert torch.allclose(feat.norm(dim=1), torch.ones(()), atol=1e-5)
        assert conf.min() > 0 and conf.max() < 1
        assert torch.isfinite(feat).all() and torch.isfinite(conf).all()


def _reference_forward(state, image, encoder):
    """DESIGN.md's description of the reference network, written with functional ops only."""
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x = (image - mean) / std
    skips = []
    for block, n_convs in enumerate(VGG_CONVS[encoder]):
        if block > 0:
            x = F.max_pool2d(x, 2, 2)
        for i in range(n_convs):
            index = 2 * i + (block > 0)
            x = F.relu(F.conv2d(x, state[f"extractor.encoder.{block}.{index}.weight"],
                                state[f"extractor.encoder.{block}.{index}.bias"], padding=1))
        skips.append(x)
    y, decoded = skips[-1], []
    for i in range(4):
        up = F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False)
        skip = skips[3 - i][..., :up.shape[-2], :up.shape[-1]]
        p = f"extractor.decoder.{i}.layers."
        z = F.conv2d(torch.cat([up, skip], 1), state[p + "0.weight"], padding=1)
        z = F.batch_norm(z, state[p + "1.running_mean"], state[p + "1.running_var"],
                         state[p + "1.weight"], state[p + "1.bias"], training=False, eps=1e-5)
        y = F.relu(z)
        decoded.append(y)  # strides 8, 4, 2, 1
    inputs = [decoded[3], decoded[1], skips[4]]  # levels at strides 1, 4, 16
    feats = [F.normalize(F.conv2d(x, state[f"extractor.adaptation.{l}.0.weight"],
                                  state[f"extractor.adaptation.{l}.0.bias"]), dim=1)
             for l, x in enumerate(inputs)]
    confs = [torch.sigmoid(-F.conv2d(x, state[f"extractor.uncertainty.{l}.0.weight"],
                                     state[f"extractor.uncertainty.{l}.0.bias"]))
             for l, x in enumerate(inputs)]
    return feats, confs


@pytest.mark.parametrize("pad_mode", [None, "replicate"])
def test_matches_functional_reference_at_odd_size(model, pad_mode):
    """Wiring check: same numbers as the spec, incl. skip cropping and bottom/right padding."""
    net = PixLocModel("vgg16", NetworkConfig(pad_mode=pad_mode))
    net.load_state_dict(model.state_dict())
    net.eval()
    image = torch.rand(1, 3, 41, 70, generator=torch.Generator().manual_seed(2))
    out = net.extract(image)
    ref_input = image if pad_mode is None else F.pad(image, (0, 10, 0, 7), mode="replicate")
    with torch.no_grad():
        feats, confs = _reference_forward(net.state_dict(), ref_input, "vgg16")
    for level, stride in enumerate(STRIDES):
        h, w = out.features[level].shape[-2:]
        if pad_mode is not None:
            assert (h, w) == (math.ceil(41 / stride), math.ceil(70 / stride))
        torch.testing.assert_close(out.features[level], feats[level][..., :h, :w], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(out.confidences[level], confs[level][..., :h, :w], atol=1e-5, rtol=1e-4)


def test_vgg19_forward_matches_functional_reference():
    net = init_weights("vgg19", seed=5)
    image = torch.rand(1, 3, 48, 64, generator=torch.Generator().manual_seed(3))
    out = net.extract(image)
    with torch.no_grad():
        feats, confs = _reference_forward(net.state_dict(), image, "vgg19")
    for level in range(3):
        torch.testing.assert_close(out.features[level], feats[level], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(out.confidences[level], confs[level], atol=1e-5, rtol=1e-4)


def test_uint8_numpy_input_equals_float_tensor(model):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(40, 56, 3), dtype=np.uint8)
    a = model.extract(rgb)
    b = model.extract(torch.from_numpy(rgb).permute(2, 0, 1).float() / 255.0)
    for fa, fb in zip(a.features + a.confidences, b.features + b.confidences):
        torch.testing.assert_close(fa, fb)
    with pytest.raises(ValueError, match="uint8"):
        model.extract(rgb.astype(np.float32))


def test_forward_is_differentiable_and_extract_outputs_can_enter_autograd(model):
    image = torch.rand(1, 3, 32, 48, generator=torch.Generator().manual_seed(4))
    model.zero_grad()
    out = model(image)
    (out.features[0].sum() + out.confidences[2].sum()).backward()
    assert model.extractor.encoder[0][0].weight.grad.abs().sum() > 0
    assert model.extractor.uncertainty[2][0].weight.grad.abs().sum() > 0
    # extract() uses no_grad (not inference_mode), so its maps can be sampled differentiably.
    fmap = model.extract(image).features[1]
    grid = torch.zeros(1, 1, 1, 2, requires_grad=True)
    F.grid_sample(fmap, grid, align_corners=False).sum().backward()
    assert grid.grad is not None


def test_damping_formula_and_order():
    net = PixLocModel("vgg16")
    thetas = np.array([[-3.0, 2.5, -1.0, 0.5, 0.0, 1.7],
                       [0.1, -0.2, 0.3, -0.4, 0.5, -0.6],
                       [4.0, -4.0, 2.0, -2.0, 1.0, -1.0]])
    with torch.no_grad():
        for level in range(3):
            net.optimizer[level].dampingnet.const.copy_(torch.from_numpy(thetas[level]))
    expected = 10.0 ** (-6.0 + 11.0 / (1.0 + np.exp(-thetas)))
    got = net.damping().detach().double().numpy()
    assert got.shape == (3, 6)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fp16_autocast_on_cuda_returns_float32(model):
    net = PixLocModel("vgg16").cuda().eval()
    net.load_state_dict(model.state_dict())
    image = torch.rand(1, 3, 97, 131, device="cuda")
    out = net.extract(image)
    net.config = NetworkConfig(fp16_on_cuda=False)
    ref = net.extract(image)
    for f, r in zip(out.features, ref.features):
        assert f.dtype == torch.float32
        assert (f * r).sum(1).mean() > 0.99  # cosine similarity of fp16 vs fp32 features
