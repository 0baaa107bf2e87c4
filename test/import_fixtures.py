"""Tiny dataset folders in the published Extended CMU Seasons / RobotCar Seasons layouts, for the
importer tests: real file names and pose-line formats, few images, poses of a car driving down
a street in a world frame that is deliberately *not* z-up (SfM frames are arbitrary)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from scipy.spatial.transform import Rotation

# world (z up) from a level camera looking along +x: optical z -> +x, x -> -y, y -> -z.
LEVEL_FROM_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


@dataclass
class TruePose:
    """Ground truth of one fixture image: cam_from_world in the dataset's frame."""

    name: str
    stamp_ns: int
    camera: str
    R: np.ndarray  # (3, 3)
    t: np.ndarray  # (3,)

    @property
    def center(self) -> np.ndarray:
        return -self.R.T @ self.t


def dataset_from_level(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A random rigid transform from a z-up street frame to the 'dataset' frame."""
    rng = np.random.default_rng(seed)
    return Rotation.random(random_state=rng.integers(1 << 31)).as_matrix(), rng.uniform(-300, 300, 3)


def street_pose(x: float, yaw_deg: float, rng: np.random.Generator, world: tuple[np.ndarray, np.ndarray]
                ) -> tuple[np.ndarray, np.ndarray]:
    """cam_from_world (dataset frame) of a camera at distance ``x`` along the street, 1.5 m high,
    heading ``yaw_deg`` off the street, with up to 2 deg of pitch/roll."""
    tilt = Rotation.from_euler("xyz", [*rng.uniform(-2, 2, 2), yaw_deg + rng.uniform(-3, 3)], degrees=True)
    R_level_cam = tilt.as_matrix() @ LEVEL_FROM_OPTICAL
    c_level = np.array([x, rng.uniform(-0.3, 0.3), 1.5 + rng.uniform(-0.05, 0.05)])
    R_dl, t_dl = world
    R_world_cam, c_world = R_dl @ R_level_cam, R_dl @ c_level + t_dl
    return R_world_cam.T, -R_world_cam.T @ c_world


def write_image(path: Path, width: int, height: int, seed: int, gray: bool = False) -> None:
    """A small-on-disk image of the given size (smooth gradient and a few discs)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    img = np.stack([(x * 255 // max(width - 1, 1)), (y * 255 // max(height - 1, 1)),
                    np.full_like(x, seed * 37 % 256)], -1).astype(np.uint8)
    for _ in range(4):
        cv2.circle(img, (int(rng.integers(width)), int(rng.integers(height))), int(rng.integers(5, 60)),
                   tuple(int(v) for v in rng.integers(0, 255, 3)), -1)
    if gray:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img)


def quat_wxyz(R: np.ndarray) -> np.ndarray:
    return Rotation.from_matrix(R).as_quat(scalar_first=True)


def quantised(R: np.ndarray, t: np.ndarray, decimals: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """The pose a CMU/NVM line with ``decimals`` digits really holds (quaternion + centre), so that
    round-trip tests compare against what the file says, not against unprinted digits."""
    q = np.round(quat_wxyz(R), decimals)
    c = np.round(-R.T @ t, decimals)
    Rq = Rotation.from_quat(q / np.linalg.norm(q), scalar_first=True).as_matrix()
    return Rq, -Rq @ c


# ---------------------------------------------------------------------------------------------
# Extended CMU Seasons
# ---------------------------------------------------------------------------------------------

# Published intrinsics (the issue, pixloc's cmu.py): c0/c1 OPENCV at 1024x768.
CMU_INTRINSICS_TXT = """# Camera list with one line of data per camera:
#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]
c0 OPENCV 1024 768 868.993378 866.063001 525.942323 420.042529 -0.399431 0.188924 0.000153 0.000571
c1 OPENCV 1024 768 873.382641 876.489513 529.324138 397.272397 -0.397066 0.181925 0.000176 -0.000579
"""

# The two cameras on one car (a rigid rig): car frame x right, y down, z forward (optical-like);
# c0 looks 45 deg front-left from 0.5 m left, c1 45 deg front-right from 0.5 m right. (4, 4) car_from_cam.
def _car_from_cam(yaw_deg: float, centre) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = Rotation.from_euler("y", yaw_deg, degrees=True).as_matrix()
    T[:3, 3] = centre
    return T


CMU_CAR_FROM_CAM = {"c0": _car_from_cam(-45.0, (-0.5, 0.05, 0.3)), "c1": _car_from_cam(45.0, (0.5, 0.05, 0.3))}

# Reference condition start (2011-04-21, as slice 2's README example) and two query days.
CMU_REF_START_US = 1303398474779487
CMU_QUERY_DAYS_US = (1283347879534213, 1287504392343215)  # 2010-09-01, 2010-10-19


@dataclass
class CmuFixture:
    slice_dir: Path
    reference: list[TruePose]
    queries: list[TruePose]  # posed queries (camera-poses/)
    unposed: list[str]  # query images without ground truth
    world: tuple[np.ndarray, np.ndarray]


def make_cmu_slice(root: Path, n_ref: int = 3, n_query: int = 3, seed: int = 0,
                   write_intrinsics: bool = True, number: int = 2, x0: float = 0.0, world_seed: int | None = None,
                   index0: int = 0, time0_us: int = 0) -> CmuFixture:
    """``root/slice<number>`` with ``n_ref`` reference images per camera, two query days with
    ``n_query`` posed images per camera each, and one unposed query image per day; the street
    starts ``x0`` metres along, image indices and times are offset by ``index0`` / ``time0_us``
    (slices of one route: same ``world_seed``, consecutive stretches)."""
    rng = np.random.default_rng(seed)
    world = dataset_from_level(seed if world_seed is None else world_seed)
    slice_dir = root / f"slice{number}"
    if write_intrinsics:
        (root / "intrinsics.txt").write_text(CMU_INTRINSICS_TXT)

    def images(start_us: int, count: int, first_index: int, folder: str) -> list[TruePose]:
        out = []
        for i in range(count):
            car_from_world = np.eye(4)  # the car: a forward-looking "camera" pose on the street
            car_from_world[:3, :3], car_from_world[:3, 3] = street_pose(x0 + 2.0 * i, 0.0, rng, world)
            for k, cam in enumerate(("c0", "c1")):
                us = start_us + time0_us + i * 250_000 + k * 137  # 4 Hz, the cameras a few us apart
                name = f"img_{first_index + index0 + i:05d}_{cam}_{us}us.jpg"
                T = np.linalg.inv(CMU_CAR_FROM_CAM[cam]) @ car_from_world  # cam_from_world: a rigid rig
                R, t = quantised(T[:3, :3], T[:3, 3])
                write_image(slice_dir / folder / name, 1024, 768, seed=first_index + i + 7 * k)
                out.append(TruePose(name, us * 1000, cam, R, t))
        return out

    reference = images(CMU_REF_START_US, n_ref, 122, "database")
    queries, unposed, days = [], [], []
    for d, start in enumerate(CMU_QUERY_DAYS_US):
        day = images(start, n_query + 1, 4000 + 1000 * d, "query")
        unposed += [p.name for p in day[-2:]]  # the last pair of each day has no ground truth
        queries += day[:-2]
        days.append(day[:-2])

    def pose_lines(poses: list[TruePose]) -> str:
        rows = []
        for p in poses:
            q = quat_wxyz(p.R)
            rows.append(f"{p.name} " + " ".join(f"{v:.6f}" for v in (*q, *p.center)))
        return "\n".join(rows) + "\n"

    (slice_dir / f"ground-truth-database-images-slice{number}.txt").write_text(pose_lines(reference))
    (slice_dir / "camera-poses").mkdir()
    for d, day in enumerate(days):
        (slice_dir / "camera-poses" / f"slice{number}_{d}.txt").write_text(pose_lines(day))
    (slice_dir / f"test-images-slice{number}.txt").write_text(
        "\n".join(sorted([p.name for p in queries] + unposed)) + "\n")
    return CmuFixture(slice_dir, reference, queries, unposed, world)


# ---------------------------------------------------------------------------------------------
# RobotCar Seasons
# ---------------------------------------------------------------------------------------------

ROBOTCAR_INTRINSICS = {"left": (400.0, 400.0, 500.107605, 511.461426),
                       "rear": (400.0, 400.0, 508.222931, 498.187378),
                       "right": (400.0, 400.0, 502.503754, 490.259033)}

# car frame (x right, y down, z forward) from camera, [R c; 0 1]; the rear one as published
# (rear camera 2.09 m behind, looking back and 14 deg down), left/right made up the same way.
ROBOTCAR_EXTRINSICS = {
    "rear": np.array([[-0.999802, -0.011530, -0.016233, 0.060209],
                      [-0.015184, 0.968893, 0.247013, 0.153691],
                      [0.012880, 0.247210, -0.968876, -2.086142],
                      [0.0, 0.0, 0.0, 1.0]]),
}


def _side_extrinsic(sign: float) -> np.ndarray:
    """A camera looking sideways (sign -1: left, +1: right), 10 deg down, 1 m aside."""
    R = Rotation.from_euler("y", sign * 90, degrees=True).as_matrix() @ Rotation.from_euler("x", -10, degrees=True).as_matrix()
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = [sign * 0.9, 0.1, -1.0]
    return T


ROBOTCAR_EXTRINSICS["left"] = _side_extrinsic(-1.0)
ROBOTCAR_EXTRINSICS["right"] = _side_extrinsic(1.0)


@dataclass
class RobotCarFixture:
    root: Path
    reference: list[TruePose]
    queries: dict[str, list[TruePose]]  # condition -> posed rear+left+right images
    unposed: list[str]
    world: tuple[np.ndarray, np.ndarray]


def _orthonormalise(R: np.ndarray) -> np.ndarray:
    u, _, vt = np.linalg.svd(R)
    return u @ vt


def make_robotcar(root: Path, n_ref: int = 3, n_query: int = 2, seed: int = 1) -> RobotCarFixture:
    """``root`` in the RobotCar Seasons layout: overcast-reference (NVM poses, three cameras) and
    two query conditions whose rear poses are in robotcar_v2_train.txt (4x4 camera-to-world)."""
    rng = np.random.default_rng(seed)
    world = dataset_from_level(seed)
    for cam, (fx, fy, cx, cy) in ROBOTCAR_INTRINSICS.items():
        path = root / "intrinsics" / f"{cam}_intrinsics.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"fx {fx:.6f}\nfy {fy:.6f}\ncx {cx:.6f}\ncy {cy:.6f}\n")
        T = ROBOTCAR_EXTRINSICS[cam].copy()
        T[:3, :3] = _orthonormalise(T[:3, :3])
        ROBOTCAR_EXTRINSICS[cam] = T
        path = root / "extrinsics" / f"{cam}_extrinsics.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(",".join(f"{v:.6f}" for v in row) for row in T) + "\n")

    def car_poses(start_us: int, count: int, condition: str, write: bool = True) -> list[TruePose]:
        out = []
        for i in range(count):
            us = start_us + i * 1_000_000
            # the car drives along +x: car frame (x right, y down, z fwd) is an optical-like frame
            R_cw, t_cw = street_pose(3.0 * i, 0.0, rng, world)  # car_from_world
            for cam in ("left", "rear", "right"):
                cam_from_car = np.linalg.inv(ROBOTCAR_EXTRINSICS[cam])
                T = cam_from_car @ np.vstack([np.c_[R_cw, t_cw], [0, 0, 0, 1]])
                name = f"{condition}/{cam}/{us}.jpg"
                if write:
                    write_image(root / "images" / name, 1024, 1024, seed=i + 3 * len(cam))
                out.append(TruePose(name, us * 1000, cam, T[:3, :3], T[:3, 3]))
        return out

    reference = car_poses(1417178853389469, n_ref, "overcast-reference")
    nvm = ["NVM_V3", "", str(len(reference))]
    for p in reference:
        q = quat_wxyz(p.R)
        png = p.name.replace(".jpg", ".png")
        nvm.append(f"{png} 400 " + " ".join(f"{v:.9f}" for v in (*q, *p.center)) + " 0 0")
    nvm += ["", "0", "", "0", ""]
    path = root / "3D-models" / "all-merged" / "all.nvm"
    path.parent.mkdir(parents=True)
    path.write_text("\n".join(nvm))

    queries, unposed, train = {}, [], []
    for condition, start in (("night", 1418235223450115), ("sun", 1425997287636214)):
        poses = car_poses(start, n_query + 1, condition)
        queries[condition] = poses[: 3 * n_query]
        unposed += [p.name for p in poses[3 * n_query:]]
        for p in queries[condition]:
            if p.camera == "rear":
                R_wc, c = p.R.T, p.center
                M = np.vstack([np.c_[R_wc, c], [0, 0, 0, 1]])
                train.append(p.name.replace(".jpg", ".png") + " " + " ".join(f"{v:.9f}" for v in M.reshape(-1)))
    (root / "robotcar_v2_train.txt").write_text("\n".join(train) + "\n")
    return RobotCarFixture(root, reference, queries, unposed, world)


# ---------------------------------------------------------------------------------------------
# A COLMAP model consistent with the fixture poses (points seen by the cameras)
# ---------------------------------------------------------------------------------------------

def write_projected_model(path: Path, poses: list[TruePose], cameras: dict[str, tuple[str, int, int, tuple]],
                          n_points: int = 60, seed: int = 0, names: dict[str, str] | None = None):
    """A COLMAP model of ``poses`` (dataset frame) whose points project exactly onto their keypoints.

    cameras: name -> (COLMAP model, width, height, params). Points are drawn 5-20 m in front of
    the cameras; every point is observed by each camera that sees it inside the image. ``names``
    renames images in the model (e.g. the dataset's .png names). Returns the SfmModel.
    """
    import torch

    from pixloc_ros.core.geometry.camera import Camera
    from pixloc_ros.core.maps.colmap_io import SfmCamera, SfmImage, SfmModel, write_model

    rng = np.random.default_rng(seed)
    cam_ids = {name: i + 1 for i, name in enumerate(sorted(cameras))}
    engine = {name: Camera.from_colmap(m, w, h, p) for name, (m, w, h, p) in cameras.items()}
    xyz = []
    for k in range(n_points):
        p = poses[k % len(poses)]
        w, h = cameras[p.camera][1:3]
        fx = float(engine[p.camera].f[0])
        u, v, d = rng.uniform(0.2 * w, 0.8 * w), rng.uniform(0.2 * h, 0.8 * h), rng.uniform(5, 20)
        ray = np.array([(u - w / 2) / fx, (v - h / 2) / fx, 1.0]) * d
        xyz.append(p.R.T @ (ray - p.t))
    xyz = np.array(xyz)
    images, tracks_img, tracks_idx = {}, [[] for _ in xyz], [[] for _ in xyz]
    for i, p in enumerate(poses, start=1):
        cam = engine[p.camera]
        p_cam = xyz @ p.R.T + p.t
        uv, valid = cam.world2image(torch.from_numpy(p_cam))
        inside = valid & cam.in_image(uv)
        uv = uv.numpy() + 0.5  # COLMAP pixel convention
        kp, ids = [], []
        for j in np.nonzero(inside.numpy())[0]:
            tracks_img[j].append(i)
            tracks_idx[j].append(len(kp))
            kp.append(uv[j])
            ids.append(j + 1)
        images[i] = SfmImage(i, (names or {}).get(p.name, p.name), cam_ids[p.camera], p.R.copy(), p.t.copy(),
                             np.array(kp).reshape(-1, 2), np.array(ids, np.int64))
    keep = [j for j in range(len(xyz)) if len(tracks_img[j]) >= 1]
    model = SfmModel(
        {cam_ids[n]: SfmCamera(cam_ids[n], m, w, h, np.array(p, np.float64)) for n, (m, w, h, p) in cameras.items()},
        images, np.array([j + 1 for j in keep], np.int64), xyz[keep], np.full((len(keep), 3), 128, np.uint8),
        [np.array(tracks_img[j], np.int64) for j in keep], [np.array(tracks_idx[j], np.int64) for j in keep])
    # keypoints of dropped points must not reference them
    kept = set(j + 1 for j in keep)
    for im in images.values():
        im.point3D_ids = np.array([i if i in kept else -1 for i in im.point3D_ids], np.int64)
    write_model(model, path)
    return model
