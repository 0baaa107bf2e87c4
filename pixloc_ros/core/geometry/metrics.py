"""Pose errors and recall at the Extended CMU Seasons thresholds."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# (metres, degrees), as reported by the CMU Seasons benchmark and the PixLoc paper.
CMU_THRESHOLDS: tuple[tuple[float, float], ...] = ((0.25, 2.0), (0.5, 5.0), (5.0, 10.0))


def pose_errors(R_est: np.ndarray, t_est: np.ndarray, R_gt: np.ndarray, t_gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Errors between estimated and true poses of the same frame in the same world.

    R_* (..., 3, 3) rotations and t_* (..., 3) positions of ``world_from_x`` (x = base or camera).
    Returns (translation error (...,) metres, rotation error (...,) degrees).
    """
    dt = np.linalg.norm(np.asarray(t_est, np.float64) - np.asarray(t_gt, np.float64), axis=-1)
    R_rel = np.swapaxes(np.asarray(R_est, np.float64), -1, -2) @ np.asarray(R_gt, np.float64)
    cos = (np.trace(R_rel, axis1=-2, axis2=-1) - 1.0) / 2.0
    dr = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
    return dt, dr


@dataclass
class AccuracySummary:
    """Accuracy over a drive; frames without a pose count as failures in the recall."""

    frames: int
    localized: int
    recall: list[float]  # fraction of all frames within each of ``thresholds``
    thresholds: list[tuple[float, float]] = field(default_factory=lambda: list(CMU_THRESHOLDS))
    median_translation_m: float = float("nan")  # over localized frames
    median_rotation_deg: float = float("nan")
    max_translation_m: float = float("nan")
    max_rotation_deg: float = float("nan")

    def as_text(self) -> str:
        """One human-readable line per figure."""
        rec = ", ".join(f"{100 * r:.1f}% @ {m:g} m/{d:g} deg" for r, (m, d) in zip(self.recall, self.thresholds))
        if self.localized:
            errors = (f"median error: {self.median_translation_m:.3f} m, {self.median_rotation_deg:.2f} deg "
                      f"(max {self.max_translation_m:.3f} m, {self.max_rotation_deg:.2f} deg)")
        else:
            errors = "median error: none (no frame localized)"
        return f"frames {self.frames}, localized {self.localized}\nrecall: {rec}\n{errors}"


def summarize(translation_errors_m, rotation_errors_deg, frames: int,
              thresholds=CMU_THRESHOLDS) -> AccuracySummary:
    """Recall and medians from the errors of the localized frames out of ``frames`` frames in total."""
    dt = np.asarray(translation_errors_m, np.float64).reshape(-1)
    dr = np.asarray(rotation_errors_deg, np.float64).reshape(-1)
    if dt.shape != dr.shape:
        raise ValueError(f"{dt.size} translation errors but {dr.size} rotation errors")
    if frames < dt.size:
        raise ValueError(f"{dt.size} localized frames out of only {frames}")
    recall = [float(np.sum((dt <= m) & (dr <= d)) / frames) if frames else 0.0 for m, d in thresholds]
    has = dt.size > 0
    return AccuracySummary(
        frames=frames, localized=int(dt.size), recall=recall, thresholds=[tuple(t) for t in thresholds],
        median_translation_m=float(np.median(dt)) if has else float("nan"),
        median_rotation_deg=float(np.median(dr)) if has else float("nan"),
        max_translation_m=float(dt.max()) if has else float("nan"),
        max_rotation_deg=float(dr.max()) if has else float("nan"))
