"""RobotCar Seasons (v2): read the dataset into an :class:`ImportPlan`.

Layout, from the dataset's README (https://www.visuallocalization.net/datasets/) and the readers
in cvg/Hierarchical-Localization ``hloc/pipelines/RobotCar/`` and naver/kapture's
``import_robotcar_seasons.py``::

    images/<condition>/<camera>/<timestamp>.jpg    camera in left/rear/right, timestamp in us
    intrinsics/<camera>_intrinsics.txt             four lines "fx v", "fy v", "cx v", "cy v"
    extrinsics/<camera>_extrinsics.txt             4x4 [R c; 0 1], ',' separated, car_from_camera
    3D-models/all-merged/all.nvm                   reference poses of overcast-reference images
    robotcar_v2_train.txt                          query ground truth: name + 4x4 world_from_camera

Conventions stated by the README: images are undistorted (pinhole), 1024x1024, pixel (0, 0) at
the top-left corner (COLMAP's convention, as hloc/kapture feed them to COLMAP unchanged); NVM
stores the rotation world -> camera as a quaternion (w first) and the camera *position* c, so
t = -R c; extrinsics hold "R [that] maps from camera to world [car] coordinates and c the
position of the camera". The ``robotcar_v2_train.txt`` rows are 4x4 camera-to-world matrices
(kapture inverts them into world-to-camera; a line reads ``night/rear/<t>.png r00 .. r33``),
for the rear camera only; the left and right poses follow through the extrinsics.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from pixloc_ros.core.geometry.transforms import make_transform, matrix_from_quat_wxyz

from .common import BASE_FROM_OPTICAL, CameraSpec, Frame, ImportPlan, center_to_translation, invert_rigid, \
    parse_floats, read_table, split_by_gap

logger = logging.getLogger(__name__)

ROBOTCAR_CAMERAS = ("left", "rear", "right")
REFERENCE_CONDITION = "overcast-reference"
QUERY_CONDITIONS = ("dawn", "dusk", "night", "night-rain", "overcast-summer", "overcast-winter",
                    "rain", "snow", "sun")

# Published intrinsics of the undistorted 1024x1024 images (PINHOLE fx fy cx cy, COLMAP pixel
# convention). Source: the dataset's intrinsics/{left,rear,right}_intrinsics.txt, as reproduced
# verbatim by several public readers of RobotCar Seasons (the rear one also in
# Oxford RobotCar's SDK models); the importer prefers the files when they are present.
ROBOTCAR_INTRINSICS = {
    "left": (400.0, 400.0, 500.107605, 511.461426),
    "rear": (400.0, 400.0, 508.222931, 498.187378),
    "right": (400.0, 400.0, 502.503754, 490.259033),
}
ROBOTCAR_SIZE = (1024, 1024)

# The extrinsics' "car" frame is x right, y down, z forward (inferred: the published rear
# camera sits at c = (0.06, 0.15, -2.09) and looks along -z, i.e. backwards, 14 deg down);
# base_link (REP-103) from it is the same axis swap as from an optical frame.
BASE_FROM_CAR = make_transform(BASE_FROM_OPTICAL, np.zeros(3))

TIMESTAMP_NAME = re.compile(r"^(?P<time_us>\d+)\.(jpg|png)$")


def read_intrinsics_file(path: Path) -> tuple[float, float, float, float]:
    """``<camera>_intrinsics.txt`` -> (fx, fy, cx, cy); lines are ``label value``."""
    values = {}
    for line_no, row in read_table(path):
        if len(row) != 2:
            raise ValueError(f"{path}:{line_no}: expected 'label value', got {row}")
        values[row[0].lower()] = parse_floats(row[1:], f"{path}:{line_no}")[0]
    missing = {"fx", "fy", "cx", "cy"} - set(values)
    if missing:
        raise ValueError(f"{path}: missing {sorted(missing)}")
    return values["fx"], values["fy"], values["cx"], values["cy"]


def read_extrinsics_file(path: Path) -> np.ndarray:
    """``<camera>_extrinsics.txt`` (4x4, ',' or space separated) -> (4, 4) car_from_camera."""
    text = Path(path).read_text().replace(",", " ")
    values = parse_floats(text.split(), str(path))
    if len(values) != 16:
        raise ValueError(f"{path}: expected 16 numbers of a 4x4 matrix, got {len(values)}")
    T = np.array(values).reshape(4, 4)
    if not np.allclose(T[3], [0, 0, 0, 1]) or not np.allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3), atol=1e-3):
        raise ValueError(f"{path}: not a rigid transform [R c; 0 1]: {T.tolist()}")
    return T


def normalise_name(name: str) -> str:
    """Dataset-relative image name: strip './', use the published .jpg extension (the 3D models
    and pose lists were made from .png files)."""
    name = name.strip()
    while name.startswith("./"):
        name = name[2:]
    return re.sub(r"\.png$", ".jpg", name)


def read_nvm_poses(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Camera list of the first model of an NVM file -> {name: (R, t) cam_from_world}.

    NVM camera lines: ``name focal qw qx qy qz cx cy cz radial 0`` (VisualSfM's format;
    c is the camera centre). Points are not read.
    """
    lines = Path(path).read_text().splitlines()
    i = 0
    while i < len(lines) and (not lines[i].strip() or lines[i].startswith("NVM_V3")):
        i += 1
    try:
        count = int(lines[i].split()[0])
    except (IndexError, ValueError):
        raise ValueError(f"{path}:{i + 1}: expected the number of cameras after the NVM_V3 header") from None
    poses = {}
    i += 1
    while len(poses) < count:
        if i >= len(lines):
            raise ValueError(f"{path}: file ends after {len(poses)} of {count} cameras")
        row = lines[i].split()
        i += 1
        if not row:
            continue
        if len(row) < 9:
            raise ValueError(f"{path}:{i}: expected 'name f qw qx qy qz cx cy cz r 0'")
        values = parse_floats(row[2:9], f"{path}:{i}")
        try:
            R = matrix_from_quat_wxyz(values[:4])
        except ValueError as err:
            raise ValueError(f"{path}:{i}: {err}") from None
        poses[normalise_name(row[0])] = (R, center_to_translation(R, values[4:]))
    return poses


def read_colmap_poses(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Poses of a COLMAP model folder -> {normalised name: (R, t) cam_from_world}."""
    from pixloc_ros.core.maps.colmap_io import read_model

    return {normalise_name(im.name): (im.R, im.t) for im in read_model(path).images.values()}


def read_world_from_cam_list(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``robotcar_v2_train.txt``: ``name`` + 16 (or 12) numbers of world_from_camera, row-major
    -> {name: (R, t) cam_from_world}."""
    poses = {}
    for line_no, row in read_table(path):
        values = parse_floats(row[1:], f"{path}:{line_no}")
        if len(values) not in (12, 16):
            raise ValueError(f"{path}:{line_no}: expected a name and 12 or 16 matrix entries, got {len(values)}")
        M = np.array(values[:12]).reshape(3, 4)
        if not np.allclose(M[:, :3] @ M[:, :3].T, np.eye(3), atol=1e-3):
            raise ValueError(f"{path}:{line_no}: the rotation block is not orthonormal")
        poses[normalise_name(row[0])] = invert_rigid(M[:, :3], M[:, 3])
    return poses


def find_file(root: Path, explicit: str | Path | None, candidates: list[str]) -> Path | None:
    """``explicit`` (must exist) or the first existing candidate below ``root``."""
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist")
        return path
    for c in candidates:
        if (root / c).is_file():
            return root / c
    return None


def read_robotcar(root: str | Path, reference_poses: str | Path | None = None,
                  query_poses: str | Path | None = None, conditions: list[str] | None = None,
                  cameras: list[str] | None = None, include_unposed: bool = False,
                  sequence_gap_s: float | None = None) -> ImportPlan:
    """Read RobotCar Seasons at ``root`` into an :class:`ImportPlan`.

    reference_poses: NVM of the reference images (default ``3D-models/all-merged/all.nvm``), or a
    COLMAP model folder in the same frame (PixLoc's downloads leave out ``3D-models/``).
    query_poses: world_from_camera list (default ``robotcar_v2_train.txt`` at the root or in
    ``metadata/``); rear poses give left/right poses through the extrinsics.
    conditions: query conditions to import (default all present); one sequence per condition
    and camera, named ``<condition>_<camera>`` (``queries``), and one rig drive per condition with
    every camera, named ``<condition>`` (``rig_queries``), split further at gaps > ``sequence_gap_s``.
    cameras: the cameras in rig order (default left, rear, right; base_link is the car frame of
    ``extrinsics/`` when present, else the first camera upright).
    include_unposed: keep query images without ground truth (no GNSS, no ground-truth message).
    """
    root = Path(root)
    if not (root / "images").is_dir():
        raise FileNotFoundError(f"{root}: no images/ folder (is this the RobotCar Seasons root?)")
    wanted = list(cameras) if cameras else list(ROBOTCAR_CAMERAS)
    if set(wanted) - set(ROBOTCAR_CAMERAS):
        raise ValueError(f"unknown RobotCar cameras {sorted(set(wanted) - set(ROBOTCAR_CAMERAS))}")

    cams, intrinsics_source = {}, {}
    for cam in wanted:
        path = root / "intrinsics" / f"{cam}_intrinsics.txt"
        if path.is_file():
            fx, fy, cx, cy = read_intrinsics_file(path)
            intrinsics_source[cam] = str(path)
        else:
            fx, fy, cx, cy = ROBOTCAR_INTRINSICS[cam]
            intrinsics_source[cam] = "published constants"
        cams[cam] = CameraSpec(cam, "PINHOLE", *ROBOTCAR_SIZE, (fx, fy, cx, cy))

    car_from_cam = {}
    for cam in ROBOTCAR_CAMERAS:
        path = root / "extrinsics" / f"{cam}_extrinsics.txt"
        if path.is_file():
            car_from_cam[cam] = read_extrinsics_file(path)
    base_from_cam = {cam: BASE_FROM_CAR @ T for cam, T in car_from_cam.items() if cam in wanted}
    if base_from_cam and set(base_from_cam) != set(wanted):
        raise ValueError(f"extrinsics present for {sorted(base_from_cam)} but not for all of {wanted}")

    if reference_poses is not None and Path(reference_poses).is_dir():
        nvm = Path(reference_poses)  # a COLMAP model in the NVM frame (e.g. hloc's sfm_superpoint+superglue)
        ref_poses = read_colmap_poses(nvm)
    else:
        nvm = find_file(root, reference_poses, ["3D-models/all-merged/all.nvm"])
        if nvm is None:
            raise FileNotFoundError(f"{root}: no reference poses (3D-models/all-merged/all.nvm); pass "
                                    "reference_poses (an NVM file or a COLMAP model folder)")
        ref_poses = read_nvm_poses(nvm)
    reference = []
    for name, (R, t) in sorted(ref_poses.items()):
        parts = name.split("/")
        if len(parts) != 3 or parts[1] not in wanted:
            continue
        path = root / "images" / name
        if not path.is_file():
            raise FileNotFoundError(f"{nvm} lists {name} but {path} does not exist")
        reference.append(Frame(path, name, _stamp_ns(name), parts[1], R, t))
    if not reference:
        raise ValueError(f"{nvm}: no reference image of cameras {wanted}")

    gt = {}
    gt_file = find_file(root, query_poses, ["robotcar_v2_train.txt", "metadata/robotcar_v2_train.txt"])
    if gt_file is not None:
        gt = read_world_from_cam_list(gt_file)
        gt.update(_derive_rig_poses(gt, car_from_cam))

    available = sorted(p.name for p in (root / "images").iterdir() if p.is_dir() and p.name != REFERENCE_CONDITION)
    chosen = list(conditions) if conditions else available
    if set(chosen) - set(available):
        raise FileNotFoundError(f"conditions {sorted(set(chosen) - set(available))} not in {root / 'images'}")
    queries: dict[str, list[Frame]] = {}
    drives: dict[str, list[Frame]] = {}
    posed = total = 0
    for condition in chosen:
        drive = []
        for cam in wanted:
            frames = []
            for path in sorted((root / "images" / condition / cam).glob("*.jpg")):
                name = f"{condition}/{cam}/{path.name}"
                R, t = gt.get(name, (None, None))
                total += 1
                posed += R is not None
                if R is None and not include_unposed:
                    continue
                frames.append(Frame(path, name, _stamp_ns(name), cam, R, t))
            for k, seq in enumerate(split_by_gap(frames, sequence_gap_s)):
                queries[f"{condition}_{cam}" + (f"_{k}" if k else "")] = seq
            drive += frames
        for k, seq in enumerate(split_by_gap(drive, sequence_gap_s)):
            drives[condition + (f"_{k}" if k else "")] = seq

    return ImportPlan(
        source="robotcar", dataset_root=root, cameras=cams, reference=reference, queries=queries,
        base_from_cam=base_from_cam, rig_cameras=wanted, rig_queries=drives,
        notes={"intrinsics": "; ".join(f"{k}: {v}" for k, v in intrinsics_source.items()),
               "reference_poses": str(nvm),
               "query_ground_truth": f"{gt_file}: {posed} of {total} query images posed"
                                     + (" (left/right through the extrinsics)" if car_from_cam else ""),
               "base_link": "car frame of extrinsics/ (x right, y down, z forward, inferred) rotated "
                            "to REP-103" if base_from_cam else "camera, upright (no extrinsics/)"},
    )


def _stamp_ns(name: str) -> int:
    """``<condition>/<camera>/<microseconds>.jpg`` -> nanoseconds."""
    m = TIMESTAMP_NAME.match(Path(name).name)
    if m is None:
        raise ValueError(f"not a RobotCar image name (<microseconds>.jpg): {name!r}")
    return int(m["time_us"]) * 1000


def _derive_rig_poses(gt: dict[str, tuple[np.ndarray, np.ndarray]], car_from_cam: dict[str, np.ndarray]
                      ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Poses of the other cameras at the stamps of the published rear poses:
    cam_from_world = cam_from_car @ car_from_rear @ rear_from_world."""
    if "rear" not in car_from_cam:
        return {}
    out = {}
    for name, (R, t) in gt.items():
        condition, cam, file = name.split("/")
        if cam != "rear":
            continue
        rear_from_world = make_transform(R, t)
        for other, car_from_other in car_from_cam.items():
            key = f"{condition}/{other}/{file}"
            if other == "rear" or key in gt:
                continue
            T = np.linalg.inv(car_from_other) @ car_from_cam["rear"] @ rear_from_world
            out[key] = (T[:3, :3], T[:3, 3])
    return out
