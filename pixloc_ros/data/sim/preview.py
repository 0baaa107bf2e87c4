"""The preview picture of the synthetic world: one street view in every season side by side
(``pixloc-ros synth --preview``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from pixloc_ros.data.sim.conditions import MAPPING_CONDITION, QUERY_CONDITIONS
from pixloc_ros.data.sim.drive import base_from_camera, route_path
from pixloc_ros.core.geometry.transforms import invert_transform
from pixloc_ros.data.sim.raycast import PinholeCamera
from pixloc_ros.data.sim.render import render
from pixloc_ros.data.sim.world import World
from pixloc_ros.data.sim.generate import generate_world


# ---------------------------------------------------------------------------------------------
# Preview picture
# ---------------------------------------------------------------------------------------------

PREVIEW_ROUTE = "EFA"
PREVIEW_DISTANCE_M = 85.0  # along the preview route: on street FA, trees and parked cars on both sides


def preview_pose(world: World, base_from_cam: np.ndarray) -> np.ndarray:
    """A fixed, telling view for the preview: (4, 4) cam_from_world."""
    path = route_path(world, PREVIEW_ROUTE)
    k = int(np.searchsorted(path.s, PREVIEW_DISTANCE_M))
    yaw = float(path.heading[k])
    from pixloc_ros.core.geometry.transforms import make_transform, rot_z
    T = make_transform(rot_z(yaw), [path.xy[k, 0], path.xy[k, 1], 0.0])
    return invert_transform(T @ base_from_cam)


def render_preview(out_png: str | Path, seed: int = 0, width: int = 400, height: int = 300,
                   conditions: Sequence[str] | None = None) -> Path:
    """Save a grid of every condition seen from the same pose, plus that view's depth, as PNG."""
    import cv2
    conditions = list(conditions or (MAPPING_CONDITION, *QUERY_CONDITIONS))
    world = generate_world(seed)
    camera = PinholeCamera.from_fov(width, height, 61.0)
    pose = preview_pose(world, base_from_camera())
    tiles, depth = [], None
    for name in conditions:
        rgb, depth = render(world, name, camera, pose)
        tiles.append(_label(rgb, name + (" - mapping" if name == MAPPING_CONDITION else " - query")))
    if depth is not None:
        finite = np.isfinite(depth)
        # Log depth from 2 m (bright) to 150 m (dark); sky black.
        t = np.zeros_like(depth)
        t[finite] = 1.0 - np.clip(np.log(np.maximum(depth[finite], 2.0) / 2.0) / np.log(75.0), 0, 1)
        vis = cv2.applyColorMap((t * 255).astype(np.uint8), cv2.COLORMAP_MAGMA)[..., ::-1]
        vis[~finite] = 0
        tiles.append(_label(np.ascontiguousarray(vis), "depth, log scale 2-150 m"))
    cols = 3
    while len(tiles) % cols:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.concatenate(tiles[i:i + cols], 1) for i in range(0, len(tiles), cols)]
    grid = np.concatenate(rows, 0)
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out_png), grid[..., ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 9])
    return out_png


def _label(rgb: np.ndarray, text: str) -> np.ndarray:
    """Write ``text`` in white on a dark band in the top-left corner."""
    import cv2
    img = np.ascontiguousarray(rgb.copy())
    scale = max(0.45, img.shape[1] / 700)
    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    band = img[: h + base + 10, : w + 12].astype(np.float32)
    img[: h + base + 10, : w + 12] = (band * 0.45).astype(np.uint8)
    cv2.putText(img, text, (6, h + 5), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return img
