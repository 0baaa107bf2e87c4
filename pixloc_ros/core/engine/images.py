"""Downscaling camera images before the network (queries in the localizer, keyframes in map compile).

The engine profile (``engine_profile``) says when and how: the reference downscales images whose
longer side exceeds 1024 px with bilinear interpolation (``cv2.INTER_LINEAR`` on the float image,
no antialiasing: cvg/pixloc ``FeatureExtractor``); the native profile never resizes unless asked,
and then averages (``cv2.INTER_AREA``), which does not alias fine texture into the features.

How the camera follows (``camera_scale``): "area" scales each axis by new / old size, so the
camera matches the resized image exactly. "linear" reproduces the reference, which scales both
axes by max_edge / longer side although the shorter side was rounded to whole pixels: where that
rounding is not exact (1241x376 -> 1024x310 for 310.24) the camera is off by up to half a pixel
on the shorter axis. Kept because the released weights' results include it (measured on KITTI:
poses 0.5-2.1 mm / 0.001-0.004 deg apart from the reference with per-axis scaling, BENCHMARKS.md);
it never happens for 4:3, 16:9 or square images at 1024 (1920x1080 -> 1024x576 exactly).
"""
from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

RESIZE_METHODS = ("linear", "area")


def resized_size(width: int, height: int, max_edge: int | None) -> tuple[int, int]:
    """(width, height) after scaling the longer side down to ``max_edge`` (never up; None or 0: as is)."""
    if not max_edge or max(width, height) <= max_edge:
        return width, height
    s = max_edge / max(width, height)
    return max(1, round(width * s)), max(1, round(height * s))


def downscale_rgb(rgb: np.ndarray, max_edge: int | None, method: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> the image with its longer side at most ``max_edge``.

    Unchanged (the same array) when it is small enough; otherwise "linear": float32 values in
    [0, 255] (the reference resizes the float image and keeps it float), "area": uint8.
    """
    if method not in RESIZE_METHODS:
        raise ValueError(f"Unsupported resize method {method!r}, expected one of {RESIZE_METHODS}")
    h, w = rgb.shape[:2]
    nw, nh = resized_size(w, h, max_edge)
    if (nw, nh) == (w, h):
        return rgb
    if method == "linear":
        return cv2.resize(rgb.astype(np.float32), (nw, nh), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA)


def downscale_tensor(image: torch.Tensor, max_edge: int | None, method: str) -> torch.Tensor:
    """(1, 3, H, W) float image -> the same with its longer side at most ``max_edge`` (bilinear;
    antialiased for "area"). For images that arrive as tensors; numpy images use ``downscale_rgb``."""
    if method not in RESIZE_METHODS:
        raise ValueError(f"Unsupported resize method {method!r}, expected one of {RESIZE_METHODS}")
    h, w = image.shape[-2:]
    nw, nh = resized_size(int(w), int(h), max_edge)
    if (nw, nh) == (w, h):
        return image
    return F.interpolate(image, size=(nh, nw), mode="bilinear", align_corners=False, antialias=method == "area")


def camera_scale(width: int, height: int, new_width: int, new_height: int, method: str) -> tuple[float, float]:
    """(sx, sy) to apply to the camera of a ``width`` x ``height`` image resized to the new size
    (module docstring: "linear" the reference's uniform longer-side ratio, "area" per axis)."""
    if (new_width, new_height) == (width, height):
        return 1.0, 1.0
    if method == "linear":
        s = max(new_width, new_height) / max(width, height)
        return s, s
    return new_width / width, new_height / height


def rgb_to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 or float32-in-[0, 255] RGB -> (1, 3, H, W) float32 in [0, 1]."""
    # np.require copies only read-only or non-contiguous arrays (e.g. views into a bag buffer).
    t = torch.from_numpy(np.require(rgb, requirements=["C", "W"])).permute(2, 0, 1)[None]
    return t.float() / 255.0


def upload_rgb(rgb: np.ndarray, device: torch.device) -> torch.Tensor:
    """(H, W, 3) uint8 (or float32 in [0, 255]) RGB -> (1, 3, H, W) float32 in [0, 1] on ``device``,
    as ``rgb_to_tensor`` computes it. On CUDA the pixels go up as they are (uint8: a quarter of the
    float32 bytes) from pinned memory without blocking the host, and are converted on the GPU."""
    t = torch.from_numpy(np.require(rgb, requirements=["C", "W"]))
    if device.type == "cuda":
        t = t.pin_memory().to(device, non_blocking=True)
    return t.permute(2, 0, 1)[None].float() / 255.0
