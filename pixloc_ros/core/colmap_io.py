"""Everything that touches pycolmap lives here: its API moves between releases (4.x added rigs
and frames, made ``cam_from_world`` a method), so the rest of the code sees only the plain,
typed containers below.

Conventions of the containers: poses are ``cam_from_world`` as (R (3, 3), t (3,)) float64
numpy arrays, camera parameters and keypoints are in COLMAP's own convention (pixel origin
at the corner of the top-left pixel); ``Camera.from_colmap`` converts to the engine's
pixel-centre convention.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pycolmap

INVALID_POINT3D_ID = -1


@dataclass
class SfmCamera:
    """A COLMAP camera: ``model`` name (e.g. "PINHOLE"), image size in pixels, ``params`` as COLMAP stores them."""

    camera_id: int
    model: str
    width: int
    height: int
    params: np.ndarray  # (P,) float64, COLMAP order and pixel convention


@dataclass
class SfmImage:
    """A registered image: its pose, camera and 2D observations."""

    image_id: int
    name: str
    camera_id: int
    R: np.ndarray  # (3, 3) float64, rotation of cam_from_world
    t: np.ndarray  # (3,) float64, translation of cam_from_world, metres
    xys: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))  # (K, 2) keypoints, COLMAP pixels
    point3D_ids: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))  # (K,), -1 = none

    @property
    def center(self) -> np.ndarray:
        """Camera centre in world coordinates, (3,) metres."""
        return -self.R.T @ self.t


@dataclass
class SfmModel:
    """A sparse reconstruction with its points stored as flat arrays (fast to index)."""

    cameras: dict[int, SfmCamera]
    images: dict[int, SfmImage]
    point_ids: np.ndarray  # (P,) int64
    xyz: np.ndarray  # (P, 3) float64, world coordinates, metres
    rgb: np.ndarray  # (P, 3) uint8
    track_image_ids: list[np.ndarray]  # P arrays (L_i,) int64: images observing each point
    track_point2D_idx: list[np.ndarray]  # P arrays (L_i,) int64: keypoint index in that image

    @property
    def track_lengths(self) -> np.ndarray:
        """Number of observations per point, (P,) int64."""
        return np.array([len(t) for t in self.track_image_ids], np.int64)

    def image_by_name(self, name: str) -> SfmImage:
        """Return the image called ``name``; KeyError naming it when absent."""
        for image in self.images.values():
            if image.name == name:
                return image
        raise KeyError(f"no image named {name!r} in the SfM model")


def read_model(path: str | Path) -> SfmModel:
    """Read a COLMAP model (text or binary) from the folder ``path``.

    Raises FileNotFoundError with the path when the folder holds no model.
    """
    path = Path(path)
    if not path.is_dir() or not any((path / f"cameras.{ext}").exists() for ext in ("bin", "txt")):
        raise FileNotFoundError(f"no COLMAP model (cameras.bin or cameras.txt) in {path}")
    rec = pycolmap.Reconstruction(str(path))
    cameras = {
        cid: SfmCamera(cid, cam.model.name, int(cam.width), int(cam.height), np.asarray(cam.params, np.float64))
        for cid, cam in rec.cameras.items()
    }
    images = {}
    for iid, im in rec.images.items():
        if not im.has_pose:
            continue  # unregistered images carry no pose; nothing downstream can use them
        cam_from_world = im.cam_from_world()
        p2d = im.points2D
        xys = np.array([p.xy for p in p2d], np.float64).reshape(-1, 2)
        ids = np.array([p.point3D_id if p.has_point3D() else INVALID_POINT3D_ID for p in p2d], np.int64)
        images[iid] = SfmImage(
            iid, im.name, int(im.camera_id),
            np.asarray(cam_from_world.rotation.matrix(), np.float64),
            np.asarray(cam_from_world.translation, np.float64), xys, ids,
        )
    pids = np.array(sorted(rec.points3D.keys()), np.int64)
    xyz = np.zeros((len(pids), 3))
    rgb = np.zeros((len(pids), 3), np.uint8)
    track_images, track_idx = [], []
    for i, pid in enumerate(pids):
        p = rec.points3D[int(pid)]
        xyz[i] = p.xyz
        rgb[i] = p.color
        elements = p.track.elements
        track_images.append(np.array([e.image_id for e in elements], np.int64))
        track_idx.append(np.array([e.point2D_idx for e in elements], np.int64))
    return SfmModel(cameras, images, pids, xyz, rgb, track_images, track_idx)


def write_model(model: SfmModel, path: str | Path, text: bool = False) -> None:
    """Write ``model`` as a COLMAP model (binary, or text if ``text``) into the folder ``path``.

    Every observation in the tracks must point at a keypoint of its image whose
    ``point3D_ids`` entry is that point.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    rec = pycolmap.Reconstruction()
    for cam in model.cameras.values():
        rec.add_camera_with_trivial_rig(
            pycolmap.Camera(model=cam.model, width=cam.width, height=cam.height,
                            params=np.asarray(cam.params, np.float64), camera_id=cam.camera_id))
    for im in model.images.values():
        image = pycolmap.Image(name=im.name, camera_id=im.camera_id, image_id=im.image_id)
        image.points2D = pycolmap.Point2DList([pycolmap.Point2D(np.asarray(xy, np.float64)) for xy in im.xys])
        rec.add_image_with_trivial_frame(
            image, pycolmap.Rigid3d(pycolmap.Rotation3d(np.asarray(im.R, np.float64)), np.asarray(im.t, np.float64)))
    for pid, xyz, rgb, imgs, idxs in zip(model.point_ids, model.xyz, model.rgb,
                                         model.track_image_ids, model.track_point2D_idx):
        track = pycolmap.Track()
        for iid, idx in zip(imgs, idxs):
            track.add_element(int(iid), int(idx))
        point = pycolmap.Point3D(xyz=np.asarray(xyz, np.float64), color=np.asarray(rgb, np.uint8), track=track)
        rec.add_point3D_with_id(int(pid), point)
    if text:
        rec.write_text(str(path))
    else:
        rec.write_binary(str(path))
