"""``pixloc-ros synth``: generate the synthetic world, its mapping drive and SfM map, and query
drives in other seasons as rosbag2 recordings.

Output layout (the contract of docs/architecture.md, "Synthetic data layout")::

    DIR/world.json                 preset, seed, conditions, camera, base_from_cam, noise, SfM stats
    DIR/georef.json                Georeference of the map origin
    DIR/mapping/images/*.png       mapping-condition keyframes (``mapping_scale`` x the query size)
    DIR/mapping/poses.txt          keyframe name, stamp, cam_from_world (qx qy qz qw tx ty tz)
    DIR/database.db                COLMAP database (SIFT features, verified matches)
    DIR/sfm/                       COLMAP model triangulated from the known keyframe poses
    DIR/queries/<condition>/       rosbag2 (MCAP) of a query drive (with ``rig``: every camera on its topics)
    DIR/queries/<condition>_gt.txt TUM ground truth of base_link in the map
    DIR/synth_report.json          timings per stage and sizes

Everything is deterministic given the seed (rendering noise included).

The mapping keyframes may be rendered larger than the query images (``mapping_scale``), as a
survey camera would record them: SIFT then finds more repeatable keypoints than on the small
query images (the textures are filtered to the pixel footprint, so detail appears only with
resolution). The COLMAP model is at the mapping size; compile it for the queries' size with
``pixloc-ros build-map ... --max-image-edge <query long side>`` (``world.json`` ``build_map``).
"""
from __future__ import annotations

import json
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from pixloc_ros.data import bags
from pixloc_ros.data.sim.conditions import MAPPING_CONDITION, get_condition
from pixloc_ros.data.sim.drive import GnssNoise, OdometryNoise, base_from_camera
from pixloc_ros.core.geometry.transforms import invert_transform, quat_xyzw_from_matrix
from pixloc_ros.data.sim.raycast import PinholeCamera
from pixloc_ros.data.sim.render import render
from pixloc_ros.data.sim.world import World
from pixloc_ros.data.sim.generate import generate_world
from .plan import Keyframe, QueryDrive, plan_mapping, plan_query
from .presets import DEFAULT_GEOREF, FORMAT, SynthPreset, camera_for, get_preset, mapping_camera_for
from .rig import RigMount, rig_mounts


@dataclass
class SynthReport:
    """What ``synthesize`` made and how long each stage took (seconds, wall clock)."""

    out_dir: Path
    preset: str
    seed: int
    num_keyframes: int
    num_query_frames: dict[str, int]
    num_points: int
    num_observations: int
    mean_track_length: float
    mean_reprojection_error_px: float
    num_verified_pairs: int
    timings_s: dict[str, float] = field(default_factory=dict)
    sizes_bytes: dict[str, int] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Rendering in worker processes
# ---------------------------------------------------------------------------------------------

_WORKER_WORLD: World | None = None


def _init_worker(world: World) -> None:
    global _WORKER_WORLD
    _WORKER_WORLD = world


def _render_task(args) -> np.ndarray:
    condition, camera, cam_from_world, noise_seed = args
    rgb, _ = render(_WORKER_WORLD, condition, camera, cam_from_world, noise_seed=noise_seed)
    return rgb


class _Renderer:
    """Renders batches of views, in-process or in a pool of spawned processes (numpy is
    single-threaded for element-wise work, so processes are what uses several cores)."""

    def __init__(self, world: World, workers: int):
        self.world = world
        self.pool = None
        if workers > 1:
            import multiprocessing
            self.pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                            initializer=_init_worker, initargs=(world,))

    def map(self, tasks: Sequence[tuple]) -> Iterable[np.ndarray]:
        """Yield the RGB image of each (condition, camera, cam_from_world, noise_seed), in order."""
        if self.pool is None:
            _init_worker(self.world)
            return (_render_task(t) for t in tasks)
        return self.pool.map(_render_task, tasks, chunksize=2)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()


# ---------------------------------------------------------------------------------------------
# Orchestration
# ---------------------------------------------------------------------------------------------

def synthesize(out_dir: str | Path, preset: str | SynthPreset = "small", seed: int = 0, *, workers: int | None = None,
               encoding: str = "rgb8", overwrite: bool = False, log: Callable[[str], None] | None = None,
               rig: Sequence[str] | None = None) -> SynthReport:
    """Generate the world, the mapping images and SfM map, and one query bag per condition
    into ``out_dir`` (layout in the module docstring). Returns sizes, SfM statistics and timings.

    ``rig``: camera names (``rig.MOUNTS``, e.g. ("front", "left", "right")) to record in the query
    bags, each on its own topics and frame (``rig.rig_mounts``), all on /tf_static, and map with every
    one of them (keyframes ``<name>_00000.png``, ...: the pipeline reads a keyframe's camera from its
    name), so that each camera finds keyframes of its own view; None: the one forward camera.

    ``workers`` > 1 renders in spawned processes, which re-import the caller's main module:
    call this from under ``if __name__ == "__main__":`` in a script (the CLI and pytest are fine).
    """
    preset = get_preset(preset)
    if encoding not in bags.ENCODINGS:
        raise ValueError(f"Unsupported image encoding {encoding!r}; use one of {bags.ENCODINGS}")
    log = log or (lambda msg: None)
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out} is not empty; pass overwrite=True (--overwrite) to replace it")
        if not (out / "world.json").exists():
            raise FileExistsError(f"{out} is not empty and holds no world.json; not deleting it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    # Marks the folder as synth output at once, so that --overwrite can clean up a failed run.
    (out / "world.json").write_text(json.dumps({"format": FORMAT, "status": "incomplete", "preset": preset.name,
                                                "seed": seed}) + "\n")
    workers = workers or min(os.cpu_count() or 1, 4)
    timings: dict[str, float] = {}
    t_all = time.perf_counter()

    tic = time.perf_counter()
    world = generate_world(seed)
    camera = camera_for(preset)
    mapping_camera = mapping_camera_for(preset)
    base_from_cam = base_from_camera()
    mounts = rig_mounts(rig) if rig else [RigMount("camera", base_from_cam, bags.DriveTopics(), bags.CAMERA_FRAME)]
    georef = DEFAULT_GEOREF
    keyframes = []
    for m in mounts:  # a rig maps with every camera, its keyframes named <camera>_<number>.png
        kfs = plan_mapping(world, preset, m.base_from_cam, seed)
        keyframes += [replace(kf, name=f"{m.name}_{kf.name}") for kf in kfs] if rig else kfs
    queries = [plan_query(world, preset, c, i, georef, seed) for i, c in enumerate(preset.query_conditions)]
    timings["plan"] = time.perf_counter() - tic
    log(f"planned {len(keyframes)} keyframes and {sum(len(q.camera_stamps_ns) for q in queries)} query frames")

    renderer = _Renderer(world, workers)
    try:
        tic = time.perf_counter()
        image_dir = out / "mapping" / "images"
        image_dir.mkdir(parents=True)
        import cv2
        tasks = [(MAPPING_CONDITION, mapping_camera, kf.cam_from_world, _noise_seed(seed, MAPPING_CONDITION, k))
                 for k, kf in enumerate(keyframes)]
        for kf, rgb in zip(keyframes, renderer.map(tasks)):
            cv2.imwrite(str(image_dir / kf.name), rgb[..., ::-1])
        timings["render_mapping"] = time.perf_counter() - tic
        log(f"rendered {len(keyframes)} mapping images in {timings['render_mapping']:.1f} s")

        # The SfM map (mostly single-threaded COLMAP) is built in a thread while the pool renders
        # the queries: both cores stay busy. It reads only the mapping images, so the outputs
        # do not depend on the interleaving; its timings go to their own dict (stable key order).
        sfm_timings: dict[str, float] = {}
        with ThreadPoolExecutor(1) as sfm_thread:
            sfm = sfm_thread.submit(_build_map, out, image_dir, keyframes, mapping_camera, preset, sfm_timings,
                                    workers)
            tic = time.perf_counter()
            query_dir = out / "queries"
            query_dir.mkdir()
            for query in queries:
                t_q = time.perf_counter()
                _write_query(query_dir, query, renderer, camera, mounts, seed, encoding)
                timings[f"query_{query.condition}"] = time.perf_counter() - t_q
            timings["render_and_write_queries"] = time.perf_counter() - tic
            log(f"wrote {len(queries)} query bags in {timings['render_and_write_queries']:.1f} s")
            tri, verified = sfm.result()
        timings.update(sfm_timings)
    finally:
        renderer.close()

    _write_mapping_poses(out / "mapping" / "poses.txt", keyframes)
    georef.save(out / "georef.json")

    log(f"SfM: {tri.num_points} points, {tri.num_observations} observations, mean reprojection error "
        f"{tri.mean_reprojection_error_px:.3f} px")
    if preset.mapping_scale != 1:
        log(f"mapping images are {mapping_camera.width}x{mapping_camera.height}: compile the map for the "
            f"{camera.width}x{camera.height} queries with `pixloc-ros build-map ... --max-image-edge "
            f"{max(camera.width, camera.height)}`")
    timings["total"] = time.perf_counter() - t_all

    report = SynthReport(out, preset.name, seed, len(keyframes), {q.condition: len(q.camera_stamps_ns) for q in queries},
                         tri.num_points, tri.num_observations, tri.mean_track_length, tri.mean_reprojection_error_px,
                         verified, timings, _sizes(out))
    _write_world_json(out / "world.json", preset, seed, world, camera, mapping_camera, base_from_cam, encoding,
                      queries, report, mounts if rig else None)
    (out / "synth_report.json").write_text(json.dumps(_report_dict(report), indent=2) + "\n")
    return report


def _build_map(out: Path, image_dir: Path, keyframes: Sequence[Keyframe], camera: PinholeCamera,
               preset: SynthPreset, timings: dict[str, float], threads: int = 1):
    """SIFT on the mapping images (``threads`` threads), matching of pairs chosen from the known
    poses, verification against those poses and triangulation with them fixed: the COLMAP model
    in ``out/sfm``. Returns (TriangulationReport, number of verified pairs); adds the stage
    times to ``timings``."""
    from pixloc_ros.core.maps import colmap_io
    tic = time.perf_counter()
    db = out / "database.db"
    names = [kf.name for kf in keyframes]
    colmap_io.extract_sift_features(db, image_dir, names, camera.width, camera.height, camera.fx, camera.fy,
                                    camera.cx, camera.cy, max_num_features=preset.sift_max_features,
                                    peak_threshold=preset.sift_peak_threshold, num_threads=threads)
    timings["sfm_features"] = time.perf_counter() - tic
    tic = time.perf_counter()
    world_from_cam = np.stack([invert_transform(kf.cam_from_world) for kf in keyframes])
    pairs = colmap_io.pairs_from_poses(names, world_from_cam[:, :3, 3], world_from_cam[:, :3, 2],
                                       max_distance_m=max(6 * preset.keyframe_spacing_m, 25.0),
                                       max_pairs_per_image=preset.match_max_pairs_per_image)
    poses = {kf.name: (kf.cam_from_world[:3, :3], kf.cam_from_world[:3, 3]) for kf in keyframes}
    # Exact nearest-neighbour matching with COLMAP's SIFT rules (deterministic; COLMAP's own CPU
    # matcher is approximate by default and 3x slower in brute force). The poses are known (as
    # for a surveyed vehicle): matching is guided by them (candidates near the epipolar line,
    # as COLMAP's guided matching; it recovers the repeated facades the ratio test rejects),
    # the matches are verified against them (as hloc does) instead of with RANSAC's looser
    # 4 px, then triangulated with the poses held fixed.
    guided = preset.match_epipolar_error_px is not None
    colmap_io.match_pairs_exact(db, pairs, max_ratio=preset.match_max_ratio, poses=poses if guided else None,
                                max_epipolar_error_px=preset.match_epipolar_error_px if guided else 2.0)
    verified = colmap_io.verify_matches_with_poses(db, poses, max_error_px=1.0)
    timings["sfm_matching"] = time.perf_counter() - tic
    tic = time.perf_counter()
    tri = colmap_io.triangulate_known_poses(db, image_dir, out / "sfm", poses, max_reproj_error_px=1.0,
                                            min_tri_angle_deg=preset.sfm_min_tri_angle_deg)
    timings["sfm_triangulation"] = time.perf_counter() - tic
    return tri, verified


def _noise_seed(seed: int, condition: str, index: int) -> int:
    import zlib
    return (seed * 1_000_003 + zlib.crc32(condition.encode()) * 7919 + index) % (1 << 63)


def _write_query(query_dir: Path, query: QueryDrive, renderer: _Renderer, camera: PinholeCamera,
                 mounts: Sequence[RigMount], seed: int, encoding: str) -> None:
    """Render the query images of every camera in ``mounts`` and record the drive, messages in
    stamp order. The first camera's noise seeds are the single-camera ones (its images are the same)."""
    tasks = []
    for k, T in enumerate(query.world_from_base):
        for j, m in enumerate(mounts):
            key = query.condition if j == 0 else f"{query.condition}/{m.name}"
            tasks.append((query.condition, camera, invert_transform(T @ m.base_from_cam), _noise_seed(seed, key, k)))
    infos = [bags.CameraInfoData.from_pinhole(camera.width, camera.height, camera.fx, camera.fy, camera.cx, camera.cy,
                                              frame_id=m.frame_id) for m in mounts]
    truth = [bags.PoseSample.from_matrix(s, T) for s, T in zip(query.camera_stamps_ns, query.world_from_base)]
    # Sensor messages merged with the images by stamp (images arrive from the pool in order).
    others = sorted([(o.stamp_ns, 0, o) for o in query.odometry] + [(g.stamp_ns, 1, g) for g in query.gnss]
                    + [(p.stamp_ns, 2, p) for p in truth], key=lambda x: (x[0], x[1]))
    first = min(int(query.camera_stamps_ns[0]), others[0][0]) if others else int(query.camera_stamps_ns[0])
    j = 0
    with bags.DriveBagWriter(query_dir / query.condition) as writer:
        writer.write_static_transforms(first, [bags.StaticTransform.from_matrix(bags.BASE_FRAME, m.frame_id,
                                                                                 m.base_from_cam) for m in mounts])
        images = renderer.map(tasks)
        for stamp in query.camera_stamps_ns:
            while j < len(others) and others[j][0] <= stamp:
                _write_other(writer, others[j])
                j += 1
            for m, info in zip(mounts, infos):
                writer.write_image(int(stamp), next(images), encoding, m.frame_id, m.topics.image)
                writer.write_camera_info(int(stamp), info, m.topics.camera_info)
        for item in others[j:]:
            _write_other(writer, item)
    lines = ["# ground truth: map_from_base (base_link in map), TUM format: stamp_s x y z qx qy qz qw\n"]
    for p in truth:
        lines.append(f"{p.stamp_ns // 1_000_000_000}.{p.stamp_ns % 1_000_000_000:09d} "
                     + " ".join(f"{v:.9f}" for v in (*p.position, *p.orientation_xyzw)) + "\n")
    (query_dir / f"{query.condition}_gt.txt").write_text("".join(lines))


def _write_other(writer: bags.DriveBagWriter, item) -> None:
    _, kind, msg = item
    if kind == 0:
        writer.write_odometry(msg)
    elif kind == 1:
        writer.write_gnss(msg)
    else:
        writer.write_ground_truth(msg)


def _write_mapping_poses(path: Path, keyframes: Sequence[Keyframe]) -> None:
    lines = ["# mapping keyframes: name stamp_ns qx qy qz qw tx ty tz (cam_from_world; quaternion x y z w; metres)\n"]
    for kf in keyframes:
        q = quat_xyzw_from_matrix(kf.cam_from_world[:3, :3])
        t = kf.cam_from_world[:3, 3]
        lines.append(f"{kf.name} {kf.stamp_ns} " + " ".join(f"{v:.9f}" for v in (*q, *t)) + "\n")
    path.write_text("".join(lines))


def _sizes(out: Path) -> dict[str, int]:
    def size(p: Path) -> int:
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else (p.stat().st_size if p.exists() else 0)
    sizes = {"mapping": size(out / "mapping"), "database": size(out / "database.db"), "sfm": size(out / "sfm")}
    for bag in sorted((out / "queries").glob("*/")):
        sizes[f"queries/{bag.name}"] = size(bag)
    sizes["total"] = size(out)
    return sizes


def _report_dict(report: SynthReport) -> dict:
    d = asdict(report)
    d["out_dir"] = str(report.out_dir)
    return d


def _write_world_json(path: Path, preset: SynthPreset, seed: int, world: World, camera: PinholeCamera,
                      mapping_camera: PinholeCamera, base_from_cam: np.ndarray, encoding: str,
                      queries: Sequence[QueryDrive], report: SynthReport, mounts: Sequence[RigMount] | None) -> None:
    tr = bags.StaticTransform.from_matrix(bags.BASE_FRAME, bags.CAMERA_FRAME, base_from_cam)
    gn = GnssNoise()
    data = {
        "format": FORMAT,
        "preset": preset.name,
        "preset_settings": asdict(preset),
        "seed": seed,
        "mapping_condition": MAPPING_CONDITION,
        "query_conditions": list(preset.query_conditions),
        "image": {"width": camera.width, "height": camera.height, "encoding": encoding},
        "camera": {"model": "PINHOLE", "fx": camera.fx, "fy": camera.fy, "cx": camera.cx, "cy": camera.cy,
                   "pixel_origin": "center of the top-left pixel (OpenCV/ROS); COLMAP's sfm/ has cx, cy + 0.5"},
        # The keyframes and sfm/ may be larger than the queries (preset mapping_scale).
        "mapping_image": {"width": mapping_camera.width, "height": mapping_camera.height},
        "mapping_camera": {"model": "PINHOLE", "fx": mapping_camera.fx, "fy": mapping_camera.fy,
                           "cx": mapping_camera.cx, "cy": mapping_camera.cy},
        "build_map": {"max_image_edge": max(camera.width, camera.height) if preset.mapping_scale != 1 else None},
        "base_from_cam": {"parent_frame": bags.BASE_FRAME, "child_frame": bags.CAMERA_FRAME,
                          "translation": list(tr.translation), "rotation_xyzw": list(tr.rotation_xyzw),
                          "matrix": base_from_cam.tolist()},
        "frames": {"map": bags.MAP_FRAME, "odom": bags.ODOM_FRAME, "base": bags.BASE_FRAME, "camera": bags.CAMERA_FRAME},
        "topics": asdict(bags.DriveTopics()),
        # The query bags' cameras when they record a rig (the first is the anchor), else null.
        "rig": None if mounts is None else [
            {"name": m.name, "frame_id": m.frame_id, "image_topic": m.topics.image,
             "camera_info_topic": m.topics.camera_info, "base_from_cam": m.base_from_cam.tolist()} for m in mounts],
        "world_config": asdict(world.config),
        "noise": {
            "odometry": asdict(OdometryNoise()),
            "gnss": {**asdict(gn), "horizontal_sigma_m": gn.horizontal_sigma_m, "vertical_sigma_m": gn.vertical_sigma_m,
                     "antenna": "at the base_link origin"},
            "image_noise_sigma": {c: get_condition(c).noise_sigma for c in (MAPPING_CONDITION, *preset.query_conditions)},
        },
        "queries": {q.condition: {"frames": len(q.camera_stamps_ns), "lateral_offset_m": q.lateral_offset_m,
                                  "top_speed_mps": q.top_speed_mps} for q in queries},
        "sfm": {"num_images": report.num_keyframes, "num_points": report.num_points,
                "num_observations": report.num_observations, "mean_track_length": report.mean_track_length,
                "mean_reprojection_error_px": report.mean_reprojection_error_px},
    }
    path.write_text(json.dumps(data, indent=2) + "\n")


__all__ = ["SynthReport", "synthesize"]
