"""Open a map for retrieval, whatever its layout: one map file (``retrieval.MapIndex``) or a tiled
map folder (``tiled_index.TiledMapIndex``); both answer the same calls.
"""
from __future__ import annotations

from pathlib import Path

from .retrieval import MapIndex


def open_map_index(path: str | Path, expected_fingerprint: str | None = None, verify: bool = False,
                   expected_profile: str | None = None, tile_loader_config=None) -> MapIndex:
    """Open a map for retrieval: a map file (``MapIndex``) or a tiled map folder
    (``core.maps.tiled_index.TiledMapIndex``, whose loader thread starts; ``tile_loader_config`` is
    its ``TileLoaderConfig``). Both answer the same calls; see ``MapIndex.open`` for the checks."""
    from pixloc_ros.core.maps.tiles import is_tiled_map

    if is_tiled_map(path):
        from pixloc_ros.core.maps.tiled_index import TiledMapIndex
        return TiledMapIndex.open(path, expected_fingerprint, verify, tile_loader_config,
                                  expected_profile=expected_profile)
    return MapIndex.open(path, expected_fingerprint, verify, expected_profile)
