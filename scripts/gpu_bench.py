#!/usr/bin/env python3
"""The measurements of ``scripts/gpu_bench.sh``, one section per call, each appending JSON lines to
a file (and printing a short summary):

    gpu_bench.py parity      --jsonl F [--paths torch fused]   fused vs torch LM, 4 and 64 hypotheses
    gpu_bench.py latency     --jsonl F [--paths ...]           network + all LM levels, median / p90
    gpu_bench.py first-frame --jsonl F --warm-up 0|1           a fresh process's first frames
    gpu_bench.py sequence    --jsonl F                         node-like varying shapes, graph captures

Sizes default to the issue's: 1024x768 images, 5000 points, 4 and 64 hypotheses, 30 repeats, 25 LM
iterations per level (the native profile's).
``--smoke`` shrinks everything (64x48, 100 points, 2 and 5 hypotheses, 2 iterations per level, one
repeat) and runs on the CPU, the fused path in Triton's interpreter (set TRITON_INTERPRET=1 before starting): a dry run
of the plumbing on a machine without a GPU, whose figures mean nothing. Synthetic input as in
``pixloc-ros bench`` (random-initialised network; reference features sampled from the query's own
features at the true projections, so the LM converges as on real data).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import sys
import time
from types import SimpleNamespace

import numpy as np
import torch

from pixloc_ros.cli import main as cli_main
from pixloc_ros.commands.bench import _synthetic_problem
from pixloc_ros.core.engine.lm import fused as fused_lm
from pixloc_ros.core.geometry.pose import Pose, so3_exp
from pixloc_ros.core.engine.localizer import Localizer, LocalizerConfig
from pixloc_ros.core.engine.network import PixLocModel
from pixloc_ros.core.engine.lm.config import LMConfig


def sizes(args) -> SimpleNamespace:
    if args.smoke:
        return SimpleNamespace(width=64, height=48, points=100, hypotheses=(2, 5), repeats=1, warmup=0,
                               device="cpu", point_bucket=128, frames=3, path="fused", iters=(2, 2, 2))
    return SimpleNamespace(width=1024, height=768, points=5000, hypotheses=(4, 64), repeats=30, warmup=5,
                           device="cuda", point_bucket=1024, frames=40, path="auto", iters=(25, 25, 25))


def emit(args, record: dict) -> None:
    record = {"section": args.section, "smoke": args.smoke, **record}
    with open(args.jsonl, "a") as f:
        f.write(json.dumps(record) + "\n")
    print("   " + json.dumps(record))


def device_name(device: str) -> str:
    return torch.cuda.get_device_name() if device == "cuda" else "cpu"


def localizer(model, s, path: str, warnings: list) -> Localizer:
    loc = Localizer(model, LocalizerConfig(device=s.device, min_valid_points=1, return_confidences=False,
                                           iterations=s.iters, lm=LMConfig(path=path, point_bucket=s.point_bucket)))
    loc.set_lm_warning_handler(warnings.append)
    return loc


def parity(args, s) -> None:
    """Both LM paths on the same frame (network once each; the same pyramid): every hypothesis'
    final pose, the fine cost of every level, the chosen hypothesis' iterations."""
    torch.manual_seed(0)
    model = PixLocModel()
    for b in s.hypotheses:
        problem = _synthetic_problem(SimpleNamespace(seed=0, width=s.width, height=s.height, points=s.points,
                                                     hypotheses=b), torch.device(s.device), model)
        results, warnings = {}, []
        for path in args.paths:
            results[path] = localizer(model, s, path, warnings).localize(*problem)
        record = {"hypotheses": b, "points": s.points, "image": [s.width, s.height], "warnings": warnings,
                  "lm_path": {p: r.lm_path for p, r in results.items()}}
        if len(results) == 2:
            a, f = results["torch"].hypotheses, results["fused"].hypotheses
            dt = (a.cam_from_world.t - f.cam_from_world.t).norm(dim=-1)
            dR = (a.cam_from_world.R - f.cam_from_world.R).abs().amax(dim=(-1, -2))
            cost_rel = np.abs(a.cost - f.cost) / np.maximum(np.abs(a.cost), 1e-12)
            record.update(max_translation_diff_m=float(dt.max()), max_rotation_entry_diff=float(dR.max()),
                          max_cost_rel_diff=float(np.nanmax(np.where(np.isfinite(a.cost), cost_rel, 0.0))),
                          iterations={p: list(r.iterations) for p, r in results.items()},
                          same_choice=results["torch"].hypothesis == results["fused"].hypothesis)
        emit(args, record)


def latency(args, s) -> None:
    """``pixloc-ros bench`` per LM path and hypothesis count, every iteration run (worst case) and
    with the stop rule."""
    for b in s.hypotheses:
        for path in args.paths:
            for early in (False, True):
                argv = ["bench", "--device", s.device, "--width", str(s.width), "--height", str(s.height),
                        "--points", str(s.points), "--hypotheses", str(b), "--repeats", str(s.repeats),
                        "--warmup", str(s.warmup), "--lm-path", path, "--point-bucket", str(s.point_bucket),
                        "--iters", *(str(n) for n in s.iters),
                        "--json"] + (["--early-stop"] if early else [])
                buf = io.StringIO()
                with contextlib.redirect_stdout(buf):
                    status = cli_main(argv)
                if status != 0:
                    emit(args, {"hypotheses": b, "lm_path_requested": path, "early_stop": early, "error": status})
                    continue
                out = json.loads(buf.getvalue())
                st = out["stages"]
                emit(args, {"hypotheses": b, "lm_path_requested": path, "lm_path": out["lm_path"],
                            "lm_fallback": out["lm_fallback"], "early_stop": early,
                            "iterations": out["iterations_run_finest_first"], "device_name": out["device_name"],
                            "repeats": out["repeats"],
                            "network_plus_lm_median_ms": st["network"]["median_ms"] + st["lm_total"]["median_ms"],
                            **{f"{k}_{q}_ms": round(st[k][f"{q}_ms"], 3) for k in ("network", "lm_total", "total")
                               for q in ("median", "p90")}})


def first_frame(args, s) -> None:
    """A fresh process (the shell gives it an empty Triton cache): optional warm-up, three frames."""
    torch.manual_seed(0)
    model = PixLocModel()
    problem = _synthetic_problem(SimpleNamespace(seed=0, width=s.width, height=s.height, points=s.points,
                                                 hypotheses=s.hypotheses[0]), torch.device(s.device), model)
    warnings = []
    loc = localizer(model, s, s.path, warnings)
    start = time.perf_counter()
    if args.warm_up:
        loc.warm_up(s.width, s.height, num_points=s.points, hypotheses=s.hypotheses[0])
    warm = time.perf_counter() - start
    after_warm = fused_lm.cache_stats()
    frames = []
    for _ in range(3):
        t = time.perf_counter()
        r = loc.localize(*problem)
        frames.append(1e3 * (time.perf_counter() - t))
    after = fused_lm.cache_stats()
    emit(args, {"warm_up": bool(args.warm_up), "warm_up_s": round(warm, 3), "frames_ms": [round(f, 2) for f in frames],
                "lm_path": r.lm_path, "warnings": warnings, "graphs_at_warm_up": after_warm.graphs_captured,
                "graphs_in_frames": after.graphs_captured - after_warm.graphs_captured})


def sequence(args, s) -> None:
    """A node-like run: warm-up for the node's maxima, then frames of 1-4 hypotheses and 800-5000
    points (smoke: 50-300); counts the CUDA graphs captured during the frames (should be 0)."""
    torch.manual_seed(0)
    model = PixLocModel()
    rng = np.random.default_rng(0)
    image, camera, points, _ = _synthetic_problem(SimpleNamespace(seed=0, width=s.width, height=s.height,
                                                                  points=s.points, hypotheses=4),
                                                  torch.device(s.device), model)
    warnings = []
    loc = localizer(model, s, s.path, warnings)
    t = time.perf_counter()
    loc.warm_up(s.width, s.height, num_points=s.points, hypotheses=4)
    warm = time.perf_counter() - t
    before = fused_lm.cache_stats()
    low = 800 if not args.smoke else 50
    times, paths = [], set()
    for _ in range(s.frames):
        b, n = int(rng.integers(1, 5)), int(rng.integers(low, s.points + 1))
        rows = torch.from_numpy(rng.choice(s.points, n, replace=False)).to(points.xyz.device)
        xi = torch.cat([0.3 * torch.randn(b, 3), 0.03 * torch.randn(b, 3)], -1).double()
        init = Pose.from_Rt(so3_exp(xi[:, 3:]), xi[:, :3])
        t = time.perf_counter()
        r = loc.localize(image, camera, points.select(rows), init)
        times.append(1e3 * (time.perf_counter() - t))
        paths.add(r.lm_path)
    after = fused_lm.cache_stats()
    emit(args, {"frames": s.frames, "warm_up_s": round(warm, 3), "lm_path": sorted(paths), "warnings": warnings,
                "graphs_at_warm_up": before.graphs_captured, "graphs_in_frames": after.graphs_captured - before.graphs_captured,
                "states_in_frames": after.states_built - before.states_built,
                "frame_median_ms": round(float(np.median(times)), 2),
                "frame_p90_ms": round(float(np.percentile(times, 90)), 2)})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("section", choices=("parity", "latency", "first-frame", "sequence"))
    p.add_argument("--jsonl", required=True, help="append the records to this file")
    p.add_argument("--paths", nargs="+", default=["torch", "fused"], choices=("torch", "fused"),
                   help="LM paths to run (gpu_bench.sh drops fused when the kernel pre-flight failed)")
    p.add_argument("--warm-up", type=int, default=1, help="first-frame: 1 with Localizer.warm_up, 0 without")
    p.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (a dry run, see the docstring)")
    args = p.parse_args(argv)
    s = sizes(args)
    if s.device == "cuda" and not torch.cuda.is_available():
        print("gpu_bench.py: no CUDA device (use --smoke for a dry run on the CPU)", file=sys.stderr)
        return 1
    print(f"== {args.section} on {device_name(s.device)}: {s.width}x{s.height}, {s.points} points")
    {"parity": parity, "latency": latency, "first-frame": first_frame, "sequence": sequence}[args.section](args, s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
