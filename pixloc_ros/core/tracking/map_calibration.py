"""A covariance calibration from the map alone: no drive, no ground truth beyond the map's own SfM
poses (``pixloc-ros calibrate --from-map``).

Every user has the images the map was built from. Each keyframe of a sample is localized against
the rest of the map - its own observations left out (and, optionally, those of keyframes within
``exclude_radius_m``), its image changed photometrically (brightness, contrast, gamma, blur,
noise: a stand-in for another day's light and camera), from a prior perturbed like the node's
relocalization priors - and its error against its SfM pose is a calibration sample. The samples fit
the model of ``covariance_calibration`` (groups: the photometric variants, each of which must be
covered).

What this cannot see: a query from another lateral position or season than any keyframe (the
keyframes left in are the held-out one's neighbours, a few metres along the same path), map
errors shared by all keyframes (an SfM drift is in the "truth" too), and a jitter history (each
sample is one frame, so the model's jitter slope stays 0: the node's online scaling,
``innovation``, covers what consecutive frames show). Its covariances are therefore a lower
bound for other seasons; ``CalibrationOptions.extra_inflation`` and the online scaling widen them.
Poses (4, 4) float64; errors and covariances in base_link axes (x forward, y left, z up) of a
camera-centred body, as the node's calibrations are.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from ..engine.covariance import engine_to_ros_covariance
from ..engine.images import camera_scale
from ..engine.localizer import Localizer
from ..geometry.pose import Pose
from ..geometry.transforms import make_transform, pose_difference, rot_y
from ..maps.compile_keyframes import load_keyframe_image
from ..maps.retrieval import BASE_FROM_OPTICAL, MapIndex, RetrievalConfig
from .covariance_calibration import CalibrationSample, CovarianceCalibration, fit_calibration, rotation_blocks
from .inlier_gates import MIN_CORRECT_SAMPLES, fit_inlier_gates

# (name, brightness gain, contrast factor, gamma, blur sigma px, noise sigma in 8-bit steps)
VARIANTS = (("as_mapped", 1.0, 1.0, 1.0, 0.0, 0.0),
            ("darker_blurred", 0.6, 0.8, 1.3, 1.2, 3.0),
            ("brighter_noisy", 1.35, 1.2, 0.8, 0.6, 6.0),
            ("flat_soft", 0.9, 0.6, 1.0, 1.6, 2.0))


@dataclass
class CalibrationOptions:
    """How ``map_calibration`` samples the map."""

    keyframes: int = 60  # keyframes localized, spread evenly over the map's keyframe order
    variants: tuple = VARIANTS  # photometric changes, each applied to every sampled keyframe
    prior_sigma_m: float = 0.5  # prior perturbation: std of the sideways and forward shifts, metres
    prior_sigma_deg: float = 3.0  # ... and of the yaw, degrees
    exclude_radius_m: float = 0.0  # leave out keyframes this close to the held-out one too (0: itself only)
    max_points: int = 4000  # residual rows per localization at most (the node's max_points)
    max_error_m: float = 1.0  # correct locks only: a wrong lock is the state machine's to catch
    max_error_deg: float = 5.0
    coverage: float = 0.85  # share of each variant's samples inside the 95 % bound after inflation
    extra_inflation: float = 1.0  # a final factor for what keyframes cannot show (module doc)
    seed: int = 0


def photometric_change(rgb: np.ndarray, gain: float, contrast: float, gamma: float, blur_px: float,
                       noise: float, rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) uint8 RGB with another exposure, contrast, gamma, lens blur and sensor noise."""
    x = rgb.astype(np.float32) / 255.0
    x = (x * gain - x.mean() * gain) * contrast + x.mean() * gain
    x = np.clip(x, 0.0, 1.0) ** gamma
    if blur_px > 0:
        x = cv2.GaussianBlur(x, (0, 0), blur_px)
    if noise > 0:
        x = x + rng.normal(0.0, noise / 255.0, x.shape).astype(np.float32)
    return (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def perturbed_prior(map_from_cam: np.ndarray, sigma_m: float, sigma_deg: float,
                    rng: np.random.Generator) -> np.ndarray:
    """``map_from_cam`` shifted sideways and forward (camera x, z) and turned about the camera's
    vertical axis (y), each by a normal draw: a car's prior is off on the road, not in height."""
    shift = make_transform(rot_y(math.radians(rng.normal(0.0, sigma_deg))),
                           [rng.normal(0.0, sigma_m), 0.0, rng.normal(0.0, sigma_m)])
    return map_from_cam @ shift


def held_out_points(index: MapIndex, keyframe: int, prior_cam_from_world: np.ndarray, camera, options,
                    retrieval: RetrievalConfig, rng: np.random.Generator):
    """The map's points near the prior without keyframe row ``keyframe``'s observations (nor those of
    keyframes within ``exclude_radius_m``); None when fewer than 10 rows remain."""
    centers = index.keyframe_centers
    excluded = np.flatnonzero(np.linalg.norm(centers - centers[keyframe], axis=1) <= options.exclude_radius_m)
    excluded = np.union1d(excluded, [keyframe])
    config = RetrievalConfig(**{**retrieval.__dict__, "num_keyframes": retrieval.num_keyframes + len(excluded)})
    r = index.retrieve(prior_cam_from_world, camera=camera, config=config)
    keep = ~torch.isin(r.points.keyframe_ids, torch.as_tensor(index.keyframe_ids[excluded]))
    points = r.points.select(keep)
    if len(points) > options.max_points:
        points = points.select(torch.from_numpy(np.sort(rng.permutation(len(points))[:options.max_points])))
    return points if len(points) >= 10 else None


def map_calibration_samples(localizer: Localizer, index: MapIndex, images: str | Path,
                            options: CalibrationOptions | None = None, retrieval: RetrievalConfig | None = None,
                            progress=None) -> tuple[list[CalibrationSample], list[str], dict]:
    """Localize a sample of keyframes against the rest of the map (module doc).

    images: the folder the map was compiled from (keyframe names are relative to it). Returns the
    samples (correct locks), their group labels (the variant names) and statistics: attempts, correct
    locks, wrong locks, failures, the inlier ratios of the correct and the wrong locks (quantiles
    5/50/95 %) and the wrong locks' ratios themselves (``wrong_inlier_ratios``; the correct ones are
    the samples'): what the inlier gates are fitted on.
    """
    options = options or CalibrationOptions()
    retrieval = retrieval or RetrievalConfig(num_keyframes=3)
    images = Path(images)
    rng = np.random.default_rng(options.seed)
    header = index.map.header
    profile = localizer.profile
    max_edge = header.compile_info.get("config", {}).get("max_image_edge")
    max_edge = profile.max_image_edge if max_edge is None else max_edge
    rows = np.unique(np.linspace(0, index.num_keyframes - 1, min(options.keyframes, index.num_keyframes)).round()
                     .astype(int))
    samples, groups, wrong_inliers = [], [], []
    stats = {"attempts": 0, "correct": 0, "wrong": 0, "failed": 0, "no_points": 0}
    for row in rows:
        full = index.keyframe_camera(row)
        w0, h0 = (int(round(float(v))) for v in full.size)
        rgb = load_keyframe_image(images / header.keyframe_names[row], w0, h0, max_edge, profile.resize)
        h, w = rgb.shape[:2]
        camera = full.scale(camera_scale(w0, h0, w, h, profile.resize)) if (w, h) != (w0, h0) else full
        map_from_cam = index.keyframe_world_from_cam[row]
        truth = map_from_cam @ np.linalg.inv(BASE_FROM_OPTICAL)  # map_from_base of a camera-centred body
        for name, gain, contrast, gamma, blur, noise in options.variants:
            stats["attempts"] += 1
            prior = perturbed_prior(map_from_cam, options.prior_sigma_m, options.prior_sigma_deg, rng)
            cam_from_world = np.linalg.inv(prior)
            points = held_out_points(index, row, cam_from_world, camera, options, retrieval, rng)
            if points is None:
                stats["no_points"] += 1
                continue
            image = photometric_change(rgb, gain, contrast, gamma, blur, noise, rng)
            result = localizer.localize(image, camera, points, Pose.from_numpy(cam_from_world[:3, :3], cam_from_world[:3, 3]))
            if progress is not None:
                progress()
            if not result.success or result.covariance is None:
                stats["failed"] += 1
                continue
            estimate = result.cam_from_world.inv().to_4x4_numpy() @ np.linalg.inv(BASE_FROM_OPTICAL)
            err = pose_difference(estimate, truth)
            if not (np.linalg.norm(err[:3]) <= options.max_error_m
                    and math.degrees(np.linalg.norm(err[3:])) <= options.max_error_deg):
                stats["wrong"] += 1
                wrong_inliers.append(float(result.inlier_ratio))
                continue
            cov_ros = engine_to_ros_covariance(result.covariance, result.cam_from_world,
                                               Pose.from_numpy(BASE_FROM_OPTICAL[:3, :3], BASE_FROM_OPTICAL[:3, 3]))
            A = rotation_blocks(estimate[:3, :3])
            samples.append(CalibrationSample(A.T @ cov_ros @ A, float(result.inlier_ratio), None, A.T @ err))
            groups.append(name)
            stats["correct"] += 1
    # What separates correct from wrong locks for these weights on this map (for choosing gates).
    for key, values in (("inlier_ratio_quantiles", [s.inlier_ratio for s in samples]),
                        ("wrong_inlier_ratio_quantiles", wrong_inliers)):
        if values:
            stats[key] = [float(q) for q in np.quantile(values, [0.05, 0.5, 0.95])]
    stats["wrong_inlier_ratios"] = wrong_inliers
    return samples, groups, stats


def calibrate_from_map(localizer: Localizer, index: MapIndex, images: str | Path, fingerprint: str,
                       options: CalibrationOptions | None = None, retrieval: RetrievalConfig | None = None,
                       progress=None) -> CovarianceCalibration:
    """``map_calibration_samples`` fitted (``covariance_calibration.fit_calibration``), the extra
    inflation applied, the statistics recorded in ``fitted_on`` (source "map"). ValueError when fewer
    than 12 keyframes localized correctly."""
    options = options or CalibrationOptions()
    samples, groups, stats = map_calibration_samples(localizer, index, images, options, retrieval, progress)
    if len(samples) < 12:
        raise ValueError(f"only {len(samples)} of {stats['attempts']} keyframe localizations were correct locks "
                         f"({stats}); the map is too small or the weights do not localize its keyframes")
    calib = fit_calibration(samples, groups, fingerprint, coverage=options.coverage)
    calib.inflation *= options.extra_inflation
    if len(samples) >= MIN_CORRECT_SAMPLES:  # the gates of these weights, as their keyframes score
        calib.inlier_gates = fit_inlier_gates(np.array([s.inlier_ratio for s in samples]),
                                              np.array(stats["wrong_inlier_ratios"]))
    calib.fitted_on.update(source="map", map_keyframes=int(index.num_keyframes), keyframe_stats=stats,
                           extra_inflation=options.extra_inflation)
    return calib


__all__ = ["CalibrationOptions", "VARIANTS", "calibrate_from_map", "held_out_points", "map_calibration_samples",
           "perturbed_prior", "photometric_change"]
