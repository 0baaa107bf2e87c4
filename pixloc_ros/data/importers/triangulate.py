"""A COLMAP model of the reference images triangulated at their known (ground-truth) poses.

The pycolmap steps live in ``core/maps/colmap_io.py``: SIFT per camera (the dataset's own COLMAP
camera, distortion included), matching of pose-neighbour pairs, triangulation with the poses
and intrinsics fixed. The work folder (database) is deleted afterwards.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np

from .common import CameraSpec, Frame

logger = logging.getLogger(__name__)


def triangulate_reference(frames: list[Frame], cameras: dict[str, CameraSpec], image_dir: Path, work_dir: Path,
                          max_pair_distance_m: float = 30.0, max_pair_angle_deg: float = 60.0,
                          keep_work_dir: bool = False):
    """SfmModel of ``frames`` (posed, cam_from_map; names relative to ``image_dir``).

    Pairs: each image with up to 10 nearest others closer than ``max_pair_distance_m`` whose
    optical axes differ by less than ``max_pair_angle_deg``. Raises ValueError when nothing
    could be triangulated (too few overlapping images).
    """
    from pixloc_ros.core.maps import colmap_io

    if any(not f.has_pose for f in frames):
        raise ValueError("every reference frame needs a pose to triangulate")
    work_dir = Path(work_dir)
    if work_dir.exists():
        shutil.rmtree(work_dir)
    work_dir.mkdir(parents=True)
    database = work_dir / "database.db"
    try:
        for name, cam in cameras.items():
            names = [f.name for f in frames if f.camera == name]
            if names:
                colmap_io.extract_sift_features_for_camera(database, image_dir, names, cam.model, cam.width,
                                                           cam.height, cam.params)
        names = [f.name for f in frames]
        centers = np.stack([f.center for f in frames])
        view_dirs = np.stack([f.R[2] for f in frames])  # optical axis in the map: third row of R
        pairs = colmap_io.pairs_from_poses(names, centers, view_dirs, max_distance_m=max_pair_distance_m,
                                           max_angle_deg=max_pair_angle_deg)
        if not pairs:
            raise ValueError("no pair of reference images overlaps (by pose); cannot triangulate")
        verified = colmap_io.match_pairs(database, pairs)
        logger.info("matched %d pairs, %d verified", len(pairs), verified)
        report = colmap_io.triangulate_known_poses(database, image_dir, work_dir / "model",
                                                   {f.name: (f.R, f.t) for f in frames})
        logger.info("triangulated %d points over %d images (mean track %.2f, reprojection %.2f px)",
                    report.num_points, report.num_images, report.mean_track_length,
                    report.mean_reprojection_error_px)
        if report.num_points == 0:
            raise ValueError(f"triangulation produced no 3D point ({verified} of {len(pairs)} pairs verified)")
        return colmap_io.read_model(work_dir / "model")
    finally:
        if not keep_work_dir:
            shutil.rmtree(work_dir, ignore_errors=True)
