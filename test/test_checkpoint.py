"""Checkpoints: official layout, safetensors, fingerprints, and refusal of bad or unsafe files."""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from pixloc_ros.core.engine import checkpoint as ckpt
from pixloc_ros.core.engine.checkpoint import (WeightsError, export_safetensors, init_weights, load_checkpoint,
    load_weights, save_official_checkpoint, weights_fingerprint)
from pixloc_ros.core.engine.profile import reference_profile
from pixloc_ros.core.engine.pickle_allowlist import checkpoint_safe_globals

THETAS = np.array([[-2.0, 1.5, -1.2, 0.4, 0.1, 1.1],
                   [0.3, -0.7, 2.2, -0.1, 0.0, -1.9],
                   [3.0, -3.0, 1.0, -1.0, 0.5, -0.5]], dtype=np.float32)


class MarkerPayload:
    """Unpickling this would create a marker file (what an attacker's code would do)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def model():
    # The released weights' formulation with their conf's pad (3): saved, the file is exactly
    # what the reference writes (no pixloc_ros section).
    m = init_weights("vgg16", seed=11, profile=reference_profile(3.0))
    with torch.no_grad():
        for level in range(3):
            m.optimizer[level].dampingnet.const.copy_(torch.from_numpy(THETAS[level]))
    return m


def _official_conf(encoder: str):
    """An OmegaConf conf built like the reference trainer does (yaml + command-line merge)."""
    base = OmegaConf.create(f"""
data: {{name: cmu, resize: 720, batch_size: 3, seed: 1}}
model:
  name: two_view_refiner
  duplicate_optimizer_per_scale: true
  extractor: {{name: unet, encoder: {encoder}, decoder: [64, 64, 64, 32], output_scales: [0, 2, 4],
              output_dim: [32, 128, 128], compute_uncertainty: true}}
  optimizer: {{name: learned_optimizer, pad: 3, lambda_: 0.01, learned_damping: true,
              damping: {{type: constant}}}}
train: {{seed: 0, lr: 1.0e-05, lr_scaling: [[100, [dampingnet.const]]], clip_grad: 1.0}}
""")
    return OmegaConf.merge(base, OmegaConf.from_dotlist(["train.epochs=200"]))


def _training_extras(model):
    params = [model.optimizer[0].dampingnet.const]
    opt = torch.optim.Adam(params, lr=1e-3)
    params[0].grad = torch.ones(6)
    opt.step()  # so the optimizer state holds tensors
    params[0].grad = None
    sched = torch.optim.lr_scheduler.MultiplicativeLR(opt, lambda it: 1.0)
    return dict(optimizer=opt.state_dict(), lr_scheduler=sched.state_dict(), epoch=17,
                losses={"total": 0.25, "reprojection_error": 1.5},
                eval={"loss/total": np.float64(0.2), "R_error": np.float32(0.7), "count": np.int64(3)})


@pytest.fixture(scope="module")
def official_file(tmp_path_factory, model):
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint_best.tar"
    extras = _training_extras(init_weights("vgg16", seed=0))
    save_official_checkpoint(model, path, _official_conf("vgg16"), **extras)
    return path


def test_official_layout_is_what_torch_save_wrote(official_file):
    # Read back with the plain allow-list approach DESIGN.md describes, independently of our loader.
    with torch.serialization.safe_globals(checkpoint_safe_globals()):
        raw = torch.load(official_file, weights_only=True)
    assert set(raw) == {"model", "conf", "optimizer", "lr_scheduler", "epoch", "losses", "eval"}
    assert OmegaConf.is_config(raw["conf"]) and set(raw["conf"]) == {"data", "model", "train"}
    assert raw["epoch"] == 17 and len(raw["optimizer"]["state"]) == 1


def test_official_checkpoint_loads_with_the_damping_put_in(official_file, model):
    loaded = load_checkpoint(official_file)
    assert loaded.file_format == "torch" and loaded.encoder == "vgg16" and loaded.epoch == 17
    assert loaded.conf["model"]["extractor"]["output_dim"] == [32, 128, 128]
    assert not loaded.model.training
    expected = 10.0 ** (-6.0 + 11.0 / (1.0 + np.exp(-THETAS.astype(np.float64))))
    np.testing.assert_allclose(loaded.model.damping().detach().double().numpy(), expected, rtol=1e-5)
    assert weights_fingerprint(loaded.model) == weights_fingerprint(model)


def test_encoder_from_conf_and_from_keys(tmp_path):
    vgg19 = init_weights("vgg19", seed=1)
    path = tmp_path / "megadepth.tar"
    save_official_checkpoint(vgg19, path, _official_conf("vgg19"))
    assert load_weights(path).encoder_name == "vgg19"
    # No conf at all (a bare state dict): inferred from the keys.
    bare = tmp_path / "bare.pth"
    torch.save(vgg19.state_dict(), bare)
    assert load_checkpoint(bare).encoder == "vgg19"
    # A conf that contradicts the weights is an error, not a guess.
    raw = {"model": vgg19.state_dict(), "conf": _official_conf("vgg16")}
    lying = tmp_path / "lying.tar"
    torch.save(raw, lying)
    with pytest.raises(WeightsError, match="vgg16"):
        load_weights(lying)
    with pytest.raises(ValueError, match="encoder"):
        save_official_checkpoint(vgg19, tmp_path / "x.tar", _official_conf("vgg16"))


def test_safetensors_round_trip_identical_outputs_and_fingerprint(tmp_path, official_file):
    model = load_weights(official_file)
    path = tmp_path / "w.safetensors"
    fingerprint = export_safetensors(model, path, metadata={"note": "test"})
    loaded = load_checkpoint(path)
    assert loaded.file_format == "safetensors"
    assert loaded.metadata["encoder"] == "vgg16" and loaded.metadata["format_version"] == "1"
    assert loaded.metadata["note"] == "test"
    assert fingerprint == weights_fingerprint(loaded.model) == weights_fingerprint(model)
    image = torch.rand(1, 3, 37, 45, generator=torch.Generator().manual_seed(0))
    a, b = model.extract(image), loaded.model.extract(image)
    for x, y in zip(a.features + a.confidences, b.features + b.confidences):
        assert torch.equal(x, y)
    torch.testing.assert_close(loaded.model.damping(), model.damping(), rtol=0, atol=0)


def test_half_export_is_smaller_and_close(tmp_path, model):
    full, half = tmp_path / "full.safetensors", tmp_path / "half.safetensors"
    export_safetensors(model, full)
    fp_half = export_safetensors(model, half, half=True)
    assert half.stat().st_size < 0.55 * full.stat().st_size
    loaded = load_weights(half)
    assert weights_fingerprint(loaded) == fp_half != weights_fingerprint(model)
    image = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    cos = (loaded.extract(image).features[0] * model.extract(image).features[0]).sum(1)
    assert cos.min() > 0.99


def test_fingerprint_is_sensitive_and_deterministic(model):
    assert weights_fingerprint(init_weights("vgg16", seed=11)) == weights_fingerprint(init_weights("vgg16", seed=11))
    assert weights_fingerprint(init_weights("vgg16", seed=11)) != weights_fingerprint(init_weights("vgg16", seed=12))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    before = weights_fingerprint(state)
    state["extractor.adaptation.1.0.bias"][5] += 1e-6
    assert weights_fingerprint(state) != before
    assert len(before) == 64 and int(before, 16) >= 0


def test_missing_unexpected_and_misshaped_keys_are_listed(tmp_path, model):
    state = dict(model.state_dict())
    del state["extractor.decoder.2.layers.1.running_var"]
    state["extractor.head.extra.weight"] = torch.zeros(3)
    path = tmp_path / "bad_keys.tar"
    raw = {"model": state, "conf": OmegaConf.create(ckpt.default_official_conf("vgg16"))}
    torch.save(raw, path)
    with pytest.raises(WeightsError) as err:
        load_weights(path)
    message = str(err.value)
    assert "extractor.decoder.2.layers.1.running_var" in message and "missing" in message
    assert "extractor.head.extra.weight" in message and "unexpected" in message
    assert str(path) in message

    state = dict(model.state_dict())
    state["extractor.adaptation.0.0.weight"] = torch.zeros(16, 32, 1, 1)
    torch.save({"model": state}, path)
    with pytest.raises(WeightsError, match=r"adaptation\.0\.0\.weight \(16, 32, 1, 1\)"):
        load_weights(path)


@pytest.mark.parametrize("container", ["zip", "raw_pickle", "in_conf"])
def test_malicious_pickle_is_refused_and_never_executed(tmp_path, model, container):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.tar"
    if container == "zip":
        torch.save({"model": model.state_dict(), "conf": MarkerPayload(marker)}, path)
    elif container == "in_conf":
        torch.save({"model": {"a": torch.zeros(1)}, "eval": {"x": [MarkerPayload(marker)]}}, path)
    else:
        path.write_bytes(pickle.dumps({"model": MarkerPayload(marker)}, protocol=2))
    with pytest.raises(WeightsError, match="refused"):
        load_weights(path)
    assert not marker.exists()


def test_truncated_and_garbage_files_are_refused(tmp_path, official_file, model):
    data = official_file.read_bytes()
    for name, blob in [("trunc.tar", data[: len(data) // 2]), ("head.tar", data[:100]),
                       ("empty.tar", b""), ("noise.tar", np.random.default_rng(0).bytes(5000)),
                       ("text.pth", b"not a checkpoint\n")]:
        path = tmp_path / name
        path.write_bytes(blob)
        with pytest.raises(WeightsError, match=name):
            load_weights(path)
    st = tmp_path / "w.safetensors"
    export_safetensors(model, st)
    blob = st.read_bytes()
    (tmp_path / "trunc.safetensors").write_bytes(blob[: len(blob) - 1000])
    with pytest.raises(WeightsError, match="trunc.safetensors"):
        load_weights(tmp_path / "trunc.safetensors")
    flipped = bytearray(blob)
    flipped[-5] ^= 0xFF  # inside the last tensor's data: only the stored fingerprint notices
    (tmp_path / "flip.safetensors").write_bytes(bytes(flipped))
    with pytest.raises(WeightsError, match="fingerprint"):
        load_weights(tmp_path / "flip.safetensors")
    with pytest.raises(WeightsError, match="no such"):
        load_weights(tmp_path / "missing.tar")
    with pytest.raises(WeightsError, match="directory"):
        load_weights(tmp_path)
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(WeightsError, match="not a PixLoc checkpoint"):
        load_weights(tmp_path / "list.pth")


def test_writes_are_atomic_and_leave_no_temporary_files(tmp_path, model):
    save_official_checkpoint(model, tmp_path / "a.tar")
    export_safetensors(model, tmp_path / "a.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.safetensors", "a.tar"]


def test_loader_never_disables_weights_only():
    source = Path(ckpt.__file__).read_text()
    assert "weights_only=False" not in source.replace(" ", "")
