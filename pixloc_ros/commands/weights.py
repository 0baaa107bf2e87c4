"""``pixloc-ros weights``: inspect, convert and create PixLoc weight files.

    pixloc-ros weights info CKPT [--json]
    pixloc-ros weights export CKPT --out FILE.safetensors [--half]
    pixloc-ros weights init --out FILE [--encoder vgg16|vgg19] [--seed N] [--engine native|reference]
"""
from __future__ import annotations

import argparse
import json
import sys

_AXES = ("tx", "ty", "tz", "rx", "ry", "rz")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``weights`` command and its ``info`` / ``export`` / ``init`` actions."""
    parser = subparsers.add_parser(
        "weights", help="inspect, convert (to safetensors) and create PixLoc weights",
        description="Inspect, convert and create PixLoc weight files. Official checkpoints are "
                    "opened with a restricted unpickler (tensors, containers, OmegaConf only).")
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True

    info = actions.add_parser("info", help="architecture, fingerprint and learned damping of a weights file")
    info.add_argument("checkpoint", metavar="CKPT", help="official .tar/.pth checkpoint or .safetensors")
    info.add_argument("--json", action="store_true", help="print one JSON object instead of text")

    export = actions.add_parser("export", help="convert a checkpoint to .safetensors (no pickle)")
    export.add_argument("checkpoint", metavar="CKPT")
    export.add_argument("--out", required=True, metavar="FILE.safetensors")
    export.add_argument("--half", action="store_true", help="store float16 (half the size)")

    init = actions.add_parser("init", help="write randomly initialised weights (deterministic by seed)")
    init.add_argument("--out", required=True, metavar="FILE",
                      help=".safetensors, or anything else for the official checkpoint layout")
    init.add_argument("--encoder", choices=("vgg16", "vgg19"), default="vgg16")
    init.add_argument("--seed", type=int, default=0)
    init.add_argument("--engine", choices=("native", "reference"), default="native",
                      help="engine profile recorded with the weights (what they will be trained and run with): "
                           "native (this project's, default) or reference (cvg/pixloc's; docs/architecture.md)")
    init.add_argument("--pad", type=float, default=None, metavar="PX",
                      help="border pad of the profile, level pixels (default: reference 3, native the size rule)")

    parser.set_defaults(func=run)


def _print_info(summary: dict) -> None:
    print(f"file:        {summary['path']} ({summary['file_format']}, "
          f"{summary['file_size_bytes'] / 2**20:.1f} MiB)")
    print(f"encoder:     {summary['encoder']} UNet, decoder [64, 64, 64, 32]")
    print("outputs:     " + ", ".join(f"level {i}: {d} ch @ stride {s}" for i, (d, s)
                                       in enumerate(zip(summary["output_dims"], summary["strides"]))))
    print(f"parameters:  {summary['num_parameters']:,}")
    print(f"fingerprint: {summary['fingerprint']}")
    profile = summary["engine_profile"]
    pad = "size rule" if profile["pad"] is None else f"{profile['pad']:g} px"
    print(f"engine:      {profile['name']} (gradient {profile['gradient']}, stopping {profile['stopping']}, "
          f"reference sampling {profile['reference_sampling']}, pad {pad}, "
          f"iterations {'/'.join(map(str, profile['iterations']))})")
    if summary.get("epoch") is not None:
        print(f"epoch:       {summary['epoch']}")
    print("damping lambda = 10^(-6 + 11 sigmoid(theta)):")
    print("             " + "".join(f"{a:>11}" for a in _AXES))
    for level, values in enumerate(summary["damping"]):
        print(f"  level {level}:   " + "".join(f"{v:11.4g}" for v in values))


def run(args: argparse.Namespace) -> int:
    """Execute the chosen action; returns the exit status (1 with one error line on failure)."""
    from pixloc_ros.core.engine.checkpoint import (WeightsError, describe, export_safetensors, init_weights,
        load_checkpoint, save_weights, weights_fingerprint)
    from pixloc_ros.core.engine.profile import named_profile

    try:
        if args.action == "info":
            summary = describe(load_checkpoint(args.checkpoint))
            if args.json:
                print(json.dumps(summary, indent=2))
            else:
                _print_info(summary)
        elif args.action == "export":
            if not args.out.endswith(".safetensors"):
                raise ValueError(f"--out must end in .safetensors, got {args.out!r}")
            loaded = load_checkpoint(args.checkpoint)
            fingerprint = export_safetensors(
                loaded.model, args.out, metadata={"source": args.checkpoint}, half=args.half)
            print(f"wrote {args.out} ({loaded.encoder}, {'float16' if args.half else 'float32'}, "
                  f"fingerprint {fingerprint})")
        elif args.action == "init":
            model = init_weights(args.encoder, args.seed, profile=named_profile(args.engine, args.pad))
            save_weights(model, args.out)
            print(f"wrote {args.out} ({args.encoder}, seed {args.seed}, {args.engine} engine, "
                  f"fingerprint {weights_fingerprint(model)})")
    except (WeightsError, ValueError, OSError) as err:
        print(f"pixloc-ros weights {args.action}: error: {err}", file=sys.stderr)
        return 1
    return 0
