"""``pixloc-ros evaluate``: the node's localization, offline (no DDS), on a recorded drive.

    pixloc-ros evaluate --map FILE --bag BAG --weights CKPT [--json OUT] [--plots DIR]
                        [--params config/localize.yaml] [--device auto|cpu|cuda] [--max-frames N]
                        [--cpu-precision f32|bf16|int8|auto] [--calibration FILE|none]
                        [--rig front,left,right]   # a rig drive (synth --rig): one pose, every camera

The engine settings come from the node's params file (the same YAML the launch file loads), so
the figures are what the node would publish with those parameters.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_PARAMS = Path(__file__).resolve().parents[2] / "config" / "localize.yaml"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` command."""
    p = subparsers.add_parser(
        "evaluate", help="localize a recorded drive offline and score it against its ground truth",
        description="Replay a rosbag2 drive through the node's pipeline without DDS and report recall at "
                    "0.25 m/2 deg, 0.5 m/5 deg, 5 m/10 deg, median errors and latency.")
    p.add_argument("--map", required=True, help="compiled map (pixloc-ros build-map)")
    p.add_argument("--bag", required=True, help="rosbag2 folder of the drive (with ground truth)")
    p.add_argument("--weights", required=True, help="PixLoc weights the map was built with")
    p.add_argument("--params", default=None,
                   help=f"node params YAML (default: the package's config/localize.yaml when present)")
    p.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:N (default: the params file's)")
    p.add_argument("--cpu-precision", default=None, choices=("f32", "bf16", "int8", "auto"),
                   help="the network's precision on the CPU (default: the params file's cpu_precision; int8 needs "
                        "the map's int8 network, pixloc-ros quantize)")
    p.add_argument("--calibration", default=None, metavar="FILE",
                   help="covariance calibration to publish with (default: <weights>.covariance.json when it "
                        "exists; 'none': without one, as weights nobody calibrated)")
    p.add_argument("--max-frames", type=int, default=None, help="stop after this many images")
    p.add_argument("--rig", metavar="NAMES", default=None,
                   help="a rig drive: the cameras to use, e.g. front,left,right (each on /<name>/image_raw and "
                        "/<name>/camera_info, extrinsics on the bag's /tf_static, as synth --rig records them; "
                        "the first is the anchor; frames within the params file's rig_tolerance_s are one instant); "
                        "default: the one camera of the bag")
    p.add_argument("--no-gnss", action="store_true", help="ignore the GNSS fixes in the bag")
    p.add_argument("--json", dest="json_out", default=None, metavar="OUT", help="write the report as JSON")
    p.add_argument("--plots", default=None, metavar="DIR", help="write PNG plots into DIR")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def rig_names(text: str) -> list[str]:
    """``--rig front,left,right`` as camera names (rig order); ValueError when it names none."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ValueError(f"--rig names no camera: {text!r}")
    return names


def load_settings(params_path: str | Path | None, **overrides):
    """NodeSettings from a node params YAML (``/**`` or node-name key) plus overrides, validated."""
    import yaml

    from pixloc_ros.ros.params import NodeSettings

    values = {}
    path = Path(params_path) if params_path else (DEFAULT_PARAMS if DEFAULT_PARAMS.exists() else None)
    if path is not None:
        doc = yaml.safe_load(path.read_text()) or {}
        if not isinstance(doc, dict):
            raise ValueError(f"{path}: expected a mapping of node names to ros__parameters")
        for section in doc.values():
            if isinstance(section, dict) and isinstance(section.get("ros__parameters"), dict):
                values.update(section["ros__parameters"])
    values.update({k: v for k, v in overrides.items() if v is not None})
    return NodeSettings.from_values(values)


def run(args: argparse.Namespace) -> int:
    """Run the evaluation; prints the summary, returns 0 (1 with one error line on setup errors)."""
    import json

    from pixloc_ros.core.engine.checkpoint import WeightsError
    from pixloc_ros.core.tracking.pipeline import load_pipeline
    from pixloc_ros.data.evaluation.offline import evaluate_drive
    from pixloc_ros.ros.params import engine_configs

    try:
        settings = load_settings(args.params, map_file=str(args.map), weights=str(args.weights), device=args.device,
                                 cpu_precision=args.cpu_precision)
        configs = engine_configs(settings)
        calibration = None if args.calibration is None else ("" if args.calibration.lower() == "none"
                                                              else args.calibration)
        pipeline = load_pipeline(settings.map_file, settings.weights, settings.device, configs.pipeline,
                                 configs.localizer, calibration=calibration, tile_loader_config=configs.tiles)
        bag = Path(args.bag)
        if not bag.exists():
            raise FileNotFoundError(f"no bag at {bag}")
    except (WeightsError, ValueError, FileNotFoundError) as err:
        print(f"pixloc-ros evaluate: error: {err}", file=sys.stderr)
        return 1

    snapshot = {}

    def keep_snapshot(out, frame):
        # The heatmap snapshot shows the first successfully localized frame.
        if not snapshot and out.success and out.result is not None and out.result.confidences:
            snapshot["image"], snapshot["conf"] = frame.image_rgb.copy(), out.result.confidences

    common = dict(max_frames=args.max_frames, use_gnss=not args.no_gnss,
                  on_frame=keep_snapshot if args.plots else None, progress=not args.quiet)
    if args.rig:
        from pixloc_ros.data.evaluation.rig_replay import evaluate_rig_drive

        try:
            names = rig_names(args.rig)
            evaluation = evaluate_rig_drive(pipeline, bag, names, tolerance_ns=int(round(settings.rig_tolerance_s * 1e9)),
                                            **common)
        except ValueError as err:
            print(f"pixloc-ros evaluate: error: {err}", file=sys.stderr)
            return 1
    else:
        evaluation = evaluate_drive(pipeline, bag, **common)
    summary = pipeline.summary()
    if summary.network_precision:
        print(f"network: {summary.device}, {summary.network_precision}"
              + (f" (int8 network: {summary.int8})" if summary.int8 else ""))
    print(report_text(evaluation))
    if args.json_out:
        evaluation.save_json(args.json_out)
        print(f"wrote {args.json_out}")
    if args.plots:
        written = write_plots(evaluation, pipeline, args.plots, snapshot)
        print("plots: " + ", ".join(str(p) for p in written))
    return 0


def report_text(evaluation) -> str:
    """The human-readable summary of an evaluation (also printed by the demo)."""
    from pixloc_ros.core.tracking.reasons import Reason

    lines = [evaluation.summary.as_text(), evaluation.consistency_text()]
    lat = evaluation.latency_s
    if lat:
        lines.append(f"latency per frame: p50 {1e3 * lat['p50']:.0f} ms, p90 {1e3 * lat['p90']:.0f} ms, "
                     f"max {1e3 * lat['max']:.0f} ms over {lat['count']} frames")
    reasons: dict[str, int] = {}
    for f in evaluation.frames:
        if not f.success:
            key = Reason(f.reason_code).key
            reasons[key] = reasons.get(key, 0) + 1
    if reasons:
        lines.append("frames without a pose: " + ", ".join(f"{k} x{n}" for k, n in sorted(reasons.items())))
    return "\n".join(lines)


def write_plots(evaluation, pipeline, out_dir, snapshot: dict) -> list[Path]:
    """Trajectory, error-over-time, NEES-over-time and (if a frame was localized) heatmap PNGs in ``out_dir``."""
    import numpy as np

    from pixloc_ros.data.bags import read_drive
    from pixloc_ros.data.evaluation.plots import (plot_errors, plot_nees, plot_trajectory,
        save_heatmap_snapshot)

    out_dir = Path(out_dir)
    drive = read_drive(evaluation.bag, load_images=False)
    gnss_xy = None
    if drive.gnss and pipeline.index.georef is not None:
        fixes = np.array([[g.latitude_deg, g.longitude_deg, g.altitude_m] for g in drive.gnss])
        gnss_xy = pipeline.index.georef.to_map(fixes[:, 0], fixes[:, 1], fixes[:, 2])[:, :2]
    written = [plot_trajectory(evaluation, out_dir / "trajectory.png", pipeline.index.keyframe_centers[:, :2], gnss_xy),
               plot_errors(evaluation, out_dir / "errors.png"), plot_nees(evaluation, out_dir / "nees.png")]
    if snapshot:
        written.append(save_heatmap_snapshot(snapshot["image"], snapshot["conf"], out_dir / "heatmap.png"))
    return written
