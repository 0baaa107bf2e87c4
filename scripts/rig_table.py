"""Per-season table of a camera rig against its front camera alone (BENCHMARKS.md, "Camera rigs").

    python scripts/rig_table.py --root DIR --worlds 621287 751945 ... [--rig-calibration DIR]

``DIR/<world>/<tag>_<season>.json`` are ``pixloc-ros evaluate --json`` reports of the same drives
and map: tag ``front_left_right`` (``evaluate --rig front,left,right``), ``front_left_right_rigcal``
(the same with ``--calibration`` a rig calibration, when present) and ``front`` (``evaluate --rig
front``). Per season, pooled over the worlds, per set of cameras: frames, recall at 0.25 m /
2 deg (of all frames), median along-road error of the published poses (|error along the true
forward axis of base_link|), frames spent relocalizing (state relocalizing, lost or not
initialised, nothing published), published poses worse than 1 m / 5 deg, NEES (6 dof) of the
published poses (mean, share inside the 95 % chi-square bound), and the median per-frame network
time per camera and LM time.

``--rig-calibration FILE|DIR``: a rig calibration fitted on another world (``pixloc-ros calibrate
--rig``), or ``DIR/<world>.json``, one fitted without that world (``calibrate --rig --records`` on
the other worlds' rig reports): the rig's published
poses' NEES is also given with the covariance that calibration would have published for the
same estimate (``CovarianceCalibration.covariance_ros`` of the recorded Hessian covariance,
inlier ratio and jitter, times the online scale the run applied). Not a rerun: the gates that
decide what is published stay those of the run.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from pixloc_ros.core.geometry.transforms import pose_difference
from pixloc_ros.core.tracking.covariance_calibration import NEES_BOUND_95, CovarianceCalibration, nees
from pixloc_ros.core.tracking.frames import State

SEASONS = ("overcast", "autumn", "snow", "dusk")
TAGS = (("rig (front, left, right)", "front_left_right", 3), ("rig, rig calibration", "front_left_right_rigcal", 3),
        ("front alone", "front", 1))  # rigcal: evaluate --rig ... --calibration <a rig calibration>


def drive_figures(path: Path, cameras: int, calibration: CovarianceCalibration | None) -> dict:
    """The figures of one report (lists, to be pooled)."""
    frames = [f for f in json.loads(path.read_text())["per_frame"] if f["gt_map_from_base"] is not None]
    published = [f for f in frames if f["success"]]
    out = {"frames": len(frames), "published": len(published), "along": [], "nees": [], "nees_rigcal": [],
           "good": sum(f["translation_error_m"] <= 0.25 and f["rotation_error_deg"] <= 2.0 for f in published),
           "wrong": sum(not (f["translation_error_m"] <= 1.0 and f["rotation_error_deg"] <= 5.0) for f in published),
           "relocalizing": sum(not f["success"] and f["state"] != int(State.TRACKING) for f in frames),
           "network_ms": [1e3 * f["network_s"] / cameras for f in frames if f["network_s"] > 0],
           "lm_ms": [1e3 * f["optimizer_s"] for f in frames if f["network_s"] > 0]}
    for f in published:
        est, gt = np.array(f["map_from_base"]), np.array(f["gt_map_from_base"])
        out["along"].append(abs(float((est[:3, 3] - gt[:3, 3]) @ gt[:3, 0])))
        diff = pose_difference(est, gt)
        out["nees"].append(nees(diff, np.array(f["covariance"])))
        if calibration is not None and f.get("estimate_hessian_covariance") is not None:
            # The online scale the run applied: published covariance / the candidate's own.
            scale = float(np.trace(np.array(f["covariance"])) / np.trace(np.array(f["estimate_covariance"])))
            cov = scale * calibration.covariance_ros(np.array(f["estimate_hessian_covariance"]), est[:3, :3],
                                                     f["estimate_inlier_ratio"], f.get("estimate_jitter_m"))
            out["nees_rigcal"].append(nees(diff, cov))
    return out


def pooled(parts: list[dict]) -> dict:
    return {k: (sum(p[k] for p in parts) if isinstance(parts[0][k], int) else [v for p in parts for v in p[k]])
            for k in parts[0]}


def nees_text(values: list[float]) -> str:
    if not values:
        return "-"
    v = np.array(values)
    return f"{v.mean():.1f} ({100 * np.mean(v <= NEES_BOUND_95):.0f} %)"


def median_text(values: list[float], fmt: str = "{:.3f}") -> str:
    return fmt.format(float(np.median(values))) if values else "-"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, required=True)
    ap.add_argument("--worlds", nargs="+", required=True)
    ap.add_argument("--rig-calibration", type=Path, default=None)
    args = ap.parse_args()
    calibs = {}
    if args.rig_calibration is not None and args.rig_calibration.is_file():  # one file for every world
        calibs = dict.fromkeys(args.worlds, CovarianceCalibration.load(args.rig_calibration))
    elif args.rig_calibration is not None:
        calibs = {w: CovarianceCalibration.load(args.rig_calibration / f"{w}.json") for w in args.worlds
                  if (args.rig_calibration / f"{w}.json").exists()}
    print("| season | cameras | frames | recall 0.25 m / 2 deg | median along-road (m) | relocalizing frames "
          "| worse than 1 m / 5 deg | NEES mean (inside 95 %) | NEES, rig calibration | network per camera (ms) "
          "| LM (ms) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for season in SEASONS:
        for label, tag, cameras in TAGS:
            offline = calibs if tag == "front_left_right" else {}  # the column's calibration, applied offline
            parts = [drive_figures(args.root / w / f"{tag}_{season}.json", cameras, offline.get(w))
                     for w in args.worlds if (args.root / w / f"{tag}_{season}.json").exists()]
            if not parts:
                continue
            f = pooled(parts)
            recall = 100 * f["good"] / f["frames"] if f["frames"] else math.nan
            print(f"| {season} | {label} | {f['frames']} | {recall:.1f} % | {median_text(f['along'])} | "
                  f"{f['relocalizing']} | {f['wrong']} | {nees_text(f['nees'])} | "
                  f"{nees_text(f['nees_rigcal']) if offline else '-'} | "
                  f"{median_text(f['network_ms'], '{:.0f}')} | {median_text(f['lm_ms'], '{:.0f}')} |")


if __name__ == "__main__":
    main()
