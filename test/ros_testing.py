"""Helpers shared by the ROS tests (test_ros_*.py): small rosbag2 files, plus the process and
context helpers of ``pixloc_ros.ros.session`` (isolated DDS domains, spinning with a deadline,
child processes that always end), re-exported here.

Each test module gets its own domain id derived from the pid and the module name, so parallel
runs do not see each other.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pixloc_ros.ros.session import REPO, ChildProcess, RosContext, domain_id_for, ros_env  # noqa: F401


class FakeClock:
    """A settable monotonic clock (seconds) for code that takes ``clock=`` (throttles, guards, monitors)."""

    def __init__(self, t: float = 0.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture(scope="module")
def ros(request) -> RosContext:
    """An rclpy context of the test module's own (its DDS domain from the module's name), closed
    after the module; a module uses it by importing it (``from ros_testing import ros``)."""
    ctx = RosContext(domain_id_for(request.module.__name__))
    yield ctx
    ctx.close()


def python_cmd(*args: str) -> list[str]:
    return [sys.executable, *args]


def write_bag(path: Path, messages: list[tuple[str, str, int, object]]) -> Path:
    """Write a rosbag2 (MCAP) from (topic, msgtype, log_time_ns, rclpy message) tuples."""
    from rclpy.serialization import serialize_message
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conns = {}
        for topic, msgtype, stamp, msg in sorted(messages, key=lambda m: m[2]):
            if topic not in conns:
                conns[topic] = writer.add_connection(topic, msgtype, typestore=store)
            writer.write(conns[topic], stamp, serialize_message(msg))
    return path
