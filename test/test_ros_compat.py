"""The distro fallbacks of pixloc_ros/ros/compat.py, exercised with the real rclpy (Kilted wheels)
made to look like Humble where Humble differs, and with cv_bridge installs that break:

- no ``rclpy.event_handler`` (Humble has ``rclpy.qos_event``): the image subscription still imports
  and still follows a best-effort publisher over DDS;
- no ``Subscription.get_publisher_count`` (rclpy < 4.0): publishers are counted through the node;
- a cv_bridge that raises AttributeError on import (apt's under numpy 2), or that breaks at the
  first conversion: images still convert (built-in), one warning line;
- the loopback settings each distro reads, and tf lookups with frame ids tf2 rejects.
"""
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("rclpy")
from sensor_msgs.msg import Image  # noqa: E402

from pixloc_ros.ros import compat  # noqa: E402
from pixloc_ros.ros.tf import StaticTransformGraph  # noqa: E402
from ros_testing import REPO, domain_id_for, ros, ros_env  # noqa: E402,F401 (ros: the fixture)

pytestmark = pytest.mark.ros


def run_python(code: str, env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter (fresh module state) from the repo root."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


HUMBLE_EVENTS = """
    import sys, types
    import rclpy.node  # the real rclpy, event_handler and all, loaded first
    import rclpy.event_handler as real

    # Humble: the callbacks live in rclpy.qos_event; rclpy.event_handler does not exist.
    qos_event = types.ModuleType("rclpy.qos_event")
    class SubscriptionEventCallbacks(real.SubscriptionEventCallbacks):
        pass
    qos_event.SubscriptionEventCallbacks = SubscriptionEventCallbacks
    sys.modules["rclpy.qos_event"] = qos_event
    sys.modules["rclpy.event_handler"] = None  # any import of it now raises ImportError
    try:
        import rclpy.event_handler
        raise SystemExit("rclpy.event_handler still imports")
    except ImportError:
        pass
"""


def test_image_subscription_works_with_humbles_qos_event_module():
    """The module that needed rclpy.event_handler (ros/reliability.py, imported by the node) under a
    Humble-like rclpy: it imports, takes the callbacks from rclpy.qos_event, and the incompatible-QoS
    event still makes it follow a best-effort publisher over real DDS."""
    code = HUMBLE_EVENTS + """
    import json, os, time
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image
    from pixloc_ros.ros import compat
    from pixloc_ros.ros.reliability import AdaptiveSubscription

    ctx = Context()
    rclpy.init(context=ctx, domain_id=int(os.environ["ROS_DOMAIN_ID"]))
    executor = SingleThreadedExecutor(context=ctx)
    node, pub_node = rclpy.create_node("humble_sub", context=ctx), rclpy.create_node("humble_pub", context=ctx)
    executor.add_node(node); executor.add_node(pub_node)
    logs = []
    sub = AdaptiveSubscription(node, Image, "/humble/image", lambda m: None, "auto", log=logs.append)
    was_reliable = sub.reliable
    pub_node.create_publisher(Image, "/humble/image", qos_profile_sensor_data)
    deadline = time.monotonic() + 30
    while sub.reliable and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.05)
    print(json.dumps({"callbacks_from_qos_event": compat.SubscriptionEventCallbacks is
                      sys.modules["rclpy.qos_event"].SubscriptionEventCallbacks,
                      "was_reliable": was_reliable, "reliable": sub.reliable, "logs": logs}))
    executor.shutdown(); node.destroy_node(); pub_node.destroy_node(); ctx.try_shutdown()
    """
    proc = run_python(code, ros_env(domain_id_for("compat_qos_event")))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["callbacks_from_qos_event"], "compat did not fall back to rclpy.qos_event"
    assert out["was_reliable"] and not out["reliable"], f"never switched to best effort: {out}"
    assert len(out["logs"]) == 1 and "a best-effort publisher appeared" in out["logs"][0]


def test_publisher_count_without_subscription_get_publisher_count(ros, monkeypatch):
    """rclpy < 4.0 has no Subscription.get_publisher_count: the count comes from the node's graph."""
    from rclpy.qos import QoSProfile
    from rclpy.subscription import Subscription
    from std_msgs.msg import String

    node = ros.node("count_sub")
    sub = node.create_subscription(String, "/compat/count", lambda m: None, 10)
    with_method = compat.publisher_count(sub, node)
    monkeypatch.delattr(Subscription, "get_publisher_count")
    assert not hasattr(sub, "get_publisher_count")
    assert with_method == compat.publisher_count(sub, node) == 0
    ros.node("count_pub").create_publisher(String, "/compat/count", QoSProfile(depth=10))
    assert ros.spin_until(lambda: compat.publisher_count(sub, node) == 1, timeout=20)
    monkeypatch.undo()
    assert ros.spin_until(lambda: sub.get_publisher_count() == 1, timeout=20)  # both ways agree


FAKE_BRIDGES = {
    # apt's cv_bridge imported under numpy 2
    "raises_on_import": 'raise AttributeError("_ARRAY_API not found")',
    # imports, then fails inside the first conversion with something that is no conversion error
    "breaks_at_runtime": textwrap.dedent("""
        calls = []
        class CvBridgeError(TypeError):
            pass
        class CvBridge:
            def imgmsg_to_cv2(self, msg, desired_encoding="passthrough"):
                calls.append(msg.encoding)
                raise RuntimeError("boost::python conversion failed")
        """),
    # a bridge that works: the node must use it (marker value 7 everywhere)
    "works": textwrap.dedent("""
        import numpy as np
        class CvBridgeError(TypeError):
            pass
        class CvBridge:
            def imgmsg_to_cv2(self, msg, desired_encoding="passthrough"):
                if msg.encoding == "yuv422":
                    raise CvBridgeError("unsupported encoding yuv422")
                return np.full((msg.height, msg.width, 3), 7, np.uint8)
        """),
}


@pytest.mark.parametrize("kind", sorted(FAKE_BRIDGES))
def test_cv_bridge_failures_fall_back_to_the_built_in_conversion(tmp_path, kind):
    package = tmp_path / "cv_bridge"
    package.mkdir()
    (package / "__init__.py").write_text(FAKE_BRIDGES[kind])
    code = f"""
    import json, sys
    sys.path.insert(0, {str(tmp_path)!r})
    import numpy as np
    from sensor_msgs.msg import Image
    from pixloc_ros.ros import conversions as cv

    rgb = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    msg = Image(height=4, width=5, encoding="rgb8", step=15)
    msg.data = rgb.tobytes()
    results = [cv.image_to_rgb(msg).tolist() for _ in range(3)]
    bad = Image(height=4, width=5, encoding="yuv422", step=10)
    bad.data = bytes(40)
    try:
        cv.image_to_rgb(bad)
        error = None
    except ValueError as err:
        error = str(err)
    calls = getattr(sys.modules.get("cv_bridge"), "calls", None)
    print(json.dumps({{"built_in": all(r == rgb.tolist() for r in results),
                      "marker": all(np.all(np.asarray(r) == 7) for r in results), "error": error, "calls": calls}}))
    """
    proc = run_python(code, ros_env(domain_id_for("compat_cv_bridge")))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    warnings = [line for line in proc.stderr.splitlines() if "cv_bridge" in line]
    assert out["error"] and "yuv422" in out["error"]  # a bad image stays a ValueError either way
    if kind == "works":
        assert out["marker"] and not warnings, proc.stderr
        return
    assert out["built_in"], out
    assert len(warnings) == 1, proc.stderr  # one line, not one per image
    if kind == "raises_on_import":
        assert "AttributeError: _ARRAY_API not found" in warnings[0] and "numpy < 2" in warnings[0]
    else:
        assert "RuntimeError: boost::python conversion failed" in warnings[0]
        assert out["calls"] == ["rgb8"], "the broken bridge was called again after it failed"


def test_an_absent_cv_bridge_is_silent_and_an_absent_dependency_is_not(tmp_path):
    """Not installed (the PyPI wheels): no log. Installed but missing one of its own imports: warned."""
    assert compat.optional_module("pixloc_no_such_module") is None
    (tmp_path / "half_installed.py").write_text("import pixloc_no_such_dependency\n")
    code = f"""
    import sys
    sys.path.insert(0, {str(tmp_path)!r})
    from pixloc_ros.ros import compat
    assert compat.optional_module("pixloc_no_such_module") is None
    assert compat.optional_module("half_installed") is None
    assert compat.optional_module("half_installed") is None
    """
    proc = run_python(code, ros_env(domain_id_for("compat_optional")))
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "failed to import" in line]
    assert len(lines) == 1 and "half_installed" in lines[0] and "pixloc_no_such_dependency" in lines[0], proc.stderr
    assert "pixloc_no_such_module" not in proc.stderr


def test_loopback_settings_for_each_distro():
    humble = compat.loopback_dds_env("humble")
    assert humble == {"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "ROS_LOCALHOST_ONLY": "1"}
    assert compat.loopback_dds_env("kilted") == compat.loopback_dds_env("") == humble  # ignored there, harmless
    for distro in ("jazzy", "iron"):  # both honour the new variable and warn about the old one
        assert compat.loopback_dds_env(distro) == {"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    env = ros_env(5)
    assert env["ROS_DOMAIN_ID"] == "5" and env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    assert compat.fastdds_profile_env("/p.xml") == {"FASTRTPS_DEFAULT_PROFILES_FILE": "/p.xml",
                                                    "FASTDDS_DEFAULT_PROFILES_FILE": "/p.xml"}


def test_ros_env_sh_sets_what_humble_reads(tmp_path):
    script = REPO / "scripts" / "ros_env.sh"
    def run(**env):
        base = {"PATH": "/usr/bin:/bin", "VIRTUAL_ENV": str(tmp_path), "HOME": str(tmp_path)}
        out = subprocess.run(["bash", "-c", f"python3() {{ echo {tmp_path}; }}; source {script}; env"],
                             env={**base, **env}, capture_output=True, text=True, check=True).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if line.startswith("ROS_"))
    assert run() == {"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "ROS_LOCALHOST_ONLY": "1"}
    assert run(ROS_DISTRO="jazzy") == {"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "ROS_DISTRO": "jazzy"}
    assert run(ROS_AUTOMATIC_DISCOVERY_RANGE="SUBNET") == {"ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET"}


def test_tf_lookups_with_frame_ids_tf2_rejects_raise_value_error():
    """tf2's lookupTransform raises InvalidArgumentException for these; the fallback graph raises
    the same ValueError the node turns into a skipped frame (tf2_ros' exception is mapped to it)."""
    graph = StaticTransformGraph()
    graph.add("/base_link", "/camera", np.eye(4))  # added: a leading '/' is stripped, as tf2 does
    np.testing.assert_array_equal(graph.lookup("base_link", "camera"), np.eye(4))
    with pytest.raises(ValueError, match="'base_link' <- '': tf2 frame ids cannot be empty"):
        graph.lookup("base_link", "")
    with pytest.raises(ValueError, match="cannot start with a '/'"):
        graph.lookup("base_link", "/camera")
    with pytest.raises(ValueError, match="cannot be empty"):
        graph.lookup("", "camera")
