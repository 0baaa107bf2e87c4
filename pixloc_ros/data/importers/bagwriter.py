"""One imported query sequence as a rosbag2 (MCAP), through ``data.bags.DriveBagWriter``.

Per frame, all at the image's stamp: CameraInfo, the image (rgb8 / mono8 as decoded, or the
file's own jpeg/png bytes as CompressedImage), the synthetic GNSS fix and the ground-truth pose
of base_link in the map (frames with ground truth only); ``/tf_static`` (base_link -> camera
optical frame) once at the start.

A rig drive (``write_rig_bag``) has the layout ``synth --rig`` records: camera ``<name>`` on
``/<name>/image_raw`` (``/compressed``) and ``/<name>/camera_info`` with frame id
``<name>_camera_optical_frame``, each frame at its own capture stamp; one GNSS fix and ground-truth
pose per instant, at the instant's stamp; ``/tf_static`` with base_link -> every camera.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from pixloc_ros.data.bags import BASE_FRAME, CAMERA_FRAME, CameraInfoData, DriveBagWriter, DriveTopics, GnssFix, \
    PoseSample, StaticTransform, rig_camera_frame, rig_camera_topics

from .common import CameraSpec, Frame

COMPRESSED_TOPIC = "/camera/image_raw/compressed"  # image_transport's name, what the node subscribes to


def camera_info_of(camera: CameraSpec, frame_id: str = CAMERA_FRAME) -> CameraInfoData:
    """CameraInfo (plumb_bob, pixel-centre K) of a COLMAP camera: ``Camera.from_colmap`` moves the
    principal point by -0.5 px."""
    from pixloc_ros.core.geometry.camera import Camera

    cam = Camera.from_colmap(camera.model, camera.width, camera.height, camera.params)
    _, _, fx, fy, cx, cy, *dist = [float(v) for v in cam.data]
    return CameraInfoData.from_pinhole(camera.width, camera.height, fx, fy, cx, cy, dist, frame_id=frame_id)


def load_image(path: Path, camera: CameraSpec) -> tuple[np.ndarray, str]:
    """Decode ``path`` -> (RGB (H, W, 3) or grey (H, W) uint8, "rgb8" or "mono8"); checks the size."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ValueError(f"cannot decode image {path}")
    if image.dtype != np.uint8:  # 16-bit sources: keep the top 8 bits
        image = (image >> 8).astype(np.uint8) if image.dtype == np.uint16 else image.astype(np.uint8)
    if (image.shape[1], image.shape[0]) != (camera.width, camera.height):
        raise ValueError(f"{path} is {image.shape[1]}x{image.shape[0]}, camera {camera.name} is "
                         f"{camera.width}x{camera.height}")
    if image.ndim == 2:
        return image, "mono8"
    if image.shape[2] == 4:
        image = image[..., :3]
    return np.ascontiguousarray(image[..., ::-1]), "rgb8"


def encoded_bytes(path: Path) -> tuple[bytes, str]:
    """The file's own bytes when it is a jpeg or png (no re-encoding), else a png encoding."""
    suffix = path.suffix.lower()
    if suffix in (".jpg", ".jpeg"):
        return path.read_bytes(), "jpeg"
    if suffix == ".png":
        return path.read_bytes(), "png"
    ok, buf = cv2.imencode(".png", cv2.imread(str(path), cv2.IMREAD_UNCHANGED))
    if not ok:
        raise ValueError(f"cannot re-encode {path}")
    return buf.tobytes(), "png"


def write_query_bag(bag_dir: Path, frames: list[Frame], camera: CameraSpec, base_from_cam: np.ndarray,
                    ground_truth: dict[int, np.ndarray], gnss: dict[int, GnssFix], compressed: bool = False) -> None:
    """Write ``frames`` (one camera, increasing stamps) into the new bag folder ``bag_dir``.

    ground_truth: stamp_ns -> (4, 4) map_from_base; gnss: stamp_ns -> fix. Frames missing from
    them get neither message.
    """
    stamps = [f.stamp_ns for f in frames]
    if any(b <= a for a, b in zip(stamps, stamps[1:])):
        raise ValueError(f"{bag_dir.name}: frame stamps are not strictly increasing")
    info = camera_info_of(camera)
    topics = DriveTopics(image=COMPRESSED_TOPIC) if compressed else DriveTopics()
    if compressed:  # raw frames are checked as they are decoded; compressed ones by the first
        load_image(frames[0].image_path, camera)
    with DriveBagWriter(bag_dir, topics) as writer:
        writer.write_static_transforms(stamps[0], [StaticTransform.from_matrix(BASE_FRAME, CAMERA_FRAME, base_from_cam)])
        for f in frames:
            writer.write_camera_info(f.stamp_ns, info)
            if compressed:
                writer.write_compressed_image(f.stamp_ns, *encoded_bytes(f.image_path))
            else:
                image, encoding = load_image(f.image_path, camera)
                writer.write_image(f.stamp_ns, image, encoding)
            if f.stamp_ns in gnss:
                writer.write_gnss(gnss[f.stamp_ns])
            if f.stamp_ns in ground_truth:
                writer.write_ground_truth(PoseSample.from_matrix(f.stamp_ns, ground_truth[f.stamp_ns]))


def write_rig_bag(bag_dir: Path, instants: list, cameras: dict[str, CameraSpec], base_from_cam: dict[str, np.ndarray],
                  ground_truth: dict[int, np.ndarray], gnss: dict[int, GnssFix], compressed: bool = False) -> None:
    """Write a rig drive into the new bag folder ``bag_dir``, messages in stamp order.

    instants: ``rig.Instant``s in time order (camera -> Frame); cameras: the rig's cameras, rig order;
    base_from_cam: camera -> (4, 4); ground_truth: instant stamp_ns -> (4, 4) map_from_base; gnss:
    instant stamp_ns -> fix. ValueError when a camera's stamps are not strictly increasing.
    """
    per_camera: dict[str, list] = {name: [] for name in cameras}
    for inst in instants:
        for name, f in inst.frames.items():
            per_camera[name].append(f)
    for name, frames in per_camera.items():
        stamps = [f.stamp_ns for f in frames]
        if any(b <= a for a, b in zip(stamps, stamps[1:])):
            raise ValueError(f"{bag_dir.name}: the stamps of camera {name} are not strictly increasing")
        if compressed and frames:  # raw frames are checked as they are decoded; compressed ones by the first
            load_image(frames[0].image_path, cameras[name])
    infos = {name: camera_info_of(cam, rig_camera_frame(name)) for name, cam in cameras.items()}
    # (stamp, kind, camera or "", payload): per stamp the camera messages first, in rig order
    events = [(f.stamp_ns, 0, k, name, f) for k, name in enumerate(cameras) for f in per_camera[name]]
    events += [(s, 1, 0, "", s) for s in sorted(set(gnss) | set(ground_truth))]
    events.sort(key=lambda e: e[:3])
    start = min(e[0] for e in events)
    with DriveBagWriter(bag_dir) as writer:
        writer.write_static_transforms(start, [StaticTransform.from_matrix(BASE_FRAME, rig_camera_frame(name),
                                                                           base_from_cam[name]) for name in cameras])
        for stamp, kind, _, name, payload in events:
            if kind == 1:
                if stamp in gnss:
                    writer.write_gnss(gnss[stamp])
                if stamp in ground_truth:
                    writer.write_ground_truth(PoseSample.from_matrix(stamp, ground_truth[stamp]))
                continue
            topics = rig_camera_topics(name)
            writer.write_camera_info(stamp, infos[name], topics.camera_info)
            if compressed:
                data, fmt = encoded_bytes(payload.image_path)
                writer.write_compressed_image(stamp, data, fmt, rig_camera_frame(name), topics.image + "/compressed")
            else:
                image, encoding = load_image(payload.image_path, cameras[name])
                writer.write_image(stamp, image, encoding, rig_camera_frame(name), topics.image)
