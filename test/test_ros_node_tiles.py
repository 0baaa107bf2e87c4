"""The node on a tiled map with one damaged tile: it starts, says which tile it skipped (one
ERROR line, a "map tiles" diagnostic at ERROR with the reason) and keeps processing frames."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

pytest.importorskip("rclpy")
from diagnostic_msgs.msg import DiagnosticStatus  # noqa: E402
from ros_testing import ros  # noqa: E402,F401 (ros: the fixture)
from test_ros_node import Listener, Scene, log_lines, play_paced, start_node, wait_ready  # noqa: E402

from pixloc_ros.core.maps.mapfile import open_map  # noqa: E402
from pixloc_ros.core.maps.retrieval import MapIndex  # noqa: E402
from pixloc_ros.core.maps.tiles import open_tiled_map, split_map  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def test_node_skips_a_damaged_tile_and_keeps_serving(synth_map, ros, tmp_path):
    extent = np.ptp(MapIndex.open(synth_map.map_file).keyframe_centers[:, :2], axis=0).max()
    folder = tmp_path / "tiles"
    split_map(open_map(synth_map.map_file), folder, tile_size_m=extent / 3)
    tiled = open_tiled_map(folder)
    bad = tiled.entries[len(tiled.entries) // 2]
    path = folder / bad.file
    with open(path, "r+b") as f:  # truncated: the copy was interrupted
        f.truncate(path.stat().st_size // 2)
    scene = Scene(synth_map.data, folder, synth_map.weights, synth_map.trained)
    node = start_node(scene, ros, tmp_path / "node.log")
    player = None
    try:
        listener = Listener(ros, "tiles_listener")
        wait_ready(ros, node, listener)
        player = play_paced(scene.bag, ros, tmp_path / "player.log")

        def tile_status():
            """The newest "map tiles" ERROR status (the first can come before any tile is loaded:
            the damaged tile is already found by the check at start)."""
            found = None
            for array in listener.diagnostics:
                for s in array.status:
                    if s.name.endswith("map tiles") and s.level == DiagnosticStatus.ERROR:
                        found = s
            return found

        ros.spin_until(lambda: not player.alive() and tile_status() is not None, timeout=150)
        assert player.wait(10) == 0, player.log()
        assert node.alive(), node.log()
    finally:
        if player is not None:
            player.stop()
        node.stop()
    status = tile_status()
    assert status is not None, node.log()
    assert str(bad.key) in status.message and "truncated" in status.message
    values = {kv.key: kv.value for kv in status.values}
    assert values["tiles_failed"] == str(bad.key) and int(values["tiles_loaded"]) >= 1
    errors = log_lines(node, r"\[ERROR\].*Map tile skipped")
    assert len(errors) == 1 and str(bad.key) in errors[0], node.log()
    assert not log_lines(node, r"\[FATAL\]|Traceback"), node.log()
    assert len(listener.statuses) > 0 and any(s.time_network > 0 for s in listener.statuses)  # frames still run
    shutil.rmtree(folder)
