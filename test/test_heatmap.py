"""Confidence heatmaps (core/engine/heatmap.py): the camera image beside each level's map on one
absolute colour scale with a colour bar, at a readable size (what the demo's heatmap.png and the
node's heatmap topics show)."""
import numpy as np
import pytest

from pixloc_ros.core.engine.heatmap import (BAR_WIDTH, MIN_TILE_WIDTH, TITLE_HEIGHT, colorize, colour_bar,
                                            overview_size, render_heatmaps)


def _split_confidences(width=320, height=240):
    """Level maps at strides 1, 4, 16: confident (0.9) on the left half, not (0.05) on the right."""
    confs = []
    for stride in (1, 4, 16):
        c = np.full((height // stride, width // stride), 0.05, np.float32)
        c[:, : c.shape[1] // 2] = 0.9
        confs.append(c)
    return confs


def test_overview_is_the_camera_beside_every_level_with_a_colour_bar():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    maps = render_heatmaps(image, _split_confidences(), scale=0.5)
    # A 320x240 camera at scale 0.5 would give 160 px tiles: enlarged to the readable minimum.
    tile_w, tile_h = MIN_TILE_WIDTH, 240
    cell_h = tile_h + TITLE_HEIGHT
    assert maps.overview.shape == (2 * cell_h, 2 * tile_w + 4 + BAR_WIDTH, 3) and maps.overview.dtype == np.uint8
    assert maps.overview.shape[1::-1] == overview_size(320, 240, 0.5)
    assert len(maps.levels) == 3 and all(m.shape == (cell_h, tile_w + BAR_WIDTH, 3) for m in maps.levels)
    assert maps.fused is maps.overview  # what the node publishes on ~/heatmap/fused
    # top-left: the camera image itself (same size here: no resampling)
    np.testing.assert_array_equal(maps.overview[TITLE_HEIGHT:cell_h, :tile_w][::2, ::2][:5, :5].shape, (5, 5, 3))
    # every level's tile: trusted half red, distrusted half blue (turbo, absolute scale)
    origins = [(0, tile_w + 4), (cell_h, 0), (cell_h, tile_w + 4)]
    for level, (y0, x0) in enumerate(origins):
        tile = maps.overview[y0 + TITLE_HEIGHT:y0 + cell_h, x0:x0 + tile_w].astype(float)
        left, right = tile[:, 10:150].mean((0, 1)), tile[:, 170:310].mean((0, 1))
        assert left[0] > left[2] + 80 and right[2] > right[0] + 80, (level, left, right)
        np.testing.assert_array_equal(tile[:, 10:150].reshape(-1, 3).std(0), 0)  # flat where the map is flat
    # the per-level picture is the same tile with the colour bar
    np.testing.assert_array_equal(maps.levels[1][:, :tile_w], maps.overview[cell_h:, :tile_w])
    with pytest.raises(ValueError):
        render_heatmaps(image, [])


def test_colours_are_absolute_and_the_bar_runs_from_zero_to_one():
    flat = np.full((8, 8), 0.5, np.float32)
    # one absolute scale: a flat 0.5 map is the middle colour, not "the map's maximum" (red)
    np.testing.assert_array_equal(colorize(flat), colorize(np.full((2, 2), 0.5))[:1, :1].repeat(8, 0).repeat(8, 1))
    assert not np.array_equal(colorize(flat)[0, 0], colorize(np.ones((1, 1)))[0, 0])
    low, high = colorize(np.array([[0.15]]))[0, 0].astype(int), colorize(np.array([[0.9]]))[0, 0].astype(int)
    assert low[2] > low[0] + 50 and high[0] > high[2] + 50  # blue = distrusted, red = trusted
    assert np.array_equal(colorize(np.array([[np.nan, 2.0]])), colorize(np.array([[0.0, 1.0]])))
    bar = colour_bar(262)
    assert bar.shape == (262, BAR_WIDTH, 3)
    column = bar[TITLE_HEIGHT:254, 14].astype(int)
    n = len(column)
    top, bottom = column[int(0.1 * n)], column[int(0.85 * n)]  # values 0.9 and 0.15
    assert top[0] > top[2] + 50 and bottom[2] > bottom[0] + 50  # red on top, blue at the bottom


def test_large_cameras_keep_their_scale():
    image = np.zeros((768, 1024, 3), np.uint8)
    maps = render_heatmaps(image, _split_confidences(1024, 768), scale=0.5)
    assert maps.levels[0].shape == (384 + TITLE_HEIGHT, 512 + BAR_WIDTH, 3)
    assert maps.overview.shape[1::-1] == overview_size(1024, 768, 0.5) == (2 * 512 + 4 + BAR_WIDTH, 2 * (384 + TITLE_HEIGHT))
