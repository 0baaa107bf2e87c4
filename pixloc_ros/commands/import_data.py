"""``pixloc-ros import {cmu,robotcar,sequence}``: benchmark folders -> map inputs + query bags.

Several CMU slices (``--slice A --slice B`` or ``--root DIR --slices 2-8``) become one import
with one map frame for the route (the slices share the dataset's world frame); RobotCar
Seasons is one frame already. Build a city-scale map of it with ``build-map --tile-size``.

The output has the synthetic world's layout (docs/architecture.md), so ``pixloc-ros build-map``,
``play`` and ``evaluate`` take it as they take ``pixloc-ros synth`` output:
``OUT/mapping/images/``, ``OUT/sfm/``, ``OUT/georef.json``, ``OUT/queries/<sequence>/`` (MCAP),
``OUT/queries/<sequence>_gt.txt``, plus ``OUT/import.json`` (provenance, map_from_world).

CMU Seasons (c0, c1) and RobotCar Seasons (left, rear, right) are camera rigs: each query drive
becomes one bag with every camera on ``/<camera>/image_raw`` + ``/<camera>/camera_info`` and the
extrinsics (from the dataset's per-image poses, checked constant over the drive) on ``/tf_static``,
which ``evaluate --rig <cameras>`` and the node's ``rig_cameras`` read as they are; map images are
named ``<camera>/...``. ``--per-camera`` writes one single-camera bag per camera and drive instead.
"""
from __future__ import annotations

import argparse
import sys

# Nominal georeference origins (lat, lon, alt) near where the datasets were recorded. The
# benchmarks publish no georeference; these only make the synthetic GNSS fixes plausible.
DEFAULT_ORIGINS = {
    "cmu": (40.4406, -79.9959, 300.0),  # Pittsburgh, PA
    "robotcar": (51.7520, -1.2577, 70.0),  # Oxford, UK
    "sequence": (49.0069, 8.4037, 115.0),  # Karlsruhe, DE (KITTI)
}


def register(subparsers) -> None:
    """Add ``import`` and its three dataset sub-commands."""
    parser = subparsers.add_parser(
        "import", help="import CMU Seasons / RobotCar Seasons / an image sequence",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    datasets = parser.add_subparsers(dest="dataset", metavar="DATASET")
    datasets.required = True

    cmu = datasets.add_parser("cmu", help="Extended CMU Seasons: one slice, several, or all of them in one map frame")
    cmu.add_argument("--slice", action="append", metavar="DIR",
                     help="a sliceN folder (database/, query/, ground truth); repeat it to merge slices")
    cmu.add_argument("--root", metavar="DIR", help="the folder holding the sliceN folders (with --slices)")
    cmu.add_argument("--slices", default="all", metavar="all|2-8,10",
                     help="with --root: which slices to merge (default: all of them)")
    cmu.add_argument("--intrinsics", help="intrinsics.txt (default: the slice's or its parent's, "
                                          "else the published c0/c1 constants)")
    cmu.add_argument("--cameras", help="comma-separated camera names (default: c0,c1)")
    cmu.add_argument("--sequence-gap", type=float, default=600.0,
                     help="seconds between two images of a camera that start a new query sequence")
    _add_common(cmu, "cmu", "the slice's sparse/ model")
    _add_rig(cmu, "c0 upright (the dataset publishes no car frame)")

    rc = datasets.add_parser("robotcar", help="RobotCar Seasons (v2)")
    rc.add_argument("--root", required=True, help="dataset root (images/, intrinsics/, extrinsics/, 3D-models/)")
    rc.add_argument("--reference-poses", help="NVM of the reference images (default 3D-models/all-merged/all.nvm) "
                                              "or a COLMAP model folder in the same frame")
    rc.add_argument("--query-poses", help="camera-to-world list of query poses (default robotcar_v2_train.txt)")
    rc.add_argument("--conditions", help="comma-separated query conditions (default: all in images/)")
    rc.add_argument("--cameras", help="comma-separated cameras (default: left,rear,right)")
    rc.add_argument("--sequence-gap", type=float, default=None,
                    help="also split a condition's sequence at gaps longer than this (seconds)")
    _add_common(rc, "robotcar", "none: triangulate")
    _add_rig(rc, "the car frame of extrinsics/ (the first camera upright without it)")

    seq = datasets.add_parser("sequence", help="any image sequence with KITTI or TUM poses")
    seq.add_argument("--images", required=True, help="image folder")
    seq.add_argument("--poses", required=True, help="KITTI (3x4 camera-to-world rows) or TUM "
                                                   "(t x y z qx qy qz qw) pose file, one pose per image")
    seq.add_argument("--pose-format", choices=("auto", "kitti", "tum"), default="auto")
    seq.add_argument("--intrinsics", required=True,
                     help='"MODEL params..." (COLMAP model, e.g. "PINHOLE fx fy cx cy") or a camera_info YAML')
    seq.add_argument("--pixel-origin", choices=("centre", "corner"), default="centre",
                     help="principal point of a MODEL string counts from the top-left pixel's centre "
                          "(OpenCV/ROS/KITTI calibration) or its corner (COLMAP)")
    seq.add_argument("--image-list", help="file naming the images in pose order (default: natural sort)")
    seq.add_argument("--times", help="KITTI times.txt (seconds); default: --fps")
    seq.add_argument("--fps", type=float, default=10.0, help="frame rate when no stamps are given")
    seq.add_argument("--start-time", type=float, default=1_600_000_000.0,
                     help="stamp of frame 0 in seconds when stamps are synthesised (not 0: ROS sim time)")
    seq.add_argument("--map-frames", help="frames of the map, e.g. 0,2,4 or 0-100:2 (default: even frames)")
    seq.add_argument("--query-frames", help="frames of the query bag (default: the others)")
    seq.add_argument("--camera-name", default="camera")
    seq.add_argument("--sequence-name", default="query")
    _add_common(seq, "sequence", "none: triangulate")

    for p in (cmu, rc, seq):
        p.set_defaults(func=run)


def _add_common(parser, dataset: str, default_sfm: str) -> None:
    lat, lon, alt = DEFAULT_ORIGINS[dataset]
    parser.add_argument("--out", required=True, help="output folder (must be empty or absent)")
    parser.add_argument("--sfm", help=f"COLMAP model of the reference images in the dataset's frame, or "
                                      f"'triangulate' (pycolmap SIFT + triangulation with the known poses); "
                                      f"default: {default_sfm}")
    parser.add_argument("--frame", choices=("level", "keep"), default="level",
                        help="level: map frame z-up (from the cameras), origin at the reference centroid; "
                             "keep: the dataset's own frame")
    parser.add_argument("--origin", default=f"{lat},{lon},{alt}",
                        help="georeference origin LAT,LON,ALT[,HEADING_DEG] of the map frame (nominal)")
    parser.add_argument("--gnss-white", type=float, default=0.5,
                        help="synthetic GNSS: white noise East/North, metres (1 sigma per axis)")
    parser.add_argument("--gnss-white-up", type=float, default=0.8, help="synthetic GNSS: white noise Up, metres")
    parser.add_argument("--gnss-bias", type=float, default=0.8,
                        help="synthetic GNSS: slowly varying bias East/North, metres (Gauss-Markov)")
    parser.add_argument("--gnss-bias-up", type=float, default=1.2, help="synthetic GNSS: bias Up, metres")
    parser.add_argument("--gnss-correlation-time", type=float, default=30.0,
                        help="synthetic GNSS: correlation time of the bias, seconds")
    parser.add_argument("--seed", type=int, default=0, help="seed of the GNSS noise")
    parser.add_argument("--include-unposed", action="store_true",
                        help="keep query images without ground truth (no GNSS / ground-truth message)")
    parser.add_argument("--link-images", action="store_true", help="symlink map images instead of copying")
    parser.add_argument("--compressed", action="store_true",
                        help="store query images as sensor_msgs/CompressedImage (jpeg) instead of raw Image")
    parser.add_argument("--max-query-frames", type=int, default=None,
                        help="keep at most this many frames per query sequence (quick tries)")


def _add_rig(parser, base_link: str) -> None:
    parser.add_argument("--per-camera", action="store_true",
                        help="one bag per camera and drive on /camera/image_raw (the single-camera layout) instead "
                             f"of one rig bag per drive with every camera (base_link: {base_link})")
    parser.add_argument("--rig-tolerance", type=float, default=0.01, metavar="S",
                        help="largest stamp difference of one instant's frames, seconds (the node's "
                             "rig_tolerance_s and evaluate --rig group with 0.01)")
    parser.add_argument("--extrinsics-tolerance", default="0.1,1.0", metavar="M,DEG",
                        help="how far one instant's relative camera pose may be from the drive's mean before the "
                             "import stops (the cameras are then no rigid, synchronised rig)")


def _rig_check(args):
    from pixloc_ros.data.importers.rig_output import RigCheck

    try:
        m, deg = (float(v) for v in args.extrinsics_tolerance.split(","))
    except ValueError:
        raise ValueError(f"--extrinsics-tolerance takes M,DEG, got {args.extrinsics_tolerance!r}") from None
    if not (args.rig_tolerance >= 0 and m > 0 and deg > 0):
        raise ValueError("--rig-tolerance must be >= 0 and --extrinsics-tolerance positive")
    return RigCheck(int(round(args.rig_tolerance * 1e9)), m, deg)


def _csv(text: str | None) -> list[str] | None:
    return [s.strip() for s in text.split(",") if s.strip()] if text else None


def run(args) -> int:
    """Read the dataset, write the import, print a summary; 1 with one error line on bad input."""
    try:
        summary = _import(args)
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        print(f"pixloc-ros import {args.dataset}: error: {err}", file=sys.stderr)
        return 1
    print(summary.as_text())
    return 0


def _import(args):
    from pixloc_ros.core.geometry.georef import Georeference
    from pixloc_ros.data.importers import GnssNoise, ImportOptions, write_import

    if args.dataset == "cmu":
        from pixloc_ros.data.importers.cmu import find_slices, read_cmu_slices
        if bool(args.slice) == bool(args.root):
            raise ValueError("give the slices with --slice DIR (repeatable) or with --root DIR [--slices 2-8]")
        slices = args.slice or find_slices(args.root, args.slices)
        plan = read_cmu_slices(slices, args.intrinsics, args.include_unposed, args.sequence_gap, _csv(args.cameras))
    elif args.dataset == "robotcar":
        from pixloc_ros.data.importers.robotcar import read_robotcar
        plan = read_robotcar(args.root, args.reference_poses, args.query_poses, _csv(args.conditions),
                             _csv(args.cameras), args.include_unposed, args.sequence_gap)
    else:
        from pixloc_ros.data.importers.sequence import read_sequence
        plan = read_sequence(args.images, args.poses, args.intrinsics, args.pose_format, args.image_list,
                             args.times, args.fps, args.start_time, args.map_frames, args.query_frames,
                             args.pixel_origin, args.camera_name, args.sequence_name)

    origin = [float(v) for v in args.origin.split(",")]
    if len(origin) not in (3, 4):
        raise ValueError(f"--origin takes LAT,LON,ALT[,HEADING_DEG], got {args.origin!r}")
    options = ImportOptions(
        frame=args.frame, georef=Georeference(*origin),
        gnss=GnssNoise(args.gnss_white, args.gnss_white_up, args.gnss_bias, args.gnss_bias_up,
                       args.gnss_correlation_time, args.seed),
        sfm=args.sfm, link_images=args.link_images, compressed_images=args.compressed,
        max_query_frames=args.max_query_frames)
    if args.dataset in ("cmu", "robotcar"):
        options.per_camera = args.per_camera
        options.rig_check = _rig_check(args)
    return write_import(plan, args.out, options)
