#!/usr/bin/env python3
"""Benchmark a tiled city map: build, open, and a simulated drive of 10+ km with background loading.

    python scripts/bench_city_map.py [--points 10000000] [--tile-size 200] [--out /tmp/bench_city]

The city: a grid of 2 km streets, ``--streets`` in each direction 200 m apart (x-streets at
y = 100, 300, ..., mapped eastwards and westwards alternately; y-streets mapped northwards),
keyframes 1 m apart, each introducing ``points / keyframes`` points 5-30 m ahead of it that it
and the next ``--obs-per-point - 1`` keyframes of its street observe, fp16 features of the CMU
model's sizes (32/128/128; drawn from a bank of random unit vectors: their values do not matter
here, their bytes do). The tiles are written straight from that layout (``TiledMapWriter``).

The drive: a serpentine over the first six x-streets joined by 200 m of y-street at each end
(about 11.8 km), at ``--speed-mps`` with a prior every 1 / ``--fps`` seconds, a few decimetres
off the keyframes. Each frame: ``retrieve`` (k keyframes, what the node's worker thread does)
timed in wall and thread-CPU time, then a sleep until the next frame while the loader thread
opens and checks the tiles ahead. The tile files' pages are dropped from the page cache first
(posix_fadvise), so tiles come from disk. Printed: build time and size, open time, RSS over the
drive (per km), retrieval latency p50/p90/max over all frames and over the frames around tile
switches, frames over 5 ms, frames whose nearest tile was not loaded yet, loader statistics.
Numbers are for the machine it runs on; say which when quoting them.
"""
from __future__ import annotations

import argparse
import math
import os
import resource
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_map import cam_from_world, drop_page_cache, rss_mib  # noqa: E402

BANK = 4096  # random unit feature rows per level the observations draw from

# The control probe (--probe): a process of its own, no map, no tiles, no loader, at the same
# priority as the drive, that does a retrieval's worth of fixed numpy work (gather 2250 rows of
# 600 bytes, convert, sum) every 100 ms and records when (time.monotonic), wall ms and its
# thread's CPU ms. Whatever stalls it is the machine (other processes on the vCPUs, the VM).
PROBE = r"""
import select, sys, time
import numpy as np
rng = np.random.default_rng(0)
rows = rng.standard_normal((100_000, 300)).astype(np.float16)
picks = [np.sort(rng.integers(0, len(rows), 2250)) for _ in range(64)]
period, out, log = float(sys.argv[1]), sys.argv[2], []
print("ready", flush=True)
next_t = time.perf_counter() + period / 2  # half a period out of phase with the drive's frames
while True:
    t, c = time.perf_counter(), time.thread_time()
    float(rows[picks[len(log) % 64]].astype(np.float32).sum())
    log.append((time.monotonic(), (time.perf_counter() - t) * 1e3, (time.thread_time() - c) * 1e3))
    next_t += period
    if select.select([sys.stdin], [], [], max(0.0, next_t - time.perf_counter()))[0]:
        break
np.save(out, np.asarray(log))
"""


def layout(streets: int, length_m: int, spacing_m: float):
    """Keyframes of the street grid: centres (K, 3), yaw (K,), street number (K,), index along
    the street (K,); and per street (axis, offset, direction)."""
    centres, yaws, street_of, along = [], [], [], []
    defs = []
    s = np.arange(length_m, dtype=np.float64)
    for k in range(streets):  # x-streets, alternately eastwards / westwards
        c = 0.5 * spacing_m + k * spacing_m
        east = k % 2 == 0
        x = s if east else s[::-1]
        defs.append(("x", c, 1 if east else -1))
        centres.append(np.stack([x, np.full_like(x, c), np.full_like(x, 1.6)], -1))
        yaws.append(np.full(length_m, 0.0 if east else math.pi))
    for k in range(streets):  # y-streets, northwards
        c = 0.5 * spacing_m + k * spacing_m
        defs.append(("y", c, 1))
        centres.append(np.stack([np.full_like(s, c), s, np.full_like(s, 1.6)], -1))
        yaws.append(np.full(length_m, math.pi / 2))
    for n in range(2 * streets):
        street_of.append(np.full(length_m, n))
        along.append(np.arange(length_m))
    return (np.concatenate(centres), np.concatenate(yaws), np.concatenate(street_of), np.concatenate(along), defs)


def build(out: Path, num_points: int, tile_size: float, streets: int, length_m: int, spacing_m: float,
          track: int, seed: int = 0) -> tuple[float, object]:
    """Write the tiled city map; returns (seconds, TileSummary)."""
    from pixloc_ros.core.geometry.georef import Georeference
    from pixloc_ros.core.maps.mapfile_format import KeyframeRecord, LevelInfo, MapCamera, MapHeader, Observations
    from pixloc_ros.core.maps.tiles import TiledMapWriter, TileGrid, inputs_digest

    rng = np.random.default_rng(seed)
    levels = [LevelInfo(1, 32), LevelInfo(4, 128), LevelInfo(16, 128)]
    centres, yaws, street_of, along, _ = layout(streets, length_m, spacing_m)
    num_kf = len(centres)
    per_kf = -(-num_points // num_kf)
    # Points introduced by keyframe k (ids k * per_kf + 0..per_kf-1): ahead of it, both sides of
    # the street, up to building height.
    owner = np.repeat(np.arange(num_kf), per_kf)
    fwd = np.stack([np.cos(yaws[owner]), np.sin(yaws[owner]), np.zeros(len(owner))], -1)
    left = np.stack([-np.sin(yaws[owner]), np.cos(yaws[owner]), np.zeros(len(owner))], -1)
    n = len(owner)
    xyz = (centres[owner] + fwd * rng.uniform(5, 30, (n, 1)) + left * rng.uniform(-12, 12, (n, 1))
           + np.array([0, 0, 1.0]) * rng.uniform(-1.5, 8, (n, 1)))
    del owner, fwd, left
    bank = []
    for level in levels:
        f = rng.standard_normal((BANK, level.dim), dtype=np.float32)
        bank.append((f / np.linalg.norm(f, axis=1, keepdims=True)).astype(np.float16))
    poses = np.stack([cam_from_world(c, y) for c, y in zip(centres, yaws)])
    # keyframe row of (street, index along it): for the keyframes whose points a keyframe sees
    first_of_street = np.searchsorted(street_of, np.arange(street_of.max() + 1))
    grid = TileGrid(tile_size)
    keys = grid.keys_of(centres)
    header = MapHeader("0" * 64, "vgg16", levels, [MapCamera(1, "PINHOLE", 1024, 768, (868.0, 868.0, 512.0, 384.0))],
                       [], Georeference(40.44, -79.99, 300.0, 90.0), {"synthetic": True})
    writer = TiledMapWriter(out, grid, header)
    groups: dict[tuple[int, int], list[int]] = {}
    for k, (i, j) in enumerate(keys):
        groups.setdefault((int(i), int(j)), []).append(k)

    def seen_by(k: int) -> np.ndarray:
        """Point ids keyframe k observes: those of itself and the track - 1 keyframes before it on its street."""
        a = first_of_street[street_of[k]] + max(0, along[k] - track + 1)
        return (np.arange(a, k + 1)[:, None] * per_kf + np.arange(per_kf)[None]).reshape(-1)

    from tqdm import tqdm
    start = time.perf_counter()
    for key, rows in tqdm(sorted(groups.items()), desc="write tiles", unit="tile"):
        used = np.unique(np.concatenate([seen_by(k) for k in rows]))
        used = used[used < num_points]
        points = {"point_ids": used + 1, "point_xyz": xyz[used], "point_track_length": np.full(len(used), track)}

        def keyframes(rows=rows, used=used):
            for k in rows:
                ids = seen_by(k)
                ids = ids[ids < num_points]
                m = len(ids)
                pick = rng.integers(0, BANK, m)
                obs = Observations(np.searchsorted(used, ids).astype(np.int32),
                                   rng.uniform(0, 1024, (m, 2)).astype(np.float32),
                                   rng.uniform(0, 1, (m, 3)).astype(np.float16), [b[pick] for b in bank])
                yield KeyframeRecord(k + 1, f"kf{k:06d}.jpg", poses[k, :3, :3], poses[k, :3, 3], 0, (1024, 768)), obs

        writer.write_tile(key, inputs_digest(key=list(key), seed=seed), points, keyframes())
    summary = writer.finish(groups)
    return time.perf_counter() - start, summary


def route(streets: int, length_m: int, spacing_m: float, legs: int, step_m: float, seed: int = 1):
    """The serpentine drive: (N, 4, 4) cam_from_world priors and the distance driven at each (N,)."""
    rng = np.random.default_rng(seed)
    pts = []
    lo, hi = 0.5 * spacing_m, length_m - 0.5 * spacing_m  # from one y-street to the last
    for leg in range(legs):
        y = 0.5 * spacing_m + leg * spacing_m
        xs = (lo, hi) if leg % 2 == 0 else (hi, lo)
        pts.append(((xs[0], y), (xs[1], y)))
        if leg + 1 < legs:
            pts.append(((xs[1], y), (xs[1], y + spacing_m)))
    priors, driven, total = [], [], 0.0
    for (x0, y0), (x1, y1) in pts:
        d = math.hypot(x1 - x0, y1 - y0)
        yaw = math.atan2(y1 - y0, x1 - x0)
        for s in np.arange(0.0, d, step_m):
            c = np.array([x0 + (x1 - x0) * s / d, y0 + (y1 - y0) * s / d, 1.6])
            c[:2] += rng.normal(0, 0.3, 2)
            priors.append(cam_from_world(c, yaw + rng.normal(0, math.radians(3))))
            driven.append(total + s)
        total += d
    return priors, np.asarray(driven)


def _task_cpu_s(stat_path: str, tick: int) -> float:
    """utime + stime (s) of a thread or process from its /proc stat file (nan if it is gone)."""
    try:
        fields = open(stat_path).read().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / tick


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=10_000_000)
    parser.add_argument("--streets", type=int, default=10, help="streets in each direction")
    parser.add_argument("--street-length", type=int, default=2000, help="metres (one keyframe per metre)")
    parser.add_argument("--spacing", type=float, default=200.0, help="metres between parallel streets")
    parser.add_argument("--obs-per-point", type=int, default=3, help="track length of every point")
    parser.add_argument("--tile-size", type=float, default=200.0)
    parser.add_argument("--legs", type=int, default=6, help="x-streets the serpentine drive takes")
    parser.add_argument("--speed-mps", type=float, default=30.0)
    parser.add_argument("--fps", type=float, default=10.0)
    parser.add_argument("--k", type=int, default=3, help="keyframes per retrieval (the pipeline's default)")
    parser.add_argument("--load-radius", type=float, default=100.0)
    parser.add_argument("--lookahead", type=float, default=150.0)
    parser.add_argument("--max-tiles", type=int, default=16)
    parser.add_argument("--checker-nice", type=int, default=10)
    parser.add_argument("--checker-own-session", action="store_true")
    parser.add_argument("--checker", choices=("process", "thread"), default="process",
                        help="where tiles are checked: a child process at nice +19 in its own session, or the "
                             "loader thread (the design before)")
    parser.add_argument("--out", default="/tmp/bench_city")
    parser.add_argument("--probe", action=argparse.BooleanOptionalAction, default=True,
                        help="run the control probe (see PROBE) next to the drive")
    parser.add_argument("--max-frames", type=int, default=0, help="stop the drive after this many frames (0: all)")
    parser.add_argument("--reuse", action="store_true", help="reuse an existing --out map")
    parser.add_argument("--keep", action="store_true", help="keep the map afterwards")
    parser.add_argument("--gc-freeze", action="store_true",
                        help="gc.freeze() after opening (what a long-running node can do: the garbage "
                             "collector then skips the objects of the imports)")
    args = parser.parse_args(argv)

    import shutil

    import torch

    from pixloc_ros.core.maps.tile_loader import TileLoaderConfig
    from pixloc_ros.core.maps.tiled_index import TiledMapIndex
    from pixloc_ros.core.maps.tiles import INDEX_NAME

    torch.set_num_threads(1)
    out = Path(args.out)
    print(f"machine: {os.cpu_count()} CPUs; python {sys.version.split()[0]}, numpy {np.__version__}")
    if not (args.reuse and (out / INDEX_NAME).is_file()):
        shutil.rmtree(out, ignore_errors=True)
        seconds, s = build(out, args.points, args.tile_size, args.streets, args.street_length, args.spacing,
                           args.obs_per_point)
        print(f"built {out} in {seconds:.0f} s: {s.num_tiles} tiles of {args.tile_size:g} m, {s.num_keyframes} "
              f"keyframes, {s.num_points} points ({s.num_point_rows} rows: points near boundaries are in each "
              f"tile that sees them), {s.num_observations} observations; {s.bytes / 2**30:.2f} GiB "
              f"({s.bytes / 2**20 / seconds:.0f} MiB/s), largest tile {s.largest_tile_bytes / 2**20:.0f} MiB")
    files = [out / INDEX_NAME, *sorted((out / "tiles").glob("*.pxmap"))]
    cold = all(drop_page_cache(f) for f in files)
    rss0 = rss_mib()
    cfg = TileLoaderConfig(load_radius_m=args.load_radius, lookahead_m=args.lookahead,
                           max_loaded_tiles=args.max_tiles, checker=args.checker,
                           checker_niceness=args.checker_nice, checker_own_session=args.checker_own_session)
    t0, c0 = time.perf_counter(), time.process_time()
    index = TiledMapIndex.open(out, expected_fingerprint="0" * 64, loader_config=cfg)
    t_open, c_open = time.perf_counter() - t0, time.process_time() - c0
    rss1 = rss_mib()
    sizes = [e.file_size for e in index.tiled.entries]
    print(f"open ({'cold page cache' if cold else 'page cache state unknown'}): {t_open:.2f} s wall, "
          f"{c_open:.2f} s cpu (index of {index.num_keyframes} keyframes, KD-trees; no tile); "
          f"RSS {rss0:.0f} MiB before, {rss1:.0f} MiB after; tiles median {np.median(sizes) / 2**20:.0f} MiB")

    step = args.speed_mps / args.fps
    priors, driven = route(args.streets, args.street_length, args.spacing, args.legs, step)
    if args.max_frames:
        priors, driven = priors[:args.max_frames], driven[:args.max_frames]
    print(f"drive: {driven[-1] / 1000:.1f} km, {len(priors)} frames at {args.fps:g} Hz, {args.speed_mps:g} m/s; "
          f"loader: radius {cfg.load_radius_m:g} m, lookahead {cfg.lookahead_m:g} m, at most "
          f"{cfg.max_loaded_tiles} tiles, verify {cfg.verify}")
    index.prefetch(-priors[0][:3, :3].T @ priors[0][:3, 3])
    index.loader.wait_idle(120)
    index.retrieve(priors[0], num_keyframes=args.k)  # warm-up (first calls into numpy/torch), not timed
    import gc
    if args.gc_freeze:
        gc.collect()
        gc.freeze()
    collections = []  # (thread name, generation, ms) of every garbage collection during the drive

    def on_gc(phase, info, _start=[0.0]):
        if phase == "start":
            _start[0] = time.perf_counter()
        else:
            collections.append((threading.current_thread().name, info["generation"],
                                (time.perf_counter() - _start[0]) * 1e3))

    gc.callbacks.append(on_gc)
    period = 1.0 / args.fps
    probe = None
    if args.probe:
        import subprocess
        import tempfile
        probe_file = Path(tempfile.mkdtemp()) / "probe.npy"
        probe = subprocess.Popen([sys.executable, "-c", PROBE, str(period), str(probe_file)], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True, start_new_session=True)  # not in our scheduling group
        probe.stdout.readline()  # "ready"
    load_before = os.getloadavg()
    wall, cpu, rows, rss, loaded, tile_of_frame, misses = [], [], [], [], [], [], 0
    usage = []  # per frame: the retrieval thread's (user ms, system ms, minor faults, major faults, voluntary / involuntary context switches)
    first_use = []  # per frame: a tile served for the first time since it was loaded
    served = set()
    grid = index.tiled.grid
    next_frame = time.perf_counter()
    frame_at = []  # time.monotonic() at the start of each frame
    for T in priors:
        frame_at.append(time.monotonic())
        u0 = resource.getrusage(resource.RUSAGE_THREAD)
        t, c = time.perf_counter(), time.thread_time()
        r = index.retrieve(T, num_keyframes=args.k)
        cpu.append((time.thread_time() - c) * 1e3)
        wall.append((time.perf_counter() - t) * 1e3)
        u1 = resource.getrusage(resource.RUSAGE_THREAD)
        usage.append(((u1.ru_utime - u0.ru_utime) * 1e3, (u1.ru_stime - u0.ru_stime) * 1e3, u1.ru_minflt - u0.ru_minflt,
                      u1.ru_majflt - u0.ru_majflt, u1.ru_nvcsw - u0.ru_nvcsw, u1.ru_nivcsw - u0.ru_nivcsw))
        tiles_now = {id(index.loader.get(int(index._keyframe_tile[i]))) for i in r.keyframe_indices}
        first_use.append(bool(tiles_now - served))
        served |= tiles_now
        rows.append(len(r.points))
        centre = -T[:3, :3].T @ T[:3, 3]
        nearest = index.nearest_keyframes(centre, T[2, :3], 1, 60.0, 50.0)[0]
        tile_of_frame.append(grid.key_of(centre))
        if len(nearest) and not index._usable(nearest).all():
            misses += 1  # the nearest keyframe's tile was not loaded in time
        rss.append(rss_mib())
        loaded.append(len(index.loader.loaded_keys))
        next_frame += period
        time.sleep(max(0.0, next_frame - time.perf_counter()))
    gc.callbacks.remove(on_gc)
    load_after = os.getloadavg()
    if probe is not None:
        probe.stdin.write("stop\n")
        probe.stdin.flush()
        probe.wait(30)
        probe_log = np.load(probe_file)
    print("load average (1, 5, 15 min) before the drive " + " ".join(f"{v:.2f}" for v in load_before)
          + ", after " + " ".join(f"{v:.2f}" for v in load_after) + f" on {os.cpu_count()} CPUs")
    wall, cpu = np.asarray(wall), np.asarray(cpu)
    switch = np.zeros(len(priors), bool)
    for i in range(1, len(priors)):
        if tile_of_frame[i] != tile_of_frame[i - 1]:
            switch[max(0, i - 2):i + 3] = True  # the two frames before and after a tile switch

    def stats(sel, label):
        a, c = wall[sel], cpu[sel]
        print(f"retrieve k={args.k}, {label}: wall p50 {np.median(a):.3f} ms, p90 {np.percentile(a, 90):.3f} ms, "
              f"max {a.max():.2f} ms, {int((a > 5).sum())} frames over 5 ms; cpu p50 {np.median(c):.3f} ms, "
              f"p90 {np.percentile(c, 90):.3f} ms, max {c.max():.2f} ms (n={len(a)})")

    stats(np.ones(len(wall), bool), "all frames")
    slow = np.flatnonzero(wall > 5)
    if len(slow):
        print(f"frames over 5 ms (index: wall/cpu ms, tile switch nearby): " + ", ".join(
            f"{i}: {wall[i]:.1f}/{cpu[i]:.1f}{' S' if switch[i] else ''}" for i in slow[:40]))
    stats(switch, "frames around tile switches (+-2)")
    usage, first_use = np.asarray(usage), np.asarray(first_use)
    print(f"frames that read a tile for the first time since it was loaded: {int(first_use.sum())}")
    stats(first_use, "frames reading a newly loaded tile")
    for label, sel in (("all frames", np.ones(len(wall), bool)), ("frames over 5 ms wall", wall > 5),
                       ("frames over 5 ms cpu", cpu > 5), ("first reads of a tile", first_use)):
        if sel.any():
            u = usage[sel]
            print(f"retrieval thread, {label} (n={int(sel.sum())}), mean per frame: user {u[:, 0].mean():.2f} ms, "
                  f"system {u[:, 1].mean():.2f} ms, minor faults {u[:, 2].mean():.0f}, major faults {u[:, 3].mean():.2f}, "
                  f"voluntary switches {u[:, 4].mean():.2f}, involuntary {u[:, 5].mean():.2f}")
    heavy = np.flatnonzero(cpu > 5)
    if len(heavy):
        print("frames over 5 ms cpu (index: wall/cpu ms = user+system, minflt, majflt, vcsw/ivcsw, first read of a tile): "
              + ", ".join(f"{i}: {wall[i]:.1f}/{cpu[i]:.1f} = {usage[i, 0]:.0f}+{usage[i, 1]:.0f}, {usage[i, 2]:.0f}, "
                          f"{usage[i, 3]:.0f}, {usage[i, 4]:.0f}/{usage[i, 5]:.0f}{' F' if first_use[i] else ''}"
                          for i in heavy[:30]))
    if probe is not None:
        pt, pw, pc = probe_log[:, 0], probe_log[:, 1], probe_log[:, 2]
        print(f"control probe (own process, no map, same work every {period * 1e3:.0f} ms): wall p50 {np.median(pw):.3f} ms, "
              f"p90 {np.percentile(pw, 90):.3f} ms, max {pw.max():.2f} ms, {int((pw > 5).sum())} of {len(pw)} over 5 ms "
              f"({100 * (pw > 5).mean():.1f} %, drive: {100 * (wall > 5).mean():.1f} %); cpu p50 {np.median(pc):.3f} ms, "
              f"p90 {np.percentile(pc, 90):.3f} ms, max {pc.max():.2f} ms, {int((pc > 5).sum())} over 5 ms")
        frame_at = np.asarray(frame_at)
        window = 0.25  # s: a frame and a probe iteration this close were stalled by the same event
        for label, a, b in (("cpu", cpu, pc), ("wall", wall, pw)):
            heavy_probe = np.sort(pt[b > 5])

            def near(times):
                if not len(heavy_probe):
                    return np.zeros(len(times), bool)
                i = np.clip(np.searchsorted(heavy_probe, times), 1, len(heavy_probe)) - 1
                j = np.clip(i + 1, 0, len(heavy_probe) - 1)
                return np.minimum(np.abs(heavy_probe[i] - times), np.abs(heavy_probe[j] - times)) < window
            chance = near(frame_at).mean()  # of all frames: how often a frame is that close to a probe stall anyway
            print(f"  frames over 5 ms {label} within {window} s of a probe iteration over 5 ms {label}: "
                  f"{int(near(frame_at[a > 5]).sum())} of {int((a > 5).sum())} (any frame: {100 * chance:.0f} %)")
    print(f"rows per frame median {int(np.median(rows))}; frames whose nearest keyframe's tile was not loaded: "
          f"{misses}; tile switches {int(sum(tile_of_frame[i] != tile_of_frame[i - 1] for i in range(1, len(priors))))}")
    h = index.health()
    where_checked = (f"a child process (nice +{cfg.checker_niceness}{', own session' if cfg.checker_own_session else ''})"
                     if index.loader.checker else "the loader thread")
    print(f"loader: {h.loads} tiles loaded, {h.evictions} evicted, slowest open+verify {h.max_load_s:.2f} s, "
          f"loaded at once max {max(loaded)}, failed {len(h.failed)}; checks {index.loader.check_seconds:.1f} s wall "
          f"in {where_checked}")
    tick = os.sysconf("SC_CLK_TCK")
    loader_tid = index.loader._thread.native_id
    print(f"CPU time over the run: retrieval thread {time.thread_time():.1f} s, loader thread "
          f"{_task_cpu_s(f'/proc/self/task/{loader_tid}/stat', tick):.1f} s"
          + (f", checker process {_task_cpu_s(f'/proc/{index.loader.checker.pid}/stat', tick):.1f} s"
             if index.loader.checker and index.loader.checker.pid else ""))
    long_gc = [c for c in collections if c[2] > 1.0]
    print(f"garbage collections during the drive: {len(collections)}, over 1 ms: "
          + (", ".join(f"{t} gen{g} {ms:.0f} ms" for t, g, ms in long_gc[:10]) or "none")
          + (" (gc.freeze() after opening)" if args.gc_freeze else ""))
    rss = np.asarray(rss)
    print(f"RSS over the drive: min {rss.min():.0f} MiB, median {np.median(rss):.0f} MiB, max {rss.max():.0f} MiB")
    for km in range(0, int(driven[-1] // 1000) + 1):
        i = min(int(np.searchsorted(driven, km * 1000.0)), len(rss) - 1)
        print(f"  km {km:2d}: RSS {rss[i]:.0f} MiB, tiles loaded {loaded[i]}")
    index.close()
    if not args.keep:
        shutil.rmtree(out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
