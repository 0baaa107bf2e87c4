"""Replay a rosbag2 (MCAP or sqlite3) at its recorded timing, with /clock, without `ros2 bag`.

The bag is read by ``data/bags/`` (the ``rosbags`` library: pure Python; ros2cli and
rosbag2_py are not on PyPI) and each message is published as its raw CDR bytes
(``Publisher.publish(bytes)``), so nothing is deserialised on the way. /clock carries the bag
time (as ``ros2 bag play --clock``): before each message and at ``clock_hz`` in between, so
nodes with ``use_sim_time`` follow the bag.

Before playing, the player waits until (1) every ``wait_for`` topic has a matched subscriber and
(2) every subscriber the graph shows on a played topic is matched to our publisher (discovery
of endpoints is asynchronous: a node can be listed before it is connected). Topics recorded
transient-local (e.g. /tf_static) are published transient-local, so late joiners get them.

Pacing (``pace_topic``): before each image (and at the end) the player pauses, bag time and
/clock included, until the previous image was answered by one message on that topic (e.g. the
localizer's status). A node slower than real time then sees every frame, in order, at its
recorded spacing otherwise: a deterministic replay for evaluation and tests, where real-time
playback would make the node drop frames.
"""
from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rclpy.duration import Duration
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock

from pixloc_ros.data.bags import BagTopic, bag_topics, iter_raw
from pixloc_ros.ros.compat import publisher_count
from pixloc_ros.ros.conversions import ns_to_stamp

# Types whose topics the player waits for by default: without these nothing downstream runs.
DEFAULT_WAIT_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage", "sensor_msgs/msg/CameraInfo")
# Types a paced replay holds back until the previous one was answered.
PACED_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")


@dataclass
class PlayOptions:
    """How to play a bag."""

    rate: float = 1.0  # playback speed factor (2.0: twice as fast)
    loop: int = 1  # times to play the bag; each restart sends /clock back to the bag's start
    topics: Sequence[str] | None = None  # topics to play; None: all
    wait_for: Sequence[str] | None = None  # topics needing a subscriber first; None: image/camera_info topics
    wait_timeout_s: float = 30.0  # give up waiting after this (raises TimeoutError); <= 0: do not wait
    clock: bool = True  # publish /clock
    clock_hz: float = 100.0  # /clock rate between messages
    remap: dict[str, str] = field(default_factory=dict)  # bag topic -> published topic
    ack_timeout_s: float = 5.0  # at the end, wait this long for reliable subscribers to acknowledge
    pace_topic: str | None = None  # before each image, wait for the previous one's answer here (module doc)
    pace_timeout_s: float = 120.0  # give up waiting for one pace message after this (then go on)
    # Image topics a paced replay holds back; None: every image topic. A camera rig answers once per
    # instant, so only one of its cameras (the anchor) paces: its other images follow unpaced.
    pace_images: Sequence[str] | None = None
    best_effort: Sequence[str] = ()  # topics published best effort (a sensor-data driver), the others reliable


@dataclass
class PlayStats:
    """What a play did."""

    messages: int  # messages published (all loops)
    loops: int
    wall_s: float  # wall time of the playback itself (after waiting for subscribers)
    bag_s: float  # bag time covered per loop
    per_topic: dict[str, int]
    pace_timeouts: int = 0  # images after which no pace message came in time


def message_class(msgtype: str):
    """'sensor_msgs/msg/Image' -> the rclpy message class; ImportError when not installed."""
    pkg, kind, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{pkg}.{kind}"), name)


def _publisher_qos(topic: BagTopic, best_effort: bool = False) -> QoSProfile:
    """Reliable (compatible with reliable and best-effort subscribers), or best effort when asked
    (what a sensor driver with the sensor-data QoS offers); transient-local when recorded so."""
    if best_effort and not topic.transient_local:
        return QoSProfile(depth=5, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.BEST_EFFORT,
                          durability=DurabilityPolicy.VOLATILE)
    if topic.transient_local:
        # Keep every recorded message for late joiners (several static broadcasters, one message each).
        return QoSProfile(depth=max(1, min(1000, topic.count)), history=HistoryPolicy.KEEP_LAST,
                          reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    return QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)


class BagPlayer:
    """Publishes the messages of one bag from ``node`` (spun by the player only while pacing)."""

    def __init__(self, node, bag: str | Path, options: PlayOptions | None = None,
                 log: Callable[[str], None] | None = None):
        self.node = node
        self.options = options or PlayOptions()
        if self.options.rate <= 0:
            raise ValueError(f"Playback rate must be > 0, got {self.options.rate}")
        self._log = log or (lambda text: node.get_logger().info(text))
        self.path = Path(bag)
        by_topic = {t.name: t for t in bag_topics(self.path)}
        wanted = set(self.options.topics) if self.options.topics is not None else set(by_topic)
        missing = sorted((wanted | set(self.options.best_effort)) - set(by_topic))
        if missing:
            raise ValueError(f"Topics {missing} are not in {self.path} (it has {sorted(by_topic)})")
        self.publishers = {}
        self.types = {}
        for name in sorted(wanted):
            topic = by_topic[name]
            try:
                cls = message_class(topic.msgtype)
            except (ImportError, AttributeError, ValueError):
                self._log(f"skipping {name}: message type {topic.msgtype} is not installed")
                continue
            out_topic = self.options.remap.get(name, name)
            self.publishers[name] = node.create_publisher(cls, out_topic,
                                                          _publisher_qos(topic, name in self.options.best_effort))
            self.types[name] = topic.msgtype
        self.clock_pub = node.create_publisher(Clock, "/clock", 10) if self.options.clock else None
        self._pace_sub = None
        self._paced = 0  # pace messages received

    def _on_pace(self, _msg) -> None:
        self._paced += 1

    # ---------------------------------------------------------------------------------- waiting
    def _default_wait_topics(self) -> list[str]:
        return sorted(t for t, msgtype in self.types.items() if msgtype in DEFAULT_WAIT_TYPES)

    def _compatible_subscribers(self, pub) -> list:
        """The graph's subscribers of ``pub``'s topic that its QoS can match: a best-effort publisher
        never matches a reliable subscriber, a volatile one never a transient-local subscriber (such a
        subscriber is listed forever and never connects: waiting for it would only time out)."""
        infos = self.node.get_subscriptions_info_by_topic(pub.topic_name)
        ours = pub.qos_profile
        return [i for i in infos
                if not (ours.reliability == ReliabilityPolicy.BEST_EFFORT
                        and i.qos_profile.reliability == ReliabilityPolicy.RELIABLE)
                and not (ours.durability == DurabilityPolicy.VOLATILE
                         and i.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL)]

    def unmatched_topics(self, wait_for: Sequence[str]) -> list[str]:
        """Played topics still waiting: no matched subscriber (``wait_for``), or fewer matched than
        the graph lists with a QoS ours can match (a subscriber discovered but not yet connected)."""
        pending = []
        for topic, pub in self.publishers.items():
            matched = pub.get_subscription_count()
            listed = len(self._compatible_subscribers(pub))
            if (topic in wait_for and matched == 0) or matched < listed:
                pending.append(topic)
        return pending

    def _describe_subscribers(self, topic: str) -> str:
        """"/t (best effort): 0 matched; subscribers listed: node_a reliable, ..." for a timeout."""
        pub = self.publishers[topic]
        infos = self.node.get_subscriptions_info_by_topic(pub.topic_name)

        def reliability(qos) -> str:
            return "reliable" if qos.reliability == ReliabilityPolicy.RELIABLE else "best effort"

        listed = ", ".join(f"{i.node_name} {reliability(i.qos_profile)}" for i in infos) or "none"
        return (f"{topic} ({reliability(pub.qos_profile)}): {pub.get_subscription_count()} matched; "
                f"subscribers listed: {listed}")

    def wait_for_subscribers(self) -> None:
        """Block until the subscribers are matched (see module doc); TimeoutError names the topics."""
        if self.options.wait_timeout_s <= 0:
            return
        wait_for = list(self.options.wait_for) if self.options.wait_for is not None else self._default_wait_topics()
        unknown = sorted(set(wait_for) - set(self.publishers))
        if unknown:
            raise ValueError(f"Cannot wait for {unknown}: not played from this bag")
        unknown = sorted(set(self.options.pace_images or ()) - set(self.publishers))
        if unknown:
            raise ValueError(f"Cannot pace on {unknown}: not played from this bag")
        deadline = time.monotonic() + self.options.wait_timeout_s
        while pending := self.unmatched_topics(wait_for):
            if time.monotonic() > deadline:
                raise TimeoutError(f"No (or not all) subscribers matched on {pending} after "
                                   f"{self.options.wait_timeout_s:.0f} s: "
                                   + "; ".join(self._describe_subscribers(t) for t in pending))
            time.sleep(0.02)
        if self.options.pace_topic:
            self._subscribe_pace(deadline)

    def _subscribe_pace(self, deadline: float) -> None:
        """Subscribe the pace topic once its publisher is known (its type comes from the graph)."""
        topic = self.options.pace_topic
        while not (infos := self.node.get_publishers_info_by_topic(topic)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"No publisher of the pace topic {topic} after {self.options.wait_timeout_s:.0f} s")
            time.sleep(0.02)
        cls = message_class(infos[0].topic_type)
        qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        self._pace_sub = self.node.create_subscription(cls, topic, self._on_pace, qos, raw=True)
        while publisher_count(self._pace_sub, self.node) < len(infos):
            if time.monotonic() > deadline:
                raise TimeoutError(f"Pace topic {topic}: publishers never matched")
            time.sleep(0.02)

    def _pause_for_pace(self, count: int, stamp_ns: int) -> tuple[float, bool]:
        """Spin until more than ``count`` pace messages arrived; (seconds waited, False on timeout)."""
        import rclpy

        started = time.perf_counter()
        deadline = time.monotonic() + self.options.pace_timeout_s
        while self._paced <= count:
            if time.monotonic() > deadline:
                self._log(f"no message on {self.options.pace_topic} within {self.options.pace_timeout_s:.0f} s "
                          f"(before the message at {stamp_ns * 1e-9:.3f} s); going on")
                return time.perf_counter() - started, False
            rclpy.spin_once(self.node, timeout_sec=0.05)
        return time.perf_counter() - started, True

    # ---------------------------------------------------------------------------------- playing
    def _publish_clock(self, bag_ns: int) -> None:
        if self.clock_pub is not None:
            self.clock_pub.publish(Clock(clock=ns_to_stamp(bag_ns)))

    def _sleep_until(self, wall_target: float, bag_target: int, bag_start: int, wall_start: float) -> None:
        """Sleep until ``wall_target`` (perf_counter), publishing /clock along the way (never past
        ``bag_target``, the next message's time, so that /clock only moves forward)."""
        period = 1.0 / self.options.clock_hz if self.clock_pub is not None and self.options.clock_hz > 0 else None
        while True:
            now = time.perf_counter()
            remaining = wall_target - now
            if remaining <= 0:
                return
            if period is None or remaining <= period:
                time.sleep(remaining)
                return
            time.sleep(period)
            elapsed_ns = int((time.perf_counter() - wall_start) * self.options.rate * 1e9)
            self._publish_clock(min(bag_start + elapsed_ns, bag_target))

    def play(self) -> PlayStats:
        """Wait for subscribers, then publish every message at its recorded time (all loops)."""
        self.wait_for_subscribers()
        per_topic = {topic: 0 for topic in self.publishers}
        count = pace_timeouts = 0
        bag_start = bag_end = None
        wall_begin = time.perf_counter()
        for _ in range(max(1, self.options.loop)):
            wall_start = None
            pending = None  # pace count before the last image, until that image is answered
            for msg in iter_raw(self.path, list(self.publishers)):
                stamp_ns = msg.stamp_ns
                if wall_start is None:
                    wall_start, bag_start = time.perf_counter(), stamp_ns
                    self._publish_clock(bag_start)
                bag_end = stamp_ns
                paced = (self._pace_sub is not None and msg.msgtype in PACED_TYPES
                         and (self.options.pace_images is None or msg.topic in self.options.pace_images))
                if paced and pending is not None:
                    # Wait before the next image, not right after the last one: the CameraInfo
                    # and the odometry recorded just after it must still reach the node.
                    waited, ok = self._pause_for_pace(pending, stamp_ns)
                    wall_start += waited  # bag time stood still meanwhile
                    pace_timeouts += not ok
                target = wall_start + (stamp_ns - bag_start) * 1e-9 / self.options.rate
                self._sleep_until(target, stamp_ns, bag_start, wall_start)
                self._publish_clock(stamp_ns)
                if paced:
                    pending = self._paced
                self.publishers[msg.topic].publish(msg.data)
                per_topic[msg.topic] += 1
                count += 1
            if pending is not None:
                pace_timeouts += not self._pause_for_pace(pending, bag_end)[1]
        wall = time.perf_counter() - wall_begin
        timeout = Duration(seconds=self.options.ack_timeout_s)
        for name, pub in self.publishers.items():
            if name not in self.options.best_effort:  # nothing acknowledges best effort
                pub.wait_for_all_acked(timeout)
        bag_s = 0.0 if bag_start is None else (bag_end - bag_start) * 1e-9
        return PlayStats(count, max(1, self.options.loop), wall, bag_s, per_topic, pace_timeouts)
