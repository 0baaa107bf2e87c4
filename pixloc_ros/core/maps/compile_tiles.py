"""One tile of a tiled map compile: the tiles planned from the keyframes' camera centres (``plan_tiles``),
each compiled keyframe by keyframe and written as its own map file (``compile_tile``), and the
index header (``tiled_header``). ``compile.compile_tiled_map`` runs them in one process,
``compile_ray`` as Ray tasks.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from pixloc_ros import __version__
from pixloc_ros.core.maps.colmap_io import SfmModel
from pixloc_ros.core.engine.profile import EngineProfile
from pixloc_ros.core.geometry.georef import Georeference
from pixloc_ros.core.maps.mapfile_format import LevelInfo, MapHeader
from pixloc_ros.core.maps.tiles import TiledMapWriter, TileGrid, TileKey, TileSummary, inputs_digest
from pixloc_ros.core.maps.compile_keyframes import (CompileConfig, KeyframeSettings, PointSelection, compile_info,
    compile_keyframe, keyframe_plan, map_cameras)


# ---- tiled maps (core/maps/tiles.py) -------------------------------------------------------------
@dataclass
class TileTask:
    """Everything one tile's compile needs; picklable (a Ray worker receives it)."""

    key: TileKey
    inputs_sha256: str
    sfm: SfmModel  # the tile's images and the model's cameras (no points: ``points`` has them)
    image_ids: list[int]  # map order
    points: PointSelection  # the points the tile's images observe; rows local to the tile
    camera_index: dict[int, int]  # camera id -> index into the map-wide camera list


@dataclass
class TileResult:
    """What compiling one tile did."""

    key: TileKey
    num_keyframes: int
    num_observations: int
    num_dropped: int
    num_zero_confidence: list[int]  # per level
    network_seconds: float
    seconds: float


@dataclass
class TiledCompileStats:
    """What ``compile_tiled_map`` did."""

    summary: TileSummary  # the written map (all tiles, built or reused)
    tiles_built: int
    tiles_reused: int  # finished in an earlier run with the same inputs: not recomputed
    keyframes_built: int
    num_dropped_observations: int  # in the tiles built now
    skipped_images: list[str]
    seconds: float
    network_seconds: float
    engine: str  # "single process" or "ray: N workers"
    startup_seconds: float = 0.0  # of the engine (Ray and its workers loading the weights), within ``seconds``
    removed_files: list[str] = field(default_factory=list)  # tile files of an earlier build no tile uses now

    @property
    def images_per_s(self) -> float:
        return self.keyframes_built / self.seconds if self.seconds > 0 else float("nan")


def plan_tiles(sfm: SfmModel, image_dir: str | Path, config: CompileConfig, grid: TileGrid, weights_fingerprint: str,
               engine_profile: dict | None = None) -> tuple[list[TileTask], list[str], dict[int, int]]:
    """Split the keyframes of ``sfm`` into tiles by camera centre: (tasks in key order, skipped
    image names, camera index). Each task's ``inputs_sha256`` covers the weights, the options,
    the tile's images (ids, names, poses, file size and mtime), cameras and points: a tile whose
    file holds the same digest is not recomputed."""
    image_dir = Path(image_dir)
    points = PointSelection.of(sfm, config.min_track_length)
    image_ids, skipped, camera_index = keyframe_plan(sfm, points)
    if not image_ids:
        raise ValueError(f"no registered image observes a point with track length >= {config.min_track_length}")
    centers = np.stack([sfm.images[i].center for i in image_ids])
    groups: dict[TileKey, list[int]] = {}
    for image_id, (i, j) in zip(image_ids, grid.keys_of(centers)):
        groups.setdefault((int(i), int(j)), []).append(image_id)
    tasks = []
    for key, ids in sorted(groups.items()):
        images = {i: sfm.images[i] for i in ids}
        rows = np.unique(np.concatenate([points.rows_observed_by(images[i])[1] for i in ids]))
        local = PointSelection(points.point_ids[rows], points.xyz[rows], points.track_lengths[rows],
                               {int(pid): r for r, pid in enumerate(points.point_ids[rows])})
        files = []
        for i in ids:
            path = image_dir / images[i].name
            st = path.stat() if path.is_file() else None  # a missing image fails in compile_keyframe
            files.append([images[i].name, st.st_size if st else -1, st.st_mtime_ns if st else -1])
        digest = inputs_digest(
            version=__version__, fingerprint=weights_fingerprint, profile=engine_profile, config=asdict(config),
            key=list(key),
            grid=[grid.size_m, *grid.origin_xy], images=[[i, images[i].camera_id, camera_index[images[i].camera_id]]
                                                         for i in ids], files=files,
            R=np.stack([images[i].R for i in ids]), t=np.stack([images[i].t for i in ids]),
            cameras=[[c, sfm.cameras[c].model, sfm.cameras[c].width, sfm.cameras[c].height,
                      [float(v) for v in sfm.cameras[c].params]] for c in sorted(camera_index)],
            point_ids=local.point_ids, point_xyz=local.xyz, track=local.track_lengths)
        sub = SfmModel(dict(sfm.cameras), images, np.zeros(0, np.int64), np.zeros((0, 3)), np.zeros((0, 3), np.uint8),
                       [], [])
        tasks.append(TileTask(key, digest, sub, ids, local, camera_index))
    return tasks, skipped, camera_index


def compile_tile(task: TileTask, image_dir: str | Path, model, settings: KeyframeSettings, config: CompileConfig,
                 writer: TiledMapWriter, on_keyframe=None) -> TileResult:
    """Compile and write one tile: ``compile_keyframe`` for each of its images, streamed into
    the tile's file. ``on_keyframe()`` is called after each keyframe (progress bars)."""
    start = time.perf_counter()
    result = TileResult(task.key, 0, 0, 0, [], 0.0, 0.0)
    zeroed = 0
    tile_info: dict = {}  # the tile's statistics for its header, filled once every keyframe is written

    def keyframes():
        nonlocal zeroed
        for image_id in task.image_ids:
            kf = compile_keyframe(task.sfm, image_id, Path(image_dir), model, task.points, settings,
                                  task.camera_index[task.sfm.images[image_id].camera_id], config)
            result.num_keyframes += 1
            result.num_observations += len(kf.observations)
            result.num_dropped += kf.num_dropped
            result.network_seconds += kf.network_seconds
            zeroed = zeroed + kf.num_zero_confidence
            yield kf.record, kf.observations
            if on_keyframe is not None:
                on_keyframe()
        result.num_zero_confidence = [int(v) for v in np.broadcast_to(zeroed, (len(settings.strides),))]
        tile_info.update(num_dropped_observations=result.num_dropped,
                         num_zero_confidence_per_level=result.num_zero_confidence,
                         network_seconds=round(result.network_seconds, 3))

    points = {"point_ids": task.points.point_ids, "point_xyz": task.points.xyz,
              "point_track_length": task.points.track_lengths}
    writer.write_tile(task.key, task.inputs_sha256, points, keyframes(), tile_info)
    result.seconds = time.perf_counter() - start
    return result


def tiled_header(sfm: SfmModel, model_encoder: str, levels: list[LevelInfo], camera_index: dict[int, int],
                 weights_fingerprint: str, georef: Georeference | None, config: CompileConfig, device,
                 skipped: list[str], profile: EngineProfile) -> MapHeader:
    """The header fields every tile of a tiled compile shares (per-tile names and statistics are added per tile)."""
    info = compile_info(config, device, 0, skipped, np.zeros(len(levels), np.int64), 0.0)
    for per_tile in ("num_dropped_observations", "num_zero_confidence_per_level", "network_seconds"):
        info.pop(per_tile)
    return MapHeader(weights_fingerprint, model_encoder, levels, map_cameras(sfm, camera_index), [], georef, info,
                     engine_profile=profile.to_json())
