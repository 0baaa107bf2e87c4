"""Reading drive recordings: images (any recorded encoding, back as RGB uint8), CameraInfo, odometry,
GNSS, static transforms and ground truth, frame by frame (``iter_frames``) or as a whole
(``read_drive``), and raw messages for the bag player. Reading uses the message definitions stored in
the bag, so bags recorded by other ROS distributions (and ROS 1 bags) read too.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from .messages import (BagTopic, CAMERA_INFO_MSG, COMPRESSED_IMAGE_MSG, CameraInfoData, Drive, DriveTopics,
    GnssFix, IMAGE_MSG, ImageFrame, NAVSATFIX_MSG, ODOMETRY_MSG, OdometrySample, POSE_STAMPED_MSG, PoseSample,
    RawMessage, StaticTransform, TF_MSG, typestore)


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------

def decode_image(msgtype: str, msg) -> tuple[np.ndarray, str]:
    """A deserialised Image or CompressedImage -> (RGB (H, W, 3) uint8, encoding as recorded).

    Image encodings: rgb8, bgr8, rgba8, bgra8, mono8, mono16 (scaled to 8 bit). Compressed:
    whatever OpenCV decodes (jpeg, png). Anything else raises ValueError naming it."""
    if msgtype.endswith("CompressedImage"):
        import cv2
        buf = np.frombuffer(bytes(msg.data), np.uint8)
        bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"could not decode a CompressedImage of format {msg.format!r}")
        return np.ascontiguousarray(bgr[..., ::-1]), str(msg.format)
    enc = str(msg.encoding).lower()
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    raw = np.frombuffer(bytes(msg.data) if not isinstance(msg.data, np.ndarray) else msg.data.tobytes(), np.uint8)
    channels = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1, "8uc1": 1, "8uc3": 3, "mono16": 2, "16uc1": 2}
    if enc not in channels:
        raise ValueError(f"Unsupported image encoding {msg.encoding!r} (supported: {sorted(channels)} and CompressedImage)")
    bpp = channels[enc]
    rows = raw[: h * step].reshape(h, step)[:, : w * bpp]
    if enc in ("mono16", "16uc1"):
        order = ">u2" if msg.is_bigendian else "<u2"
        grey16 = np.frombuffer(rows.tobytes(), order).reshape(h, w)
        grey = (grey16 / max(int(grey16.max()), 1) * 255.0 + 0.5).astype(np.uint8)
        return np.repeat(grey[..., None], 3, -1), str(msg.encoding)
    px = rows.reshape(h, w, bpp)
    if bpp == 1:
        rgb = np.repeat(px, 3, -1)
    elif enc in ("rgb8", "rgba8", "8uc3"):
        rgb = px[..., :3]
    else:  # bgr8, bgra8
        rgb = px[..., 2::-1]
    return np.ascontiguousarray(rgb), str(msg.encoding)


def _camera_info_from_msg(msg) -> CameraInfoData:
    return CameraInfoData(int(msg.width), int(msg.height), str(msg.distortion_model),
                          tuple(float(v) for v in msg.d), tuple(float(v) for v in msg.k),
                          tuple(float(v) for v in msg.r), tuple(float(v) for v in msg.p), str(msg.header.frame_id))


def _stamp_ns(header) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


_ROLE_TYPES = {
    "image": (IMAGE_MSG, COMPRESSED_IMAGE_MSG),
    "camera_info": (CAMERA_INFO_MSG,),
    "odometry": (ODOMETRY_MSG,),
    "gnss": (NAVSATFIX_MSG,),
    "tf_static": (TF_MSG,),
    "ground_truth": (POSE_STAMPED_MSG,),
}


def _resolve_topics(reader, topics: DriveTopics) -> DriveTopics:
    """Keep each named topic that exists; otherwise take the only topic of the right type."""
    by_topic = {c.topic: c.msgtype for c in reader.connections}
    resolved = {}
    for role, types in _ROLE_TYPES.items():
        name = getattr(topics, role)
        if name in by_topic and by_topic[name] in types:
            resolved[role] = name
            continue
        # image_transport's name for the compressed stream of an image topic (a rig bag has several
        # image topics, so the one-topic-of-the-type fallback below cannot find it)
        if role == "image" and by_topic.get(f"{name}/compressed") == COMPRESSED_IMAGE_MSG:
            resolved[role] = f"{name}/compressed"
            continue
        candidates = sorted({t for t, m in by_topic.items() if m in types and (role != "tf_static" or "static" in t)})
        resolved[role] = candidates[0] if len(candidates) == 1 else None
    return DriveTopics(**resolved)


def _open_reader(bag_dir: Path):
    from rosbags.highlevel import AnyReader
    bag_dir = Path(bag_dir)
    if not bag_dir.exists():
        raise FileNotFoundError(f"no bag at {bag_dir}")
    reader = AnyReader([bag_dir], default_typestore=typestore())
    reader.open()
    return reader


def iter_frames(bag_dir: str | Path, topics: DriveTopics = DriveTopics()) -> Iterator[ImageFrame]:
    """Yield the camera frames one by one (RGB), each with the latest CameraInfo at or before it.

    Memory stays at one image, for long recordings."""
    reader = _open_reader(Path(bag_dir))
    try:
        resolved = _resolve_topics(reader, topics)
        if resolved.image is None:
            return
        wanted = [c for c in reader.connections if c.topic in (resolved.image, resolved.camera_info)]
        infos: list[tuple[int, CameraInfoData]] = []
        pending: list[tuple[int, str, object, str]] = []
        for conn, _, raw in reader.messages(connections=wanted):
            msg = reader.deserialize(raw, conn.msgtype)
            if conn.topic == resolved.camera_info:
                infos.append((_stamp_ns(msg.header), _camera_info_from_msg(msg)))
                continue
            pending.append((_stamp_ns(msg.header), str(msg.header.frame_id), msg, conn.msgtype))
            # CameraInfo is published with (or just after) its image: hold a frame until a
            # message with a later log time arrives.
            while len(pending) > 1:
                yield _frame(*pending.pop(0), infos)
        for item in pending:
            yield _frame(*item, infos)
    finally:
        reader.close()


def _frame(stamp, frame_id, msg, msgtype, infos) -> ImageFrame:
    image, encoding = decode_image(msgtype, msg)
    return ImageFrame(stamp, image, frame_id, encoding, _frame_info(stamp, infos))


def read_drive(bag_dir: str | Path, topics: DriveTopics = DriveTopics(), *, load_images: bool = True) -> Drive:
    """Read a drive recording into typed, stamp-sorted lists.

    Topics not found under their names are looked up as ``<image>/compressed`` (the image), then by
    message type (when exactly one topic has it). With ``load_images=False`` frames carry an empty (0, 0, 3) image (fast metadata).
    """
    bag_dir = Path(bag_dir)
    reader = _open_reader(bag_dir)
    try:
        resolved = _resolve_topics(reader, topics)
        roles = {getattr(resolved, r): r for r in _ROLE_TYPES if getattr(resolved, r) is not None}
        odometry, gnss, tfs, truth, infos, images = [], [], [], [], [], []
        for conn, _, raw in reader.messages(connections=[c for c in reader.connections if c.topic in roles]):
            role = roles[conn.topic]
            msg = reader.deserialize(raw, conn.msgtype)
            if role == "image":
                # Without load_images only the header is kept (decoding pixels is the slow part).
                images.append((_stamp_ns(msg.header), str(msg.header.frame_id), msg if load_images else None, conn.msgtype))
            elif role == "camera_info":
                infos.append((_stamp_ns(msg.header), _camera_info_from_msg(msg)))
            elif role == "odometry":
                p, q = msg.pose.pose.position, msg.pose.pose.orientation
                tl, ta = msg.twist.twist.linear, msg.twist.twist.angular
                odometry.append(OdometrySample(
                    _stamp_ns(msg.header), (p.x, p.y, p.z), (q.x, q.y, q.z, q.w),
                    np.asarray(msg.pose.covariance, np.float64).reshape(6, 6), (tl.x, tl.y, tl.z), (ta.x, ta.y, ta.z),
                    np.asarray(msg.twist.covariance, np.float64).reshape(6, 6), str(msg.header.frame_id),
                    str(msg.child_frame_id)))
            elif role == "gnss":
                gnss.append(GnssFix(_stamp_ns(msg.header), float(msg.latitude), float(msg.longitude), float(msg.altitude),
                                    np.asarray(msg.position_covariance, np.float64).reshape(3, 3),
                                    int(msg.position_covariance_type), int(msg.status.status), int(msg.status.service),
                                    str(msg.header.frame_id)))
            elif role == "tf_static":
                for tr in msg.transforms:
                    t, q = tr.transform.translation, tr.transform.rotation
                    tfs.append(StaticTransform(str(tr.header.frame_id), str(tr.child_frame_id), (t.x, t.y, t.z),
                                               (q.x, q.y, q.z, q.w)))
            elif role == "ground_truth":
                p, q = msg.pose.position, msg.pose.orientation
                truth.append(PoseSample(_stamp_ns(msg.header), (p.x, p.y, p.z), (q.x, q.y, q.z, q.w), str(msg.header.frame_id)))
    finally:
        reader.close()
    infos.sort(key=lambda x: x[0])
    frames = []
    for stamp, frame_id, msg, msgtype in sorted(images, key=lambda x: x[0]):
        if msg is None:
            frames.append(ImageFrame(stamp, np.zeros((0, 0, 3), np.uint8), frame_id, "", _frame_info(stamp, infos)))
        else:
            frames.append(_frame(stamp, frame_id, msg, msgtype, infos))
    key = lambda x: x.stamp_ns
    return Drive(bag_dir, resolved, frames, sorted(odometry, key=key), sorted(gnss, key=key), tfs, sorted(truth, key=key))


def _frame_info(stamp: int, infos: list[tuple[int, CameraInfoData]]) -> CameraInfoData | None:
    """The CameraInfo with the latest stamp at or before ``stamp`` (``infos`` sorted by stamp)."""
    info = None
    for s, candidate in infos:
        if s <= stamp:
            info = candidate
        else:
            break
    return info


def iter_raw(bag_dir: str | Path, topics: Sequence[str] | None = None) -> Iterator[RawMessage]:
    """Yield every message (or those on ``topics``) in log-time order as serialised CDR."""
    reader = _open_reader(Path(bag_dir))
    try:
        conns = [c for c in reader.connections if topics is None or c.topic in topics]
        for conn, stamp, raw in reader.messages(connections=conns):
            yield RawMessage(conn.topic, conn.msgtype, int(stamp), bytes(raw))
    finally:
        reader.close()


def bag_topics(bag_dir: str | Path) -> list[BagTopic]:
    """The topics of a recording with their type, message count and latching (for a player)."""
    from rosbags.interfaces import QosDurability
    reader = _open_reader(Path(bag_dir))
    try:
        out = {}
        for c in reader.connections:
            qos = getattr(c.ext, "offered_qos_profiles", []) or []
            latched = any(q.durability == QosDurability.TRANSIENT_LOCAL for q in qos) or c.topic == "/tf_static"
            prev = out.get(c.topic)
            count = c.msgcount + (prev.count if prev else 0)
            out[c.topic] = BagTopic(c.topic, c.msgtype, count, latched or (prev.transient_local if prev else False))
        return sorted(out.values(), key=lambda t: t.name)
    finally:
        reader.close()
