"""The map points one frame is optimised against: retrieval around its initial poses, merged over
keyframes and subsampled to a bound (the LM's cost grows with the rows).
"""
from __future__ import annotations

import numpy as np
import torch

from ..engine.query_points import QueryPoints
from ..geometry.camera import Camera
from ..maps.retrieval import MapIndex, RetrievalConfig


def frame_points(index: MapIndex, config: RetrievalConfig, starts_map_from_cam: list[np.ndarray], camera: Camera,
                 stamp_ns: int, tracking: bool, max_points: int, seed: int) -> tuple[QueryPoints, list[int]]:
    """Reference rows for a frame's initial poses ((4, 4) ``map_from_cam`` each) and the keyframe ids
    they come from.

    While tracking: the first (committed) pose's retrieval of ``config.num_keyframes`` only, so that
    the tracked pose is optimised on the points it would have alone (on one measured frame the
    points a challenger's keyframes added moved the tracked result from 0.04 m to 0.52 m off) and
    the challengers are judged on the same points; while relocalizing: the union of every pose's
    retrieval of half as many. More than ``max_points`` rows: a random subset, deterministic per
    ``seed`` and frame stamp.
    """
    half = RetrievalConfig(**{**config.__dict__, "num_keyframes": max(1, config.num_keyframes // 2)})
    if tracking:
        starts_map_from_cam = starts_map_from_cam[:1]
    parts, keyframes, seen = [], [], set()
    for map_from_cam in starts_map_from_cam:
        r = index.retrieve(np.linalg.inv(map_from_cam), camera=camera, config=config if tracking else half)
        new = [j for j, kf in enumerate(r.keyframe_ids) if int(kf) not in seen]
        if not new:
            continue
        keep = torch.isin(r.points.keyframe_ids, torch.as_tensor(r.keyframe_ids[new]))
        parts.append(r.points.select(keep))
        for j in new:
            seen.add(int(r.keyframe_ids[j]))
            keyframes.append(int(r.keyframe_ids[j]))
    if not parts:
        return QueryPoints(torch.zeros(0, 3), [torch.zeros(0, lv.dim) for lv in index.levels],
                           [torch.zeros(0)] * 3, torch.zeros(0, dtype=torch.int64),
                           torch.zeros(0, dtype=torch.int64)), []
    points = parts[0] if len(parts) == 1 else QueryPoints(
        torch.cat([p.xyz for p in parts]), [torch.cat([p.features[l] for p in parts]) for l in range(3)],
        [torch.cat([p.confidences[l] for p in parts]) for l in range(3)],
        torch.cat([p.point_ids for p in parts]), torch.cat([p.keyframe_ids for p in parts]))
    if len(points) > max_points:
        gen = torch.Generator().manual_seed(seed * 1_000_003 + stamp_ns % 1_000_000_007)
        points = points.select(torch.randperm(len(points), generator=gen)[:max_points].sort().values)
    return points, keyframes


__all__ = ["frame_points"]
