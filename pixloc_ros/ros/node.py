"""The relocalization node: thin glue around ``core.tracking.pipeline.RelocalizationPipeline``.

Conventions follow nav2's AMCL (the relocalizer ROS users know): ``/initialpose`` in, the pose
out as PoseWithCovarianceStamped on ``~/pose`` (transient local), ``map -> odom`` on /tf
future-dated by ``transform_tolerance``; ``publish_tf`` false leaves tf to robot_localization.

Threads: subscription callbacks only convert small messages, check for time jumps and queue
work, so they never block. Odometry, GNSS, initial poses and resets are queued as events;
camera frames go to a one-slot queue (``LatestOnlyWorker``: a newer frame replaces a waiting
one, counted as dropped). The worker thread applies the queued events to the pipeline in
arrival order, then decodes and processes the frame and publishes the results. Only the worker
thread touches the pipeline, so the pipeline needs no locking.

Stamps: every input passes a ``StampGuard`` (ros/stamps.py) first. A stamp far ahead of the
clock or of the other inputs is rejected with its own message and forgotten (one bad stamp must
not make every later frame look late); an image older than the newest (out of order) or with
the newest's stamp (a duplicate) is skipped and named as such; a stamp far behind its input's
newest means the data restarted: reset. Every camera image gets one status, its result or why
it was skipped, except one a newer frame replaced in the queue (counted in the next status).

A lifecycle node, as nav2's AMCL (ros/lifecycle.py): configure loads the map and the weights and
verifies every checksum of the map before any subscription exists; activate subscribes and
enables the publishers. With ``autostart`` (the default) the process does both at start and a
setup error ends it with one fatal log line (``ros/start.py`` is the process entry).
"""
from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseWithCovarianceStamped, TransformStamped
from nav_msgs.msg import Odometry
from rclpy.clock import Clock, ClockChange, ClockType, JumpHandle, JumpThreshold
from rclpy.duration import Duration
from rclpy.lifecycle.node import LifecycleNode
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.timer import Timer
from sensor_msgs.msg import NavSatFix

from pixloc_ros.core.geometry.transforms import make_transform, matrix_from_quat_xyzw
from pixloc_ros.core.maps.mapfile_format import MapFileError
from pixloc_ros.msg import LocalizationStatus
from pixloc_ros.ros import conversions as conv
from pixloc_ros.ros.counters import NodeCounters
from pixloc_ros.ros.diagnostics import STATE_NAMES, localization_status, map_tiles_status
from pixloc_ros.ros.health import InputMonitor
from pixloc_ros.ros.lifecycle import NODE_NAME, ManagedTransitions
from pixloc_ros.ros.params import NodeSettings, declare_values, engine_configs, params_files
from pixloc_ros.ros.rig_input import RigFrame, RigInput
from pixloc_ros.ros.stamps import StampCheck, StampGuard, Verdict
from pixloc_ros.ros.sync import CameraSubscriber, Unmatched
from pixloc_ros.ros.tf import StaticTransformLookup, TransformBroadcaster
from pixloc_ros.ros.throttle import ThrottledLogger
from pixloc_ros.ros.visual_outputs import VisualOutputs, heatmap_topics
from pixloc_ros.ros.worker import LatestOnlyWorker

# Output topics relative to the node (~/...); the pose topic is a parameter (pose_topic).
OUTPUT_TOPICS = {
    "status": "status",
    "markers": "markers",
    **{f"heatmap_{key}": topic for key, topic in heatmap_topics().items()},
}
LATCHED_QOS = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
MAX_PENDING_EVENTS = 10_000  # odometry at 100 Hz for 100 s of a stalled worker
STALE_FRAMES_S = 5.0  # diagnostics warn when no camera frame came for this long
HEALTH_WINDOW_S = 10.0  # diagnostics judge the camera input over this much wall time


@dataclass
class CameraFrame:
    """What the camera callback hands to the worker: the raw messages, decoded on the worker."""

    stamp_ns: int
    image: Any  # sensor_msgs/Image or CompressedImage
    info: Any  # sensor_msgs/CameraInfo
    received_s: float  # time.monotonic() at arrival, for the latency statistic


def build_pipeline(settings: NodeSettings):
    """Open the weights and the map, check every checksum of the map (reads it once), and build the
    per-frame pipeline. Raises on any setup error: a damaged map is refused here, at start, rather
    than failing the frames that need its damaged part later."""
    from pixloc_ros.core.tracking.pipeline import load_pipeline

    configs = engine_configs(settings)
    calibration = settings.calibration_file.strip()
    pipeline = load_pipeline(settings.map_file, settings.weights, settings.device, configs.pipeline,
                             configs.localizer, tile_loader_config=configs.tiles,
                             calibration=None if not calibration else ("" if calibration.lower() == "none" else calibration))
    pipeline.verify_map()
    return pipeline


class LocalizerNode(ManagedTransitions, LifecycleNode):
    """PixLoc relocalization: Image + CameraInfo (+ odometry, GNSS, /initialpose) -> pose, tf, status.
    A lifecycle node (ros/lifecycle.py says what each state holds)."""

    def __init__(self, argv: list[str] | None = None, **node_kwargs):
        super().__init__(NODE_NAME, **node_kwargs)
        # Declared (type-checked) now, validated across fields by configure. argv: to catch -p
        # overrides rcl dropped, and to name the parameter files.
        self._values = declare_values(self, argv)
        self.autostart = bool(self._values["autostart"])
        files = params_files(argv or [])
        self.get_logger().info(f"parameter files: {', '.join(files)}" if files else
                               "no parameter file: defaults and -p overrides only")
        self.settings: NodeSettings | None = None
        self.pipeline = None
        self.counters = NodeCounters()  # since the process started, across activations
        self._inputs: list = []  # subscriptions, timer, clock jump handle while active
        self._outputs: list = []  # publishers while configured
        self.worker: LatestOnlyWorker | None = None
        self.tf_broadcaster = self.static_tf = self.camera_sub = self.rig = None

    # ---------------------------------------------------------------------- lifecycle steps
    def configure_resources(self) -> None:
        """Validate the settings, load and check map and weights, warm up, create the publishers."""
        self.settings = s = NodeSettings.from_values(self._values)
        self.log = ThrottledLogger(self.get_logger(), s.log_throttle_s)
        started = time.perf_counter()
        self.pipeline = build_pipeline(s)
        # The fused LM's fallback (core/engine/lm/guard.py) says why in one warning, through this logger.
        self.pipeline.set_lm_warning_handler(lambda text: self.get_logger().warning(text))
        summary = self.pipeline.summary()
        self.get_logger().info(f"map {s.map_file}: {summary.num_keyframes} keyframes, "
                               f"{summary.num_points} points, every checksum verified; network on "
                               f"{summary.device} in {summary.network_precision}"
                               + (f" (int8 network: {summary.int8})" if summary.int8 else "")
                               + f" ({time.perf_counter() - started:.1f} s to load); "
                               f"covariance {'calibrated' if summary.calibrated else 'uncalibrated'}; inlier gate "
                               f"{summary.min_inlier_ratio:.3g} "
                               f"({'fitted for the weights' if summary.inlier_gate_fitted else 'set'})")
        if s.warm_up_size:
            width, height = (int(v) for v in s.warm_up_size)
            try:
                seconds = self.pipeline.warm_up(width, height)
            except RuntimeError as err:  # e.g. out of GPU memory for that size: a setup error, said as one
                raise ValueError(f"Parameter 'warm_up_size' = [{width}, {height}]: preparing the network and "
                                 f"the optimizer for that frame size failed: {err}") from err
            self.get_logger().info(f"prepared for {width}x{height} frames ({seconds:.1f} s)")
        self._param_extrinsic = self._extrinsic_from_parameter()
        # Lifecycle publishers: silent until activated (AMCL's pose publisher is one too).
        publisher = self.create_lifecycle_publisher
        self.pose_pub = publisher(PoseWithCovarianceStamped, s.pose_topic, LATCHED_QOS)
        self.status_pub = publisher(LocalizationStatus, "~/" + OUTPUT_TOPICS["status"], 10)
        self.diag_pub = publisher(DiagnosticArray, "/diagnostics", 10)
        self.visuals = VisualOutputs(publisher, s.publish_heatmaps, s.publish_markers, s.rig_cameras,
                                     s.heatmap_scale, s.map_frame)
        self._outputs = [self.pose_pub, self.status_pub, self.diag_pub, *self.visuals.publishers]
        # tf goes out from the worker only, which runs only while active.
        self.tf_broadcaster = TransformBroadcaster(self) if s.publish_tf else None
        self.static_tf = StaticTransformLookup(self, on_error=lambda text: self.log.warn(text))

    def activate_io(self) -> None:
        """Fresh tracking state, the worker, the subscriptions, the clock jump callback, diagnostics."""
        s = self.settings
        self._events: deque[tuple[str, Callable[[], None]]] = deque(maxlen=MAX_PENDING_EVENTS)
        self._guard = StampGuard(int(round(s.clock_jump_tolerance_s * 1e9)))
        self._odom_cond = threading.Condition()
        self._latest_odom_ns: int | None = None  # newest odometry stamp received (the worker waits on it)
        self._logged_scale = 1.0  # the covariance scale last logged
        self._monitor = InputMonitor(HEALTH_WINDOW_S)
        self._skip_reason = ""  # why the last skipped image was skipped (diagnostics)
        self._map_error: str | None = None  # the last map error while running (diagnostics: ERROR)
        self._last_status: LocalizationStatus | None = None
        self._last_frame_s: float | None = None
        self._last_latency_s = float("nan")
        self._reported_tiles: set = set()  # map tiles whose failure was logged
        self.pipeline.reset("activated")  # a pose from before deactivation is stale

        # --- inputs (CameraInfo and GNSS with the sensor-data QoS: best effort matches every publisher)
        self.worker = LatestOnlyWorker(self._process_frame, name="pixloc-worker", on_error=self._on_worker_error,
                                       prepare=self._prepare_frame if s.overlap_network else None)
        # Images: reliable unless a publisher is best effort (image_reliability, ros/reliability.py):
        # best effort loses every frame over ~0.5 MB with Fast DDS's defaults.
        if s.rig_cameras:  # a rig (ros/rig_input.py): one subscription per camera, frames grouped by stamp
            self.camera_sub = self.rig = RigInput(
                self, s, qos_profile_sensor_data, self.worker.submit, self._admit_camera,
                lambda item, n, topic: self._on_unmatched(item, f"camera {n}: ", topic), self.log,
                warn=lambda text: self.get_logger().warning(text))
        else:
            self.camera_sub = CameraSubscriber(
                self, self._image_topic(), s.camera_info_topic, qos_profile_sensor_data, self._on_camera,
                self._on_unmatched, compressed=s.image_transport == "compressed",
                tolerance_ns=int(round(s.sync_tolerance_s * 1e9)), image_reliability=s.image_reliability,
                admit=self._admit_camera, log=lambda text: self.get_logger().warning(text))
        self._inputs = [self.camera_sub]
        if s.odom_topic:
            self._inputs.append(self.create_subscription(Odometry, s.odom_topic, self._on_odometry, 100))
        if s.gnss_topic:
            self._inputs.append(self.create_subscription(NavSatFix, s.gnss_topic, self._on_gnss,
                                                         qos_profile_sensor_data))
        self._inputs.append(self.create_subscription(PoseWithCovarianceStamped, s.initial_pose_topic,
                                                     self._on_initial_pose, 10))
        # A bag restarted under use_sim_time sends /clock back; stamps going back are caught in
        # the callbacks too (a looping bag replayed without sim time).
        threshold = JumpThreshold(min_forward=None, on_clock_change=False,
                                  min_backward=Duration(nanoseconds=-max(1, int(s.clock_jump_tolerance_s * 1e9))))
        self._inputs.append(self.get_clock().create_jump_callback(threshold, post_callback=self._on_clock_jump))
        # Diagnostics at 1 Hz of steady time: they must keep coming when the bag (and /clock) stops.
        self._inputs.append(self.create_timer(1.0, self._publish_diagnostics,
                                              clock=Clock(clock_type=ClockType.STEADY_TIME)))
        tf_text = (f", tf {s.map_frame} -> {s.odom_frame if s.tf_mode == 'map_odom' else s.base_frame}"
                   if s.publish_tf else ", no tf")
        reliability = "reliable" if self.camera_sub.image_sub.reliable else "best effort"
        cameras = (f"rig {self.rig.describe()} ({reliability})" if s.rig_cameras
                   else f"{self._image_topic()} ({reliability}) + {s.camera_info_topic}")
        self.get_logger().info(f"listening to {cameras}"
                               f"{', ' + s.odom_topic if s.odom_topic else ''}"
                               f"{', ' + s.gnss_topic if s.gnss_topic else ''}, {s.initial_pose_topic}; "
                               f"publishing {self.pose_pub.topic_name}{tf_text}")

    def deactivate_io(self) -> None:
        """Remove the inputs (nothing new arrives), then let the frame in progress finish."""
        for entity in reversed(self._inputs):
            if isinstance(entity, (CameraSubscriber, RigInput)):
                entity.destroy()
            elif isinstance(entity, JumpHandle):
                entity.unregister()
            elif isinstance(entity, Timer):
                self.destroy_timer(entity)
            else:
                self.destroy_subscription(entity)
        self._inputs = []
        self.camera_sub = None
        if self.worker is not None:
            worker, self.worker = self.worker, None
            try:
                worker.stop()
            except Exception as err:  # an error the worker kept; stopping anyway
                self.get_logger().error(f"worker: {type(err).__name__}: {err}")

    def release(self) -> None:
        """Everything back to unconfigured (cleanup, shutdown, errors, process exit); never raises."""
        self.deactivate_io()
        for pub in self._outputs:
            self.destroy_lifecycle_publisher(pub)
        self._outputs, self.visuals = [], None
        for tf_entity in (self.tf_broadcaster, self.static_tf):
            if tf_entity is not None:
                tf_entity.destroy(self)
        self.tf_broadcaster = self.static_tf = None
        if self.pipeline is not None:
            pipeline, self.pipeline = self.pipeline, None
            pipeline.close()  # a tiled map's loader thread

    # ------------------------------------------------------------------------------- setup
    def _image_topic(self) -> str:
        s = self.settings
        return s.image_topic.rstrip("/") + "/compressed" if s.image_transport == "compressed" else s.image_topic

    def _extrinsic_from_parameter(self) -> np.ndarray | None:
        ext = self.settings.camera_extrinsic
        return make_transform(matrix_from_quat_xyzw(ext[3:]), ext[:3]) if ext else None

    # ----------------------------------------------------------------------- time and events
    def _judge(self, stream: str, stamp_ns: int) -> StampCheck:
        """The StampGuard's verdict on ``stamp_ns`` of ``stream``; resets on RESTART (the message
        that revealed the restart then counts as the first of the new timeline)."""
        clock = self.get_clock()
        now_ns = clock.now().nanoseconds
        if clock.ros_time_is_active:  # sim time: the bag's /clock (0 until the first one came)
            ros_now, system_now = (now_ns if now_ns > 0 else None), None
        else:
            ros_now, system_now = None, now_ns
        check = self._guard.check(stream, stamp_ns, ros_now, system_now)
        if check.verdict is Verdict.RESTART:
            self._reset(check.describe(stream))
        return check

    def _on_clock_jump(self, jump) -> None:
        if jump.clock_change not in (ClockChange.ROS_TIME_NO_CHANGE, ClockChange.SYSTEM_TIME_NO_CHANGE):
            return  # switching between system and ROS time is not a restart
        # A data callback may have seen the restart first (and reset): reset only while some
        # input's newest stamp is still ahead of the new time.
        now_ns = self.get_clock().now().nanoseconds
        newest = self._guard.newest()
        if newest is None or newest < now_ns + self.settings.clock_jump_tolerance_s * 1e9:
            return
        self._guard.forget()
        self._reset(f"/clock jumped back by {-jump.delta.nanoseconds * 1e-9:.1f} s (bag restarted?)")

    def _reset(self, reason: str) -> None:
        """Drop everything waiting (it belongs to the old timeline) and queue a pipeline reset."""
        self.counters.resets += 1
        # Not throttled: each reset is its own event (a restarted bag), and a burst of them is
        # impossible (each needs time to go back by more than the tolerance).
        self.get_logger().warning(f"Resetting the localization (reset {self.counters.resets}): {reason}")
        with self._odom_cond:
            self._latest_odom_ns = None
        self._events.clear()
        self.camera_sub.reset()
        self.worker.clear()
        self._events.append(("reset", lambda: self.pipeline.reset(reason)))

    def _apply_events(self) -> None:
        """On the worker: hand the queued inputs to the pipeline in arrival order."""
        while True:
            try:
                kind, apply = self._events.popleft()
            except IndexError:
                return
            try:
                apply()
            except ValueError as err:
                self.counters.bad_input += 1
                self.log.warn(f"Ignored {kind}: {err}")

    # --------------------------------------------------------------------------- callbacks
    def _on_odometry(self, msg: Odometry) -> None:
        s = self.settings
        try:
            sample = conv.odometry_to_sample(msg)
            for got, want, what in ((sample.frame_id, s.odom_frame, "frame_id"),
                                    (sample.child_frame_id, s.base_frame, "child_frame_id")):
                if got and got.lstrip("/") != want:
                    raise ValueError(f"{what} {got!r} is not {want!r} (parameters odom_frame, base_frame)")
        except ValueError as err:
            self.counters.bad_input += 1
            self.log.warn(f"Ignored odometry message: {err}")
            return
        if self._stamp_rejected("odometry", sample.stamp_ns, "odometry message"):
            return
        self._events.append(("odometry", lambda: self.pipeline.add_odometry(sample.stamp_ns, sample.matrix)))
        with self._odom_cond:
            self._latest_odom_ns = max(sample.stamp_ns, self._latest_odom_ns or 0)
            self._odom_cond.notify_all()

    def _stamp_rejected(self, stream: str, stamp_ns: int, what: str) -> bool:
        """For odometry and GNSS: True (logged) when the stamp is far ahead. Late or repeated
        samples go on: the odometry buffer keeps the newest, and a late fix is still a fix."""
        check = self._judge(stream, stamp_ns)
        if check.verdict is not Verdict.AHEAD:
            return False
        self.counters.bad_stamps += 1
        self.log.warn(f"Ignored {what}: {check.describe(stream)}")
        return True

    def _wait_for_odometry(self, stamp_ns: int) -> None:
        """On the worker: give odometry at or after ``stamp_ns`` up to ``odom_wait_s`` to arrive (it is
        often recorded just after the image), like tf2's MessageFilter waits for a transform."""
        with self._odom_cond:
            if self._latest_odom_ns is None:
                return  # no odometry (yet): nothing to wait for
            self._odom_cond.wait_for(lambda: self._latest_odom_ns is None or self._latest_odom_ns >= stamp_ns,
                                     timeout=self.settings.odom_wait_s)

    def _on_gnss(self, msg: NavSatFix) -> None:
        try:
            fix = conv.navsatfix_to_fix(msg)
        except ValueError as err:
            self.counters.bad_input += 1
            self.log.warn(f"Ignored GNSS fix: {err}")
            return
        if self._stamp_rejected("GNSS", fix.stamp_ns, "GNSS fix"):
            return
        self._events.append(("gnss", lambda: self.pipeline.add_gnss(
            fix.stamp_ns, fix.latitude_deg, fix.longitude_deg, fix.altitude_m, fix.covariance)))

    def _on_initial_pose(self, msg: PoseWithCovarianceStamped) -> None:
        s = self.settings
        try:
            frame = msg.header.frame_id.lstrip("/")
            if frame and frame != s.map_frame:
                raise ValueError(f"frame {frame!r} is not the map frame {s.map_frame!r}")
            map_from_base = conv.pose_msg_to_matrix(msg.pose.pose)
            # RViz's "2D Pose Estimate" sends z = 0 and a yaw only: the pipeline then takes height
            # and tilt from the map. A pose with a height or a tilt is used as it is (6-DoF).
            is_2d = map_from_base[2, 3] == 0.0 and abs(map_from_base[2, 2] - 1.0) < 1e-9
            self.pipeline.check_initial_pose(map_from_base, is_2d)
        except ValueError as err:
            self.counters.bad_input += 1
            self.log.warn(f"Ignored initial pose: {err}")
            return
        # An operator's pose applies "now" on the data's timeline: RViz may stamp it 0, or with
        # wall time while a bag plays, which the pipeline would take for a jump in time.
        newest = self._guard.newest()
        stamp_ns = conv.stamp_to_ns(msg.header.stamp) if newest is None else newest
        self.get_logger().info(f"initial pose ({'2D' if is_2d else '6-DoF'}) at ({map_from_base[0, 3]:.1f}, "
                               f"{map_from_base[1, 3]:.1f}) m: relocalising from it")
        self._events.append(("initialpose", lambda: self.pipeline.set_initial_pose(stamp_ns, map_from_base, is_2d)))

    def _admit_camera(self, msg, is_image: bool, camera: str = "") -> bool:
        """Before the pairing (CameraSubscriber's admit): whether this image or CameraInfo may be
        paired. A rejected image is logged and answered with a status; a rejected CameraInfo only
        when it is ahead (a late or repeated one belongs to an image skipped for that reason).
        camera: a rig camera's name (each camera's stamps are their own stream)."""
        self._monitor.note("image" if is_image else "info")
        stream = (f"{camera} " if camera else "") + ("image" if is_image else "CameraInfo")
        stamp_ns = conv.stamp_to_ns(msg.header.stamp)
        check = self._judge(stream, stamp_ns)
        if check.verdict in (Verdict.OK, Verdict.RESTART):
            return True
        self.counters.bad_stamps += 1
        if is_image:
            self._skip_image(stamp_ns, check.describe(stream))
        elif check.verdict is Verdict.AHEAD:
            self.log.warn(f"Ignored CameraInfo: {check.describe(stream)}")
        return False

    def _on_camera(self, image, info) -> None:
        self.worker.submit(CameraFrame(conv.stamp_to_ns(image.header.stamp), image, info, time.monotonic()))

    def _on_unmatched(self, item: Unmatched, camera: str = "", info_topic: str | None = None) -> None:
        self.counters.unmatched_images += 1
        self._skip_image(item.stamp_ns, f"{camera}{item.reason} (is {info_topic or self.settings.camera_info_topic} "
                                        f"published?)")

    def _skip_image(self, stamp_ns: int, reason: str) -> None:
        """An image that is never processed: one throttled line, and a status that says why."""
        text = f"Skipped image at {stamp_ns * 1e-9:.3f} s: {reason}"
        self._monitor.note("skipped")
        self._skip_reason = reason
        self.log.warn(text)
        self._publish_status(LocalizationStatus(header=conv.make_header(stamp_ns, self.settings.map_frame),
                                                state=int(self.pipeline.state), success=False, reason=text,
                                                reason_code=LocalizationStatus.REASON_BAD_INPUT))

    # ------------------------------------------------------------------------------ worker
    def _on_worker_error(self, frame: CameraFrame, exc: BaseException) -> None:
        if not self.context.ok():
            return  # shutting down: the frame in progress could not publish any more
        self.counters.errors += 1
        self.log.error(f"Frame at {frame.stamp_ns * 1e-9:.3f} s failed: {type(exc).__name__}: {exc}")

    def _base_from_cam(self, camera_frame: str) -> np.ndarray | None:
        if self._param_extrinsic is not None:
            return self._param_extrinsic
        return self.static_tf.lookup(self.settings.base_frame, camera_frame)

    def _frame_input(self, frame: CameraFrame):
        """Messages -> (FrameInput, rgb); ValueError on bad input."""
        from pixloc_ros.core.tracking.frames import FrameInput

        s = self.settings
        if isinstance(frame, RigFrame):  # a camera with a bad frame sits this instant out
            return self.rig.frame_input(frame, s.base_frame, self.static_tf, s.use_rectified, lambda n, why:
                                        self.log.warn(f"Rig camera {n!r} left out of the instant at "
                                                      f"{frame.stamp_ns * 1e-9:.3f} s: {why}"))
        rgb, camera = conv.camera_frame_to_rgb(frame.image, frame.info, s.image_transport == "compressed",
                                               s.use_rectified)
        camera_frame = s.camera_frame or frame.image.header.frame_id
        base_from_cam = self._base_from_cam(camera_frame)
        if base_from_cam is None:
            raise ValueError(f"no transform {s.base_frame} <- {camera_frame!r} on /tf_static (or set the "
                             f"camera_extrinsic parameter)")
        return FrameInput(frame.stamp_ns, rgb, camera, base_from_cam), rgb

    def _prepare_frame(self, frame: CameraFrame):
        """The worker's first stage with ``overlap_network``: decode, then the network (stateless)."""
        frame_input, rgb = self._frame_input(frame)
        return frame_input, rgb, self.pipeline.extract(frame_input)

    def _process_frame(self, frame: CameraFrame, prepared=None) -> None:
        """The rest (or all, without ``prepare``): odometry and events up to the frame, then the pipeline."""
        if isinstance(prepared, BaseException):  # the first stage's error, raised where it would have been
            prepared = (prepared,)
        if self.settings.odom_wait_s > 0:
            self._wait_for_odometry(frame.stamp_ns)
        self._apply_events()
        self.counters.frames += 1
        self._monitor.note("processed")
        self._last_frame_s = time.monotonic()
        try:
            if prepared is not None and len(prepared) == 1:
                raise prepared[0]
            frame_input, rgb, features = prepared if prepared is not None else (*self._frame_input(frame), None)
            out = self.pipeline.process(frame_input, features)
        except MapFileError as err:  # the map, not the frame, is bad (a ValueError too: caught first)
            self.counters.map_errors += 1
            self._map_error = str(err)
            self._monitor.note("skipped")
            self._skip_reason = f"map_error: {err}"
            self.log.error(f"Image at {frame.stamp_ns * 1e-9:.3f} s: map_error: {err}")
            self._publish_status(LocalizationStatus(
                header=conv.make_header(frame.stamp_ns, self.settings.map_frame), state=int(self.pipeline.state),
                success=False, reason=f"map_error: {err}", reason_code=LocalizationStatus.REASON_MAP_ERROR))
            return
        except ValueError as err:  # bad input for this frame: one throttled line, no pose
            self.counters.bad_input += 1
            self._skip_image(frame.stamp_ns, str(err))
            return
        self._publish_output(frame, out, rgb, frame_input)

    # ----------------------------------------------------------------------------- outputs
    def _publish_status(self, status: LocalizationStatus) -> None:
        dropped = self.worker.take_dropped()
        self.counters.dropped += dropped
        if dropped:
            self._monitor.note("dropped", dropped)
        status.frames_dropped = dropped
        self._last_status = status
        self.status_pub.publish(status)

    def _publish_output(self, frame: CameraFrame, out, rgb: np.ndarray, frame_input=None) -> None:
        s = self.settings
        self.counters.count_output(out)
        if abs(math.log(out.covariance_scale / self._logged_scale)) > math.log(1.25):
            self._logged_scale = out.covariance_scale
            self.get_logger().info(f"covariance scale now {out.covariance_scale:.2f}: consecutive poses disagree with "
                                   f"the odometry that much more than the covariance model says")
        if out.success:
            self._publish_pose(out)
            if self.tf_broadcaster is not None:
                self._publish_tf(out)
        else:
            self.log.info(f"No pose for image at {out.stamp_ns * 1e-9:.3f} s "
                          f"({STATE_NAMES.get(int(out.state))}): {out.reason}")
        if self.visuals is not None:
            rig_images = None
            if isinstance(frame, RigFrame):  # frame_input is a RigFrameInput: every camera's image
                rig_images = {rc.name: (image, frame.frames[rc.name][0].header.frame_id)
                              for rc, image in zip(frame_input.rig.cameras, frame_input.images_rgb)}
            self.visuals.publish(out, rgb, s.camera_frame or frame.image.header.frame_id,
                                 self.pipeline.keyframe_poses, rig_images)
        # The status goes last: it says "this frame is done" (a paced player waits for it).
        self._last_latency_s = time.monotonic() - frame.received_s
        self._publish_status(self._status(out))

    def _status(self, out) -> LocalizationStatus:
        result, timings = out.result, out.timings
        status = LocalizationStatus(
            header=conv.make_header(out.stamp_ns, self.settings.map_frame), state=int(out.state),
            success=bool(out.success), reason="" if out.success else out.reason, reason_code=int(out.why.code),
            keyframe_ids=[int(k) for k in out.keyframe_ids], prior_distance_m=float(out.prior_distance_m),
            prior_rotation_deg=float(out.prior_rotation_deg), time_network=float(timings.network_s),
            time_optimizer=float(timings.optimizer_s), time_total=float(timings.total_s),
            hypotheses=int(out.gate.hypotheses), lead_frames=int(out.gate.lead_frames),
            lead_travel_m=float(out.gate.lead_travel_m), lead_margin=float(out.gate.margin),
            gate_mahalanobis_d2=float(out.gate.mahalanobis_d2), gate_limit_d2=float(out.gate.limit_d2),
            covariance_calibrated=bool(out.covariance_calibrated), covariance_scale=float(out.covariance_scale),
            lm_path=result.lm_path if result is not None else "")
        if result is not None:
            status.num_points = int(result.num_valid)
            status.cost_per_level = [float(c) for c in result.cost]
            status.iterations_per_level = [int(i) for i in result.iterations]
        return status

    def _publish_pose(self, out) -> None:
        msg = PoseWithCovarianceStamped(header=conv.make_header(out.stamp_ns, self.settings.map_frame))
        msg.pose.pose = conv.matrix_to_pose_msg(out.map_from_base)
        msg.pose.covariance = conv.covariance_to_msg(out.covariance_ros)
        self.pose_pub.publish(msg)

    def _publish_tf(self, out) -> None:
        s = self.settings
        if s.tf_mode == "map_odom":
            if out.map_from_odom is None:
                self.log.warn("No map -> odom published: no odometry at the image stamp yet")
                return
            T, child = out.map_from_odom, s.odom_frame
        else:
            T, child = out.map_from_base, s.base_frame
        # Future-dated like AMCL's transform_tolerance: lookups at "now" succeed until the next frame.
        stamp_ns = out.stamp_ns + int(s.transform_tolerance * 1e9)
        t = TransformStamped(header=conv.make_header(stamp_ns, s.map_frame), child_frame_id=child)
        t.transform = conv.matrix_to_transform_msg(T)
        self.tf_broadcaster.send(t)

    def _publish_diagnostics(self) -> None:
        """The localization's health and counters, and a tiled map's tiles (ros/diagnostics.py)."""
        st = self._last_status
        idle = None if self._last_frame_s is None else time.monotonic() - self._last_frame_s
        name = self.get_fully_qualified_name()
        status = localization_status(
            name, self.settings.map_file, st, self._monitor, HEALTH_WINDOW_S, STALE_FRAMES_S, idle,
            map_error=self._map_error, skip_reason=self._skip_reason, counters=self.counters.as_dict(),
            calibrated=self.pipeline.summary().calibrated, covariance_scale=self.pipeline.covariance_scale,
            lm=self.pipeline.lm_status(), latency_s=self._last_latency_s,
            image_reliable=self.camera_sub.image_sub.reliable, extra=self.rig.diagnostics() if self.rig else None)
        tiles = map_tiles_status(name, self.settings.map_file, self.pipeline.map_health(), self._reported_tiles,
                                 lambda text: self.get_logger().error(text))
        array = DiagnosticArray(status=[status, *tiles])
        array.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(array)
