"""Localization problems for the reference-parity tests: one reference image with 3D points it
sees, a few query images with their true poses, and perturbed initial poses.

- ``kitti_problem``: real car images, KITTI odometry 00 frames 0-5 (``../shared/data/real``):
  points from the stereo pair of frame 0 (OpenCV semi-global matching, the 0.573 m baseline),
  queries frames 1-5 with the ground-truth poses.
- ``synthetic_problem``: the tests' synthetic world (always available): a mapping keyframe and its
  SfM points, the next keyframes of the route as queries.

Poses are ``cam_from_world`` 4x4 float64; the camera is pinhole (fx, fy, cx, cy, width, height)
with the pixel-centre origin.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from scipy.spatial.transform import Rotation

REPO = Path(__file__).resolve().parents[1]
KITTI = REPO.parent / "shared" / "data" / "real" / "kitti00_first6"
KITTI_CAMERA = (718.856, 718.856, 607.1928, 185.2157, 1241, 376)  # fx fy cx cy w h (OpenCV pixel centres)
KITTI_BASELINE_M = 0.573


@dataclass
class ParityProblem:
    name: str
    camera: tuple[float, float, float, float, int, int]  # fx, fy, cx, cy (pixel-centre origin), width, height
    reference_image: np.ndarray  # (H, W, 3) uint8 RGB
    reference_from_world: np.ndarray  # (4, 4)
    xyz: np.ndarray  # (N, 3) world points the reference image sees
    query_images: list[np.ndarray]
    query_from_world: list[np.ndarray]  # true poses
    inits: list[np.ndarray]  # perturbed initial poses, one per query


def perturb(cam_from_world: np.ndarray, rng: np.random.Generator, metres: float, degrees: float) -> np.ndarray:
    """Left perturbation: a random direction of ``metres`` and a random axis of ``degrees``."""
    dt = rng.normal(size=3)
    dw = rng.normal(size=3)
    delta = np.eye(4)
    delta[:3, :3] = Rotation.from_rotvec(np.radians(degrees) * dw / np.linalg.norm(dw)).as_matrix()
    delta[:3, 3] = metres * dt / np.linalg.norm(dt)
    return delta @ cam_from_world


def _rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[..., None], 3, axis=2)


def kitti_problem(max_points: int = 2000, metres: float = 0.5, degrees: float = 2.0, seed: int = 0) -> ParityProblem:
    """The KITTI problem (skip the caller when ``KITTI`` is absent)."""
    left = cv2.imread(str(KITTI / "ch5_stereo_left.png"), cv2.IMREAD_GRAYSCALE)
    right = cv2.imread(str(KITTI / "ch5_stereo_right.png"), cv2.IMREAD_GRAYSCALE)
    block = 5
    sgbm = cv2.StereoSGBM_create(minDisparity=0, numDisparities=128, blockSize=block, P1=8 * block * block,
                                 P2=32 * block * block, uniquenessRatio=10, speckleWindowSize=100, speckleRange=2,
                                 disp12MaxDiff=1, mode=cv2.STEREO_SGBM_MODE_SGBM_3WAY)
    disparity = sgbm.compute(left, right).astype(np.float64) / 16.0
    corners = cv2.goodFeaturesToTrack(left, maxCorners=4 * max_points, qualityLevel=0.005, minDistance=4)[:, 0]
    u, v = corners[:, 0], corners[:, 1]
    d = disparity[np.round(v).astype(int), np.round(u).astype(int)]
    fx, fy, cx, cy, w, h = KITTI_CAMERA
    depth = np.where(d > 1.0, fx * KITTI_BASELINE_M / np.maximum(d, 1e-9), 0.0)
    ok = (depth > 2.0) & (depth < 60.0)
    u, v, z = u[ok][:max_points], v[ok][:max_points], depth[ok][:max_points]
    p_cam0 = np.stack([(u - cx) / fx * z, (v - cy) / fy * z, z], -1)
    rows = np.loadtxt(KITTI / "KITTI_00_gt_first6.txt").reshape(-1, 3, 4)
    world_from_cam = [np.vstack([r, [0, 0, 0, 1]]) for r in rows]
    xyz = p_cam0 @ world_from_cam[0][:3, :3].T + world_from_cam[0][:3, 3]
    truths = [np.linalg.inv(T) for T in world_from_cam]
    rng = np.random.default_rng(seed)
    queries = [_rgb(cv2.imread(str(KITTI / f"ch8_{k:06d}.png"), cv2.IMREAD_GRAYSCALE)) for k in range(1, 6)]
    return ParityProblem("kitti00", KITTI_CAMERA, _rgb(left), truths[0], xyz, queries, truths[1:],
                         [perturb(T, rng, metres, degrees) for T in truths[1:]])


def synthetic_problem(synth_dir: Path, num_queries: int = 3, metres: float = 0.3, degrees: float = 1.5,
                      seed: int = 0) -> ParityProblem:
    """A keyframe of the synthetic test world and the next ones of its route."""
    from pixloc_ros.core.maps.colmap_io import read_model

    sfm = read_model(synth_dir / "sfm")
    images = sorted(sfm.images.values(), key=lambda im: im.name)
    ref = images[len(images) // 3]
    cam = sfm.cameras[ref.camera_id]
    if cam.model not in ("PINHOLE", "SIMPLE_PINHOLE"):
        raise ValueError(f"the synthetic world's camera is {cam.model}, expected a pinhole")
    fx, fy, cx, cy = (cam.params[0], cam.params[0], *cam.params[1:3]) if cam.model == "SIMPLE_PINHOLE" \
        else tuple(cam.params[:4])
    camera = (float(fx), float(fy), float(cx) - 0.5, float(cy) - 0.5, int(cam.width), int(cam.height))
    ids = set(int(i) for i in ref.point3D_ids if i >= 0)
    rows = [r for r, pid in enumerate(sfm.point_ids) if int(pid) in ids]
    xyz = sfm.xyz[rows]

    def pose(im):
        T = np.eye(4)
        T[:3, :3], T[:3, 3] = im.R, im.t
        return T

    def load(im):
        return cv2.cvtColor(cv2.imread(str(synth_dir / "mapping" / "images" / im.name)), cv2.COLOR_BGR2RGB)

    index = images.index(ref)
    queries = images[index + 1:index + 1 + num_queries]
    rng = np.random.default_rng(seed)
    return ParityProblem("synthetic", camera, load(ref), pose(ref), xyz, [load(q) for q in queries],
                         [pose(q) for q in queries], [perturb(pose(q), rng, metres, degrees) for q in queries])


def colmap_model(problem: ParityProblem, image_name: str = "reference.png"):
    """An in-memory ``SfmModel`` of the reference image alone (PINHOLE camera, COLMAP's corner
    origin), observing every point at its projection: what ``compile_map`` compiles."""
    from pixloc_ros.core.maps.colmap_io import SfmCamera, SfmImage, SfmModel

    fx, fy, cx, cy, w, h = problem.camera
    T = problem.reference_from_world
    p = problem.xyz @ T[:3, :3].T + T[:3, 3]
    xys = np.stack([fx * p[:, 0] / p[:, 2] + cx, fy * p[:, 1] / p[:, 2] + cy], -1) + 0.5
    n = len(problem.xyz)
    camera = SfmCamera(1, "PINHOLE", int(w), int(h), np.array([fx, fy, cx + 0.5, cy + 0.5]))
    image = SfmImage(1, image_name, 1, T[:3, :3].copy(), T[:3, 3].copy(), xys, np.arange(n, dtype=np.int64))
    return SfmModel({1: camera}, {1: image}, np.arange(n, dtype=np.int64), problem.xyz.astype(np.float64),
                    np.zeros((n, 3), np.uint8), [np.array([1], np.int64) for _ in range(n)],
                    [np.array([i], np.int64) for i in range(n)])
