"""Cost of one rig LM against the single-camera LM (issue 30), one pyramid level, torch loop.

Usage: python scripts/bench_rig_lm.py [--points 1000] [--hypotheses 1 16] [--iters 20] [--device cpu]

Each camera gets a smooth random feature map (C = 128 at 160 x 120, the mid level of a 640 x 480
image) and N points in its view; the rig's side cameras are chained through a 90-degree yaw.
Every run does exactly ``--iters`` iterations (no early stop). Prints ms per LM iteration for:
one camera (N points), the 3-camera rig (3 x N points, one pose), and three separate
single-camera LMs (what a rig costs without the shared pose).
"""
from __future__ import annotations

import argparse
import math
import time

import torch

from pixloc_ros.core.engine.lm.config import LMConfig
from pixloc_ros.core.engine.lm.optimizer import optimize_level
from pixloc_ros.core.engine.lm.rig import RigView, optimize_rig_level
from pixloc_ros.core.geometry.camera import Camera, random_points_in_view
from pixloc_ros.core.geometry.pose import Pose


def view(seed: int, n: int, chain: Pose | None, device) -> RigView:
    g = torch.Generator().manual_seed(seed)
    C, H, W = 128, 120, 160
    fmap = torch.nn.functional.normalize(torch.nn.functional.avg_pool2d(torch.randn(1, C, H + 4, W + 4, generator=g),
                                                                        5, 1)[0], dim=0)
    cam = Camera.from_params(W, H, 125.0, 125.0, (W - 1) / 2, (H - 1) / 2)
    xyz_cam = random_points_in_view(cam.double(), n, g, 5.0, 30.0)
    xyz = xyz_cam if chain is None else chain.double().inv().transform(xyz_cam)
    ref = torch.nn.functional.normalize(torch.randn(n, C, generator=g), dim=-1)
    return RigView(fmap.to(device), None, xyz.float().to(device), ref.to(device), torch.ones(n, device=device),
                   cam, None if chain is None else chain.to(device), 2.0)


def timed(fn, repeats: int = 3) -> float:
    fn()  # warm-up
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=1000, help="points per camera")
    parser.add_argument("--hypotheses", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the localizer's LM default: 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    yaw = lambda a: Pose.exp(torch.tensor([0.0, 0.0, 0.0, 0.0, a, 0.0]))  # noqa: E731 (about the optical y axis)
    views = [view(0, args.points, None, dev), view(1, args.points, yaw(math.pi / 2), dev),
             view(2, args.points, yaw(-math.pi / 2), dev)]
    config = LMConfig(num_iters=args.iters, stop_dt=0.0, stop_dw_deg=0.0, path="torch", pad=2.0)
    damping = torch.full((6,), 1e-2)
    print(f"device {dev}, {args.points} points per camera, {args.iters} iterations, torch threads {args.threads}")
    for B in args.hypotheses:
        init = Pose.exp(torch.randn(B, 6, generator=torch.Generator().manual_seed(B)) * 0.01).to(dev)

        def single(v=views[0]):
            return optimize_level(v.features, None, v.xyz, v.ref_features, v.ref_confidence, v.camera, init, damping,
                                  config)

        def rig():
            return optimize_rig_level(views, init, damping, config)

        def separate():
            for v in views:
                single(v)

        ms = {name: 1e3 * timed(fn) / args.iters for name, fn in
              (("one camera", single), ("rig of 3, one pose", rig), ("3 separate LMs", separate))}
        print(f"B = {B:3d}: " + ", ".join(f"{k} {v:.2f} ms/iter" for k, v in ms.items()))


if __name__ == "__main__":
    main()
