"""Per-season tables of `pixloc-ros evaluate --json` reports (BENCHMARKS.md, "A pose the EKF can trust").

    python scripts/trust_table.py --before DIR --after DIR [--worlds w11 w23 w3]
    python scripts/trust_table.py --run LABEL=DIR [--run LABEL=DIR ...] --worlds ... [--compact]

--compact prints one row per season with a "recall, wrong, NEES mean (inside 95 %)" cell per run.

Each DIR holds `<world>_<season>.json` reports. Per season, pooled over the worlds: frames,
published poses, recall at 0.25 m / 2 deg (of all frames), published poses worse than 1 m or
5 deg, and the NEES (6 dof) of the published poses: mean and share inside the 95 % chi-square
bound (reports without per-frame covariances show "-"). Then the same per drive.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from pixloc_ros.core.tracking.covariance_calibration import NEES_BOUND_95, nees
from pixloc_ros.core.geometry.transforms import pose_difference

SEASONS = ("overcast", "autumn", "snow", "dusk")


def drive_figures(path: Path) -> dict:
    """Figures of one report (NEES recomputed from the published covariance when it is there)."""
    frames = json.loads(path.read_text())["per_frame"]
    scored = [f for f in frames if f["gt_map_from_base"] is not None]
    published = [f for f in scored if f["success"]]
    good = [f for f in published if f["translation_error_m"] <= 0.25 and f["rotation_error_deg"] <= 2.0]
    wrong = [f for f in published if not (f["translation_error_m"] <= 1.0 and f["rotation_error_deg"] <= 5.0)]
    values = [nees(pose_difference(np.array(f["map_from_base"]), np.array(f["gt_map_from_base"])),
                   np.array(f["covariance"])) for f in published if f.get("covariance") is not None]
    return {"frames": len(scored), "published": len(published), "good": len(good), "wrong": len(wrong),
            "max_error_m": max((f["translation_error_m"] for f in published), default=math.nan),
            "nees": values, "has_cov": all(f.get("covariance") is not None for f in published)}


def pooled(parts: list[dict]) -> dict:
    """The figures of several drives together: frames, published, good, wrong, nees (concatenated)."""
    out = {k: sum(p[k] for p in parts) for k in ("frames", "published", "good", "wrong")}
    out["nees"] = np.concatenate([p["nees"] for p in parts]) if parts else np.zeros(0)
    return out


def season_parts(folder: Path, worlds: list[str], season: str) -> list[dict]:
    """``drive_figures`` of each world's report of ``season`` in ``folder`` (missing ones left out)."""
    return [drive_figures(folder / f"{w}_{season}.json") for w in worlds if (folder / f"{w}_{season}.json").exists()]


def row(label: str, parts: list[dict]) -> str:
    f = pooled(parts)
    values = f["nees"]
    if values.size and all(p["has_cov"] for p in parts):
        nees_text = f"{values.mean():.1f} | {100 * np.mean(values <= NEES_BOUND_95):.0f}%"
    else:
        nees_text = "- | -"
    recall = 100 * f["good"] / f["frames"] if f["frames"] else math.nan
    return f"| {label} | {f['frames']} | {f['published']} | {recall:.1f}% | {f['wrong']} | {nees_text} |"


def cell(parts: list[dict]) -> str:
    """"recall %, wrong, NEES mean (inside 95 %)" of drives pooled, e.g. "83.3 %, 0, 4.1 (93 %)"."""
    f = pooled(parts)
    if not f["frames"]:
        return "-"
    values = f["nees"]
    nees_text = f"{values.mean():.1f} ({100 * np.mean(values <= NEES_BOUND_95):.0f} %)" if values.size else "-"
    return f"{100 * f['good'] / f['frames']:.1f} %, {f['wrong']}, {nees_text}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", type=Path)
    ap.add_argument("--after", type=Path)
    ap.add_argument("--run", action="append", default=[], metavar="LABEL=DIR")
    ap.add_argument("--worlds", nargs="+", default=["w11", "w23", "w3"])
    ap.add_argument("--compact", action="store_true")
    args = ap.parse_args()
    runs = [(n, d) for n, d in (("before", args.before), ("after", args.after)) if d is not None]
    runs += [(r.split("=", 1)[0], Path(r.split("=", 1)[1])) for r in args.run]
    if args.compact:
        print("| season | " + " | ".join(n for n, _ in runs) + " |\n|---|" + "---|" * len(runs))
        for season in SEASONS:
            cells = [cell(season_parts(folder, args.worlds, season)) for _, folder in runs]
            print(f"| {season} | " + " | ".join(cells) + " |")
        return
    header = "| {} | frames | published | recall 0.25 m/2 deg | worse than 1 m/5 deg | NEES mean | inside 95% |"
    rule = "|---|---|---|---|---|---|---|"
    for name, folder in runs:
        print(f"\n{name} ({folder})\n" + header.format("season") + "\n" + rule)
        for season in SEASONS:
            print(row(season, season_parts(folder, args.worlds, season)))
        print(row("all", [drive_figures(p) for w in args.worlds for p in sorted(folder.glob(f"{w}_*.json"))]))
        print("\n" + header.format("drive") + "\n" + rule)
        for w in args.worlds:
            for season in SEASONS:
                path = folder / f"{w}_{season}.json"
                if path.exists():
                    print(row(f"{w} {season}", [drive_figures(path)]))


if __name__ == "__main__":
    main()
