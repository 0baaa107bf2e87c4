#!/usr/bin/env python3
"""What one training pair costs on this machine, in float32 and under CPU bf16 autocast.

    python scripts/bench_training.py --world W [--weights FILE] [--pairs 6] [--threads 1]
        [--freeze 4] [--image-size 320x240]

W is a ``pixloc-ros synth`` folder (its ``sfm/`` and mapping images; queries are rendered in
its conditions). For each precision the same pairs (same sampler seed) go through
``core.training.pair_forward`` and ``backward``; printed: the network's forward alone, the whole
forward (network + reference sampling + LM + loss), the backward, per pair (median after one
warm-up pair), and how far bf16 moves the maps, the loss and the gradient from float32 (on the
first pair). Prints figures only; nothing is asserted (BENCHMARKS.md "Training" quotes it).
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def _size(text: str) -> tuple[int, int]:
    w, h = (int(v) for v in text.lower().split("x"))
    return w, h


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", required=True)
    ap.add_argument("--weights", default=None, help="default: the shipped weights")
    ap.add_argument("--pairs", type=int, default=6)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--freeze", type=int, default=4, help="VGG blocks kept fixed")
    ap.add_argument("--image-size", type=_size, default=(320, 240))
    ap.add_argument("--encoder", default=None, help="time a random init of this encoder instead of --weights")
    args = ap.parse_args()

    from pixloc_ros.commands.train import render_fn_for_world
    from pixloc_ros.core import training
    from pixloc_ros.core.engine.checkpoint import init_weights, load_weights
    from pixloc_ros.core.maps.colmap_io import read_model
    from pixloc_ros.commands.demo import SHIPPED_WEIGHTS

    torch.set_num_threads(args.threads)
    sfm = read_model(f"{args.world}/sfm")
    pairs_cfg = training.PairConfig(image_size=args.image_size,
                                    conditions=("summer", "overcast", "autumn", "snow", "dusk"))
    sampler = training.PairSampler(sfm, f"{args.world}/mapping/images", pairs_cfg, training.AugmentConfig(),
                                   render_fn_for_world(args.world))
    rng = np.random.default_rng(0)
    pairs = [sampler.sample(rng) for _ in range(args.pairs + 1)]
    config = training.TrainConfig(freeze_encoder_blocks=args.freeze)
    device = torch.device("cpu")
    results = {}
    first = {}
    for precision in ("f32", "bf16"):
        model = init_weights(args.encoder) if args.encoder else load_weights(args.weights or SHIPPED_WEIGHTS)
        model.config.bf16_on_cpu = precision == "bf16"
        training.set_train_mode(model, True)
        training.freeze_encoder(model, args.freeze)
        t_net, t_fwd, t_bwd = [], [], []
        for k, pair in enumerate(pairs):
            images = torch.from_numpy(np.stack([pair.reference_image, pair.query_image])).permute(0, 3, 1, 2).float() / 255
            tic = time.perf_counter()
            pyr = model(images)
            t_net.append(time.perf_counter() - tic)
            del pyr
            model.zero_grad(set_to_none=True)
            tic = time.perf_counter()
            out = training.pair_forward(model, pair, config, device)
            t_fwd.append(time.perf_counter() - tic)
            tic = time.perf_counter()
            if out.loss.requires_grad:
                out.loss.backward()
            t_bwd.append(time.perf_counter() - tic)
            if k == 0:
                with torch.no_grad():
                    maps = model(images)
                grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
                first[precision] = (maps, float(out.loss), grads)
        results[precision] = [float(np.median(t[1:])) for t in (t_net, t_fwd, t_bwd)]
        net, fwd, bwd = results[precision]
        print(f"{precision:5s} {args.threads} thread(s), {args.image_size[0]}x{args.image_size[1]}, "
              f"blocks frozen {args.freeze}: network forward (2 images) {net:.2f} s, pair forward {fwd:.2f} s, "
              f"backward {bwd:.2f} s, step {fwd + bwd:.2f} s per pair", flush=True)
    (m32, l32, g32), (m16, l16, g16) = first["f32"], first["bf16"]
    for level in range(3):
        df = (m32.features[level] - m16.features[level]).norm(dim=1).max().item()
        dc = (m32.confidences[level] - m16.confidences[level]).abs().max().item()
        print(f"level {level}: max |feature difference| {df:.4f} (unit vectors), max |confidence difference| {dc:.4f}")
    cos = torch.nn.functional.cosine_similarity(g32, g16, dim=0).item()
    print(f"loss f32 {l32:.4f} bf16 {l16:.4f}; gradient cosine similarity {cos:.4f}, "
          f"norm ratio {(g16.norm() / g32.norm()).item():.3f}")
    speedup = sum(results["f32"][1:]) / sum(results["bf16"][1:])
    print(f"bf16 / f32 step speed-up: {speedup:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
