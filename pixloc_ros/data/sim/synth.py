"""``pixloc-ros synth``: generate the synthetic world, its mapping drive and SfM map, and query
drives in other seasons as rosbag2 recordings.

Output layout (the contract of docs/architecture.md, "Synthetic data layout")::

    DIR/world.json                 preset, seed, conditions, camera, base_from_cam, noise, SfM stats
    DIR/georef.json                Georeference of the map origin
    DIR/mapping/images/*.png       mapping-condition keyframes (``mapping_scale`` x the query size)
    DIR/mapping/poses.txt          keyframe name, stamp, cam_from_world (qx qy qz qw tx ty tz)
    DIR/database.db                COLMAP database (SIFT features, verified matches)
    DIR/sfm/                       COLMAP model triangulated from the known keyframe poses
    DIR/queries/<condition>/       rosbag2 (MCAP) of a query drive
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
import math
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from pixloc_ros.core.geometry.georef import Georeference
from pixloc_ros.data import bags
from pixloc_ros.data.sim.conditions import MAPPING_CONDITION, QUERY_CONDITIONS, get_condition
from pixloc_ros.data.sim.drive import (Dynamics, GnssNoise, OdometryNoise, base_from_camera, crop_path,
    route_path, simulate_gnss, simulate_odometry, simulate_trajectory)
from pixloc_ros.core.geometry.transforms import invert_transform, quat_xyzw_from_matrix
from pixloc_ros.data.sim.raycast import PinholeCamera
from pixloc_ros.data.sim.render import render
from pixloc_ros.data.sim.world import World, WorldConfig, generate_world

FORMAT = "pixloc_ros.synth/1"

# The map origin: near Carnegie Mellon University, Pittsburgh (where CMU Seasons was recorded);
# the map's x axis points 72 degrees east of north, so map != ENU and the rotation is exercised.
DEFAULT_GEOREF = Georeference(latitude_deg=40.4433, longitude_deg=-79.9436, altitude_m=250.0, heading_deg=72.0)


@dataclass(frozen=True)
class SynthPreset:
    """How much to generate."""

    name: str
    width: int  # image size, pixels
    height: int
    hfov_deg: float  # horizontal field of view (CMU Seasons: ~61 deg at 1024x768)
    keyframe_spacing_m: float  # mapping keyframes every this many metres
    mapping_route: str  # street-graph nodes the mapping drive visits
    query_length_m: float  # length of each query drive
    max_query_frames: int  # cap on images per query drive
    camera_rate_hz: float
    odom_rate_hz: float
    gnss_rate_hz: float
    sift_max_features: int
    match_max_pairs_per_image: int
    query_conditions: tuple[str, ...] = QUERY_CONDITIONS
    mapping_length_m: float | None = None  # crop the mapping drive (tests, small); None: whole route
    mapping_scale: float = 1.0  # mapping images are this many times the query size (same field of view)
    sift_peak_threshold: float | None = None  # SIFT DoG contrast threshold; None: COLMAP's 0.02 / 3
    match_max_ratio: float = 0.8  # Lowe ratio of the matcher (COLMAP: 0.8)
    # Guided matching with the known poses: Sampson error bound, mapping pixels; None: off.
    match_epipolar_error_px: float | None = None
    # Points triangulated under a smaller angle are dropped (relative depth error ~ 1 / angle).
    sfm_min_tri_angle_deg: float = 1.5

    def __post_init__(self):
        w, h = self.width * self.mapping_scale, self.height * self.mapping_scale
        if self.mapping_scale < 1 or w != round(w) or h != round(h):
            raise ValueError(f"mapping_scale {self.mapping_scale} must be >= 1 and give whole-pixel images "
                             f"from {self.width}x{self.height}")

    @property
    def mapping_size(self) -> tuple[int, int]:
        """(width, height) of the mapping images, pixels."""
        return round(self.width * self.mapping_scale), round(self.height * self.mapping_scale)


PRESETS: dict[str, SynthPreset] = {
    # Tests, CI and the demo: 320x240 queries, ~30 frames per season. PixLoc needs hundreds of
    # map points per query: SIFT on 320x240 keyframes finds ~600 keypoints and at most ~300
    # observations of track >= 3 per keyframe whatever the spacing; 640x480 keyframes (4 m
    # apart, guided matching) give ~440. They cost ~1.8 s of CPU each (render 1.2 s, SIFT,
    # matching), so the mapping drive covers the first 210 m of the route (52 keyframes:
    # streets AB, BC, CD; the queries drive there too) to stay < 2 min on 2 cores; the whole
    # 470 m would take about twice as long. Compile with --max-image-edge 320 (world.json).
    "small": SynthPreset("small", 320, 240, 61.0, keyframe_spacing_m=4.0, mapping_route="ABCDEFABE",
                         query_length_m=85.0, max_query_frames=30, camera_rate_hz=3.0, odom_rate_hz=20.0,
                         gnss_rate_hz=2.0, sift_max_features=8192, match_max_pairs_per_image=8,
                         mapping_length_m=210.0, mapping_scale=2.0, sift_peak_threshold=0.004,
                         match_max_ratio=0.9, match_epipolar_error_px=2.0),
    # CMU-Seasons-like: 1024x768, keyframes every 2.5 m, 5 Hz query drives of ~250 m.
    "full": SynthPreset("full", 1024, 768, 61.0, keyframe_spacing_m=2.5, mapping_route="ABCDEFABE",
                        query_length_m=250.0, max_query_frames=400, camera_rate_hz=5.0, odom_rate_hz=50.0,
                        gnss_rate_hz=1.0, sift_max_features=8192, match_max_pairs_per_image=10),
}


# A tiny dataset for the test suite: the first 80 m of the mapping route (~26 keyframes, mapped
# at the query size so that maps compile without resizing, ~270 observations of track >= 3 per
# keyframe) and 6-frame query drives in every query condition; ~25 s on 2 cores. At 320x240 the
# keypoints are coarser: a 2 degree minimum triangulation angle keeps the depths within a few %.
TEST_PRESET = SynthPreset("test", 320, 240, 61.0, keyframe_spacing_m=3.0, mapping_route="ABCDEFABE",
                          query_length_m=24.0, max_query_frames=6, camera_rate_hz=3.0, odom_rate_hz=20.0,
                          gnss_rate_hz=2.0, sift_max_features=8192, match_max_pairs_per_image=8,
                          mapping_length_m=80.0, sift_peak_threshold=0.003, match_epipolar_error_px=2.0,
                          sfm_min_tri_angle_deg=2.0)


def get_preset(preset: str | SynthPreset) -> SynthPreset:
    """Look up a preset by name (or pass one through); ValueError lists the names."""
    if isinstance(preset, SynthPreset):
        return preset
    try:
        return PRESETS[preset]
    except KeyError:
        raise ValueError(f"Unknown preset {preset!r}; known: {sorted(PRESETS)}") from None


@dataclass
class Keyframe:
    name: str
    stamp_ns: int
    cam_from_world: np.ndarray  # (4, 4)


@dataclass
class QueryDrive:
    """A planned query drive: ground truth and sensors, ready to render and record."""

    condition: str
    camera_stamps_ns: np.ndarray  # (F,)
    world_from_base: np.ndarray  # (F, 4, 4) ground truth at the camera stamps
    odometry: list[bags.OdometrySample]
    gnss: list[bags.GnssFix]
    lateral_offset_m: float
    top_speed_mps: float


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
# Planning (no rendering)
# ---------------------------------------------------------------------------------------------

def camera_for(preset: SynthPreset) -> PinholeCamera:
    """The query camera of a preset (pixel-centre principal point at the image centre)."""
    return PinholeCamera.from_fov(preset.width, preset.height, preset.hfov_deg)


def mapping_camera_for(preset: SynthPreset) -> PinholeCamera:
    """The mapping camera: the query camera scaled by ``preset.mapping_scale`` (pixel-centre
    origin: c' = (c + 0.5) * s - 0.5), so that resizing a keyframe to the query size gives
    exactly the query camera."""
    cam, s = camera_for(preset), preset.mapping_scale
    w, h = preset.mapping_size
    return PinholeCamera(w, h, cam.fx * s, cam.fy * s, (cam.cx + 0.5) * s - 0.5, (cam.cy + 0.5) * s - 0.5)


def plan_mapping(world: World, preset: SynthPreset, base_from_cam: np.ndarray, seed: int) -> list[Keyframe]:
    """Keyframes every ``keyframe_spacing_m`` along the mapping route, in the right lane.

    Where the route passes a place twice in the same direction, the second visit adds no
    keyframe (a second pass would only duplicate views)."""
    path = route_path(world, preset.mapping_route, wander_m=0.1, seed=seed + 1)
    if preset.mapping_length_m is not None:
        path = crop_path(path, 0.0, min(preset.mapping_length_m, path.length))
    traj = simulate_trajectory(path, Dynamics(top_speed_mps=8.0), seed=seed + 2)
    distances = np.arange(2.0, path.length - 1.0, preset.keyframe_spacing_m)
    times = traj.times_at_distances(distances)
    world_from_base = traj.world_from_base(times)
    t0 = get_condition(MAPPING_CONDITION).date_epoch_s * 1_000_000_000
    keyframes: list[Keyframe] = []
    kept_xy, kept_yaw = [], []
    for k, (t, T) in enumerate(zip(times, world_from_base)):
        xy, yaw = T[:2, 3], math.atan2(T[1, 0], T[0, 0])
        duplicate = any(np.linalg.norm(xy - p) < 0.5 * preset.keyframe_spacing_m
                        and abs(math.remainder(yaw - y, 2 * math.pi)) < math.radians(30)
                        for p, y in zip(kept_xy, kept_yaw))
        if duplicate:
            continue
        kept_xy.append(xy)
        kept_yaw.append(yaw)
        cam_from_world = invert_transform(T @ base_from_cam)
        keyframes.append(Keyframe(f"{len(keyframes):05d}.png", t0 + int(round(t * 1e9)), cam_from_world))
    return keyframes


def plan_query(world: World, preset: SynthPreset, condition: str, index: int, georef: Georeference,
               seed: int, odom_noise: OdometryNoise = OdometryNoise(), gnss_noise: GnssNoise = GnssNoise()) -> QueryDrive:
    """A query drive in ``condition``: the ``index``-th window of the mapping route, driven with
    another lateral offset, speed and wander, plus its odometry and GNSS."""
    cond = get_condition(condition)
    rng = np.random.default_rng([seed, index, 17])
    offset = world.config.lane_offset_m + float(rng.uniform(-0.4, 0.4))
    full = route_path(world, preset.mapping_route, lateral_offset_m=offset, wander_m=0.25, seed=int(rng.integers(1 << 30)))
    if preset.mapping_length_m is not None:
        full = crop_path(full, 0.0, min(preset.mapping_length_m, full.length))
    lead = 8.0  # metres driven before the first image (odometry and GNSS already running)
    length = min(preset.query_length_m + lead, full.length)
    n = max(1, len(preset.query_conditions))
    slack = max(full.length - length, 0.0)
    s0 = slack * (index + 0.5) / n + float(rng.uniform(-0.15, 0.15)) * slack / n
    s0 = float(np.clip(s0, 0.0, slack))
    path = crop_path(full, s0, s0 + length)
    top = float(rng.uniform(7.5, 10.5))
    traj = simulate_trajectory(path, Dynamics(top_speed_mps=top, start_speed_mps=top * 0.8), seed=int(rng.integers(1 << 30)))
    t_first = float(traj.times_at_distances(lead))
    cam_times = np.arange(t_first, traj.duration - 0.2, 1.0 / preset.camera_rate_hz)[: preset.max_query_frames]
    odo_times = np.arange(0.0, traj.duration, 1.0 / preset.odom_rate_hz)
    gnss_times = np.arange(0.0, traj.duration, 1.0 / preset.gnss_rate_hz)
    odo = simulate_odometry(traj, odo_times, odom_noise, seed=int(rng.integers(1 << 30)))
    fixes = simulate_gnss(traj, gnss_times, georef, gnss_noise, seed=int(rng.integers(1 << 30)))
    t0 = cond.date_epoch_s * 1_000_000_000
    ns = lambda t: t0 + int(round(float(t) * 1e9))
    odometry = [bags.OdometrySample(ns(t), tuple(T[:3, 3]), tuple(quat_xyzw_from_matrix(T[:3, :3])), cp,
                                    tuple(lin), tuple(ang), ct)
                for t, T, cp, lin, ang, ct in zip(odo.times, odo.odom_from_base, odo.pose_covariance,
                                                  odo.linear_velocity, odo.angular_velocity, odo.twist_covariance)]
    gnss = [bags.GnssFix(ns(t), float(la), float(lo), float(al), fixes.covariance_enu)
            for t, la, lo, al in zip(fixes.times, fixes.latitude_deg, fixes.longitude_deg, fixes.altitude_m)]
    return QueryDrive(condition, np.array([ns(t) for t in cam_times], np.int64), traj.world_from_base(cam_times),
                      odometry, gnss, offset, top)


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
               encoding: str = "rgb8", overwrite: bool = False, log: Callable[[str], None] | None = None) -> SynthReport:
    """Generate the world, the mapping images and SfM map, and one query bag per condition
    into ``out_dir`` (layout in the module docstring). Returns sizes, SfM statistics and timings.

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
    georef = DEFAULT_GEOREF
    keyframes = plan_mapping(world, preset, base_from_cam, seed)
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
                _write_query(query_dir, query, renderer, camera, base_from_cam, seed, encoding)
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
                      queries, report)
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
                 base_from_cam: np.ndarray, seed: int, encoding: str) -> None:
    """Render the query images and record the drive, messages in stamp order."""
    cams = [invert_transform(T @ base_from_cam) for T in query.world_from_base]
    tasks = [(query.condition, camera, c, _noise_seed(seed, query.condition, k)) for k, c in enumerate(cams)]
    info = bags.CameraInfoData.from_pinhole(camera.width, camera.height, camera.fx, camera.fy, camera.cx, camera.cy)
    truth = [bags.PoseSample.from_matrix(s, T) for s, T in zip(query.camera_stamps_ns, query.world_from_base)]
    # Sensor messages merged with the images by stamp (images arrive from the pool in order).
    others = sorted([(o.stamp_ns, 0, o) for o in query.odometry] + [(g.stamp_ns, 1, g) for g in query.gnss]
                    + [(p.stamp_ns, 2, p) for p in truth], key=lambda x: (x[0], x[1]))
    first = min(int(query.camera_stamps_ns[0]), others[0][0]) if others else int(query.camera_stamps_ns[0])
    j = 0
    with bags.DriveBagWriter(query_dir / query.condition) as writer:
        writer.write_static_transforms(first, [bags.StaticTransform.from_matrix(bags.BASE_FRAME, bags.CAMERA_FRAME, base_from_cam)])
        for stamp, rgb in zip(query.camera_stamps_ns, renderer.map(tasks)):
            while j < len(others) and others[j][0] <= stamp:
                _write_other(writer, others[j])
                j += 1
            writer.write_image(int(stamp), rgb, encoding)
            writer.write_camera_info(int(stamp), info)
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


@dataclass
class MappingPose:
    name: str
    stamp_ns: int
    cam_from_world: np.ndarray  # (4, 4)


def read_mapping_poses(path: str | Path) -> list[MappingPose]:
    """Read ``mapping/poses.txt`` (see ``_write_mapping_poses``)."""
    from pixloc_ros.core.geometry.transforms import make_transform, matrix_from_quat_xyzw
    out = []
    for line in Path(path).read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, stamp, *vals = line.split()
        if len(vals) != 7:
            raise ValueError(f"{path}: expected 'name stamp_ns qx qy qz qw tx ty tz', got {line!r}")
        v = np.array([float(x) for x in vals])
        out.append(MappingPose(name, int(stamp), make_transform(matrix_from_quat_xyzw(v[:4]), v[4:])))
    return out


def read_tum(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a TUM trajectory file -> (stamps_ns (N,) int64, frame_from_base (N, 4, 4))."""
    from pixloc_ros.core.geometry.transforms import make_transform, matrix_from_quat_xyzw
    stamps, poses = [], []
    for line in Path(path).read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split()
        sec, _, frac = parts[0].partition(".")
        stamps.append(int(sec) * 1_000_000_000 + int((frac + "000000000")[:9]))
        v = np.array([float(x) for x in parts[1:8]])
        poses.append(make_transform(matrix_from_quat_xyzw(v[3:7]), v[:3]))
    return np.array(stamps, np.int64), np.array(poses).reshape(-1, 4, 4)


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
                      queries: Sequence[QueryDrive], report: SynthReport) -> None:
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


@dataclass
class SynthDataset:
    """A generated dataset opened again: the world (regenerated from its seed), cameras, extrinsic."""

    root: Path
    world: World
    camera: PinholeCamera  # of the query images
    base_from_cam: np.ndarray  # (4, 4)
    georef: Georeference
    info: dict  # world.json
    mapping_camera: PinholeCamera | None = None  # of the keyframes and sfm/; None: same as ``camera``

    def __post_init__(self):
        if self.mapping_camera is None:
            self.mapping_camera = self.camera

    @property
    def query_conditions(self) -> list[str]:
        return list(self.info["query_conditions"])

    def bag_dir(self, condition: str) -> Path:
        return self.root / "queries" / condition


def load_dataset(root: str | Path) -> SynthDataset:
    """Open a ``pixloc-ros synth`` output folder (for rendering more views, training, tests)."""
    root = Path(root)
    info = json.loads((root / "world.json").read_text())
    if info.get("format") != FORMAT:
        raise ValueError(f"{root}/world.json has format {info.get('format')!r}, expected {FORMAT!r}")
    world = generate_world(int(info["seed"]), WorldConfig(**info["world_config"]))
    c = info["camera"]
    camera = PinholeCamera(int(info["image"]["width"]), int(info["image"]["height"]), c["fx"], c["fy"], c["cx"], c["cy"])
    mapping_camera = None
    if "mapping_camera" in info:  # absent from datasets written before mapping_scale existed
        m = info["mapping_camera"]
        mapping_camera = PinholeCamera(int(info["mapping_image"]["width"]), int(info["mapping_image"]["height"]),
                                       m["fx"], m["fy"], m["cx"], m["cy"])
    return SynthDataset(root, world, camera, np.array(info["base_from_cam"]["matrix"]),
                        Georeference.load(root / "georef.json"), info, mapping_camera)


# ---------------------------------------------------------------------------------------------
# Preview picture
# ---------------------------------------------------------------------------------------------

PREVIEW_ROUTE = "EFA"
PREVIEW_DISTANCE_M = 85.0  # along the preview route: on street FA, trees and parked cars on both sides


def preview_pose(world: World, base_from_cam: np.ndarray) -> np.ndarray:
    """A fixed, telling view for the preview: (4, 4) cam_from_world."""
    path = route_path(world, PREVIEW_ROUTE)
    k = int(np.searchsorted(path.s, PREVIEW_DISTANCE_M))
    yaw = float(path.heading[k])
    from pixloc_ros.core.geometry.transforms import make_transform, rot_z
    T = make_transform(rot_z(yaw), [path.xy[k, 0], path.xy[k, 1], 0.0])
    return invert_transform(T @ base_from_cam)


def render_preview(out_png: str | Path, seed: int = 0, width: int = 400, height: int = 300,
                   conditions: Sequence[str] | None = None) -> Path:
    """Save a grid of every condition seen from the same pose, plus that view's depth, as PNG."""
    import cv2
    conditions = list(conditions or (MAPPING_CONDITION, *QUERY_CONDITIONS))
    world = generate_world(seed)
    camera = PinholeCamera.from_fov(width, height, 61.0)
    pose = preview_pose(world, base_from_camera())
    tiles, depth = [], None
    for name in conditions:
        rgb, depth = render(world, name, camera, pose)
        tiles.append(_label(rgb, name + (" - mapping" if name == MAPPING_CONDITION else " - query")))
    if depth is not None:
        finite = np.isfinite(depth)
        # Log depth from 2 m (bright) to 150 m (dark); sky black.
        t = np.zeros_like(depth)
        t[finite] = 1.0 - np.clip(np.log(np.maximum(depth[finite], 2.0) / 2.0) / np.log(75.0), 0, 1)
        vis = cv2.applyColorMap((t * 255).astype(np.uint8), cv2.COLORMAP_MAGMA)[..., ::-1]
        vis[~finite] = 0
        tiles.append(_label(np.ascontiguousarray(vis), "depth, log scale 2-150 m"))
    cols = 3
    while len(tiles) % cols:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.concatenate(tiles[i:i + cols], 1) for i in range(0, len(tiles), cols)]
    grid = np.concatenate(rows, 0)
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out_png), grid[..., ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 9])
    return out_png


def _label(rgb: np.ndarray, text: str) -> np.ndarray:
    """Write ``text`` in white on a dark band in the top-left corner."""
    import cv2
    img = np.ascontiguousarray(rgb.copy())
    scale = max(0.45, img.shape[1] / 700)
    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    band = img[: h + base + 10, : w + 12].astype(np.float32)
    img[: h + base + 10, : w + 12] = (band * 0.45).astype(np.uint8)
    cv2.putText(img, text, (6, h + 5), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return img


__all__ = ["PRESETS", "TEST_PRESET", "SynthPreset", "SynthReport", "SynthDataset", "synthesize", "load_dataset", "render_preview",
           "read_mapping_poses", "read_tum", "plan_mapping", "plan_query", "camera_for", "mapping_camera_for",
           "get_preset"]
