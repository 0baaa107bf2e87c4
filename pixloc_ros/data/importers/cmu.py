"""Extended CMU Seasons: read one slice into an :class:`ImportPlan`.

Layout of a slice, as published (https://www.visuallocalization.net/datasets/, the dataset's
README, and the readers in cvg/pixloc ``pixloc/pixlib/preprocess_cmu.py`` and naver/kapture's
``import_extended_cmu_seasons.py``)::

    sliceN/database/img_00122_c0_1303398475046031us.jpg      reference images
    sliceN/query/img_01234_c1_1283347879534213us.jpg         query images (other seasons)
    sliceN/ground-truth-database-images-sliceN.txt           name qw qx qy qz cx cy cz
    sliceN/camera-poses/*.txt                                 same format, for ~50 % of the queries
    sliceN/sparse/                                            COLMAP model of the database images
    intrinsics.txt  (next to the slices)                      c0 OPENCV 1024 768 fx fy cx cy k1 k2 p1 p2

Pose lines: the README says "the first four are the components of a rotation quaternion,
corresponding to a rotation R, and the last three are the camera center C. The rotation R
corresponds to the first 3x3 subblock of the corresponding camera matrix [...] C = -R^T t",
i.e. the quaternion (w first) is cam_from_world (world -> camera, as in COLMAP/NVM) and the
translation is t = -R C. The file names carry the camera (c0/c1) and the capture time in
microseconds since the Unix epoch (UTC): ``img_<index>_<camera>_<time>us.jpg``.
"""
from __future__ import annotations

import datetime
import logging
import re
from pathlib import Path

import numpy as np

from pixloc_ros.core.geometry.transforms import matrix_from_quat_wxyz

from .common import CameraSpec, Frame, ImportPlan, center_to_translation, parse_floats, read_table, split_by_gap

logger = logging.getLogger(__name__)

# The two cameras of the Extended CMU Seasons dataset, COLMAP OPENCV model at 1024x768
# (fx fy cx cy k1 k2 p1 p2, pixel origin at the top-left corner as the README states).
# Source: the dataset's intrinsics.txt, as copied into cvg/pixloc
# pixloc/pixlib/datasets/cmu.py (CAMERAS) and used by hloc's CMU pipeline.
CMU_CAMERAS = {
    "c0": CameraSpec("c0", "OPENCV", 1024, 768, (868.993378, 866.063001, 525.942323, 420.042529,
                                                 -0.399431, 0.188924, 0.000153, 0.000571)),
    "c1": CameraSpec("c1", "OPENCV", 1024, 768, (873.382641, 876.489513, 529.324138, 397.272397,
                                                 -0.397066, 0.181925, 0.000176, -0.000579)),
}

# img_<index>_<camera>_<microseconds>us[_rect].jpg ("_rect" appears in the README's example of
# a submission line; the slices' files have no suffix).
IMAGE_NAME = re.compile(r"^img_(?P<index>\d+)_(?P<camera>c\d+)_(?P<time_us>\d+)us(?:_rect)?\.jpg$")

# Query sequences: the conditions were captured on different days; a gap longer than this
# between two images of one camera starts a new sequence.
DEFAULT_SEQUENCE_GAP_S = 600.0


def parse_image_name(name: str) -> tuple[str, int]:
    """``img_00122_c1_1303398474779487us.jpg`` -> (camera "c1", stamp in nanoseconds)."""
    m = IMAGE_NAME.match(Path(name).name)
    if m is None:
        raise ValueError(f"not an Extended CMU Seasons image name: {name!r} "
                         "(expected img_<index>_<camera>_<microseconds>us.jpg)")
    return m["camera"], int(m["time_us"]) * 1000


def read_intrinsics(path: Path) -> dict[str, CameraSpec]:
    """The dataset's ``intrinsics.txt``: lines ``name MODEL width height params...``."""
    cameras = {}
    for line_no, row in read_table(path):
        if len(row) < 5:
            raise ValueError(f"{path}:{line_no}: expected 'name MODEL width height params...'")
        name, model = row[0], row[1].upper()
        w, h, *params = parse_floats(row[2:], f"{path}:{line_no}")
        cameras[name] = CameraSpec(name, model, int(w), int(h), tuple(params))
    return cameras


def read_pose_list(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A CMU pose list (``name qw qx qy qz cx cy cz``) -> {file name: (R, t) of cam_from_world}."""
    poses = {}
    for line_no, row in read_table(path):
        if len(row) != 8:
            raise ValueError(f"{path}:{line_no}: expected 'name qw qx qy qz cx cy cz', got {len(row)} fields")
        values = parse_floats(row[1:], f"{path}:{line_no}")
        try:
            R = matrix_from_quat_wxyz(values[:4])
        except ValueError as err:
            raise ValueError(f"{path}:{line_no}: {err}") from None
        poses[Path(row[0]).name] = (R, center_to_translation(R, values[4:]))
    return poses


def find_slice_files(slice_dir: Path) -> tuple[int, Path]:
    """(slice number, ground-truth-database file) of a slice folder."""
    candidates = sorted(slice_dir.glob("ground-truth-database-images-slice*.txt"))
    if len(candidates) != 1:
        raise FileNotFoundError(f"{slice_dir}: expected one ground-truth-database-images-sliceN.txt, "
                                f"found {[c.name for c in candidates]}")
    m = re.search(r"slice(\d+)\.txt$", candidates[0].name)
    return int(m.group(1)), candidates[0]


def find_intrinsics(slice_dir: Path, explicit: Path | None) -> tuple[dict[str, CameraSpec], str]:
    """Cameras from ``explicit``, else ``intrinsics.txt`` in the slice or its parent, else the
    published constants; also says where they came from."""
    if explicit is not None:
        if not explicit.is_file():
            raise FileNotFoundError(f"intrinsics file {explicit} does not exist")
        paths = [explicit]
    else:
        paths = [slice_dir / "intrinsics.txt", slice_dir.parent / "intrinsics.txt"]
    for path in paths:
        if path.is_file():
            cameras = read_intrinsics(path)
            for name, published in CMU_CAMERAS.items():
                if name in cameras and not np.allclose(cameras[name].params, published.params, atol=1e-6):
                    logger.warning("%s: camera %s differs from the published intrinsics %s",
                                   path, name, published.params)
            return cameras, str(path)
    return dict(CMU_CAMERAS), "published constants (pixloc/pixlib/datasets/cmu.py)"


def sequence_name(camera: str, frames: list[Frame], taken: set[str]) -> str:
    """``<camera>_<UTC date>`` of the first frame (``<UTC date>`` for a rig drive: ``camera`` ""), with
    the start time appended if taken."""
    start = datetime.datetime.fromtimestamp(frames[0].stamp_ns / 1e9, datetime.timezone.utc)
    name = f"{camera}_{start:%Y%m%d}" if camera else f"{start:%Y%m%d}"
    if name in taken:
        name = f"{name}_{start:%H%M%S}"
    return name


def split_drives(frames: list[Frame], cameras: list[str], sequence_gap_s: float | None
                 ) -> tuple[dict[str, list[Frame]], dict[str, list[Frame]]]:
    """(per-camera sequences ``<camera>_<date>``, rig drives ``<date>`` with every camera's frames):
    each cut where a camera's (a drive's) consecutive images are more than ``sequence_gap_s`` apart."""
    queries: dict[str, list[Frame]] = {}
    for camera in cameras:
        for seq in split_by_gap([f for f in frames if f.camera == camera], sequence_gap_s):
            queries[sequence_name(camera, seq, set(queries))] = seq
    drives: dict[str, list[Frame]] = {}
    for seq in split_by_gap([f for f in frames if f.camera in cameras], sequence_gap_s):
        drives[sequence_name("", seq, set(drives))] = seq
    return queries, drives


def read_cmu_slice(slice_dir: str | Path, intrinsics: str | Path | None = None,
                   include_unposed: bool = False, sequence_gap_s: float | None = DEFAULT_SEQUENCE_GAP_S,
                   cameras: list[str] | None = None) -> ImportPlan:
    """Read an Extended CMU Seasons slice folder into an :class:`ImportPlan`.

    slice_dir: ``.../sliceN``. intrinsics: an ``intrinsics.txt`` (default: the slice's or its
    parent's, else the published constants). include_unposed: also put query images without
    ground truth into the query bags (they get no GNSS prior nor ground-truth message).
    sequence_gap_s: a longer gap between two images of one camera starts a new query sequence.
    cameras: restrict to these camera names (default both), in rig order (the first is the rig's
    anchor and, upright, its base_link: the dataset publishes no car frame).
    Reference frames are the database images listed with a pose; queries are grouped per
    camera and capture day (``queries``) and per capture day with every camera (``rig_queries``),
    in timestamp order. The dataset's ``sparse/`` model, when present,
    becomes the plan's SfM model.
    """
    slice_dir = Path(slice_dir)
    if not slice_dir.is_dir():
        raise FileNotFoundError(f"CMU slice folder {slice_dir} does not exist")
    number, gt_file = find_slice_files(slice_dir)
    cams, intrinsics_source = find_intrinsics(slice_dir, Path(intrinsics) if intrinsics else None)
    order = list(dict.fromkeys(cameras)) if cameras else sorted(cams)
    wanted = set(order)
    unknown = wanted - set(cams)
    if unknown:
        raise ValueError(f"unknown CMU cameras {sorted(unknown)} (known: {sorted(cams)})")

    reference = []
    for name, (R, t) in sorted(read_pose_list(gt_file).items()):
        camera, stamp = parse_image_name(name)
        if camera not in wanted:
            continue
        path = slice_dir / "database" / name
        if not path.is_file():
            raise FileNotFoundError(f"{gt_file} lists {name} but {path} does not exist")
        reference.append(Frame(path, name, stamp, camera, R, t))
    if not reference:
        raise ValueError(f"{gt_file}: no reference image of cameras {sorted(wanted)}")

    query_poses = {}
    for pose_file in sorted((slice_dir / "camera-poses").glob("*.txt")):
        query_poses.update(read_pose_list(pose_file))
    query_frames, total = [], 0
    for path in sorted((slice_dir / "query").glob("*.jpg")):
        camera, stamp = parse_image_name(path.name)
        if camera not in wanted:
            continue
        total += 1
        R, t = query_poses.get(path.name, (None, None))
        if R is None and not include_unposed:
            continue
        query_frames.append(Frame(path, path.name, stamp, camera, R, t))
    found = {f.name for f in query_frames}
    missing = [n for n in query_poses if parse_image_name(n)[0] in wanted and n not in found]
    if missing:
        logger.warning("%d query poses name images missing from %s, e.g. %s", len(missing),
                       slice_dir / "query", sorted(missing)[:3])

    queries, drives = split_drives(query_frames, sorted(wanted), sequence_gap_s)

    sparse = slice_dir / "sparse"
    has_sparse = any((sparse / f"cameras.{ext}").is_file() for ext in ("bin", "txt"))
    return ImportPlan(
        source="cmu", dataset_root=slice_dir,
        cameras={k: v for k, v in cams.items() if k in wanted},
        reference=reference, queries=queries, rig_cameras=order, rig_queries=drives,
        sfm_model=sparse if has_sparse else None,
        notes={"slice": str(number), "intrinsics": intrinsics_source,
               "pose_convention": "README: quaternion = cam_from_world rotation (w first), "
                                  "(cx cy cz) = camera centre, t = -R c",
               "query_ground_truth": f"{sum(f.has_pose for f in query_frames)} of "
                                     f"{total} query images posed (camera-poses/*.txt)"},
    )


def find_slices(root: str | Path, numbers: str = "all") -> list[Path]:
    """The ``sliceN`` folders under ``root``: all of them, or those named by ``numbers``
    ("2-8,10"), in slice order. FileNotFoundError for a named slice that is not there."""
    root = Path(root)
    found = {int(m.group(1)): p for p in root.iterdir() if p.is_dir() and (m := re.fullmatch(r"slice(\d+)", p.name))} \
        if root.is_dir() else {}
    if not found:
        raise FileNotFoundError(f"no sliceN folders in {root}")
    if numbers.strip().lower() == "all":
        return [found[n] for n in sorted(found)]
    wanted = []
    for part in numbers.split(","):
        a, _, b = part.strip().partition("-")
        try:
            wanted += list(range(int(a), int(b or a) + 1))
        except ValueError:
            raise ValueError(f"--slices takes 'all' or numbers and ranges like 2-8,10, got {numbers!r}") from None
    missing = [n for n in wanted if n not in found]
    if missing:
        raise FileNotFoundError(f"slices {missing} are not in {root} (found {sorted(found)})")
    return [found[n] for n in dict.fromkeys(wanted)]


def read_cmu_slices(slice_dirs: list[str | Path], intrinsics: str | Path | None = None,
                    include_unposed: bool = False, sequence_gap_s: float | None = DEFAULT_SEQUENCE_GAP_S,
                    cameras: list[str] | None = None) -> ImportPlan:
    """Several Extended CMU Seasons slices as one :class:`ImportPlan`: one map frame for the route.

    The slices share the dataset's world frame (``merge.py``), so their reference images are
    pooled (an image two slices list must have one pose), their ``sparse/`` models become one
    (``output.write_import`` merges them; with a slice lacking ``sparse/`` pass ``sfm="triangulate"``),
    and the query images of one camera and day, from every slice, form one drive split at gaps
    longer than ``sequence_gap_s``. One slice gives exactly ``read_cmu_slice``'s plan.
    """
    from .merge import merge_cameras, merge_frames, reference_gaps

    if len(slice_dirs) == 1:
        return read_cmu_slice(slice_dirs[0], intrinsics, include_unposed, sequence_gap_s, cameras)
    plans = [read_cmu_slice(d, intrinsics, include_unposed, sequence_gap_s, cameras) for d in slice_dirs]
    labels = [f"slice{p.notes['slice']}" for p in plans]
    if len(set(labels)) != len(labels):
        raise ValueError(f"the same slice is given twice: {labels}")
    reference = merge_frames([p.reference for p in plans], labels)
    query_frames = merge_frames([[f for seq in p.queries.values() for f in seq] for p in plans], labels)
    queries, drives = split_drives(query_frames, sorted({f.camera for f in query_frames}), sequence_gap_s)
    gaps = reference_gaps([p.reference for p in plans], labels)
    far = {k: v for k, v in gaps.items() if v > 1000.0}
    if far:
        logger.warning("slices %s are more than 1 km from every other slice (%s): are they in the same frame?",
                       sorted(far), ", ".join(f"{k}: {v:.0f} m" for k, v in far.items()))
    models = [p.sfm_model for p in plans]
    return ImportPlan(
        source="cmu", dataset_root=Path(slice_dirs[0]).parent, cameras=merge_cameras([p.cameras for p in plans]),
        reference=reference, queries=queries, rig_cameras=plans[0].rig_cameras, rig_queries=drives,
        sfm_model=models if all(m is not None for m in models) else None,
        notes={"slices": ",".join(p.notes["slice"] for p in plans), "intrinsics": plans[0].notes["intrinsics"],
               "pose_convention": plans[0].notes["pose_convention"],
               "frame": "the slices share the dataset's world frame; one map frame for all of them",
               "slice_gaps_m": ", ".join(f"{k}: {v:.1f}" for k, v in gaps.items()),
               "query_ground_truth": "; ".join(f"{lab}: {p.notes['query_ground_truth']}" for lab, p in zip(labels, plans)),
               **({} if all(m is not None for m in models) else
                  {"sfm": f"no sparse/ model in {[lab for lab, m in zip(labels, models) if m is None]}"})},
    )
