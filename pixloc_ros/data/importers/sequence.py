"""A generic posed image sequence (the user's own drive, KITTI odometry, TUM-style logs).

Inputs: a folder of images; a pose file with one pose per image, in image order, either
KITTI-style (12 numbers per row: the 3x4 camera-to-world matrix [R | c], row-major) or
TUM-style (``t x y z qx qy qz qw``: camera position and orientation in the world, quaternion
x y z w); intrinsics as a COLMAP camera string or a ROS ``camera_info`` YAML. Some frames
become the map (reference images, triangulated with their known poses), the others a query
bag. Stamps come from the TUM column, a KITTI ``times.txt`` (seconds) or a frame rate.
"""
from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np

from .common import CameraSpec, Frame, ImportPlan, invert_rigid, parse_floats, read_table

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".pgm", ".ppm"}

# Stamp of the first frame when the dataset gives none (ROS treats time 0 as "unset" under
# use_sim_time, so a bag must not start there): 2020-09-13T12:26:40Z, arbitrary.
DEFAULT_START_TIME_S = 1_600_000_000.0


def natural_key(name: str) -> list:
    """Sort key that orders embedded numbers numerically (img2 < img10)."""
    return [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", name)]


def list_images(images_dir: Path, image_list: Path | None = None) -> list[Path]:
    """Images in pose order: the names of ``image_list`` (one per line, relative to
    ``images_dir``) or every image file of the folder in natural order."""
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise FileNotFoundError(f"image folder {images_dir} does not exist")
    if image_list is not None:
        paths = [images_dir / row[0] for _, row in read_table(Path(image_list))]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"{image_list} names missing images, e.g. {missing[:3]}")
        return paths
    paths = sorted((p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS),
                   key=lambda p: natural_key(p.name))
    if not paths:
        raise FileNotFoundError(f"no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) in {images_dir}")
    return paths


def read_poses(path: Path, fmt: str = "auto") -> tuple[list[tuple[np.ndarray, np.ndarray]], list[float] | None]:
    """Pose file -> ([(R, t) cam_from_world per row], stamps in seconds or None).

    fmt: "kitti" (12 numbers: world_from_cam 3x4 row-major), "tum" (``t x y z qx qy qz qw``,
    world_from_cam), or "auto" (by the number of columns).
    """
    from scipy.spatial.transform import Rotation

    rows = read_table(Path(path))
    if not rows:
        raise ValueError(f"{path}: no poses")
    if fmt == "auto":
        n = len(rows[0][1])
        fmt = {12: "kitti", 8: "tum"}.get(n)
        if fmt is None:
            raise ValueError(f"{path}: cannot tell the pose format from {n} columns (KITTI has 12, TUM 8)")
    if fmt not in ("kitti", "tum"):
        raise ValueError(f"Unsupported pose format {fmt!r} (kitti, tum)")
    poses, stamps = [], []
    for line_no, row in rows:
        values = parse_floats(row, f"{path}:{line_no}")
        if fmt == "kitti":
            if len(values) != 12:
                raise ValueError(f"{path}:{line_no}: a KITTI pose has 12 numbers, got {len(values)}")
            M = np.array(values).reshape(3, 4)
            R_wc, c = M[:, :3], M[:, 3]
            if not np.allclose(R_wc @ R_wc.T, np.eye(3), atol=1e-3):
                raise ValueError(f"{path}:{line_no}: the rotation block is not orthonormal")
        else:
            if len(values) != 8:
                raise ValueError(f"{path}:{line_no}: a TUM pose has 8 numbers, got {len(values)}")
            q = np.array(values[4:8])
            if abs(np.linalg.norm(q) - 1.0) > 1e-3:
                raise ValueError(f"{path}:{line_no}: quaternion {q.tolist()} is not unit-norm")
            R_wc, c = Rotation.from_quat(q / np.linalg.norm(q)).as_matrix(), np.array(values[1:4])
            stamps.append(values[0])
        poses.append(invert_rigid(R_wc, c))
    return poses, (stamps if fmt == "tum" else None)


def read_times(path: Path) -> list[float]:
    """KITTI ``times.txt``: one time in seconds per line (first column)."""
    return [parse_floats(row[:1], f"{path}:{i}")[0] for i, row in read_table(Path(path))]


def parse_intrinsics(spec: str, width: int, height: int, pixel_origin: str = "centre",
                     name: str = "camera") -> CameraSpec:
    """Intrinsics from the command line or a file -> :class:`CameraSpec` (COLMAP convention).

    spec: ``"MODEL p1 p2 ..."`` (a COLMAP model and its parameters, e.g.
    ``"PINHOLE 718.856 718.856 607.1928 185.2157"``), or the path of a ROS camera_info YAML
    (``image_width``, ``image_height``, ``camera_matrix``, ``distortion_model``,
    ``distortion_coefficients``; always pixel-centre). pixel_origin says where the principal
    point of a model string counts from: "centre" of the top-left pixel (OpenCV, ROS, KITTI
    calibration files) or its "corner" (COLMAP). width/height: image size in pixels.
    """
    from pixloc_ros.core.geometry.camera import Camera

    if pixel_origin not in ("centre", "corner"):
        raise ValueError(f"pixel_origin must be 'centre' or 'corner', got {pixel_origin!r}")
    path = Path(spec)
    if path.suffix.lower() in (".yaml", ".yml"):
        if not path.is_file():
            raise FileNotFoundError(f"camera_info file {path} does not exist")
        cam = _camera_from_yaml(path)
        size = (int(round(float(cam.size[0]))), int(round(float(cam.size[1]))))
        colmap = cam.to_colmap()
        model, params = colmap.model, [float(v) for v in colmap.params]
    else:
        fields = spec.split()
        if not fields:
            raise ValueError("empty intrinsics")
        model, params = fields[0].upper(), parse_floats(fields[1:], "intrinsics")
        if pixel_origin == "centre":  # to COLMAP's corner origin: +0.5 px
            params = _shift_principal_point(model, params, 0.5)
        Camera.from_colmap(model, width, height, params)  # validates the model and its parameters
        size = (width, height)
    if size != (width, height):
        raise ValueError(f"intrinsics are for {size[0]}x{size[1]} images, the images are {width}x{height}")
    return CameraSpec(name, model, width, height, tuple(params))


def _shift_principal_point(model: str, params: list[float], delta: float) -> list[float]:
    """COLMAP params with cx, cy moved by ``delta`` pixels."""
    idx = (1, 2) if model.upper() in ("SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL") else (2, 3)
    out = list(params)
    for i in idx:
        out[i] += delta
    return out


def _camera_from_yaml(path: Path):
    """ROS camera_info YAML (camera_calibration's format) -> core.camera.Camera."""
    import yaml

    from pixloc_ros.core.geometry.camera import Camera

    data = yaml.safe_load(path.read_text())
    try:
        K = data["camera_matrix"]["data"]
        D = data.get("distortion_coefficients", {}).get("data", [])
        model = data.get("distortion_model", "plumb_bob")
        return Camera.from_camera_info(int(data["image_width"]), int(data["image_height"]), K, D, model)
    except (KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a camera_info YAML (missing {err})") from None


def parse_frame_indices(text: str, count: int) -> list[int]:
    """``"0,2,4"`` or ranges ``"0-10"`` or ``"0-10:2"`` -> sorted unique indices in [0, count)."""
    out = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        m = re.fullmatch(r"(\d+)(?:-(\d+)(?::(\d+))?)?", part)
        if m is None:
            raise ValueError(f"bad frame selection {part!r} (use 3, 0-10 or 0-10:2)")
        start = int(m[1])
        stop = int(m[2]) if m[2] else start
        out.update(range(start, stop + 1, int(m[3]) if m[3] else 1))
    bad = sorted(i for i in out if i >= count)
    if bad:
        raise ValueError(f"frame indices {bad} out of range (the sequence has {count} frames)")
    return sorted(out)


def read_sequence(images: str | Path, poses: str | Path, intrinsics: str, pose_format: str = "auto",
                  image_list: str | Path | None = None, times: str | Path | None = None,
                  fps: float = 10.0, start_time_s: float = DEFAULT_START_TIME_S,
                  map_frames: str | None = None, query_frames: str | None = None,
                  pixel_origin: str = "centre", camera_name: str = "camera",
                  sequence: str = "query") -> ImportPlan:
    """Read a posed image sequence into an :class:`ImportPlan`.

    images: folder; image_list: file naming the images in pose order (default: natural order
    of the folder). poses: KITTI or TUM file (``pose_format``). intrinsics: see
    ``parse_intrinsics``. Stamps: TUM column, else ``times`` (seconds, offset by
    ``start_time_s``), else ``start_time_s + i / fps``. map_frames / query_frames: index
    selections (``parse_frame_indices``); by default even frames make the map, odd ones the
    query; when only one is given the other is its complement. The two must not overlap.
    """
    paths = list_images(Path(images), Path(image_list) if image_list else None)
    pose_list, tum_stamps = read_poses(Path(poses), pose_format)
    if len(pose_list) != len(paths):
        raise ValueError(f"{poses} has {len(pose_list)} poses for {len(paths)} images "
                         "(pass an image list in pose order)")
    first = cv2.imread(str(paths[0]), cv2.IMREAD_UNCHANGED)
    if first is None:
        raise ValueError(f"cannot decode {paths[0]}")
    height, width = first.shape[:2]
    camera = parse_intrinsics(intrinsics, width, height, pixel_origin, camera_name)

    if tum_stamps is not None:
        stamps_s = tum_stamps
    elif times is not None:
        stamps_s = [start_time_s + s for s in read_times(Path(times))]
        if len(stamps_s) != len(paths):
            raise ValueError(f"{times} has {len(stamps_s)} times for {len(paths)} images")
    else:
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        stamps_s = [start_time_s + i / fps for i in range(len(paths))]
    stamps_ns = [int(round(s * 1e9)) for s in stamps_s]
    if any(b <= a for a, b in zip(stamps_ns, stamps_ns[1:])):
        raise ValueError("image stamps are not strictly increasing in pose order")

    n = len(paths)
    if map_frames is None and query_frames is None:
        map_idx, query_idx = list(range(0, n, 2)), list(range(1, n, 2))
    else:
        map_idx = parse_frame_indices(map_frames, n) if map_frames is not None else None
        query_idx = parse_frame_indices(query_frames, n) if query_frames is not None else None
        if map_idx is None:
            map_idx = sorted(set(range(n)) - set(query_idx))
        if query_idx is None:
            query_idx = sorted(set(range(n)) - set(map_idx))
    if set(map_idx) & set(query_idx):
        raise ValueError(f"frames {sorted(set(map_idx) & set(query_idx))} are both map and query frames")
    if not map_idx:
        raise ValueError("no map frames selected")

    # Unique map names even when two folders hold equal file names: keep the list's relative path.
    root = Path(images)
    frames = [Frame(p, p.relative_to(root).as_posix(), s, camera_name, R, t)
              for p, s, (R, t) in zip(paths, stamps_ns, pose_list)]
    return ImportPlan(
        source="sequence", dataset_root=root, cameras={camera_name: camera},
        reference=[frames[i] for i in map_idx],
        queries={sequence: [frames[i] for i in query_idx]} if query_idx else {},
        notes={"poses": f"{poses} ({'TUM' if tum_stamps is not None else 'KITTI'}-style, camera-to-world)",
               "intrinsics": f"{intrinsics} (principal point from the pixel {pixel_origin})",
               "map_frames": ",".join(map(str, map_idx)),
               "query_frames": ",".join(map(str, query_idx))},
    )
