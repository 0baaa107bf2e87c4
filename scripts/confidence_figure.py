#!/usr/bin/env python3
"""What the confidence maps of a set of weights trust, by what the pixel shows (synthetic world).

    python scripts/confidence_figure.py --world W [--weights FILE] [--frames 6] [--out DIR]
        [--conditions summer,overcast,autumn,snow,dusk] [--figure-condition overcast]

Renders views along W's query drive (its ``queries/<condition>_gt.txt`` poses) in each condition,
with the renderer's per-pixel primitive (``raycast``) as the label: sky, facades, vegetation (tree
crowns), parked cars, road, sidewalks, street furniture. Prints, per condition, the finest level's
spread over an image's pixels (std, 5th and 95th percentiles, means over the frames) and the
mean confidence per label; writes ``confidence.json`` and ``confidence.png`` (the heatmap overview
of the middle frame of ``--figure-condition``: the camera image beside each level's map) to --out.
Use worlds that no evaluation reports on (training or calibration worlds).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

LABELS = {  # label -> world.Kind names (SKY and GROUND are raycast's own codes)
    "sky": ("SKY",), "facades": ("BUILDING",), "vegetation": ("CROWN",), "parked cars": ("CAR_BODY", "CAR_CABIN", "WHEEL"),
    "road": ("GROUND",), "sidewalks": ("SIDEWALK",), "furniture": ("POLE", "LAMP_HEAD", "SIGN", "BIN", "TRUNK"),
}


def _label_map(world, condition, camera, cam_from_world) -> np.ndarray:
    """(H, W) array of LABELS keys' indices (-1: unlabelled)."""
    from pixloc_ros.data.sim.raycast import GROUND, SKY, raycast
    from pixloc_ros.data.sim.world import Kind

    scene = world.scene(condition)
    prim = raycast(scene, camera, cam_from_world).prim
    kind_names = np.array([Kind(k).name for k in scene.primitives.kind] + ["GROUND", "SKY"])
    index = np.where(prim == SKY, len(kind_names) - 1, np.where(prim == GROUND, len(kind_names) - 2, prim))
    names = kind_names[index]
    out = np.full(prim.shape, -1, np.int32)
    for i, kinds in enumerate(LABELS.values()):
        out[np.isin(names, kinds)] = i
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", required=True)
    ap.add_argument("--weights", default=None, help="default: the shipped weights")
    ap.add_argument("--frames", type=int, default=6, help="views per condition, spread along the drive")
    ap.add_argument("--conditions", default="summer,overcast,autumn,snow,dusk")
    ap.add_argument("--figure-condition", default="overcast")
    ap.add_argument("--out", default="confidence_out")
    args = ap.parse_args()

    import cv2
    import torch

    from pixloc_ros.commands.demo import SHIPPED_WEIGHTS
    from pixloc_ros.core.engine.checkpoint import load_weights
    from pixloc_ros.core.engine.heatmap import render_heatmaps
    from pixloc_ros.core.geometry.transforms import invert_transform, make_transform, matrix_from_quat_xyzw
    from pixloc_ros.data.sim.dataset import load_dataset
    from pixloc_ros.data.sim.render import render

    torch.set_num_threads(1)
    data = load_dataset(args.world)
    model = load_weights(args.weights or SHIPPED_WEIGHTS)
    gt = np.loadtxt(Path(args.world) / "queries" / "overcast_gt.txt")
    picks = np.linspace(0, len(gt) - 1, args.frames).round().astype(int)
    poses = [invert_transform(make_transform(matrix_from_quat_xyzw(gt[i, 4:8]), gt[i, 1:4]) @ data.base_from_cam)
             for i in picks]
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {"world": str(args.world), "weights": str(args.weights or SHIPPED_WEIGHTS), "frames": picks.tolist(),
              "conditions": {}}
    for condition in args.conditions.split(","):
        spreads, sums, counts = [], np.zeros(len(LABELS)), np.zeros(len(LABELS))
        for k, cam_from_world in enumerate(poses):
            rgb, _ = render(data.world, condition, data.camera, cam_from_world, noise_seed=k)
            labels = _label_map(data.world, condition, data.camera, cam_from_world)
            confs = model.extract(rgb).confidences
            fine = confs[0][0, 0].numpy()
            spreads.append((float(fine.std()), *np.percentile(fine, [5, 95]).tolist()))
            for i in range(len(LABELS)):
                sums[i] += fine[labels == i].sum()
                counts[i] += (labels == i).sum()
            if condition == args.figure_condition and k == len(poses) // 2:
                maps = render_heatmaps(rgb, [c[0, 0].numpy() for c in confs], scale=1.0)
                cv2.imwrite(str(out_dir / "confidence.png"), maps.overview[..., ::-1])
        s = np.mean(spreads, axis=0)
        means = {name: (float(sums[i] / counts[i]) if counts[i] else None) for i, name in enumerate(LABELS)}
        report["conditions"][condition] = {"std": s[0], "p5": s[1], "p95": s[2], "mean_by_label": means,
                                           "pixels_by_label": {n: int(counts[i]) for i, n in enumerate(LABELS)}}
        print(f"{condition:9s} fine level: std {s[0]:.3f}, p5-p95 {s[1]:.2f}-{s[2]:.2f}; mean by label: "
              + ", ".join(f"{n} {v:.2f}" for n, v in means.items() if v is not None), flush=True)
    (out_dir / "confidence.json").write_text(json.dumps(report, indent=1))
    print(f"wrote {out_dir / 'confidence.json'} and {out_dir / 'confidence.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
