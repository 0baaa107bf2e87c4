"""Several pose hypotheses kept alive over consecutive frames, and when one may be trusted.

Why: along a street PixLoc has wrong minima a metre or three along the road (repeated
facades, the forward/backward ambiguity of distant structure). A relocalization that lands in
one converges there again on the next frame when tracked from it, so "the next frame agrees" is
no evidence, and once a wrong pose is tracked its Mahalanobis gate rejects the correct frames.
What separates the two, measured on synthetic drives: on the same image and the same points the
correct minimum has the lower cost whenever both were reached (15 of 15 frames that had both;
2-90 % lower), while no absolute threshold separates them. So the evidence is relative and
accumulated: every hypothesis is propagated with the odometry and re-optimised on each frame,
and one is *committed* (published) only when it has led, frame after frame, either with a clear
cost margin over every other live hypothesis or over a baseline of several metres of travel.
The committed hypothesis keeps competing: a challenger that wins the same way is a wrong lock.

Each hypothesis' pose is a small Kalman filter over the frames it was continued by (odometry
prediction, each result fused with its covariance), not just its last result: a biased minimum
drifts decimetres per frame in snow, and a gate centred on the last result follows it metres
away, one accepted step at a time; centred on the filtered pose it does not. The results
themselves are what the pipeline publishes.

The pipeline (core/tracking/pipeline.py) owns the localizer; this module only keeps the books: it
receives, per frame, the odometry motion and the optimised observations (pose, calibrated
covariance, cost, which hypothesis each started from) and decides. Poses are (4, 4) numpy
``map_from_base``; covariances (6, 6) in ROS order (core/engine/covariance.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial.transform import Rotation
from scipy.stats import chi2

from ..geometry.transforms import pose_difference
from .gating import mahalanobis_d2


@dataclass
class HypothesisConfig:
    """When hypotheses merge, are kept, committed and dropped (the node's parameters of the same names)."""

    max_live_hypotheses: int = 3  # live hypotheses at most (each costs one LM hypothesis per frame)
    merge_distance_m: float = 0.5  # two hypotheses closer than this (and merge_rotation_deg) are one
    merge_rotation_deg: float = 3.0
    confirmations: int = 1  # frames a hypothesis must lead after the first before it is committed
    commit_margin: float = 0.05  # a lead is clear when every other live hypothesis' cost is this much higher (relative)
    commit_baseline_m: float = 5.0  # ... or when it led (clear or not) over this much travel
    lost_after: int = 3  # frames in a row without a consistent result before a hypothesis is dropped
    jitter_frames: int = 5  # innovations kept per hypothesis for its jitter

    def __post_init__(self):
        if self.max_live_hypotheses < 1 or self.confirmations < 0 or self.lost_after < 1:
            raise ValueError("max_live_hypotheses and lost_after must be >= 1, confirmations >= 0")

    @property
    def commit_frames(self) -> int:
        """Frames a hypothesis must lead in a row before it is committed (confirmations + 1)."""
        return self.confirmations + 1


@dataclass
class Observation:
    """One optimised initial pose of a frame."""

    index: int  # position in the localizer's batch
    map_from_base: np.ndarray  # (4, 4)
    covariance: np.ndarray  # (6, 6) ROS covariance of map_from_base (calibrated): its weight in the filter
    cost: float  # fine-level mean robust cost: comparable between observations of one frame
    strong: bool  # passed the relocalization-grade checks (may build evidence towards a commit)
    source: int | None = None  # id of the hypothesis whose prediction it started from, None for a seed
    gate_covariance: np.ndarray | None = None  # (6, 6) its covariance in the continuation gate (None: covariance)

    @property
    def gate_cov(self) -> np.ndarray:
        return self.covariance if self.gate_covariance is None else self.gate_covariance


@dataclass
class Hypothesis:
    """A live pose hypothesis and the evidence it has gathered."""

    id: int
    map_from_base: np.ndarray  # (4, 4) filtered pose at the last frame, or its prediction to the current one
    covariance: np.ndarray  # (6, 6) of map_from_base
    committed: bool = False
    observation: Observation | None = None  # this frame's result continuing it, None when missed
    misses: int = 0  # consecutive frames without a consistent result
    frames: int = 0  # frames with a consistent result
    lead_frames: int = 0  # consecutive strong frames as the leader
    clear_frames: int = 0  # consecutive frames of that streak with a clear margin (or no rival)
    lead_travel_m: float = 0.0  # odometry distance over the lead streak (frames with a silent rival not counted)
    beat_frames: int = 0  # consecutive frames of that streak it beat the committed hypothesis' own result
    last_strong: bool = False  # its last consistent result passed the relocalization-grade checks
    beat_rival: bool = False  # in its lead streak it beat an observed rival by the commit margin
    predicted_d2: float = math.nan  # Mahalanobis d^2 of this frame's result against the prediction
    innovations_m: list[float] = field(default_factory=list)  # last results' distances from their predictions

    @property
    def position(self) -> np.ndarray:
        return self.map_from_base[:3, 3]

    @property
    def jitter_m(self) -> float | None:
        """RMS distance of the last results from their odometry predictions (m), None without any:
        how much consecutive frames disagree beyond what the odometry explains."""
        if not self.innovations_m:
            return None
        return float(np.sqrt(np.mean(np.square(self.innovations_m))))


@dataclass
class TrackerDecision:
    """What happened to the hypotheses on one frame."""

    leader: Hypothesis | None  # the lowest-cost hypothesis observed this frame
    margin: float  # relative cost lead of the leader over the runner-up (inf without a rival)
    committed: Hypothesis | None  # the committed hypothesis after this frame (None: relocalizing)
    newly_committed: bool = False  # the commit happened on this frame
    wrong_lock: Hypothesis | None = None  # the committed hypothesis that a challenger beat on this frame
    dropped_committed: Hypothesis | None = None  # committed hypothesis dropped after lost_after misses
    live: int = 0  # hypotheses alive after the frame


def fuse(prior_map_from_base: np.ndarray, prior_covariance: np.ndarray, measured_map_from_base: np.ndarray,
         measured_covariance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Kalman update of a pose with a direct pose measurement (error state in the ROS convention:
    position in the map frame, left rotation vector). Returns the fused (4, 4) pose and (6, 6) covariance."""
    P, R = np.asarray(prior_covariance, np.float64), np.asarray(measured_covariance, np.float64)
    K = np.linalg.solve((P + R).T, P.T).T  # P (P + R)^-1
    step = K @ pose_difference(measured_map_from_base, prior_map_from_base)
    out = prior_map_from_base.copy()
    out[:3, 3] += step[:3]
    out[:3, :3] = Rotation.from_rotvec(step[3:]).as_matrix() @ prior_map_from_base[:3, :3]
    cov = (np.eye(6) - K) @ P
    return out, 0.5 * (cov + cov.T)


class HypothesisTracker:
    """The books of the live hypotheses (see the module doc). ``predict`` then ``update`` per frame."""

    def __init__(self, config: HypothesisConfig | None = None, gate_probability: float = 0.999):
        """gate_probability: the chi^2(6) quantile inside which a result continues a hypothesis
        (``GatingConfig.mahalanobis_probability``)."""
        if not (0.5 <= gate_probability < 1.0):
            raise ValueError(f"gate_probability must be in [0.5, 1), got {gate_probability}")
        self.config = config or HypothesisConfig()
        self.hypotheses: list[Hypothesis] = []
        self._next_id = 0
        self._leader_id: int | None = None
        self.gate_d2 = float(chi2.ppf(gate_probability, 6))  # the continuation gate on d^2

    def clear(self) -> None:
        """Forget every hypothesis (reset, new initial pose)."""
        self.hypotheses.clear()
        self._leader_id = None

    @property
    def committed(self) -> Hypothesis | None:
        return next((h for h in self.hypotheses if h.committed), None)

    def ordered(self) -> list[Hypothesis]:
        """Live hypotheses, committed first, then by lead (most evidence first)."""
        return sorted(self.hypotheses, key=lambda h: (not h.committed, -h.lead_frames, -h.frames, h.id))

    def predict(self, delta_base: np.ndarray | None, grow) -> None:
        """Move every hypothesis by the odometry motion ``delta_base`` (base(t0)_from_base(t1), (4, 4),
        or None: no motion known) and widen its covariance with ``grow(covariance) -> covariance``."""
        for h in self.hypotheses:
            if delta_base is not None:
                h.map_from_base = h.map_from_base @ delta_base
            h.covariance = grow(h.covariance)
            h.observation = None
            h.predicted_d2 = math.nan

    def spawn(self, observation: Observation) -> Hypothesis:
        """A new hypothesis from an observation that continues none of the live ones."""
        h = Hypothesis(self._next_id, observation.map_from_base, observation.covariance)
        self._next_id += 1
        self.hypotheses.append(h)
        return h

    def update(self, observations: list[Observation], travel_m: float, allow_spawn: bool = True) -> TrackerDecision:
        """Fold one frame's observations (those that passed the quality checks) into the books.

        travel_m: odometry distance since the previous frame (0 when unknown); allow_spawn:
        observations that continue no hypothesis start new ones (False: only continue).
        """
        cfg = self.config
        used: set[int] = set()
        # 1. Continue each hypothesis with the result that started from it when that result stayed
        #    inside its gate, else with the cheapest result that landed inside it (a seed that
        #    converged onto it).
        for h in self.ordered():
            inside = []
            for ob in observations:
                d2 = mahalanobis_d2(pose_difference(ob.map_from_base, h.map_from_base), h.covariance + ob.gate_cov)
                if d2 <= self.gate_d2:
                    inside.append((ob.source != h.id, ob.cost, d2, ob))
            if not inside:
                h.misses += 1
                continue
            _, _, d2, ob = min(inside, key=lambda x: (x[0], x[1]))
            h.innovations_m = (h.innovations_m + [float(np.linalg.norm(ob.map_from_base[:3, 3] - h.position))])[
                -cfg.jitter_frames:]
            h.map_from_base, h.covariance = fuse(h.map_from_base, h.covariance, ob.map_from_base, ob.covariance)
            h.observation, h.predicted_d2 = ob, d2
            h.misses, h.frames, h.last_strong = 0, h.frames + 1, ob.strong
            used.add(ob.index)
        # 2. Results that continue nothing start hypotheses (cheapest first, one per place).
        if allow_spawn:
            for ob in sorted(observations, key=lambda o: o.cost):
                if ob.index in used or any(self._same_place(ob.map_from_base, h.map_from_base)
                                           for h in self.hypotheses):
                    continue
                h = self.spawn(ob)
                h.observation, h.frames, h.last_strong = ob, 1, ob.strong
                used.add(ob.index)
        self._merge()
        # 3. Drop hypotheses that found no consistent result for lost_after frames. When the
        #    committed one goes, the frames it was still trusted through are no evidence for its
        #    successor (in snow a biased minimum agrees with itself for several frames while the
        #    tracked pose's own results jump to it): every streak starts again.
        dropped_committed = None
        for h in list(self.hypotheses):
            if h.misses >= cfg.lost_after:
                self.hypotheses.remove(h)
                if h.committed:
                    dropped_committed = h
        if dropped_committed is not None:
            self._leader_id = None
        # 4. The leader of this frame and its streak.
        seen = sorted((h for h in self.hypotheses if h.observation is not None), key=lambda h: h.observation.cost)
        leader = seen[0] if seen else None
        margin = math.inf
        if len(seen) > 1:
            margin = (seen[1].observation.cost - leader.observation.cost) / max(leader.observation.cost, 1e-12)
        current = self.committed
        for h in self.hypotheses:
            if h is not leader:
                h.lead_frames = h.clear_frames = h.beat_frames = 0
                h.lead_travel_m = 0.0
        if leader is not None:
            if not leader.observation.strong:
                leader.lead_frames = leader.clear_frames = leader.beat_frames = 0
                leader.lead_travel_m = 0.0
            else:
                continuing = self._leader_id == leader.id and leader.lead_frames > 0
                leader.lead_frames = leader.lead_frames + 1 if continuing else 1
                # A lead is clear by its cost margin over the rivals observed this frame. A rival
                # whose last result was strong and that found none this frame has an unknown cost,
                # not a high one: its silence is no margin (a dusk drive committed a hypothesis
                # 1.6 m along the road on two such frames, and published it). Rivals that never
                # passed the strong checks are no counter-evidence and do not hold the lead back,
                # and a leader that already beat an observed rival by the margin in this streak
                # keeps its lead clear while that rival is silent (its results then usually
                # converge onto the leader: on an overcast drive the rival 5 m behind did).
                silent = any(h is not leader and h.observation is None and h.last_strong for h in self.hypotheses)
                measured = len(seen) > 1 and margin >= cfg.commit_margin
                leader.beat_rival = measured or (continuing and leader.beat_rival)
                answered = not silent or leader.beat_rival
                clear = margin >= cfg.commit_margin and answered
                # The travel baseline, too, counts only frames on which the rivals answered: a
                # frame led while a rival was silent is no evidence of the lead either (the same
                # dusk drive reached 5 m that way on three such frames and committed).
                leader.lead_travel_m = (leader.lead_travel_m + travel_m * answered) if continuing else 0.0
                leader.clear_frames = (leader.clear_frames + 1 if continuing else 1) if clear else 0
                # Beating the committed hypothesis means beating its own result on this frame: a
                # frame it had none counts for nothing (its misses are counted, and drop it).
                beat = (current is not None and current is not leader and current.observation is not None
                        and current.observation.cost - leader.observation.cost
                        >= cfg.commit_margin * max(leader.observation.cost, 1e-12))
                leader.beat_frames = (leader.beat_frames + 1 if continuing else 1) if beat else 0
        self._leader_id = None if leader is None else leader.id
        # 5. Commit; or recognise a wrong lock: a challenger that beat the committed hypothesis'
        #    own results by the commit margin on commit_frames frames in a row.
        decision = TrackerDecision(leader, margin, current, dropped_committed=dropped_committed)
        if leader is not None and not leader.committed:
            if current is None and self._wins(leader):
                leader.committed = True
                decision.committed, decision.newly_committed = leader, True
            elif current is not None and leader.beat_frames >= cfg.commit_frames:
                # Stop publishing the tracked pose. The challenger keeps its streak and is
                # committed on the next frame it still leads.
                current.committed = False
                current.lead_frames = current.clear_frames = 0
                decision.committed, decision.wrong_lock = None, current
        self._evict()
        decision.live = len(self.hypotheses)
        return decision

    def _wins(self, h: Hypothesis) -> bool:
        cfg = self.config
        if h.lead_frames < cfg.commit_frames:
            return False
        return h.clear_frames >= cfg.commit_frames or h.lead_travel_m >= cfg.commit_baseline_m

    def _same_place(self, a: np.ndarray, b: np.ndarray) -> bool:
        d = pose_difference(a, b)
        return (float(np.linalg.norm(d[:3])) <= self.config.merge_distance_m
                and math.degrees(float(np.linalg.norm(d[3:]))) <= self.config.merge_rotation_deg)

    def _merge(self) -> None:
        """Hypotheses that converged onto each other are one: keep the one with the most evidence.

        Converged means: their filtered poses are at the same place, or this frame's results that
        continued them are (two hypotheses whose optimisations end in the same minimum are no
        evidence against each other; with wide covariances their filtered poses approach each
        other only over several frames, and until then the cost margin between them would be 0)."""
        keep: list[Hypothesis] = []

        def same(h: Hypothesis, k: Hypothesis) -> bool:
            if self._same_place(h.map_from_base, k.map_from_base):
                return True
            return (h.observation is not None and k.observation is not None
                    and self._same_place(h.observation.map_from_base, k.observation.map_from_base))

        for h in self.ordered():
            twin = next((k for k in keep if same(h, k)), None)
            if twin is None:
                keep.append(h)
            elif twin.observation is None and h.observation is not None:
                twin.map_from_base, twin.covariance, twin.observation = h.map_from_base, h.covariance, h.observation
                twin.misses, twin.predicted_d2, twin.last_strong = 0, h.predicted_d2, h.last_strong
        self.hypotheses = keep

    def _evict(self) -> None:
        """At most max_live_hypotheses: keep the committed one, then the cheapest observed, then the freshest."""
        if len(self.hypotheses) <= self.config.max_live_hypotheses:
            return
        ranked = sorted(self.hypotheses, key=lambda h: (not h.committed, h.observation is None,
                                                        h.observation.cost if h.observation else math.inf, h.misses))
        self.hypotheses = ranked[:self.config.max_live_hypotheses]
