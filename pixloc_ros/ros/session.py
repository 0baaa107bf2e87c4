"""Running ROS 2 processes from Python: isolated DDS domains, an rclpy context with its own
executor, and child processes that always end. Used by `pixloc-ros demo` and the tests.

DDS stays on loopback (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST, and ROS_LOCALHOST_ONLY=1 for
Humble's rcl: ``compat.loopback_dds_env``); a domain id derived from the pid keeps parallel runs apart.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
import zlib
from pathlib import Path

from pixloc_ros.ros.compat import loopback_dds_env

REPO = Path(__file__).resolve().parents[2]


def domain_id_for(name: str) -> int:
    """A ROS_DOMAIN_ID in [1, 100] derived from the pid and ``name`` (Fast DDS allows 0..232)."""
    return 1 + (os.getpid() * 7 + zlib.crc32(name.encode())) % 100


def ros_env(domain_id: int) -> dict[str, str]:
    """Environment for a child ROS process: same venv, given domain, loopback discovery."""
    env = dict(os.environ)
    env["ROS_DOMAIN_ID"] = str(domain_id)
    env.update(loopback_dds_env())
    env["PYTHONUNBUFFERED"] = "1"
    return env


class RosContext:
    """An rclpy context on its own domain, with a single-threaded executor to spin test nodes."""

    def __init__(self, domain_id: int):
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor

        os.environ.update(loopback_dds_env())
        self.domain_id = domain_id
        self.context = Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.nodes = []

    def node(self, name: str, **kwargs):
        """A node in this context, spun by ``spin_until``."""
        from rclpy.node import Node

        node = Node(name, context=self.context, **kwargs)
        self.executor.add_node(node)
        self.nodes.append(node)
        return node

    def spin_until(self, predicate, timeout: float, step: float = 0.05) -> bool:
        """Spin until ``predicate()`` is true or ``timeout`` s passed; returns the predicate's last value."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                return bool(predicate())
            self.executor.spin_once(timeout_sec=step)
        return True

    def close(self) -> None:
        for node in self.nodes:
            self.executor.remove_node(node)
            node.destroy_node()
        self.executor.shutdown()
        self.context.try_shutdown()


class ChildProcess:
    """A child process in its own process group, stdout+stderr to a log file; ``stop`` always ends it."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path, cwd: Path = REPO):
        self.log_path = Path(log_path)
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(args, env=env, cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGINT the group (clean rclpy shutdown), then SIGKILL it if it lingers; returns the exit code."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGINT)
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout)
            except ProcessLookupError:
                pass
        # Children of the group that outlived the leader (none expected) go too.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self._log.close()
        return self.proc.returncode
