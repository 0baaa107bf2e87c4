"""Heatmap images and RViz markers of a frame (pixloc_ros/ros/visualization.py)."""
import numpy as np
import pytest

pytest.importorskip("rclpy")
from visualization_msgs.msg import Marker  # noqa: E402

from pixloc_ros.ros.visualization import frame_markers, render_heatmaps, rig_markers, weight_colors  # noqa: E402

pytestmark = pytest.mark.ros


def test_node_heatmaps_are_the_overview_and_per_level_pictures():
    """The node publishes ``maps.fused`` on ~/heatmap/fused and ``maps.levels`` on ~/heatmap/level{0,1,2}:
    the overview (camera image beside every level, the demo's heatmap.png) and one picture per level
    (their layout and colours: test_heatmap.py)."""
    image = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    confs = [np.full((240 // s, 320 // s), 0.5, np.float32) for s in (1, 4, 16)]
    maps = render_heatmaps(image, confs, scale=0.5)
    assert maps.fused is maps.overview and len(maps.levels) == 3
    assert maps.fused.shape[0] == 2 * maps.levels[0].shape[0] and maps.fused.dtype == np.uint8
    with pytest.raises(ValueError):
        render_heatmaps(image, [])


def test_weight_colors_are_monotone_in_brightness():
    c = weight_colors(np.linspace(0, 2, 11))
    assert c.shape == (11, 3) and c.min() >= 0 and c.max() <= 1
    luminance = c @ [0.2126, 0.7152, 0.0722]
    assert np.all(np.diff(luminance) > 0)  # viridis: dark = ignored, bright = trusted
    assert np.isfinite(weight_colors(np.zeros(3))).all() and len(weight_colors(np.zeros(0))) == 0


def test_frame_markers():
    xyz = np.arange(12, dtype=float).reshape(4, 3)
    kf = np.tile(np.eye(4), (2, 1, 1))
    kf[1, :3, 3] = [5, 0, 0]
    out = frame_markers(123, "map", xyz, np.array([0.0, 1.0, 2.0, 3.0]), kf)
    delete, points, *arrows = out.markers
    assert delete.action == Marker.DELETEALL and delete.ns == "keyframes"
    assert points.type == Marker.POINTS and len(points.points) == 4 and len(points.colors) == 4
    assert [p.z for p in points.points] == [2.0, 5.0, 8.0, 11.0]
    assert points.header.frame_id == "map" and points.header.stamp.nanosec == 123
    assert len(arrows) == 2 and all(a.type == Marker.ARROW for a in arrows)
    assert arrows[1].points[0].x == 5.0 and arrows[1].points[1].z == 2.0  # along the optical axis (z)
    with pytest.raises(ValueError, match="weights"):
        frame_markers(0, "map", xyz, np.ones(3), kf)


def test_rig_markers_per_camera_and_the_rig_on_its_pose():
    from pixloc_ros.core.tracking.frames import CameraView

    left = np.eye(4)
    left[:3, :3] = [[0, 0, 1], [0, 1, 0], [-1, 0, 0]]  # a rotation: its optical axis (z) is base +x
    left[:3, 3] = [0.5, 1.0, 1.5]
    views = [CameraView("front", np.eye(4), np.zeros((3, 3)), np.ones(3), None),
             CameraView("left", left, np.ones((2, 3)), None, None)]
    map_from_base = np.eye(4)
    map_from_base[:3, 3] = [10.0, 20.0, 0.0]
    out = rig_markers(5, "map", views, np.eye(4)[None], map_from_base)
    by_ns = {}
    for m in out.markers:
        by_ns.setdefault(m.ns, []).append(m)
    assert out.markers[0].action == Marker.DELETEALL  # the cameras taking part change between instants
    assert len(by_ns["points/front"][0].points) == 3 and len(by_ns["points/left"][0].points) == 2
    assert len(by_ns["keyframes"]) == 1
    rig = by_ns["rig"]
    assert [a.id for a in rig] == [0, 1]
    tail = rig[1].points[0]
    assert (tail.x, tail.y, tail.z) == (10.5, 21.0, 1.5)  # map_from_base @ base_from_camera
    head = rig[1].points[1]  # 3 m along the camera's optical axis (its z column in the map)
    assert np.allclose([head.x - tail.x, head.y - tail.y, head.z - tail.z], 3.0 * left[:3, 2])
    # No published pose: no rig arrows (the points are still shown).
    assert not [m for m in rig_markers(5, "map", views, np.eye(4)[None], None).markers if m.ns == "rig"]
