#!/usr/bin/env python3
"""Soak: replay a bag through the node in a loop for a long time; does the node's memory, thread
count or open-file count grow?

    python scripts/soak.py --bag W/queries/snow --map W/map.pxmap --minutes 30 --json soak.json

Starts the node as `ros2 run` does (config/localize.yaml, sim time, DDS on loopback in a domain
of its own), plays the bag with `pixloc-ros play --loop` paced by the node's status (every frame
processed, however slow the machine; each loop sends /clock back, so every loop also exercises a
reset), and samples the node process every ``--sample-s`` seconds from /proc: resident memory
(VmRSS), threads, open file descriptors. At the end it prints the RSS slope after the warm-up, MB
per minute, two ways: a least-squares line through every sample, and one through each minute's
lowest sample ("resting" RSS: a sample taken while a frame is in flight includes that frame's
transient buffers, tens of MB on a CPU, which makes the plain fit noisy); the RSS, thread and fd
ranges, and the frames answered; and writes every sample to ``--json``. Linux only (/proc).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

NODE = "/pixloc_localizer"


def sample(pid: int) -> dict:
    """VmRSS (MB), threads and open fds of ``pid``."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return {"rss_mb": int(fields["VmRSS"].split()[0]) / 1024.0, "threads": int(fields["Threads"]),
            "fds": len(os.listdir(f"/proc/{pid}/fd"))}


def slope_per_min(times_s: list[float], values: list[float]) -> float:
    """Least-squares slope of ``values`` over ``times_s``, per minute."""
    import numpy as np

    t = np.asarray(times_s) / 60.0
    return float(np.polyfit(t, np.asarray(values), 1)[0]) if len(t) >= 2 else float("nan")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bag", required=True, help="query drive (rosbag2) to loop")
    p.add_argument("--map", required=True, help="compiled map built with --weights")
    p.add_argument("--weights", default=str(REPO / "pixloc_ros" / "assets" / "pixloc_synth_vgg16.safetensors"))
    p.add_argument("--params", default=str(REPO / "config" / "localize.yaml"))
    p.add_argument("--minutes", type=float, default=30.0, help="how long to soak")
    p.add_argument("--warmup-minutes", type=float, default=5.0, help="samples before this are not fitted")
    p.add_argument("--sample-s", type=float, default=2.0, help="seconds between samples")
    p.add_argument("--cpu-threads", type=int, default=1, help="the node's torch threads")
    p.add_argument("--json", help="write the samples and the summary here")
    args = p.parse_args()

    from pixloc_ros.msg import LocalizationStatus
    from pixloc_ros.ros.compat import publisher_count
    from pixloc_ros.ros.replay import DRIVE_TOPICS
    from pixloc_ros.ros.session import ChildProcess, RosContext, domain_id_for, ros_env

    domain = domain_id_for("soak")
    env = ros_env(domain)
    env["RCUTILS_COLORIZED_OUTPUT"] = "0"
    logs = Path(args.json).with_suffix("") if args.json else Path("soak_logs")
    logs.mkdir(parents=True, exist_ok=True)
    node_args = ["--ros-args", "--params-file", args.params, "-p", f"map_file:={args.map}",
                 "-p", f"weights:={args.weights}", "-p", "device:=cpu", "-p", "use_sim_time:=true",
                 "-p", f"cpu_threads:={args.cpu_threads}"]
    ros = RosContext(domain)
    node = ChildProcess([sys.executable, "-m", "pixloc_ros.ros.start", *node_args], env, logs / "node.log")
    player = None
    answered = [0]  # statuses received: frames the node answered
    samples = []
    try:
        listener = ros.node("soak_listener")
        sub = listener.create_subscription(LocalizationStatus, f"{NODE}/status",
                                           lambda _msg: answered.__setitem__(0, answered[0] + 1), 100)
        if not ros.spin_until(lambda: publisher_count(sub, listener) > 0 or not node.alive(), timeout=300) \
                or not node.alive():
            print(f"the node did not come up:\n{node.log()[-3000:]}", file=sys.stderr)
            return 1
        player = ChildProcess([sys.executable, "-m", "pixloc_ros.cli", "play", args.bag, "--loop", "100000",
                               "--pace-topic", f"{NODE}/status", "--pace-timeout", "60",
                               "--wait-for", *DRIVE_TOPICS, "--wait-timeout", "60"], env, logs / "player.log")
        started = time.monotonic()
        next_sample = started
        end = started + args.minutes * 60.0
        while time.monotonic() < end:
            ros.spin_until(lambda: time.monotonic() >= next_sample, timeout=args.sample_s + 1)
            if not node.alive() or not player.alive():
                print(f"{'node' if not node.alive() else 'player'} ended early", file=sys.stderr)
                break
            s = sample(node.proc.pid)
            s.update(t_s=round(time.monotonic() - started, 1), frames=answered[0])
            samples.append(s)
            next_sample += args.sample_s
            if len(samples) % max(1, int(round(60 / args.sample_s))) == 0:
                print(f"{s['t_s'] / 60:5.1f} min: RSS {s['rss_mb']:.1f} MB, {s['threads']} threads, {s['fds']} fds, "
                      f"{s['frames']} frames", flush=True)
    finally:
        if player is not None:
            player.stop()
        node.stop()
        ros.close()

    warm = [s for s in samples if s["t_s"] >= args.warmup_minutes * 60.0]
    resting = {}  # minute -> the lowest sample of that minute
    for s in warm:
        minute = int(s["t_s"] // 60)
        if minute not in resting or s["rss_mb"] < resting[minute]["rss_mb"]:
            resting[minute] = s
    resting_samples = [resting[m] for m in sorted(resting)]
    summary = {
        "minutes": round(samples[-1]["t_s"] / 60.0, 2) if samples else 0.0,
        "frames": samples[-1]["frames"] if samples else 0,
        "resets": node.log().count("Resetting the localization"),
        "warmup_minutes": args.warmup_minutes,
        "rss_slope_mb_per_min": round(slope_per_min([s["t_s"] for s in warm], [s["rss_mb"] for s in warm]), 4),
        "resting_rss_slope_mb_per_min": round(slope_per_min([s["t_s"] for s in resting_samples],
                                                            [s["rss_mb"] for s in resting_samples]), 4),
        "rss_mb_after_warmup": [round(min(s["rss_mb"] for s in warm), 1), round(max(s["rss_mb"] for s in warm), 1)]
        if warm else None,
        "resting_rss_mb_per_minute": [round(s["rss_mb"], 1) for s in resting_samples],
        "threads": sorted({s["threads"] for s in samples}),
        "threads_after_warmup": sorted({s["threads"] for s in warm}),
        "fds_after_warmup": [min(s["fds"] for s in warm), max(s["fds"] for s in warm)] if warm else None,
        "errors_in_log": node.log().count("[ERROR]") + node.log().count("[FATAL]"),
    }
    print(json.dumps(summary, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "samples": samples}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
