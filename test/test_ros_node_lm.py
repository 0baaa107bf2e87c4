"""The node asked for the fused LM (``lm_path: fused``) where it cannot run: a CPU without Triton's
interpreter, as on a user's machine without a GPU. It must start (the warm-up runs the LM), say so
in exactly one warning, localize every frame with the torch LM, and report the LM path in use in
each status and in the diagnostics (with what was asked for and why it fell back)."""
from __future__ import annotations

import pytest

pytest.importorskip("rclpy")
from ros_testing import ChildProcess, python_cmd, ros  # noqa: E402,F401 (ros: the fixture)
from test_ros_node import CONFIG, Listener, Scene, log_lines, node_env, play_paced, wait_ready  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def test_fused_lm_that_cannot_run_falls_back_with_one_warning(synth_map, ros, tmp_path):
    scene = Scene(synth_map.data, synth_map.map_file, synth_map.weights, synth_map.trained)
    env = node_env(ros)
    env["TRITON_INTERPRET"] = "0"  # the suite's interpreter off: the kernels cannot run on this CPU
    args = ["--ros-args", "--params-file", str(CONFIG), "-p", f"map_file:={scene.map_file}",
            "-p", f"weights:={scene.weights}", "-p", "device:=cpu", "-p", "use_sim_time:=true",
            "-p", "lm_path:=fused", "-p", "warm_up_size:=[320,240]"]
    if not scene.trained:
        args += ["-p", "min_inlier_ratio:=0.0"]  # as test_end_to_end_drive: random weights pass no gate otherwise
    node = ChildProcess(python_cmd("-m", "pixloc_ros.ros.start", *args), env, tmp_path / "node.log")
    player = None
    try:
        listener = Listener(ros, "lm_listener")
        wait_ready(ros, node, listener)
        player = play_paced(scene.bag, ros, tmp_path / "player.log")
        ros.spin_until(lambda: not player.alive() and len(listener.statuses) >= 3, timeout=150)
        ros.spin_until(lambda: len(listener.diagnostics) > 0, timeout=5)
        assert player.wait(10) == 0, player.log()
        assert node.alive(), node.log()
    finally:
        if player is not None:
            player.stop()
        node.stop()
    log = node.log()
    warnings = log_lines(node, r"fused Triton kernels failed")
    assert len(warnings) == 1, log
    assert "[WARN]" in warnings[0] and "unavailable" in warnings[0] and "torch LM for the rest of the run" in warnings[0]
    assert not log_lines(node, r"\[(ERROR|FATAL)\]") and log_lines(node, r"prepared for 320x240 frames"), log
    ran = [s for s in listener.statuses if s.time_network > 0]
    assert ran and all(s.lm_path == "torch" for s in ran), [(s.lm_path, s.reason) for s in listener.statuses]
    assert listener.poses, f"no pose with the torch LM: {[s.reason for s in listener.statuses]}\n{log}"
    values = {kv.key: kv.value for kv in listener.diagnostics[-1].status[0].values}
    assert (values["lm_path"], values["lm_path_requested"]) == ("torch", "fused")
    assert "unavailable" in values["lm_path_fallback"]
