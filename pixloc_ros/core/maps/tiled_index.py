"""``TiledMapIndex``: retrieval over a tiled map (``core/maps/tiles.py``) behind ``MapIndex``'s interface.

Everything about keyframes (nearest keyframes, distance to the map, lifting RViz's 2D pose,
markers, GNSS) answers from the index, which holds every keyframe of the city (~130 bytes each).
Observations and points come from the tiles a ``TileLoader`` keeps open around the vehicle: a
keyframe whose tile is not loaded (still loading, evicted, damaged) is not "usable", so
retrieval picks the nearest usable keyframes and never waits for a file. Every ``retrieve``
tells the loader where the prior is, so the tiles ahead are opened before the car reaches them.
With the wanted tiles loaded, retrieval returns exactly what the one-file map of the same
keyframes returns (a test checks this along a drive across tile boundaries).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pixloc_ros.core.geometry.transforms import as_transform
from pixloc_ros.core.maps.mapfile_format import MapCorruptedError
from pixloc_ros.core.maps.mapfile import MapFile
from pixloc_ros.core.maps.retrieval import MapIndex, Retrieval, RetrievalConfig
from pixloc_ros.core.maps.point_table import PointTable
from pixloc_ros.core.maps.tile_loader import TileHealth, TileLoader, TileLoaderConfig
from pixloc_ros.core.maps.tiles import TiledMap, TileError, open_tiled_map


class TiledMapIndex(MapIndex):
    """A tiled map opened for retrieval; build with ``TiledMapIndex.open(folder, fingerprint)``.

    ``loader``: the ``TileLoader`` (``start_loader=False`` leaves its thread unstarted; tests then
    call ``loader.wait_idle()``, which loads synchronously).
    """

    def __init__(self, tiled: TiledMap, loader_config: TileLoaderConfig | None = None, start_loader: bool = True,
                 on_tile_error=None):
        self.tiled = tiled
        self.map = tiled.index  # keyframe arrays, header facts (fingerprint, georef, cameras, names)
        self.path = tiled.folder
        self._init_keyframes(tiled.index, tiled.keyframe_has_observations)
        self._keyframe_tile = tiled.keyframe_tile
        self._keyframe_local = tiled.keyframe_local
        # Track-length thresholds retrieval asked for: the loader computes their masks for every
        # tile before publishing it (a new threshold is computed once per loaded tile, then ahead).
        self._track_thresholds = {RetrievalConfig().min_track_length}
        self.loader = TileLoader(tiled, loader_config, on_error=on_tile_error, start=start_loader,
                                 prepare=self._prepare_tile)

    def _prepare_tile(self, tile: MapFile) -> PointTable:
        """On the loader thread, before ``tile`` is served: its point table with the track-length
        masks, so that the first retrieval from a tile costs what any other does."""
        table = PointTable.of(tile)
        for threshold in tuple(self._track_thresholds):
            table.track_ok(threshold)
        return table

    @classmethod
    def open(cls, path: str | Path, expected_fingerprint: str | None = None, verify: bool = False,
             loader_config: TileLoaderConfig | None = None, start_loader: bool = True,
             expected_profile: str | None = None) -> "TiledMapIndex":
        """Open the tiled map folder ``path`` (the index's checks, weights and engine profile as
        ``mapfile.open_map``; ``verify`` also opens and checks every tile now, reading all of them)."""
        tiled = open_tiled_map(path, expected_fingerprint, expected_profile)
        if verify:
            tiled.verify()
        return cls(tiled, loader_config, start_loader)

    @property
    def num_points(self) -> int:
        """Distinct points over all tiles."""
        return self.tiled.num_points

    @property
    def num_tiles(self) -> int:
        return len(self.tiled.entries)

    # ---- where observations come from -------------------------------------------------------
    def _usable(self, idx: np.ndarray) -> np.ndarray:
        return self._has_observations[idx] & self.loader.ready_mask[self._keyframe_tile[idx]]

    def _keyframe_blocks(self, kf: np.ndarray):
        out = []
        for i in kf:
            number = int(self._keyframe_tile[i])
            ready = self.loader.get(number)
            if ready is None:  # evicted since nearest_keyframes looked
                out.append(None)
                continue
            tile, table = ready
            try:
                out.append((tile.keyframe_observations(int(self._keyframe_local[i])), table))
            except MapCorruptedError as err:  # only without the loader's verify: drop the tile, serve the rest
                self.loader.fail(self.tiled.entries[number].key, str(err))
                out.append(None)
        return out

    def verify(self) -> list[str]:
        """Start-up check of a tiled map: the index was checked on open; here every tile file is
        opened and its header and small arrays checked (not its observations: gigabytes for a
        city, checked when the tile loads). A bad tile is reported and skipped like one that
        fails to load, not a start-up error: the rest of the map serves. Returns the messages."""
        problems = []
        for entry in self.tiled.entries:
            try:
                self.tiled.open_tile(entry.key, verify=False).close()
            except TileError as err:
                self.loader.fail(entry.key, str(err))
                problems.append(str(err))
        return problems

    def retrieve(self, cam_from_world, **kwargs) -> Retrieval:
        """As ``MapIndex.retrieve``; also tells the loader where the prior is (it loads ahead)."""
        T = as_transform(cam_from_world)
        self.loader.observe(-T[:3, :3].T @ T[:3, 3])
        threshold = kwargs.get("min_track_length", (kwargs.get("config") or RetrievalConfig()).min_track_length)
        if threshold not in self._track_thresholds:
            self._track_thresholds = self._track_thresholds | {threshold}  # replaced: the loader iterates a copy
        return super().retrieve(T, **kwargs)

    def prefetch(self, position) -> None:
        self.loader.prefetch(position)

    def unavailable_reason(self, position) -> str | None:
        """Which tiles near ``position`` are not serving (loading or failed), or None."""
        r = self.loader.config.load_radius_m
        near = [key for key in self.tiled.grid.keys_within(np.asarray(position, np.float64), min(r, 50.0))
                if key in self.tiled.tiles]
        pending = set(self.loader.pending())
        waiting = [k for k in near if k in pending]
        failed = [f for k in near if (f := self.loader.failure(k)) is not None]
        parts = []
        if waiting:
            parts.append(f"map tiles {', '.join(map(str, waiting))} still loading")
        if failed:
            parts.append("; ".join(f.message for f in failed))
        return "; ".join(parts) or None

    def health(self) -> TileHealth:
        return self.loader.health()

    def close(self) -> None:
        self.loader.close()
        self.tiled.close()
