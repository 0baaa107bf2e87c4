"""The map: COLMAP models in, compiled map files (reference features per keyframe) out, tiled
city maps loaded around the vehicle, and retrieval of the keyframes and points near a pose.
Imports ``core.geometry`` and ``core.engine``; ``colmap_io`` is the only module that imports pycolmap.

Public API (imported on first use):
- ``read_model``, ``write_model``, ``SfmModel``: ``colmap_io``;
- ``open_map``, ``MapFile``: ``mapfile`` (the reader, memory-mapped; ``mapfile_format``: the format and
  its errors, ``MapFileError``; ``mapfile_writer``: the writer);
- ``compile_map``, ``compile_tiled_map``: ``compile`` (steps in ``compile_keyframes``, ``compile_tiles``;
  ``compile_ray``: on Ray); ``CompileConfig``: ``compile_keyframes``;
- ``open_tiled_map``, ``TiledMap``, ``is_tiled_map``: ``tiles``; ``TileLoaderConfig``: ``tile_loader``;
- ``open_map_index``: ``open_index``; ``MapIndex``, ``RetrievalConfig``, ``Retrieval``: ``retrieval``.
"""
from pixloc_ros.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "read_model": "colmap_io", "write_model": "colmap_io", "SfmModel": "colmap_io",
    "open_map": "mapfile", "MapFile": "mapfile", "MapFileError": "mapfile_format",
    "compile_map": "compile", "compile_tiled_map": "compile", "CompileConfig": "compile_keyframes",
    "open_tiled_map": "tiles", "TiledMap": "tiles", "is_tiled_map": "tiles",
    "TileLoaderConfig": "tile_loader",
    "open_map_index": "open_index", "MapIndex": "retrieval", "RetrievalConfig": "retrieval",
    "Retrieval": "retrieval",
})
