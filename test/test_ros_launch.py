"""The launch files' decisions (pixloc_ros/ros/launch_support.py), one test per flaw of issue 31,
without launch_ros; then the launch file run for real with launch/launch_ros where they are
installed (they are not on PyPI: these skip in CI; README "nav2" says how they were run here).

Flaws covered: params-file values were overridden by the launch file; namespaced runs kept
absolute RViz topics and a global /tf; ekf:=true without robot_localization started the
localizer first; use_sim_time:=True was refused; a mistyped params_file was only a warning; no
argument for the user's EKF configuration; the pip set-up had no share/ and lib/ for launch_ros.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pixloc_ros.ros.launch_support import (TF_REMAPS, LaunchError, missing_packages, namespaced_rviz_config,
                                           parse_bool, plan_launch)

REPO = Path(__file__).resolve().parents[1]
SHARE = str(REPO)  # the source tree has the share layout: launch/, config/
ENV = {"FASTDDS_DEFAULT_PROFILES_FILE": ""}


def ament_prefix(tmp_path: Path, packages: list[str]) -> str:
    """A prefix whose ament index has exactly ``packages`` (markers only)."""
    index = tmp_path / "prefix" / "share" / "ament_index" / "resource_index" / "packages"
    index.mkdir(parents=True, exist_ok=True)
    for name in packages:
        (index / name).touch()
    return str(tmp_path / "prefix")


@pytest.fixture
def user_params(tmp_path) -> Path:
    """A user's params file that sets map, weights and publish_tf itself."""
    path = tmp_path / "mine.yaml"
    path.write_text("/**:\n  ros__parameters:\n    map_file: /maps/site.pxmap\n    weights: /w/site.safetensors\n"
                    "    publish_tf: false\n    use_sim_time: true\n")
    return path


def args(**given) -> dict[str, str]:
    base = {"params_file": str(REPO / "config" / "localize.yaml"), "map": "", "weights": "", "use_sim_time": "",
            "ekf": "false", "rviz": "false", "namespace": ""}
    return {**base, **given}


def test_params_file_values_win_unless_an_argument_is_given(user_params):
    plan = plan_launch(args(params_file=str(user_params)), SHARE, ENV)
    assert plan.localizer_parameters == [str(user_params), {}]  # nothing overrides the file
    plan = plan_launch(args(params_file=str(user_params), map="/other.pxmap", use_sim_time="False"), SHARE, ENV)
    assert plan.localizer_parameters[1] == {"map_file": "/other.pxmap", "use_sim_time": False}


def test_ekf_implies_publish_tf_false_and_takes_the_users_ekf_params(tmp_path, user_params, monkeypatch):
    monkeypatch.setenv("AMENT_PREFIX_PATH", ament_prefix(tmp_path, ["robot_localization"]))
    mine = tmp_path / "my_ekf.yaml"
    mine.write_text("/**:\n  ros__parameters:\n    frequency: 50.0\n")
    plan = plan_launch(args(params_file=str(user_params), ekf="TRUE", ekf_params=str(mine)), SHARE, ENV)
    assert plan.ekf and plan.ekf_params == str(mine) and plan.localizer_parameters[1] == {"publish_tf": False}
    with pytest.raises(LaunchError, match="ekf_params: .*does not exist"):
        plan_launch(args(params_file=str(user_params), ekf="true", ekf_params=str(tmp_path / "no.yaml")), SHARE, ENV)


def test_missing_optional_packages_stop_the_launch_before_anything_starts(tmp_path, user_params, monkeypatch):
    monkeypatch.setenv("AMENT_PREFIX_PATH", ament_prefix(tmp_path, ["pixloc_ros"]))
    assert missing_packages(["pixloc_ros", "robot_localization", "rviz2"]) == ["robot_localization", "rviz2"]
    with pytest.raises(LaunchError) as err:
        plan_launch(args(params_file=str(user_params), ekf="true", rviz="true"), SHARE, ENV)
    text = str(err.value)
    assert "ekf:=true needs the ROS package robot_localization" in text and "rviz:=true needs the ROS package rviz2" \
        in text and text.endswith("nothing was started")
    with pytest.raises(LaunchError, match="nav2_lifecycle_manager"):
        plan_launch(args(params_file=str(REPO / "config" / "nav2_pixloc.yaml"), map="/m", weights="/w",
                         ekf="false"), SHARE, ENV, nav2=True)


@pytest.mark.parametrize("text,value", [("true", True), ("True", True), ("TRUE", True), ("1", True), ("on", True),
                                        ("false", False), ("False", False), ("0", False), ("No", False)])
def test_booleans_in_any_case(text, value):
    assert parse_bool("use_sim_time", text) is value


def test_a_bad_boolean_and_a_mistyped_params_file_are_errors(tmp_path, user_params):
    with pytest.raises(LaunchError, match=r"use_sim_time:='maybe' is not a boolean"):
        plan_launch(args(params_file=str(user_params), use_sim_time="maybe"), SHARE, ENV)
    with pytest.raises(LaunchError, match=r"params_file: params file '.*/locallize.yaml' does not exist"):
        plan_launch(args(params_file=str(tmp_path / "locallize.yaml")), SHARE, ENV)
    # The shipped file has no map: one must be given somewhere.
    with pytest.raises(LaunchError, match="no map_file: give map:=<path> or set map_file in the params file"):
        plan_launch(args(weights="/w"), SHARE, ENV)


def test_namespace_remaps_tf_and_rewrites_the_rviz_config(tmp_path, user_params, monkeypatch):
    monkeypatch.setenv("AMENT_PREFIX_PATH", ament_prefix(tmp_path, ["rviz2"]))
    plan = plan_launch(args(params_file=str(user_params), namespace="/robot1", rviz="true"), SHARE, ENV)
    assert plan.namespace == "robot1" and set(plan.remappings) == set(TF_REMAPS) == {("/tf", "tf"),
                                                                                     ("/tf_static", "tf_static")}
    shipped = yaml.safe_load((REPO / "config" / "pixloc.rviz").read_text())
    rewritten = yaml.safe_load(Path(plan.rviz_config).read_text())
    Path(plan.rviz_config).unlink()

    def topics(config) -> list[str]:
        manager = config["Visualization Manager"]
        return [d["Topic"]["Value"] for d in manager["Displays"] + manager["Tools"] if "Topic" in d]

    assert "/pixloc_localizer/pose" in topics(shipped) and "/initialpose" in topics(shipped)
    assert topics(rewritten) == ["/robot1" + t for t in topics(shipped)]
    # Everything else is kept (displays, frames, QoS of each topic).
    assert rewritten["Visualization Manager"]["Global Options"] == shipped["Visualization Manager"]["Global Options"]
    assert [d["Class"] for d in rewritten["Visualization Manager"]["Displays"]] == [
        d["Class"] for d in shipped["Visualization Manager"]["Displays"]]
    # Without a namespace RViz opens the shipped file itself; rewriting twice does not double the prefix.
    assert namespaced_rviz_config(str(REPO / "config" / "pixloc.rviz"), "") == str(REPO / "config" / "pixloc.rviz")
    once = namespaced_rviz_config(str(REPO / "config" / "pixloc.rviz"), "robot1", str(tmp_path))
    twice = namespaced_rviz_config(once, "robot1", str(tmp_path))
    assert topics(yaml.safe_load(Path(twice).read_text())) == topics(yaml.safe_load(Path(once).read_text()))


def test_nav2_plan_hands_the_node_to_the_lifecycle_manager(tmp_path, monkeypatch):
    monkeypatch.setenv("AMENT_PREFIX_PATH", ament_prefix(
        tmp_path, ["robot_localization", "nav2_lifecycle_manager", "nav2_map_server"]))
    occupancy = tmp_path / "site.yaml"
    occupancy.write_text("image: site.pgm\n")
    nav2 = REPO / "config" / "nav2_pixloc.yaml"
    plan = plan_launch(args(params_file=str(nav2), map="/m.pxmap", weights="/w", ekf="true",
                            occupancy_map=str(occupancy)), SHARE, ENV, nav2=True)
    assert plan.localizer_parameters[1] == {"map_file": "/m.pxmap", "weights": "/w", "publish_tf": False,
                                            "autostart": False}
    assert plan.lifecycle_nodes == ["pixloc_localizer", "map_server"]
    data = yaml.safe_load(nav2.read_text())
    manager = data["/**/lifecycle_manager_localization"]["ros__parameters"]
    assert manager["bond_timeout"] == 0.0 and manager["autostart"] is True and "pixloc_localizer" in manager["node_names"]
    localizer = data["/**/pixloc_localizer"]["ros__parameters"]
    from pixloc_ros.ros.params import NodeSettings
    from dataclasses import fields
    assert set(localizer) <= {f.name for f in fields(NodeSettings)}, "unknown parameter in nav2_pixloc.yaml"
    assert localizer["autostart"] is False and localizer["publish_tf"] is False


def test_install_ros_files_lays_out_the_package_as_colcon_does(tmp_path, monkeypatch):
    """What `make setup` does to the venv (scripts/setup.sh runs scripts/install_ros_files.sh):
    ament_index finds share/pixloc_ros, ros2launch's search (os.walk, links to folders not
    followed) finds both launch files, lib/pixloc_ros holds the executables; running it twice
    changes nothing."""
    from ament_index_python.packages import get_package_prefix, get_package_share_directory

    assert 'install_ros_files.sh" "$VENV"' in (REPO / "scripts" / "setup.sh").read_text()
    prefix = tmp_path / "venv"
    for _ in range(2):
        subprocess.run(["bash", str(REPO / "scripts" / "install_ros_files.sh"), str(prefix),
                        str(Path(sys.executable).parent)], check=True)
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(prefix))
    share = Path(get_package_share_directory("pixloc_ros"))
    assert share == prefix / "share" / "pixloc_ros" and get_package_prefix("pixloc_ros") == str(prefix)
    found = {name for _, _, files in os.walk(share) for name in files}
    assert {"localize.launch.py", "nav2_localization.launch.py", "localize.yaml", "nav2_pixloc.yaml", "ekf.yaml",
            "pixloc.rviz", "package.xml"} <= found, found
    for exe in ("localizer_node", "pixloc-ros"):
        assert os.access(prefix / "lib" / "pixloc_ros" / exe, os.X_OK)
    # The launch file finds its configs next to itself (through the link, in the checkout).
    assert (share / "launch" / "localize.launch.py").resolve().parents[1] / "config" == REPO / "config"


# ------------------------------------------------------------------ the launch files for real
RUNNER = """
import signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)  # a background job ignores SIGINT otherwise
from ros2launch.api import get_share_file_path_from_package, launch_a_launch_file
path = get_share_file_path_from_package(package_name="pixloc_ros", file_name=sys.argv[1])
sys.exit(launch_a_launch_file(launch_file_path=path, launch_file_arguments=sys.argv[2:], noninteractive=True))
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict[str, str]:
    """launch_ros (skip without it) and an ament prefix laid out by scripts/install_ros_files.sh, as
    `make setup` lays out the venv: the environment a launch runs in."""
    pytest.importorskip("launch_ros", reason="launch/launch_ros are not on PyPI (README, nav2: how they were run)")
    pytest.importorskip("ros2launch")
    prefix = tmp_path_factory.mktemp("prefix")
    subprocess.run(["bash", str(REPO / "scripts" / "install_ros_files.sh"), str(prefix),
                    str(Path(sys.executable).parent)], check=True)
    for rel in ("share/pixloc_ros/launch/localize.launch.py", "share/pixloc_ros/config/pixloc.rviz",
                "share/pixloc_ros/package.xml", "lib/pixloc_ros/localizer_node",
                "share/ament_index/resource_index/packages/pixloc_ros"):
        assert (prefix / rel).exists(), rel
    return {"AMENT_PREFIX_PATH": f"{prefix}:{os.environ.get('AMENT_PREFIX_PATH', '')}"}


def launch(installed, tmp_path, name: str, *arguments: str, ros=None):
    from ros_testing import ChildProcess, domain_id_for, ros_env

    env = {**ros_env(ros.domain_id if ros else domain_id_for("launch_checks")), **installed,
           "RCUTILS_COLORIZED_OUTPUT": "0"}
    return ChildProcess([sys.executable, "-c", RUNNER, name, *arguments], env, tmp_path / f"{name}.log")


@pytest.mark.ros
@pytest.mark.parametrize("arguments,message", [
    (["ekf:=True", "map:=/m.pxmap", "weights:=/w"], "ekf:=true needs the ROS package robot_localization"),
    (["params_file:=/nowhere/localize.yaml"], "params file '/nowhere/localize.yaml' does not exist"),
    (["use_sim_time:=maybe", "map:=/m", "weights:=/w"], "use_sim_time:='maybe' is not a boolean"),
], ids=["ekf without robot_localization", "mistyped params_file", "bad boolean"])
def test_the_launch_file_refuses_before_starting_anything(installed, tmp_path, arguments, message):
    if "robot_localization" in message and not missing_packages(["robot_localization"]):
        pytest.skip("robot_localization is installed here")
    proc = launch(installed, tmp_path, "localize.launch.py", *arguments)
    try:
        rc = proc.wait(120)
    finally:
        proc.stop()
    log = proc.log()
    assert rc != 0 and message in log, log
    assert "process started" not in log and "localizer_node" not in log, log


@pytest.mark.ros
@pytest.mark.slow
def test_namespaced_launch_with_the_users_params_file(installed, synth_map, tmp_path):
    """``ros2 launch pixloc_ros localize.launch.py namespace:=robot1 use_sim_time:=True
    params_file:=<the user's file with map, weights and publish_tf: false>``: the node runs in
    /robot1 with the file's values (publish_tf stays false) and use_sim_time true, its tf
    topics are /robot1/tf*, and it logs the parameter files it loaded."""
    from rcl_interfaces.srv import GetParameters
    from ros_testing import RosContext, domain_id_for

    params = tmp_path / "mine.yaml"
    params.write_text(yaml.safe_dump({"/**": {"ros__parameters": {
        "map_file": str(synth_map.map_file), "weights": str(synth_map.weights), "device": "cpu",
        "publish_tf": False, "tf_mode": "map_base", "odom_topic": ""}}}))
    ros = RosContext(domain_id_for("launch_namespaced"))
    proc = launch(installed, tmp_path, "localize.launch.py", "namespace:=robot1", "use_sim_time:=True",
                  f"params_file:={params}", ros=ros)
    try:
        probe = ros.node("launch_probe")
        ok = ros.spin_until(lambda: probe.count_publishers("/robot1/pixloc_localizer/status") > 0
                            or not proc.alive(), 180)
        assert ok and proc.alive(), proc.log()
        assert probe.count_publishers("/pixloc_localizer/status") == 0
        assert ros.spin_until(lambda: probe.count_subscribers("/robot1/tf_static") > 0, 30), proc.log()
        assert probe.count_subscribers("/tf_static") == 0  # remapped, as nav2 does
        assert ros.spin_until(lambda: probe.count_subscribers("/robot1/initialpose") > 0, 30)
        client = probe.create_client(GetParameters, "/robot1/pixloc_localizer/get_parameters")
        assert ros.spin_until(client.service_is_ready, 30)
        future = client.call_async(GetParameters.Request(names=["publish_tf", "use_sim_time", "map_file"]))
        assert ros.spin_until(future.done, 30)
        publish_tf, use_sim_time, map_file = future.result().values
        assert publish_tf.bool_value is False and use_sim_time.bool_value is True
        assert map_file.string_value == str(synth_map.map_file)
        assert f"parameter files: {params}" in proc.log(), proc.log()
    finally:
        rc = proc.stop(30)
        ros.close()
    log = proc.log()
    assert "Traceback" not in log and rc == 0, log
