"""A frame's verdict from the hypothesis books' decision: which candidate the frame is about, whether
it is published, the next state, the reason and the events (wrong lock, lost). Pure: it reads the
books, the candidates and the engine result and changes nothing; the pipeline applies the verdict.

The rules, in order:
- the committed hypothesis found a consistent result and no challenger won: TRACKING, its result
  published (unless its calibrated covariance is too wide: UNCERTAIN);
- a challenger won against the tracked pose: WRONG_LOCK, back to RELOCALIZING;
- still tracking, but this frame's result did not continue the tracked pose: its failure, or the
  continuation gate's PRIOR_MAHALANOBIS / NO_RESULT;
- the tracked pose was dropped: that reason "; lost after N rejections", LOST;
- no hypothesis leads: the best result's failure, RELOCALIZING;
- a hypothesis leads but is not committed yet: RELOCALIZATION_WEAK (it fails the relocalization
  checks), _AMBIGUOUS (a rival's cost is too close) or _CANDIDATE (not long enough yet).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..engine.localizer import LocalizationResult
from ..geometry.transforms import pose_difference
from .candidates import Candidate
from .frames import State
from .gating import GatingConfig, mahalanobis_d2, quality_failure
from .hypothesis_books import Hypothesis, HypothesisConfig, TrackerDecision
from .reasons import OK, Reason, Why


@dataclass
class Verdict:
    """What the pipeline does with one frame."""

    state: State  # the state after the frame
    why: Why  # OK when ``publish`` is set
    publish: Candidate | None = None  # the result to publish (None: nothing is published)
    estimate: Candidate | None = None  # the candidate the frame is about (FrameOutput.estimate), if any
    mahalanobis_d2: float = math.nan  # its d^2 against its hypothesis' prediction (GateStats)
    newly_committed: bool = False  # a hypothesis was committed this frame (the operator's pose is used up)
    wrong_lock: bool = False
    lost: bool = False


@dataclass(frozen=True)
class Prediction:
    """The committed hypothesis' odometry prediction at the frame: (4, 4) pose and (6, 6) covariance."""

    map_from_base: np.ndarray
    covariance: np.ndarray


def gate_reason(cand: Candidate | None, predicted: Prediction | None, gate_d2: float) -> Why:
    """Why a quality-passing result of the committed hypothesis did not continue it."""
    if cand is None or cand.map_from_base is None or predicted is None:
        return Why(Reason.NO_RESULT, "the tracked hypothesis was not optimised this frame")
    err = pose_difference(cand.map_from_base, predicted.map_from_base)
    d2 = mahalanobis_d2(err, predicted.covariance + cand.gate_covariance)
    return Why(Reason.PRIOR_MAHALANOBIS, f"d2 = {d2:.3g} > {gate_d2:.3g} ({np.linalg.norm(err[:3]):.2f} m, "
                                         f"{math.degrees(np.linalg.norm(err[3:])):.2f} deg from the prior)")


def estimate_candidate(decision: TrackerDecision, candidates: list[Candidate], sources: list[int | None],
                       committed_before: Hypothesis | None, result: LocalizationResult | None
                       ) -> tuple[Candidate | None, float]:
    """The candidate the frame is about and its d^2 against its prediction (NaN when not the
    leader's): the committed hypothesis' own result, else the leader's, else the localizer's best.
    The candidate may have no pose (the localizer failed): its failure is then the frame's reason."""
    committed, leader = decision.committed, decision.leader
    d2 = math.nan
    focus = committed if committed is not None and committed.observation is not None else None
    if focus is None and committed_before is not None and decision.wrong_lock is None:
        own = next((b for b, source in enumerate(sources) if source == committed_before.id), None)
        cand = candidates[own] if own is not None else None
    elif focus is None and leader is not None:
        cand = candidates[leader.observation.index]
        d2 = leader.predicted_d2
    else:
        cand = None if focus is None else candidates[focus.observation.index]
    if cand is None and result is not None and result.hypothesis >= 0:
        cand = candidates[result.hypothesis]
    return cand, d2


def relocalization_why(decision: TrackerDecision, leader: Hypothesis, result: LocalizationResult,
                       books: HypothesisConfig, gating: GatingConfig) -> Why:
    """Why the leading, uncommitted hypothesis is not committed this frame."""
    travel = f"{leader.lead_travel_m:.1f}/{books.commit_baseline_m:g} m"
    margin = (f"cost margin {100 * decision.margin:.1f}%" if math.isfinite(decision.margin)
              else "no rival" if decision.live <= 1 else "no rival with a result")
    if not leader.observation.strong:
        h, b = result.hypotheses, leader.observation.index
        weak = quality_failure(int(h.num_valid[b]), float(h.inlier_ratio[b]), h.cost[:, b], h.initial_cost[:, b],
                               gating)
        return Why(Reason.RELOCALIZATION_WEAK, f"the leading hypothesis fails the relocalization checks ({weak})")
    if math.isfinite(decision.margin) and decision.margin < books.commit_margin:
        return Why(Reason.RELOCALIZATION_AMBIGUOUS, f"{decision.live} hypotheses, the leader's {margin} < "
                                                    f"{100 * books.commit_margin:g}% (led {leader.lead_frames} "
                                                    f"frames, {travel})")
    return Why(Reason.RELOCALIZATION_CANDIDATE, f"leads {leader.lead_frames}/{books.commit_frames} frames, "
                                                f"{margin}, {travel}, {decision.live} hypotheses")


def decide(state: State, decision: TrackerDecision, candidates: list[Candidate], sources: list[int | None],
           committed_before: Hypothesis | None, predicted: Prediction | None, result: LocalizationResult | None,
           books: HypothesisConfig, gating: GatingConfig, gate_d2: float) -> Verdict:
    """The verdict on a frame that ran PixLoc (rules in the module doc). ``state``: the state before;
    ``sources``: the live hypothesis each candidate continued (None: a seed); ``committed_before``
    and ``predicted``: the committed hypothesis before the books' update and its prediction."""
    committed, leader = decision.committed, decision.leader
    cand, d2 = estimate_candidate(decision, candidates, sources, committed_before, result)
    estimate = cand if cand is not None and cand.map_from_base is not None else None
    focus = committed if committed is not None and committed.observation is not None else None

    if focus is not None and decision.wrong_lock is None:
        published = candidates[focus.observation.index]
        verdict = Verdict(State.TRACKING, OK, estimate=estimate, mahalanobis_d2=focus.predicted_d2,
                          newly_committed=decision.newly_committed)
        if published.publishable:
            verdict.publish = published  # this frame's result itself (the hypothesis' filtered pose only gates it)
        else:
            verdict.why = published.uncertain
        return verdict

    verdict = Verdict(state, OK, estimate=estimate, mahalanobis_d2=d2)
    if decision.wrong_lock is not None:
        lock = decision.wrong_lock
        away = float(np.linalg.norm(leader.position - lock.position))
        versus = (f"cost {leader.observation.cost:.4g} vs {lock.observation.cost:.4g}" if lock.observation
                  else "the tracked pose had no consistent result")
        verdict.why = Why(Reason.WRONG_LOCK, f"the tracked pose lost to a hypothesis {away:.2f} m away that led "
                                             f"{leader.lead_frames} frames / {leader.lead_travel_m:.1f} m ({versus}); "
                                             f"relocalizing")
        verdict.state, verdict.wrong_lock = State.RELOCALIZING, True
    elif committed_before is not None and committed is not None:
        # Still tracking, but this frame's result is not consistent with the committed pose.
        verdict.why = cand.failure if cand is not None and cand.failure else gate_reason(cand, predicted, gate_d2)
    elif decision.dropped_committed is not None:
        why = cand.failure if cand is not None and cand.failure else gate_reason(cand, predicted, gate_d2)
        verdict.why = why.with_suffix(f"; lost after {books.lost_after} rejections, relocalizing")
        verdict.state, verdict.lost = State.LOST, True
    elif leader is None:
        failed = [c.failure for c in candidates if c.failure]
        best = result.hypothesis if result is not None else -1
        verdict.why = (candidates[best].failure if 0 <= best < len(candidates) and candidates[best].failure
                       else failed[0] if failed else Why(Reason.NO_HYPOTHESIS))
        if state != State.LOST:
            verdict.state = State.RELOCALIZING
    else:
        if state != State.LOST or decision.live:
            verdict.state = State.RELOCALIZING
        verdict.why = relocalization_why(decision, leader, result, books, gating)
    return verdict


__all__ = ["Prediction", "Verdict", "decide", "estimate_candidate", "gate_reason", "relocalization_why"]
