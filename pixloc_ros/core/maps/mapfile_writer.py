"""Writing a map file (format in ``mapfile``'s docstring): arrays streamed to ``<path>.partial`` at
aligned offsets with their CRC-32s, the JSON header and the preamble last, then an atomic rename,
so an interrupted compile never leaves a file that looks finished.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pixloc_ros.core.maps.mapfile_format import (CHUNK_BYTES, KEYFRAME_ARRAYS, LevelInfo, MAGIC, MapHeader, Observations,
    POINT_ARRAYS, PREAMBLE, PREAMBLE_SIZE, align_offset, array_crc32, observation_arrays)


class MapWriter:
    """Streams a map file: observations keyframe by keyframe, then the small arrays and header.

    Usage::

        with MapWriter(path, levels) as writer:
            for obs in per_keyframe:            # Observations of each keyframe, in keyframe order
                writer.add_keyframe_observations(obs)
            writer.finish(header, keyframe_arrays, point_arrays)

    Each observation field is spooled to its own temporary file beside ``path`` and copied
    into place by ``finish`` (the observation count is unknown until then). The map appears at
    ``path`` only after ``finish``; on an exception every temporary file is removed.
    """

    def __init__(self, path: str | Path, levels: list[LevelInfo]):
        self.path = Path(path)
        self.levels = list(levels)
        self.fields = observation_arrays(self.levels)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._partial = self.path.with_name(self.path.name + ".partial")
        self._spools = {name: open(self.path.with_name(f"{self.path.name}.partial.{name}"), "w+b")
                        for name in self.fields}
        self._offsets = [0]
        self._crcs: list[int] = []
        self._done = False

    def __enter__(self) -> "MapWriter":
        return self

    def __exit__(self, exc_type, exc, tb):
        if not self._done:
            self.abort()

    @property
    def num_observations(self) -> int:
        """Rows written so far."""
        return self._offsets[-1]

    def add_keyframe_observations(self, obs: Observations) -> None:
        """Append the observations of the next keyframe (dtypes and shapes of ``self.fields``)."""
        n = len(obs)
        crc = 0
        for (name, (dtype, tail)), values in zip(self.fields.items(), obs.arrays()):
            values = np.ascontiguousarray(values, dtype=dtype)
            if values.shape != (n, *tail):
                raise ValueError(f"{name} must have shape {(n, *tail)}, got {values.shape}")
            self._spools[name].write(memoryview(values.reshape(-1).view(np.uint8)))
            crc = array_crc32(values, crc)
        self._offsets.append(self._offsets[-1] + n)
        self._crcs.append(crc)

    def finish(self, header: MapHeader, keyframe_arrays: dict[str, np.ndarray],
               point_arrays: dict[str, np.ndarray]) -> Path:
        """Write everything to ``path``: the observation arrays, ``keyframe_arrays`` and
        ``point_arrays`` (names and dtypes of ``KEYFRAME_ARRAYS`` / ``POINT_ARRAYS``, except the
        CSR offsets and CRCs, which the writer owns), then the header. Returns the path."""
        num_kf = len(self._offsets) - 1
        num_obs = self._offsets[-1]
        num_points = len(point_arrays.get("point_ids", ()))
        if len(header.keyframe_names) != num_kf:
            raise ValueError(f"{len(header.keyframe_names)} keyframe names for {num_kf} keyframe blocks")
        if header.levels != self.levels:
            raise ValueError(f"header levels {header.levels} differ from the writer's {self.levels}")
        expected = {k: (v, num_kf) for k, v in KEYFRAME_ARRAYS.items() if k != "keyframe_obs_crc32"}
        expected.update({k: (v, num_points) for k, v in POINT_ARRAYS.items()})
        given = {**keyframe_arrays, **point_arrays}
        if set(given) != set(expected):
            raise ValueError(f"finish() needs arrays {sorted(expected)}, got {sorted(given)}")
        arrays = {"keyframe_obs_offsets": np.asarray(self._offsets, "<i8"),
                  "keyframe_obs_crc32": np.asarray(self._crcs, "<u4")}
        for name, ((dtype, tail), n) in expected.items():
            arr = np.ascontiguousarray(given[name], dtype=dtype)
            if arr.shape != (n, *tail):
                raise ValueError(f"array {name} must have shape {(n, *tail)}, got {arr.shape}")
            arrays[name] = arr

        table = {}
        with open(self._partial, "wb") as out:
            out.write(b"\0" * PREAMBLE_SIZE)  # the real preamble is written last
            for name, (dtype, tail) in self.fields.items():
                spool = self._spools[name]
                offset = align_offset(out.tell())
                out.seek(offset)
                spool.flush()
                spool.seek(0)
                shutil.copyfileobj(spool, out, CHUNK_BYTES)
                table[name] = {"dtype": dtype, "shape": [num_obs, *tail], "offset": offset,
                               "nbytes": out.tell() - offset, "crc32": None}  # checked per keyframe
            for name, arr in arrays.items():
                offset = align_offset(out.tell())
                out.seek(offset)
                out.write(memoryview(arr.reshape(-1).view(np.uint8)))
                table[name] = {"dtype": arr.dtype.str, "shape": list(arr.shape), "offset": offset,
                               "nbytes": arr.nbytes, "crc32": array_crc32(arr)}
            header_json = header.to_json()
            header_json.update(magic=MAGIC.decode("ascii").rstrip("\0"), arrays=table,
                               counts={"keyframes": num_kf, "points": num_points, "observations": num_obs})
            header_bytes = json.dumps(header_json, separators=(",", ":")).encode("utf-8")
            header_offset = out.tell()
            out.write(header_bytes)
            out.seek(0)
            out.write(PREAMBLE.pack(MAGIC, header.format_version, 0, header_offset, len(header_bytes),
                                    hashlib.sha256(header_bytes).digest()))
            out.flush()
            os.fsync(out.fileno())
        self._close_spools()
        os.replace(self._partial, self.path)
        self._done = True
        return self.path

    def _close_spools(self) -> None:
        for name, spool in self._spools.items():
            spool.close()
            Path(spool.name).unlink(missing_ok=True)

    def abort(self) -> None:
        """Delete the partial file and the spools."""
        self._close_spools()
        self._partial.unlink(missing_ok=True)
        self._done = True


@dataclass
class MapContents:
    """A whole map in memory (tests, synthetic benchmarks); ``write_map`` stores it."""

    header: MapHeader
    observations: list[Observations]  # K, in keyframe order
    keyframe_arrays: dict[str, np.ndarray]  # KEYFRAME_ARRAYS minus keyframe_obs_crc32
    point_arrays: dict[str, np.ndarray]  # POINT_ARRAYS


def contents_from_observations(header: MapHeader, keyframe_arrays: dict[str, np.ndarray],
                               point_arrays: dict[str, np.ndarray], obs_keyframe: np.ndarray,
                               obs_point_index: np.ndarray, features: list[np.ndarray], confidences: np.ndarray,
                               uv: np.ndarray | None = None) -> MapContents:
    """Group flat observation arrays by keyframe into ``MapContents``.

    obs_keyframe (M,) keyframe row of each observation; obs_point_index (M,) point row;
    features: per level (M, C_l); confidences (M, L); uv (M, 2) or None (zeros). Rows keep
    their order within a keyframe.
    """
    num_kf = len(header.keyframe_names)
    obs_keyframe = np.asarray(obs_keyframe)
    m = len(obs_keyframe)
    uv = np.zeros((m, 2)) if uv is None else np.asarray(uv)
    order = np.argsort(obs_keyframe, kind="stable")
    bounds = np.searchsorted(obs_keyframe[order], np.arange(num_kf + 1))
    blocks = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        rows = order[a:b]
        blocks.append(Observations(np.asarray(obs_point_index)[rows].astype(np.int32), uv[rows].astype(np.float32),
                                   np.asarray(confidences)[rows].astype(np.float16),
                                   [np.asarray(f)[rows].astype(np.float16) for f in features]))
    return MapContents(header, blocks, keyframe_arrays, point_arrays)


def write_map(path: str | Path, contents: MapContents) -> Path:
    """Write ``contents`` to ``path`` (atomically, via ``<path>.partial``); returns the path."""
    with MapWriter(path, contents.header.levels) as writer:
        for obs in contents.observations:
            writer.add_keyframe_observations(obs)
        return writer.finish(contents.header, contents.keyframe_arrays, contents.point_arrays)
