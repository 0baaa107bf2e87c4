"""The node's parameters: one dataclass, each field declared as a ROS parameter with its description.

``NodeSettings`` is the single source: field name = parameter name, default = parameter default,
``metadata`` = description and constraints. ``declare_settings(node)`` declares them all (read
only, with ranges rclpy enforces) and returns validated settings; ``NodeSettings.validate`` holds
the checks that span several fields. config/localize.yaml lists the same names (a test checks it).
Invalid settings raise ``ValueError`` at start (fail loudly), never per frame.
"""
from __future__ import annotations

import math
import re
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Any


def _p(default, description: str, *, choices: tuple[str, ...] | None = None,
       low: float | None = None, high: float | None = None, array_type: str | None = None):
    """A settings field: default value plus the metadata the ROS descriptor is built from."""
    meta = {"description": description, "choices": choices, "low": low, "high": high, "array_type": array_type}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class NodeSettings:
    """Everything the node reads from its parameters (see config/localize.yaml for a commented copy)."""

    # --- engine and map
    map_file: str = _p("", "Compiled map file (pixloc-ros build-map output); GNSS priors use its georeference. "
                           "Required.")
    weights: str = _p("", "PixLoc weights the map was built with: official checkpoint (.tar/.pth) or "
                          ".safetensors. Required.")
    calibration_file: str = _p("", "Covariance calibration to publish with (pixloc-ros calibrate; e.g. one fitted for "
                                   "a camera rig with --rig). Empty: <weights>.covariance.json when it exists, else "
                                   "none; none: never calibrate (the conservative default covariance).")
    device: str = _p("auto", "Where the network runs: auto (cuda when available), cuda, cuda:N or cpu.")
    cpu_threads: int = _p(0, "torch threads when the network runs on the CPU; 0: torch's default (one per core). "
                             "On a small machine shared with other nodes, 1 is often fastest.", low=0, high=256)
    cpu_precision: str = _p("f32", "Precision of the network on the CPU: f32 (the reference's numbers), bf16 "
                                   "(OpenVINO on a processor with bf16 units, AVX512-BF16 or AMX: features within "
                                   "about 1 %, 2-6x faster; fails at start elsewhere), int8 (the map's int8 network, "
                                   "<map>.int8 from pixloc-ros quantize or build-map --int8: 3.5x faster than f32 on "
                                   "AVX-512 VNNI; fails at start without it) or auto (bf16 where the processor has bf16 units, "
                                   "else int8 when the map has one that passed its accuracy check, else f32).",
                            choices=("f32", "bf16", "int8", "auto"))
    overlap_network: bool = _p(False, "Run the network of the next frame on a second thread while this frame's "
                                      "Levenberg-Marquardt and decision run (CPU, two cores: one thread each, so "
                                      "cpu_threads 0 becomes 1). The same poses; more frames per second where the "
                                      "two stages take similar times, the same latency.")
    lm_path: str = _p("auto", "Levenberg-Marquardt implementation: auto (the fused Triton kernels with CUDA graphs on a GPU "
                              "when triton is installed, else the torch loop), fused (ask for the kernels: where they "
                              "cannot run, or fail their check against the torch loop, one warning and the torch loop) "
                              "or torch.", choices=("auto", "fused", "torch"))
    max_image_size: int = _p(-1, "Images whose longer side exceeds this are downscaled before the network, "
                                 "pixels; 0: never; -1: the weights' engine profile's (the released PixLoc "
                                 "weights: 1024, as the reference; native weights: never).", low=-1, high=100_000)
    warm_up_size: list = _p([], "Camera image size [width, height] to prepare the network and the optimizer "
                                "for at start (a CPU runtime's model compiled for that size, CUDA kernels "
                                "compiled), so that the first frame is not slower than the rest; empty: "
                                "prepared by the first frame.", array_type="integer")
    num_keyframes: int = _p(3, "Reference keyframes whose 3D points are used per query.", low=1, high=32)
    num_hypotheses: int = _p(4, "Initial pose hypotheses optimised in one batch when relocalising.", low=1, high=64)
    relocalization_grid: int = _p(0, "Relocalizing: spread the seeds over at least this many initial poses in "
                                     "all (shifts of +-0.5 m around each, yaw steps over +-10 deg from 8 poses "
                                     "per seed) for priors further off than "
                                     "PixLoc's basin; 0: the seeds alone. On a GPU (fused LM kernels) 64 cost "
                                     "about what 4 do; on a CPU each costs about a seed's LM time.", low=0, high=1024)
    max_points: int = _p(4000, "Most residual rows (point observations) per frame: bounds the optimizer's cost.",
                         low=10, high=10_000_000)
    iterations: list = _p([], "Most Levenberg-Marquardt iterations per level, finest level first (0 skips a "
                              "level); empty: the weights' engine profile's (the released PixLoc weights: 100 "
                              "per level, as the reference evaluated them; the project's native weights: 25).",
                          array_type="integer")
    tile_load_radius_m: float = _p(150.0, "Tiled maps: tiles within this distance of the prior, and of the point "
                                          "tile_lookahead_m ahead along the direction of travel, are loaded in the "
                                          "background (and checked) before a frame needs them, metres. Keep it above "
                                          "the distance at which keyframes are retrieved.", low=1.0, high=1e5)
    tile_lookahead_m: float = _p(200.0, "Tiled maps: how far ahead along the direction of travel tiles are loaded "
                                        "too, metres (0: around the prior only).", low=0.0, high=1e5)
    max_loaded_tiles: int = _p(16, "Tiled maps: most tiles open at once (bounds the node's memory); the nearest "
                                   "wanted ones first.", low=1, high=100_000)
    border_pad: float = _p(-1.0, "Border (level pixels) inside which projections are invalid, every level; "
                                 "negative: the weights' engine profile's (the released weights: their "
                                 "checkpoint's pad, 3; native: a size rule, 4 px at 1024x768). The reference's "
                                 "CMU evaluation used 2.", low=-1.0, high=64.0)
    # --- gating: when a result is published (core/tracking/gating.py, core/tracking/pipeline.py)
    min_valid_points: int = _p(100, "Fewest 3D points projecting validly at the fine level to accept a pose.",
                               low=3, high=1_000_000)
    min_inlier_ratio: float = _p(-1.0, "Smallest share of valid points with a small residual to accept a pose; "
                                       "negative: the threshold fitted for the weights (their calibration file, "
                                       "pixloc-ros calibrate), 0.2 without one. Tracking uses 0.4 x this.",
                                 low=-1.0, high=1.0)
    max_cost_ratio: float = _p(1.1, "Largest final/initial cost ratio at any level to accept a pose.",
                               low=0.0, high=1e6)
    mahalanobis_probability: float = _p(0.999, "Chi-square(6) quantile bounding the Mahalanobis distance between "
                                               "the result and the tracking prior.", low=0.5, high=1.0)
    max_translation_m: float = _p(5.0, "Without a prior covariance: largest accepted distance from the prior, "
                                       "metres.", low=0.0, high=1e5)
    max_rotation_deg: float = _p(20.0, "Without a prior covariance: largest accepted rotation from the prior, "
                                       "degrees.", low=0.0, high=180.0)
    confirmations: int = _p(1, "Frames a pose hypothesis must lead (after its first) before it is published.",
                            low=0, high=100)
    lost_after: int = _p(3, "Consecutive rejected frames while tracking before the state becomes lost.",
                         low=1, high=1000)
    max_prior_distance_m: float = _p(30.0, "A prior farther than this from every keyframe is outside the map "
                                           "(no attempt), metres.", low=0.0, high=1e7)
    gnss_min_sigma_m: float = _p(1.0, "Floor of the GNSS standard deviation, metres; used as is for fixes "
                                      "without covariance.", low=0.01, high=1e4)
    # --- input topics ("" disables an optional input). Relative names, as AMCL's: the launch
    # file's namespace applies to them.
    image_topic: str = _p("camera/image_raw", "Camera images (sensor_msgs/Image, or CompressedImage "
                                               "on <topic>/compressed when image_transport is compressed).")
    camera_info_topic: str = _p("camera/camera_info", "CameraInfo matching the images by stamp.")
    image_transport: str = _p("raw", "raw: sensor_msgs/Image; compressed: sensor_msgs/CompressedImage "
                                     "(jpeg/png) on <image_topic>/compressed.", choices=("raw", "compressed"))
    image_reliability: str = _p("auto", "QoS reliability of the image subscription. auto: reliable, switching to "
                                        "best effort when a best-effort publisher appears (a reliable subscription "
                                        "cannot receive from one); reliable delivers frames of any size with Fast "
                                        "DDS's defaults, best effort loses frames over ~0.5 MB unless the publisher "
                                        "has a larger shared-memory segment (README, QoS).",
                                choices=("auto", "reliable", "best_effort"))
    use_rectified: bool = _p(False, "The images are rectified: use CameraInfo P and no distortion instead of K, D.")
    sync_tolerance_s: float = _p(0.0, "Largest stamp difference between an image and its CameraInfo, seconds "
                                      "(0: exact match).", low=0.0, high=1.0)
    # --- a camera rig (issue 30; ros/rig_input.py): several cameras, one base_frame pose
    rig_cameras: list = _p([], "Names of a rig's cameras, the first the anchor (by convention the front one); "
                               "their frames are grouped by stamp and localize one base_frame pose together. "
                               "Empty: one camera on image_topic / camera_info_topic.", array_type="string")
    rig_image_topics: list = _p([], "Image topic of each rig camera, in rig_cameras order; empty: "
                                    "/<name>/image_raw (what synth --rig records).", array_type="string")
    rig_camera_info_topics: list = _p([], "CameraInfo topic of each rig camera, in rig_cameras order; empty: "
                                          "/<name>/camera_info.", array_type="string")
    rig_extrinsics: list = _p([], "Each rig camera's optical frame in base_frame, 7 values per camera in "
                                  "rig_cameras order: x y z (metres) qx qy qz qw; empty: from /tf_static "
                                  "(base_frame <- the images' frame_id).", array_type="double")
    rig_tolerance_s: float = _p(0.01, "Largest stamp difference between the frames of one rig instant, seconds.",
                                low=0.0, high=1.0)
    rig_wait_s: float = _p(0.1, "How far (stamp time) the other cameras may run ahead before an instant is "
                                "localized without a camera that has not sent its frame; a camera silent for "
                                "twice this leaves the group (status, diagnostics) until its next frame, seconds.",
                           low=0.0, high=10.0)
    odom_topic: str = _p("odom", "nav_msgs/Odometry (odom -> base_link) for the tracking prior; \"\" disables.")
    odom_wait_s: float = _p(0.2, "Before processing a frame, wait up to this long (wall time) for odometry at or "
                                 "after its stamp, so that the prior and map -> odom interpolate rather than "
                                 "extrapolate the odometry; 0: never wait.", low=0.0, high=10.0)
    gnss_topic: str = _p("gnss/fix", "sensor_msgs/NavSatFix for the relocalisation prior; \"\" disables.")
    initial_pose_topic: str = _p("initialpose", "PoseWithCovarianceStamped from RViz's \"2D Pose Estimate\".")
    # --- frames
    map_frame: str = _p("map", "Frame of the map (global_frame_id in AMCL).")
    odom_frame: str = _p("odom", "Odometry frame (odom_frame_id in AMCL).")
    base_frame: str = _p("base_link", "Robot body frame (base_frame_id in AMCL).")
    camera_frame: str = _p("", "Camera optical frame; empty: the frame_id of the images.")
    camera_extrinsic: list = _p([], "Pose of the camera optical frame in base_frame as [x, y, z, qx, qy, qz, qw] "
                                    "(metres, quaternion xyzw); empty: look it up on /tf_static.",
                                array_type="double")
    # --- outputs
    pose_topic: str = _p("~/pose", "PoseWithCovarianceStamped of base_frame in map_frame (transient local).")
    publish_tf: bool = _p(True, "Broadcast the pose on /tf. Set false when robot_localization's map EKF "
                                "publishes map -> odom (config/ekf.yaml).")
    tf_mode: str = _p("map_odom", "map_odom: publish map -> odom so that map -> odom -> base_link is the pose "
                                  "(needs odometry); map_base: publish map -> base_link (when nothing "
                                  "publishes odom -> base_link).",
                      choices=("map_odom", "map_base"))
    transform_tolerance: float = _p(0.1, "Future-dating of the published transform, seconds (as AMCL), so that "
                                         "lookups at \"now\" succeed between frames.", low=0.0, high=10.0)
    publish_heatmaps: bool = _p(True, "Publish confidence heatmaps (per level and fused) over the camera image.")
    heatmap_scale: float = _p(0.5, "Scale of the heatmap images relative to the camera image.", low=0.05, high=1.0)
    publish_markers: bool = _p(True, "Publish a MarkerArray of the 3D points used (coloured by final weight) "
                                     "and the keyframes.")
    # --- runtime behaviour
    clock_jump_tolerance_s: float = _p(0.5, "Time tolerance, seconds: a stamp or /clock going back by more than "
                                            "this (bag restarted) resets the state; a stamp more than this ahead of "
                                            "the clock or of the other inputs is rejected.", low=0.0, high=1e6)
    log_throttle_s: float = _p(5.0, "Per-frame problems of one kind are logged at most once per period, "
                                    "seconds.", low=0.0, high=3600.0)
    # --- lifecycle (ros/lifecycle.py)
    autostart: bool = _p(True, "Configure and activate at start, as a plain node (ros2 run, the demo, "
                               "localize.launch.py); a setup error then ends the process. false: start "
                               "unconfigured and wait for a lifecycle manager (nav2_lifecycle_manager) or "
                               "`ros2 lifecycle set`, as nav2's AMCL does.")

    def validate(self) -> "NodeSettings":
        """Checks that span fields or need more than a range; returns self, raises ValueError."""
        for f in fields(self):
            meta = f.metadata
            value = getattr(self, f.name)
            if meta.get("choices") and value not in meta["choices"]:
                raise ValueError(f"Parameter {f.name!r} = {value!r} is not one of {list(meta['choices'])}")
            if meta.get("low") is not None:
                if isinstance(value, float) and not math.isfinite(value):
                    raise ValueError(f"Parameter {f.name!r} = {value} is not finite")
                if not (meta["low"] <= value <= meta["high"]):
                    raise ValueError(f"Parameter {f.name!r} = {value} is outside [{meta['low']}, {meta['high']}]")
        if not self.map_file:
            raise ValueError("Parameter 'map_file' is required (a compiled map: pixloc-ros build-map)")
        if not self.weights:
            raise ValueError("Parameter 'weights' is required (PixLoc checkpoint or .safetensors)")
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise ValueError(f"Parameter 'device' = {self.device!r}: expected auto, cpu, cuda or cuda:N")
        if not self.image_topic or not self.camera_info_topic:
            raise ValueError("Parameters 'image_topic' and 'camera_info_topic' must not be empty")
        if len({self.map_frame, self.odom_frame, self.base_frame}) != 3:
            raise ValueError(f"map_frame, odom_frame and base_frame must differ: "
                             f"{self.map_frame!r}, {self.odom_frame!r}, {self.base_frame!r}")
        if self.publish_tf and self.tf_mode == "map_odom" and not self.odom_topic:
            raise ValueError("tf_mode 'map_odom' needs odometry (odom_topic); use tf_mode 'map_base' without it")
        if self.iterations and (len(self.iterations) != 3 or any(int(n) < 0 or int(n) > 1000 for n in self.iterations)
                                or not any(self.iterations)):
            raise ValueError(f"Parameter 'iterations' needs 3 values in [0, 1000], not all 0 (levels fine to "
                             f"coarse), or none (the weights' profile), got {self.iterations}")
        if self.warm_up_size and (len(self.warm_up_size) != 2
                                  or not all(16 <= int(v) <= 100_000 for v in self.warm_up_size)):
            raise ValueError(f"Parameter 'warm_up_size' needs [width, height] in pixels (16-100000 each), or "
                             f"nothing, got {self.warm_up_size}")
        if self.rig_cameras:
            n = len(self.rig_cameras)
            if len(set(self.rig_cameras)) != n or not all(self.rig_cameras):
                raise ValueError(f"Parameter 'rig_cameras' needs distinct non-empty names, got {self.rig_cameras}")
            for name in ("rig_image_topics", "rig_camera_info_topics"):
                if getattr(self, name) and len(getattr(self, name)) != n:
                    raise ValueError(f"Parameter {name!r} needs one topic per rig camera ({n}) or none, "
                                     f"got {getattr(self, name)}")
            if self.rig_extrinsics and len(self.rig_extrinsics) != 7 * n:
                raise ValueError(f"Parameter 'rig_extrinsics' needs 7 values per rig camera ({7 * n}) or none, "
                                 f"got {len(self.rig_extrinsics)}")
            for name, k in zip(self.rig_cameras, range(0, len(self.rig_extrinsics), 7)):
                ext = [float(v) for v in self.rig_extrinsics[k:k + 7]]  # x y z qx qy qz qw
                if not all(math.isfinite(v) for v in ext) or abs(math.hypot(*ext[3:]) - 1.0) > 1e-2:
                    raise ValueError(f"Parameter 'rig_extrinsics' of camera {name!r}: {ext} needs finite values "
                                     f"and a unit quaternion (x y z qx qy qz qw per camera)")
        if self.camera_extrinsic:
            ext = [float(v) for v in self.camera_extrinsic]
            if len(ext) != 7 or not all(math.isfinite(v) for v in ext):
                raise ValueError(f"Parameter 'camera_extrinsic' needs 7 finite values [x, y, z, qx, qy, qz, qw], "
                                 f"got {self.camera_extrinsic}")
            if abs(math.sqrt(sum(v * v for v in ext[3:])) - 1.0) > 1e-3:
                raise ValueError(f"Parameter 'camera_extrinsic' quaternion {ext[3:]} is not unit length")
        return self

    @classmethod
    def from_values(cls, values: dict[str, Any]) -> "NodeSettings":
        """Settings from a {name: value} dict (unknown names raise); validated."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"Unknown parameters {unknown}")
        return replace(cls(), **values).validate()


def parameter_names() -> list[str]:
    """Names of all node parameters, in declaration order."""
    return [f.name for f in fields(NodeSettings)]


def _descriptor(f):
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

    meta = f.metadata
    desc = ParameterDescriptor(description=meta["description"], read_only=True)
    if meta.get("choices"):
        desc.additional_constraints = "one of: " + ", ".join(meta["choices"])
    if meta.get("low") is not None:
        if f.type in ("int", int):
            desc.integer_range = [IntegerRange(from_value=int(meta["low"]), to_value=int(meta["high"]), step=0)]
        else:
            desc.floating_point_range = [FloatingPointRange(from_value=float(meta["low"]),
                                                            to_value=float(meta["high"]), step=0.0)]
    return desc


# Parameters rclpy itself declares on every node: overrides of these are not unknown.
_RCLPY_PARAMETERS = ("use_sim_time", "start_type_description_service")


def declare_settings(node, argv: list[str] | None = None) -> NodeSettings:
    """Declare every NodeSettings field on ``node`` and return the validated settings
    (``declare_values`` then ``NodeSettings.from_values``; ValueError as both do)."""
    return NodeSettings.from_values(declare_values(node, argv))


def declare_values(node, argv: list[str] | None = None) -> dict[str, Any]:
    """Declare every NodeSettings field on ``node`` and return {name: value}, not yet validated
    across fields (the lifecycle node validates them when it is configured).

    Raises ValueError naming the parameter for every mistake the declaration itself reveals: a
    value of the wrong type (``num_hypotheses:=four``, or ``1`` for a double), out of range, and an
    override of a parameter the node does not have (a misspelt name would otherwise be silently
    ignored by rclpy). ``argv``: the command line the node was started with; its ``-p`` overrides
    are compared with what was declared, because rcl silently drops a ``-p`` value whose type
    differs from the same parameter's value in a ``--params-file`` (measured with the Kilted
    wheels: ``--params-file localize.yaml -p num_hypotheses:=four`` leaves it at 4).
    """
    from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
    from rclpy.parameter import Parameter

    values = {}
    for f in fields(NodeSettings):
        default = f.default if f.default is not MISSING else f.default_factory()
        try:
            if f.metadata.get("array_type") and not default:
                # An empty list has no ROS type: declare the type, unset unless overridden.
                kind = {"double": Parameter.Type.DOUBLE_ARRAY, "integer": Parameter.Type.INTEGER_ARRAY,
                        "string": Parameter.Type.STRING_ARRAY}
                param = node.declare_parameter(f.name, kind[f.metadata["array_type"]], _descriptor(f))
                values[f.name] = list(param.value) if param.value is not None else []
            elif f.metadata.get("array_type"):
                values[f.name] = list(node.declare_parameter(f.name, default, _descriptor(f)).value)
            else:
                values[f.name] = node.declare_parameter(f.name, default, _descriptor(f)).value
        except InvalidParameterTypeException as err:
            raise ValueError(_type_error(f, default, _override(node, f.name))) from err
        except InvalidParameterValueException as err:
            meta = f.metadata
            raise ValueError(f"Parameter {f.name!r} = {_override(node, f.name)!r} is outside "
                             f"[{meta['low']}, {meta['high']}]") from err
    unknown = unknown_overrides(node)
    if unknown:
        raise ValueError("; ".join(_unknown_error(name) for name in unknown))
    by_name = {f.name: f for f in fields(NodeSettings)}
    for name, given in command_line_overrides(argv or [], node.get_name()).items():
        f = by_name.get(name)
        if f is not None and not _same_type(given, values[name]):
            default = f.default if f.default is not MISSING else f.default_factory()
            raise ValueError(_type_error(f, default, given))
    return values


def params_files(argv: list[str]) -> list[str]:
    """The ``--params-file`` paths among ``argv``'s ROS arguments, in the order rcl applies them
    (a later file wins; launch_ros passes a launch file's parameter dicts as temporary files)."""
    args = ros_arguments(argv)
    return [value for flag, value in zip(args, args[1:]) if flag == "--params-file"]


def ros_arguments(argv: list[str]) -> list[str]:
    """The arguments between ``--ros-args`` and ``--`` (or the end), which are rcl's."""
    out, inside = [], False
    for arg in argv:
        if arg == "--ros-args":
            inside = True
        elif arg == "--" and inside:
            inside = False
        elif inside:
            out.append(arg)
    return out


def command_line_overrides(argv: list[str], node_name: str) -> dict[str, Any]:
    """``-p name:=value`` (and ``-p <node_name>:name:=value``) overrides among ``argv``'s ROS
    arguments, values parsed as rcl parses them (YAML)."""
    import yaml

    args = ros_arguments(argv)
    out = {}
    for flag, arg in zip(args, args[1:]):
        if flag not in ("-p", "--param") or ":=" not in arg:
            continue
        name, raw = arg.split(":=", 1)
        prefix, _, bare = name.rpartition(":")
        if prefix in ("", node_name):
            try:
                out[bare] = yaml.safe_load(raw)
            except yaml.YAMLError:
                out[bare] = raw
    return out


def _same_type(given, declared) -> bool:
    """Whether an override value has the declared value's ROS type (bool is not an integer, an
    integer is not a double, lists compare by their elements)."""
    if given is None:
        return isinstance(declared, str)  # `-p name:=` is an empty string to rcl
    if isinstance(declared, list) and isinstance(given, list):
        return all(_same_type(g, declared[0]) for g in given) if declared and given else True
    return type(given) is type(declared)


def _override(node, name: str):
    """The value the command line or a params file gave ``name`` (what the user typed)."""
    param = getattr(node, "_parameter_overrides", {}).get(name)
    return None if param is None else param.value


def _type_error(f, default, given) -> str:
    """The message for an override of the wrong type: what was given, what is expected, how to write it."""
    expected = {bool: "true or false", int: "an integer", float: "a number with a decimal point (e.g. 1.0: ROS "
                "refuses 1 for a double)", str: "a string"}
    if f.metadata.get("array_type"):
        want = f"a list of {'integers' if f.metadata['array_type'] == 'integer' else 'numbers with a decimal point'}"
    else:
        want = expected.get(type(default), type(default).__name__)
    return f"Parameter {f.name!r} must be {want}, got {given!r} ({type(given).__name__})"


def unknown_overrides(node) -> list[str]:
    """Names given on the command line or in a params file (for this node) that the node never
    declared: misspelt or removed parameters, which rclpy would ignore without a word.

    Reads rclpy's ``Node._parameter_overrides`` (every rclpy since Foxy keeps the overrides there;
    no public accessor exists). Call after declaring every parameter."""
    overrides = getattr(node, "_parameter_overrides", None)
    if overrides is None:
        return []
    return sorted(name for name in overrides if name not in _RCLPY_PARAMETERS and not node.has_parameter(name))


def _unknown_error(name: str) -> str:
    from difflib import get_close_matches

    close = get_close_matches(name, parameter_names(), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else " (config/localize.yaml lists them all)"
    return f"Unknown parameter {name!r}{hint}"


@dataclass(frozen=True)
class EngineConfigs:
    """The engine configurations the node builds its pipeline from."""

    pipeline: Any  # core.tracking.pipeline.PipelineConfig
    localizer: Any  # core.engine.localizer.LocalizerConfig
    tiles: Any  # core.maps.tile_loader.TileLoaderConfig (used when the map is a tiled folder)


def engine_configs(settings: NodeSettings) -> EngineConfigs:
    """Map the node settings onto the engine's configuration dataclasses (imports torch)."""
    from pixloc_ros.core.engine.lm.config import LMConfig
    from pixloc_ros.core.engine.localizer import LocalizerConfig
    from pixloc_ros.core.maps.retrieval import RetrievalConfig
    from pixloc_ros.core.maps.tile_loader import TileLoaderConfig
    from pixloc_ros.core.tracking.gating import GatingConfig
    from pixloc_ros.core.tracking.inlier_gates import TRACK_FACTOR
    from pixloc_ros.core.tracking.hypothesis_books import HypothesisConfig
    from pixloc_ros.core.tracking.pipeline import PipelineConfig
    from pixloc_ros.core.tracking.priors import PriorConfig
    from pixloc_ros.core.tracking.seeds import SeedConfig

    s = settings
    explicit = s.min_inlier_ratio >= 0.0  # negative: the weights' fitted gates (core/tracking/inlier_gates.py)
    gating = GatingConfig(min_valid_points=s.min_valid_points,
                          min_inlier_ratio=s.min_inlier_ratio if explicit else None,
                          track_min_inlier_ratio=s.min_inlier_ratio * TRACK_FACTOR if explicit else None,
                          max_cost_ratio=s.max_cost_ratio, mahalanobis_probability=s.mahalanobis_probability,
                          max_translation_m=s.max_translation_m, max_rotation_deg=s.max_rotation_deg)
    pipeline = PipelineConfig(retrieval=RetrievalConfig(num_keyframes=s.num_keyframes), gating=gating,
                              hypotheses=HypothesisConfig(confirmations=s.confirmations, lost_after=s.lost_after),
                              seeds=SeedConfig(num_hypotheses=s.num_hypotheses,
                                               relocalization_grid=s.relocalization_grid),
                              priors=PriorConfig(max_prior_distance_m=s.max_prior_distance_m,
                                                 gnss_min_sigma_m=s.gnss_min_sigma_m),
                              max_points=s.max_points, clock_jump_tolerance_s=s.clock_jump_tolerance_s)
    localizer = LocalizerConfig(iterations=tuple(int(n) for n in s.iterations) if s.iterations else None,
                                pad=s.border_pad if s.border_pad >= 0 else None, device=s.device,
                                max_image_size=None if s.max_image_size < 0 else s.max_image_size,
                                # overlap: one thread for the network, one for the LM (lm_cpu_threads), not 2 + 1
                                cpu_threads=s.cpu_threads or (1 if s.overlap_network else None),
                                cpu_precision=s.cpu_precision,
                                lm=LMConfig(path=s.lm_path))
    tiles = TileLoaderConfig(load_radius_m=s.tile_load_radius_m, lookahead_m=s.tile_lookahead_m,
                             max_loaded_tiles=s.max_loaded_tiles)
    return EngineConfigs(pipeline, localizer, tiles)
