"""Replay a recorded drive through the real node over DDS and collect what it publishes: the
main job (`pixloc-ros demo`) and what a user watching RViz would see.

The node runs as its own process (`python -m pixloc_ros.ros.start` with the params file, as
`ros2 run` starts it); the bag is played by `pixloc-ros play` in another process, paced by the
node's status so that a slow CPU still processes every frame; this process listens like RViz and
robot_localization would.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from geometry_msgs.msg import PoseWithCovarianceStamped
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from pixloc_ros.msg import LocalizationStatus
from pixloc_ros.ros.compat import FASTDDS_PROFILE_VARIABLES, fastdds_profile_env, publisher_count
from pixloc_ros.ros.session import REPO, ChildProcess, RosContext, ros_env

NODE = "/pixloc_localizer"
DRIVE_TOPICS = ("/camera/image_raw", "/camera/camera_info", "/odom", "/gnss/fix", "/tf_static")


def rig_drive_topics(cameras) -> tuple[str, ...]:
    """The topics of a rig drive (``synth --rig``): every camera's image and CameraInfo, and the rest."""
    return (*[f"/{c}/{kind}" for c in cameras for kind in ("image_raw", "camera_info")], *DRIVE_TOPICS[2:])


class NodeListener:
    """Subscribes to the node's pose, status and fused heatmap (and each rig camera's), keeping
    everything received."""

    def __init__(self, ros: RosContext, name: str, node: str = NODE, cameras=()):
        self.node = ros.node(name)
        self.poses: list[PoseWithCovarianceStamped] = []
        self.statuses: list[LocalizationStatus] = []
        self.heatmaps: list[Image] = []
        self.camera_heatmaps: dict[str, list[Image]] = {c: [] for c in cameras}
        sub = self.node.create_subscription
        latched = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.subs = [sub(PoseWithCovarianceStamped, f"{node}/pose", self.poses.append, latched),
                     sub(LocalizationStatus, f"{node}/status", self.statuses.append, 1000),
                     sub(Image, f"{node}/heatmap/fused", self.heatmaps.append, 10)]
        self.subs += [sub(Image, f"{node}/heatmap/{c}/fused", self.camera_heatmaps[c].append, 10) for c in cameras]

    def connected(self) -> bool:
        """Every subscription has found the node's publisher."""
        return all(publisher_count(s, self.node) > 0 for s in self.subs)


@dataclass
class ReplayResult:
    """What the node published during one replay."""

    poses: list = field(default_factory=list)  # PoseWithCovarianceStamped
    statuses: list = field(default_factory=list)  # LocalizationStatus, one per processed frame
    heatmaps: list = field(default_factory=list)  # fused heatmap images
    camera_heatmaps: dict = field(default_factory=dict)  # rig camera -> its fused heatmap images
    node_log: str = ""


def replay_through_node(bag: Path, params_file: Path, overrides: dict[str, str], domain_id: int, log_dir: Path,
                        expected_frames: int, startup_timeout_s: float = 300.0,
                        frame_timeout_s: float = 120.0, rig_cameras=()) -> ReplayResult:
    """Start the node, play ``bag`` through it, return what it published; always stops both processes.

    overrides: node parameters (name -> value as on the command line); rig_cameras: a rig drive's
    cameras (the node then needs ``rig_cameras`` among the overrides): the player waits for each
    camera's topics, paces on the first one (one answer per instant) and every camera's heatmaps are
    kept. expected_frames: frames (instants) the node answers. RuntimeError with the node's log
    when it does not come up or dies.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    args = ["--ros-args", "--params-file", str(params_file)]
    for name, value in overrides.items():
        args += ["-p", f"{name}:={value}"]
    env = ros_env(domain_id)
    env["RCUTILS_COLORIZED_OUTPUT"] = "0"
    ros = RosContext(domain_id)
    # The node with the Fast DDS profile the launch file gives it (a 16 MiB shared-memory segment):
    # with the default 512 KiB, a rig's heatmaps (16 images an instant) filled the segment and a
    # pose published next to them was lost now and then (its resend comes with the next heartbeat,
    # after the next pose replaced it in the depth-1 history).
    node_env = dict(env)
    if not any(env.get(v) for v in FASTDDS_PROFILE_VARIABLES):  # as the launch file: the user's profile wins
        node_env.update(fastdds_profile_env(str(REPO / "config" / "fastdds_large_frames.xml")))
    node = ChildProcess([sys.executable, "-m", "pixloc_ros.ros.start", *args], node_env, log_dir / "node.log")
    player = None
    try:
        listener = NodeListener(ros, "pixloc_demo_listener", cameras=rig_cameras)
        ros.spin_until(lambda: listener.connected() or not node.alive(), timeout=startup_timeout_s)
        if not node.alive() or not listener.connected():
            raise RuntimeError(f"the node did not come up; its log ({log_dir / 'node.log'}):\n{node.log()[-3000:]}")
        topics = rig_drive_topics(rig_cameras) if rig_cameras else DRIVE_TOPICS
        pace = ["--pace-images", f"/{rig_cameras[0]}/image_raw"] if rig_cameras else []
        player = ChildProcess([sys.executable, "-m", "pixloc_ros.cli", "play", str(bag), "--pace-topic",
                               f"{NODE}/status", "--pace-timeout", str(frame_timeout_s), *pace, "--wait-for",
                               *topics, "--wait-timeout", "60"], env, log_dir / "player.log")
        ros.spin_until(lambda: (not player.alive() and len(listener.statuses) >= expected_frames)
                       or not node.alive(), timeout=frame_timeout_s * max(expected_frames, 1) + 60)
        ros.spin_until(lambda: False, timeout=1.0)  # the last pose and heatmap, published with the status
        if not node.alive():
            raise RuntimeError(f"the node died; its log:\n{node.log()[-3000:]}")
        if player.wait(30) != 0:
            raise RuntimeError(f"the player failed; its log:\n{player.log()[-3000:]}")
        return ReplayResult(list(listener.poses), list(listener.statuses), list(listener.heatmaps),
                            {c: list(v) for c, v in listener.camera_heatmaps.items()}, node.log())
    finally:
        if player is not None:
            player.stop()
        node.stop()
        ros.close()
