"""Merge parts of a dataset that share one world frame (CMU Seasons slices) into one import.

The Extended CMU Seasons slices are pieces of one reference reconstruction: their poses are in
one world frame (the dataset's README describes a single reference model, and its evaluation
takes the poses of all slices in one list without a slice number). Merging them gives one map
frame for the whole route: the reference images of all parts (an image listed by two parts
must have the same pose in both), their SfM models renumbered into one, and the query drives
of one camera and day joined across parts. ``reference_gaps`` measures how far each part's
cameras are from the others' (parts of one route touch; a part kilometres away is a sign of
another frame or a wrong folder).
"""
from __future__ import annotations

import math

import numpy as np
from scipy.spatial import cKDTree

from pixloc_ros.core.maps.colmap_io import SfmCamera, SfmImage, SfmModel

from .common import CameraSpec, Frame

# Two parts listing one image must agree on its pose to this much (both are read from text
# files with 6 decimals; anything larger means the parts are not in one frame).
SAME_POSE_M = 0.01
SAME_POSE_DEG = 0.1


def merge_cameras(parts: list[dict[str, CameraSpec]]) -> dict[str, CameraSpec]:
    """Union of the parts' cameras; ValueError when two parts calibrate a camera differently."""
    out: dict[str, CameraSpec] = {}
    for cams in parts:
        for name, cam in cams.items():
            if name in out and (out[name].model, out[name].width, out[name].height) != (cam.model, cam.width, cam.height) \
                    or name in out and not np.allclose(out[name].params, cam.params, atol=1e-6):
                raise ValueError(f"camera {name} differs between the parts: {out[name]} vs {cam}")
            out.setdefault(name, cam)
    return out


def merge_frames(parts: list[list[Frame]], labels: list[str]) -> list[Frame]:
    """Frames of all parts, each name once; ValueError naming both parts when a name repeats with another pose."""
    seen: dict[str, tuple[Frame, str]] = {}
    out = []
    for frames, label in zip(parts, labels):
        for f in frames:
            if f.name not in seen:
                seen[f.name] = (f, label)
                out.append(f)
                continue
            g, other = seen[f.name]
            if f.has_pose and g.has_pose:
                dist = float(np.linalg.norm(f.center - g.center))
                cos = (np.trace(f.R @ g.R.T) - 1.0) / 2.0
                angle = math.degrees(math.acos(float(np.clip(cos, -1.0, 1.0))))
                if dist > SAME_POSE_M or angle > SAME_POSE_DEG:
                    raise ValueError(f"{other} and {label} give {f.name} poses {dist:.3f} m / {angle:.2f} deg apart: "
                                     "the parts are not in one world frame")
    return out


def reference_gaps(parts: list[list[Frame]], labels: list[str]) -> dict[str, float]:
    """Per part: metres from its nearest reference camera to the nearest camera of another part."""
    centres = [np.array([f.center for f in frames if f.has_pose]).reshape(-1, 3) for frames in parts]
    gaps = {}
    for i, label in enumerate(labels):
        others = [c for j, c in enumerate(centres) if j != i and len(c)]
        if not others or not len(centres[i]):
            continue
        d, _ = cKDTree(np.concatenate(others)).query(centres[i])
        gaps[label] = float(np.min(d))
    return gaps


def merge_models(models: list[SfmModel]) -> SfmModel:
    """One COLMAP model from models in one world frame: cameras with equal calibration become one,
    images and points are renumbered (ids 1..), an image that several models hold is kept from
    the first (its observations in the later models are dropped, and points left without any
    observation with them)."""
    cameras: dict[int, SfmCamera] = {}
    cam_key: dict[tuple, int] = {}
    images: dict[int, SfmImage] = {}
    taken: set[str] = set()
    xyz, rgb, tracks_img, tracks_idx, point_ids = [], [], [], [], []
    for model in models:
        cam_map = {}
        for cid, cam in sorted(model.cameras.items()):
            key = (cam.model, cam.width, cam.height, tuple(np.round(np.asarray(cam.params, np.float64), 9)))
            if key not in cam_key:
                cam_key[key] = len(cam_key) + 1
                cameras[cam_key[key]] = SfmCamera(cam_key[key], cam.model, cam.width, cam.height,
                                                  np.asarray(cam.params, np.float64))
            cam_map[cid] = cam_key[key]
        img_map = {}
        for iid, im in sorted(model.images.items()):
            if im.name in taken:
                continue
            taken.add(im.name)
            new = len(images) + 1
            img_map[iid] = new
            images[new] = SfmImage(new, im.name, cam_map[im.camera_id], im.R, im.t, im.xys,
                                   np.full(len(im.point3D_ids), -1, np.int64))
        for p in range(len(model.point_ids)):
            keep = [(img_map[i], k) for i, k in zip(model.track_image_ids[p], model.track_point2D_idx[p])
                    if int(i) in img_map]
            if not keep:
                continue
            pid = len(point_ids) + 1
            point_ids.append(pid)
            xyz.append(model.xyz[p])
            rgb.append(model.rgb[p])
            tracks_img.append(np.array([i for i, _ in keep], np.int64))
            tracks_idx.append(np.array([k for _, k in keep], np.int64))
            for i, k in keep:
                images[i].point3D_ids[k] = pid
    return SfmModel(cameras, images, np.array(point_ids, np.int64), np.array(xyz, np.float64).reshape(-1, 3),
                    np.array(rgb, np.uint8).reshape(-1, 3), tracks_img, tracks_idx)
