"""``pixloc-ros quantize``: the map's int8 network for CPUs (``cpu_precision: int8`` / ``auto``).

    pixloc-ros quantize --map FILE --images DIR --weights CKPT [--params config/localize.yaml]
                        [--calibration-images 32] [--check-keyframes 12]

Quantises the UNet with NNCF on the map's own keyframe images (the folder the map was built from),
checks it against float32 on other keyframes localized against the rest of the map, and writes
``<map>.int8/`` (OpenVINO IR + int8.json) beside the map (core/tracking/int8_map.py). Needs NNCF
(requirements/accel.txt). `pixloc-ros build-map --int8` runs this after the map is written.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``quantize`` command."""
    p = subparsers.add_parser("quantize", help="int8 network of a map for the CPU (NNCF, calibrated on its keyframes)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--map", required=True, help="compiled map (pixloc-ros build-map)")
    p.add_argument("--images", required=True, metavar="DIR", help="the folder of images the map was built from")
    p.add_argument("--weights", required=True, help="PixLoc weights the map was built with")
    p.add_argument("--params", default=None, help="node params YAML (engine settings of the check)")
    p.add_argument("--calibration-images", type=int, default=None, metavar="N",
                   help="keyframes NNCF calibrates on (default 32)")
    p.add_argument("--check-keyframes", type=int, default=None, metavar="N",
                   help="other keyframes localized with float32 and int8 to check it (default 12)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build and check the int8 network; prints the check's figures; 1 with one error line on failure."""
    from pixloc_ros.core.engine.checkpoint import WeightsError, load_weights, weights_fingerprint
    from pixloc_ros.core.maps.mapfile_format import MapFileError
    from pixloc_ros.core.maps.open_index import open_map_index
    from pixloc_ros.core.tracking.int8_map import Int8Options, build_int8
    from pixloc_ros.ros.params import engine_configs

    from .evaluate import load_settings

    try:
        settings = load_settings(args.params, map_file=str(args.map), weights=str(args.weights), device="cpu")
        configs = engine_configs(settings)
        options = Int8Options()
        if args.calibration_images:
            options.calibration_images = args.calibration_images
        if args.check_keyframes:
            options.check_keyframes = args.check_keyframes
        model = load_weights(args.weights, device="cpu")
        fingerprint = weights_fingerprint(model)
        index = open_map_index(args.map, expected_fingerprint=fingerprint, expected_profile=model.engine_profile.name)
        try:
            net = build_int8(model, index, args.map, args.images, fingerprint, configs.localizer, options)
        finally:
            index.close()
    except (WeightsError, ValueError, FileNotFoundError, OSError, MapFileError, ImportError) as err:
        print(f"pixloc-ros quantize: error: {err}", file=sys.stderr)
        return 1
    c = net.check
    q, total = net.int8_convolutions
    print(f"wrote {net.folder}: {q} of {total} convolutions in int8, calibrated on "
          f"{len(net.meta['calibration_keyframes'])} keyframes in {net.meta['seconds']:.0f} s")
    print(f"check on {len(net.meta['check_keyframes'])} other keyframes ({c.attempts} localizations): float32 "
          f"{c.f32_correct} correct, int8 {c.int8_correct} ({c.lost} lost); int8 vs float32 poses: max "
          f"{c.max_translation_m * 100:.2f} cm / {c.max_rotation_deg:.3f} deg, median {c.median_translation_m * 100:.2f} cm / "
          f"{c.median_rotation_deg:.3f} deg"
          f" -> {'passed: cpu_precision auto takes int8 on CPUs without bf16 units' if c.passed else 'FAILED: auto never takes it (int8 runs only when asked)'}")
    return 0


__all__ = ["register", "run"]
