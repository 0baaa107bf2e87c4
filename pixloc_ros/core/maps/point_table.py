"""The point arrays of one map file that its observation rows index into, with the track-length
mask per threshold cached: shared by the single-file index (``retrieval``), the tile loader
(built on its thread) and the tiled index.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pixloc_ros.core.maps.mapfile import MapFile


@dataclass
class PointTable:
    """The point arrays of one map file (views into it) that observation rows index into."""

    xyz: np.ndarray  # (P, 3) float64, map frame, metres
    ids: np.ndarray  # (P,) int64 SfM point ids (the same point keeps its id in every tile)
    track_length: np.ndarray  # (P,) int32 SfM track length
    _track_ok: dict = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, mapfile: MapFile) -> "PointTable":
        return cls(mapfile.point_xyz, mapfile.point_ids, mapfile.point_track_length)

    def track_ok(self, min_track_length: int) -> np.ndarray:
        """(P,) bool: track length >= ``min_track_length``, cached per threshold."""
        ok = self._track_ok.get(min_track_length)
        if ok is None:
            ok = self._track_ok[min_track_length] = np.asarray(self.track_length) >= min_track_length
        return ok
