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
from pathlib import Path

import numpy as np

from pixloc_ros.core.maps.mapfile_format import (FORMAT_VERSION, KEYFRAME_ARRAYS, LevelInfo, MAGIC, MapCorruptedError,
    MapFileError, MapHeader, MapVersionError, Observations, POINT_ARRAYS, PREAMBLE, PREAMBLE_SIZE,
    ProfileMismatchError, WeightsMismatchError, array_crc32, file_identity, observation_arrays)


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
            crc = array_crc32(values, crc)
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
        if array_crc32(mapfile._arrays[name]) != int(entry["crc32"]):
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
