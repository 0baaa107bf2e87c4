"""Heatmap images and RViz markers of a frame (pixloc_ros/ros/visualization.py)."""
import numpy as np
import pytest

pytest.importorskip("rclpy")
from visualization_msgs.msg import Marker  # noqa: E402

from pixloc_ros.ros.visualization import frame_markers, render_heatmaps, weight_colors  # noqa: E402

pytestmark = pytest.mark.ros


def test_heatmaps_have_the_requested_size_and_follow_confidence():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    # Level maps at strides 1, 4, 16: confident on the left half only.
    confs = []
    for stride in (1, 4, 16):
        c = np.full((240 // stride, 320 // stride), 0.05, np.float32)
        c[:, : c.shape[1] // 2] = 0.9
        confs.append(c)
    maps = render_heatmaps(image, confs, scale=0.5)
    assert len(maps.levels) == 3
    for im in (*maps.levels, maps.fused):
        assert im.shape == (120, 160, 3) and im.dtype == np.uint8
    # Turbo: trusted = red, distrusted = blue (over a grey image both halves share on average).
    left, right = maps.fused[:, 10:60].astype(float).mean((0, 1)), maps.fused[:, 100:150].astype(float).mean((0, 1))
    assert left[0] > left[2] + 40 and right[2] > right[0] + 40, (left, right)
    with pytest.raises(ValueError):
        render_heatmaps(image, [])


def test_fused_map_is_low_where_any_level_distrusts():
    image = np.zeros((64, 64, 3), np.uint8)
    ones = np.ones((64, 64), np.float32)
    low = ones.copy()
    low[:, 32:] = 0.01
    both = render_heatmaps(image, [ones, ones, ones], scale=1.0).fused
    one_low = render_heatmaps(image, [ones, low, ones], scale=1.0).fused
    # Same colour where all levels trust; a different (bluer) colour where one level does not.
    np.testing.assert_array_equal(both[:, :30], one_low[:, :30])
    assert one_low[:, 40:, 2].mean() > one_low[:, :30, 2].mean() + 40


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
