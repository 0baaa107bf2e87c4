"""Confidence heatmaps: the network's per-level confidence maps colour-mapped over the camera image
(what RViz shows, and the evaluation's heatmap snapshot).

The maps (finest first, each (H_l, W_l) in (0, 1)) are resized to the output size, colour-mapped
(OpenCV's turbo: blue = distrusted, red = trusted) and blended over a grey copy of the camera
image. Each map is scaled by its own maximum, so the structure of a level is visible even when
all its confidences are small. The fused map is the geometric mean of the levels: high only where
every level trusts the pixel.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

OVERLAY_ALPHA = 0.6  # weight of the colour map against the grey camera image


@dataclass
class Heatmaps:
    """Colour-mapped confidence images, (h, w, 3) uint8 RGB each."""

    levels: list[np.ndarray]  # finest first
    fused: np.ndarray


def _colorize(conf: np.ndarray, grey_rgb: np.ndarray) -> np.ndarray:
    """(h, w) confidence -> (h, w, 3) RGB turbo colours blended over ``grey_rgb``."""
    top = float(conf.max()) if conf.size and np.isfinite(conf).all() and conf.max() > 0 else 1.0
    levels = np.clip(np.round(255.0 * conf / top), 0, 255).astype(np.uint8)
    colours = cv2.applyColorMap(levels, cv2.COLORMAP_TURBO)[..., ::-1]
    return cv2.addWeighted(colours, OVERLAY_ALPHA, grey_rgb, 1.0 - OVERLAY_ALPHA, 0.0)


def render_heatmaps(image_rgb: np.ndarray, confidences: list[np.ndarray], scale: float = 0.5) -> Heatmaps:
    """Camera image (H, W, 3) uint8 + per-level confidences [(H_l, W_l)] -> Heatmaps at ``scale`` x (W, H)."""
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
        raise ValueError(f"render_heatmaps expects an (H, W, 3) image, got {image_rgb.shape}")
    if not confidences:
        raise ValueError("render_heatmaps needs at least one confidence map")
    h = max(1, int(round(image_rgb.shape[0] * scale)))
    w = max(1, int(round(image_rgb.shape[1] * scale)))
    grey = cv2.cvtColor(cv2.resize(image_rgb, (w, h), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY)
    grey_rgb = np.repeat(grey[..., None], 3, axis=2)
    resized = [cv2.resize(np.asarray(c, np.float32).reshape(c.shape[-2:]), (w, h), interpolation=cv2.INTER_LINEAR)
               for c in confidences]
    resized = [np.clip(np.nan_to_num(c, nan=0.0), 0.0, 1.0) for c in resized]
    fused = np.exp(np.mean([np.log(np.maximum(c, 1e-6)) for c in resized], axis=0))
    return Heatmaps([_colorize(c, grey_rgb) for c in resized], _colorize(fused, grey_rgb))
