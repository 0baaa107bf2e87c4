"""`pixloc-ros play BAG`: publish a rosbag2 at its recorded timing, with /clock, once subscribers are up."""
from __future__ import annotations

import argparse


def _remap(text: str) -> tuple[str, str]:
    if ":=" not in text:
        raise argparse.ArgumentTypeError(f"expected FROM:=TO, got {text!r}")
    src, dst = text.split(":=", 1)
    return src, dst


def register(subparsers) -> None:
    """Add the ``play`` sub-command."""
    p = subparsers.add_parser("play", help="replay a rosbag2 (MCAP/sqlite3) with /clock, without ros2 bag",
                              description=__doc__)
    p.add_argument("bag", help="rosbag2 folder (or .mcap file)")
    p.add_argument("--rate", type=float, default=1.0, help="playback speed factor (default 1)")
    p.add_argument("--loop", type=int, default=1, help="play the bag N times; /clock jumps back at each restart")
    p.add_argument("--topics", nargs="+", default=None, help="topics to play (default: all)")
    p.add_argument("--wait-for", nargs="+", default=None,
                   help="topics that need a subscriber before playing (default: image and camera_info topics)")
    p.add_argument("--wait-timeout", type=float, default=30.0,
                   help="seconds to wait for subscribers before failing; 0: start at once (default 30)")
    p.add_argument("--no-clock", action="store_true", help="do not publish /clock")
    p.add_argument("--clock-hz", type=float, default=100.0, help="/clock rate between messages (default 100)")
    p.add_argument("--remap", type=_remap, nargs="+", default=[], metavar="FROM:=TO", help="rename topics")
    p.add_argument("--pace-topic", metavar="TOPIC",
                   help="before each image, pause (bag time too) until the previous image was answered by a "
                        "message on TOPIC, e.g. /pixloc_localizer/status: every frame is processed, however "
                        "slow the node")
    p.add_argument("--pace-timeout", type=float, default=120.0, help="seconds to wait per image when pacing")
    p.add_argument("--pace-images", nargs="+", default=None, metavar="TOPIC",
                   help="pace only before these image topics (default: every image topic); a camera rig's "
                        "node answers once per instant: pace on one camera, e.g. /front/image_raw")
    p.add_argument("--best-effort", nargs="+", default=[], metavar="TOPIC",
                   help="publish these topics best effort, as a driver with the sensor-data QoS does "
                        "(default: every topic reliable)")
    p.set_defaults(func=run)


def run(args) -> int:
    """Play the bag; returns the exit status (1 when subscribers never came)."""
    import rclpy

    from pixloc_ros.ros.player import BagPlayer, PlayOptions

    options = PlayOptions(rate=args.rate, loop=args.loop, topics=args.topics, wait_for=args.wait_for,
                          wait_timeout_s=args.wait_timeout, clock=not args.no_clock, clock_hz=args.clock_hz,
                          remap=dict(args.remap), pace_topic=args.pace_topic, pace_timeout_s=args.pace_timeout,
                          pace_images=args.pace_images,
                          best_effort=tuple(args.best_effort))
    rclpy.init()
    node = rclpy.create_node("pixloc_bag_player")
    try:
        player = BagPlayer(node, args.bag, options)
        node.get_logger().info(f"playing {args.bag}: {len(player.publishers)} topics, waiting for subscribers")
        stats = player.play()
        node.get_logger().info(f"published {stats.messages} messages in {stats.wall_s:.2f} s "
                               f"({stats.loops} loop(s) of {stats.bag_s:.2f} s bag time)"
                               + (f"; {stats.pace_timeouts} pace timeouts" if args.pace_topic else ""))
        return 0
    except (TimeoutError, ValueError, FileNotFoundError) as err:
        node.get_logger().error(str(err))
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
