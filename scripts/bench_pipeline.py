#!/usr/bin/env python3
"""Per-frame time of the node's pipeline (core/tracking/pipeline.py, as `pixloc-ros evaluate` runs it) on a
recorded drive, with the query images resized (default x2: the small synthetic world's 320x240
drives become 640x480) and a chosen number of keyframes per query.

    python scripts/bench_pipeline.py --map MAP --bag BAG --weights W [--scale 2] [--keyframes 2]
        [--frames 20] [--threads 1] [--runtime auto|torch|openvino|onnxruntime] [--precision f32|bf16|auto] [--json OUT]

Runs against whichever ``pixloc_ros`` is importable (put another checkout first on PYTHONPATH to
time it side by side): checkouts with the package layout of issue 26 (core/tracking, core/maps, ...);
``--runtime``, ``--lm-path`` and ``--precision`` are passed only when given. The map must hold keyframes at
the resized queries' resolution (`pixloc-ros build-map` without --max-image-edge on the 640x480
mapping images). Before the drive, one untimed network pass at the query size warms up the
runtime (an ONNX export and compile with OpenVINO, lazily initialised kernels with torch).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time

import numpy as np


def scaled_drive(drive, scale: float):
    """The drive with every image resized by ``scale`` (cv2.INTER_LINEAR) and its CameraInfo to match."""
    import cv2

    infos = {}
    for frame in drive.frames:
        h, w = frame.image.shape[:2]
        size = (int(round(w * scale)), int(round(h * scale)))
        frame.image = cv2.resize(frame.image, size, interpolation=cv2.INTER_LINEAR)
        info = frame.camera_info
        if info is None:
            continue
        if id(info) not in infos:
            sx, sy = size[0] / info.width, size[1] / info.height
            k = list(info.k)
            k[0], k[4] = k[0] * sx, k[4] * sy
            k[2], k[5] = (k[2] + 0.5) * sx - 0.5, (k[5] + 0.5) * sy - 0.5  # pixel-centre origin
            infos[id(info)] = dataclasses.replace(info, width=size[0], height=size[1], k=tuple(k), p=())
        frame.camera_info = infos[id(info)]
    return drive


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--map", required=True)
    p.add_argument("--bag", required=True)
    p.add_argument("--weights", required=True)
    p.add_argument("--scale", type=float, default=2.0, help="resize factor of the query images")
    p.add_argument("--keyframes", type=int, default=2, help="reference keyframes per query (PixLoc CMU: 2)")
    p.add_argument("--frames", type=int, default=None, help="stop after this many images")
    p.add_argument("--threads", type=int, default=1, help="torch (and runtime) threads")
    p.add_argument("--runtime", default=None, help="LocalizerConfig.cpu_runtime (issue 15 and later)")
    p.add_argument("--lm-path", default=None, help="LMConfig.path (issue 15 and later)")
    p.add_argument("--precision", default=None, help="LocalizerConfig.cpu_precision: f32, bf16 or auto (after issue 15's "
                                                     "first stop)")
    p.add_argument("--json", default=None, metavar="OUT")
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    import pixloc_ros
    from pixloc_ros.core.engine.localizer import LocalizerConfig
    from pixloc_ros.core.engine.lm.config import LMConfig
    from pixloc_ros.core.tracking.pipeline import PipelineConfig, load_pipeline
    from pixloc_ros.core.maps.retrieval import RetrievalConfig
    from pixloc_ros.data.bags import read_drive
    from pixloc_ros.core.tracking.reasons import Reason
    from pixloc_ros.data.evaluation.offline import evaluate_drive

    extra = {} if args.runtime is None else {"cpu_runtime": args.runtime}
    if args.precision is not None:
        extra["cpu_precision"] = args.precision
    lm = LMConfig() if args.lm_path is None else LMConfig(path=args.lm_path)
    loc_cfg = LocalizerConfig(cpu_threads=args.threads, lm=lm, **extra)  # otherwise the node's defaults
    config = PipelineConfig(retrieval=RetrievalConfig(num_keyframes=args.keyframes))
    pipeline = load_pipeline(args.map, args.weights, "cpu", config, loc_cfg)
    drive = scaled_drive(read_drive(args.bag), args.scale)
    first = drive.frames[0].image
    tic = time.perf_counter()
    pipeline.localizer.model.extract(first)  # warm-up (see the module docstring)
    warmup = time.perf_counter() - tic

    # CPU time of every process() call (all threads of this process: torch's and the runtime's),
    # a figure less sensitive than wall time to other load on a shared machine.
    cpu_s: dict[int, float] = {}
    process = pipeline.process

    def timed_process(frame):
        c0 = time.process_time()
        out = process(frame)
        cpu_s[frame.stamp_ns] = time.process_time() - c0
        return out

    pipeline.process = timed_process
    tic = time.perf_counter()
    ev = evaluate_drive(pipeline, drive, max_frames=args.frames)
    wall = time.perf_counter() - tic
    ran = [f for f in ev.frames if f.network_s > 0]
    total = np.array([f.total_s for f in ran]) * 1e3
    net = np.array([f.network_s for f in ran]) * 1e3
    cpu = np.array([cpu_s.get(f.stamp_ns, np.nan) for f in ran]) * 1e3
    opt = np.array([f.optimizer_s for f in ran]) * 1e3
    s = ev.summary
    out = {
        "pixloc_ros": pixloc_ros.__file__, "machine": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(), "image": list(first.shape[1::-1]), "keyframes": args.keyframes,
        "runtime": args.runtime, "lm_path": args.lm_path, "precision": args.precision, "warmup_s": warmup, "wall_s": wall,
        "frames": len(ev.frames), "frames_ran": len(ran), "localized": s.localized,
        "recall": s.recall, "median_translation_m": s.median_translation_m,
        "median_rotation_deg": s.median_rotation_deg,
        "total_ms": {"p50": float(np.median(total)), "p90": float(np.percentile(total, 90)), "mean": float(total.mean())},
        "cpu_ms": {"p50": float(np.nanmedian(cpu)), "mean": float(np.nanmean(cpu))},
        "network_ms_p50": float(np.median(net)), "optimizer_ms_p50": float(np.median(opt)),
        "num_points_p50": float(np.median([f.num_points for f in ran])),
        "per_frame": [{"total_ms": f.total_s * 1e3, "network_ms": f.network_s * 1e3, "optimizer_ms": f.optimizer_s * 1e3,
                       "reason": Reason(f.reason_code).key, "error_m": f.raw_translation_error_m} for f in ev.frames],
    }
    print(f"{out['pixloc_ros']}: {out['image'][0]}x{out['image'][1]}, {args.keyframes} keyframes, "
          f"{len(ran)} frames ran, per frame p50 {out['total_ms']['p50']:.0f} ms (p90 {out['total_ms']['p90']:.0f}, "
          f"mean {out['total_ms']['mean']:.0f}; CPU time p50 {out['cpu_ms']['p50']:.0f}): network "
          f"{out['network_ms_p50']:.0f}, LM {out['optimizer_ms_p50']:.0f}; "
          f"localized {s.localized}/{s.frames}, recall {[round(r, 3) for r in s.recall]}, "
          f"median error {s.median_translation_m:.3f} m")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
