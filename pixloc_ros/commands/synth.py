"""``pixloc-ros synth``: generate the synthetic street world, its SfM map and query bags.

Examples::

    pixloc-ros synth --out data/synth                     # small preset, seed 0
    pixloc-ros synth --out data/synth_full --preset full --seed 3
    pixloc-ros synth --preview conditions.png             # only the picture of every condition
    pixloc-ros synth --out data/synth_rig --rig front,left,right   # query bags of a 3-camera rig
"""
from __future__ import annotations

import argparse


def register(subparsers) -> None:
    """Add the ``synth`` sub-command."""
    p = subparsers.add_parser("synth", help="generate a synthetic world, SfM map and query rosbags",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", help="output folder (layout in docs/architecture.md, 'Synthetic data layout')")
    p.add_argument("--preset", default="small", choices=["small", "full"],
                   help="small: 320x240, a few dozen keyframes, ~30 frames per season (< 2 min on 2 cores); "
                        "full: CMU-like 1024x768 drives")
    p.add_argument("--seed", type=int, default=0, help="seed of the world, drives and sensor noise")
    p.add_argument("--encoding", default="rgb8", choices=["rgb8", "bgr8", "mono8"], help="image encoding in the bags")
    p.add_argument("--workers", type=int, default=None, help="rendering processes (default: CPU count, at most 4)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing synth output folder")
    p.add_argument("--rig", metavar="NAMES",
                   help="record the query drives with a camera rig, e.g. front,left,right (cameras: front, left, "
                        "right, rear; each on /<name>/image_raw and /<name>/camera_info, frame "
                        "<name>_camera_optical_frame, all on /tf_static); default: the one forward camera")
    p.add_argument("--preview", metavar="PNG",
                   help="save every condition seen from the same pose (plus its depth) to PNG; "
                        "without --out nothing else is generated")
    p.add_argument("--preview-size", default="400x300", metavar="WxH", help="size of each preview tile")
    p.set_defaults(func=run)


def run(args) -> int:
    """Generate what the arguments ask for; returns the exit status."""
    import time

    from pixloc_ros.data.sim import preview, synth

    if not args.out and not args.preview:
        raise SystemExit("pixloc-ros synth: give --out DIR and/or --preview PNG")
    if args.preview:
        try:
            w, h = (int(v) for v in args.preview_size.lower().split("x"))
        except ValueError:
            raise SystemExit(f"--preview-size must look like 400x300, got {args.preview_size!r}") from None
        tic = time.perf_counter()
        path = preview.render_preview(args.preview, seed=args.seed, width=w, height=h)
        print(f"preview: {path} ({time.perf_counter() - tic:.1f} s)")
    if args.out:
        from pixloc_ros.data.sim.rig import parse_rig

        try:
            rig = parse_rig(args.rig) if args.rig else None
        except ValueError as err:
            raise SystemExit(f"pixloc-ros synth: --rig: {err}") from None
        report = synth.synthesize(args.out, args.preset, args.seed, workers=args.workers, encoding=args.encoding,
                                  overwrite=args.overwrite, log=lambda msg: print(msg, flush=True), rig=rig)
        print(f"synth: {report.num_keyframes} keyframes, "
              f"{sum(report.num_query_frames.values())} query frames in {len(report.num_query_frames)} conditions, "
              f"{report.num_points} SfM points, mean reprojection error {report.mean_reprojection_error_px:.3f} px")
        print("timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in report.timings_s.items()))
        print(f"output: {report.out_dir} ({report.sizes_bytes['total'] / 1e6:.1f} MB)")
    return 0
