"""Write an :class:`ImportPlan` in the synthetic world's layout (docs/architecture.md):

    OUT/mapping/images/<name>       reference images (copied or symlinked)
    OUT/mapping/poses.txt           their ground-truth poses (map frame)
    OUT/sfm/                        COLMAP model of the reference images, map frame
    OUT/georef.json                 core.georef.Georeference of the map frame
    OUT/queries/<sequence>/         rosbag2 (MCAP): Image, CameraInfo, NavSatFix, ground truth, /tf_static
    OUT/queries/<sequence>_gt.txt   TUM ``stamp x y z qx qy qz qw`` of map_from_base
    OUT/import.json                 provenance: dataset, map_from_world, cameras, sequences, noise

A plan with several cameras (``ImportPlan.rig_cameras``: CMU Seasons, RobotCar Seasons) writes one rig
bag per drive with every camera (``rig_output``; ``ImportOptions.per_camera``: one bag per camera and
drive instead, the single-camera layout) and names its map images ``<camera>/<dataset name>``.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pixloc_ros.core.geometry.georef import Georeference
from pixloc_ros.core.geometry.transforms import make_transform, quat_xyzw_from_matrix

from .common import CameraSpec, Frame, ImportPlan, RigidTransform, cam_from_new_world, leveling_transform
from .gnss import GnssNoise, synthesize_gnss
from .rig import RigExtrinsics
from .rig_output import RigCheck, RigDrive, reference_extrinsics, write_rig_sequence

logger = logging.getLogger(__name__)


@dataclass
class ImportOptions:
    """How ``write_import`` writes a plan."""

    georef: Georeference  # georeference of the map frame (the datasets publish none)
    gnss: GnssNoise = field(default_factory=GnssNoise)
    frame: str = "level"  # "level": z-up map at the reference centroid; "keep": dataset frame
    sfm: str | Path | None = None  # COLMAP model path, "triangulate", or None: the plan's model else triangulate
    link_images: bool = False  # symlink the reference images instead of copying them
    compressed_images: bool = False  # query images as CompressedImage (jpeg) instead of Image
    max_query_frames: int | None = None  # cap per sequence (quick tries; a rig drive: instants)
    per_camera: bool = False  # a rig plan: one bag per camera and drive instead of one rig bag per drive
    rig_check: RigCheck = field(default_factory=RigCheck)  # a rig's instant grouping and extrinsics check
    # A given model must agree with the dataset's reference poses (same world frame).
    pose_check_m: float = 0.25
    pose_check_deg: float = 1.0


@dataclass
class SequenceSummary:
    """One written query sequence."""

    name: str
    camera: str
    frames: int
    posed_frames: int
    start_ns: int
    end_ns: int
    rig: RigDrive | None = None  # a rig drive: instants and extrinsics (``camera`` lists its cameras)


@dataclass
class ImportSummary:
    """What ``write_import`` wrote."""

    out_dir: Path
    source: str
    reference_images: int
    sfm_source: str  # "given:<path>" or "triangulated"
    sfm_images: int
    sfm_points: int
    map_from_world: np.ndarray  # (4, 4)
    sequences: list[SequenceSummary]
    model_pose_deviation: tuple[float, float] | None = None  # max (m, deg) of a given model vs the GT

    def as_text(self) -> str:
        """Human-readable summary, one item per line."""
        lines = [f"imported {self.source} into {self.out_dir}",
                 f"  map: {self.reference_images} reference images, SfM {self.sfm_source}: "
                 f"{self.sfm_images} images, {self.sfm_points} points"]
        if self.model_pose_deviation is not None:
            lines.append(f"  given model vs ground truth: max {self.model_pose_deviation[0]:.3f} m, "
                         f"{self.model_pose_deviation[1]:.3f} deg")
        for s in self.sequences:
            if s.rig is None:
                lines.append(f"  queries/{s.name}: {s.frames} frames ({s.posed_frames} with ground truth), "
                             f"camera {s.camera}, {(s.end_ns - s.start_ns) * 1e-9:.1f} s")
                continue
            ext = s.rig.extrinsics
            lines.append(f"  queries/{s.name}: rig {s.camera}, {s.rig.instants} instants ({s.frames} frames, "
                         f"{s.posed_frames} instants with ground truth), {(s.end_ns - s.start_ns) * 1e-9:.1f} s; "
                         f"extrinsics: {ext.source}, within {ext.max_deviation_m:.3f} m / "
                         f"{ext.max_deviation_deg:.2f} deg")
        if any(s.rig is not None for s in self.sequences):
            cams = next(s.camera for s in self.sequences if s.rig is not None)
            lines.append(f"  replay a rig drive: pixloc-ros evaluate --rig {cams} ...; the node: "
                         f"rig_cameras:=[{cams}] (extrinsics from the bag's /tf_static)")
        return "\n".join(lines)


def write_import(plan: ImportPlan, out: str | Path, options: ImportOptions) -> ImportSummary:
    """Write ``plan`` into the folder ``out`` (created; must be absent or empty).

    Reference and query poses move from the dataset's world into the map frame
    (``options.frame``); the SfM model is the given one (checked against the reference poses
    and moved to the map frame) or triangulated with pycolmap from the reference images at
    their known poses. Returns an :class:`ImportSummary`.
    """
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"output folder {out} is not empty")
    try:
        return _write_import(plan, out, options)
    except BaseException:
        # The folder was absent or empty: leave it so, a corrected command can run again.
        shutil.rmtree(out, ignore_errors=True)
        raise


def _write_import(plan: ImportPlan, out: Path, options: ImportOptions) -> ImportSummary:
    if options.frame not in ("level", "keep"):
        raise ValueError(f"Unsupported frame option {options.frame!r} (level, keep)")
    if not plan.reference:
        raise ValueError("the import has no reference images")
    names = [f.name for f in plan.reference]
    if len(set(names)) != len(names):
        raise ValueError("reference image names are not unique")

    map_from_world = leveling_transform(plan.reference) if options.frame == "level" else RigidTransform.identity()
    reference = [_to_map(f, map_from_world) for f in plan.reference]
    # the map's names (a rig's carry their camera); the frames keep the dataset's for the rig's extrinsics
    named = [Frame(f.image_path, plan.map_name(f), f.stamp_ns, f.camera, f.R, f.t) for f in reference]

    # A given model is read and checked first: a model in the wrong frame fails before any writing.
    sfm_path = _resolve_sfm(plan, options)
    model, deviation = (None, None) if sfm_path is None else _import_model(sfm_path, plan, map_from_world, options)

    images_dir = out / "mapping" / "images"
    for f in named:
        _place_image(f.image_path, images_dir / f.name, options.link_images)
    _write_reference_poses(out / "mapping" / "poses.txt", named)

    if model is None:
        from . import triangulate
        model = triangulate.triangulate_reference(named, plan.cameras, images_dir, out / "sfm_work")
        sfm_source = "triangulated"
    else:
        sfm_source = "given:" + (", ".join(map(str, sfm_path)) if isinstance(sfm_path, list) else str(sfm_path))
    from pixloc_ros.core.maps.colmap_io import write_model
    write_model(model, out / "sfm")

    options.georef.save(out / "georef.json")

    sequences = []
    rig = bool(plan.rig_cameras) and not options.per_camera
    pooled: list[RigExtrinsics] = []

    def fallback():  # computed once, and only for a drive whose own instants do not give the extrinsics
        if not pooled:
            pooled.append(reference_extrinsics(plan, reference, options.rig_check))
        return pooled[0]

    for k, (name, frames) in enumerate(sorted((plan.rig_queries if rig else plan.queries).items())):
        frames = frames if rig else sorted(frames, key=lambda f: f.stamp_ns)[: options.max_query_frames]
        if not frames:
            continue
        frames = [_to_map(f, map_from_world) for f in frames]
        noise = dataclasses.replace(options.gnss, seed=options.gnss.seed + k)
        if not rig:
            sequences.append(_write_sequence(out / "queries", name, frames, plan, options.georef, noise,
                                             options.compressed_images))
            continue
        drive = write_rig_sequence(out / "queries", name, frames, plan, options.georef, noise,
                                   options.compressed_images, options.rig_check, fallback, options.max_query_frames)
        sequences.append(SequenceSummary(name, ",".join(plan.rig_cameras), drive.frames, drive.posed_instants,
                                         drive.start_ns, drive.end_ns, drive))

    summary = ImportSummary(out, plan.source, len(reference), sfm_source, len(model.images), len(model.point_ids),
                            map_from_world.matrix(), sequences, deviation)
    _write_metadata(out / "import.json", plan, options, summary)
    return summary


# ---------------------------------------------------------------------------------------------

def _to_map(f: Frame, map_from_world: RigidTransform) -> Frame:
    """The frame with its pose re-expressed as cam_from_map."""
    if not f.has_pose:
        return f
    R, t = cam_from_new_world(f.R, f.t, map_from_world)
    return Frame(f.image_path, f.name, f.stamp_ns, f.camera, R, t)


def _place_image(src: Path, dst: Path, link: bool) -> None:
    """Copy (or symlink, absolute) ``src`` to ``dst``."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if link:
        os.symlink(Path(src).resolve(), dst)
    else:
        shutil.copy2(src, dst)


def _write_reference_poses(path: Path, frames: list[Frame]) -> None:
    """``name stamp_ns qx qy qz qw tx ty tz`` of cam_from_map per image: the synthetic world's
    ``mapping/poses.txt`` format (``data.sim.dataset.read_mapping_poses`` reads both)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["# mapping keyframes: name stamp_ns qx qy qz qw tx ty tz (cam_from_world; quaternion x y z w; metres)"]
    for f in frames:
        q = quat_xyzw_from_matrix(f.R)
        lines.append(f"{f.name} {f.stamp_ns} " + " ".join(f"{v:.9f}" for v in (*q, *f.t)))
    path.write_text("\n".join(lines) + "\n")


def _resolve_sfm(plan: ImportPlan, options: ImportOptions) -> Path | list[Path] | None:
    """The model(s) to import (None: triangulate)."""
    if options.sfm is None:
        return plan.sfm_model
    if str(options.sfm) == "triangulate":
        return None
    path = Path(options.sfm)
    if not path.is_dir():
        raise FileNotFoundError(f"SfM model folder {path} does not exist")
    return path


def _import_model(path: Path | list[Path], plan: ImportPlan, map_from_world: RigidTransform, options: ImportOptions):
    """Read a given model (dataset frame), check it against the reference poses, move it to the map frame.

    Several models (the parts of a merged import, one world frame) become one (``merge.merge_models``).
    Every image of the model must be a reference image of the plan (the map needs its file).
    Returns (SfmModel in the map frame, (max position error m, max rotation error deg)).
    """
    from pixloc_ros.core.maps.colmap_io import read_model

    if isinstance(path, list):
        from .merge import merge_models
        model = merge_models([read_model(p) for p in path])
        path = ", ".join(str(p) for p in path)
    else:
        model = read_model(path)
    by_name = {f.name: f for f in plan.reference}
    unknown = [im.name for im in model.images.values() if im.name not in by_name]
    if unknown:
        raise ValueError(f"{len(unknown)} images of the model {path} are not reference images of the dataset, "
                         f"e.g. {unknown[:3]}")
    dev_m, dev_deg = 0.0, 0.0
    for im in model.images.values():
        gt = by_name[im.name]
        dev_m = max(dev_m, float(np.linalg.norm(-im.R.T @ im.t - gt.center)))
        cos = (np.trace(im.R @ gt.R.T) - 1.0) / 2.0
        dev_deg = max(dev_deg, math.degrees(math.acos(float(np.clip(cos, -1.0, 1.0)))))
    if dev_m > options.pose_check_m or dev_deg > options.pose_check_deg:
        raise ValueError(f"the model {path} disagrees with the dataset's reference poses by up to {dev_m:.3f} m / "
                         f"{dev_deg:.3f} deg (limit {options.pose_check_m} m / {options.pose_check_deg} deg): "
                         "is it in the dataset's frame?")
    for im in model.images.values():
        im.R, im.t = cam_from_new_world(im.R, im.t, map_from_world)
        im.name = plan.map_name(by_name[im.name])
    model.xyz = map_from_world.apply(model.xyz)
    if len(model.images) < len(plan.reference):
        logger.warning("the model %s holds %d of the %d reference images", path, len(model.images),
                       len(plan.reference))
    return model, (dev_m, dev_deg)


def _write_sequence(queries_dir: Path, name: str, frames: list[Frame], plan: ImportPlan,
                    georef: Georeference, noise: GnssNoise, compressed: bool) -> SequenceSummary:
    """One query bag and its TUM ground truth (map_from_base of the posed frames)."""
    from pixloc_ros.data.bags import GnssFix

    from .bagwriter import write_query_bag

    cameras = {f.camera for f in frames}
    if len(cameras) != 1:
        raise ValueError(f"sequence {name!r} mixes cameras {sorted(cameras)}; one bag holds one camera")
    camera = plan.cameras[frames[0].camera]
    cam_from_base = np.linalg.inv(plan.base_from_cam_of(camera.name))
    posed = [f for f in frames if f.has_pose]
    # map_from_base = map_from_cam @ cam_from_base, map_from_cam = inverse(cam_from_map)
    truth = {f.stamp_ns: np.linalg.inv(make_transform(f.R, f.t)) @ cam_from_base for f in posed}
    fixes = synthesize_gnss(np.array([f.stamp_ns for f in posed], np.int64),
                            np.array([truth[f.stamp_ns][:3, 3] for f in posed]).reshape(-1, 3), georef, noise)
    gnss = {f.stamp_ns: GnssFix(f.stamp_ns, float(fixes.latitude_deg[i]), float(fixes.longitude_deg[i]),
                                float(fixes.altitude_m[i]), fixes.covariance_enu)
            for i, f in enumerate(posed)}
    queries_dir.mkdir(parents=True, exist_ok=True)
    write_query_bag(queries_dir / name, frames, camera, plan.base_from_cam_of(camera.name), truth, gnss, compressed)
    lines = ["# stamp_s x y z qx qy qz qw  (map_from_base_link)"]
    for f in posed:
        T = truth[f.stamp_ns]
        q = quat_xyzw_from_matrix(T[:3, :3])
        lines.append(f"{f.stamp_ns // 10**9}.{f.stamp_ns % 10**9:09d} " + " ".join(f"{v:.9f}" for v in (*T[:3, 3], *q)))
    (queries_dir / f"{name}_gt.txt").write_text("\n".join(lines) + "\n")
    return SequenceSummary(name, camera.name, len(frames), len(posed), frames[0].stamp_ns, frames[-1].stamp_ns)


def _camera_json(c: CameraSpec) -> dict:
    from pixloc_ros.core.geometry.camera import Camera

    cam = Camera.from_colmap(c.model, c.width, c.height, c.params)
    return {"colmap": {"model": c.model, "width": c.width, "height": c.height, "params": list(c.params)},
            "camera_info": {"width": c.width, "height": c.height, "distortion_model": "plumb_bob",
                            "K": [float(v) for v in cam.K.reshape(-1)], "D": [float(v) for v in cam.dist]}}


def _sequence_json(s: SequenceSummary) -> dict:
    """One sequence of import.json; a rig drive with its cameras, instants and extrinsics."""
    out = {k: v for k, v in s.__dict__.items() if k != "rig"}
    if s.rig is not None:
        ext = s.rig.extrinsics
        out["rig"] = {"cameras": s.camera.split(","), "instants": s.rig.instants,
                      "posed_instants": s.rig.posed_instants,
                      "base_from_cam": {c: T.tolist() for c, T in ext.base_from_cam.items()},
                      "extrinsics_source": ext.source, "posed_instants_per_camera": ext.instants,
                      "max_deviation_m_deg": [ext.max_deviation_m, ext.max_deviation_deg],
                      "from_published_extrinsics_m_deg": s.rig.published_deviation}
    return out


def _write_metadata(path: Path, plan: ImportPlan, options: ImportOptions, summary: ImportSummary) -> None:
    data = {
        "source": plan.source,
        "dataset_root": str(plan.dataset_root),
        "notes": plan.notes,
        "frame": options.frame,
        "map_from_world": summary.map_from_world.tolist(),
        "sfm": {"source": summary.sfm_source, "images": summary.sfm_images, "points": summary.sfm_points,
                "max_deviation_from_ground_truth_m_deg": summary.model_pose_deviation},
        "cameras": {name: _camera_json(c) for name, c in plan.cameras.items()},
        "base_from_cam": {name: plan.base_from_cam_of(name).tolist() for name in plan.cameras},
        "gnss_noise": {**dataclasses.asdict(options.gnss),
                       "note": "ENU: Gauss-Markov bias + white noise; sequence k uses seed + k"},
        "reference_images": summary.reference_images,
        "sequences": [_sequence_json(s) for s in summary.sequences],
    }
    path.write_text(json.dumps(data, indent=2) + "\n")
