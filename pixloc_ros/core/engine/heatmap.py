"""Confidence heatmaps: what the network trusts in a camera image, as pictures a person can read
(the node's heatmap topics in RViz, the demo's ``heatmap.png``, the evaluation's snapshot).

``overview`` puts the camera image beside the confidence maps, a 2 x 2 grid: the image, then
levels 0 (fine, stride 1), 1 (stride 4) and 2 (coarse, stride 16); ``levels[l]`` is level l's map
alone (the node's per-level topics; the camera image is in the overview). Confidences are colour-mapped on one absolute scale, 0 to 1 (OpenCV's
turbo: blue = distrusted, red = trusted), shown by a colour bar at the right, so that colours
mean the same in every frame and every level: a flat map looks flat. Coarse maps are enlarged
with nearest-neighbour interpolation, so each cell the network computed stays visible. A tile is
``scale`` x the camera image, but at least ``MIN_TILE_WIDTH`` pixels wide, and its title gives the
map's mean and spread (std over its pixels).
"""
from __future__ import annotations

import functools

from dataclasses import dataclass

import cv2
import numpy as np

MIN_TILE_WIDTH = 320  # pixels: smaller tiles are enlarged so that titles and cells stay readable
TITLE_HEIGHT = 22  # pixels of the title strip above each tile
BAR_WIDTH = 64  # pixels of the colour bar (gradient and tick labels)
LEVEL_NAMES = ("level 0 (fine, stride 1)", "level 1 (stride 4)", "level 2 (coarse, stride 16)")
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_BACKGROUND = 255  # white around the tiles


@dataclass
class Heatmaps:
    """Confidence pictures of one frame, (h, w, 3) uint8 RGB each."""

    overview: np.ndarray  # the camera image and every level's map (2 x 2), colour bar
    levels: list[np.ndarray]  # per level (finest first): that level's map with its title and the colour bar

    @property
    def fused(self) -> np.ndarray:
        """What the node publishes on ``~/heatmap/fused`` (the topic's name predates the overview): the overview."""
        return self.overview


def colorize(confidence: np.ndarray) -> np.ndarray:
    """(h, w) confidences in [0, 1] -> (h, w, 3) RGB uint8, turbo on the absolute scale (nan -> 0)."""
    c = np.clip(np.nan_to_num(np.asarray(confidence, np.float32), nan=0.0), 0.0, 1.0)
    levels = np.round(255.0 * c).astype(np.uint8)
    return np.ascontiguousarray(cv2.applyColorMap(levels, cv2.COLORMAP_TURBO)[..., ::-1])


def _titled(tile: np.ndarray, title: str) -> np.ndarray:
    """``tile`` under a white strip with ``title`` in black."""
    strip = np.full((TITLE_HEIGHT, tile.shape[1], 3), _BACKGROUND, np.uint8)
    cv2.putText(strip, title, (4, TITLE_HEIGHT - 7), _FONT, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([strip, tile], axis=0)


@functools.lru_cache(maxsize=8)
def colour_bar(height: int) -> np.ndarray:
    """(height, BAR_WIDTH, 3) RGB: the turbo scale from 0 (bottom) to 1 (top) with tick labels.
    Read-only and cached: the node draws the same few bars on every frame's heatmaps."""
    bar = np.full((height, BAR_WIDTH, 3), _BACKGROUND, np.uint8)
    top, bottom = TITLE_HEIGHT, height - 8
    values = np.linspace(1.0, 0.0, max(2, bottom - top))[:, None]
    bar[top:top + len(values), 6:22] = colorize(np.repeat(values, 16, axis=1))
    for v in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = int(round(top + (1.0 - v) * (len(values) - 1)))
        cv2.line(bar, (22, y), (26, y), (0, 0, 0), 1)
        cv2.putText(bar, f"{v:g}", (28, y + 4), _FONT, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(bar, "conf.", (4, TITLE_HEIGHT - 7), _FONT, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    bar.setflags(write=False)
    return bar


def _tiles(image_rgb: np.ndarray, confidences: list[np.ndarray], scale: float) -> tuple[np.ndarray, list[np.ndarray]]:
    """The titled camera tile and one titled tile per level, all the same size."""
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
        raise ValueError(f"render_heatmaps expects an (H, W, 3) image, got {image_rgb.shape}")
    if not confidences:
        raise ValueError("render_heatmaps needs at least one confidence map")
    height, width = image_rgb.shape[:2]
    w, h = tile_size(width, height, scale)
    interpolation = cv2.INTER_AREA if w < width else cv2.INTER_LINEAR
    camera = _titled(cv2.resize(image_rgb, (w, h), interpolation=interpolation), "camera image")
    maps = []
    for level, conf in enumerate(confidences):
        c = np.asarray(conf, np.float32).reshape(np.shape(conf)[-2:])
        name = LEVEL_NAMES[level] if level < len(LEVEL_NAMES) else f"level {level}"
        finite = c[np.isfinite(c)]
        stats = f"  mean {finite.mean():.2f} std {finite.std():.2f}" if finite.size else ""
        tile = colorize(cv2.resize(c, (w, h), interpolation=cv2.INTER_NEAREST))
        maps.append(_titled(tile, name + stats))
    return camera, maps


def _with_bar(picture: np.ndarray) -> np.ndarray:
    return np.concatenate([picture, colour_bar(picture.shape[0])], axis=1)


def render_heatmaps(image_rgb: np.ndarray, confidences: list[np.ndarray], scale: float = 0.5) -> Heatmaps:
    """Camera image (H, W, 3) uint8 RGB + per-level confidences [(H_l, W_l)] in [0, 1], finest
    first -> Heatmaps; tiles are ``scale`` x (W, H), at least ``MIN_TILE_WIDTH`` wide."""
    camera, maps = _tiles(image_rgb, confidences, scale)
    blank = np.full_like(camera, _BACKGROUND)
    cells = [camera, *maps] + [blank] * (-(len(maps) + 1) % 2)
    gap = np.full((camera.shape[0], 4, 3), _BACKGROUND, np.uint8)
    rows = [np.concatenate([cells[i], gap, cells[i + 1]], axis=1) for i in range(0, len(cells), 2)]
    overview = _with_bar(np.concatenate(rows, axis=0))
    levels = [_with_bar(m) for m in maps]
    return Heatmaps(overview, levels)


def tile_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """(w, h) of one tile for a (width, height) camera: ``scale`` x the camera, at least ``MIN_TILE_WIDTH`` wide."""
    w = max(MIN_TILE_WIDTH, int(round(width * scale)))
    return w, max(1, int(round(height * w / width)))


def overview_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """(w, h) of ``Heatmaps.overview`` for a (width, height) camera and three levels."""
    w, h = tile_size(width, height, scale)
    return 2 * w + 4 + BAR_WIDTH, 2 * (h + TITLE_HEIGHT)


__all__ = ["Heatmaps", "render_heatmaps", "colorize", "colour_bar", "tile_size", "overview_size", "MIN_TILE_WIDTH",
           "LEVEL_NAMES"]
