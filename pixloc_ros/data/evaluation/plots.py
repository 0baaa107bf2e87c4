"""PNG figures of an evaluated drive (matplotlib, headless): trajectory against ground truth,
error over time, and a confidence heatmap snapshot."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .offline import DriveEvaluation


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display on robots' build machines or CI
    import matplotlib.pyplot as plt
    return plt


def plot_trajectory(evaluation: DriveEvaluation, path: str | Path, keyframe_xy: np.ndarray | None = None,
                    gnss_xy: np.ndarray | None = None) -> Path:
    """Top view (map x, y in metres): ground truth, published poses, GNSS fixes and keyframes."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 6))
    if keyframe_xy is not None and len(keyframe_xy):
        ax.scatter(keyframe_xy[:, 0], keyframe_xy[:, 1], s=8, c="0.7", marker="s", label="map keyframes")
    gt = np.array([np.asarray(f.gt_map_from_base)[:2, 3] for f in evaluation.frames if f.gt_map_from_base is not None])
    if len(gt):
        ax.plot(gt[:, 0], gt[:, 1], "-", c="k", lw=1.5, label="ground truth")
    if gnss_xy is not None and len(gnss_xy):
        ax.scatter(gnss_xy[:, 0], gnss_xy[:, 1], s=6, c="tab:orange", alpha=0.6, label="GNSS")
    est = [f for f in evaluation.frames if f.map_from_base is not None]
    if est:
        xy = np.array([np.asarray(f.map_from_base)[:2, 3] for f in est])
        err = np.array([f.translation_error_m for f in est])
        sc = ax.scatter(xy[:, 0], xy[:, 1], c=np.nan_to_num(err, nan=0.0), cmap="viridis", s=18, zorder=3,
                        label="pixloc_ros")
        fig.colorbar(sc, ax=ax, label="translation error [m]")
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlabel("map x [m]")
    ax.set_ylabel("map y [m]")
    s = evaluation.summary
    median = f", median {s.median_translation_m:.2f} m" if s.localized else ""
    ax.set_title(f"{s.localized}/{s.frames} frames localized{median}")
    ax.legend(loc="best", fontsize=8)
    return _save(fig, plt, path)


def plot_errors(evaluation: DriveEvaluation, path: str | Path) -> Path:
    """Translation and rotation error over time (frames without a pose marked at the bottom)."""
    plt = _pyplot()
    frames = evaluation.frames
    if not frames:
        raise ValueError("no frames to plot")
    t0 = frames[0].stamp_ns
    t = np.array([(f.stamp_ns - t0) / 1e9 for f in frames])
    dt = np.array([f.translation_error_m for f in frames])
    dr = np.array([f.rotation_error_deg for f in frames])
    missing = ~np.isfinite(dt)
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(8, 5), sharex=True)
    for ax, values, label, thresholds in ((a1, dt, "translation error [m]", (0.25, 0.5)),
                                          (a2, dr, "rotation error [deg]", (2.0, 5.0))):
        ax.plot(t[~missing], values[~missing], ".-", lw=0.8)
        for th in thresholds:
            ax.axhline(th, ls="--", c="0.6", lw=0.8)
        if missing.any():
            ax.plot(t[missing], np.zeros(missing.sum()), "x", c="tab:red", label="no pose published")
            ax.legend(loc="upper right", fontsize=8)
        ax.set_ylabel(label)
        ax.set_yscale("symlog", linthresh=0.1)
    a2.set_xlabel("time since first frame [s]")
    return _save(fig, plt, path)


def plot_nees(evaluation: DriveEvaluation, path: str | Path) -> Path:
    """NEES (6 dof) of every published pose over time against the 95 % chi-square bound, and of the
    estimates that were not published (hollow): whether the covariance the EKF gets is honest."""
    from ...core.tracking.covariance_calibration import NEES_BOUND_95, NEES_DOF

    plt = _pyplot()
    frames = evaluation.frames
    if not frames:
        raise ValueError("no frames to plot")
    t0 = frames[0].stamp_ns
    fig, ax = plt.subplots(figsize=(8, 3.5))
    for published, style in ((True, dict(marker="o", c="tab:blue", label="published")),
                             (False, dict(marker="o", facecolors="none", edgecolors="0.5", label="not published"))):
        pts = [((f.stamp_ns - t0) / 1e9, f.nees if published else f.estimate_nees) for f in frames
               if f.success == published and math.isfinite(f.nees if published else f.estimate_nees)]
        if pts:
            t, v = np.array(pts).T
            ax.scatter(t, v, s=16, zorder=3, **style)
    ax.axhline(NEES_BOUND_95, ls="--", c="tab:red", lw=1, label=f"95% bound ({NEES_BOUND_95:.1f})")
    ax.axhline(NEES_DOF, ls=":", c="0.4", lw=1, label=f"expected mean ({NEES_DOF})")
    c = evaluation.consistency()
    title = "NEES of the published poses"
    if c["nees_count"]:
        title += f": mean {c['nees_mean']:.1f}, {100 * c['nees_share_inside_95']:.0f}% inside the 95% bound"
    ax.set_title(title)
    ax.set_yscale("log")
    ax.set_xlabel("time since first frame [s]")
    ax.set_ylabel("NEES (6 dof)")
    ax.legend(loc="upper right", fontsize=8)
    return _save(fig, plt, path)


def save_heatmap_snapshot(image_rgb: np.ndarray, confidences: list[np.ndarray], path: str | Path) -> Path:
    """The camera image beside every level's confidence map, with a colour bar (``core.engine.heatmap``'s
    overview at the camera's size, what the node publishes on ``~/heatmap/fused``)."""
    import cv2

    from ...core.engine.heatmap import render_heatmaps

    overview = render_heatmaps(image_rgb, confidences, scale=1.0).overview
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), overview[..., ::-1])
    return path


def _save(fig, plt, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
