"""``pixloc-ros demo``: the main job, end to end on data the project makes itself.

1. generate the small synthetic world (mapping season + query seasons) unless present;
2. compile the map with the weights (unless a map built with these weights is present);
3. start the node (its own process, config/localize.yaml, sim time, DDS on loopback), replay a
   query drive recorded in another season through it with `pixloc-ros play`;
   with ``--rig front,left,right`` the world is recorded and mapped by that camera rig and the node
   localizes the rig (``rig_cameras``), every camera's heatmap in ``heatmap.png``;
4. score what the node published against the ground truth: frames localized, recall at the three
   CMU thresholds, median errors, latency percentiles; write plots (trajectory, error over time,
   heatmap snapshot) as PNG files.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHIPPED_WEIGHTS = REPO / "pixloc_ros" / "assets" / "pixloc_synth_vgg16.safetensors"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``demo`` command."""
    p = subparsers.add_parser(
        "demo", help="the main job: synthetic world -> map -> node replaying a drive in another season -> metrics",
        description="Generate the small synthetic world if absent, compile its map, run the localizer node on "
                    "a query drive recorded in another season over DDS (loopback), and report accuracy, "
                    "latency and plots.")
    p.add_argument("--out", default="demo_out", help="working folder (data, map, plots, logs)")
    p.add_argument("--condition", default="snow", help="query season to replay (overcast, autumn, snow, dusk)")
    p.add_argument("--weights", default=None,
                   help=f"PixLoc weights (default: the shipped {SHIPPED_WEIGHTS.name}, else random init)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic world")
    p.add_argument("--params", default=str(REPO / "config" / "localize.yaml"), help="node params file")
    p.add_argument("--cpu-precision", default=None, choices=("f32", "bf16", "int8", "auto"),
                   help="the network's precision on the CPU (default: the params file's); int8 and auto build the "
                        "map's int8 network first when NNCF is installed (pixloc-ros quantize)")
    p.add_argument("--rig", metavar="NAMES", default=None,
                   help="a camera rig, e.g. front,left,right (cameras: front, left, right, rear): its own world "
                        "recorded and mapped by the rig, the node localizing the rig")
    p.add_argument("--overlap", action="store_true", help="the node's overlap_network: the next frame's network "
                                                          "during this frame's LM")
    p.set_defaults(func=run)


def _step(text: str) -> None:
    print(f"[demo] {text}", flush=True)


def _weights(args, out: Path) -> Path:
    if args.weights:
        return Path(args.weights)
    if SHIPPED_WEIGHTS.exists():
        return SHIPPED_WEIGHTS
    from pixloc_ros.core.engine.checkpoint import init_weights, save_weights

    path = out / "random_vgg16.safetensors"
    if not path.exists():
        save_weights(init_weights("vgg16", 0), path)
    _step(f"WARNING: no trained weights shipped ({SHIPPED_WEIGHTS} missing): using random weights, "
          "which do not localize reliably")
    return path


def _ensure_world(out: Path, seed: int, rig: tuple[str, ...] | None = None) -> Path:
    from pixloc_ros.data.sim.synth import synthesize

    world = out / ("world" if rig is None else "world_rig_" + "_".join(rig))
    if (world / "world.json").exists() and (world / "sfm").exists():
        _step(f"synthetic world: {world} (present)")
        return world
    what = "" if rig is None else f", recorded and mapped by the rig {', '.join(rig)}"
    _step(f"generating the small synthetic world into {world}{what} (about a minute per camera) ...")
    started = time.perf_counter()
    synthesize(world, "small", seed=seed, workers=min(4, os.cpu_count() or 1), overwrite=True, rig=rig)
    _step(f"synthetic world ready ({time.perf_counter() - started:.0f} s)")
    return world


def _ensure_map(world: Path, weights: Path, out: Path, name: str = "map.pxmap") -> Path:
    from pixloc_ros.core.engine.checkpoint import load_weights, weights_fingerprint
    from pixloc_ros.core.maps.colmap_io import read_model
    from pixloc_ros.core.geometry.georef import Georeference
    from pixloc_ros.core.maps.compile_keyframes import CompileConfig
    from pixloc_ros.core.maps.compile import compile_map
    from pixloc_ros.core.maps.mapfile_format import MapFileError
    from pixloc_ros.core.maps.mapfile import open_map

    model = load_weights(weights, "cpu")
    fingerprint = weights_fingerprint(model)
    map_file = out / name
    if map_file.exists():
        try:
            open_map(map_file, expected_fingerprint=fingerprint, expected_profile=model.engine_profile.name)
            _step(f"map: {map_file} (present, built with these weights)")
            return map_file
        except MapFileError as err:
            _step(f"rebuilding the map: {str(err).splitlines()[0]}")
    # The keyframes may be rendered larger than the queries (denser SIFT): the map's features must
    # come from images at the queries' resolution, which world.json records.
    build = json.loads((world / "world.json").read_text()).get("build_map", {})
    config = CompileConfig(max_image_edge=build.get("max_image_edge"))
    _step("compiling the map (reference features of every keyframe) ...")
    started = time.perf_counter()
    stats = compile_map(read_model(world / "sfm"), world / "mapping" / "images", model, map_file, fingerprint,
                        Georeference.load(world / "georef.json"), config=config, progress=True)
    _step(f"map ready: {map_file} ({time.perf_counter() - started:.0f} s; {stats.num_keyframes} keyframes, "
          f"{stats.num_points} points, {stats.num_observations} observations)")
    return map_file


def _ensure_int8(world: Path, weights: Path, map_file: Path) -> None:
    """The map's int8 network (``<map>.int8``), built on its keyframes unless present and fresh."""
    from pixloc_ros.core.engine.checkpoint import load_weights, weights_fingerprint
    from pixloc_ros.core.engine.network_int8 import quantizer_installed
    from pixloc_ros.core.maps.open_index import open_map_index
    from pixloc_ros.core.tracking.int8_map import load_int8

    if not quantizer_installed():
        _step("no NNCF: the map gets no int8 network (pip install -r requirements/accel.txt)")
        return
    model = load_weights(weights, "cpu")
    fingerprint = weights_fingerprint(model)
    index = open_map_index(map_file, expected_fingerprint=fingerprint)
    try:
        started = time.perf_counter()
        net = load_int8(model, index, map_file, fingerprint, images=world / "mapping" / "images",
                        warn=lambda text: _step(f"WARNING: {text}"))
    finally:
        index.close()
    c = net.check
    _step(f"int8 network: {net.folder} ({net.source}, {time.perf_counter() - started:.0f} s); check "
          f"{'passed' if c.passed else 'FAILED'}: {c.int8_correct}/{c.attempts} keyframes localized (float32 "
          f"{c.f32_correct}), median {c.median_translation_m * 100:.1f} cm from float32")


def _heatmap_snapshot(result, rig: tuple[str, ...] | None):
    """(H, W, 3) uint8 RGB: the fused heatmap of the drive's middle frame; for a rig, every camera's
    of one instant all cameras took part in, one above the other under its name (widths padded);
    None if none came."""
    import numpy as np

    from pixloc_ros.ros.conversions import image_to_rgb, stamp_to_ns

    if rig is None:
        return image_to_rgb(result.heatmaps[len(result.heatmaps) // 2]) if result.heatmaps else None
    by_camera = [{stamp_to_ns(m.header.stamp): m for m in result.camera_heatmaps.get(c, [])} for c in rig]
    common = sorted(set.intersection(*(set(d) for d in by_camera))) if by_camera else []
    if not common:
        return None
    stamp = common[len(common) // 2]
    import cv2

    tiles = [image_to_rgb(d[stamp]) for d in by_camera]
    width = max(t.shape[1] for t in tiles)
    rows = []
    for name, tile in zip(rig, tiles):
        caption = np.full((22, width, 3), 255, np.uint8)
        cv2.putText(caption, f"{name} camera", (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        rows += [caption, np.pad(tile, ((0, 4), (0, width - tile.shape[1]), (0, 0)), constant_values=255)]
    return np.concatenate(rows)


def run(args: argparse.Namespace) -> int:
    """Run the demo; returns 0 when the node ran through the drive (whatever its accuracy)."""
    import numpy as np

    from pixloc_ros.core.geometry.metrics import pose_errors, summarize
    from pixloc_ros.data.bags import read_drive
    from pixloc_ros.data.evaluation.offline import DriveEvaluation, FrameRecord, GroundTruth
    from pixloc_ros.data.evaluation.plots import plot_errors, plot_trajectory
    from pixloc_ros.ros.conversions import pose_msg_to_matrix, stamp_to_ns
    from pixloc_ros.ros.replay import replay_through_node
    from pixloc_ros.ros.session import domain_id_for

    from .evaluate import report_text

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    rig = None
    if args.rig:
        from pixloc_ros.data.sim.rig import parse_rig

        try:
            rig = parse_rig(args.rig)
        except ValueError as err:
            print(f"pixloc-ros demo: error: --rig: {err}", file=sys.stderr)
            return 1
    weights = _weights(args, out)
    world = _ensure_world(out, args.seed, rig)
    bag = world / "queries" / args.condition
    if not bag.exists():
        available = sorted(p.name for p in (world / "queries").iterdir() if p.is_dir())
        print(f"pixloc-ros demo: error: no query drive {args.condition!r}; available: {available}", file=sys.stderr)
        return 1
    map_file = _ensure_map(world, weights, out, "map.pxmap" if rig is None else f"{world.name}.pxmap")
    if args.cpu_precision in ("int8", "auto"):
        _ensure_int8(world, weights, map_file)
    if rig is None:
        drive = read_drive(bag, load_images=False)
    else:  # the anchor camera's frames and the drive's ground truth (base_link)
        from pixloc_ros.data.bags import rig_camera_topics

        drive = read_drive(bag, rig_camera_topics(rig[0]), load_images=False)
    domain = int(os.environ.get("ROS_DOMAIN_ID") or domain_id_for("pixloc-ros demo"))
    _step(f"replaying the {args.condition} drive ({len(drive.frames)} frames, mapped in summer) through the "
          f"node over DDS (domain {domain}, loopback) ...")
    started = time.perf_counter()
    overrides = {"map_file": str(map_file), "weights": str(weights), "device": args.device, "use_sim_time": "true"}
    if args.cpu_precision:
        overrides["cpu_precision"] = args.cpu_precision
    if args.overlap:
        overrides["overlap_network"] = "true"
    if rig is not None:
        overrides["rig_cameras"] = f"[{','.join(rig)}]"
    info = drive.camera_info
    if info is not None:  # prepared for the drive's frames at start: the first frame is not slower
        overrides["warm_up_size"] = f"[{info.width},{info.height}]"
    result = replay_through_node(bag, Path(args.params), overrides, domain, out / "logs",
                                 expected_frames=len(drive.frames), rig_cameras=rig or ())
    _step(f"replay done ({time.perf_counter() - started:.0f} s); node log: {out / 'logs' / 'node.log'}")

    truth = GroundTruth(drive.ground_truth)
    poses = {stamp_to_ns(p.header.stamp): pose_msg_to_matrix(p.pose.pose) for p in result.poses}
    records = []
    for status in result.statuses:
        stamp = stamp_to_ns(status.header.stamp)
        gt = truth.at(stamp)
        est = poses.get(stamp) if status.success else None
        rec = FrameRecord(stamp, int(status.state), est is not None, status.reason or "ok",
                          None if est is None else est.tolist(), None if gt is None else gt.tolist(),
                          reason_code=int(status.reason_code),
                          total_s=float(status.time_total), network_s=float(status.time_network),
                          optimizer_s=float(status.time_optimizer), num_points=int(status.num_points))
        if est is not None and gt is not None:
            dt, dr = pose_errors(est[:3, :3], est[:3, 3], gt[:3, :3], gt[:3, 3])
            rec.translation_error_m, rec.rotation_error_deg = float(dt), float(dr)
        records.append(rec)
    scored = [r for r in records if r.success and r.gt_map_from_base is not None]
    summary = summarize([r.translation_error_m for r in scored], [r.rotation_error_deg for r in scored],
                        frames=len(drive.frames))
    ran = np.array([r.total_s for r in records if r.network_s > 0])
    latency = {} if ran.size == 0 else {"p50": float(np.percentile(ran, 50)), "p90": float(np.percentile(ran, 90)),
                                        "max": float(ran.max()), "count": int(ran.size)}
    evaluation = DriveEvaluation(str(bag), records, summary, latency)
    evaluation.save_json(out / "results.json")

    from pixloc_ros.core.maps.retrieval import MapIndex

    index = MapIndex.open(map_file)
    plots = [plot_trajectory(evaluation, out / "trajectory.png", index.keyframe_centers[:, :2]),
             plot_errors(evaluation, out / "errors.png")]
    snapshot = _heatmap_snapshot(result, rig)
    if snapshot is not None:
        import cv2

        cv2.imwrite(str(out / "heatmap.png"), snapshot[..., ::-1])
        plots.append(out / "heatmap.png")
    print()
    print(f"pixloc_ros demo: {args.condition} drive through a map built in summer, weights {weights.name}"
          + ("" if rig is None else f", camera rig {', '.join(rig)}"))
    print(report_text(evaluation))
    print("results: " + str(out / "results.json"))
    print("plots:   " + ", ".join(str(p) for p in plots))
    return 0
