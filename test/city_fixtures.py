"""A small hand-built "city" map for the tile tests: two crossing streets driven both ways,
spanning several 20 m tiles, with points seen from keyframes on both sides of tile boundaries."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from pixloc_ros.core.geometry.georef import Georeference
from pixloc_ros.core.maps.mapfile_format import LevelInfo, MapCamera, MapHeader
from pixloc_ros.core.maps.mapfile_writer import contents_from_observations, write_map
from pixloc_ros.core.maps.retrieval import BASE_FROM_OPTICAL

LEVELS = [LevelInfo(1, 8), LevelInfo(4, 16), LevelInfo(16, 16)]
CAMERA = MapCamera(1, "PINHOLE", 640, 480, (400.0, 400.0, 320.0, 240.0))


def cam_from_world(center, yaw: float) -> np.ndarray:
    """(4, 4) level camera at ``center`` looking along ``yaw`` (radians from +x towards +y), z-up map."""
    base = np.eye(4)
    base[:3, :3] = Rotation.from_euler("Z", yaw).as_matrix()
    base[:3, 3] = center
    return np.linalg.inv(base @ BASE_FROM_OPTICAL)


def street_keyframes() -> tuple[np.ndarray, list[str]]:
    """(K, 4, 4) cam_from_world and names: street A along x at y = 5 (x = 0..99, both
    directions), street B along y at x = 47 (y = -40..39, northbound only)."""
    poses, names = [], []
    for x in range(100):
        poses.append(cam_from_world([x, 5.0, 1.5], 0.0))
        names.append(f"a_east_{x:03d}")
    for x in range(100):
        poses.append(cam_from_world([x + 0.5, 5.5, 1.5], math.pi))
        names.append(f"a_west_{x:03d}")
    for y in range(-40, 40):
        poses.append(cam_from_world([47.0, y, 1.5], math.pi / 2))
        names.append(f"b_north_{y + 40:03d}")
    return np.stack(poses), names


def build_city_map(path: Path, seed: int = 0) -> Path:
    """Write the city map as one file at ``path``; each keyframe observes the points 2-12 m
    ahead of it within 8 m to either side (so tracks cross tile boundaries)."""
    rng = np.random.default_rng(seed)
    poses, names = street_keyframes()
    K = len(poses)
    xs = np.arange(-5, 110, 1.0)
    xyz = [[x, y, z] for x in xs for y in (0.0, 10.0) for z in (0.5, 3.0)]  # facades of street A
    xyz += [[x, y, 2.0] for y in np.arange(-50, 55, 1.0) for x in (43.0, 51.0)]  # facades of street B
    xyz = np.array(xyz)
    P = len(xyz)
    centers = -np.einsum("kji,kj->ki", poses[:, :3, :3], poses[:, :3, 3])
    dirs = poses[:, 2, :3]
    obs_kf, obs_pt = [], []
    for k in range(K):
        rel = xyz - centers[k]
        along = rel @ dirs[k]
        side = np.linalg.norm(rel[:, :2] - along[:, None] * dirs[k][None, :2], axis=1)
        seen = np.flatnonzero((along > 2.0) & (along < 12.0) & (side < 8.0))
        obs_kf += [k] * len(seen)
        obs_pt += seen.tolist()
    obs_kf, obs_pt = np.array(obs_kf), np.array(obs_pt)
    track = np.bincount(obs_pt, minlength=P)
    track[::11] = 2  # a few short SfM tracks
    m = len(obs_kf)
    feats = []
    for level in LEVELS:
        f = rng.normal(size=(m, level.dim))
        feats.append((f / np.linalg.norm(f, axis=1, keepdims=True)).astype(np.float16))
    conf = rng.uniform(0.05, 1.0, (m, 3)).astype(np.float16)
    uv = rng.uniform(0, 600, (m, 2))
    header = MapHeader("c" * 64, "vgg16", LEVELS, [CAMERA], names, Georeference(40.44, -79.99, 300.0),
                       {"created_utc": f"fixture seed {seed}"})
    kf_arrays = {"keyframe_ids": np.arange(K) * 3 + 11, "keyframe_camera_index": np.zeros(K),
                 "keyframe_R": poses[:, :3, :3], "keyframe_t": poses[:, :3, 3],
                 "keyframe_image_size": np.tile([640, 480], (K, 1))}
    pt_arrays = {"point_ids": np.arange(P) * 5 + 2, "point_xyz": xyz, "point_track_length": track}
    return write_map(path, contents_from_observations(header, kf_arrays, pt_arrays, obs_kf, obs_pt, feats, conf, uv))
