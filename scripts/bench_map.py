#!/usr/bin/env python3
"""Benchmark the map file and retrieval on a synthetic map (default: one million points).

    python scripts/bench_map.py [--points 1000000] [--obs-per-point 4] [--out /tmp/bench_map.pxmap]

Builds a street-like map: keyframes 1 m apart along a winding road, each introducing
``--points-per-keyframe`` points 5-30 m ahead of it that the next ``--obs-per-point`` keyframes
observe (track length = obs-per-point), random unit fp16 features of the CMU model's sizes
(32/128/128). Prints the file size per point and per observation, the open time (cold: the
file's pages are dropped from the page cache first with posix_fadvise, when the OS allows), the
process RSS before/after opening and after the queries, and retrieval latency (median / p90)
for priors near random keyframes: first touch of a keyframe (page faults + CRC check) and warm.
Numbers are for the machine it runs on; say which when quoting them.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import numpy as np


def rss_mib() -> float:
    """Resident set size of this process in MiB (Linux /proc)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def drop_page_cache(path: Path) -> bool:
    """Ask the kernel to forget the file's cached pages (affects only this file)."""
    if not hasattr(os, "posix_fadvise"):
        return False
    with open(path, "rb") as f:
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    return True


def road(num_kf: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """Keyframe centres (K, 3) and yaw (K,) along a smoothly winding road, 1 m apart."""
    yaw = np.cumsum(rng.normal(0, 0.02, num_kf)) + 0.3 * np.sin(np.arange(num_kf) / 300.0)
    xy = np.cumsum(np.stack([np.cos(yaw), np.sin(yaw)], -1), 0)
    return np.concatenate([xy, np.full((num_kf, 1), 1.6)], 1), yaw


def cam_from_world(center: np.ndarray, yaw: float) -> np.ndarray:
    """Forward-looking camera (optical z along yaw, y down) at ``center``."""
    fwd = np.array([math.cos(yaw), math.sin(yaw), 0.0])
    right = np.array([math.sin(yaw), -math.cos(yaw), 0.0])
    R = np.stack([right, [0.0, 0.0, -1.0], fwd])
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, -R @ center
    return T


def build(path: Path, num_points: int, per_kf: int, track: int, seed: int = 0) -> float:
    """Write the synthetic map; returns seconds taken."""
    from pixloc_ros.core.geometry.georef import Georeference
    from pixloc_ros.core.maps.mapfile_format import LevelInfo, MapCamera, MapHeader, Observations
    from pixloc_ros.core.maps.mapfile_writer import MapWriter

    rng = np.random.default_rng(seed)
    levels = [LevelInfo(1, 32), LevelInfo(4, 128), LevelInfo(16, 128)]
    num_kf = -(-num_points // per_kf) + track - 1
    centers, yaws = road(num_kf, rng)
    poses = np.stack([cam_from_world(c, y) for c, y in zip(centers, yaws)])
    # Points introduced by keyframe k: ahead of it, both sides of the road, up to building height.
    owner = np.minimum(np.arange(num_points) // per_kf, num_kf - 1)
    fwd = np.stack([np.cos(yaws[owner]), np.sin(yaws[owner]), np.zeros(num_points)], -1)
    left = np.stack([-np.sin(yaws[owner]), np.cos(yaws[owner]), np.zeros(num_points)], -1)
    xyz = (centers[owner] + fwd * rng.uniform(5, 30, (num_points, 1)) + left * rng.uniform(-12, 12, (num_points, 1))
           + np.array([0, 0, 1.0]) * rng.uniform(-1.5, 8, (num_points, 1)))
    start = time.perf_counter()
    with MapWriter(path, levels) as writer:
        for k in range(num_kf):
            first_owner = max(0, k - track + 1)
            pts = np.arange(first_owner * per_kf, min(num_points, (k + 1) * per_kf))
            feats = []
            for level in levels:
                f = rng.standard_normal((len(pts), level.dim), dtype=np.float32)
                f /= np.linalg.norm(f, axis=1, keepdims=True)
                feats.append(f.astype(np.float16))
            writer.add_keyframe_observations(Observations(
                pts.astype(np.int32), rng.uniform(0, 1024, (len(pts), 2)).astype(np.float32),
                rng.uniform(0, 1, (len(pts), 3)).astype(np.float16), feats))
        header = MapHeader("0" * 64, "vgg16", levels, [MapCamera(1, "PINHOLE", 1024, 768, (868.0, 868.0, 512.0, 384.0))],
                           [f"kf{k:06d}.jpg" for k in range(num_kf)], Georeference(40.44, -79.99, 300.0, 90.0),
                           {"synthetic": True})
        writer.finish(header,
                      {"keyframe_ids": np.arange(num_kf) + 1, "keyframe_camera_index": np.zeros(num_kf),
                       "keyframe_R": poses[:, :3, :3], "keyframe_t": poses[:, :3, 3],
                       "keyframe_image_size": np.tile([1024, 768], (num_kf, 1))},
                      {"point_ids": np.arange(num_points) + 1, "point_xyz": xyz,
                       "point_track_length": np.full(num_points, track)})
    return time.perf_counter() - start


def percentiles(ms: list[float], cpu_ms: list[float]) -> str:
    """Wall-clock and thread-CPU statistics (CPU time is what the work costs when other
    processes share the cores; wall time includes waiting for them)."""
    a, c = np.asarray(ms), np.asarray(cpu_ms)
    return (f"wall median {np.median(a):.3f} ms, p90 {np.percentile(a, 90):.3f} ms, max {a.max():.2f} ms; "
            f"cpu median {np.median(c):.3f} ms, p90 {np.percentile(c, 90):.3f} ms (n={len(a)})")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--points-per-keyframe", type=int, default=250, help="new points per keyframe")
    parser.add_argument("--obs-per-point", type=int, default=4, help="track length of every point")
    parser.add_argument("--out", default="/tmp/bench_map.pxmap")
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--k", type=int, default=2, help="keyframes per retrieval (PixLoc CMU: 2)")
    parser.add_argument("--reuse", action="store_true", help="reuse an existing --out file")
    parser.add_argument("--keep", action="store_true", help="keep the map file afterwards")
    parser.add_argument("--verify", action="store_true", help="also time a full verify() (reads the whole file)")
    args = parser.parse_args(argv)

    import torch

    from pixloc_ros.core.geometry.camera import Camera
    from pixloc_ros.core.maps.retrieval import MapIndex

    torch.set_num_threads(1)  # retrieval is single-threaded work; keep the numbers comparable
    path = Path(args.out)
    print(f"machine: {os.cpu_count()} CPUs; python {sys.version.split()[0]}, numpy {np.__version__}")
    if not (args.reuse and path.exists()):
        seconds = build(path, args.points, args.points_per_keyframe, args.obs_per_point)
        print(f"built {path} in {seconds:.1f} s")
    size = path.stat().st_size

    cold = drop_page_cache(path)
    rss0 = rss_mib()
    t0, c0 = time.perf_counter(), time.process_time()
    index = MapIndex.open(path, expected_fingerprint="0" * 64)
    t_open, c_open = time.perf_counter() - t0, time.process_time() - c0
    rss1 = rss_mib()
    m = index.map
    print(f"map: {m.num_keyframes} keyframes, {m.num_points} points, {m.num_observations} observations")
    row = sum(m._table[name]["nbytes"] for name in m._table if name.startswith("obs_")) / max(m.num_observations, 1)
    print(f"file: {size / 2**30:.2f} GiB = {size / m.num_points:.0f} B/point, "
          f"{size / max(m.num_observations, 1):.0f} B/observation ({row:.0f} B of observation arrays)")
    print(f"open ({'cold page cache' if cold else 'page cache state unknown'}): {t_open:.2f} s wall, "
          f"{c_open:.2f} s cpu (header, CRC of keyframe/point arrays, KD-trees); "
          f"RSS {rss0:.0f} MiB before, {rss1:.0f} MiB after (+{rss1 - rss0:.0f} MiB)")

    rng = np.random.default_rng(1)
    kf = rng.integers(0, m.num_keyframes, args.queries)
    priors = []
    for k in kf:
        T = index.keyframe_cam_from_world[k]
        c = index.keyframe_centers[k] + rng.normal(0, [2.0, 2.0, 0.2])
        yaw = math.atan2(T[2, 1], T[2, 0]) + rng.normal(0, math.radians(10))
        priors.append(cam_from_world(c, yaw))
    camera = Camera.from_params(1024, 768, 868.0, 868.0, 511.5, 383.5)

    def timed(run, label):
        ms, cpu, sizes = [], [], []
        for T in priors:
            t, c = time.perf_counter(), time.thread_time()
            r = run(T)
            cpu.append((time.thread_time() - c) * 1e3)
            ms.append((time.perf_counter() - t) * 1e3)
            sizes.append(len(r.points))
        print(f"retrieve {label}: {percentiles(ms, cpu)}; rows median {int(np.median(sizes))}")

    timed(lambda T: index.retrieve(T, num_keyframes=args.k), f"k={args.k} observations, first touch (cold)")
    timed(lambda T: index.retrieve(T, num_keyframes=args.k), f"k={args.k} observations, warm")
    timed(lambda T: index.retrieve(T, num_keyframes=args.k, camera=camera), f"k={args.k} observations + frustum, warm")
    timed(lambda T: index.retrieve(T, num_keyframes=args.k, mode="averaged"), f"k={args.k} averaged, warm")
    timed(lambda T: index.retrieve(T, num_keyframes=5), "k=5 observations")
    ms, cpu = [], []
    for T in priors:
        t, c = time.perf_counter(), time.thread_time()
        index.nearest_keyframes(-T[:3, :3].T @ T[:3, 3], T[2, :3], args.k, 60.0, 50.0)
        cpu.append((time.thread_time() - c) * 1e3)
        ms.append((time.perf_counter() - t) * 1e3)
    print(f"nearest_keyframes only: {percentiles(ms, cpu)}")
    print(f"RSS after {5 * args.queries} queries: {rss_mib():.0f} MiB")
    if args.verify:
        t = time.perf_counter()
        m.verify()
        print(f"verify() whole file: {time.perf_counter() - t:.1f} s; RSS {rss_mib():.0f} MiB "
              "(file pages, shared and reclaimable)")
    if not args.keep:
        del index, m
        path.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
