"""``pixloc-ros build-map``: compile a COLMAP model, its images and the weights into a map file.

    pixloc-ros build-map --colmap DIR --images DIR --weights CKPT --out FILE [--georef FILE]
                         [--max-image-edge N] [--sample-at reprojection|keypoint]
                         [--min-track-length 3] [--border-pad auto|PX|PX0,PX1,PX2]
                         [--device cuda|cpu] [--verify] [--int8]
                         [--tile-size M [--ray [--ray-address ADDR] [--ray-workers N]]]

Runs the network once per keyframe (CUDA with fp16 autocast when available, else CPU) and
stores the reference features of every observation; the node loads the file at start.
Compile at the size the node's queries run at: mapping images larger than the queries (e.g.
`pixloc-ros synth --preset small` maps at 640x480 for 320x240 queries; its world.json says so
under "build_map") need --max-image-edge with the queries' longer side:

    pixloc-ros build-map --colmap DIR/sfm --images DIR/mapping/images --weights W --out DIR/map.pxmap \\
        --georef DIR/georef.json --max-image-edge 320

City-scale maps: --tile-size M writes a tiled map, the folder --out with index.pxmap and one
map file per M x M metres (core/maps/tiles.py); the node loads the tiles around the vehicle. A
rerun reuses every tile already built from the same inputs (resume after an interruption).
--ray runs the tiles as Ray tasks (pip install ray): on a local Ray instance it starts (one
worker per CPU core, or per GPU) or on the cluster at --ray-address; the result is identical.
"""
from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``build-map`` command."""
    parser = subparsers.add_parser(
        "build-map", help="compile a COLMAP model + images + weights into a map file",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--colmap", required=True, metavar="DIR", help="COLMAP model folder (cameras/images/points3D)")
    parser.add_argument("--images", required=True, metavar="DIR", help="folder holding the model's images by name")
    parser.add_argument("--weights", required=True, metavar="CKPT",
                        help="the weights the node will run (official .tar/.pth or .safetensors)")
    parser.add_argument("--out", required=True, metavar="FILE", help="map file to write (e.g. map.pxmap)")
    parser.add_argument("--georef", metavar="FILE", help="georeference JSON (Georeference.save) for GNSS priors")
    parser.add_argument("--max-image-edge", type=int, default=None, metavar="N",
                        help="resize keyframes so the longer side is at most N pixels (default: the weights' "
                             "engine profile: 1024 for the released PixLoc weights, full size for native ones; "
                             "0: full size; use the size the node's queries run at)")
    parser.add_argument("--sample-at", choices=("reprojection", "keypoint"), default="reprojection",
                        help="sample reference features at the 3D point's reprojection (PixLoc) or at the keypoint")
    parser.add_argument("--min-track-length", type=int, default=3, help="keep points seen by at least this many images")
    parser.add_argument("--border-pad", type=_border_pad, default=None, metavar="auto|PX|PX0,PX1,PX2",
                        help="level pixels kept clear of each level's border (finest first): observations inside "
                             "the finest level's pad are dropped, inside a coarser one they get confidence 0 at "
                             "that level; 'auto' (default): 4 px, less on coarse maps under 48 px "
                             "(localizer.level_pads)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--verify", action="store_true", help="reopen the written file and check every block")
    parser.add_argument("--int8", action="store_true",
                        help="then build the map's int8 network for CPUs (pixloc-ros quantize; needs NNCF)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    tiles = parser.add_argument_group("tiled maps (city scale)")
    tiles.add_argument("--tile-size", type=_positive, default=None, metavar="M",
                       help="write a tiled map into the folder --out: tiles of M x M metres (e.g. 200)")
    tiles.add_argument("--ray", action="store_true", help="compile the tiles as Ray tasks (needs --tile-size)")
    tiles.add_argument("--ray-address", default=None, metavar="ADDR",
                       help="Ray cluster to join (e.g. auto, ray://head:10001); default: start a local instance")
    tiles.add_argument("--ray-workers", type=int, default=None, metavar="N",
                       help="Ray workers (default: one per GPU, else one per CPU core)")
    parser.set_defaults(func=run)


def _positive(text: str) -> float:
    """argparse type: a positive number."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of metres, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
    return value


def _border_pad(text: str) -> float | tuple[float, ...] | None:
    """argparse type of --border-pad: "auto" -> None, "4" -> 4.0, "4,4,1.5" -> (4.0, 4.0, 1.5)."""
    if text.strip().lower() == "auto":
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto', a number or comma-separated numbers, got {text!r}")
    if any(not (v >= 0) for v in values):
        raise argparse.ArgumentTypeError(f"pads must be >= 0, got {text!r}")
    return values[0] if len(values) == 1 else values


def run(args: argparse.Namespace) -> int:
    """Compile the map; prints a summary; returns 1 with one error line on failure."""
    import torch

    from pixloc_ros.core.engine.checkpoint import WeightsError, load_weights, weights_fingerprint
    from pixloc_ros.core.maps.colmap_io import read_model
    from pixloc_ros.core.geometry.georef import Georeference
    from pixloc_ros.core.maps.compile_keyframes import CompileConfig
    from pixloc_ros.core.maps.compile import compile_map, compile_tiled_map
    from pixloc_ros.core.maps.mapfile_format import MapFileError
    from pixloc_ros.core.maps.mapfile import open_map

    try:
        if (args.ray or args.ray_address or args.ray_workers) and args.tile_size is None:
            raise ValueError("--ray compiles tiles: give --tile-size too")
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        config = CompileConfig(sample_at=args.sample_at, min_track_length=args.min_track_length,
                               max_image_edge=args.max_image_edge, border_pad=args.border_pad)
        georef = Georeference.load(args.georef) if args.georef else None
        sfm = read_model(args.colmap)
        ray = None
        if args.ray or args.ray_address or args.ray_workers:
            from pixloc_ros.core.maps.compile_ray import RayOptions
            ray = RayOptions(args.ray_address, args.ray_workers, args.device or "auto")
        # With Ray the driver only plans and reads the levels: it keeps the weights on the CPU.
        model = load_weights(args.weights, "cpu" if ray is not None else device)
        fingerprint = weights_fingerprint(model)
        if args.tile_size is not None:
            stats = compile_tiled_map(sfm, args.images, model, args.out, fingerprint, args.tile_size, georef, config,
                                      progress=not args.quiet, ray=ray, weights_path=args.weights)
            if args.verify:
                from pixloc_ros.core.maps.tiles import open_tiled_map
                open_tiled_map(args.out, expected_fingerprint=fingerprint).verify(progress=not args.quiet)
            if args.int8:
                _int8(args, fingerprint)
            _print_tiled(stats, fingerprint, args)
            return 0
        stats = compile_map(sfm, args.images, model, args.out, fingerprint, georef, config,
                            progress=not args.quiet)
        if args.verify:
            open_map(stats.path, expected_fingerprint=fingerprint, verify=True,
                     expected_profile=model.engine_profile.name)
        if args.int8:
            _int8(args, fingerprint)
    except (FileNotFoundError, FileExistsError, ValueError, WeightsError, MapFileError, ImportError) as err:
        print(f"pixloc-ros build-map: error: {err}", file=sys.stderr)
        return 1
    size = stats.file_size_bytes
    print(f"wrote {stats.path}: {stats.num_keyframes} keyframes, {stats.num_points} points, "
          f"{stats.num_observations} observations ({stats.num_dropped_observations} dropped at the image border; "
          f"confidence 0 at the border of levels 1.. for {', '.join(str(n) for n in stats.num_zero_confidence[1:])}), "
          f"{size / 2**20:.1f} MiB ({size / max(stats.num_points, 1):.0f} B/point)")
    print(f"device {device}: {stats.seconds:.1f} s, {stats.images_per_s:.2f} images/s "
          f"(network {stats.network_seconds:.1f} s); weights {fingerprint[:16]}..., "
          f"{model.engine_profile.name} engine profile")
    if stats.skipped_images:
        print(f"skipped {len(stats.skipped_images)} images without points of track >= {args.min_track_length}")
    return 0


def _int8(args, fingerprint: str) -> None:
    """``--int8``: the map's int8 network, as ``pixloc-ros quantize`` builds it (on the CPU)."""
    from pixloc_ros.core.engine.checkpoint import load_weights
    from pixloc_ros.core.maps.open_index import open_map_index
    from pixloc_ros.core.tracking.int8_map import build_int8

    model = load_weights(args.weights, "cpu")
    index = open_map_index(args.out, expected_fingerprint=fingerprint)
    try:
        net = build_int8(model, index, args.out, args.images, fingerprint)
    finally:
        index.close()
    c = net.check
    print(f"int8 network: {net.folder}; check {'passed' if c.passed else 'FAILED'} ({c.int8_correct} of {c.attempts} "
          f"keyframes localized, float32 {c.f32_correct}; median {c.median_translation_m * 100:.1f} cm from float32)")


def _print_tiled(stats, fingerprint: str, args) -> None:
    """The summary of a tiled build."""
    s = stats.summary
    print(f"wrote {s.folder}: {s.num_tiles} tiles of {args.tile_size:g} m ({stats.tiles_built} built, "
          f"{stats.tiles_reused} reused from an earlier run), {s.num_keyframes} keyframes, {s.num_points} points "
          f"({s.num_point_rows} rows over the tiles), {s.num_observations} observations, "
          f"{s.bytes / 2**20:.1f} MiB (largest tile {s.largest_tile_bytes / 2**20:.1f} MiB)")
    rate = f"{stats.images_per_s:.2f} images/s" if stats.keyframes_built else "nothing to compute"
    engine = stats.engine + (f" (start-up {stats.startup_seconds:.1f} s)" if stats.startup_seconds else "")
    print(f"{engine}: {stats.seconds:.1f} s for {stats.keyframes_built} keyframes, {rate} "
          f"(network {stats.network_seconds:.1f} s); {stats.num_dropped_observations} observations dropped at the "
          f"image border; weights {fingerprint[:16]}...")
    if stats.skipped_images:
        print(f"skipped {len(stats.skipped_images)} images without points of track >= {args.min_track_length}")
    if stats.removed_files:
        print(f"removed {len(stats.removed_files)} tile files of an earlier build that no tile uses now")
