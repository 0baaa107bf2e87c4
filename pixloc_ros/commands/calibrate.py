"""``pixloc-ros calibrate``: fit the covariance calibration of a set of weights on drives with ground truth.

    pixloc-ros calibrate --weights CKPT --drive MAP BAG [--drive MAP BAG ...] [--out FILE]
                         [--rig front,left,right]   # rig drives (synth --rig), as evaluate --rig replays them
    pixloc-ros calibrate --weights CKPT --records EVAL.json [EVAL.json ...] [--out FILE]
    pixloc-ros calibrate --weights CKPT --from-map MAP --images DIR [--keyframes 60] [--out FILE]

Each drive is replayed through the node's pipeline (``pixloc-ros evaluate``'s path), or the
per-frame records of earlier ``evaluate --json`` runs are read; the correctly locked frames'
errors fit the model of ``core/tracking/covariance_calibration.py``. One of the model's figures, a
hypothesis' jitter, depends on the covariance the pipeline ran with (it weights the results in
the hypothesis' filter): replay without a calibration first, then once more with
``--replay-calibration`` set to that first fit, as the node will run. The result
is written next to the weights (``<weights>.covariance.json``), where the node and ``evaluate``
find it. Use drives held out from any evaluation you report: a calibration measured on the
drives it was fitted on says nothing about the next drive.

A camera rig (``--rig NAMES``) has its own calibration: one pose from every camera's residuals has
another Hessian, inlier ratios and errors than one camera's. Its drives are replayed as ``evaluate
--rig`` replays them (or fit on ``evaluate --rig --json`` records); the file records the cameras
(``fitted_on["rig"]``); write it with ``--out`` and hand it to ``evaluate --calibration``.

Without ground truth (``--from-map``): the map's keyframes are localized against the rest of the
map, their own observations left out, their images changed photometrically, from perturbed priors,
and their errors against the SfM poses fit the same model (core/tracking/map_calibration.py; what
this cannot see is said there). The node's online scaling (core/tracking/innovation.py) widens the
result where consecutive poses disagree with the odometry more than it says.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from .evaluate import rig_names


def register(subparsers) -> None:
    """Add the ``calibrate`` sub-command."""
    p = subparsers.add_parser("calibrate", help="fit the published covariance of a set of weights on drives with "
                                                "ground truth", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", required=True, help="the weights to calibrate (.safetensors or official checkpoint)")
    p.add_argument("--drive", nargs=2, action="append", default=[], metavar=("MAP", "BAG"),
                   help="a map built with these weights and a drive (rosbag2 with ground truth) through it; repeatable")
    p.add_argument("--records", nargs="+", default=[], metavar="JSON",
                   help="pixloc-ros evaluate --json reports (of these weights) to fit on instead of replaying drives")
    p.add_argument("--from-map", default=None, metavar="MAP",
                   help="calibrate from this map's own keyframes (no drive, no ground truth); needs --images")
    p.add_argument("--images", default=None, metavar="DIR",
                   help="with --from-map: the folder the map was compiled from (build-map --images)")
    p.add_argument("--keyframes", type=int, default=60,
                   help="with --from-map: keyframes localized (spread over the map; each in 4 photometric variants)")
    p.add_argument("--exclude-radius", type=float, default=0.0, metavar="M",
                   help="with --from-map: also leave out keyframes this close to the held-out one (m)")
    p.add_argument("--rig", metavar="NAMES", default=None,
                   help="the --drive bags are rig drives: the cameras to use, e.g. front,left,right (as evaluate --rig; "
                        "the first is the anchor); default: the one camera of each bag")
    p.add_argument("--replay-calibration", default="", metavar="FILE",
                   help="covariance calibration to replay the drives with (default: none)")
    p.add_argument("--out", default=None, help="output file (default: <weights>.covariance.json next to the weights)")
    p.add_argument("--params", default=None, help="node params YAML for the replay (default: config/localize.yaml)")
    p.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:N (default: the params file's)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Fit and write the calibration; returns 0, or 1 with one error line on bad input."""
    from pixloc_ros.core.engine.checkpoint import WeightsError, load_weights, weights_fingerprint
    from pixloc_ros.core.tracking.covariance_calibration import calibration_path_for, fit_calibration
    from pixloc_ros.core.tracking.inlier_gates import fit_inlier_gates
    from pixloc_ros.data.evaluation.offline import calibration_samples, inlier_ratio_samples

    if not args.drive and not args.records and not args.from_map:
        print("pixloc-ros calibrate: error: give --drive MAP BAG (repeatable), --records EVAL.json ... or "
              "--from-map MAP --images DIR", file=sys.stderr)
        return 1
    if args.from_map:
        if args.rig:
            print("pixloc-ros calibrate: error: --rig takes rig drives (--drive, --records); --from-map localizes "
                  "single keyframes", file=sys.stderr)
            return 1
        return _from_map(args)
    try:
        fingerprint = weights_fingerprint(load_weights(args.weights, device="cpu"))
        groups: list[tuple[str, list[dict]]] = []  # (drive label, per-frame records)
        for path in args.records:
            doc = json.loads(Path(path).read_text())
            if not isinstance(doc, dict) or "per_frame" not in doc:
                raise ValueError(f"{path} is not a pixloc-ros evaluate --json report")
            groups.append((str(doc.get("bag", path)), doc["per_frame"]))
        for map_file, bag in args.drive:
            groups.append((str(bag), _replay(args, map_file, bag)))
        samples, labels, correct, wrong = [], [], [], []
        for label, records in groups:
            found = calibration_samples(records)
            samples += found
            labels += [label] * len(found)
            good, bad = inlier_ratio_samples(records)
            correct.append(good)
            wrong.append(bad)
            print(f"{label}: {len(found)} correctly locked frames of {len(records)}")
        calib = fit_calibration(samples, labels, fingerprint)
        try:
            calib.inlier_gates = fit_inlier_gates(np.concatenate(correct), np.concatenate(wrong))
        except ValueError as err:  # too few correct locks: the node keeps the default gates
            print(f"no inlier gates fitted ({err}); the node uses the default 0.2")
    except (WeightsError, ValueError, FileNotFoundError, OSError) as err:
        print(f"pixloc-ros calibrate: error: {err}", file=sys.stderr)
        return 1
    calib.fitted_on["drives"] = [label for label, _ in groups]
    if args.rig:
        calib.fitted_on["rig"] = rig_names(args.rig)
    out = calib.save(args.out or calibration_path_for(args.weights))
    f = calib.fitted_on
    print(f"fitted on {f['samples']} frames of {len(groups)} drives: Hessian scale {calib.hessian_scale:.3g}, "
          f"floor std {', '.join(f'{v:.3g}' for v in calib.floor_std)} (m, m, m, rad, rad, rad; base_link axes), "
          f"slopes (1 - inlier ratio, log jitter) {calib.slopes[0]:.3g}, {calib.slopes[1]:.3g}, "
          f"inflation {calib.inflation:.3g}")
    print(f"on the calibration frames: mean NEES {f['pooled_mean_nees']:.2f}, "
          f"{100 * f['pooled_share_inside_95']:.0f}% inside the 95% bound")
    _print_gates(calib.inlier_gates)
    print(f"wrote {out}")
    return 0


def _print_gates(gates) -> None:
    """One line on the fitted inlier gates (core/tracking/inlier_gates.py), or nothing."""
    if gates is None:
        return
    f = gates.fitted_on
    wrong = (f"{100 * f['wrong_rejected']:.0f}% of {f['wrong']} wrong ones below it" if f.get("wrong_rejected")
             is not None else "no wrong locks seen")
    print(f"inlier gate {gates.min_inlier_ratio:.3g} (tracking {gates.track_min_inlier_ratio:.3g}): keeps "
          f"{100 * f['correct_kept']:.0f}% of {f['correct']} correct locks, {wrong}")


def _replay(args, map_file: str, bag: str) -> list[dict]:
    """Per-frame records of one drive through the pipeline (with ``--replay-calibration`` or none)."""

    from pixloc_ros.core.tracking.pipeline import load_pipeline
    from pixloc_ros.data.evaluation.offline import evaluate_drive
    from pixloc_ros.ros.params import engine_configs

    from .evaluate import load_settings

    if not Path(bag).exists():
        raise FileNotFoundError(f"no bag at {bag}")
    settings = load_settings(args.params, map_file=str(map_file), weights=str(args.weights), device=args.device)
    configs = engine_configs(settings)
    pipeline = load_pipeline(settings.map_file, settings.weights, settings.device, configs.pipeline,
                             configs.localizer, calibration=args.replay_calibration or "",
                             tile_loader_config=configs.tiles)
    if args.rig:
        from pixloc_ros.data.evaluation.rig_replay import evaluate_rig_drive

        evaluation = evaluate_rig_drive(pipeline, bag, rig_names(args.rig), progress=not args.quiet,
                                        tolerance_ns=int(round(settings.rig_tolerance_s * 1e9)))
    else:
        evaluation = evaluate_drive(pipeline, bag, progress=not args.quiet)
    return [f.to_json() for f in evaluation.frames]


def _from_map(args: argparse.Namespace) -> int:
    """``--from-map``: fit on the map's own keyframes (core/tracking/map_calibration.py)."""
    from pixloc_ros.core.engine.checkpoint import WeightsError, weights_fingerprint
    from pixloc_ros.core.tracking.covariance_calibration import calibration_path_for
    from pixloc_ros.core.tracking.map_calibration import CalibrationOptions, calibrate_from_map
    from pixloc_ros.core.tracking.pipeline import load_pipeline
    from pixloc_ros.ros.params import engine_configs

    from .evaluate import load_settings

    if not args.images or not Path(args.images).is_dir():
        print(f"pixloc-ros calibrate: error: --from-map needs --images DIR, the folder the map was compiled from "
              f"(got {args.images!r})", file=sys.stderr)
        return 1
    try:
        settings = load_settings(args.params, map_file=str(args.from_map), weights=str(args.weights),
                                 device=args.device)
        configs = engine_configs(settings)
        pipeline = load_pipeline(settings.map_file, settings.weights, settings.device, configs.pipeline,
                                 configs.localizer, calibration="", tile_loader_config=configs.tiles)
        options = CalibrationOptions(keyframes=args.keyframes, exclude_radius_m=args.exclude_radius,
                                     max_points=configs.pipeline.max_points)
        bar = None
        if not args.quiet:
            from tqdm import tqdm
            bar = tqdm(total=min(args.keyframes, pipeline.index.num_keyframes) * len(options.variants),
                       desc="calibrate", unit="localization")
        calib = calibrate_from_map(pipeline.localizer, pipeline.index, args.images,
                                   weights_fingerprint(pipeline.localizer.model),
                                   options, configs.pipeline.retrieval, bar.update if bar else None)
        if bar is not None:
            bar.close()
    except (WeightsError, ValueError, FileNotFoundError, OSError) as err:
        print(f"pixloc-ros calibrate: error: {err}", file=sys.stderr)
        return 1
    out = calib.save(args.out or calibration_path_for(args.weights))
    f, st = calib.fitted_on, calib.fitted_on["keyframe_stats"]
    print(f"from the map: {st['correct']} of {st['attempts']} keyframe localizations correct ({st['wrong']} wrong, "
          f"{st['failed']} failed, {st['no_points']} without points); Hessian scale {calib.hessian_scale:.3g}, "
          f"floor std {', '.join(f'{v:.3g}' for v in calib.floor_std)}, inflation {calib.inflation:.3g}")
    print(f"on those localizations: mean NEES {f['pooled_mean_nees']:.2f}, "
          f"{100 * f['pooled_share_inside_95']:.0f}% inside the 95% bound")
    _print_gates(calib.inlier_gates)
    print(f"wrote {out}")
    return 0
