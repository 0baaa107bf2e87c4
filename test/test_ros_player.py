"""`pixloc-ros play`: a rosbag2 replayed over real DDS (loopback) at recorded timing with /clock."""
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy")
from geometry_msgs.msg import TransformStamped  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from rosgraph_msgs.msg import Clock  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402
from tf2_msgs.msg import TFMessage  # noqa: E402

from pixloc_ros.ros.conversions import ns_to_stamp, rgb_to_image, stamp_to_ns  # noqa: E402
from pixloc_ros.ros.player import _publisher_qos  # noqa: E402
from ros_testing import ChildProcess, python_cmd, ros, ros_env, write_bag  # noqa: E402,F401 (ros: the fixture)

pytestmark = pytest.mark.ros
REPO_ROOT = Path(__file__).resolve().parents[1]
T0 = 1_700_000_000_000_000_000
N_IMAGES, IMAGE_PERIOD, ODOM_PERIOD = 8, 100_000_000, 20_000_000


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    rng = np.random.default_rng(1)
    msgs = []
    images = {}
    for i in range(N_IMAGES):
        t = T0 + i * IMAGE_PERIOD
        rgb = rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)
        images[t] = rgb
        msgs.append(("/camera/image_raw", "sensor_msgs/msg/Image", t, rgb_to_image(rgb, t, "camera_optical_frame")))
        info = CameraInfo(width=6, height=4)
        info.header.stamp = ns_to_stamp(t)
        msgs.append(("/camera/camera_info", "sensor_msgs/msg/CameraInfo", t, info))
    for i in range(N_IMAGES * IMAGE_PERIOD // ODOM_PERIOD):
        t = T0 + i * ODOM_PERIOD + 1
        odom = Odometry(child_frame_id="base_link")
        odom.header.stamp = ns_to_stamp(t)
        odom.pose.pose.position.x = float(i)
        msgs.append(("/odom", "nav_msgs/msg/Odometry", t, odom))
    static = TransformStamped(child_frame_id="camera_optical_frame")
    static.header.frame_id = "base_link"
    msgs.append(("/tf_static", "tf2_msgs/msg/TFMessage", T0, TFMessage(transforms=[static])))
    path = write_bag(tmp_path_factory.mktemp("bag") / "drive", msgs)
    return path, images


def test_play_publishes_everything_at_recorded_timing_with_clock(ros, bag, tmp_path):
    path, images = bag
    player = ChildProcess(python_cmd("-m", "pixloc_ros.cli", "play", str(path), "--loop", "2", "--wait-timeout", "60"),
                          ros_env(ros.domain_id), tmp_path / "player.log")
    try:
        node = ros.node("player_probe")
        got = {"image": [], "info": [], "odom": [], "clock": [], "tf": []}
        # Reliable readers: the player waits until its writers have matched the readers, but a
        # best-effort reader may match the writer a moment later (discovery is per side) and lose
        # the first message; a reliable one gets it re-sent.
        node.create_subscription(Image, "/camera/image_raw",
                                 lambda m: got["image"].append((time.perf_counter(), m)), 100)
        node.create_subscription(CameraInfo, "/camera/camera_info", lambda m: got["info"].append(m), 100)
        node.create_subscription(Odometry, "/odom", lambda m: got["odom"].append(m), 100)
        node.create_subscription(Clock, "/clock", lambda m: got["clock"].append(stamp_to_ns(m.clock)),
                                 QoSProfile(depth=100, reliability=ReliabilityPolicy.BEST_EFFORT))
        node.create_subscription(TFMessage, "/tf_static", lambda m: got["tf"].append(m),
                                 QoSProfile(depth=10, durability=DurabilityPolicy.TRANSIENT_LOCAL))
        n_odom = N_IMAGES * IMAGE_PERIOD // ODOM_PERIOD
        done = ros.spin_until(lambda: not player.alive() and len(got["image"]) == 2 * N_IMAGES
                              and len(got["odom"]) == 2 * n_odom, timeout=60)
        assert player.wait(10) == 0, player.log()
        assert done, (f"received {[(k, len(v)) for k, v in got.items()]}\n{player.log()}")
    finally:
        player.stop()
    assert len(got["info"]) == 2 * N_IMAGES and len(got["tf"]) >= 1
    assert [o.pose.pose.position.x for o in got["odom"]] == 2 * [float(i) for i in range(n_odom)]
    # Content is the recorded content.
    for _, msg in got["image"]:
        rgb = np.frombuffer(msg.data, np.uint8).reshape(4, 6, 3)
        np.testing.assert_array_equal(rgb, images[stamp_to_ns(msg.header.stamp)])
    # Timing: arrival intervals match the recorded intervals (loaded 2-core box: generous bound).
    for loop in range(2):
        arrivals = np.array([a for a, _ in got["image"][loop * N_IMAGES:(loop + 1) * N_IMAGES]])
        stamps = np.array([stamp_to_ns(m.header.stamp) for _, m in got["image"][loop * N_IMAGES:(loop + 1) * N_IMAGES]])
        err = (arrivals - arrivals[0]) - (stamps - stamps[0]) * 1e-9
        assert np.abs(err).max() < 0.05, f"timing errors {err}"
    # /clock: bag time, covering the bag, going back exactly once (the second loop).
    clock = np.array(got["clock"])
    assert clock.min() == T0 and clock.max() >= T0 + (N_IMAGES - 1) * IMAGE_PERIOD
    assert clock.max() <= T0 + N_IMAGES * IMAGE_PERIOD
    assert int(np.sum(np.diff(clock) < 0)) == 1
    assert len(clock) > 4 * N_IMAGES  # published between messages too, not only with them


def answer_each(ros, player, ack_pub, acks: list, came_at) -> None:
    """A consumer 0.3 s slow: item k (an image, or a rig's instant) is answered on ``ack_pub`` 0.3 s
    after ``came_at(k)`` (its arrival time, None while it has not come); each answer's time goes to
    ``acks``. Returns when the player exited 0."""
    from std_msgs.msg import Empty

    def step():
        came = came_at(len(acks))
        if came is not None and time.perf_counter() - came > 0.3:
            ack_pub.publish(Empty())
            acks.append(time.perf_counter())
        return not player.alive()

    assert ros.spin_until(step, timeout=90), player.log()
    assert player.wait(10) == 0, player.log()


def test_paced_play_waits_for_the_consumer_after_each_image(ros, bag, tmp_path):
    """A consumer 3x slower than the camera still sees every image; bag time waits for it."""
    from std_msgs.msg import Empty

    path, _ = bag
    node = ros.node("slow_consumer")
    ack_pub = node.create_publisher(Empty, "/pace_ack", 10)
    player = ChildProcess(python_cmd("-m", "pixloc_ros.cli", "play", str(path), "--topics", "/camera/image_raw",
                                     "/odom", "--pace-topic", "/pace_ack", "--wait-timeout", "60"),
                          ros_env(ros.domain_id), tmp_path / "player.log")
    try:
        arrivals, acks, odom_at_image = [], [], []
        odoms = []
        node.create_subscription(Odometry, "/odom", odoms.append, 100)
        node.create_subscription(Image, "/camera/image_raw",
                                 lambda m: (arrivals.append(time.perf_counter()), odom_at_image.append(len(odoms))), 10)

        # answer each image 0.3 s after it came (the images are 0.1 s apart)
        answer_each(ros, player, ack_pub, acks, lambda k: arrivals[k] if k < len(arrivals) else None)
    finally:
        player.stop()
    assert len(arrivals) == N_IMAGES, player.log()
    # Each image came after the previous one was answered: none queued up behind a busy consumer.
    assert all(arrivals[k + 1] > acks[k] for k in range(N_IMAGES - 1))
    # Bag time stood still while waiting: the odometry in between kept its place (5 per image period).
    steps = np.diff(odom_at_image)
    assert np.all(np.abs(steps - IMAGE_PERIOD // ODOM_PERIOD) <= 1), steps


def test_paced_rig_play_waits_once_per_instant(ros, tmp_path):
    """--pace-images: a rig's node answers once per instant; pacing on its first camera lets the
    other camera's image of the same instant through at once and holds the next instant back."""
    from std_msgs.msg import Empty

    msgs = []
    for i in range(4):
        t = T0 + i * IMAGE_PERIOD
        for name in ("a", "b"):
            msgs.append((f"/{name}/image_raw", "sensor_msgs/msg/Image", t,
                         rgb_to_image(np.zeros((2, 2, 3), np.uint8), t, f"{name}_optical_frame")))
    path = write_bag(tmp_path / "rig", msgs)
    node = ros.node("rig_consumer")
    ack_pub = node.create_publisher(Empty, "/rig_ack", 10)
    got = {"a": [], "b": []}
    for name in got:
        node.create_subscription(Image, f"/{name}/image_raw", lambda m, n=name: got[n].append(time.perf_counter()), 10)
    player = ChildProcess(python_cmd("-m", "pixloc_ros.cli", "play", str(path), "--pace-topic", "/rig_ack",
                                     "--pace-images", "/a/image_raw", "--wait-timeout", "60"),
                          ros_env(ros.domain_id), tmp_path / "player.log")
    acks = []
    try:  # answer each instant 0.3 s after both its images came (they are 0.1 s apart)
        answer_each(ros, player, ack_pub, acks,
                    lambda k: max(got["a"][k], got["b"][k]) if k < min(len(got["a"]), len(got["b"])) else None)
    finally:
        player.stop()
    assert len(got["a"]) == len(got["b"]) == 4, (got, player.log())
    assert all(got["a"][k + 1] > acks[k] for k in range(3))  # the next instant waited for the answer
    assert all(got["b"][k] < acks[k] for k in range(4))  # b was never held back on its own


def test_play_fails_clearly_without_subscribers(ros, bag, tmp_path):
    path, _ = bag
    player = ChildProcess(python_cmd("-m", "pixloc_ros.cli", "play", str(path), "--wait-for", "/odom",
                                     "--topics", "/odom", "--wait-timeout", "1"),
                          ros_env(ros.domain_id + 100), tmp_path / "player.log")  # a domain nobody listens on
    try:
        assert player.wait(30) == 1
    finally:
        player.stop()
    assert "/odom" in player.log() and "subscribers" in player.log()


def test_best_effort_play_does_not_wait_for_subscribers_it_can_never_match(ros, bag, tmp_path):
    """A reliable subscriber on a topic played best effort is listed but never matched (incompatible
    QoS): the player waits for the compatible ones only, and a timeout names who is listed."""
    path, _ = bag
    node = ros.node("best_effort_probe")
    node.create_subscription(Image, "/camera/image_raw", lambda m: None, 10)  # reliable: never matched
    cmd = ("-m", "pixloc_ros.cli", "play", str(path), "--topics", "/camera/image_raw",
           "--best-effort", "/camera/image_raw", "--no-clock")
    alone = ChildProcess(python_cmd(*cmd, "--wait-timeout", "3"), ros_env(ros.domain_id), tmp_path / "alone.log")
    try:
        assert ros.spin_until(lambda: not alone.alive(), timeout=60) and alone.wait(10) == 1, alone.log()
    finally:
        alone.stop()
    assert "(best effort): 0 matched; subscribers listed:" in alone.log(), alone.log()
    assert "best_effort_probe reliable" in alone.log(), alone.log()

    got = []
    node.create_subscription(Image, "/camera/image_raw", got.append,
                             QoSProfile(depth=100, reliability=ReliabilityPolicy.BEST_EFFORT))
    player = ChildProcess(python_cmd(*cmd, "--wait-timeout", "60"), ros_env(ros.domain_id), tmp_path / "player.log")
    try:
        assert ros.spin_until(lambda: not player.alive(), timeout=90), player.log()
        assert player.wait(10) == 0, player.log()
    finally:
        player.stop()
    ros.spin_until(lambda: len(got) == N_IMAGES, timeout=5)
    assert len(got) >= N_IMAGES - 1, len(got)  # best effort on loopback: at most the first may race


def test_latched_topics_are_published_transient_local(bag):
    from pixloc_ros.data.bags import bag_topics

    by_topic = {t.name: t for t in bag_topics(bag[0])}
    assert _publisher_qos(by_topic["/tf_static"]).durability == DurabilityPolicy.TRANSIENT_LOCAL
    assert _publisher_qos(by_topic["/odom"]).durability == DurabilityPolicy.VOLATILE


REAL_BAG = REPO_ROOT.parent / "shared" / "data" / "real" / "t265_office_bag"


@pytest.mark.real_data
@pytest.mark.skipif(not REAL_BAG.exists(), reason="../shared/data/real/t265_office_bag is absent")
def test_play_a_real_bag_and_convert_its_messages(ros, tmp_path):
    """A real bag (RealSense T265, converted from ROS 1): replayed, received by rclpy, converted."""
    from pixloc_ros.ros.conversions import image_to_rgb, odometry_to_sample

    topics = ["/camera/fisheye1/image_raw", "/camera/odom/sample"]
    player = ChildProcess(python_cmd("-m", "pixloc_ros.cli", "play", str(REAL_BAG), "--topics", *topics,
                                     "--wait-for", *topics, "--wait-timeout", "60"),
                          ros_env(ros.domain_id), tmp_path / "player.log")
    try:
        node = ros.node("real_probe")
        images, odoms = [], []
        node.create_subscription(Image, topics[0], images.append, 10)
        node.create_subscription(Odometry, topics[1], odoms.append, 100)
        done = ros.spin_until(lambda: not player.alive() and len(images) == 3 and len(odoms) == 19, timeout=60)
        assert player.wait(10) == 0, player.log()
        assert done, f"{len(images)} images, {len(odoms)} odometry messages\n{player.log()}"
    finally:
        player.stop()
    rgb = image_to_rgb(images[0])
    assert rgb.shape == (800, 848, 3) and images[0].encoding == "mono8"
    assert rgb.std() > 5  # a real picture, not zeros
    samples = [odometry_to_sample(o) for o in odoms]
    assert all(np.isfinite(s.matrix).all() for s in samples)
    assert len({s.stamp_ns for s in samples}) == 19
