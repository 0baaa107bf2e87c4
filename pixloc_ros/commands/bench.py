"""``pixloc-ros bench``: per-stage latency of one localization (network + LM levels).

    pixloc-ros bench [--device cpu|cuda|auto] [--height 480 --width 640] [--points 5000]
                     [--hypotheses 4] [--iters 25 25 25] [--repeats 20] [--warmup 3]
                     [--weights CKPT] [--early-stop] [--threads N] [--compile] [--json]
                     [--lm-path auto|torch|fused] [--point-bucket 1024] [--network-runtime auto|torch|openvino|onnxruntime]
                     [--network-precision f32|bf16|int8|auto] [--profile native|reference] [--overlap]

Synthetic input: a random image, points in front of the camera with random unit reference
features, hypotheses near the identity pose. Without ``--early-stop`` every level runs all its
iterations (worst case, and what the numbers mean); with it, the LM stops as configured.
Stage times come from the localizer, which synchronises CUDA before reading each clock. The
report names what ran: the network's runtime (CPU: OpenVINO / ONNX Runtime / torch), the LM path
the timed localizations ran (fused Triton kernels with CUDA graphs, or the torch loop; with the
reason when the fused path fell back, ``lm_guard``) and the engine profile's gradient and
stopping rule (``--profile``; default native). ``--hypotheses 64`` batches 64 initial poses.
``--network-precision int8`` quantises the network (NNCF) on the benchmark's own image first.
``--overlap`` also times the repeats with the network of localization i+1 on a second thread while
the LM of localization i runs (the node's ``overlap_network``): frames per second both ways.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys


LM_DEFAULT_POINT_BUCKET = 1024  # optimizer.LMConfig.point_bucket (repeated: this module imports no torch at start)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``bench`` command."""
    p = subparsers.add_parser("bench", help="latency of the network and of each LM level",
                              description="Time one localization per repeat on synthetic input and "
                                          "report the median and p90 of each stage.")
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto")
    p.add_argument("--height", type=int, default=480, help="image height in pixels")
    p.add_argument("--width", type=int, default=640, help="image width in pixels")
    p.add_argument("--points", type=int, default=5000, help="number of 3D points (residual rows)")
    p.add_argument("--hypotheses", type=int, default=4, help="initial poses optimised in one batch")
    p.add_argument("--iters", type=int, nargs=3, default=(25, 25, 25), metavar=("L0", "L1", "L2"),
                   help="LM iterations of levels 0 1 2 (finest first; the run order is 2 -> 1 -> 0)")
    p.add_argument("--repeats", type=int, default=20, help="timed localizations")
    p.add_argument("--warmup", type=int, default=3, help="untimed localizations first")
    p.add_argument("--weights", metavar="CKPT", help="weights file (default: random initialisation)")
    p.add_argument("--fp32", action="store_true", help="run the network in float32 on CUDA")
    p.add_argument("--early-stop", action="store_true", help="use the LM stop criteria (default: run all iterations)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--compile", action="store_true", help="torch.compile the LM iteration (LMConfig.compile)")
    p.add_argument("--compile-mode", default=None,
                   help="torch.compile mode with --compile, e.g. reduce-overhead (adds CUDA graphs)")
    p.add_argument("--channels-last", action="store_true", help="network in NHWC layout on CUDA")
    p.add_argument("--lm-path", choices=("auto", "torch", "fused"), default="auto",
                   help="LM implementation (LMConfig.path): auto = fused Triton kernels on CUDA when installed")
    p.add_argument("--point-bucket", type=int, default=LM_DEFAULT_POINT_BUCKET,
                   help="fused LM: pad the points to this granule times a power of two (LMConfig.point_bucket)")
    p.add_argument("--network-runtime", choices=("auto", "torch", "openvino", "onnxruntime"), default="auto",
                   help="CPU inference runtime of the network (LocalizerConfig.cpu_runtime)")
    p.add_argument("--overlap", action="store_true",
                   help="also time overlapped stages: the next network on a second thread during this LM")
    p.add_argument("--network-precision", choices=("f32", "bf16", "int8", "auto"), default="f32",
                   help="precision of that runtime on the CPU (LocalizerConfig.cpu_precision)")
    p.add_argument("--profile", choices=("native", "reference"), default="native",
                   help="engine profile: image gradient and stopping rule (reference: central, tested every 10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def _synthetic_problem(args, device, model):
    """Image (H, W, 3) uint8, camera, QueryPoints and init poses (B,) for the benchmark."""
    import numpy as np
    import torch

    from pixloc_ros.core.geometry.camera import Camera, random_points_in_view
    from pixloc_ros.core.geometry.pose import Pose, so3_exp
    from pixloc_ros.core.engine.interpolation import BilinearSampler
    from pixloc_ros.core.engine.query_points import QueryPoints

    g = torch.Generator().manual_seed(args.seed)
    w, h = args.width, args.height
    f = 0.8 * max(w, h)
    camera = Camera.from_params(w, h, f, f, (w - 1) / 2, (h - 1) / 2)
    n = args.points
    # points at random pixels and depths 5-50 m in front of the identity camera
    xyz = random_points_in_view(camera, n, g, 5.0, 50.0)
    b = args.hypotheses
    xi = torch.cat([0.3 * torch.randn(b, 3, generator=g), 0.03 * torch.randn(b, 3, generator=g)], -1).double()
    init = Pose.from_Rt(so3_exp(xi[:, 3:]), xi[:, :3])
    rng = np.random.default_rng(args.seed)
    # a smooth random image (noise upsampled), closer to natural statistics than white noise
    small = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3)).astype(np.float32)
    image = np.clip(np.kron(small, np.ones((8, 8, 1), np.float32))[:h, :w], 0, 255).astype(np.uint8)
    # Reference features: the query's own features at the points' true projections (the identity
    # pose), as a map compiled from this very image would hold; the problem is then well posed and
    # the LM converges like on real data (iteration counts under --early-stop are meaningful).
    with torch.no_grad():
        pyramid = model.to(device).eval().extract(image)
    features, confidences = [], []
    for fmap, cmap, stride in zip(pyramid.features, pyramid.confidences, pyramid.strides):
        p2d, _ = camera.scale(1.0 / stride).world2image(xyz)
        table = torch.cat([fmap[0], cmap[0]], 0)  # (C + 1, H_l, W_l): one gather for both
        s = BilinearSampler(table).sample(p2d[None].to(device=device, dtype=table.dtype), 0.0, gradients=False)
        features.append(torch.nn.functional.normalize(s.values[0, :, :-1], dim=-1).cpu())
        confidences.append(s.values[0, :, -1].cpu())
    points = QueryPoints(xyz.float(), features, confidences, torch.arange(n), torch.zeros(n, dtype=torch.long))
    return image, camera, points.to(device), init


def _stats(values: list[float]) -> dict:
    import numpy as np
    a = np.asarray(values) * 1e3
    return {"median_ms": float(np.median(a)), "p90_ms": float(np.percentile(a, 90)),
            "min_ms": float(a.min()), "max_ms": float(a.max())}


def run(args: argparse.Namespace) -> int:
    """Run the benchmark; prints a table (or JSON). Returns 0, or 1 with one error line."""
    import torch

    from pixloc_ros.core.engine.localizer import Localizer, LocalizerConfig, resolve_device
    from pixloc_ros.core.engine.lm.config import LMConfig

    try:
        device = resolve_device(args.device)
    except ValueError as err:
        print(f"pixloc-ros bench: {err}", file=sys.stderr)
        return 1
    if min(args.width, args.height) < 32 or args.points < 1 or args.hypotheses < 1 or args.repeats < 1:
        print("pixloc-ros bench: need an image of at least 32x32, >= 1 point, hypothesis and repeat",
              file=sys.stderr)
        return 1
    if args.weights:
        from pixloc_ros.core.engine.checkpoint import load_weights
        model = load_weights(args.weights, device)
    else:
        from pixloc_ros.core.engine.network import PixLocModel
        torch.manual_seed(args.seed)
        model = PixLocModel()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.channels_last:
        model.config.channels_last = True
    from pixloc_ros.core.engine.profile import named_profile

    stops = {} if args.early_stop else dict(stop_dt=0.0, stop_dw_deg=0.0, grad_stop=0.0)
    lm = LMConfig(compile=args.compile, compile_mode=args.compile_mode, path=args.lm_path,
                  point_bucket=args.point_bucket, **stops)
    profile = named_profile(args.profile)
    config = LocalizerConfig(iterations=tuple(args.iters), device=str(device), half_precision=not args.fp32,
                             min_valid_points=1, return_confidences=False, lm=lm, profile=profile,
                             cpu_runtime=args.network_runtime,
                             cpu_precision="f32" if args.network_precision == "int8" else args.network_precision)
    try:
        localizer = Localizer(model, config)
        network_runtime = "torch (CUDA)" if device.type == "cuda" else model.cpu_runtime()
        image, camera, points, init = _synthetic_problem(args, device, model)
        if args.network_precision == "int8" and device.type == "cpu":
            from pixloc_ros.core.engine.network_int8 import quantize_unet
            model.set_int8_unet(quantize_unet(model.extractor, [image], model.config.pad_mode), checked=False)
            model.config.cpu_precision = localizer.config.cpu_precision = "int8"
            model.cpu_precision()  # int8 with another runtime: the error now
    except (ValueError, ImportError) as err:
        print(f"pixloc-ros bench: {err}", file=sys.stderr)
        return 1
    # The fused LM's one fallback warning (core/engine/lm/guard.py) goes to stderr and into the report.
    localizer.set_lm_warning_handler(lambda text: print(f"pixloc-ros bench: warning: {text}", file=sys.stderr))

    stages: dict[str, list[float]] = {k: [] for k in ("network", "lm_level2", "lm_level1", "lm_level0",
                                                      "lm_total", "total")}
    iterations = None
    reasons: dict[str, int] = {}
    paths: set[str] = set()
    for i in range(args.warmup + args.repeats):
        result = localizer.localize(image, camera, points, init)
        if i < args.warmup:
            continue
        paths.add(result.lm_path)
        key = result.failure.key
        reasons[key] = reasons.get(key, 0) + 1
        t = result.timings
        stages["network"].append(t.network_s)
        for level in (2, 1, 0):
            stages[f"lm_level{level}"].append(t.levels_s[level])
        stages["lm_total"].append(sum(t.levels_s))
        stages["total"].append(t.total_s)
        iterations = result.iterations
    summary = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch_threads": torch.get_num_threads(),
        "image": [args.width, args.height], "points": args.points, "hypotheses": args.hypotheses,
        "iters_finest_first": list(args.iters), "iterations_run_finest_first": list(iterations or ()),
        "early_stop": args.early_stop, "compile": args.compile, "compile_mode": args.compile_mode,
        "channels_last": args.channels_last, "weights": args.weights or "random-init",
        "network_runtime": network_runtime, "lm_path": "+".join(sorted(paths)), "lm_path_requested": args.lm_path,
        "lm_fallback": localizer.lm_status().reason, "profile": profile.name,
        "gradient": profile.gradient, "stopping": profile.stopping,
        "network_dtype": ("fp16" if not args.fp32 else "fp32") if device.type == "cuda" else
                         {"f32": "fp32", "bf16": "bf16", "int8": "int8"}[model.cpu_precision()],
        "repeats": args.repeats, "warmup": args.warmup, "outcomes": reasons,
        "stages": {k: _stats(v) for k, v in stages.items()},
    }
    if args.overlap:
        summary["frames_per_s"] = _overlap_rates(localizer, image, camera, points, init, args.repeats)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"pixloc-ros bench on {summary['device']} ({summary['device_name']}, {summary['torch_threads']} "
          f"threads): {args.width}x{args.height}, {args.points} points, {args.hypotheses} hypotheses, "
          f"iterations (L0 L1 L2) {list(iterations)} of {list(args.iters)}, network {summary['network_dtype']}, "
          f"{args.repeats} repeats after {args.warmup} warm-up; outcomes {reasons}")
    fallback = f" (fell back from {args.lm_path}: {summary['lm_fallback']})" if summary["lm_fallback"] else ""
    print(f"  network runtime {network_runtime}, LM path {summary['lm_path']}{fallback}, profile {profile.name} "
          f"({profile.gradient} gradient, {profile.stopping} stopping)")
    print(f"  {'stage':<10} {'median ms':>10} {'p90 ms':>10}")
    for name, s in summary["stages"].items():
        print(f"  {name:<10} {s['median_ms']:>10.2f} {s['p90_ms']:>10.2f}")
    if args.overlap:
        r = summary["frames_per_s"]
        print(f"  frames per second: {r['sequential']:.2f} one stage after the other, {r['overlapped']:.2f} with the "
              f"next network overlapping this LM ({r['overlapped'] / r['sequential']:.2f}x)")
    return 0


def _overlap_rates(localizer, image, camera, points, init, repeats: int) -> dict:
    """Localizations per second over ``repeats`` frames: network then LM, one after the other, and
    with the network of frame i+1 on a second thread while the LM of frame i runs."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    start = time.perf_counter()
    for _ in range(repeats):
        localizer.localize_extracted(localizer.extract(image, camera), points, init)
    sequential = repeats / (time.perf_counter() - start)
    with ThreadPoolExecutor(max_workers=1) as pool:
        start = time.perf_counter()
        ahead = pool.submit(localizer.extract, image, camera)
        for i in range(repeats):
            features = ahead.result()
            if i + 1 < repeats:
                ahead = pool.submit(localizer.extract, image, camera)
            localizer.localize_extracted(features, points, init)
        overlapped = repeats / (time.perf_counter() - start)
    return {"sequential": sequential, "overlapped": overlapped}
