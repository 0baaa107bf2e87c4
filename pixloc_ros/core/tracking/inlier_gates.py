"""The inlier-ratio gates of one set of weights, fitted on their own results.

The gate "enough inliers" (core/tracking/gating.py) compares a result's fine-level inlier ratio
(the share of valid points whose feature residual is below the robust cost's scale) with a
threshold. The ratio depends on the weights: how far apart their features of a correct match
lie under a change of season is what training shapes. For the weights shipped until issue 27 a
correct lock scored a median 0.45 and a wrong one 0.13; for weights trained across seasons with
confidences that learned, a correct lock scores a median 0.14 and a wrong one 0.01 (calibration
drives): the hand-set 0.2 rejected almost every pose of the second set although their optimiser
converged to within 0.25 m on most frames of every season but dusk.
So the thresholds are fitted per weights, next to the covariance calibration, from the raw
estimates of calibration drives (or of the map's own keyframes): correct locks (within 0.25 m and
2 deg of the ground truth) against wrong ones (over 1 m or 5 deg).

The rule: the relocalization threshold keeps ``keep`` of the correct locks (their lower
quantile) and must reject at least ``reject`` of the wrong ones (their upper quantile); when the
two disagree the stricter wins, because a wrong lock that passes costs more than a correct one
held back (the hypothesis books and the prior gates stop most of the remaining wrong ones). On
the records of the weights shipped before (415 estimates of four worlds' seasonal drives) it
gives 0.20, the value tuned by hand for them over several issues. The
tracking threshold keeps the hand-tuned ratio of the two (0.08 / 0.2): a committed hypothesis
also has the odometry-propagated prior against a wrong minimum.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

DEFAULT_MIN_INLIER_RATIO = 0.2  # without fitted gates (the weights shipped before issue 27 were tuned to it)
DEFAULT_TRACK_MIN_INLIER_RATIO = 0.08
TRACK_FACTOR = DEFAULT_TRACK_MIN_INLIER_RATIO / DEFAULT_MIN_INLIER_RATIO
MIN_CORRECT_SAMPLES = 20  # fewer correct locks say too little about the lower tail
# Fewer wrong locks say too little about their upper tail: the map calibration of one evaluation
# world found 4 (from 208 keyframe localizations), whose upper quartile (0.061, 2.6x the drive-
# fitted gate of the same weights) rejected every autumn frame of that world's drive.
MIN_WRONG_SAMPLES = 20


@dataclass
class InlierGates:
    """Fitted thresholds (shares of valid fine-level points, in [0, 1]) and what they came from."""

    min_inlier_ratio: float  # relocalization (and commit) threshold
    track_min_inlier_ratio: float  # threshold for the committed hypothesis' own continuation
    fitted_on: dict = field(default_factory=dict)  # sample counts and the quantiles used

    def __post_init__(self):
        values = (self.min_inlier_ratio, self.track_min_inlier_ratio)
        if not all(isinstance(v, (int, float)) and math.isfinite(v) and 0.0 <= v <= 1.0 for v in values):
            raise ValueError(f"inlier gates must be shares in [0, 1], got {values}")
        self.min_inlier_ratio, self.track_min_inlier_ratio = float(values[0]), float(values[1])

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, doc) -> "InlierGates":
        """From ``to_json``'s dict; ValueError when it is not one."""
        if not isinstance(doc, dict) or not {"min_inlier_ratio", "track_min_inlier_ratio"} <= set(doc):
            raise ValueError(f"inlier gates need min_inlier_ratio and track_min_inlier_ratio, got {doc!r:.120}")
        fitted = doc.get("fitted_on", {})
        return cls(doc["min_inlier_ratio"], doc["track_min_inlier_ratio"], fitted if isinstance(fitted, dict) else {})


def fit_inlier_gates(correct: np.ndarray, wrong: np.ndarray, keep: float = 0.95,
                     reject: float = 0.75) -> InlierGates:
    """Thresholds from the inlier ratios of correct (N,) and wrong (M,) locks of these weights.

    min_inlier_ratio = max(q_(1-keep)(correct), q_reject(wrong)) (the second only with at least
    ``MIN_WRONG_SAMPLES`` wrong locks), track = min_inlier_ratio * 0.4 (module doc). ValueError with fewer than
    ``MIN_CORRECT_SAMPLES`` finite correct ratios or quantiles outside (0, 1).
    """
    if not (0.5 <= keep < 1.0 and 0.5 <= reject < 1.0):
        raise ValueError(f"keep and reject must be in [0.5, 1), got {keep}, {reject}")
    good = np.asarray(correct, np.float64).ravel()
    bad = np.asarray(wrong, np.float64).ravel()
    good, bad = good[np.isfinite(good)], bad[np.isfinite(bad)]
    if good.size < MIN_CORRECT_SAMPLES:
        raise ValueError(f"fitting the inlier gates needs at least {MIN_CORRECT_SAMPLES} correct locks, "
                         f"got {good.size}")
    keep_value = float(np.quantile(good, 1.0 - keep))
    enough_wrong = bad.size >= MIN_WRONG_SAMPLES
    reject_value = float(np.quantile(bad, reject)) if enough_wrong else 0.0
    threshold = float(np.clip(max(keep_value, reject_value), 0.0, 1.0))
    fitted = {"correct": int(good.size), "wrong": int(bad.size), "keep": keep, "reject": reject,
              "correct_quantile": keep_value, "wrong_quantile": reject_value if enough_wrong else None,
              "correct_median": float(np.median(good)),
              "wrong_median": float(np.median(bad)) if bad.size else None,
              "correct_kept": float(np.mean(good >= threshold)),
              "wrong_rejected": float(np.mean(bad < threshold)) if bad.size else None}
    return InlierGates(threshold, threshold * TRACK_FACTOR, fitted)


__all__ = ["DEFAULT_MIN_INLIER_RATIO", "DEFAULT_TRACK_MIN_INLIER_RATIO", "InlierGates", "MIN_WRONG_SAMPLES",
           "fit_inlier_gates"]
