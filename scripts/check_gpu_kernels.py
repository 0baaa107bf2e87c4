#!/usr/bin/env python3
"""Compile every Triton kernel variant of pixloc_ros for real NVIDIA GPU targets, on a machine
without a GPU, and report per kernel and variant the registers, shared memory, stack frame and
spill bytes that ptxas reports.

    scripts/check_gpu_kernels.py --arch 90 [--arch 87 ...]    (or --arch all: 80 86 87 89 90)
        [--channels 32 128] [--jobs N] [--jsonl FILE] [--variants FILE.py:FUNCTION]

Targets: 80 A100, 86 RTX 30xx, 87 Jetson Orin, 89 RTX 40xx / L4, 90 H100 (sm_90a). The variants
are what ``core.engine.lm.fused`` launches (``lm.variants.kernel_variants``: both image gradients, with and
without per-point outputs, both stopping rules, 32 and 128 channels); ``--variants`` checks
another list (a function returning objects with ``kernel``, ``name``, ``signature``,
``constexprs``, ``aligned``, ``num_warps``). Compiling uses Triton's ahead-of-time path
(``triton.compile(ASTSource(...), target=GPUTarget("cuda", arch, 32))``), which needs no GPU;
``TRITON_INTERPRET=1`` proves nothing about a GPU (a kernel reading a non-constexpr global runs
there and fails to compile here). The figures come from the ptxas run that builds the binary
(Triton's own, its log captured), or from the same ptxas with Triton's flags when Triton's cache
already held the binary.

Exit status 0 when every variant compiles for every target without spilling; 1 otherwise (each
failure on its own line); 2 for a usage error. ``--jsonl`` writes one JSON object per row.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ARCHS = (80, 86, 87, 89, 90)
_VARIANTS: list = []  # set before the worker processes fork


@dataclass
class Row:
    """One kernel variant compiled for one target."""

    arch: int
    kernel: str
    target: str = ""  # ptxas target, e.g. sm_90a
    registers: int = -1
    shared_bytes: int = -1
    stack_bytes: int = -1  # the entry function's stack frame (local arrays and spills)
    spill_store_bytes: int = -1  # summed over the functions in the binary
    spill_load_bytes: int = -1
    seconds: float = 0.0
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and self.spill_store_bytes == 0 and self.spill_load_bytes == 0


def parse_ptxas_log(log: str, entry: str) -> dict:
    """Registers, stack and spills from a ``ptxas -v`` log; spills are summed over every function
    (helpers such as libdevice's trig slow path included), registers and stack are the entry's."""
    out = {"registers": -1, "stack_bytes": -1, "spill_store_bytes": 0, "spill_load_bytes": 0}
    current = None
    for line in log.splitlines():
        m = re.search(r"Function properties for (\S+)", line)
        if m:
            current = m.group(1)
            continue
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m:
            out["spill_store_bytes"] += int(m.group(2))
            out["spill_load_bytes"] += int(m.group(3))
            if current == entry:
                out["stack_bytes"] = int(m.group(1))
            continue
        m = re.search(r"Compiling entry function '([^']+)'", line)
        if m:
            current = m.group(1)
            continue
        m = re.search(r"Used (\d+) registers", line)
        if m and current == entry:
            out["registers"] = int(m.group(1))
    return out


def _run_ptxas(ptx: str, arch: int) -> str:
    """``ptxas -v`` with the binary and flags Triton uses for ``arch`` (for a cached compile)."""
    from triton.backends.nvidia.compiler import get_ptxas, sm_arch_from_capability

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "k.ptx"
        src.write_text(ptx)
        cmd = [get_ptxas(arch).path, "-lineinfo", "-v", "--regAllocOptLevel=2",
               f"--gpu-name={sm_arch_from_capability(arch)}", str(src), "-o", str(Path(tmp) / "k.o")]
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stderr


def compile_one(task: tuple[int, int]) -> Row:
    """Compile variant ``task[1]`` of ``_VARIANTS`` for sm_``task[0]``."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    arch, index = task
    v = _VARIANTS[index]
    row = Row(arch, v.name)
    start = time.perf_counter()
    try:
        attrs = {(v.kernel.arg_names.index(n),): [["tt.divisibility", 16]] for n in v.aligned}
        src = ASTSource(fn=v.kernel, signature=v.signature, constexprs=v.constexprs, attrs=attrs)
        log = io.StringIO()
        triton.knobs.nvidia.dump_ptxas_log = True  # Triton prints its ptxas log to stdout
        with contextlib.redirect_stdout(log):
            compiled = triton.compile(src, target=GPUTarget("cuda", arch, 32), options={"num_warps": v.num_warps})
        text = log.getvalue()
        ptx = compiled.asm["ptx"]
        row.target = re.search(r"^\.target\s+(\S+)", ptx, re.M).group(1)
        if "Used" not in text:  # a cache hit: no ptxas ran
            text = _run_ptxas(ptx, arch)
        row.shared_bytes = int(compiled.metadata.shared)
        for key, value in parse_ptxas_log(text, compiled.metadata.name).items():
            setattr(row, key, value)
        if row.registers < 0:
            row.error = "no register count in the ptxas log"
    except Exception as err:  # CompilationError, ptxas failures: reported, never raised
        first = str(err).strip().splitlines()
        detail = next((line for line in first if "Error" in line or "error" in line), first[0] if first else "")
        row.error = f"{type(err).__name__}: {detail.strip()}"[:400]
    row.seconds = round(time.perf_counter() - start, 2)
    return row


def load_variants(spec: str | None, channels: tuple[int, ...]) -> list:
    """The variants to check: ``lm_variants.kernel_variants(channels)``, or FILE.py:FUNCTION's list."""
    if spec is None:
        from pixloc_ros.core.engine.lm.variants import kernel_variants
        return kernel_variants(channels)
    path, _, name = spec.rpartition(":")
    if not path or not Path(path).is_file():
        raise SystemExit(f"check_gpu_kernels: --variants wants FILE.py:FUNCTION, got {spec!r}")
    module_spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_spec.name] = module
    module_spec.loader.exec_module(module)
    return getattr(module, name)()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", action="append", required=True,
                        help="compute capability without the dot (80 86 87 89 90), or 'all'; repeatable")
    parser.add_argument("--channels", type=int, nargs="+", default=[32, 128], help="map channels to compile for")
    parser.add_argument("--jobs", type=int, default=0, help="compiler processes (default: one per core, at most 4)")
    parser.add_argument("--jsonl", help="also write one JSON object per kernel variant and target to this file")
    parser.add_argument("--variants", help="FILE.py:FUNCTION returning the variants to check (default: the engine's)")
    args = parser.parse_args(argv)
    archs: list[int] = []
    for a in args.arch:
        for part in a.replace(",", " ").split():
            try:
                archs += list(ARCHS) if part == "all" else [int(part.removeprefix("sm_"))]
            except ValueError:
                parser.error(f"--arch {part!r}: expected one of {' '.join(map(str, ARCHS))} or all")
    archs = sorted(set(archs))
    # Before triton is imported: compile for real (an interpreted @jit function cannot be compiled),
    # and say Triton 3.9's default FP fusion explicitly (it warns otherwise).
    os.environ["TRITON_INTERPRET"] = "0"
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    global _VARIANTS
    _VARIANTS = load_variants(args.variants, tuple(args.channels))
    tasks = [(arch, i) for arch in archs for i in range(len(_VARIANTS))]
    jobs = args.jobs or min(4, os.cpu_count() or 1)
    start = time.perf_counter()
    if jobs > 1 and len(tasks) > 1:
        with multiprocessing.get_context("fork").Pool(min(jobs, len(tasks))) as pool:
            rows = pool.map(compile_one, tasks, chunksize=1)
    else:
        rows = [compile_one(t) for t in tasks]
    print(f"{'arch':<6} {'target':<8} {'regs':>5} {'shared B':>9} {'stack B':>8} {'spill st/ld B':>14} {'s':>5}  kernel")
    for r in rows:
        spill = f"{r.spill_store_bytes}/{r.spill_load_bytes}" if not r.error else "-"
        print(f"sm_{r.arch:<3} {r.target:<8} {r.registers:>5} {r.shared_bytes:>9} {r.stack_bytes:>8} {spill:>14} "
              f"{r.seconds:>5.1f}  {r.kernel}{'' if r.ok else '  <-- FAIL'}")
    if args.jsonl:
        with open(args.jsonl, "w") as f:
            for r in rows:
                f.write(json.dumps({**asdict(r), "ok": r.ok}) + "\n")
    failed = [r for r in rows if not r.ok]
    for r in failed:
        why = r.error or f"{r.spill_store_bytes} bytes spill stores, {r.spill_load_bytes} bytes spill loads"
        print(f"FAIL sm_{r.arch} {r.kernel}: {why}")
    print(f"{len(rows) - len(failed)}/{len(rows)} kernel variants compiled without spills for "
          f"{', '.join(f'sm_{a}' for a in archs)} in {time.perf_counter() - start:.1f} s ({jobs} jobs)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
