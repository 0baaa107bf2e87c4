"""The layering rules of docs/architecture.md, enforced on the source tree.

- pixloc_ros.core and pixloc_ros.data never import rclpy or a ROS message package;
- pycolmap is imported by pixloc_ros/core/maps/colmap_io.py alone (its API moves between releases).
"""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "pixloc_ros"
ROS_FREE = [PKG / "core", PKG / "data"]


def imported_modules(path: Path) -> set[str]:
    """Top-level names of every module imported by the Python file at ``path``."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def is_ros_module(name: str) -> bool:
    return name in {"rclpy", "rosidl_runtime_py", "tf2_ros", "message_filters", "cv_bridge",
                    "launch", "launch_ros"} or name.endswith("_msgs")


def python_files(*roots: Path) -> list[Path]:
    return sorted(p for root in roots for p in root.rglob("*.py"))


@pytest.mark.parametrize("path", python_files(*ROS_FREE), ids=lambda p: str(p.relative_to(PKG)))
def test_core_and_data_are_ros_free(path):
    offending = sorted(n for n in imported_modules(path) if is_ros_module(n))
    assert not offending, f"{path} imports ROS modules {offending}; keep it in pixloc_ros/ros/"


def test_pycolmap_only_in_colmap_io():
    users = [p.relative_to(PKG) for p in python_files(PKG) if "pycolmap" in imported_modules(p)]
    assert [str(p) for p in users] == ["core/maps/colmap_io.py"]


def test_importing_the_core_loads_no_ros():
    """Importing every core/data module in a fresh interpreter must not pull rclpy in indirectly."""
    modules = [".".join(p.relative_to(PKG.parent).with_suffix("").parts) for p in python_files(*ROS_FREE)]
    modules = [m.removesuffix(".__init__") for m in modules]
    code = ("import importlib, sys\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'rclpy' or m.split('.')[0].endswith('_msgs'))\n"
            "print(bad); sys.exit(1 if bad else 0)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PKG.parent)
    assert proc.returncode == 0, proc.stdout + proc.stderr
