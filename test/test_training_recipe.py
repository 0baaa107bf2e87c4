"""The parts of the training recipe that make the confidences learn (issue 27): the confidence
heads' initialisation, BatchNorm statistics estimated on the map's images, the heads' own
parameter group and learning rate, several pairs per step, the confidence spread and a fixed
validation set's loss in metrics.jsonl, CPU bf16 autocast, and several maps at once.

Cheap: the tiny 128x96 map of test_training (its fixture), a few steps.
"""
from __future__ import annotations

import argparse
import copy
import json
import math

import numpy as np
import pytest
import torch

from pixloc_ros.commands.train import _sources
from pixloc_ros.core import training
from pixloc_ros.core.engine.checkpoint import init_confidence_heads, init_weights
from pixloc_ros.core.engine.network_runtime import cpu_flags_have_bf16
from pixloc_ros.core.maps.colmap_io import read_model
from test_training import FixedPairs, _pair_config, _train_config, single_thread, tiny_map  # noqa: F401 (fixtures)


def _street_images(tiny_map, count=3):
    colmap, images, _ = tiny_map
    sampler = training.PairSampler(read_model(colmap), images, _pair_config())
    return sampler.map_images(count, np.random.default_rng(0))


def _confidences(model, images):
    batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        return model(batch).confidences


# ---- initialisation ------------------------------------------------------------------------

def test_reference_head_init_is_pytorchs_default_and_spreads_the_confidences(tiny_map):
    ref = init_weights("vgg16", seed=0)
    small = init_weights("vgg16", seed=0, head_init="small")
    # Only the heads differ: the encoder and decoder draws are those of every earlier init.
    for (k, a), (_, b) in zip(ref.state_dict().items(), small.state_dict().items()):
        if "uncertainty" not in k:
            torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)
    for head, fan_in in zip(ref.extractor.uncertainty, (32, 64, 512)):
        w, b = head[0].weight, head[0].bias
        bound = 1 / math.sqrt(fan_in)
        assert float(w.detach().abs().max()) <= bound and float(b.detach().abs().max()) <= bound
        assert float(w.detach().std()) > 0.45 * bound  # uniform: std = bound / sqrt(3) = 0.58 bound
    for head in small.extractor.uncertainty:
        assert float(head[0].weight.detach().std()) < 0.02 and float(head[0].bias.detach().abs().max()) == 0
    # On a street image the reference init's confidences vary more over the pixels: several times
    # at the decoder's levels, about twice at the coarse one (512 inputs: bound 0.044 vs std 0.01).
    images = _street_images(tiny_map)
    for level, (c_ref, c_small) in enumerate(zip(_confidences(ref, images), _confidences(small, images))):
        factor = 3.0 if level < 2 else 1.4
        assert float(c_ref.std()) > factor * float(c_small.std()), (level, float(c_ref.std()), float(c_small.std()))
    with pytest.raises(ValueError, match="Unsupported head initialisation"):
        init_confidence_heads(ref, torch.Generator(), "zeros")


# ---- BatchNorm statistics ------------------------------------------------------------------

def _bn_inputs(model, images):
    """Each BatchNorm's input over ``images`` (list per layer of (C, N) float64)."""
    seen = []
    hooks = [m.register_forward_hook(lambda _m, i, _o: seen.append(i[0].detach().double()))
             for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        model(batch)
    for h in hooks:
        h.remove()
    return [x.transpose(0, 1).reshape(x.shape[1], -1) for x in seen]


def test_estimated_batchnorm_statistics_normalise_the_decoder(tiny_map):
    images = _street_images(tiny_map)
    model = init_weights("vgg16", seed=0)
    before = _bn_inputs(model, images)
    # fresh statistics (0, 1) do not normalise: the decoder's conv outputs are far from unit variance
    assert max(abs(float(x.var(1).mean()) - 1) for x in before) > 0.5
    estimate = training.estimate_batchnorm_statistics(model, images, batch_size=2)
    assert estimate.images == 3 and len(estimate.names) == 4 and not model.training
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for bn, x in zip(bns, _bn_inputs(model, images)):
        normalised = (x - bn.running_mean.double()[:, None]) / torch.sqrt(bn.running_var.double()[:, None] + bn.eps)
        np.testing.assert_allclose(normalised.mean(1).numpy(), 0, atol=1e-3)
        live = bn.running_var > 1e-6  # channels a ReLU left at zero everywhere stay zero
        np.testing.assert_allclose(normalised.var(1, unbiased=False)[live].numpy(), 1, rtol=1e-2)
    # With the decoder normalised, the heads see features that vary over the image: the fine and
    # middle confidences of a fresh init spread (std over the pixels) from the first step.
    fine, middle, _ = _confidences(model, images)
    assert float(fine.std()) > 0.04 and float(middle.std()) > 0.04, (float(fine.std()), float(middle.std()))


def test_estimate_preserving_the_function_keeps_the_outputs(tiny_map):
    images = _street_images(tiny_map)
    model = init_weights("vgg16", seed=0)
    batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        before = model(batch)
    old_var = [m.running_var.clone() for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    training.estimate_batchnorm_statistics(model, images, preserve_function=True)
    new_var = [m.running_var for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert any(float((a - b).abs().max()) > 0.1 for a, b in zip(old_var, new_var))
    with torch.no_grad():
        after = model(batch)
    for a, b in zip(before.features + before.confidences, after.features + after.confidences):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


# ---- the optimizer ---------------------------------------------------------------------------

def test_heads_have_their_own_group_and_learning_rate(tiny_map):
    colmap, images, _ = tiny_map
    pair = training.PairSampler(read_model(colmap), images, _pair_config()).sample(np.random.default_rng(0))
    model = init_weights("vgg16", seed=0)
    config = _train_config(lr=1e-5, head_lr=1e-2, freeze_encoder_blocks=4, grad_clip=0.0)
    training.freeze_encoder(model, 4)
    optimizer = training.make_optimizer(model, config)
    groups = {g["name"]: g for g in optimizer.param_groups}
    assert set(groups) == {"network", "heads", "damping"}
    assert (groups["network"]["lr"], groups["heads"]["lr"], groups["damping"]["lr"]) == (1e-5, 1e-2, 1e-5 * 100)
    ids = [id(p) for g in optimizer.param_groups for p in g["params"]]
    trainable = [id(p) for p in model.parameters() if p.requires_grad]
    assert sorted(ids) == sorted(trainable) and len(set(ids)) == len(ids)  # each trainable parameter once
    assert not any(id(p) in ids for p in model.extractor.encoder[0].parameters())  # frozen: in no group
    # One Adam step moves each parameter by about its group's lr (first step: lr x sign of the gradient).
    before = copy.deepcopy(model)
    training.set_train_mode(model, True)
    training.pair_forward(model, pair, config, torch.device("cpu")).loss.backward()
    optimizer.step()
    moved_heads = max(float((a - b).abs().max()) for a, b in
                      zip(model.extractor.uncertainty.parameters(), before.extractor.uncertainty.parameters()))
    moved_decoder = float((model.extractor.decoder[3].layers[0].weight - before.extractor.decoder[3].layers[0].weight).abs().max())
    assert 0.5e-2 < moved_heads <= 1.01e-2
    assert 0 < moved_decoder <= 1.01e-5


def test_cpu_bf16_switch_and_its_numerics(tiny_map):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert training.resolve_cpu_bf16("on", cpu) and not training.resolve_cpu_bf16("off", cpu)
    assert not training.resolve_cpu_bf16("on", cuda)  # CUDA has its own fp16 autocast
    assert training.resolve_cpu_bf16("auto", cpu) == cpu_flags_have_bf16()
    with pytest.raises(ValueError, match="Unsupported cpu_bf16"):
        training.resolve_cpu_bf16("yes", cpu)
    images = _street_images(tiny_map, 1)
    model = init_weights("vgg16", seed=0)
    f32 = _confidences(model, images), model.extract(images[0]).features
    model.config.bf16_on_cpu = True
    bf16 = _confidences(model, images), model.extract(images[0]).features
    for a, b in zip(f32[0] + f32[1], bf16[0] + bf16[1]):
        assert b.dtype == torch.float32
        assert float((a - b).abs().max()) < 0.05
    assert any(float((a - b).abs().max()) > 0 for a, b in zip(f32[1], bf16[1]))  # it did run in bf16


# ---- the loop: several pairs per step, validation and confidence spread in metrics.jsonl -----

def test_loop_records_validation_loss_and_confidence_spread(tiny_map, tmp_path):
    colmap, images, _ = tiny_map
    sampler = training.PairSampler(read_model(colmap), images, _pair_config(init_noise_m=0.3, init_noise_deg=2.0))
    rng = np.random.default_rng(1)
    val = [sampler.sample(rng) for _ in range(2)]
    model = init_weights("vgg16", seed=0, head_init="small")
    heads_before = [p.clone() for p in model.extractor.uncertainty.parameters()]
    config = _train_config(steps=2, batch_size=3, val_every=2, reset_heads="reference", cpu_bf16="off")
    out = tmp_path / "run"
    training.train(model, sampler, config, out, validation_pairs=val, log=lambda msg: None)
    lines = [json.loads(line) for line in (out / training.METRICS_NAME).read_text().splitlines()]
    setup = lines[0]
    assert setup["type"] == "setup" and setup["reset_heads"] == "reference" and not setup["cpu_bf16"]
    # the heads were re-initialised (reference) before training: far from the small init
    assert float(model.extractor.uncertainty[0][0].weight.std()) > 5 * float(heads_before[0].std())
    trains = [r for r in lines if r["type"] == "train"]
    assert [r["pairs"] for r in trains] == [3, 3]
    vals = [r for r in lines if r["type"] == "val"]
    assert [r["step"] for r in vals] == [0, 2] and all(r["val_pairs"] == 2 for r in vals)
    for r in vals + trains:
        spread = r["val_confidence"] if r["type"] == "val" else r["confidence"]
        assert len(spread) == 3
        for level in spread:
            assert 0 <= level["p5"] <= level["p95"] <= 1 and level["std"] >= 0
    assert all(math.isfinite(r["val_loss"]) for r in vals)


def test_confidence_spread_matches_numpy():
    c = torch.linspace(0, 1, 101).reshape(1, 1, 1, 101)
    std, p5, p95 = training.confidence_spread(c)
    assert std == pytest.approx(float(np.std(c.numpy(), ddof=1)), rel=1e-5)
    assert (p5, p95) == (pytest.approx(0.05), pytest.approx(0.95))
    assert training.mean_spread([[(0.1, 0.2, 0.3)], [(0.3, 0.4, 0.5)]]) == [
        {"std": pytest.approx(0.2), "p5": pytest.approx(0.3), "p95": pytest.approx(0.4)}]


# ---- several maps ----------------------------------------------------------------------------

def test_multi_sampler_draws_from_every_map(tiny_map):
    colmap, images, render_fn = tiny_map
    sfm = read_model(colmap)
    a = training.PairSampler(sfm, images, _pair_config(), render_fn=render_fn)
    b = training.PairSampler(sfm, images, _pair_config(conditions=("dusk",), virtual_fraction=1.0), render_fn=render_fn)
    multi = training.MultiSampler([a, b])
    rng = np.random.default_rng(0)
    kinds = {multi.sample(rng).kind for _ in range(8)}
    assert kinds == {"covisible", "virtual"}  # b draws only virtual pairs, a mostly covisible ones
    assert len(multi.pairs) == 2 * len(a.pairs)
    assert len(multi.map_images(4, rng)) == 4
    c = training.PairSampler(sfm, images, _pair_config(image_size=(64, 48)))
    with pytest.raises(ValueError, match="different image sizes"):
        training.MultiSampler([a, c])


def test_train_command_sources():
    def ns(**kw):
        base = dict(world=[], colmap=None, images=None, synth_world=None)
        base.update(kw)
        return argparse.Namespace(**base)

    assert _sources(ns(world=["w1", "w2"])) == [("w1/sfm", "w1/mapping/images", "w1"),
                                                  ("w2/sfm", "w2/mapping/images", "w2")]
    assert _sources(ns(colmap="c", images="i")) == [("c", "i", None)]
    with pytest.raises(ValueError, match="either --world"):
        _sources(ns(world=["w1"], colmap="c"))
    with pytest.raises(ValueError, match="required"):
        _sources(ns(colmap="c"))
