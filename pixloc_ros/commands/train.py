"""``pixloc-ros train``: learn PixLoc weights (features, confidences, damping) from a COLMAP map.

    pixloc-ros train --colmap DIR --images DIR --out DIR [--init CKPT] [--steps N]
                     [--max-minutes M] [--image-size WxH] [--points N] [--device auto|cpu|cuda]
                     [--synth-world DIR] [--seed S] ...
    pixloc-ros train --world W1 --world W2 ... --out DIR ...     (several synth worlds)

Pairs of covisible map images are localised one from the other's pose through the
differentiable coarse-to-fine optimizer (``core/training/losses.py``). With ``--synth-world`` (a
``pixloc-ros synth`` folder whose ``sfm/`` is the map) queries are also rendered in other
seasons and at car-like offsets from the map images; ``--world DIR`` (repeatable) does the same
for each of several synth folders (each draw picks a world). The run resumes from
``OUT/checkpoint_last.tar`` when it exists; checkpoints are in the official PixLoc layout
(``pixloc-ros weights info OUT/checkpoint_last.tar``). Progress goes to stdout and
``OUT/metrics.jsonl``.
"""
from __future__ import annotations

import argparse


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, e.g. 320x240, got {text!r}") from None
    if w < 16 or h < 16:
        raise argparse.ArgumentTypeError(f"image size must be at least 16x16, got {text!r}")
    return w, h


def _triple(text: str) -> tuple[int, int, int]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or min(values) < 0:
        raise argparse.ArgumentTypeError(f"expected three non-negative integers 'fine,mid,coarse', got {text!r}")
    return values  # type: ignore[return-value]


def _names(text: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(",") if n.strip())


def register(subparsers) -> None:
    """Add the ``train`` sub-command."""
    p = subparsers.add_parser("train", help="train / fine-tune PixLoc weights on a COLMAP map",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--colmap", metavar="DIR", help="COLMAP model folder (cameras/images/points3D)")
    p.add_argument("--images", metavar="DIR", help="folder of the model's images")
    p.add_argument("--world", action="append", default=[], metavar="DIR",
                   help="a `pixloc-ros synth` folder to train on (its sfm/, mapping images and renderer; "
                        "repeatable; instead of --colmap/--images/--synth-world)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder: checkpoint_last.tar, metrics.jsonl")
    p.add_argument("--init", metavar="CKPT", help="start from these weights (official .tar or .safetensors); "
                                                  "default: random initialisation (--encoder, --seed)")
    p.add_argument("--encoder", default="vgg16", choices=["vgg16", "vgg19"], help="encoder of a random init")
    p.add_argument("--engine", choices=("native", "reference"), default=None,
                   help="engine profile to train in (Jacobian, stopping rule, pads, reference sampling; "
                        "docs/architecture.md): default the --init weights' own (reference for the released "
                        "PixLoc checkpoints), native for a random init")
    p.add_argument("--steps", type=int, default=2000, help="total optimizer steps (a resumed run continues to this)")
    p.add_argument("--max-minutes", type=float, default=None, help="stop and checkpoint after this many minutes")
    p.add_argument("--image-size", type=_size, default=None, metavar="WxH",
                   help="network input size (images and cameras are resized); default: the map's")
    p.add_argument("--points", type=int, default=512, help="3D points per pair")
    p.add_argument("--batch-size", type=int, default=4, help="pairs per optimizer step")
    p.add_argument("--lr", type=float, default=1e-4, help="Adam step of the network (damping: x --damping-lr-scale)")
    p.add_argument("--head-lr", type=float, default=1e-3, help="Adam step of the confidence heads (own parameter group)")
    p.add_argument("--reset-heads", choices=("reference", "small"), default=None,
                   help="re-initialise the confidence heads before the first step (reference: PyTorch's default "
                        "init, as the reference implementation); default: a random init's own, --init's kept")
    p.add_argument("--batchnorm", choices=("estimate", "estimate_preserve", "keep", "train"), default=None,
                   help="BatchNorm statistics: estimate them on map images before the first step and keep them "
                        "(estimate_preserve: and keep the network's function), keep them, or train with batch "
                        "statistics; default: estimate for a random init, keep for --init")
    p.add_argument("--cpu-bf16", choices=("auto", "on", "off"), default="auto",
                   help="bf16 autocast of the network on the CPU (auto: where the processor has bf16 units)")
    p.add_argument("--damping-lr-scale", type=float, default=100.0)
    p.add_argument("--lm-iterations", type=_triple, default=(5, 5, 5), metavar="F,M,C",
                   help="LM iterations per level during training, finest first")
    p.add_argument("--lm-pad", type=float, default=None, metavar="PX",
                   help="level-pixel border where projections are invalid (default: the engine's rule, 4 px, less on small coarse maps)")
    p.add_argument("--freeze-encoder-blocks", type=int, default=0, metavar="K",
                   help="keep the first K VGG blocks fixed (cheaper CPU steps)")
    p.add_argument("--batchnorm-stats", action="store_true", help="the same as --batchnorm train")
    p.add_argument("--no-reference-grad", action="store_true",
                   help="do not backpropagate into the reference image (about half the backward cost)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-amp", action="store_true", help="no fp16 autocast on CUDA")
    p.add_argument("--seed", type=int, default=0, help="seed of pair sampling and random init")
    p.add_argument("--min-covisible", type=int, default=50, help="3D points two images share to form a pair")
    p.add_argument("--max-init-error", type=float, default=100.0, metavar="PX",
                   help="redraw pairs whose initial pose is off by more (mean reprojection, input pixels)")
    p.add_argument("--init-noise", type=float, nargs=2, default=(0.0, 0.0), metavar=("M", "DEG"),
                   help="Gaussian noise (std per axis) added to the initial pose")
    p.add_argument("--synth-world", metavar="DIR",
                   help="a `pixloc-ros synth` folder: render queries in other conditions and at car-like offsets")
    p.add_argument("--conditions", type=_names, default=None,
                   help="comma-separated conditions training queries are rendered in (with --synth-world); "
                        "default: every condition of the synthetic world")
    p.add_argument("--virtual-fraction", type=float, default=0.5,
                   help="share of pairs with a query rendered at a random offset (with --synth-world)")
    p.add_argument("--depth-points", choices=["keypoints", "textured"], default=None,
                   help="virtual pairs take their 3D points from the rendered depth of the map image, at its "
                        "SIFT keypoints or at textured pixels (denser than the SfM points; with --synth-world)")
    p.add_argument("--contrastive-weight", type=float, default=0.0,
                   help="weight of an auxiliary dense contrastive term (not in the paper): keeps features "
                        "discriminative when every VGG block trains from random initialisation, but its features "
                        "do not match within the engine's inlier scale (BENCHMARKS.md, 'Training')")
    p.add_argument("--contrastive-only-steps", type=int, default=0, metavar="N",
                   help="train the first N steps with the contrastive term alone (no LM): features first, "
                        "then the pose loss (with --contrastive-weight, from random initialisation)")
    p.add_argument("--no-jitter", action="store_true", help="no colour jitter")
    p.add_argument("--val-conditions", type=_names, default=(), metavar="A,B",
                   help="held-out conditions of the validation pairs (with --synth-world)")
    p.add_argument("--val-pairs", type=int, default=0, help="number of fixed validation pairs (0: no validation)")
    p.add_argument("--val-every", type=int, default=200, help="steps between validations")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--checkpoint-every", type=int, default=100)
    p.add_argument("--no-resume", action="store_true",
                   help="refuse to start when OUT already holds a checkpoint (instead of resuming)")
    p.add_argument("--export", metavar="FILE.safetensors", help="also write the final weights here (float16)")
    p.set_defaults(func=run)


def render_fn_for_world(world_dir: str):
    """The renderer of a synth folder as ``core.training.RenderFn``."""
    from pixloc_ros.data.sim.raycast import PinholeCamera
    from pixloc_ros.data.sim.render import render
    from pixloc_ros.data.sim.dataset import load_dataset

    world = load_dataset(world_dir).world

    def fn(condition, intrinsics, cam_from_world, width, height, noise_seed):
        fx, fy, cx, cy = intrinsics
        return render(world, condition, PinholeCamera(width, height, fx, fy, cx, cy), cam_from_world,
                      noise_seed=noise_seed)
    return fn


def _sources(args: argparse.Namespace) -> list[tuple[str, str, str | None]]:
    """(colmap dir, images dir, synth world or None) of every map to train on; ValueError when unclear."""
    if args.world:
        if args.colmap or args.images or args.synth_world:
            raise ValueError("give either --world (repeatable) or --colmap/--images[/--synth-world], not both")
        return [(f"{w}/sfm", f"{w}/mapping/images", w) for w in args.world]
    if not args.colmap or not args.images:
        raise ValueError("--colmap and --images are required (or --world)")
    return [(args.colmap, args.images, args.synth_world)]


def run(args: argparse.Namespace) -> int:
    """Build the sampler and the model, train, report; returns the exit status."""
    import sys
    import time
    from dataclasses import replace
    from pathlib import Path

    import numpy as np
    import torch

    from pixloc_ros.core import training
    from pixloc_ros.core.engine.checkpoint import WeightsError, export_safetensors, init_weights, load_weights
    from pixloc_ros.core.maps.colmap_io import read_model
    from pixloc_ros.core.engine.profile import named_profile
    from pixloc_ros.data.sim.conditions import CONDITIONS

    def fail(message: str) -> int:
        print(f"pixloc-ros train: {message}", file=sys.stderr)
        return 1

    out = Path(args.out)
    if args.no_resume and (out / training.CHECKPOINT_NAME).exists():
        return fail(f"{out / training.CHECKPOINT_NAME} exists and --no-resume was given")
    if args.contrastive_only_steps > 0 and args.contrastive_weight <= 0:
        return fail("--contrastive-only-steps needs --contrastive-weight > 0")
    try:
        sources = _sources(args)
    except ValueError as err:
        return fail(str(err))
    rendered = all(world is not None for _, _, world in sources)
    if (args.val_pairs > 0 or args.virtual_fraction >= 1.0 or args.depth_points) and not rendered:
        return fail("--val-pairs, --depth-points and --virtual-fraction 1 need --synth-world (or --world)")
    if len(sources) > 1 and args.image_size is None:
        return fail("several --world need one --image-size")
    conditions = tuple(args.conditions) if args.conditions else tuple(CONDITIONS)
    torch.manual_seed(args.seed)
    pairs_cfg = training.PairConfig(
        image_size=args.image_size, num_points=args.points, min_covisible=args.min_covisible,
        max_init_error_px=args.max_init_error, init_noise_m=args.init_noise[0], init_noise_deg=args.init_noise[1],
        virtual_fraction=args.virtual_fraction if rendered else 0.0, conditions=conditions,
        depth_points=args.depth_points)
    augment = training.AugmentConfig()
    if args.no_jitter:
        augment = replace(augment, query_prob=0.0, reference_prob=0.0)
    batchnorm = "train" if args.batchnorm_stats else args.batchnorm
    if batchnorm is None:
        batchnorm = "keep" if args.init else "estimate"
    config = training.TrainConfig(
        steps=args.steps, max_minutes=args.max_minutes, batch_size=args.batch_size, lr=args.lr,
        head_lr=args.head_lr, damping_lr_scale=args.damping_lr_scale, lm_iterations=tuple(args.lm_iterations),
        freeze_encoder_blocks=args.freeze_encoder_blocks, reference_grad=not args.no_reference_grad,
        freeze_batchnorm=batchnorm != "train", batchnorm_init="keep" if batchnorm == "train" else batchnorm,
        reset_heads=args.reset_heads, cpu_bf16=args.cpu_bf16,
        log_every=args.log_every, checkpoint_every=args.checkpoint_every,
        val_every=args.val_every if args.val_pairs > 0 else 0, seed=args.seed, device=args.device,
        num_threads=args.threads,
        amp=not args.no_amp, pairs=pairs_cfg, augment=augment,
        loss=training.LossConfig(contrastive_weight=args.contrastive_weight),
        contrastive_only_steps=args.contrastive_only_steps)
    if args.lm_pad is not None:
        config = replace(config, lm_pad=args.lm_pad)
    try:
        maps = []
        for colmap, images, world in sources:
            sfm = read_model(colmap)
            render_fn = render_fn_for_world(world) if world else None
            maps.append((sfm, images, render_fn))
        samplers = [training.PairSampler(sfm, images, pairs_cfg, augment, render_fn) for sfm, images, render_fn in maps]
        sampler = samplers[0] if len(samplers) == 1 else training.MultiSampler(samplers)
        model = load_weights(args.init) if args.init else init_weights(args.encoder, args.seed)
        if args.engine is not None and args.engine != model.engine_profile.name:
            # The network's image handling follows the profile too (crop vs pad to the stride).
            model.engine_profile = named_profile(args.engine, None)
            model.config.pad_mode = model.engine_profile.network_pad_mode
    except (FileNotFoundError, ValueError, WeightsError) as err:
        return fail(str(err))
    print(f"maps: {len(maps)}, {sum(len(m[0].images) for m in maps)} images, "
          f"{sum(len(m[0].point_ids) for m in maps)} points, {len(sampler.pairs)} covisible "
          f"(reference, query) pairs; init: {args.init or f'random {args.encoder} (seed {args.seed})'}; "
          f"query conditions {','.join(conditions) if rendered else '-'}", flush=True)

    validation = []
    if args.val_pairs > 0:
        # Fixed pairs (of every map in turn), no jitter, drawn with their own seed; in held-out
        # conditions when given.
        val_cfg = replace(pairs_cfg, conditions=tuple(args.val_conditions) or pairs_cfg.conditions)
        no_jitter = replace(augment, query_prob=0.0, reference_prob=0.0)
        val_samplers = [training.PairSampler(sfm, images, val_cfg, no_jitter, render_fn)
                        for sfm, images, render_fn in maps]
        val_rng = np.random.default_rng(args.seed + 7919)
        validation = [val_samplers[k % len(val_samplers)].sample(val_rng) for k in range(args.val_pairs)]

    data_info = {"maps": [{"colmap": c, "images": i, "synth_world": w} for c, i, w in sources],
                 "colmap": sources[0][0], "images": sources[0][1], "synth_world": sources[0][2],
                 "image_size": list(args.image_size) if args.image_size else None,
                 "init": args.init, "val_conditions": list(args.val_conditions), "conditions": list(conditions)}
    tic = time.perf_counter()
    result = training.train(model, sampler, config, out, resume=True, data_info=data_info,
                            validation_pairs=validation, log=lambda msg: print(msg, flush=True))
    print(f"stopped by {result.stopped_by} at step {result.step} ({result.steps_this_run} steps in "
          f"{time.perf_counter() - tic:.0f} s); checkpoint: {result.checkpoint}", flush=True)
    if args.export:
        fp = export_safetensors(model.cpu(), args.export, half=True,
                                metadata={"source": "pixloc-ros train", "step": result.step})
        print(f"exported {args.export} (float16, fingerprint {fp})")
    return 0
