"""The compiled map file: reference features of every keyframe observation, memory-mapped.

A map is compiled once (``pixloc-ros build-map``) and opened by the node at start. Opening
must take seconds for a million points and cost memory only for what retrieval touches, so the
file is raw little-endian arrays that ``mmap`` exposes without reading, plus a JSON header.
Nothing in it is ever unpickled: the header is JSON, array dtypes are plain numpy type strings.

Layout (format version 1; all integers little-endian)::

    [0, 64)            preamble: magic b"PXLRMAP\\0" (8 bytes), format version (u32),
                       flags (u32, 0), header offset (u64), header length (u64),
                       sha256 of the header bytes (32 bytes)
    [64, ...)          arrays, each starting at a multiple of ALIGNMENT (64) bytes
    [header offset, end)  header: UTF-8 JSON, the last bytes of the file

The header holds the format version, weights fingerprint, encoder, levels (stride, channels),
cameras (COLMAP model and params, COLMAP pixel convention), keyframe names, georeference,
compile options, counts, and the array table (dtype, shape, byte offset, byte count, CRC-32 per
array). It sits at the end so the compiler can stream observations without knowing their number
beforehand. The file is written as ``<path>.partial`` and renamed when complete, so an
interrupted compile never leaves a file that looks finished.

Arrays (K keyframes, P points, M observations, L levels, C_l channels of level l). Observation
arrays are grouped by keyframe: keyframe i owns rows ``keyframe_obs_offsets[i]:[i+1]`` of each,
so retrieval copies a few contiguous slices (one array per field rather than one array of
records: numpy copies record fields ~7x slower than contiguous slices).

- ``obs_point_index`` (M,) i4: row in the point arrays.
- ``obs_uv`` (M, 2) f4: where the features were sampled, pixel-centre coordinates of the image
  the network saw (see ``keyframe_image_size``).
- ``obs_confidence`` (M, L) f2: reference confidence per level.
- ``obs_feature_<l>`` (M, C_l) f2: reference feature of level l, L2-normalised after
  interpolation.
- ``keyframe_ids`` (K,) i8: COLMAP image ids; ``keyframe_camera_index`` (K,) i4 into the
  header's cameras; ``keyframe_R`` (K, 3, 3) f8 and ``keyframe_t`` (K, 3) f8: ``cam_from_world``;
  ``keyframe_image_size`` (K, 2) i4: (width, height) the features were computed at;
  ``keyframe_obs_offsets`` (K + 1,) i8; ``keyframe_obs_crc32`` (K,) u4: CRC-32 of keyframe i's
  slices of the observation arrays, chained in the order above.
- ``point_ids`` (P,) i8; ``point_xyz`` (P, 3) f8 (map frame, metres);
  ``point_track_length`` (P,) i4 (observations in the SfM model, before any filtering).

Integrity, and why it is split this way: the header's sha256 and every size (truncation) are
checked on open, and so are the CRC-32s of the keyframe and point arrays (tens of MB for a
million points, ~10 ms). The observation arrays hold almost all the bytes (~600 per
observation, GBs for a large map); checking them on open would read the whole file, so each
keyframe's slices are checked against ``keyframe_obs_crc32`` the first time they are read
(``MapFile.keyframe_observations``: ~0.2 ms per 1000 observations, once per keyframe), and
``MapFile.verify()`` checks all of them up front. No unchecked row ever reaches the caller.
CRC-32 (zlib, ~3 GB/s here) guards against disk and transfer corruption, not tampering.
"""
from __future__ import annotations

import hashlib
import json
import mmap
import os
import shutil
import struct
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pixloc_ros.core.geometry.georef import Georeference

MAGIC = b"PXLRMAP\x00"
FORMAT_VERSION = 1
PREAMBLE = struct.Struct("<8sIIQQ32s")  # magic, version, flags, header offset, header length, sha256
PREAMBLE_SIZE = 64
ALIGNMENT = 64  # bytes; every array starts at a multiple (cache lines, SIMD loads)
_CHUNK = 64 << 20  # bytes per CRC step / copy step, to bound memory on huge arrays

# Keyframe and point arrays: (dtype, trailing shape); the leading dimension is K or P.
KEYFRAME_ARRAYS = {
    "keyframe_ids": ("<i8", ()),
    "keyframe_camera_index": ("<i4", ()),
    "keyframe_R": ("<f8", (3, 3)),
    "keyframe_t": ("<f8", (3,)),
    "keyframe_image_size": ("<i4", (2,)),
    "keyframe_obs_crc32": ("<u4", ()),
}
POINT_ARRAYS = {
    "point_ids": ("<i8", ()),
    "point_xyz": ("<f8", (3,)),
    "point_track_length": ("<i4", ()),
}


class MapFileError(ValueError):
    """A map file cannot be used; the message says why and what to do."""


class MapVersionError(MapFileError):
    """The file is a map in a format version this code does not read."""


class MapCorruptedError(MapFileError):
    """The file is truncated or its bytes do not match their checksums."""


class WeightsMismatchError(MapFileError):
    """The map's reference features were computed with other weights than the caller's."""


class ProfileMismatchError(MapFileError):
    """The map's reference features were sampled in another engine profile than the caller runs."""


@dataclass(frozen=True)
class LevelInfo:
    """One feature level: its stride in pixels and number of channels."""

    stride: int
    dim: int


@dataclass(frozen=True)
class MapCamera:
    """A keyframe camera as COLMAP stores it (model name, size, params; corner pixel origin)."""

    camera_id: int
    model: str
    width: int
    height: int
    params: tuple[float, ...]


@dataclass
class MapHeader:
    """What the JSON header holds besides the array table."""

    weights_fingerprint: str  # sha256 of the network's state dict (checkpoint.weights_fingerprint)
    encoder: str  # e.g. "vgg16"
    levels: list[LevelInfo]  # finest first
    cameras: list[MapCamera]
    keyframe_names: list[str]  # (K,) image names, same order as the keyframe arrays
    georef: Georeference | None = None
    compile_info: dict[str, Any] = field(default_factory=dict)  # options and statistics, JSON-able
    format_version: int = FORMAT_VERSION
    # The engine profile the reference features were sampled in (``EngineProfile.to_json()``);
    # None in maps written before profiles existed, which were all compiled the native way.
    engine_profile: dict[str, Any] | None = None

    @property
    def profile_name(self) -> str:
        """Name of the engine profile that compiled the map ("native" for maps that predate profiles)."""
        return str((self.engine_profile or {}).get("name", "native"))

    def to_json(self) -> dict:
        """JSON-able dict of this header (the array table is added by the writer)."""
        d = asdict(self)
        d["georef"] = asdict(self.georef) if self.georef is not None else None
        return d

    @classmethod
    def from_json(cls, d: dict) -> "MapHeader":
        """Inverse of ``to_json``; raises MapFileError naming a missing field."""
        try:
            return cls(
                weights_fingerprint=str(d["weights_fingerprint"]),
                encoder=str(d["encoder"]),
                levels=[LevelInfo(int(l["stride"]), int(l["dim"])) for l in d["levels"]],
                cameras=[MapCamera(int(c["camera_id"]), str(c["model"]), int(c["width"]), int(c["height"]),
                                   tuple(float(p) for p in c["params"])) for c in d["cameras"]],
                keyframe_names=[str(n) for n in d["keyframe_names"]],
                georef=Georeference(**d["georef"]) if d.get("georef") else None,
                compile_info=dict(d.get("compile_info", {})),
                format_version=int(d["format_version"]),
                engine_profile=dict(d["engine_profile"]) if d.get("engine_profile") else None,
            )
        except (KeyError, TypeError) as err:
            raise MapFileError(f"map header lacks or mangles field {err}") from err


@dataclass
class Observations:
    """N observation rows (of one keyframe, or gathered by retrieval), one array per field."""

    point_index: np.ndarray  # (N,) int32 rows in the map's point arrays
    uv: np.ndarray  # (N, 2) float32 sample positions, pixel centres of the network input
    confidence: np.ndarray  # (N, L) float16
    features: list[np.ndarray]  # L x (N, C_l) float16, unit norm

    def __len__(self) -> int:
        return len(self.point_index)

    def arrays(self) -> list[np.ndarray]:
        """The fields in file order (the order of the per-keyframe CRC)."""
        return [self.point_index, self.uv, self.confidence, *self.features]


@dataclass
class KeyframeRecord:
    """One keyframe row of the keyframe arrays (what a writer needs besides its observations)."""

    image_id: int  # COLMAP image id
    name: str
    R: np.ndarray  # (3, 3) float64, cam_from_world rotation
    t: np.ndarray  # (3,) float64, cam_from_world translation, metres
    camera_index: int  # into the header's cameras
    image_size: tuple[int, int]  # (width, height) the features were computed at

    @classmethod
    def of_map(cls, mapfile: "MapFile", row: int) -> "KeyframeRecord":
        """Keyframe ``row`` of an open map."""
        w, h = (int(v) for v in mapfile.keyframe_image_size[row])
        return cls(int(mapfile.keyframe_ids[row]), mapfile.header.keyframe_names[row],
                   np.array(mapfile.keyframe_R[row]), np.array(mapfile.keyframe_t[row]),
                   int(mapfile.keyframe_camera_index[row]), (w, h))


def keyframe_arrays_of(records: list[KeyframeRecord]) -> dict[str, np.ndarray]:
    """The keyframe arrays ``MapWriter.finish`` takes, from records in keyframe order."""
    return {"keyframe_ids": np.array([r.image_id for r in records], np.int64),
            "keyframe_camera_index": np.array([r.camera_index for r in records], np.int32),
            "keyframe_R": np.array([r.R for r in records], np.float64).reshape(-1, 3, 3),
            "keyframe_t": np.array([r.t for r in records], np.float64).reshape(-1, 3),
            "keyframe_image_size": np.array([r.image_size for r in records], np.int32).reshape(-1, 2)}


def observation_arrays(levels: list[LevelInfo]) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Observation array names -> (dtype, trailing shape), in file (and CRC) order."""
    arrays = {"obs_point_index": ("<i4", ()), "obs_uv": ("<f4", (2,)), "obs_confidence": ("<f2", (len(levels),))}
    arrays.update({f"obs_feature_{i}": ("<f2", (level.dim,)) for i, level in enumerate(levels)})
    return arrays


def _crc32(array: np.ndarray, crc: int = 0) -> int:
    """CRC-32 of an array's bytes (C order), chunked so a huge memmap is not held at once."""
    view = memoryview(np.ascontiguousarray(array).reshape(-1).view(np.uint8))
    for start in range(0, len(view), _CHUNK):
        crc = zlib.crc32(view[start:start + _CHUNK], crc)
    return crc


def file_identity(path_or_stat) -> tuple[int, int, int, int]:
    """(device, inode, size, mtime in ns) of a file (a path or an ``os.stat_result``): what tells
    that a file is still the one that was checked earlier (replaced or rewritten files differ)."""
    st = path_or_stat if isinstance(path_or_stat, os.stat_result) else os.stat(path_or_stat)
    return (int(st.st_dev), int(st.st_ino), int(st.st_size), int(st.st_mtime_ns))


def _align(offset: int) -> int:
    return -(-offset // ALIGNMENT) * ALIGNMENT


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
            crc = _crc32(values, crc)
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
                offset = _align(out.tell())
                out.seek(offset)
                spool.flush()
                spool.seek(0)
                shutil.copyfileobj(spool, out, _CHUNK)
                table[name] = {"dtype": dtype, "shape": [num_obs, *tail], "offset": offset,
                               "nbytes": out.tell() - offset, "crc32": None}  # checked per keyframe
            for name, arr in arrays.items():
                offset = _align(out.tell())
                out.seek(offset)
                out.write(memoryview(arr.reshape(-1).view(np.uint8)))
                table[name] = {"dtype": arr.dtype.str, "shape": list(arr.shape), "offset": offset,
                               "nbytes": arr.nbytes, "crc32": _crc32(arr)}
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


class MapFile:
    """An open, memory-mapped map. Arrays are read-only views into the file.

    Attributes: ``path``, ``header`` (MapHeader), ``num_keyframes``, ``num_points``,
    ``num_observations``, ``file_size``, and each array by name (``keyframe_R``, ``point_xyz``,
    ``obs_feature_1``, ...). Read observations through ``keyframe_observations(i)``, which
    checks a keyframe's slices on first use; the ``obs_*`` attributes are unchecked.
    """

    def __init__(self, path: Path, header: MapHeader, table: dict, mm: mmap.mmap, file_size: int,
                 identity: tuple[int, int, int, int] | None = None):
        self.path = path
        self.header = header
        self.file_size = file_size
        self.identity = identity  # file_identity of the file that was mapped (None: unknown)
        self._mm = mm
        self._table = table
        self._arrays: dict[str, np.ndarray] = {}
        for name, entry in table.items():
            dtype = np.dtype(entry["dtype"])
            shape = tuple(int(s) for s in entry["shape"])
            self._arrays[name] = np.frombuffer(mm, dtype=dtype, count=int(np.prod(shape)),
                                               offset=int(entry["offset"])).reshape(shape)
        self._obs_names = list(observation_arrays(header.levels))
        self.num_keyframes = len(self._arrays["keyframe_ids"])
        self.num_points = len(self._arrays["point_ids"])
        self.num_observations = len(self._arrays["obs_point_index"])
        self._verified = np.zeros(self.num_keyframes, bool)

    def __getattr__(self, name: str) -> np.ndarray:
        arrays = self.__dict__.get("_arrays", {})
        if name in arrays:
            return arrays[name]
        raise AttributeError(name)

    @property
    def levels(self) -> list[LevelInfo]:
        return self.header.levels

    @property
    def weights_fingerprint(self) -> str:
        return self.header.weights_fingerprint

    def keyframe_observations(self, index: int) -> Observations:
        """Observations (read-only views into the file) of keyframe row ``index``.

        The first call per keyframe checks the slices' CRC-32 (and that their point indices are
        in range) and raises MapCorruptedError on a mismatch; later calls only slice.
        """
        start, stop = int(self.keyframe_obs_offsets[index]), int(self.keyframe_obs_offsets[index + 1])
        slices = [self._arrays[name][start:stop] for name in self._obs_names]
        if not self._verified[index]:
            self._check_block(index, slices)
        return Observations(slices[0], slices[1], slices[2], slices[3:])

    def _check_block(self, index: int, slices: list[np.ndarray]) -> None:
        crc = 0
        for values in slices:
            crc = _crc32(values, crc)
        if crc != int(self.keyframe_obs_crc32[index]):
            raise MapCorruptedError(
                f"{self.path}: the observations of keyframe {self.header.keyframe_names[index]!r} are corrupted "
                f"(CRC-32 mismatch); the file is damaged: copy it again or rebuild it with pixloc-ros build-map")
        point_index = slices[0]
        if len(point_index) and (point_index.min() < 0 or point_index.max() >= self.num_points):
            raise MapCorruptedError(f"{self.path}: keyframe {index} references points outside the point table")
        self._verified[index] = True

    def verify(self, progress: bool = False) -> None:
        """Check every keyframe's observations now (reads the whole file); MapCorruptedError if any fails."""
        indices = range(self.num_keyframes)
        if progress:
            from tqdm import tqdm
            indices = tqdm(indices, desc="verify map", unit="keyframe")
        for i in indices:
            if not self._verified[i]:
                self.keyframe_observations(i)

    def verify_by_reading(self) -> None:
        """As ``verify``, but with file reads instead of through the mapping: the pages land in
        the page cache, not in this process's page tables, so checking a file neither grows the
        RSS by its size nor makes unmapping it later expensive (a background tile loader checks
        whole tiles while another thread retrieves). The checks are ``keyframe_observations``'."""
        fields = [(int(self._table[name]["offset"]), np.dtype(self._table[name]["dtype"]),
                   tuple(int(v) for v in self._table[name]["shape"][1:])) for name in self._obs_names]
        offsets = np.asarray(self.keyframe_obs_offsets)
        fd = os.open(self.path, os.O_RDONLY)
        try:
            if os.fstat(fd).st_size != self.file_size:
                raise MapCorruptedError(f"{self.path} changed size since it was opened (replaced or truncated)")
            for index in np.flatnonzero(~self._verified):
                a, b = int(offsets[index]), int(offsets[index + 1])
                slices = []
                for start, dtype, tail in fields:
                    row = dtype.itemsize * int(np.prod(tail))
                    data = os.pread(fd, (b - a) * row, start + a * row)
                    if len(data) != (b - a) * row:
                        raise MapCorruptedError(f"{self.path} is shorter than its header says (truncated?)")
                    slices.append(np.frombuffer(data, dtype).reshape(b - a, *tail))
                self._check_block(int(index), slices)
        finally:
            os.close(fd)

    def mark_checked(self, identity: tuple[int, ...]) -> None:
        """Take the observations as checked: another process ran ``verify`` on this file
        (``core/maps/tile_checker.py``) and saw ``identity`` (``file_identity``). MapCorruptedError,
        and nothing marked, if the mapped file is not that one (replaced or rewritten since)."""
        if self.identity is None or tuple(identity) != tuple(self.identity):
            raise MapCorruptedError(f"{self.path} changed between its check and its opening (replaced or "
                                    f"rewritten: {identity} then {self.identity}); it will be checked again")
        self._verified[:] = True

    @property
    def fully_verified(self) -> bool:
        """True once every keyframe's observations have been checked."""
        return bool(self._verified.all())

    def close(self) -> None:
        """Drop the views and unmap the file (views handed out before keep the mapping alive)."""
        self._arrays = {}
        try:
            self._mm.close()
        except BufferError:
            pass  # arrays handed to callers still reference the mapping; it closes with them


def _read_preamble(path: Path, f, file_size: int) -> tuple[int, int, bytes]:
    if file_size < PREAMBLE_SIZE:
        raise MapCorruptedError(f"{path}: {file_size} bytes is too short for a pixloc_ros map (truncated?)")
    magic, version, _flags, header_offset, header_len, digest = PREAMBLE.unpack(f.read(PREAMBLE.size))
    if magic != MAGIC:
        if magic == b"\0" * 8:
            raise MapCorruptedError(f"{path}: the file starts with zeros: an unfinished or damaged map")
        raise MapFileError(f"{path} is not a pixloc_ros map file (magic {magic!r}, expected {MAGIC!r})")
    if version != FORMAT_VERSION:
        hint = ("update pixloc_ros to read it" if version > FORMAT_VERSION else
                "rebuild it with `pixloc-ros build-map`")
        raise MapVersionError(f"{path} is map format version {version}, this pixloc_ros reads version "
                              f"{FORMAT_VERSION}: {hint}")
    if header_offset + header_len != file_size:
        raise MapCorruptedError(
            f"{path}: expected {header_offset + header_len} bytes, the file has {file_size}"
            f" ({'truncated' if file_size < header_offset + header_len else 'trailing bytes'}); "
            "copy it again or rebuild it with `pixloc-ros build-map`")
    return header_offset, header_len, digest


def open_map(path: str | Path, expected_fingerprint: str | None = None, verify: bool = False,
             expected_profile: str | None = None) -> MapFile:
    """Open a map file without reading its observations.

    Checks on open: magic, format version (MapVersionError), total size (truncation), header
    sha256, that every array lies inside the file with the size its dtype and shape imply, the
    CRC-32 of the keyframe and point arrays, the CSR offsets, and (if ``expected_fingerprint``
    is given) that the map was built with those weights (WeightsMismatchError naming both and
    how to rebuild), and (if ``expected_profile`` is given) that it was compiled in that engine
    profile (ProfileMismatchError). ``verify=True`` also checks all observations now (reads everything).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no map file at {path}")
    with open(path, "rb") as f:
        stat = os.fstat(f.fileno())
        file_size = stat.st_size
        header_offset, header_len, digest = _read_preamble(path, f, file_size)
        f.seek(header_offset)
        header_bytes = f.read(header_len)
        if hashlib.sha256(header_bytes).digest() != digest:
            raise MapCorruptedError(f"{path}: the header checksum does not match: the file is damaged; "
                                    "copy it again or rebuild it with `pixloc-ros build-map`")
        try:
            raw = json.loads(header_bytes.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise MapCorruptedError(f"{path}: unreadable header ({err})") from err
        if not isinstance(raw, dict):
            raise MapFileError(f"{path}: the header is not a JSON object")
        header = MapHeader.from_json(raw)
        table = raw.get("arrays")
        if not isinstance(table, dict):
            raise MapFileError(f"{path}: the header has no array table")
        if expected_fingerprint is not None and header.weights_fingerprint != expected_fingerprint:
            raise WeightsMismatchError(
                f"{path} was built with weights {header.weights_fingerprint}, but the network runs weights "
                f"{expected_fingerprint}: reference features only match the network that computed them. "
                f"Rebuild the map with `pixloc-ros build-map --colmap <model> --images <images> "
                f"--weights <the node's weights> --out {path}`")
        if expected_profile is not None and header.profile_name != expected_profile:
            raise ProfileMismatchError(
                f"{path} was compiled in the {header.profile_name!r} engine profile, but the localizer runs "
                f"{expected_profile!r}: the two sample reference features differently. Rebuild the map with "
                f"`pixloc-ros build-map ... --weights <the node's weights>` (it follows the weights' profile) "
                f"or run the localizer in the map's profile")
        _check_table(path, header, table, header_offset)
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    mapfile = MapFile(path, header, table, mm, file_size, file_identity(stat))
    _check_small_arrays(mapfile, table)
    if verify:
        mapfile.verify()
    return mapfile


def _check_table(path: Path, header: MapHeader, table: dict, header_offset: int) -> None:
    """Every array must be present with the dtype the format fixes, and lie inside the data section
    with exactly the bytes its shape needs. Only these fixed dtypes are ever built, so nothing
    in a header can make numpy create Python objects."""
    fixed = {**observation_arrays(header.levels), **KEYFRAME_ARRAYS, **POINT_ARRAYS,
             "keyframe_obs_offsets": ("<i8", ())}
    if set(table) != set(fixed):
        raise MapFileError(f"{path}: the map's arrays {sorted(table)} are not those of format version "
                           f"{FORMAT_VERSION}: {sorted(fixed)}")
    for name, entry in table.items():
        dtype, tail = fixed[name]
        try:
            shape = tuple(int(s) for s in entry["shape"])
            offset, nbytes = int(entry["offset"]), int(entry["nbytes"])
        except (KeyError, TypeError, ValueError) as err:
            raise MapFileError(f"{path}: array table entry {name} is malformed ({err})") from err
        if entry.get("dtype") != dtype or shape[1:] != tail or len(shape) != 1 + len(tail):
            raise MapFileError(f"{path}: array {name} has dtype {entry.get('dtype')} shape {shape}, "
                               f"expected {dtype} (n, {', '.join(map(str, tail))})")
        if nbytes != int(np.prod(shape)) * np.dtype(dtype).itemsize or offset < PREAMBLE_SIZE \
                or offset + nbytes > header_offset:
            raise MapCorruptedError(f"{path}: array {name} ({shape}, {dtype}) at [{offset}, {offset + nbytes}) "
                                    f"does not fit the file's data section [64, {header_offset})")


def _check_small_arrays(mapfile: MapFile, table: dict) -> None:
    """CRC-32 of every keyframe and point array, and consistency of counts and offsets."""
    path = mapfile.path
    for name, entry in table.items():
        if name.startswith("obs_"):
            continue
        if _crc32(mapfile._arrays[name]) != int(entry["crc32"]):
            raise MapCorruptedError(f"{path}: array {name} is corrupted (CRC-32 mismatch); "
                                    "copy the file again or rebuild it with `pixloc-ros build-map`")
    k, p, m = mapfile.num_keyframes, mapfile.num_points, mapfile.num_observations
    sizes = {name: k for name in KEYFRAME_ARRAYS} | {name: p for name in POINT_ARRAYS}
    sizes["keyframe_obs_offsets"] = k + 1
    sizes.update({name: m for name in observation_arrays(mapfile.levels)})
    for name, n in sizes.items():
        if len(mapfile._arrays[name]) != n:
            raise MapFileError(f"{path}: array {name} has {len(mapfile._arrays[name])} rows, expected {n}")
    if len(mapfile.header.keyframe_names) != k:
        raise MapFileError(f"{path}: {len(mapfile.header.keyframe_names)} keyframe names for {k} keyframes")
    offsets = mapfile.keyframe_obs_offsets
    if offsets[0] != 0 or offsets[-1] != m or np.any(np.diff(offsets) < 0):
        raise MapCorruptedError(f"{path}: keyframe observation offsets are inconsistent")
    cams = len(mapfile.header.cameras)
    ci = mapfile.keyframe_camera_index
    if k and (ci.min() < 0 or ci.max() >= cams):
        raise MapCorruptedError(f"{path}: keyframes reference cameras outside the {cams} in the header")
