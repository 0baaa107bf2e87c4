"""scripts/check_gpu_kernels.py: every Triton kernel variant the engine launches compiles for the
five GPU targets the project supports (sm_80 A100, sm_86 RTX 30xx, sm_87 Jetson Orin, sm_89 RTX
40xx / L4, sm_90 H100) with no spill bytes, on this GPU-less machine (Triton's ahead-of-time
compiler and ptxas); and the check really fails on a kernel that reads a non-constexpr global
(which Triton's interpreter runs without complaint) and on a kernel that spills.

One run of the script covers all five targets (about 15 s cold on 2 cores, BENCHMARKS.md); the
per-target tests read its JSON lines.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "check_gpu_kernels.py"
SAMPLES = Path(__file__).resolve().parent / "gpu_kernel_samples.py"
ARCHS = (80, 86, 87, 89, 90)


def run_check(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, list[dict]]:
    out = tmp_path / "rows.jsonl"
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run([sys.executable, str(SCRIPT), *args, "--jsonl", str(out), "--jobs", "2"],
                          capture_output=True, text=True, env=env, timeout=600)
    rows = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    return proc, rows


@pytest.fixture(scope="module")
def engine_report(tmp_path_factory):
    return run_check(tmp_path_factory.mktemp("gpu_kernels"), "--arch", "all")


def test_the_check_passes_for_all_targets(engine_report):
    proc, rows = engine_report
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert len(rows) == len(ARCHS) * 8 and all(r["ok"] for r in rows)


@pytest.mark.parametrize("arch", ARCHS)
def test_every_engine_variant_compiles_without_spills(engine_report, arch):
    from pixloc_ros.core.engine.lm.variants import kernel_variants

    _, rows = engine_report
    mine = {r["kernel"]: r for r in rows if r["arch"] == arch}
    expected = {v.name for v in kernel_variants((32, 128))}
    assert set(mine) == expected  # both gradients, both stopping rules, per-point outputs, 32 / 128 channels
    for name, r in mine.items():
        assert r["error"] == "", f"sm_{arch} {name}: {r['error']}"
        assert r["spill_store_bytes"] == 0 and r["spill_load_bytes"] == 0, f"sm_{arch} {name} spills: {r}"
        assert 0 < r["registers"] <= 255 and r["shared_bytes"] >= 0
        assert r["target"].startswith(f"sm_{arch}")


def test_the_check_fails_on_a_plain_global_and_on_spills(tmp_path):
    """The sample kernels: a plain float global, the same as tl.constexpr, a spilling tile."""
    proc, rows = run_check(tmp_path, "--arch", "90", "--variants", f"{SAMPLES}:variants")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    by_name = {r["kernel"]: r for r in rows}
    assert "Cannot access global variable SCALE" in by_name["plain_global"]["error"]
    assert "FAIL sm_90 plain_global" in proc.stdout
    assert by_name["constexpr_global"]["ok"] and by_name["constexpr_global"]["registers"] > 0
    spilling = by_name["spilling"]
    assert spilling["error"] == "" and spilling["spill_store_bytes"] > 0 and not spilling["ok"]


def test_the_interpreter_does_not_see_the_plain_global():
    """Why the check exists: Triton's interpreter (these tests' mode without a GPU) runs the kernel."""
    import torch
    from triton.runtime.interpreter import InterpretedFunction

    sys.path.insert(0, str(SAMPLES.parent))
    try:
        import gpu_kernel_samples as samples
    finally:
        sys.path.remove(str(SAMPLES.parent))
    if not isinstance(samples.plain_global_kernel, InterpretedFunction):
        pytest.skip("TRITON_INTERPRET is off in this process (a GPU machine)")
    x = torch.arange(5.0)
    samples.plain_global_kernel[(1,)](x, 5, BLOCK=128)
    assert x.tolist() == [0.0, 2.0, 4.0, 6.0, 8.0]
