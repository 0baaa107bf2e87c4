"""Tiled maps: a city-scale map split by position into tiles, each an ordinary map file.

A one-file map (``core/maps/mapfile.py``) is memory-mapped whole; a city holds tens of millions of
points, and a car needs the few hundred metres around it. A tiled map is a folder::

    <folder>/index.pxmap                        every keyframe (poses, cameras, names), the tile
                                                table and the grid; no points, no observations
    <folder>/tiles/tile_+0003_-0012.pxmap       one map file per tile (format of core/maps/mapfile.py)

Tiles are squares of ``size_m`` on the map's x-y plane (z is up in imported and synthetic maps):
tile (i, j) holds the keyframes whose camera centre lies in ``[x0 + i s, x0 + (i + 1) s) x
[y0 + j s, y0 + (j + 1) s)``, all their observations, and a copy of every point they observe
(with its SfM id, so a point seen from two tiles has a row in each and the same id). A frame at
a boundary retrieves keyframes from both tiles, each with its own tile's points.

The index is a map file too (so it gets the same checks: header sha256, CRC-32 of the keyframe
arrays), whose keyframes carry no observations and whose header's ``compile_info["tiled_map"]``
holds the grid and, per tile, its file, its rows in the index, its counts and the sha256 of the
inputs it was built from. Index rows are grouped by tile, in the tile's own keyframe order. A
tile file is checked against its entry when it is opened (same keyframe ids, same inputs
digest, same weights), so a stale or foreign file is reported rather than served. A tile file is
also a valid one-file map of its area.

``TiledMapWriter`` writes tiles one at a time (each atomically, via the map writer's
``.partial`` file), skips tiles whose file already holds the same inputs (resumable builds), and
writes the index last from the tile files themselves.
"""
from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from pixloc_ros.core.maps.mapfile_format import (KEYFRAME_ARRAYS, KeyframeRecord, MapFileError, MapHeader,
    Observations, keyframe_arrays_of)
from pixloc_ros.core.maps.mapfile import MapFile, open_map
from pixloc_ros.core.maps.mapfile_writer import MapWriter

INDEX_NAME = "index.pxmap"
TILES_DIR = "tiles"
TILED_FORMAT = 1  # version of the "tiled_map" header entries
TileKey = tuple[int, int]


class TileError(MapFileError):
    """One tile cannot be used (missing, damaged, or not built for this index)."""

    def __init__(self, key: TileKey, message: str):
        super().__init__(message)
        self.key = key


@dataclass(frozen=True)
class TileGrid:
    """Square tiles of ``size_m`` metres on the map's x-y plane, tile (0, 0) starting at ``origin_xy``."""

    size_m: float
    origin_xy: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self):
        if not (self.size_m > 0 and math.isfinite(self.size_m)):
            raise ValueError(f"tile size must be a positive number of metres, got {self.size_m}")

    def keys_of(self, xy: np.ndarray) -> np.ndarray:
        """(N, 2) int64 tile keys of positions ``xy`` (N, 2+) (only x and y are used)."""
        xy = np.asarray(xy, np.float64).reshape(-1, np.shape(xy)[-1])[:, :2]
        return np.floor((xy - np.asarray(self.origin_xy)) / self.size_m).astype(np.int64)

    def key_of(self, xy) -> TileKey:
        """The tile holding position ``xy`` (2+,)."""
        i, j = self.keys_of(np.asarray(xy, np.float64).reshape(1, -1))[0]
        return int(i), int(j)

    def distance(self, key: TileKey, xy) -> float:
        """Metres from ``xy`` (2+,) to the nearest point of tile ``key`` (0 inside it)."""
        lo = np.asarray(self.origin_xy) + np.asarray(key, np.float64) * self.size_m
        p = np.asarray(xy, np.float64)[:2]
        d = np.maximum(np.maximum(lo - p, p - (lo + self.size_m)), 0.0)
        return float(math.hypot(d[0], d[1]))

    def keys_within(self, xy, radius_m: float) -> list[TileKey]:
        """Tiles whose square comes within ``radius_m`` of ``xy`` (2+,), nearest first (ties by key)."""
        p = np.asarray(xy, np.float64)[:2]
        (i0, j0), (i1, j1) = self.keys_of(np.stack([p - radius_m, p + radius_m]))
        i, j = np.arange(i0, i1 + 1), np.arange(j0, j1 + 1)
        lo_x, lo_y = self.origin_xy[0] + i * self.size_m, self.origin_xy[1] + j * self.size_m
        dx = np.maximum(np.maximum(lo_x - p[0], p[0] - (lo_x + self.size_m)), 0.0)
        dy = np.maximum(np.maximum(lo_y - p[1], p[1] - (lo_y + self.size_m)), 0.0)
        d = np.hypot(dx[:, None], dy[None, :]).reshape(-1)
        ii, jj = np.repeat(i, len(j)), np.tile(j, len(i))
        order = np.lexsort((jj, ii, d))
        order = order[d[order] <= radius_m]
        return list(zip(ii[order].tolist(), jj[order].tolist()))


def tile_file_name(key: TileKey) -> str:
    """Path of tile ``key``'s file relative to the map folder, e.g. ``tiles/tile_+0003_-0012.pxmap``."""
    return f"{TILES_DIR}/tile_{key[0]:+05d}_{key[1]:+05d}.pxmap"


@dataclass(frozen=True)
class TileEntry:
    """One tile as the index lists it."""

    key: TileKey
    file: str  # relative to the map folder
    keyframe_rows: tuple[int, int]  # rows [start, stop) of the index that are this tile's keyframes
    num_points: int
    num_observations: int
    inputs_sha256: str  # digest of what the tile was built from (see TiledMapWriter.write_tile)
    file_size: int = 0

    def to_json(self) -> dict:
        return {"key": list(self.key), "file": self.file, "keyframe_rows": list(self.keyframe_rows),
                "num_points": self.num_points, "num_observations": self.num_observations,
                "inputs_sha256": self.inputs_sha256, "file_size": self.file_size}

    @classmethod
    def from_json(cls, d: dict) -> "TileEntry":
        return cls((int(d["key"][0]), int(d["key"][1])), str(d["file"]),
                   (int(d["keyframe_rows"][0]), int(d["keyframe_rows"][1])), int(d["num_points"]),
                   int(d["num_observations"]), str(d["inputs_sha256"]), int(d.get("file_size", 0)))


def _tiling_info(mapfile: MapFile) -> dict | None:
    info = mapfile.header.compile_info.get("tiled_map")
    return info if isinstance(info, dict) else None


def is_tiled_map(path: str | Path) -> bool:
    """True for a tiled map folder (or its index file)."""
    path = Path(path)
    return (path.is_dir() and (path / INDEX_NAME).is_file()) or (path.is_file() and path.name == INDEX_NAME)


class TiledMap:
    """An opened tiled map: the index (a ``MapFile`` with every keyframe), the grid and the tile table.

    Tiles are opened on demand with ``open_tile`` (the loader does so in the background).
    Attributes: ``folder``, ``index``, ``grid``, ``entries`` (list, index order), ``tiles``
    (key -> entry), ``keyframe_tile`` (K,) entry number of each index row, ``keyframe_local``
    (K,) row of each keyframe in its tile file, ``keyframe_has_observations`` (K,) bool,
    ``num_points`` (distinct point ids over all tiles), ``num_observations``.
    """

    def __init__(self, folder: Path, index: MapFile):
        self.folder = folder
        self.index = index
        info = _tiling_info(index)
        if info is None or info.get("role") != "index":
            raise MapFileError(f"{index.path} is not the index of a tiled map (no tiled_map entry in its header)")
        if int(info.get("format", -1)) != TILED_FORMAT:
            raise MapFileError(f"{index.path}: tiled map format {info.get('format')}, this pixloc_ros reads "
                               f"{TILED_FORMAT}: rebuild it with `pixloc-ros build-map --tile-size ...`")
        try:
            self.grid = TileGrid(float(info["tile_size_m"]), tuple(float(v) for v in info["origin_xy"]))
            self.entries = [TileEntry.from_json(e) for e in info["tiles"]]
            self.num_points = int(info["num_points"])
            self.num_observations = int(info["num_observations"])
            empty = np.asarray(info.get("empty_keyframes", []), np.int64)
        except (KeyError, TypeError, ValueError, IndexError) as err:
            raise MapFileError(f"{index.path}: malformed tile table ({err!r})") from err
        self.tiles = {e.key: e for e in self.entries}
        num_kf = index.num_keyframes
        self.keyframe_tile = np.full(num_kf, -1, np.int64)
        self.keyframe_local = np.zeros(num_kf, np.int64)
        start = 0
        for n, e in enumerate(self.entries):
            a, b = e.keyframe_rows
            if a != start or b < a or b > num_kf or Path(e.file).is_absolute() or ".." in Path(e.file).parts:
                raise MapFileError(f"{index.path}: tile {e.key} lists rows {e.keyframe_rows} / file {e.file!r}; "
                                   "tile rows must partition the index in order, files lie inside the folder")
            self.keyframe_tile[a:b] = n
            self.keyframe_local[a:b] = np.arange(b - a)
            start = b
        if start != num_kf or len(self.tiles) != len(self.entries):
            raise MapFileError(f"{index.path}: the tile table covers {start} of {num_kf} keyframes")
        self.keyframe_has_observations = np.ones(num_kf, bool)
        self.keyframe_has_observations[empty[(empty >= 0) & (empty < num_kf)]] = False

    def tile_path(self, key: TileKey) -> Path:
        return self.folder / self.tiles[key].file

    def open_tile(self, key: TileKey, verify: bool = True) -> MapFile:
        """Open tile ``key``'s file and check it against the index (and, with ``verify``, every
        observation now, by reading the file). Raises TileError with the file and the reason."""
        entry = self.tiles[key]
        path = self.folder / entry.file
        try:
            tile = open_map(path, expected_fingerprint=self.index.weights_fingerprint,
                            expected_profile=self.index.header.profile_name)
        except FileNotFoundError as err:
            raise TileError(key, f"map tile {key} is missing: {err}") from err
        except (MapFileError, OSError) as err:
            raise TileError(key, f"map tile {key} is unusable: {err}") from err
        try:
            info = _tiling_info(tile) or {}
            a, b = entry.keyframe_rows
            problem = None
            if info.get("role") != "tile" or tuple(info.get("key", ())) != key:
                problem = f"its header says it is {info.get('role')} {info.get('key')}"
            elif info.get("inputs_sha256") != entry.inputs_sha256:
                problem = "it was built from other inputs than the index lists (a stale or foreign file)"
            elif tile.num_keyframes != b - a or not np.array_equal(tile.keyframe_ids, self.index.keyframe_ids[a:b]):
                problem = "its keyframes differ from the index's"
            elif tile.levels != self.index.levels:
                problem = f"its levels {tile.levels} differ from the index's {self.index.levels}"
            if problem:
                raise TileError(key, f"map tile {key} ({path}) does not belong to this map: {problem}; rebuild the map "
                                     f"(`pixloc-ros build-map ... --tile-size {self.grid.size_m:g}`)")
            if verify:  # by reading: the retrieval thread's page tables stay small (tile_loader.py)
                tile.verify_by_reading()
        except TileError:
            tile.close()
            raise
        except MapFileError as err:
            tile.close()
            raise TileError(key, f"map tile {key} is unusable: {err}") from err
        return tile

    def verify(self, progress: bool = False) -> None:
        """Open and check every tile now (reads everything); TileError on the first bad one."""
        keys = [e.key for e in self.entries]
        if progress:
            from tqdm import tqdm
            keys = tqdm(keys, desc="verify tiles", unit="tile")
        for key in keys:
            self.open_tile(key, verify=True).close()

    def close(self) -> None:
        self.index.close()


def open_tiled_map(path: str | Path, expected_fingerprint: str | None = None,
                   expected_profile: str | None = None) -> TiledMap:
    """Open the tiled map in folder ``path`` (or its ``index.pxmap``) without opening any tile.

    The index gets every check of ``mapfile.open_map`` (WeightsMismatchError when built with other
    weights, a mismatch of the engine profile); tiles are checked when opened (against the index).
    """
    path = Path(path)
    folder = path.parent if path.is_file() else path
    if not (folder / INDEX_NAME).is_file():
        raise FileNotFoundError(f"no tiled map at {folder} (no {INDEX_NAME})")
    return TiledMap(folder, open_map(folder / INDEX_NAME, expected_fingerprint, expected_profile=expected_profile))


@dataclass
class TileSummary:
    """What ``TiledMapWriter.finish`` wrote."""

    folder: Path
    num_tiles: int
    num_keyframes: int
    num_points: int  # distinct point ids
    num_point_rows: int  # rows over all tiles (points near boundaries have one per tile)
    num_observations: int
    reused_tiles: int  # tiles whose file already held the same inputs
    bytes: int  # all files of the map
    largest_tile_bytes: int


class TiledMapWriter:
    """Writes a tiled map into ``folder``: ``write_tile`` per tile (any order, any process, each
    file atomic), ``finish`` for the index.

    ``header``: the fields every tile shares (weights fingerprint, encoder, levels, the camera
    list all ``camera_index`` values refer to, georeference, compile info); its keyframe names
    are ignored. Tiles already in the folder whose inputs digest matches are reused
    (``is_current``): a build interrupted after some tiles resumes where it stopped.
    """

    def __init__(self, folder: str | Path, grid: TileGrid, header: MapHeader):
        self.folder = Path(folder)
        self.grid = grid
        self.header = header
        if self.folder.exists() and not self.folder.is_dir():
            raise FileExistsError(f"{self.folder} exists and is not a folder (a tiled map is a folder)")
        (self.folder / TILES_DIR).mkdir(parents=True, exist_ok=True)

    def tile_path(self, key: TileKey) -> Path:
        return self.folder / tile_file_name(key)

    def is_current(self, key: TileKey, inputs_sha256: str) -> bool:
        """True when tile ``key``'s file exists, is intact and was built from these inputs and weights."""
        path = self.tile_path(key)
        if not path.is_file():
            return False
        try:
            tile = open_map(path, expected_fingerprint=self.header.weights_fingerprint)
        except (MapFileError, OSError):
            return False
        try:
            info = _tiling_info(tile) or {}
            return (info.get("role") == "tile" and tuple(info.get("key", ())) == key
                    and info.get("inputs_sha256") == inputs_sha256 and tile.levels == self.header.levels)
        finally:
            tile.close()

    def write_tile(self, key: TileKey, inputs_sha256: str, point_arrays: dict[str, np.ndarray],
                   keyframes: Iterable[tuple[KeyframeRecord, Observations]], compile_info: dict | None = None) -> Path:
        """Write tile ``key``: ``keyframes`` yields (record, observations) in order, observation
        ``point_index`` being rows of ``point_arrays`` (``POINT_ARRAYS`` of this tile).
        ``inputs_sha256`` identifies the inputs (``inputs_digest``); ``compile_info`` is stored
        in the tile's header. Returns the file's path."""
        records = []
        path = self.tile_path(key)
        with MapWriter(path, self.header.levels) as writer:
            for record, obs in keyframes:
                writer.add_keyframe_observations(obs)
                records.append(record)
            info = {**self.header.compile_info, **(compile_info or {}),
                    "tiled_map": {"role": "tile", "format": TILED_FORMAT, "key": list(key),
                                  "tile_size_m": self.grid.size_m, "origin_xy": list(self.grid.origin_xy),
                                  "inputs_sha256": inputs_sha256}}
            header = replace(self.header, keyframe_names=[r.name for r in records], compile_info=info)
            return writer.finish(header, keyframe_arrays_of(records), point_arrays)

    def finish(self, keys: Iterable[TileKey], compile_info: dict | None = None, reused: int = 0) -> TileSummary:
        """Write the index over the tiles ``keys`` (each written or reused before), reading their
        keyframes back from the tile files. Returns a TileSummary."""
        keys = sorted(set(keys))
        if not keys:
            raise ValueError("a tiled map needs at least one tile")
        entries, names, arrays, empty, point_ids = [], [], {k: [] for k in KEYFRAME_ARRAYS}, [], []
        start = num_obs = rows_total = largest = 0
        for key in keys:
            path = self.tile_path(key)
            tile = open_map(path, expected_fingerprint=self.header.weights_fingerprint)
            try:
                info = _tiling_info(tile) or {}
                if info.get("role") != "tile" or tuple(info.get("key", ())) != key:
                    raise MapFileError(f"{path} is not tile {key} of this map")
                n = tile.num_keyframes
                names += tile.header.keyframe_names
                for name in arrays:
                    arrays[name].append(np.array(getattr(tile, name)))
                counts = np.diff(np.asarray(tile.keyframe_obs_offsets))
                empty += (start + np.flatnonzero(counts == 0)).tolist()
                point_ids.append(np.array(tile.point_ids))
                size = path.stat().st_size
                entries.append(TileEntry(key, tile_file_name(key), (start, start + n), tile.num_points,
                                         tile.num_observations, str(info["inputs_sha256"]), size))
                start += n
                num_obs += tile.num_observations
                rows_total += tile.num_points
                largest = max(largest, size)
            finally:
                tile.close()
        num_points = int(len(np.unique(np.concatenate(point_ids))))
        info = {**self.header.compile_info, **(compile_info or {}),
                "tiled_map": {"role": "index", "format": TILED_FORMAT, "tile_size_m": self.grid.size_m,
                              "origin_xy": list(self.grid.origin_xy), "num_points": num_points,
                              "num_observations": num_obs, "empty_keyframes": empty,
                              "tiles": [e.to_json() for e in entries]}}
        header = replace(self.header, keyframe_names=names, compile_info=info)
        levels = self.header.levels
        no_obs = Observations(np.zeros(0, np.int32), np.zeros((0, 2), np.float32),
                              np.zeros((0, len(levels)), np.float16), [np.zeros((0, l.dim), np.float16) for l in levels])
        with MapWriter(self.folder / INDEX_NAME, levels) as writer:
            for _ in range(start):
                writer.add_keyframe_observations(no_obs)
            writer.finish(header, {k: np.concatenate(v) for k, v in arrays.items() if k != "keyframe_obs_crc32"},
                          {"point_ids": np.zeros(0, np.int64), "point_xyz": np.zeros((0, 3)),
                           "point_track_length": np.zeros(0, np.int32)})
        total = sum(e.file_size for e in entries) + (self.folder / INDEX_NAME).stat().st_size
        return TileSummary(self.folder, len(entries), start, num_points, rows_total, num_obs, reused, total, largest)


def inputs_digest(**parts) -> str:
    """sha256 over named parts (numpy arrays by dtype, shape and bytes; everything else as JSON):
    what identifies a tile's inputs, so a resumed build reuses only tiles built from the same."""
    h = hashlib.sha256()
    for name in sorted(parts):
        value = parts[name]
        h.update(name.encode() + b"\0")
        if isinstance(value, np.ndarray):
            value = np.ascontiguousarray(value)
            h.update(f"{value.dtype.str}{value.shape}".encode())
            h.update(memoryview(value.reshape(-1).view(np.uint8)))
        else:
            h.update(json.dumps(value, sort_keys=True, default=str).encode())
        h.update(b"\0")
    return h.hexdigest()


def split_map(mapfile: MapFile, folder: str | Path, tile_size_m: float,
              origin_xy: tuple[float, float] = (0.0, 0.0), progress: bool = False) -> TileSummary:
    """Tile an existing one-file map without recomputing anything: every keyframe goes to the
    tile of its camera centre with its observations unchanged, every tile gets the points its
    keyframes observe (ids, positions, track lengths as in the map). Returns a TileSummary."""
    grid = TileGrid(tile_size_m, origin_xy)
    R, t = np.asarray(mapfile.keyframe_R), np.asarray(mapfile.keyframe_t)
    centers = -np.einsum("kji,kj->ki", R, t)
    keys = grid.keys_of(centers)
    writer = TiledMapWriter(folder, grid, mapfile.header)
    groups: dict[TileKey, list[int]] = {}
    for row, (i, j) in enumerate(keys):
        groups.setdefault((int(i), int(j)), []).append(row)
    items = sorted(groups.items())
    if progress:
        from tqdm import tqdm
        items = tqdm(items, desc="split map", unit="tile")
    source = mapfile.header.compile_info.get("created_utc", "")
    for key, rows in items:
        blocks = [mapfile.keyframe_observations(r) for r in rows]
        used = np.unique(np.concatenate([b.point_index for b in blocks])) if blocks else np.zeros(0, np.int64)
        points = {"point_ids": np.asarray(mapfile.point_ids)[used], "point_xyz": np.asarray(mapfile.point_xyz)[used],
                  "point_track_length": np.asarray(mapfile.point_track_length)[used]}
        digest = inputs_digest(source=source, fingerprint=mapfile.weights_fingerprint, key=list(key),
                               keyframe_ids=np.asarray(mapfile.keyframe_ids)[rows], point_ids=points["point_ids"])

        def keyframes(rows=rows, blocks=blocks, used=used):
            for r, b in zip(rows, blocks):
                local = np.searchsorted(used, b.point_index).astype(np.int32)
                yield (KeyframeRecord.of_map(mapfile, r),
                       Observations(local, b.uv, b.confidence, list(b.features)))

        writer.write_tile(key, digest, points, keyframes())
    return writer.finish(groups, {"split_from": str(mapfile.path)})
