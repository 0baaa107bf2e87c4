"""Compile a COLMAP model, its images and the network weights into a map (``mapfile``): one file
(``compile_map``) or a tiled city map (``compile_tiled_map``: one file per tile and an index, resumable,
optionally on Ray through ``compile_ray``). The per-keyframe step is ``compile_keyframes``, the
per-tile one ``compile_tiles``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pixloc_ros.core.maps.colmap_io import SfmModel
from pixloc_ros.core.geometry.georef import Georeference
from pixloc_ros.core.maps.mapfile_format import MapHeader, keyframe_arrays_of
from pixloc_ros.core.maps.mapfile_writer import MapWriter
from pixloc_ros.core.maps.tiles import TILES_DIR, TiledMapWriter, TileGrid, tile_file_name
from pixloc_ros.core.maps.compile_keyframes import (CompileConfig, KeyframeSettings, PointSelection, compile_info,
    compile_keyframe, keyframe_plan, map_cameras, map_levels)
from pixloc_ros.core.maps.compile_tiles import TiledCompileStats, compile_tile, plan_tiles, tiled_header


@dataclass
class CompileStats:
    """What ``compile_map`` did."""

    path: Path
    num_keyframes: int
    num_points: int
    num_observations: int
    num_dropped_observations: int  # candidates in the finest level's pad band or behind the camera
    skipped_images: list[str] = field(default_factory=list)  # registered images without usable points
    seconds: float = 0.0  # whole compile
    network_seconds: float = 0.0  # time in the network (synchronised on CUDA)
    file_size_bytes: int = 0
    num_zero_confidence: tuple[int, ...] = ()  # stored observations with confidence 0 (border), per level

    @property
    def images_per_s(self) -> float:
        return self.num_keyframes / self.seconds if self.seconds > 0 else float("nan")


def compile_map(sfm: SfmModel, image_dir: str | Path, model, out_path: str | Path,
                weights_fingerprint: str, georef: Georeference | None = None,
                config: CompileConfig | None = None, progress: bool = True) -> CompileStats:
    """Run ``model`` (a ``PixLocModel`` in eval mode, on its device) on every registered image of
    ``sfm`` found under ``image_dir`` (by the image's name) and write the map to ``out_path``.

    ``weights_fingerprint``: ``checkpoint.weights_fingerprint(model)``, stored so the node can
    refuse a map built with other weights. Returns CompileStats. Raises FileNotFoundError for
    a missing image, ValueError for an image whose size differs from its camera.
    """
    config = config or CompileConfig()
    image_dir = Path(image_dir)
    start = time.perf_counter()
    device = model.device

    # Points kept: track length >= min; their rows in the map's point table.
    points = PointSelection.of(sfm, config.min_track_length)
    levels, _ = map_levels(model)
    settings = KeyframeSettings.of(model, config)
    image_ids, skipped, camera_index = keyframe_plan(sfm, points)
    if not image_ids:
        raise ValueError(f"no registered image observes a point with track length >= {config.min_track_length}")

    records, dropped, net_seconds = [], 0, 0.0
    zeroed = np.zeros(len(levels), np.int64)
    iterator = image_ids
    if progress:
        from tqdm import tqdm
        iterator = tqdm(image_ids, desc="build-map", unit="image")

    with MapWriter(out_path, levels) as writer:
        for image_id in iterator:
            kf = compile_keyframe(sfm, image_id, image_dir, model, points, settings,
                                  camera_index[sfm.images[image_id].camera_id], config)
            writer.add_keyframe_observations(kf.observations)
            records.append(kf.record)
            dropped += kf.num_dropped
            zeroed += kf.num_zero_confidence
            net_seconds += kf.network_seconds

        num_obs = writer.num_observations
        header = MapHeader(weights_fingerprint, getattr(model, "encoder_name", "unknown"), levels,
                           map_cameras(sfm, camera_index), [r.name for r in records], georef,
                           compile_info(config, device, dropped, skipped, zeroed, net_seconds),
                           engine_profile=settings.profile.to_json())
        path = writer.finish(header, keyframe_arrays_of(records),
                             {"point_ids": points.point_ids, "point_xyz": points.xyz,
                              "point_track_length": points.track_lengths})
    return CompileStats(path, len(records), len(points.point_ids), num_obs, dropped, skipped,
                        time.perf_counter() - start, net_seconds, path.stat().st_size,
                        tuple(int(v) for v in zeroed))


def compile_tiled_map(sfm: SfmModel, image_dir: str | Path, model, out_dir: str | Path, weights_fingerprint: str,
                      tile_size_m: float, georef: Georeference | None = None, config: CompileConfig | None = None,
                      progress: bool = True, ray=None, weights_path: str | Path | None = None) -> TiledCompileStats:
    """Compile ``sfm`` into a tiled map in the folder ``out_dir`` (``core/maps/tiles.py``): tiles of
    ``tile_size_m`` by keyframe camera centre, each compiled by ``compile_tile`` (the same
    per-keyframe step as ``compile_map``), tiles already finished with the same inputs reused.

    ``model``: the loaded weights (the levels and the encoder are read from it; it compiles the
    tiles unless ``ray``). ``ray``: ``map_compile_ray.RayOptions`` to run the tiles as Ray tasks
    instead (the workers load ``weights_path``; results are identical to the single process).
    Raises as ``compile_map``.
    """
    config = config or CompileConfig()
    start = time.perf_counter()
    grid = TileGrid(tile_size_m)
    levels, _ = map_levels(model)
    settings = KeyframeSettings.of(model, config)
    tasks, skipped, camera_index = plan_tiles(sfm, image_dir, config, grid, weights_fingerprint,
                                              settings.profile.to_json())
    device = ray.device if ray is not None else model.device
    header = tiled_header(sfm, getattr(model, "encoder_name", "unknown"), levels, camera_index, weights_fingerprint,
                          georef, config, device, skipped, settings.profile)
    writer = TiledMapWriter(out_dir, grid, header)
    todo = [t for t in tasks if not writer.is_current(t.key, t.inputs_sha256)]
    if ray is not None:
        from pixloc_ros.core.maps.compile_ray import compile_tiles_on_ray
        if weights_path is None:
            raise ValueError("compiling on Ray needs weights_path: the workers load the weights themselves")
        results, engine, startup = compile_tiles_on_ray(todo, image_dir, weights_path, weights_fingerprint,
                                                        config, writer, ray, progress)
    else:
        engine, results, bar, startup = "single process", [], None, 0.0
        if progress and todo:
            from tqdm import tqdm
            bar = tqdm(total=sum(len(t.image_ids) for t in todo), desc="build-map", unit="image")
        for task in todo:
            if bar is not None:
                bar.set_postfix_str(f"tile {task.key}")
            results.append(compile_tile(task, image_dir, model, settings, config, writer,
                                        on_keyframe=bar.update if bar is not None else None))
        if bar is not None:
            bar.close()
    wanted = {tile_file_name(t.key) for t in tasks}
    removed = []
    for f in sorted((writer.folder / TILES_DIR).glob("tile_*.pxmap")):
        if f"{TILES_DIR}/{f.name}" not in wanted:  # from an earlier build over other keyframes
            f.unlink()
            removed.append(f.name)
    summary = writer.finish([t.key for t in tasks], reused=len(tasks) - len(todo))
    return TiledCompileStats(summary, len(results), len(tasks) - len(todo), sum(r.num_keyframes for r in results),
                             sum(r.num_dropped for r in results), skipped, time.perf_counter() - start,
                             sum(r.network_seconds for r in results), engine, startup, removed)
