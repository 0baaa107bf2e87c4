"""The ROS package around the code: colcon build, launch file, RViz and robot_localization configs.

`colcon build` runs with colcon and the ROS 2 wheels from PyPI (as on a ROS 2 install, minus apt);
`launch`/`launch_ros` are not on PyPI, so the launch file is compiled and its declarations are
read from its syntax tree (and run for real where launch_ros is installed).
"""
import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pixloc_ros.ros.params import NodeSettings

REPO = Path(__file__).resolve().parents[1]
NODE_NAME = "pixloc_localizer"
REQUIRED_ARGS = {"map", "weights", "params_file", "namespace", "use_sim_time", "rviz"}


def calls(tree: ast.AST, name: str) -> list[ast.Call]:
    """Every call of a function/class called ``name`` (plain or attribute access)."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            if (isinstance(f, ast.Name) and f.id == name) or (isinstance(f, ast.Attribute) and f.attr == name):
                out.append(node)
    return out


def keyword(call: ast.Call, name: str):
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value
    return None


def launch_arguments(path: Path) -> dict[str, str]:
    """{name: default} of a launch file's ARGUMENTS table (every argument it declares)."""
    tree = ast.parse(path.read_text())
    table = next(n.value for n in tree.body if isinstance(n, ast.Assign) and ast.unparse(n.targets[0]) == "ARGUMENTS")
    return {ast.literal_eval(k): (ast.unparse(v.elts[0]), v.elts[1]) for k, v in zip(table.keys, table.values)}


@pytest.mark.parametrize("launch", ["localize.launch.py", "nav2_localization.launch.py"])
def test_launch_files_declare_their_arguments_and_start_nothing_before_the_checks(launch):
    """Every argument is declared from one table, with a description and no ``choices`` (booleans
    are parsed case-insensitively by launch_support); the only other action is the OpaqueFunction
    that runs plan_launch (all checks) before it creates any Node (launch_nodes)."""
    path = REPO / "launch" / launch
    source = path.read_text()
    compile(source, str(path), "exec")
    tree = ast.parse(source)
    args = launch_arguments(path)
    assert REQUIRED_ARGS - {"rviz"} <= set(args) and "ekf_params" in args, set(args)
    assert not any(keyword(c, "choices") for c in calls(tree, "DeclareLaunchArgument"))
    for name in ("map", "weights", "use_sim_time"):  # not given = the params file decides
        assert args[name][0] == "''", (name, args[name])
    assert not calls(tree, "Node") and not calls(tree, "IfCondition")  # nodes only from the checked plan
    setup = next(f for f in tree.body if isinstance(f, ast.FunctionDef) and f.name == "launch_setup")
    assert calls(setup, "plan_launch") and calls(tree, "OpaqueFunction")
    assert {"generate_launch_description"} <= {f.name for f in tree.body if isinstance(f, ast.FunctionDef)}


def test_launch_nodes_start_the_installed_node_with_the_shipped_files():
    from pixloc_ros.ros import launch_nodes, launch_support
    tree = ast.parse((REPO / "pixloc_ros" / "ros" / "launch_nodes.py").read_text())
    nodes = {ast.literal_eval(keyword(c, "executable")): c for c in calls(tree, "Node")}
    assert {"localizer_node", "ekf_node", "rviz2", "lifecycle_manager", "map_server"} <= set(nodes)
    assert launch_support.NODE_NAME == NODE_NAME and launch_nodes.PACKAGE == "pixloc_ros"
    # The executable is what CMakeLists installs into lib/pixloc_ros and setup.py declares.
    assert (REPO / "scripts" / "localizer_node").exists()
    assert "scripts/localizer_node" in (REPO / "CMakeLists.txt").read_text()
    assert "localizer_node = pixloc_ros.ros.start:main" in (REPO / "setup.py").read_text()
    for launch in ("localize.launch.py", "nav2_localization.launch.py"):
        text = (REPO / "launch" / launch).read_text()
        for shipped in ("localize.yaml" if launch.startswith("localize") else "nav2_pixloc.yaml", "ekf.yaml"):
            assert shipped in text and (REPO / "config" / shipped).exists()
    assert "pixloc.rviz" in (REPO / "launch" / "localize.launch.py").read_text()
    assert "fastdds_large_frames.xml" in (REPO / "pixloc_ros" / "ros" / "launch_support.py").read_text()
    # The node runs with the large-frame Fast DDS profile (README, QoS), overridable by the environment.
    # Under both names: Fast DDS 2.x (Humble, Jazzy) reads FASTRTPS_..., 3.x (Kilted) FASTDDS_...
    env = keyword(nodes["localizer_node"], "additional_env")
    assert {ast.literal_eval(k) for k in env.keys} == {"FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE"}
    from pixloc_ros.ros import node as node_module
    assert node_module.NODE_NAME == NODE_NAME


def test_ekf_config_fuses_the_node_pose_in_the_map_ekf():
    data = yaml.safe_load((REPO / "config" / "ekf.yaml").read_text())
    odom = data["/**/ekf_filter_node_odom"]["ros__parameters"]
    mapf = data["/**/ekf_filter_node_map"]["ros__parameters"]
    defaults = NodeSettings()
    assert odom["world_frame"] == defaults.odom_frame and mapf["world_frame"] == defaults.map_frame
    for ekf in (odom, mapf):
        assert (ekf["map_frame"], ekf["odom_frame"], ekf["base_link_frame"]) == (
            defaults.map_frame, defaults.odom_frame, defaults.base_frame)
        assert ekf["odom0"] == defaults.odom_topic
        assert len(ekf["odom0_config"]) == 15
    # The map EKF takes the node's pose topic (relative: works under a namespace), absolute.
    assert mapf["pose0"] == f"{NODE_NAME}/{defaults.pose_topic.removeprefix('~/')}"
    assert mapf["pose0_differential"] is False and mapf["publish_tf"] is True
    assert mapf["pose0_config"][:6] == [True] * 6 and not any(mapf["pose0_config"][6:])
    assert "pose0" not in odom


def test_rviz_config_shows_the_node_topics():
    data = yaml.safe_load((REPO / "config" / "pixloc.rviz").read_text())
    manager = data["Visualization Manager"]
    assert manager["Global Options"]["Fixed Frame"] == NodeSettings().map_frame
    topics = {d["Class"].split("/")[-1] + ":" + d["Topic"]["Value"] for d in manager["Displays"] if "Topic" in d}
    from pixloc_ros.ros.node import OUTPUT_TOPICS
    for kind, topic in [("PoseWithCovariance", "pose"), ("MarkerArray", "markers"), ("Image", "heatmap/fused")]:
        assert topic in OUTPUT_TOPICS.values() or topic == "pose"
        assert f"{kind}:/{NODE_NAME}/{topic}" in topics, topics
    pose_display = next(d for d in manager["Displays"] if d["Class"].endswith("PoseWithCovariance"))
    assert pose_display["Topic"]["Durability Policy"] == "Transient Local"  # the node latches the pose
    tool = next(t for t in manager["Tools"] if t["Class"].endswith("SetInitialPose"))
    assert tool["Topic"]["Value"] == "/" + NodeSettings().initial_pose_topic  # no namespace


@pytest.mark.slow
def test_colcon_build_and_import_from_the_install_space(tmp_path):
    """colcon build of the package (messages by rosidl + Python sources), imported from install/."""
    if shutil.which("colcon") is None or shutil.which("cmake") is None:
        pytest.skip("colcon/cmake not installed")
    src = tmp_path / "src" / "pixloc_ros"
    src.mkdir(parents=True)
    for name in ("package.xml", "CMakeLists.txt", "setup.py"):
        shutil.copy2(REPO / name, src / name)
    for name in ("msg", "pixloc_ros", "scripts", "launch", "config", "resource"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    env = dict(os.environ)
    proc = subprocess.run(["colcon", "build", "--base-paths", "src", "--packages-select", "pixloc_ros",
                           "--event-handlers", "console_direct-", "--cmake-args", "-DBUILD_TESTING=OFF",
                           f"-DPython3_EXECUTABLE={sys.executable}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    log = proc.stdout[-4000:] + proc.stderr[-4000:]
    assert proc.returncode == 0, log
    install = tmp_path / "install" / "pixloc_ros"
    assert os.access(install / "lib" / "pixloc_ros" / "localizer_node", os.X_OK)
    for shipped in ("launch/localize.launch.py", "launch/nav2_localization.launch.py", "config/localize.yaml",
                    "config/ekf.yaml", "config/nav2_pixloc.yaml", "config/pixloc.rviz",
                    "config/fastdds_large_frames.xml", "msg/LocalizationStatus.msg", "package.xml"):
        assert (install / "share" / "pixloc_ros" / shipped).exists(), shipped
    code = (
        "import pixloc_ros, pixloc_ros.msg, pixloc_ros.ros.node, pixloc_ros.cli\n"
        "from pixloc_ros.msg import LocalizationStatus\n"
        "from ament_index_python.packages import get_package_share_directory\n"
        f"install = {str(install)!r}\n"
        "for m in (pixloc_ros, pixloc_ros.msg, pixloc_ros.ros.node, pixloc_ros.cli):\n"
        "    assert m.__file__.startswith(install), m.__file__\n"
        "assert get_package_share_directory('pixloc_ros').startswith(install)\n"
        "assert LocalizationStatus(state=LocalizationStatus.STATE_TRACKING).state == 2\n"
        "assert 'play' in pixloc_ros.cli.build_parser().format_help()\n"
        "print('ok')\n")
    # As a user would: source the generated setup script, then run Python.
    run = subprocess.run(["bash", "-c", f". install/setup.sh && {sys.executable} -c \"$CODE\""], cwd=tmp_path,
                         env={**env, "CODE": code}, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.strip().endswith("ok"), run.stdout + run.stderr
