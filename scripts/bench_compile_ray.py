#!/usr/bin/env python3
"""Compile throughput of a tiled map: single process vs Ray with 1 and 2 (or more) workers.

    python scripts/bench_compile_ray.py --world DIR [--weights W] [--tile-size 20] [--workers 1,2]

``--world``: ``pixloc-ros synth`` output (its ``build_map`` options are used, e.g. the
keyframe size). Each run compiles every tile from scratch into a temporary folder and prints
wall time, keyframes per second and network time; the Ray runs include starting the local Ray
instance and the workers (each loads the weights), which a long compile amortises, so the time
of the tiles alone (after the workers are up) is printed too. The runs check
that Ray's tiles equal the single process's (byte-identical arrays). Numbers are for the
machine it runs on (load average printed); say which when quoting them.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def tile_arrays(folder: Path) -> dict[str, dict[str, np.ndarray]]:
    from pixloc_ros.core.maps.mapfile import open_map
    out = {}
    for f in sorted((folder / "tiles").glob("*.pxmap")):
        m = open_map(f)
        out[f.name] = {name: np.array(getattr(m, name)) for name in m._table}
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world", required=True)
    parser.add_argument("--weights", default=None, help="default: the shipped weights")
    parser.add_argument("--tile-size", type=float, default=20.0)
    parser.add_argument("--workers", default="1,2", help="comma-separated Ray worker counts")
    args = parser.parse_args(argv)

    import torch

    from pixloc_ros.core.engine.checkpoint import load_weights, weights_fingerprint
    from pixloc_ros.core.maps.colmap_io import read_model
    from pixloc_ros.core.maps.compile_keyframes import CompileConfig
    from pixloc_ros.core.maps.compile import compile_tiled_map
    from pixloc_ros.core.maps.compile_ray import RayOptions

    world = Path(args.world)
    weights = Path(args.weights) if args.weights else (
        Path(__file__).resolve().parents[1] / "pixloc_ros" / "assets" / "pixloc_synth_vgg16.safetensors")
    build = json.loads((world / "world.json").read_text()).get("build_map", {})
    config = CompileConfig(max_image_edge=build.get("max_image_edge"))
    sfm = read_model(world / "sfm")
    torch.set_num_threads(1)  # as each Ray worker: one thread per worker, and identical results
    model = load_weights(weights, "cpu")
    fp = weights_fingerprint(model)
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; torch {torch.__version__}; "
          f"{len(sfm.images)} keyframes, max edge {config.max_image_edge}, tiles of {args.tile_size:g} m")
    tmp = Path(tempfile.mkdtemp(prefix="bench_compile_ray_"))
    try:
        t = time.perf_counter()
        single = compile_tiled_map(sfm, world / "mapping" / "images", model, tmp / "single", fp, args.tile_size,
                                   config=config, progress=False)
        wall = time.perf_counter() - t
        n = single.keyframes_built
        print(f"single process (1 thread): {wall:.1f} s, {n / wall:.2f} keyframes/s (network {single.network_seconds:.1f} s),"
              f" {single.summary.num_tiles} tiles; load average {os.getloadavg()[0]:.1f}")
        reference = tile_arrays(tmp / "single")
        for workers in (int(w) for w in args.workers.split(",")):
            out = tmp / f"ray{workers}"
            t = time.perf_counter()
            stats = compile_tiled_map(sfm, world / "mapping" / "images", model, out, fp, args.tile_size,
                                      config=config, progress=False, ray=RayOptions(workers=workers, device="cpu"),
                                      weights_path=weights)
            wall = time.perf_counter() - t
            same = tile_arrays(out)
            identical = same.keys() == reference.keys() and all(
                np.array_equal(same[f][a], reference[f][a]) for f in reference for a in reference[f])
            startup = stats.startup_seconds
            print(f"ray, {workers} worker(s): {wall:.1f} s, {n / wall:.2f} keyframes/s; without the start-up "
                  f"({startup:.1f} s) {n / (wall - startup):.2f} keyframes/s "
                  f"(network {stats.network_seconds:.1f} s summed over workers); tiles identical to the single "
                  f"process: {identical}; load average {os.getloadavg()[0]:.1f}")
            shutil.rmtree(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
