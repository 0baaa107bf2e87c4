#!/usr/bin/env python3
"""Which camera frames arrive over real Fast DDS, by QoS and transport profile (README, "QoS").

    python scripts/bench_dds_frames.py                 # the README's table (about 2 minutes)
    python scripts/bench_dds_frames.py --sizes 1920x1080:bgr8 --count 90 --rate 30

Each case runs a subscriber process and a publisher process (one DDS participant each, as a camera
driver and the node are), on loopback in a domain of their own: the publisher sends ``--count``
frames at ``--rate`` Hz once matched and the subscriber counts what arrived and the latency
(receive time minus the stamp, both wall clock, including rclpy's deserialisation). The profile
column is the publisher's Fast DDS profile, set as FASTRTPS_ and FASTDDS_DEFAULT_PROFILES_FILE
(Fast DDS 2.x and 3.x read one each; the subscriber's is irrelevant: the shared-memory segment that
limits best-effort samples is the sender's).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "config" / "fastdds_large_frames.xml"
CASES = [  # (publisher reliability, publisher profile, subscriber reliability)
    ("best_effort", None, "best_effort"),
    ("reliable", None, "best_effort"),
    ("reliable", None, "reliable"),
    ("best_effort", PROFILE, "best_effort"),
]


def _qos(reliability: str, depth: int):
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(depth=depth, history=HistoryPolicy.KEEP_LAST,
                      reliability=ReliabilityPolicy.RELIABLE if reliability == "reliable"
                      else ReliabilityPolicy.BEST_EFFORT)


def subscriber(args) -> None:
    import rclpy
    from sensor_msgs.msg import Image

    rclpy.init()
    node = rclpy.create_node("frames_sub")
    latencies = []
    node.create_subscription(Image, "frames", lambda m: latencies.append(
        time.time() - (m.header.stamp.sec + m.header.stamp.nanosec * 1e-9)), _qos(args.reliability, 5))
    deadline = time.monotonic() + args.listen_s
    while time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
    print(json.dumps({"received": len(latencies), "latencies": latencies}), flush=True)
    node.destroy_node()
    rclpy.try_shutdown()


def publisher(args) -> None:
    import rclpy
    from sensor_msgs.msg import Image

    rclpy.init()
    node = rclpy.create_node("frames_pub")
    pub = node.create_publisher(Image, "frames", _qos(args.reliability, 10))
    deadline = time.monotonic() + 30
    while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
    time.sleep(1.0)  # both sides matched (discovery is asynchronous)
    w, h = (int(v) for v in args.size.split("x"))
    msg = Image(width=w, height=h, encoding=args.encoding, step=3 * w, data=bytes(3 * w * h))
    start = time.monotonic()
    for i in range(args.count):
        now = time.time()
        msg.header.stamp.sec, msg.header.stamp.nanosec = int(now), int((now % 1) * 1e9)
        pub.publish(msg)
        time.sleep(max(0.0, start + (i + 1) / args.rate - time.monotonic()))
    time.sleep(1.0)
    node.destroy_node()
    rclpy.try_shutdown()


def run_case(pub_rel: str, profile: Path | None, sub_rel: str, size: str, encoding: str, count: int, rate: float,
             domain: int) -> dict:
    from pixloc_ros.ros.compat import FASTDDS_PROFILE_VARIABLES, fastdds_profile_env
    from pixloc_ros.ros.session import ros_env

    env = ros_env(domain)
    for name in FASTDDS_PROFILE_VARIABLES:
        env.pop(name, None)
    me = [sys.executable, __file__]
    listen_s = 6.0 + count / rate
    sub = subprocess.Popen([*me, "--role", "sub", "--reliability", sub_rel, "--listen-s", str(listen_s)], env=env,
                           stdout=subprocess.PIPE, text=True)
    pub_env = dict(env, **(fastdds_profile_env(str(profile)) if profile else {}))
    pub = subprocess.run([*me, "--role", "pub", "--reliability", pub_rel, "--size", size, "--encoding", encoding,
                          "--count", str(count), "--rate", str(rate)], env=pub_env, timeout=120)
    out, _ = sub.communicate(timeout=listen_s + 60)
    if pub.returncode != 0 or sub.returncode != 0:
        raise RuntimeError(f"a case process failed (publisher {pub.returncode}, subscriber {sub.returncode})")
    return json.loads(out.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--role", choices=("sub", "pub"), help=argparse.SUPPRESS)
    p.add_argument("--reliability", help=argparse.SUPPRESS)
    p.add_argument("--listen-s", type=float, help=argparse.SUPPRESS)
    p.add_argument("--size", help=argparse.SUPPRESS)
    p.add_argument("--encoding", help=argparse.SUPPRESS)
    p.add_argument("--sizes", nargs="+", default=["640x480:rgb8", "1280x960:rgb8", "1920x1080:bgr8"],
                   help="WxH:encoding of the frames (3 bytes a pixel)")
    p.add_argument("--count", type=int, default=20, help="frames per case")
    p.add_argument("--rate", type=float, default=10.0, help="frames per second")
    args = p.parse_args()
    if args.role == "sub":
        subscriber(args)
        return 0
    if args.role == "pub":
        publisher(args)
        return 0
    import numpy as np

    domain = 1 + (os.getpid() % 100)
    print(f"{args.count} frames at {args.rate:g} Hz per case, loopback, ROS_DOMAIN_ID {domain}")
    print("| publisher | subscriber | " + " | ".join(s.replace(":", " ") for s in args.sizes) + " |")
    print("|---|---|" + "---|" * len(args.sizes))
    for pub_rel, profile, sub_rel in CASES:
        cells = []
        for spec in args.sizes:
            size, encoding = spec.split(":")
            r = run_case(pub_rel, profile, sub_rel, size, encoding, args.count, args.rate, domain)
            lat = np.array(r["latencies"]) * 1e3
            cells.append(f"{r['received']}/{args.count}" + (f" (p50 {np.median(lat):.0f} ms, max {lat.max():.0f})"
                                                               if len(lat) else ""))
        who = f"{pub_rel.replace('_', ' ')}, {PROFILE.name if profile else 'Fast DDS defaults'}"
        print(f"| {who} | {sub_rel.replace('_', ' ')} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
