#!/usr/bin/env python
"""Which layers of the UNet int8 can take: feature and confidence error against float32, and speed.

    python scripts/int8_layers.py --world DIR [--weights W] [--calibration 32] [--max-edge 320]
        [--threads 1] [--variants none,heads,heads+first,heads+decoder]

Calibrates NNCF on the world's mapping images (every other one, up to --calibration) and measures
on the others and on every season's query frames (one in four): per level, the mean and 99th
percentile of 1 - cos(f_int8, f_f32) of the L2-normalised features, and the mean |confidence
difference|; then the CPU time of one forward pass at the query size. The figures behind
``network_int8.DEFAULT_IGNORED`` (BENCHMARKS.md, "Issue 29").
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

VARIANTS = {
    "none": (),
    "heads": (r".*/adaptation\..*", r".*/uncertainty\..*"),
    "heads+first": (r".*/adaptation\..*", r".*/uncertainty\..*", r".*/encoder\.0/encoder\.0\.0/.*"),
    "heads+decoder": (r".*/adaptation\..*", r".*/uncertainty\..*", r".*/decoder\..*"),
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--world", required=True)
    p.add_argument("--weights", default="pixloc_ros/assets/pixloc_synth_vgg16.safetensors")
    p.add_argument("--calibration", type=int, default=32)
    p.add_argument("--max-edge", type=int, default=320, help="mapping images are resized to this longer side")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--variants", default="none,heads,heads+first,heads+decoder")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from pixloc_ros.core.engine.checkpoint import load_weights
    from pixloc_ros.core.engine.images import downscale_rgb
    from pixloc_ros.core.engine.network_int8 import count_int8_convolutions, network_input, quantize_unet
    from pixloc_ros.core.engine.network_runtime import CompiledUNet
    from pixloc_ros.data.bags.reader import iter_frames

    world = Path(args.world)
    model = load_weights(args.weights, device="cpu")
    model.config.cpu_runtime, model.config.cpu_precision = "openvino", "f32"
    pad = model.config.pad_mode
    mapping = sorted((world / "mapping" / "images").glob("*.png"))
    def load(path):
        return downscale_rgb(cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB), args.max_edge, "area")
    calib = [load(f) for f in mapping[::2][:args.calibration]]
    tests = [load(f) for f in mapping[1::2]]
    for bag in sorted(d for d in (world / "queries").iterdir() if d.is_dir()):
        tests += [f.image for i, f in enumerate(iter_frames(bag)) if i % 4 == 0]
    print(f"{len(calib)} calibration images, {len(tests)} test images ({tests[-1].shape[1]}x{tests[-1].shape[0]})")

    def f32(rgb):
        pyr = model.extract(rgb)
        return [f[0] for f in pyr.features], [c[0, 0] for c in pyr.confidences]

    reference = [f32(rgb) for rgb in tests]
    x = network_input(tests[0], pad)
    for name in args.variants.split(","):
        t0 = time.time()
        q = quantize_unet(model.extractor, calib, pad, VARIANTS[name])
        seconds = time.time() - t0
        compiled = CompiledUNet(model.extractor, "openvino", "int8", q)
        cos = [[], [], []]
        conf = [[], [], []]
        for rgb, (feats, confs) in zip(tests, reference):
            xin = network_input(rgb, pad)
            feats_i, logits_i = compiled(torch.from_numpy(xin))
            out = [f.permute(0, 2, 3, 1) for f in feats_i] + list(logits_i)
            h, w = rgb.shape[:2]
            for level, stride in enumerate((1, 4, 16)):
                hh, ww = -(-h // stride), -(-w // stride)
                fi = torch.nn.functional.normalize(out[level][0, :hh, :ww].permute(2, 0, 1), dim=0)
                ci = torch.sigmoid(-out[3 + level][0, 0, :hh, :ww])
                cos[level].append((1 - (fi * feats[level]).sum(0)).flatten().numpy())
                conf[level].append((ci - confs[level]).abs().flatten().numpy())
        compiled(torch.from_numpy(x))
        times = []
        for _ in range(3):
            t = time.process_time()
            compiled(torch.from_numpy(x))
            times.append(time.process_time() - t)
        qn, total = count_int8_convolutions(q)
        figures = "  ".join(f"L{l}: 1-cos {np.concatenate(cos[l]).mean():.4f} (p99 {np.quantile(np.concatenate(cos[l]), 0.99):.4f})"
                            f" |dconf| {np.concatenate(conf[l]).mean():.4f}" for l in range(3))
        print(f"{name:14s} int8 convs {qn}/{total}, quantise {seconds:.1f} s, forward {min(times) * 1e3:.0f} ms CPU  {figures}",
              flush=True)
    image = tests[0]
    for precision in ("f32", "bf16"):  # the float graphs through the model (L2 norm and sigmoid included)
        model.config.cpu_precision = precision
        model.extract(image)
        times = []
        for _ in range(3):
            t = time.process_time()
            model.extract(image)
            times.append(time.process_time() - t)
        print(f"{precision:14s} extract {min(times) * 1e3:.0f} ms CPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
