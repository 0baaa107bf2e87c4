"""``pixloc-ros bench``: runs end to end on the CPU and reports every stage."""
from __future__ import annotations

import json

import pytest
import torch

from pixloc_ros.cli import main


@pytest.fixture(autouse=True)
def restore_threads():
    """``--threads`` changes torch's process-wide setting: put it back for the other tests."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def test_bench_json_on_cpu(capsys):
    status = main(["bench", "--device", "cpu", "--height", "64", "--width", "96", "--points", "200",
                   "--hypotheses", "2", "--iters", "3", "2", "1", "--repeats", "2", "--warmup", "1",
                   "--threads", "1", "--json"])
    assert status == 0
    out = json.loads(capsys.readouterr().out)
    assert out["device"] == "cpu" and out["image"] == [96, 64] and out["hypotheses"] == 2
    # without --early-stop every level runs all its iterations
    assert out["iterations_run_finest_first"] == [3, 2, 1]
    assert set(out["stages"]) == {"network", "lm_level2", "lm_level1", "lm_level0", "lm_total", "total"}
    for name, s in out["stages"].items():
        assert 0 < s["median_ms"] <= s["p90_ms"] <= s["max_ms"], name
    assert out["stages"]["total"]["median_ms"] >= out["stages"]["network"]["median_ms"]
    assert sum(out["outcomes"].values()) == 2


def test_bench_text_output(capsys):
    assert main(["bench", "--device", "cpu", "--height", "48", "--width", "64", "--points", "50",
                 "--iters", "1", "1", "1", "--repeats", "1", "--warmup", "0", "--threads", "1"]) == 0
    text = capsys.readouterr().out
    assert "median ms" in text and "lm_level0" in text and "network" in text


def test_bench_reports_runtime_lm_path_profile_and_many_hypotheses(capsys):
    status = main(["bench", "--device", "cpu", "--height", "64", "--width", "96", "--points", "100",
                   "--hypotheses", "64", "--iters", "1", "1", "1", "--repeats", "1", "--warmup", "0",
                   "--threads", "1", "--network-runtime", "torch", "--lm-path", "torch",
                   "--profile", "reference", "--json"])
    assert status == 0
    out = json.loads(capsys.readouterr().out)
    assert out["hypotheses"] == 64 and out["lm_path"] == "torch" and out["network_runtime"] == "torch"
    assert (out["profile"], out["gradient"], out["stopping"]) == ("reference", "central", "reference")


def test_bench_refuses_a_runtime_that_is_not_installed(capsys, monkeypatch):
    from pixloc_ros.core.engine import network_runtime
    monkeypatch.setattr(network_runtime, "runtime_installed", lambda name: name == "torch")
    assert main(["bench", "--device", "cpu", "--network-runtime", "openvino", "--repeats", "1"]) == 1
    assert "not installed" in capsys.readouterr().err


def test_bench_reports_the_network_precision_and_refuses_bf16_without_openvino(capsys, monkeypatch):
    status = main(["bench", "--device", "cpu", "--height", "32", "--width", "48", "--points", "50",
                   "--iters", "1", "1", "1", "--repeats", "1", "--warmup", "0", "--threads", "1",
                   "--network-runtime", "torch", "--lm-path", "torch", "--json"])
    assert status == 0 and json.loads(capsys.readouterr().out)["network_dtype"] == "fp32"
    assert main(["bench", "--device", "cpu", "--network-runtime", "torch", "--network-precision", "bf16",
                 "--repeats", "1"]) == 1
    assert "needs the openvino CPU runtime" in capsys.readouterr().err


def test_bench_reports_the_lm_path_that_ran(capsys, monkeypatch):
    """--lm-path fused where the fused kernels cannot run (a CPU without Triton's interpreter): the
    torch loop, with the fallback's reason in the report and one warning on stderr. (The fused
    path itself through the localizer: test_lm_guard.py.)"""
    pytest.importorskip("triton")
    from pixloc_ros.core.engine.lm import fused as fused_lm

    if torch.cuda.is_available():
        pytest.skip("CUDA runs the fused kernels")
    monkeypatch.setattr(fused_lm, "interpreted", lambda: False)
    status = main(["bench", "--device", "cpu", "--height", "48", "--width", "64", "--points", "40",
                   "--hypotheses", "2", "--iters", "1", "1", "1", "--repeats", "1", "--warmup", "0",
                   "--threads", "1", "--network-runtime", "torch", "--lm-path", "fused", "--json"])
    assert status == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert (out["lm_path_requested"], out["lm_path"]) == ("fused", "torch") and "unavailable" in out["lm_fallback"]
    assert captured.err.count("fused Triton kernels failed") == 1


def test_bench_point_bucket_default_is_the_engine_default():
    from pixloc_ros.commands.bench import LM_DEFAULT_POINT_BUCKET
    from pixloc_ros.core.engine.lm.config import LMConfig

    assert LM_DEFAULT_POINT_BUCKET == LMConfig().point_bucket
