"""The node as a lifecycle node (ros/lifecycle.py), driven as nav2_lifecycle_manager drives it: through
its ``~/change_state`` and ``~/get_state`` services, over real DDS, the node in its own process
started with ``autostart:=false``. What it publishes and subscribes is checked in every state.
The plain node (``autostart`` true, the default) is what test_ros_node.py runs."""
from __future__ import annotations

import time

import pytest

pytest.importorskip("rclpy")
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from lifecycle_msgs.msg import Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402
from rcl_interfaces.msg import Log  # noqa: E402

from pixloc_ros.msg import LocalizationStatus  # noqa: E402
from pixloc_ros.ros.conversions import stamp_to_ns  # noqa: E402
from ros_testing import RosContext, ros  # noqa: E402,F401 (ros: the fixture)
from test_ros_node import NODE, Feeder, Scene, corrupt_copy, log_lines, start_node  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]
IMAGE_TOPIC = "/camera/image_raw"


@pytest.fixture(scope="module")
def scene(synth_map) -> Scene:
    return Scene(synth_map.data, synth_map.map_file, synth_map.weights, synth_map.trained)


class LifecycleClient:
    """What nav2_lifecycle_manager uses of a managed node: its change_state and get_state services;
    plus the node's log lines on /rosout and what it publishes."""

    def __init__(self, ros: RosContext, name: str):
        self.ros = ros
        self.node = ros.node(name)
        self.change = self.node.create_client(ChangeState, f"{NODE}/change_state")
        self.get = self.node.create_client(GetState, f"{NODE}/get_state")
        self.log: list[Log] = []
        self.statuses: list[LocalizationStatus] = []
        self.diagnostics: list[DiagnosticArray] = []
        self.node.create_subscription(Log, "/rosout", self.log.append, 100)
        self.node.create_subscription(LocalizationStatus, f"{NODE}/status", self.statuses.append, 100)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, 100)

    def wait_for_services(self, proc, timeout: float = 120.0) -> None:
        ok = self.ros.spin_until(lambda: (self.change.service_is_ready() and self.get.service_is_ready())
                                 or not proc.alive(), timeout)
        assert ok and proc.alive(), proc.log()

    def _call(self, client, request, timeout: float):
        future = client.call_async(request)
        assert self.ros.spin_until(future.done, timeout), f"no answer from {client.srv_name} in {timeout} s"
        return future.result()

    def state(self) -> str:
        # Asked up to three times, 10 s each (30 s in all, as before): a service can report ready
        # before its reply path is matched, and a request sent then is lost (seen once in CI on a
        # loaded box, the first get_state after discovery). get_state is idempotent; change_state
        # is never resent.
        for _ in range(3):
            future = self.get.call_async(GetState.Request())
            if self.ros.spin_until(future.done, 10):
                return future.result().current_state.label
        raise AssertionError(f"no answer from {self.get.srv_name} in 3 x 10 s")

    def transition(self, transition_id: int, timeout: float = 180.0) -> bool:
        """ChangeState as the lifecycle manager sends it; whether it succeeded."""
        return self._call(self.change, ChangeState.Request(transition=Transition(id=transition_id)), timeout).success

    def publishers(self, topic: str) -> int:
        return self.node.count_publishers(topic)

    def subscribers(self, topic: str) -> int:
        return self.node.count_subscribers(topic)

    def node_log(self, level: int, text: str) -> list[str]:
        return [m.msg for m in self.log if m.name == NODE.lstrip("/") and m.level == level and text in m.msg]

    def quiet_for(self, seconds: float, what: list) -> bool:
        """True when nothing was appended to ``what`` for ``seconds`` (spinning meanwhile)."""
        before = len(what)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.ros.executor.spin_once(timeout_sec=0.05)
        return len(what) == before


def status_for(client: LifecycleClient, feeder: Feeder, k: int, timeout: float = 90.0) -> LocalizationStatus | None:
    """Publish recorded frame ``k``; the node's status for it, or None when none came in ``timeout`` s."""
    stamp = feeder.frame(k)
    client.ros.spin_until(lambda: any(stamp_to_ns(s.header.stamp) == stamp for s in client.statuses), timeout)
    return next((s for s in client.statuses if stamp_to_ns(s.header.stamp) == stamp), None)


def test_transitions_through_the_lifecycle_services(scene, ros, tmp_path):
    """unconfigured -> configure -> inactive -> activate -> active -> deactivate -> inactive ->
    activate -> active -> deactivate -> cleanup -> unconfigured -> shutdown -> finalized, and in each
    state what exists on the graph and what goes out."""
    proc = start_node(scene, ros, tmp_path / "node.log", "autostart:=false")
    client = LifecycleClient(ros, "lifecycle_client")
    feeder = Feeder(ros, scene.bag, name="lifecycle_feeder")
    try:
        client.wait_for_services(proc)
        # unconfigured: nothing loaded, no publisher, no subscription.
        assert client.state() == "unconfigured"
        assert client.publishers(f"{NODE}/status") == 0 and client.publishers(f"{NODE}/pose") == 0
        assert client.subscribers(IMAGE_TOPIC) == 0
        assert not log_lines(proc, "every checksum verified")

        # configure: the map is loaded and checked; publishers exist but send nothing; no input.
        assert client.transition(Transition.TRANSITION_CONFIGURE)
        assert client.state() == "inactive"
        assert len(log_lines(proc, "every checksum verified")) == 1, proc.log()
        assert ros.spin_until(lambda: client.publishers(f"{NODE}/status") == 1
                              and client.publishers(f"{NODE}/pose") == 1, 30)
        assert client.subscribers(IMAGE_TOPIC) == 0
        assert client.quiet_for(2.5, client.diagnostics), "diagnostics while inactive"

        # activate: inputs subscribed, diagnostics at 1 Hz, a frame is answered with a status.
        assert client.transition(Transition.TRANSITION_ACTIVATE)
        assert client.state() == "active"
        assert ros.spin_until(lambda: feeder.connected() or not proc.alive(), 60), proc.log()
        assert ros.spin_until(lambda: len(client.diagnostics) >= 2, 10), "no diagnostics while active"
        feeder.play_until(feeder.frames[0][0])  # tf_static, odometry, GNSS up to the first frame
        assert status_for(client, feeder, 0) is not None, proc.log()

        # deactivate: inputs gone, nothing published; the map stays loaded.
        assert client.transition(Transition.TRANSITION_DEACTIVATE)
        assert client.state() == "inactive"
        assert ros.spin_until(lambda: client.subscribers(IMAGE_TOPIC) == 0, 30)
        assert client.publishers(f"{NODE}/status") == 1  # still there (lifecycle publisher, disabled)
        client.quiet_for(1.5, [])  # a diagnostics message in flight at the transition may still land
        assert client.quiet_for(2.5, client.diagnostics), "diagnostics while inactive"
        count = len(client.statuses)
        feeder.frame(1)
        assert client.quiet_for(2.0, client.statuses) and len(client.statuses) == count

        # activate again: instant (nothing reloaded), frames answered again.
        started = time.monotonic()
        assert client.transition(Transition.TRANSITION_ACTIVATE)
        activate_s = time.monotonic() - started
        assert client.state() == "active"
        assert ros.spin_until(lambda: feeder.connected() or not proc.alive(), 60), proc.log()
        assert status_for(client, feeder, 2) is not None, proc.log()
        assert len(log_lines(proc, "every checksum verified")) == 1, "the map was loaded again"
        print(f"activate after deactivate: {activate_s:.2f} s")

        # deactivate + cleanup: publishers destroyed, map released.
        assert client.transition(Transition.TRANSITION_DEACTIVATE)
        assert client.transition(Transition.TRANSITION_CLEANUP)
        assert client.state() == "unconfigured"
        assert ros.spin_until(lambda: client.publishers(f"{NODE}/status") == 0
                              and client.publishers(f"{NODE}/pose") == 0, 30)

        # shutdown from unconfigured: finalized; the process still answers get_state.
        assert client.transition(Transition.TRANSITION_UNCONFIGURED_SHUTDOWN)
        assert client.state() == "finalized"
        assert proc.alive()
    finally:
        rc = proc.stop()
    log = proc.log()
    assert rc == 0 and "Traceback" not in log, log
    for name in ("configure", "activate", "deactivate", "cleanup", "shutdown"):
        assert log_lines(proc, f"{name}: done"), log


def test_a_failing_configure_leaves_the_node_unconfigured_with_the_reason(scene, ros, tmp_path):
    """A damaged map: configure answers success=false, the node stays unconfigured and alive, and
    its log (on /rosout, as the lifecycle manager's user reads it) says which keyframe is damaged."""
    damaged = tmp_path / "damaged.pxmap"
    keyframe = corrupt_copy(scene.map_file, damaged)
    proc = start_node(scene, ros, tmp_path / "node.log", "autostart:=false", map_file=damaged)
    client = LifecycleClient(ros, "lifecycle_failure_client")
    try:
        client.wait_for_services(proc)
        assert client.state() == "unconfigured"
        assert not client.transition(Transition.TRANSITION_CONFIGURE)
        assert client.state() == "unconfigured" and proc.alive()
        reason = f"the observations of keyframe '{keyframe}' are corrupted (CRC-32 mismatch)"
        assert ros.spin_until(lambda: client.node_log(Log.ERROR, reason), 20), proc.log()
        line = client.node_log(Log.ERROR, reason)[0]
        assert line.startswith("configure failed: ") and line.endswith("(still unconfigured)"), line
        assert client.publishers(f"{NODE}/status") == 0 and client.subscribers(IMAGE_TOPIC) == 0
        # Activate from unconfigured is no transition: refused, state unchanged.
        assert not client.transition(Transition.TRANSITION_ACTIVATE)
        assert client.state() == "unconfigured"
    finally:
        rc = proc.stop()
    log = proc.log()
    assert rc == 0 and "Traceback" not in log, log
    assert not log_lines(proc, r"\[FATAL\]"), log  # not the plain node's exit: it waits to be configured again
