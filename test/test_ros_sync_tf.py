"""Image/CameraInfo pairing by stamp (sync.py) and the tf equivalents (tf.py), pure and over DDS."""
import time
import numpy as np
import pytest

pytest.importorskip("rclpy")
from geometry_msgs.msg import TransformStamped  # noqa: E402
from scipy.spatial.transform import Rotation  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402
from tf2_msgs.msg import TFMessage  # noqa: E402

from pixloc_ros.ros.conversions import matrix_to_transform_msg, ns_to_stamp, transform_msg_to_matrix  # noqa: E402
from pixloc_ros.ros.sync import CameraSubscriber, StampSynchronizer  # noqa: E402
from pixloc_ros.ros.tf import (StaticTransformBroadcaster, StaticTransformGraph, StaticTransformLookup,  # noqa: E402
                               TransformBroadcaster, using_tf2_ros)
from ros_testing import ros  # noqa: E402,F401 (ros: the fixture)

pytestmark = pytest.mark.ros
RNG = np.random.default_rng(3)


def img(t):
    m = Image()
    m.header.stamp = ns_to_stamp(t)
    return m


def info(t):
    m = CameraInfo()
    m.header.stamp = ns_to_stamp(t)
    return m


def stamps(pairs):
    return [(p[0].header.stamp.sec, p[1].header.stamp.sec) for p in pairs]


def test_sync_pairs_equal_stamps_in_any_arrival_order():
    s = StampSynchronizer(queue_size=5)
    S = 1_000_000_000
    assert s.add_info(info(1 * S)) == []
    assert s.add_info(info(2 * S)) == []  # infos ahead of their images
    assert stamps(s.add_image(img(1 * S))) == [(1, 1)]
    assert stamps(s.add_image(img(2 * S))) == [(2, 2)]
    assert s.add_image(img(3 * S)) == []  # image ahead of its info
    assert stamps(s.add_info(info(3 * S))) == [(3, 3)]


def test_sync_reports_images_that_cannot_be_paired():
    dropped = []
    s = StampSynchronizer(queue_size=3, on_unmatched=dropped.append)
    S = 1_000_000_000
    s.add_image(img(1 * S))
    assert stamps(s.add_info(info(2 * S))) == [] and len(dropped) == 1  # no info for t=1 will come
    assert dropped[0].stamp_ns == 1 * S and "no CameraInfo with stamp 1.0" in dropped[0].reason
    assert stamps(s.add_image(img(2 * S))) == [(2, 2)]
    # No CameraInfo at all: the queue overflows and the oldest images are reported.
    for t in range(10, 15):
        s.add_image(img(t * S))
    assert [d.stamp_ns // S for d in dropped[1:]] == [10, 11]
    assert "no CameraInfo received" in dropped[-1].reason


def test_sync_reports_an_image_whose_info_never_comes_even_when_later_pairs_match():
    """The lonely image waits while the next image and its info pair up; it is reported then."""
    dropped = []
    s = StampSynchronizer(queue_size=10, on_unmatched=dropped.append)
    S = 1_000_000_000
    s.add_image(img(1 * S))  # its CameraInfo was lost
    s.add_image(img(2 * S))
    assert stamps(s.add_info(info(2 * S))) == [(2, 2)]
    assert [d.stamp_ns for d in dropped] == [1 * S]
    s.reset()
    s.add_image(img(1 * S))  # after a reset (clock jump), old stamps are fine again
    assert stamps(s.add_info(info(1 * S))) == [(1, 1)] and len(dropped) == 1


def test_sync_tolerance_pairs_nearest():
    s = StampSynchronizer(queue_size=5, tolerance_ns=10_000_000)
    s.add_info(info(1_000_000_000 + 3_000_000))
    pairs = s.add_image(img(1_000_000_000))
    assert len(pairs) == 1
    s2 = StampSynchronizer(queue_size=5)  # exact: 3 ms apart do not pair
    s2.add_info(info(1_000_000_000 + 3_000_000))
    assert s2.add_image(img(1_000_000_000)) == []
    with pytest.raises(ValueError):
        StampSynchronizer(queue_size=0)


def random_T():
    T = np.eye(4)
    T[:3, :3] = Rotation.random(random_state=RNG.integers(1 << 30)).as_matrix()
    T[:3, 3] = RNG.normal(size=3)
    return T


def test_static_graph_composes_chains_both_ways():
    g = StaticTransformGraph()
    base_from_cam_link, cam_link_from_optical, base_from_lidar = random_T(), random_T(), random_T()
    g.add("base_link", "camera_link", base_from_cam_link)
    g.add("camera_link", "camera_optical_frame", cam_link_from_optical)
    g.add("/base_link", "lidar", base_from_lidar)  # a leading slash is ignored, as in tf2
    expected = base_from_cam_link @ cam_link_from_optical
    np.testing.assert_allclose(g.lookup("base_link", "camera_optical_frame"), expected, atol=1e-12)
    np.testing.assert_allclose(g.lookup("camera_optical_frame", "base_link"), np.linalg.inv(expected), atol=1e-12)
    np.testing.assert_allclose(g.lookup("lidar", "camera_optical_frame"),
                               np.linalg.inv(base_from_lidar) @ expected, atol=1e-12)
    np.testing.assert_allclose(g.lookup("lidar", "lidar"), np.eye(4))
    assert g.lookup("base_link", "unknown") is None
    g.add("base_link", "camera_link", np.eye(4))  # replacing an edge updates lookups
    np.testing.assert_allclose(g.lookup("base_link", "camera_optical_frame"), cam_link_from_optical, atol=1e-12)


def test_static_graph_rejects_malformed_transforms_but_keeps_good_ones():
    g = StaticTransformGraph()
    good = TransformStamped(child_frame_id="cam")
    good.header.frame_id = "base"
    good.transform = matrix_to_transform_msg(random_T())
    bad = TransformStamped(child_frame_id="bad")
    bad.header.frame_id = "base"
    bad.transform.rotation.w = 0.0
    with pytest.raises(ValueError, match="base->bad"):
        g.add_message(TFMessage(transforms=[good, bad]))
    np.testing.assert_allclose(g.lookup("base", "cam"), transform_msg_to_matrix(good.transform), atol=1e-12)


def stamped(parent, child, T):
    t = TransformStamped(child_frame_id=child)
    t.header.frame_id = parent
    t.transform = matrix_to_transform_msg(T)
    return t


def test_static_broadcast_reaches_a_late_listener_over_dds(ros):
    """/tf_static is latched: a listener created after the broadcast still gets every transform."""
    a, b = random_T(), random_T()
    talker = ros.node("static_talker")
    broadcaster = StaticTransformBroadcaster(talker)
    broadcaster.send(stamped("base_link", "camera_link", a))
    broadcaster.send(stamped("camera_link", "camera_optical_frame", b))  # the set is re-sent whole
    listener_node = ros.node("static_listener")
    lookup = StaticTransformLookup(listener_node)
    ok = ros.spin_until(lambda: lookup.lookup("base_link", "camera_optical_frame") is not None, timeout=20)
    assert ok, "static transforms never arrived"
    np.testing.assert_allclose(lookup.lookup("base_link", "camera_optical_frame"), a @ b, atol=1e-9)


def test_dynamic_broadcaster_publishes_tfmessage_on_tf(ros):
    node = ros.node("tf_talker")
    got = []
    probe = ros.node("tf_probe")
    probe.create_subscription(TFMessage, "/tf", got.append, 100)
    broadcaster = TransformBroadcaster(node)
    if not using_tf2_ros():
        assert ros.spin_until(lambda: broadcaster._pub.get_subscription_count() > 0, timeout=20)
    T = random_T()
    assert ros.spin_until(lambda: (broadcaster.send(stamped("map", "odom", T)) or got), timeout=20)
    np.testing.assert_allclose(transform_msg_to_matrix(got[0].transforms[0].transform), T, atol=1e-9)
    assert got[0].transforms[0].header.frame_id == "map"


def camera_publishers(ros, name: str, prefix: str):
    """Image and CameraInfo publishers on ``prefix``/image and ``prefix``/camera_info, once matched."""
    pub_node = ros.node(name)
    ipub = pub_node.create_publisher(Image, f"{prefix}/image", 10)
    cpub = pub_node.create_publisher(CameraInfo, f"{prefix}/camera_info", 10)
    assert ros.spin_until(lambda: ipub.get_subscription_count() and cpub.get_subscription_count(), timeout=20)
    return ipub, cpub


def test_camera_subscriber_pairs_over_dds(ros):
    pairs, dropped = [], []
    node = ros.node("cam_sub")
    CameraSubscriber(node, "/sync_test/image", "/sync_test/camera_info", 10,
                     lambda i, c: pairs.append((i, c)), dropped.append)
    ipub, cpub = camera_publishers(ros, "cam_pub", "/sync_test")
    S = 1_000_000_000
    for t in (1, 2, 3):
        ipub.publish(img(t * S))
        if t != 2:  # image 2 has no CameraInfo
            cpub.publish(info(t * S))
    assert ros.spin_until(lambda: len(pairs) == 2 and len(dropped) == 1, timeout=20), (len(pairs), len(dropped))
    assert stamps(pairs) == [(1, 1), (3, 3)]
    assert dropped[0].stamp_ns == 2 * S


def test_camera_subscriber_admit_keeps_rejected_messages_out_of_the_pairing(ros):
    """What the node's StampGuard rejects never reaches the queues (no false "no CameraInfo")."""
    pairs, dropped, seen = [], [], []
    node = ros.node("cam_sub_admit")

    def admit(msg, is_image):
        seen.append((msg.header.stamp.sec, is_image))
        return msg.header.stamp.sec != 2  # image and CameraInfo at t=2 are refused

    CameraSubscriber(node, "/admit_test/image", "/admit_test/camera_info", 10, lambda i, c: pairs.append((i, c)),
                     dropped.append, admit=admit)
    ipub, cpub = camera_publishers(ros, "cam_pub_admit", "/admit_test")
    S = 1_000_000_000
    for t in (1, 2, 3):
        ipub.publish(img(t * S))
        cpub.publish(info(t * S))
    assert ros.spin_until(lambda: len(pairs) == 2 and len(seen) == 6, timeout=20), (len(pairs), seen)
    assert stamps(pairs) == [(1, 1), (3, 3)] and dropped == []


def big_image(t_ns: int, width: int = 64, height: int = 48) -> Image:
    m = img(t_ns)
    m.width, m.height, m.encoding, m.step = width, height, "rgb8", 3 * width
    m.data = bytes(3 * width * height)
    return m


def test_image_subscription_follows_a_best_effort_publisher(ros):
    """auto: reliable while every publisher is (any frame size arrives); a best-effort publisher
    appearing later makes it re-subscribe best effort, said in the log; both publishers then reach it."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

    from pixloc_ros.ros.reliability import AdaptiveSubscription

    got, logs = [], []
    node = ros.node("adaptive_sub")
    sub = AdaptiveSubscription(node, Image, "/adaptive/image", got.append, "auto", log=logs.append)
    assert sub.reliable
    pub_node = ros.node("adaptive_pub")
    reliable = pub_node.create_publisher(Image, "/adaptive/image", QoSProfile(depth=5,
                                                                             reliability=ReliabilityPolicy.RELIABLE))
    assert ros.spin_until(lambda: reliable.get_subscription_count() > 0, timeout=20)
    assert ros.spin_until(lambda: (reliable.publish(big_image(1)) or got), timeout=20)
    assert sub.reliable and not logs
    best_effort = pub_node.create_publisher(Image, "/adaptive/image", qos_profile_sensor_data)
    assert ros.spin_until(lambda: not sub.reliable, timeout=20), "never switched to best effort"
    assert len(logs) == 1 and "a best-effort publisher appeared: subscribing best effort" in logs[0]
    assert ros.spin_until(lambda: best_effort.get_subscription_count() > 0, timeout=20)
    before = len(got)
    assert ros.spin_until(lambda: (best_effort.publish(big_image(2)) or len(got) > before), timeout=20)
    before = len(got)
    assert ros.spin_until(lambda: (reliable.publish(big_image(3)) or len(got) > before), timeout=20)
    # Created with a best-effort publisher already on the topic: best effort from the start, no switch.
    late = AdaptiveSubscription(ros.node("adaptive_late"), Image, "/adaptive/image", got.append, "auto",
                                log=logs.append)
    assert not late.reliable and len(logs) == 1


def test_auto_image_subscription_switches_from_the_graph_when_the_event_is_missed(ros):
    """The once-a-second graph look switches without the incompatible-QoS event; the event arriving
    afterwards neither switches again nor logs twice."""
    from rclpy.qos import qos_profile_sensor_data

    from pixloc_ros.ros.reliability import AdaptiveSubscription

    logs = []
    node = ros.node("polled_sub")
    sub = AdaptiveSubscription(node, Image, "/polled/image", lambda m: None, "auto", log=logs.append)
    ros.node("polled_pub").create_publisher(Image, "/polled/image", qos_profile_sensor_data)
    deadline = time.monotonic() + 20  # graph discovery runs in DDS's threads: no spinning, so no event
    while not node.get_publishers_info_by_topic("/polled/image") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sub.reliable
    sub._poll()
    assert not sub.reliable and len(logs) == 1 and "a best-effort publisher appeared" in logs[0]
    ros.spin_until(lambda: False, timeout=2.0)  # the event (and the destroyed timer) would run now
    assert not sub.reliable and len(logs) == 1, logs


def test_fixed_reliable_image_subscription_reports_a_best_effort_publisher(ros):
    from rclpy.qos import qos_profile_sensor_data

    from pixloc_ros.ros.reliability import AdaptiveSubscription

    logs = []
    sub = AdaptiveSubscription(ros.node("fixed_sub"), Image, "/fixed/image", lambda m: None, "reliable",
                               log=logs.append)
    ros.node("fixed_pub").create_publisher(Image, "/fixed/image", qos_profile_sensor_data)
    assert ros.spin_until(lambda: bool(logs), timeout=20)
    assert sub.reliable and "cannot match (RELIABILITY)" in logs[0] and "image_reliability" in logs[0]
    with pytest.raises(ValueError, match="Unsupported reliability mode"):
        AdaptiveSubscription(ros.node("bad_mode"), Image, "/fixed/image", lambda m: None, "sometimes")
