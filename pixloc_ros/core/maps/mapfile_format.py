"""The map file's format (layout in ``mapfile``'s docstring): its constants and array tables, the
header and record types, the errors a reader raises, and the CRC-32 and alignment helpers both the
writer and the reader use.
"""
from __future__ import annotations

import os
import struct
import zlib
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from pixloc_ros.core.geometry.georef import Georeference


MAGIC = b"PXLRMAP\x00"
FORMAT_VERSION = 1
PREAMBLE = struct.Struct("<8sIIQQ32s")  # magic, version, flags, header offset, header length, sha256
PREAMBLE_SIZE = 64
ALIGNMENT = 64  # bytes; every array starts at a multiple (cache lines, SIMD loads)
CHUNK_BYTES = 64 << 20  # bytes per CRC step / copy step, to bound memory on huge arrays
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
    def of_map(cls, mapfile, row: int) -> "KeyframeRecord":
        """Keyframe ``row`` of an open map (a ``mapfile.MapFile``; not imported here: the reader
        imports this module)."""
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


def array_crc32(array: np.ndarray, crc: int = 0) -> int:
    """CRC-32 of an array's bytes (C order), chunked so a huge memmap is not held at once."""
    view = memoryview(np.ascontiguousarray(array).reshape(-1).view(np.uint8))
    for start in range(0, len(view), CHUNK_BYTES):
        crc = zlib.crc32(view[start:start + CHUNK_BYTES], crc)
    return crc


def file_identity(path_or_stat) -> tuple[int, int, int, int]:
    """(device, inode, size, mtime in ns) of a file (a path or an ``os.stat_result``): what tells
    that a file is still the one that was checked earlier (replaced or rewritten files differ)."""
    st = path_or_stat if isinstance(path_or_stat, os.stat_result) else os.stat(path_or_stat)
    return (int(st.st_dev), int(st.st_ino), int(st.st_size), int(st.st_mtime_ns))


def align_offset(offset: int) -> int:
    return -(-offset // ALIGNMENT) * ALIGNMENT
