"""The process entry's params-file check (ros/start.py), before rclpy sees the file. The node
processes that fail at start, and signals during the start-up, are in test_ros_node.py."""
import pytest

from pixloc_ros.ros.params import ros_arguments
from pixloc_ros.ros.start import check_params_files

OK_FILES = {
    "wildcard": "/**:\n  ros__parameters:\n    num_keyframes: 3\n",
    "node name": "pixloc_localizer:\n  ros__parameters:\n    num_keyframes: 3\n",
    "fully qualified": "/car/pixloc_localizer:\n  ros__parameters:\n    num_keyframes: 3\n",
    "nested namespace": "car:\n  pixloc_localizer:\n    ros__parameters:\n      num_keyframes: 3\n",
    "with other nodes": "ekf:\n  ros__parameters:\n    a: 1\npixloc_localizer:\n  ros__parameters:\n    b: 2\n",
}
BAD_FILES = {
    "not yaml": ("/**:\n  ros__parameters:\n    iterations: [25, 25\n", "is not valid YAML (line 4"),
    "no ros__parameters": ("/**:\n  num_keyframes: 3\n", "must map node names to 'ros__parameters'"),
    "a list": ("- 1\n- 2\n", "must map node names to 'ros__parameters'"),
    "another node only": ("localizer:\n  ros__parameters:\n    a: 1\n", "no section for this node"),
}


@pytest.mark.parametrize("name", OK_FILES)
def test_params_files_rcl_would_apply_pass(tmp_path, name):
    path = tmp_path / "p.yaml"
    path.write_text(OK_FILES[name])
    assert check_params_files(["node", "--ros-args", "--params-file", str(path)]) is None


@pytest.mark.parametrize("name", BAD_FILES)
def test_unusable_params_files_are_named_with_the_reason(tmp_path, name):
    text, message = BAD_FILES[name]
    path = tmp_path / "p.yaml"
    path.write_text(text)
    problem = check_params_files(["node", "--ros-args", "-p", "a:=1", "--params-file", str(path)])
    assert problem is not None and str(path) in problem and message in problem


def test_missing_file_and_remapped_node_name(tmp_path):
    assert "does not exist" in check_params_files(["n", "--ros-args", "--params-file", str(tmp_path / "no.yaml")])
    path = tmp_path / "p.yaml"
    path.write_text("localizer:\n  ros__parameters:\n    a: 1\n")
    assert check_params_files(["n", "--ros-args", "-r", "__node:=localizer", "--params-file", str(path)]) is None
    # Only what follows --ros-args (up to --) is rcl's.
    assert ros_arguments(["n", "--params-file", "x", "--ros-args", "-p", "a:=1", "--", "--params-file", "y"]) == [
        "-p", "a:=1"]
