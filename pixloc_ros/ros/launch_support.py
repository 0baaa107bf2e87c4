"""What the launch files decide, as plain Python (launch/launch_ros are not on PyPI; this is tested
without them): launch/localize.launch.py and launch/nav2_localization.launch.py turn a
``LaunchPlan`` into launch_ros ``Node`` actions, inside one ``OpaqueFunction`` so that every check
here runs before any process starts.

- Booleans: ``true/false``, ``1/0``, ``yes/no``, ``on/off``, any case (nav2's tutorials write
  ``use_sim_time:=True``); anything else is an error naming the argument.
- Parameters: the params file's values win unless an argument is given explicitly. ``map``,
  ``weights`` and ``use_sim_time`` default to "" (not given): only a given one becomes an
  override. ``ekf:=true`` sets the node's ``publish_tf`` false (robot_localization's map EKF
  publishes map -> odom then; two publishers of one transform fight).
- Files: the params file must exist and hold a section for the node (``ros/start.py``'s check;
  launch_ros itself only warns about a missing one and starts the node on defaults); the map and
  weights must be given somewhere; the EKF params file must exist when the EKF runs.
- Optional packages (robot_localization for ``ekf``, rviz2 for ``rviz``, nav2_lifecycle_manager and
  nav2_map_server for the nav2 example) are looked up in the ament index first.
- Namespaces, as nav2 does it: every node gets ``/tf -> tf`` and ``/tf_static -> tf_static``
  remaps (two robots do not share one tf tree), and the RViz config's absolute topics are rewritten
  under the namespace into a generated copy (nav2 uses ``ReplaceString`` on ``<robot_namespace>``
  placeholders; pixloc.rviz stays a plain config that RViz opens as it is).

Composition: rclpy has no components (``rclcpp_components`` loads C++ nodes only), so there is no
composable-node option; the node runs as its own process.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

NODE_NAME = "pixloc_localizer"
TRUE_WORDS = ("true", "1", "yes", "on")
FALSE_WORDS = ("false", "0", "no", "off")
# nav2's bringup remaps these on every node it namespaces.
TF_REMAPS = (("/tf", "tf"), ("/tf_static", "tf_static"))


class LaunchError(ValueError):
    """An argument or file the launch cannot use; the message says what to fix."""


def parse_bool(name: str, text: str) -> bool:
    """A boolean launch argument, any case ("True", "FALSE", "1", "on", ...); LaunchError otherwise."""
    word = text.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise LaunchError(f"launch argument {name}:={text!r} is not a boolean (true/false, 1/0, yes/no, on/off)")


def optional_bool(name: str, text: str) -> bool | None:
    """``parse_bool``, or None for "" (the argument was not given: the params file decides)."""
    return None if not text.strip() else parse_bool(name, text)


def missing_packages(names: list[str]) -> list[str]:
    """Which of the ROS packages ``names`` the ament index (AMENT_PREFIX_PATH) does not have."""
    from ament_index_python.packages import PackageNotFoundError, get_package_prefix

    missing = []
    for name in names:
        try:
            get_package_prefix(name)
        except PackageNotFoundError:
            missing.append(name)
    return missing


def node_parameters(params_file: str, node_name: str = NODE_NAME) -> dict[str, Any]:
    """The parameters ``params_file`` gives a node called ``node_name`` (its ``/**`` sections and
    the sections named after the node, later ones winning as in rcl); LaunchError when the file
    cannot be used (missing, not YAML, no section for the node)."""
    from pixloc_ros.ros.start import check_params_files

    problem = check_params_files(["launch", "--ros-args", "-r", f"__node:={node_name}", "--params-file", params_file])
    if problem is not None:
        raise LaunchError(f"launch argument params_file: {problem}")
    data = yaml.safe_load(Path(params_file).read_text(encoding="utf-8"))
    values: dict[str, Any] = {}
    for key, section in _sections(data):
        if key.endswith(("/**", "/*")) or key.rstrip("/").rsplit("/", 1)[-1] == node_name:
            values.update(section)
    return values


def _sections(data, prefix: str = "") -> list[tuple[str, dict]]:
    out = []
    for key, value in (data or {}).items():
        name = f"{prefix}/{str(key).strip('/')}" if prefix else str(key)
        if isinstance(value, dict) and isinstance(value.get("ros__parameters"), dict):
            out.append((name, value["ros__parameters"]))
        elif isinstance(value, dict):
            out += _sections(value, name)
    return out


def namespaced_rviz_config(source: str, namespace: str, out_dir: str | None = None) -> str:
    """``source`` with every absolute topic (display and tool ``Topic: Value:``) moved under
    ``namespace``, written to a new file in ``out_dir`` (default: the temp dir); ``source`` itself
    when there is no namespace."""
    ns = "/" + namespace.strip("/") if namespace.strip("/") else ""
    if not ns:
        return source
    data = yaml.safe_load(Path(source).read_text(encoding="utf-8"))
    _prefix_topics(data, ns)
    handle, path = tempfile.mkstemp(prefix=f"pixloc_{ns.strip('/').replace('/', '_')}_", suffix=".rviz", dir=out_dir)
    with os.fdopen(handle, "w", encoding="utf-8") as f:
        yaml.safe_dump(data, f, sort_keys=False, default_flow_style=False)
    return path


def _prefix_topics(node, ns: str) -> None:
    if isinstance(node, dict):
        topic = node.get("Topic")
        if isinstance(topic, dict) and isinstance(topic.get("Value"), str) and topic["Value"].startswith("/"):
            if not topic["Value"].startswith(ns + "/"):
                topic["Value"] = ns + topic["Value"]
        for value in node.values():
            _prefix_topics(value, ns)
    elif isinstance(node, list):
        for value in node:
            _prefix_topics(value, ns)


@dataclass
class LaunchPlan:
    """What to start. ``localizer_parameters``: the params file, then the overrides of the
    arguments given explicitly (launch_ros passes both to the node as --params-file)."""

    namespace: str
    localizer_parameters: list  # [params_file path, {name: value}]
    log_level: str
    fastdds_profile: str
    use_sim_time: bool | None  # None: not given (each node's params decide)
    ekf: bool
    ekf_params: str
    rviz: bool
    rviz_config: str
    remappings: tuple = TF_REMAPS
    lifecycle_nodes: list[str] = field(default_factory=list)  # nav2: what the lifecycle manager drives
    occupancy_map: str = ""  # nav2: a map_server yaml ("" : no map_server)

    def sim_time(self) -> dict[str, bool]:
        """``{"use_sim_time": ...}`` for the other nodes when it was given, else {}."""
        return {} if self.use_sim_time is None else {"use_sim_time": self.use_sim_time}


def plan_launch(args: dict[str, str], share: str, environ: dict[str, str] | None = None, *,
                nav2: bool = False) -> LaunchPlan:
    """Check the launch arguments (as the strings launch hands over) and decide what to start;
    LaunchError for anything unusable, before anything runs. ``share``: the package's share folder
    (its config/); ``nav2``: the nav2 example (the node waits for nav2_lifecycle_manager)."""
    environ = os.environ if environ is None else environ
    use_sim_time = optional_bool("use_sim_time", args.get("use_sim_time", ""))
    ekf = parse_bool("ekf", args.get("ekf", "false"))
    rviz = parse_bool("rviz", args.get("rviz", "false"))
    params_file = args["params_file"]
    from_file = node_parameters(params_file)
    overrides: dict[str, Any] = {}
    for arg, name in (("map", "map_file"), ("weights", "weights")):
        if args.get(arg, "").strip():
            overrides[name] = args[arg].strip()
        elif not str(from_file.get(name, "")).strip():
            raise LaunchError(f"no {name}: give {arg}:=<path> or set {name} in the params file {params_file}")
    if use_sim_time is not None:
        overrides["use_sim_time"] = use_sim_time
    if ekf:
        overrides["publish_tf"] = False  # the map EKF publishes map -> odom
    if nav2:
        overrides["autostart"] = False  # nav2_lifecycle_manager configures and activates it
    ekf_params = args.get("ekf_params") or str(Path(share) / "config" / "ekf.yaml")
    if ekf and not Path(ekf_params).is_file():
        raise LaunchError(f"launch argument ekf_params: {ekf_params!r} does not exist")
    occupancy_map = args.get("occupancy_map", "").strip()
    if occupancy_map and not Path(occupancy_map).is_file():
        raise LaunchError(f"launch argument occupancy_map: {occupancy_map!r} does not exist")
    needed = (["robot_localization"] if ekf else []) + (["rviz2"] if rviz else [])
    needed += (["nav2_lifecycle_manager"] + (["nav2_map_server"] if occupancy_map else [])) if nav2 else []
    missing = missing_packages(needed)
    if missing:
        why = {"robot_localization": "ekf:=true", "rviz2": "rviz:=true", "nav2_lifecycle_manager": "the nav2 example",
               "nav2_map_server": "occupancy_map:="}
        raise LaunchError("; ".join(f"{why[m]} needs the ROS package {m}, which is not installed (apt install "
                                    f"ros-$ROS_DISTRO-{m.replace('_', '-')})" for m in missing) + "; nothing was started")
    profile = (args.get("fastdds_profile", "").strip() or environ.get("FASTDDS_DEFAULT_PROFILES_FILE")
               or environ.get("FASTRTPS_DEFAULT_PROFILES_FILE") or str(Path(share) / "config" / "fastdds_large_frames.xml"))
    namespace = args.get("namespace", "").strip().strip("/")
    rviz_config = args.get("rviz_config") or str(Path(share) / "config" / "pixloc.rviz")
    if rviz:
        rviz_config = namespaced_rviz_config(rviz_config, namespace)
    return LaunchPlan(namespace=namespace, localizer_parameters=[params_file, overrides],
                      log_level=args.get("log_level", "info") or "info", fastdds_profile=profile,
                      use_sim_time=use_sim_time, ekf=ekf, ekf_params=ekf_params, rviz=rviz, rviz_config=rviz_config,
                      lifecycle_nodes=([NODE_NAME] + (["map_server"] if occupancy_map else [])) if nav2 else [],
                      occupancy_map=occupancy_map)
