"""The localizer node as users run it: its own process, config/localize.yaml, real DDS on loopback.

- ``test_end_to_end_drive``: `pixloc-ros play` replays a synthetic drive (paced by the node's
  status, so a slow CPU still processes every frame) with /clock; the test listens like RViz and
  robot_localization would and scores the poses against the ground truth.
- ``test_bad_inputs``: the test itself publishes a drive with bad messages mixed in; each gets one
  clear log line and no pose, and the node keeps going. Also: a clock jump resets it; frames
  faster than the node are dropped and counted; RViz's initial pose starts a relocalisation.

Weights: the suite's ``test_weights`` (test/conftest.py): ``PIXLOC_ROS_TEST_WEIGHTS`` or the
shipped trained weights, else randomly initialised weights (seed 0); the map is ``synth_map``,
compiled with them. With trained weights everything runs as shipped and the issue's bars apply: poses for
most frames, none off by more than 1 m or 5 deg, the good frames after bad input localized.
Untrained VGG features do align the synthetic street (0.1-0.5 m in the runs seen), but with
inlier ratios of 0.09-0.19, under the 0.2 gate tuned for trained weights, so the shipped
config publishes nothing from them. Then the end-to-end test lowers that one gate
(``min_inlier_ratio:=0.0``) so that poses, tf and covariances are still exercised, and reports
the accuracy without asserting it; the bad-input test keeps the shipped gates, where "no pose
off by more than 1 m / 5 deg" holds and the frames after must still be processed.
"""
from __future__ import annotations

import math
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy")
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from geometry_msgs.msg import PoseWithCovarianceStamped  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from rclpy.serialization import deserialize_message  # noqa: E402
from rosgraph_msgs.msg import Clock  # noqa: E402
from scipy.spatial.transform import Rotation, Slerp  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from tf2_msgs.msg import TFMessage  # noqa: E402
from visualization_msgs.msg import MarkerArray  # noqa: E402

from pixloc_ros.core.engine.heatmap import overview_size  # noqa: E402
from pixloc_ros.core.geometry.metrics import CMU_THRESHOLDS, pose_errors, summarize  # noqa: E402
from pixloc_ros.msg import LocalizationStatus  # noqa: E402
from pixloc_ros.ros.compat import fastdds_profile_env  # noqa: E402
from pixloc_ros.ros.conversions import (covariance_from_msg, ns_to_stamp, pose_msg_to_matrix,  # noqa: E402
                                        stamp_to_ns, transform_msg_to_matrix)
from pixloc_ros.ros.player import message_class  # noqa: E402
from pixloc_ros.ros.replay import DRIVE_TOPICS  # noqa: E402
from ros_testing import REPO, ChildProcess, python_cmd, ros, ros_env, RosContext, write_bag  # noqa: E402,F401 (ros: the fixture)

pytestmark = [pytest.mark.ros, pytest.mark.slow]
NODE = "/pixloc_localizer"
CONFIG = REPO / "config" / "localize.yaml"
CONDITION = "overcast"
MAX_ERROR = (1.0, 5.0)  # metres, degrees: no published pose may be worse
TRANSFORM_TOLERANCE_NS = 100_000_000  # config/localize.yaml transform_tolerance


@dataclass
class Scene:
    data: Path  # pixloc-ros synth output
    map_file: Path
    weights: Path
    trained: bool  # weights from PIXLOC_ROS_TEST_WEIGHTS / localizing_weights, else random


    @property
    def bag(self) -> Path:
        return self.data / "queries" / CONDITION


@pytest.fixture(scope="module")
def scene(synth_map) -> Scene:
    """The synthetic data, weights, and the map compiled with those weights (test/conftest.py)."""
    return Scene(synth_map.data, synth_map.map_file, synth_map.weights, synth_map.trained)


def node_env(ros: RosContext, fastdds_profile: Path | None = None) -> dict[str, str]:
    env = ros_env(ros.domain_id)
    env["RCUTILS_LOGGING_BUFFERED_STREAM"] = "0"
    env["RCUTILS_COLORIZED_OUTPUT"] = "0"
    if fastdds_profile is not None:
        env.update(fastdds_profile_env(str(fastdds_profile)))
    return env


def start_node(scene: Scene, ros: RosContext, log_path: Path, *overrides: str,
               fastdds_profile: Path | None = None, map_file: Path | None = None) -> ChildProcess:
    """The node as `ros2 run` starts it, with the shipped params file and the test's map."""
    args = ["--ros-args", "--params-file", str(CONFIG), "-p", f"map_file:={map_file or scene.map_file}",
            "-p", f"weights:={scene.weights}", "-p", "device:=cpu", "-p", "use_sim_time:=true"]
    for o in overrides:
        args += ["-p", o]
    return ChildProcess(python_cmd("-m", "pixloc_ros.ros.start", *args), node_env(ros, fastdds_profile), log_path)


class Listener:
    """What RViz / robot_localization see of the node, recorded with arrival order."""

    def __init__(self, ros: RosContext, name: str):
        self.node = ros.node(name)
        self.poses: list[PoseWithCovarianceStamped] = []
        self.statuses: list[LocalizationStatus] = []
        self.tf: list = []
        self.heatmaps: list[Image] = []
        self.markers: list[MarkerArray] = []
        self.diagnostics: list[DiagnosticArray] = []
        sub = self.node.create_subscription
        self.subs = [
            sub(PoseWithCovarianceStamped, f"{NODE}/pose", self.poses.append,
                QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE,
                           durability=DurabilityPolicy.TRANSIENT_LOCAL)),
            sub(LocalizationStatus, f"{NODE}/status", self.statuses.append, 100),
            sub(TFMessage, "/tf", lambda m: self.tf.extend(m.transforms), 100),
            sub(Image, f"{NODE}/heatmap/fused", self.heatmaps.append, 10),
            sub(MarkerArray, f"{NODE}/markers", self.markers.append, 10),
            sub(DiagnosticArray, "/diagnostics", self.diagnostics.append, 10),
        ]

    def connected(self) -> bool:
        return all(s.get_publisher_count() > 0 for s in self.subs)

    def status_at(self, stamp_ns: int, since: int = 0) -> LocalizationStatus | None:
        """The status of the frame at ``stamp_ns`` among those received after the first ``since``."""
        return next((s for s in self.statuses[since:] if stamp_to_ns(s.header.stamp) == stamp_ns), None)

    def pose_at(self, stamp_ns: int) -> PoseWithCovarianceStamped | None:
        return next((p for p in self.poses if stamp_to_ns(p.header.stamp) == stamp_ns), None)


def wait_ready(ros: RosContext, node: ChildProcess, listener: Listener, timeout: float = 180.0) -> None:
    ok = ros.spin_until(lambda: listener.connected() or not node.alive(), timeout=timeout)
    assert ok and node.alive(), f"the node did not come up:\n{node.log()}"


def play_paced(bag: Path, ros: RosContext, log_path: Path) -> ChildProcess:
    """``pixloc-ros play`` of a drive as the demo replays it: once the node's inputs are subscribed,
    each frame after the node's status for the one before (however slow the machine)."""
    return ChildProcess(python_cmd("-m", "pixloc_ros.cli", "play", str(bag), "--pace-topic", f"{NODE}/status",
                                   "--pace-timeout", "60", "--wait-for", *DRIVE_TOPICS, "--wait-timeout", "60"),
                        ros_env(ros.domain_id), log_path)


def await_status(ros: RosContext, listener: Listener, node: ChildProcess, stamp_ns: int, since: int = 0,
                 timeout: float = 90.0) -> LocalizationStatus:
    """The node's status for the frame at ``stamp_ns`` (among those after the first ``since``), once it came."""
    ok = ros.spin_until(lambda: listener.status_at(stamp_ns, since) is not None or not node.alive(), timeout=timeout)
    assert ok and node.alive(), f"no status for the frame at {stamp_ns}\n{node.log()}"
    return listener.status_at(stamp_ns, since)


def ground_truth(scene: Scene) -> dict[int, np.ndarray]:
    from pixloc_ros.data.sim.dataset import read_tum

    stamps, poses = read_tum(scene.data / "queries" / f"{CONDITION}_gt.txt")
    return {int(s): p for s, p in zip(stamps, poses)}


def truth_at(truth: dict[int, np.ndarray], stamp_ns: int) -> np.ndarray:
    """Ground truth at an image stamp (TUM files keep microseconds: nearest within 1 ms)."""
    stamp = min(truth, key=lambda s: abs(s - stamp_ns))
    assert abs(stamp - stamp_ns) < 1_000_000, f"no ground truth at {stamp_ns}"
    return truth[stamp]


def odometry_at(odometry, stamp_ns: int) -> np.ndarray:
    """odom_from_base at ``stamp_ns``, interpolated (slerp + lerp) between the bag's samples."""
    stamps = np.array([o.stamp_ns for o in odometry])
    i = int(np.searchsorted(stamps, stamp_ns))
    assert 0 < i < len(stamps), "image outside the odometry"
    a, b = odometry[i - 1].matrix, odometry[i].matrix
    s = (stamp_ns - stamps[i - 1]) / (stamps[i] - stamps[i - 1])
    out = np.eye(4)
    out[:3, :3] = Slerp([0, 1], Rotation.from_matrix([a[:3, :3], b[:3, :3]]))(s).as_matrix()
    out[:3, 3] = (1 - s) * a[:3, 3] + s * b[:3, 3]
    return out


def pose_error(T_est: np.ndarray, T_gt: np.ndarray) -> tuple[float, float]:
    dt, dr = pose_errors(T_est[:3, :3], T_est[:3, 3], T_gt[:3, :3], T_gt[:3, 3])
    return float(dt), float(dr)


def log_lines(node: ChildProcess, pattern: str) -> list[str]:
    return [line for line in node.log().splitlines() if re.search(pattern, line)]


def test_end_to_end_drive(scene, ros, tmp_path, capsys):
    from pixloc_ros.data.bags import read_drive

    drive = read_drive(scene.bag)
    frame_stamps = [f.stamp_ns for f in drive.frames]
    # Untrained weights never pass the inlier gate: lower it to exercise poses and tf (module doc).
    # warm_up_size: the network and the LM are prepared for the drive's 320x240 frames at start.
    # overlap_network: the worker's two stages (the next frame's network during this frame's LM);
    # the other node tests run the one-stage worker.
    node = start_node(scene, ros, tmp_path / "node.log", "warm_up_size:=[320,240]", "overlap_network:=true",
                      *(() if scene.trained else ("min_inlier_ratio:=0.0",)))
    player = None
    try:
        listener = Listener(ros, "e2e_listener")
        wait_ready(ros, node, listener)
        player = play_paced(scene.bag, ros, tmp_path / "player.log")
        done = ros.spin_until(lambda: not player.alive() and len(listener.statuses) >= len(frame_stamps),
                              timeout=150)
        ros.spin_until(lambda: len(listener.diagnostics) > 0, timeout=5)
        assert player.wait(10) == 0, player.log()
        assert done, f"{len(listener.statuses)} statuses for {len(frame_stamps)} frames\n{node.log()}"
        assert node.alive(), node.log()
    finally:
        if player is not None:
            player.stop()
        node.stop()
    log = node.log()
    assert not log_lines(node, r"\[(ERROR|FATAL)\]"), log
    assert log_lines(node, r"prepared for 320x240 frames \(\d+\.\d s\)"), log

    # One status per frame, stamped with the image, in order; dropped frames are counted (none when paced).
    assert [stamp_to_ns(s.header.stamp) for s in listener.statuses] == frame_stamps
    assert all(s.header.frame_id == "map" and s.frames_dropped == 0 for s in listener.statuses)
    ran = [s for s in listener.statuses if s.time_network > 0]
    assert ran, f"the network never ran: {[s.reason for s in listener.statuses]}"
    assert all(len(s.cost_per_level) == 3 and len(s.iterations_per_level) == 3 and s.keyframe_ids for s in ran)
    # What RViz shows: heatmaps over the camera image, points and keyframes, diagnostics.
    assert len(listener.heatmaps) == len(ran)
    hm = listener.heatmaps[0]
    # heatmap_scale 0.5 of 320x240, enlarged to readable tiles: the camera beside every level's map
    assert (hm.encoding, hm.width, hm.height) == ("rgb8", *overview_size(320, 240, 0.5))
    assert listener.markers and listener.markers[0].markers[1].ns == "points"
    assert len(listener.markers[0].markers[1].points) > 0
    assert listener.diagnostics and "localization" in listener.diagnostics[-1].status[0].name

    # Accuracy against the ground truth.
    truth = ground_truth(scene)
    errors = {}
    for pose in listener.poses:
        stamp = stamp_to_ns(pose.header.stamp)
        assert stamp in frame_stamps and pose.header.frame_id == "map"
        assert listener.status_at(stamp).success
        cov = covariance_from_msg(pose.pose.covariance, allow_zero=False)
        assert np.linalg.eigvalsh(cov).min() > 0  # robot_localization needs positive definite
        errors[stamp] = pose_error(pose_msg_to_matrix(pose.pose.pose), truth_at(truth, stamp))
    summary = summarize([e[0] for e in errors.values()], [e[1] for e in errors.values()], frames=len(frame_stamps))
    with capsys.disabled():
        kind = "trained" if scene.trained else "random"
        print(f"\nnode end-to-end ({CONDITION}, {len(frame_stamps)} frames, {kind} weights): "
              f"{summary.localized} poses; recall "
              + ", ".join(f"{m} m/{d} deg: {r:.0%}" for (m, d), r in zip(CMU_THRESHOLDS, summary.recall))
              + "; errors " + ", ".join(f"{dt:.2f} m/{dr:.2f} deg" for dt, dr in errors.values())
              + "; rejections: " + "; ".join(sorted({s.reason.split(':')[0] for s in listener.statuses if s.reason})))
    assert listener.poses, "no pose published at all"

    # tf: map -> odom, future-dated by transform_tolerance, with map -> odom -> base_link == pose.
    map_odom = {stamp_to_ns(t.header.stamp): t for t in listener.tf if t.child_frame_id == "odom"}
    assert all(t.header.frame_id == "map" for t in map_odom.values())
    assert len(map_odom) == len(listener.poses)
    for pose in listener.poses:
        stamp = stamp_to_ns(pose.header.stamp)
        t = map_odom[stamp + TRANSFORM_TOLERANCE_NS]
        composed = transform_msg_to_matrix(t.transform) @ odometry_at(drive.odometry, stamp)
        dt, dr = pose_error(composed, pose_msg_to_matrix(pose.pose.pose))
        assert dt < 1e-3 and dr < 1e-2, f"tf disagrees with the pose by {dt:.4f} m / {dr:.4f} deg"

    if not scene.trained:
        pytest.skip("random weights with a lowered inlier gate: accuracy reported above, not asserted "
                    "(set PIXLOC_ROS_TEST_WEIGHTS to trained weights)")
    for stamp, (dt, dr) in errors.items():
        assert dt <= MAX_ERROR[0] and dr <= MAX_ERROR[1], f"published a pose {dt:.2f} m / {dr:.2f} deg off"
    # Poses for most frames; the first frame of a relocalisation is never published
    # (confirmations: 1), so at most 5 of 6 here.
    assert summary.localized > len(frame_stamps) // 2, summary


class Feeder:
    """Publishes a recorded drive from the test, message by message, with /clock (like a player),
    so bad messages can be put in between and each frame's answer awaited."""

    TOPICS = ("/camera/image_raw", "/camera/camera_info", "/odom", "/gnss/fix", "/tf_static")
    ODOMETRY_LAG_NS = 60_000_000  # > the 50 ms odometry period of the synthetic drives

    def __init__(self, ros: RosContext, bag: Path, name: str = "bad_input_feeder"):
        from pixloc_ros.data.bags import iter_raw

        self.ros = ros
        self.node = ros.node(name)
        self.messages = []  # (stamp, topic, msg) in log order
        for raw in iter_raw(bag, list(self.TOPICS)):
            self.messages.append((raw.stamp_ns, raw.topic, deserialize_message(raw.data, message_class(raw.msgtype))))
        self.pubs = {}
        for topic in self.TOPICS:
            cls = type(next(m for _, t, m in self.messages if t == topic))
            qos = QoSProfile(depth=10, durability=DurabilityPolicy.TRANSIENT_LOCAL) if topic == "/tf_static" else 10
            self.pubs[topic] = self.node.create_publisher(cls, topic, qos)
        self.pubs["/clock"] = self.node.create_publisher(Clock, "/clock", 10)
        self.pubs["/initialpose"] = self.node.create_publisher(PoseWithCovarianceStamped, "/initialpose", 10)
        self.frames = [(s, m) for s, t, m in self.messages if t == "/camera/image_raw"]
        self.infos = {stamp_to_ns(m.header.stamp): m for _, t, m in self.messages if t == "/camera/camera_info"}
        self.next = 0  # index of the next recorded message to publish

    def connected(self) -> bool:
        return all(p.get_subscription_count() > 0 for p in self.pubs.values())

    def clock(self, stamp_ns: int) -> None:
        self.pubs["/clock"].publish(Clock(clock=ns_to_stamp(stamp_ns)))

    def publish(self, topic: str, msg, stamp_ns: int) -> None:
        self.clock(stamp_ns)
        self.pubs[topic].publish(msg)

    def play_until(self, stamp_ns: int) -> None:
        """Publish the recorded non-image messages up to ``stamp_ns`` (images only via ``frame``),
        spaced as recorded: a burst would let topics overtake each other."""
        previous = None
        while self.next < len(self.messages) and self.messages[self.next][0] <= stamp_ns:
            stamp, topic, msg = self.messages[self.next]
            self.next += 1
            if topic in ("/camera/image_raw", "/camera/camera_info"):
                continue
            if previous is not None:
                time.sleep(min((stamp - previous) * 1e-9, 0.1))
            previous = stamp
            self.publish(topic, msg, stamp)

    def rewind(self) -> None:
        self.next = 0

    def frame(self, k: int, *, image=None, info=None, stamp_ns: int | None = None, clock: bool = True):
        """Publish recorded frame ``k`` (or replacements; stamps follow ``stamp_ns``); its stamp.
        ``clock`` False: as a sender with a wrong clock, leaving /clock and the other inputs alone."""
        recorded_stamp, recorded = self.frames[k]
        stamp = recorded_stamp if stamp_ns is None else stamp_ns
        image = copy_msg(recorded if image is None else image)
        info = copy_msg(self.infos[stamp_to_ns(recorded.header.stamp)]) if info is None else info
        for msg in (image, info):
            if msg is not False:
                msg.header.stamp = ns_to_stamp(stamp)
        if not clock:
            self.pubs["/camera/image_raw"].publish(image)
            if info is not False:
                self.pubs["/camera/camera_info"].publish(info)
            return stamp
        self.play_until(stamp)
        self.publish("/camera/image_raw", image, stamp)
        if info is not False:
            self.publish("/camera/camera_info", info, stamp)
        # As in a recording, the odometry sample after the image follows it closely.
        self.play_until(stamp + self.ODOMETRY_LAG_NS)
        return stamp


def copy_msg(msg):
    from rclpy.serialization import serialize_message

    return deserialize_message(serialize_message(msg), type(msg))


def test_bad_inputs(scene, ros, tmp_path, capsys):
    """Bad messages in a drive: each one clear log line (throttled), no pose; the node goes on."""
    # odom_wait_s 1 s: frames no odometry covers keep the worker busy that long (step 8).
    node = start_node(scene, ros, tmp_path / "node.log", "log_throttle_s:=60.0", "odom_wait_s:=1.0")
    feeder = Feeder(ros, scene.bag)
    truth = ground_truth(scene)
    listener = Listener(ros, "bad_input_listener")
    ms = 1_000_000

    def answer(stamp_ns: int, since: int = 0) -> LocalizationStatus:
        return await_status(ros, listener, node, stamp_ns, since)

    try:
        wait_ready(ros, node, listener)
        assert ros.spin_until(lambda: feeder.connected() or not node.alive(), timeout=60), node.log()
        feeder.play_until(feeder.frames[0][0] - 100 * ms)  # tf_static, odometry, GNSS

        # 1. Unsupported encoding (three times: one log line). A best-effort reader can miss the
        # very first message while discovery settles: resend until it answers.
        for attempt in range(3):
            bad = copy_msg(feeder.frames[0][1])
            bad.encoding = "yuv422"
            stamp = feeder.frame(0, image=bad, stamp_ns=feeder.frames[0][0] - (90 - attempt) * ms)
            if ros.spin_until(lambda: listener.status_at(stamp) is not None, timeout=15):
                break
        status = answer(stamp)
        assert not status.success and "Unsupported image encoding 'yuv422'" in status.reason
        for k in (1, 2):
            assert not answer(feeder.frame(0, image=bad, stamp_ns=stamp + k * ms)).success
        assert len(log_lines(node, "Unsupported image encoding")) == 1, node.log()

        # 2. An empty image.
        empty = copy_msg(feeder.frames[0][1])
        empty.width = empty.height = empty.step = 0
        empty.data = b""
        status = answer(feeder.frame(0, image=empty, stamp_ns=feeder.frames[0][0] - 60 * ms))
        assert not status.success and "Empty image" in status.reason
        assert len(log_lines(node, "Empty image")) == 1

        # 2b. A '/'-prefixed frame id (tf2 would raise InvalidArgumentException in the lookup),
        # twice: a status that says why each time, one log line.
        slashed = copy_msg(feeder.frames[0][1])
        slashed.header.frame_id = "/" + slashed.header.frame_id.lstrip("/")
        for k in (0, 1):
            status = answer(feeder.frame(0, image=slashed, stamp_ns=feeder.frames[0][0] - (58 - k) * ms))
            assert not status.success and "cannot start with a '/'" in status.reason, status.reason
        assert len(log_lines(node, "cannot start with a '/'")) == 1, node.log()

        # 3. CameraInfo with a zero K.
        zero_k = copy_msg(feeder.infos[feeder.frames[0][0]])
        zero_k.k = [0.0] * 9
        status = answer(feeder.frame(0, info=zero_k, stamp_ns=feeder.frames[0][0] - 50 * ms))
        assert not status.success and "zero focal length" in status.reason
        assert len(log_lines(node, "zero focal length")) == 1

        # 4. NaN in odometry.
        odom = copy_msg(next(m for s, t, m in feeder.messages if t == "/odom"))
        odom.header.stamp = ns_to_stamp(feeder.frames[0][0] - 45 * ms)
        odom.pose.pose.position.x = math.nan
        feeder.publish("/odom", odom, feeder.frames[0][0] - 45 * ms)
        assert ros.spin_until(lambda: log_lines(node, "Ignored odometry message.*non-finite"), timeout=30), node.log()

        # 5. A prior kilometres outside the map: a GNSS fix 5 km north of the recorded one.
        recorded_fix = [m for s, t, m in feeder.messages if t == "/gnss/fix" and s < feeder.frames[0][0]][-1]
        far = copy_msg(recorded_fix)
        far.latitude += 0.045
        far.header.stamp = ns_to_stamp(feeder.frames[0][0] - 40 * ms)
        feeder.play_until(feeder.frames[0][0] - 40 * ms)
        feeder.publish("/gnss/fix", far, feeder.frames[0][0] - 40 * ms)
        status = answer(feeder.frame(0, stamp_ns=feeder.frames[0][0] - 30 * ms))
        assert not status.success and "outside_map" in status.reason, status.reason
        assert len(log_lines(node, "outside_map")) == 1
        assert not listener.poses
        fix = copy_msg(recorded_fix)  # the receiver is back: the recorded fix, newly stamped
        fix.header.stamp = ns_to_stamp(feeder.frames[0][0] - 25 * ms)
        feeder.publish("/gnss/fix", fix, feeder.frames[0][0] - 25 * ms)

        # 6. An image with no CameraInfo: reported once the next CameraInfo shows it will never come.
        lonely = feeder.frame(0, info=False, stamp_ns=feeder.frames[0][0] - 20 * ms)

        # Good frames after all that (the recorded GNSS replaces the far fix): relocalise, track.
        good, statuses = [], []
        for k in range(len(feeder.frames)):  # one at a time, as a paced player would
            good.append(feeder.frame(k))
            statuses.append(answer(good[-1]))
        lonely_status = listener.status_at(lonely)  # answered like every image, with the reason
        assert lonely_status is not None and not lonely_status.success and "no CameraInfo" in lonely_status.reason
        assert len(log_lines(node, "no CameraInfo")) == 1, node.log()

        # 7. The clock jumps back (the bag restarted): one reset (whichever of /clock and the
        # stamps reveals it first). Then it restarts again within seconds: a second reset, logged
        # on its own line too (the throttle, 60 s here, must not merge distinct events). The
        # drive localizes again from scratch.
        for restart in (1, 2):
            feeder.rewind()
            feeder.play_until(feeder.frames[0][0] - 1)
            assert ros.spin_until(lambda: len(log_lines(node, "Resetting the localization")) == restart,
                                  timeout=30), node.log()
        resets = log_lines(node, "Resetting the localization")
        assert "(reset 1)" in resets[0] and "(reset 2)" in resets[1], resets
        again, statuses_again = [], []
        for k in range(len(feeder.frames)):  # the same stamps as before the jump: only new answers count
            mark = len(listener.statuses)
            again.append(feeder.frame(k))
            statuses_again.append(answer(again[-1], since=mark))
        assert len(log_lines(node, "Resetting the localization")) == 2, node.log()

        # 8. Frames faster than the node: the newest waits, the one it replaced is dropped and counted.
        # (Empty frames stamped after the last recorded odometry sample, which follows the last
        # image: the worker waits odom_wait_s on each, no pose comes out, and, unlike 230 kB images
        # in a burst, best-effort delivery does not lose them.)
        last_odom = max(stamp for stamp, topic, _ in feeder.messages if topic == "/odom")
        start, mark = max(again[-1], last_odom) + 100 * ms, len(listener.statuses)
        burst = [feeder.frame(len(feeder.frames) - 1, image=empty, stamp_ns=start + k * 10 * ms) for k in (1, 2, 3)]
        answer(burst[-1])  # the newest is always processed
        dropped = sum(s.frames_dropped for s in listener.statuses[mark:])
        processed = sum(listener.status_at(b) is not None for b in burst)
        assert dropped >= 1 and processed + dropped == len(burst)  # each frame answered or counted

        # 9. An initial pose in another frame than the map is refused with a reason.
        wrong = PoseWithCovarianceStamped()
        wrong.header.frame_id = "odom"
        wrong.pose.pose.orientation.w = 1.0
        feeder.publish("/initialpose", wrong, burst[-1])
        assert ros.spin_until(lambda: log_lines(node, "Ignored initial pose: frame 'odom' is not the map frame"),
                              timeout=30), node.log()

        # 10. RViz's "2D Pose Estimate" near the true pose (x, y, yaw only): the next frame relocalises from it.
        truth_xy = truth_at(truth, feeder.frames[-1][0])
        yaw = math.atan2(truth_xy[1, 0], truth_xy[0, 0])
        rviz = PoseWithCovarianceStamped()
        rviz.header.frame_id = "map"
        rviz.pose.pose.position.x, rviz.pose.pose.position.y = float(truth_xy[0, 3]) + 1.0, float(truth_xy[1, 3])
        rviz.pose.pose.orientation.z, rviz.pose.pose.orientation.w = math.sin(yaw / 2), math.cos(yaw / 2)
        feeder.publish("/initialpose", rviz, burst[-1])
        assert ros.spin_until(lambda: log_lines(node, r"initial pose \(2D\)"), timeout=30), node.log()
        status = answer(feeder.frame(len(feeder.frames) - 1, stamp_ns=burst[-1] + 10 * ms))
        assert status.state == LocalizationStatus.STATE_RELOCALIZING and status.time_network > 0, status
        assert node.alive()
    finally:
        node.stop()
    assert not log_lines(node, r"\[(ERROR|FATAL)\]"), node.log()
    # After the reset the state machine started again from scratch (not tracking at once).
    assert statuses_again[0].state != LocalizationStatus.STATE_TRACKING or not statuses_again[0].success

    errors = []
    for pose in listener.poses:
        dt, dr = pose_error(pose_msg_to_matrix(pose.pose.pose), truth_at(truth, stamp_to_ns(pose.header.stamp)))
        errors.append((dt, dr))
        assert dt <= MAX_ERROR[0] and dr <= MAX_ERROR[1], f"published a pose {dt:.2f} m / {dr:.2f} deg off"
    with capsys.disabled():
        print(f"\nnode bad inputs: {len(listener.poses)} poses for {len(good) + len(again)} good frames "
              f"({'trained' if scene.trained else 'random'} weights); errors "
              + ", ".join(f"{dt:.2f} m/{dr:.2f} deg" for dt, dr in errors))
    if not scene.trained:
        pytest.skip("random weights publish no pose under the shipped gates: bad-input handling checked, "
                    "localizing the frames after needs trained weights (PIXLOC_ROS_TEST_WEIGHTS)")
    # The good frames after the bad ones, and after the reset, are localized again.
    assert sum(s.success for s in statuses) >= 2 and sum(s.success for s in statuses_again) >= 2


# ------------------------------------------------------------------------------------------------
# Hostile input and faults (issue 17): each case over real Fast DDS against the node process, with
# the message it must give, no wrong pose, and good frames after it localized.

PROFILE = REPO / "config" / "fastdds_large_frames.xml"
SECOND = 1_000_000_000


def camera_frame_as(image, info, scale: int, size: tuple[int, int], encoding: str):
    """A recorded frame as a bigger camera delivers it: upscaled ``scale`` times, centre-cropped to
    ``size`` (width, height), in ``encoding`` (rgb8 or bgr8), and its CameraInfo to match. OpenCV's
    resize and CameraInfo both put pixel centres at integers: c' = (c + 0.5) scale - 0.5 - crop."""
    import cv2

    from pixloc_ros.ros.conversions import image_to_rgb

    rgb = image_to_rgb(image)
    big = cv2.resize(rgb, (rgb.shape[1] * scale, rgb.shape[0] * scale), interpolation=cv2.INTER_LINEAR)
    w, h = size
    x0, y0 = (big.shape[1] - w) // 2, (big.shape[0] - h) // 2
    big = big[y0:y0 + h, x0:x0 + w]
    out = copy_msg(image)
    out.width, out.height, out.encoding, out.step = w, h, encoding, 3 * w
    out.data = np.ascontiguousarray(big[..., ::-1] if encoding == "bgr8" else big).tobytes()
    cam = copy_msg(info)
    cam.width, cam.height = w, h
    k = np.array(info.k, float).reshape(3, 3)
    k[0, 0] *= scale
    k[1, 1] *= scale
    k[0, 2] = (k[0, 2] + 0.5) * scale - 0.5 - x0
    k[1, 2] = (k[1, 2] + 0.5) * scale - 0.5 - y0
    cam.k = k.reshape(-1).tolist()
    p = np.array(info.p, float).reshape(3, 4)
    p[:2, :2] *= scale
    p[0, 3] *= scale
    p[0, 2] = (p[0, 2] + 0.5) * scale - 0.5 - x0
    p[1, 2] = (p[1, 2] + 0.5) * scale - 0.5 - y0
    cam.p = p.reshape(-1).tolist()
    return out, cam


def test_hostile_inputs(scene, ros, tmp_path, capsys):
    """Real camera sizes arrive (reliable from a publisher with Fast DDS's defaults, and best effort
    from one with the shipped profile), CameraInfo without images is an ERROR in diagnostics, one
    future-stamped frame neither blinds nor resets the node, out-of-order and duplicate frames are
    named and processed never / once, and an /initialpose far outside the map keeps the tracking."""
    # max_image_size 320: the big frames cost the network what the recorded 320x240 ones do.
    # odom_wait_s 4 s: next to the 4-6 MB frames the odometry published around them reached the
    # node more than 1 s late (2 of 10 runs here, once on CI: no "ignored" odometry in the node's
    # log, its newest sample stayed 65 ms before the 1280x960 frame), longer than Fast DDS's 3 s
    # default heartbeat period, after which a reliable reader recovers a lost sample.
    node = start_node(scene, ros, tmp_path / "node.log", "log_throttle_s:=60.0", "odom_wait_s:=4.0",
                      "max_image_size:=320", fastdds_profile=PROFILE)
    feeder = Feeder(ros, scene.bag, "hostile_feeder")
    truth = ground_truth(scene)
    listener = Listener(ros, "hostile_listener")
    ms = 1_000_000
    frames = feeder.frames
    good: dict[int, LocalizationStatus] = {}  # the good frames' answers, by stamp
    player = None

    def answer(stamp_ns: int, since: int = 0) -> LocalizationStatus:
        return await_status(ros, listener, node, stamp_ns, since)

    try:
        wait_ready(ros, node, listener)
        assert ros.spin_until(lambda: feeder.connected() or not node.alive(), timeout=60), node.log()
        # The feeder can match the node's subscription before the node has logged it (CI saw this).
        assert ros.spin_until(lambda: log_lines(node, r"listening to camera/image_raw \(reliable\)")
                              or not node.alive(), timeout=30) and node.alive(), node.log()
        feeder.play_until(frames[0][0] - 300 * ms)

        # 1. CameraInfo but no image (what a camera whose frames never arrive looks like): ERROR.
        for k in (3, 2, 1):
            info = copy_msg(feeder.infos[frames[0][0]])
            info.header.stamp = ns_to_stamp(frames[0][0] - k * 50 * ms)
            feeder.publish("/camera/camera_info", info, frames[0][0] - k * 50 * ms)
        error = ros.spin_until(lambda: any(d.status[0].level == DiagnosticStatus.ERROR
                                           and "CameraInfo arrives" in d.status[0].message
                                           for d in listener.diagnostics), timeout=20)
        assert error, [d.status[0].message for d in listener.diagnostics]

        # 2. The recorded size: relocalize, then track.
        for k in (0, 1):
            good[frames[k][0]] = answer(feeder.frame(k))

        # 3. Real camera sizes from this process's publisher (reliable, Fast DDS defaults: a 512 KiB
        # shared-memory segment, which loses every best-effort frame over ~0.5 MB).
        for k, scale, size, encoding in ((2, 4, (1280, 960), "rgb8"), (3, 6, (1920, 1080), "bgr8")):
            image, info = camera_frame_as(frames[k][1], feeder.infos[frames[k][0]], scale, size, encoding)
            status = answer(feeder.frame(k, image=image, info=info))
            assert status.time_network > 0, f"{size} {encoding} frame not processed: {status.reason}\n{node.log()}"
            good[frames[k][0]] = status
        # heatmap_scale 0.5; the heatmaps are published after the status: wait for them, not just the status
        big = {overview_size(1280, 960, 0.5), overview_size(1920, 1080, 0.5)}
        assert ros.spin_until(lambda: {(h.width, h.height) for h in listener.heatmaps} >= big, timeout=15), \
            {(h.width, h.height) for h in listener.heatmaps}

        # 4. Frames stamped 20 s and 1 h ahead, /clock unchanged (a sender with a wrong clock): each
        # answered as such, never processed; the next good frame is tracked (no "no CameraInfo").
        for ahead in (20 * SECOND, 3600 * SECOND):
            status = answer(feeder.frame(4, stamp_ns=frames[4][0] + ahead, clock=False))
            assert not status.success and "stamp_ahead: image stamp" in status.reason
            assert "ahead of the clock" in status.reason, status.reason
        assert len(log_lines(node, "Skipped image at .*stamp_ahead")) == 1, node.log()  # throttled: 60 s
        good[frames[4][0]] = answer(feeder.frame(4))
        assert good[frames[4][0]].time_network > 0, good[frames[4][0]].reason

        # 5. Out of order: a frame 333 ms older than the newest arrives late; then a duplicate.
        late = frames[4][0] - 333 * ms
        status = answer(feeder.frame(4, stamp_ns=late, clock=False))
        assert "out_of_order: image stamp" in status.reason and "0.333 s older than the newest image" in status.reason
        mark = len(listener.statuses)
        feeder.frame(4, clock=False)
        status = answer(frames[4][0], since=mark)
        assert "duplicate_stamp" in status.reason, status.reason

        # 6. RViz's initial pose 5 km from the map while tracking: refused, tracking kept (frame 5).
        far = PoseWithCovarianceStamped()
        far.header.frame_id = "map"
        here = truth_at(truth, frames[4][0])
        far.pose.pose.position.x, far.pose.pose.position.y = float(here[0, 3]) + 5000.0, float(here[1, 3])
        far.pose.pose.orientation.w = 1.0
        feeder.publish("/initialpose", far, frames[4][0] + 10 * ms)
        assert ros.spin_until(lambda: log_lines(node, r"Ignored initial pose: .* m from the nearest keyframe, "
                                                      r"outside the map"), timeout=30), node.log()

        # 7. Frame 5 from a best-effort publisher with the shipped profile, in its own process (Fast
        # DDS reads a profile once per process): 1920x1080 bgr8. The node follows the publisher's
        # reliability and says so; the frame arrives and is tracked. The frame is in the bag twice
        # with one stamp, in case best effort loses the first: processed once either way.
        image, info = camera_frame_as(frames[5][1], feeder.infos[frames[5][0]], 6, (1920, 1080), "bgr8")
        odometry = [(t, m) for t, topic, m in feeder.messages[feeder.next:] if topic == "/odom"]
        bag = write_bag(tmp_path / "best_effort_camera", [
            *[("/odom", "nav_msgs/msg/Odometry", t, m) for t, m in odometry],
            ("/camera/image_raw", "sensor_msgs/msg/Image", frames[5][0], image),
            ("/camera/camera_info", "sensor_msgs/msg/CameraInfo", frames[5][0], info),
            ("/camera/image_raw", "sensor_msgs/msg/Image", frames[5][0] + 1, image),
            ("/camera/camera_info", "sensor_msgs/msg/CameraInfo", frames[5][0] + 1, info)])
        player = ChildProcess(python_cmd("-m", "pixloc_ros.cli", "play", str(bag), "--best-effort", "/camera/image_raw",
                                         "--pace-topic", f"{NODE}/status", "--pace-timeout", "30",
                                         "--wait-timeout", "60"),
                              node_env(ros, PROFILE), tmp_path / "player.log")
        assert ros.spin_until(lambda: not player.alive(), timeout=180), player.log()
        assert player.wait(10) == 0, player.log() + "\n--- node ---\n" + node.log()[-6000:]
        assert log_lines(node, "a best-effort publisher appeared: subscribing best effort"), node.log()
        ros.spin_until(lambda: False, timeout=1.0)  # the last tf
        answered = [s for s in listener.statuses if stamp_to_ns(s.header.stamp) == frames[5][0] and s.time_network > 0]
        assert len(answered) == 1, [s.reason for s in listener.statuses if stamp_to_ns(s.header.stamp) == frames[5][0]]
        good[frames[5][0]] = answered[0]
        assert node.alive()
    finally:
        if player is not None:
            player.stop()
        node.stop()
    log = node.log()
    assert not log_lines(node, r"\[(ERROR|FATAL)\]"), log
    assert not log_lines(node, "Resetting the localization"), log  # no bad stamp reset the node
    assert not log_lines(node, "no CameraInfo"), log  # nor made later frames look late

    # No wrong pose: poses only for good frames, one each, and one map -> odom per pose.
    pose_stamps = [stamp_to_ns(p.header.stamp) for p in listener.poses]
    assert set(pose_stamps) <= set(good) and len(pose_stamps) == len(set(pose_stamps)), pose_stamps
    tf_stamps = [stamp_to_ns(t.header.stamp) - TRANSFORM_TOLERANCE_NS for t in listener.tf if t.child_frame_id == "odom"]
    assert sorted(tf_stamps) == sorted(pose_stamps)
    errors = {}
    for pose in listener.poses:
        stamp = stamp_to_ns(pose.header.stamp)
        errors[stamp] = pose_error(pose_msg_to_matrix(pose.pose.pose), truth_at(truth, stamp))
        assert errors[stamp][0] <= MAX_ERROR[0] and errors[stamp][1] <= MAX_ERROR[1], errors[stamp]
    with capsys.disabled():
        print(f"\nnode hostile inputs: {len(listener.poses)} poses for {len(good)} good frames "
              f"({'trained' if scene.trained else 'random'} weights); "
              + "; ".join(f"frame {k}: {'pose %.2f m/%.2f deg' % errors[t] if t in errors else good[t].reason}"
                          for k, (t, _) in enumerate(frames) if t in good))
    if not scene.trained:
        pytest.skip("random weights publish no pose under the shipped gates: the messages and 'no wrong pose' "
                    "are checked, localizing needs trained weights (PIXLOC_ROS_TEST_WEIGHTS)")
    # Good frames after each case localized: the big frames, the frame after the future stamps,
    # and the best-effort frame after the far initial pose, the last two still tracking.
    for k in (2, 3, 4, 5):
        assert good[frames[k][0]].success, (k, good[frames[k][0]].reason)
    assert good[frames[5][0]].state == LocalizationStatus.STATE_TRACKING


def corrupt_copy(map_file: Path, out: Path) -> str:
    """A copy of the map with one byte flipped in a keyframe's observations; that keyframe's name."""
    from pixloc_ros.core.maps.mapfile import open_map

    m = open_map(map_file)
    sizes = np.diff(np.asarray(m.keyframe_obs_offsets))
    k = int(np.flatnonzero(sizes > 0)[len(np.flatnonzero(sizes > 0)) // 2])  # a keyframe in the middle
    entry = m._table["obs_feature_0"]
    row_bytes = entry["nbytes"] // max(1, entry["shape"][0])
    offset = int(entry["offset"]) + int(m.keyframe_obs_offsets[k]) * row_bytes + 3
    name = m.header.keyframe_names[k]
    m.close()
    data = bytearray(map_file.read_bytes())
    data[offset] ^= 0x40
    out.write_bytes(bytes(data))
    return name


def test_start_up_errors_are_one_line_without_a_traceback(scene, ros, tmp_path):
    """Bad params files, mistyped and misspelt parameters, a damaged map, arguments rcl refuses:
    exit 1 with one FATAL line that says what to fix, and no traceback. (Each case is a node
    process: what `ros2 run` does.)"""
    malformed = tmp_path / "malformed.yaml"
    malformed.write_text("/**:\n  ros__parameters:\n    num_keyframes: [3\n")
    other_node = tmp_path / "other_node.yaml"
    other_node.write_text("localizer:\n  ros__parameters:\n    num_keyframes: 3\n")
    damaged = tmp_path / "damaged.pxmap"
    keyframe = corrupt_copy(scene.map_file, damaged)
    required = ["-p", f"map_file:={scene.map_file}", "-p", f"weights:={scene.weights}", "-p", "device:=cpu"]
    cases = [
        (["--params-file", str(tmp_path / "missing.yaml")], f"params file '{tmp_path / 'missing.yaml'}' does not exist"),
        (["--params-file", str(malformed)], "is not valid YAML (line 4"),
        (["--params-file", str(other_node)], "has no section for this node (its sections are ['localizer']"),
        (["--params-file", str(CONFIG), *required, "-p", "num_hypotheses:=four"],
         "Parameter 'num_hypotheses' must be an integer, got 'four'"),
        (["--params-file", str(CONFIG), *required, "-p", "num_hypothesis:=4"],
         "Unknown parameter 'num_hypothesis' (did you mean 'num_hypotheses'?)"),
        (["--params-file", str(CONFIG), *required, "-p", f"map_file:={damaged}"],
         f"the observations of keyframe '{keyframe}' are corrupted (CRC-32 mismatch)"),
        (["-r", "camera", *required], "Couldn't parse remap rule: '-r camera'"),  # rcl's own error (RCLError)
    ]
    for k, (args, message) in enumerate(cases):
        proc = ChildProcess(python_cmd("-m", "pixloc_ros.ros.start", "--ros-args", *args), node_env(ros),
                            tmp_path / f"case{k}.log")
        try:
            rc = proc.wait(120)
        finally:
            proc.stop()
        log = proc.log()
        fatal = log_lines(proc, r"\[FATAL\]")
        assert rc == 1 and "Traceback" not in log, log
        assert len(fatal) == 1 and "Cannot start: " in fatal[0] and message in fatal[0], log
        assert not log_lines(proc, "listening to"), log  # never got as far as subscribing


def _loaded(pid: int, library: str) -> bool:
    try:
        return library in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc to see how far the start-up got")
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_during_start_up_ends_the_node_quietly(scene, ros, tmp_path, sig):
    """Ctrl-C or SIGTERM while rclpy is being imported, while torch loads, and once the map is open
    (being checked, or just after): exit 0, no traceback, no FATAL. The moments are found from the
    files the process has mapped, not from sleeps (a loaded machine starts slower)."""
    for k, library in enumerate(("librcl.so", "libtorch_cpu.so", scene.map_file.name)):
        proc = ChildProcess(python_cmd("-m", "pixloc_ros.ros.start", "--ros-args", "--params-file", str(CONFIG),
                                       "-p", f"map_file:={scene.map_file}", "-p", f"weights:={scene.weights}",
                                       "-p", "device:=cpu"), node_env(ros), tmp_path / f"{sig.name}{k}.log")
        try:
            deadline = time.monotonic() + 120
            while not _loaded(proc.proc.pid, library) and proc.alive() and time.monotonic() < deadline:
                time.sleep(0.01)
            assert proc.alive(), proc.log()
            proc.proc.send_signal(sig)
            rc = proc.wait(60)
        finally:
            proc.stop()
        log = proc.log()
        assert rc == 0 and "Traceback" not in log and not log_lines(proc, r"\[(ERROR|FATAL)\]"), (library, rc, log)
