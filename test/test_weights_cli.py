"""``pixloc-ros weights info / export / init``, in-process and as a real subprocess."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pixloc_ros.cli import main
from pixloc_ros.core.engine.checkpoint import (init_weights, load_checkpoint, save_official_checkpoint,
    weights_fingerprint)

THETAS = np.array([[-4.0, 3.0, -2.0, 1.0, 0.5, 2.5],
                   [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
                   [1.0, -1.0, 2.0, -2.0, 3.0, -3.0]])


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    model = init_weights("vgg16", seed=4)
    with torch.no_grad():
        for level in range(3):
            model.optimizer[level].dampingnet.const.copy_(torch.from_numpy(THETAS[level]))
    path = tmp_path_factory.mktemp("cli") / "checkpoint_best.tar"
    save_official_checkpoint(model, path, epoch=9)
    return path


def _expected_damping():
    return 10.0 ** (-6.0 + 11.0 / (1.0 + np.exp(-THETAS)))


def test_info_json(checkpoint, capsys):
    assert main(["weights", "info", str(checkpoint), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["encoder"] == "vgg16"
    assert info["output_dims"] == [32, 128, 128]
    assert info["file_format"] == "torch" and info["epoch"] == 9
    np.testing.assert_allclose(np.array(info["damping"]), _expected_damping(), rtol=1e-5)
    model = load_checkpoint(checkpoint).model
    assert info["fingerprint"] == weights_fingerprint(model)
    assert info["num_parameters"] == sum(p.numel() for p in model.parameters())


def test_info_text_shows_damping(checkpoint, capsys):
    assert main(["weights", "info", str(checkpoint)]) == 0
    out = capsys.readouterr().out
    assert "vgg16" in out and "level 2" in out
    level0 = next(line for line in out.splitlines() if line.strip().startswith("level 0:"))
    values = [float(v) for v in level0.split(":", 1)[1].split()]
    np.testing.assert_allclose(values, _expected_damping()[0], rtol=1e-3)  # printed with 4 digits


def test_export_and_init(tmp_path, checkpoint, capsys):
    out = tmp_path / "w.safetensors"
    assert main(["weights", "export", str(checkpoint), "--out", str(out)]) == 0
    assert main(["weights", "export", str(checkpoint), "--out", str(tmp_path / "h.safetensors"), "--half"]) == 0
    capsys.readouterr()
    assert main(["weights", "info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["file_format"] == "safetensors"
    assert info["fingerprint"] == weights_fingerprint(load_checkpoint(checkpoint).model)

    assert main(["weights", "init", "--out", str(tmp_path / "r.tar"), "--encoder", "vgg19", "--seed", "3"]) == 0
    assert main(["weights", "init", "--out", str(tmp_path / "r.safetensors"), "--encoder", "vgg19", "--seed", "3"]) == 0
    a, b = load_checkpoint(tmp_path / "r.tar"), load_checkpoint(tmp_path / "r.safetensors")
    assert a.encoder == b.encoder == "vgg19"
    assert a.file_format == "torch" and b.file_format == "safetensors"
    assert weights_fingerprint(a.model) == weights_fingerprint(b.model) == weights_fingerprint(init_weights("vgg19", 3))


def test_errors_are_one_line_and_nonzero(tmp_path, capsys):
    bad = tmp_path / "bad.tar"
    bad.write_bytes(b"\x00" * 64)
    assert main(["weights", "info", str(bad)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bad.tar" in err
    assert main(["weights", "info", str(tmp_path / "absent.tar")]) == 1
    assert "no such" in capsys.readouterr().err
    assert main(["weights", "export", str(bad), "--out", str(tmp_path / "x.bin")]) == 1
    assert ".safetensors" in capsys.readouterr().err


def test_info_as_a_real_subprocess(checkpoint):
    exe = Path(sys.executable).with_name("pixloc-ros")
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "pixloc_ros.cli"]
    done = subprocess.run(command + ["weights", "info", str(checkpoint), "--json"],
                          capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["encoder"] == "vgg16" and len(info["damping"]) == 3
    np.testing.assert_allclose(np.array(info["damping"]), _expected_damping(), rtol=1e-5)
    bad = subprocess.run(command + ["weights", "info", str(checkpoint) + ".missing"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "no such" in bad.stderr
