"""Why a frame has no pose (or why a candidate was set aside): a code from a fixed list and a detail
for people. Callers decide by the code, never by parsing the text; the text (``Why.text``, e.g.
"low_inlier_ratio: 0.120 < 0.2") is what logs, the status message and the offline records show.

The codes are the ``REASON_*`` constants of ``msg/LocalizationStatus.msg`` (a test keeps the two
lists equal); the node adds the last two, for frames the pipeline never saw.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class Reason(IntEnum):
    """The stable key of a reason; values are LocalizationStatus.REASON_*."""

    OK = 0
    NO_PRIOR = 1  # no initial pose or GNSS fix yet, or the newest fix is too old
    PRIOR_OUTSIDE_MAP = 2  # the prior lies farther from every keyframe than max_prior_distance_m
    NO_ODOMETRY = 3  # odometry is used but does not cover the image stamp
    TOO_FEW_MAP_POINTS = 4  # retrieval found fewer rows than needed near the prior (tiles loading?)
    LOCALIZATION_FAILED = 5  # the engine gave no result (its own reason is the detail)
    TOO_FEW_VALID_POINTS = 6  # fewer valid fine-level points than gating.min_valid_points
    LOW_INLIER_RATIO = 7  # too few points with a small residual: a wrong alignment
    COST_INCREASED = 8  # some level ended with a higher cost than it started with
    DEGENERATE_GEOMETRY = 9  # the points do not constrain all 6 pose directions
    FAR_FROM_GNSS = 10  # an uncommitted hypothesis lies outside the GNSS fix's gate
    FAR_FROM_PRIOR = 11  # without a prior covariance: too far from the prior
    PRIOR_MAHALANOBIS = 12  # inconsistent with the tracked pose's odometry prediction
    UNCERTAIN = 13  # the calibrated covariance is too wide to publish
    NO_RESULT = 14  # the tracked hypothesis was not optimised this frame
    NO_HYPOTHESIS = 15  # no initial pose gave a result
    RELOCALIZATION_CANDIDATE = 16  # one hypothesis leads, not long enough yet
    RELOCALIZATION_AMBIGUOUS = 17  # rival hypotheses with costs too close to tell
    RELOCALIZATION_WEAK = 18  # the leader fails the relocalization checks
    WRONG_LOCK = 19  # a challenger beat the tracked pose: relocalizing
    BAD_INPUT = 20  # (node) the image, its CameraInfo, stamps or extrinsics were unusable
    MAP_ERROR = 21  # (node) a damaged part of the map was needed

    @property
    def key(self) -> str:
        """The code as text ("low_inlier_ratio"), the first word of ``Why.text``."""
        return self.name.lower()


@dataclass(frozen=True)
class Why:
    """A reason code and its detail (units and figures for a person; never parsed)."""

    code: Reason
    detail: str = ""

    @property
    def text(self) -> str:
        """"ok", or "<key>: <detail>" ("<key>" alone without a detail)."""
        if self.code == Reason.OK:
            return "ok"
        return f"{self.code.key}: {self.detail}" if self.detail else self.code.key

    def __str__(self) -> str:
        return self.text

    def with_suffix(self, suffix: str) -> "Why":
        """The same code with ``suffix`` appended to the detail."""
        return Why(self.code, self.detail + suffix)


OK = Why(Reason.OK)

__all__ = ["OK", "Reason", "Why"]
