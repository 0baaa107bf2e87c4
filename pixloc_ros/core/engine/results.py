"""What a localization returns, and how the levels' results become it: the types
(``LocalizationResult``, ``Failure``, ``Timings``, ``HypothesisResults``, the network's half
``NetworkOutput``), the stage clock, and
``choose_hypothesis`` (the eligible hypothesis of lowest fine cost, its covariance, or why none),
shared by the single-camera localizer (``localizer``) and the rig (``rig_localizer``)."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np
import torch

from ..geometry.camera import Camera
from ..geometry.pose import Pose
from .covariance import normalized_min_eigenvalue, pose_covariance, residual_variance
from .lm.config import LevelResult


@dataclass
class Timings:
    """Wall-clock seconds of one localization (device work synchronised before each reading)."""

    preprocess_s: float = 0.0  # image conversion / resizing, moving points to the device
    network_s: float = 0.0  # feature extraction (0 for localize_features)
    levels_s: tuple[float, float, float] = (0.0, 0.0, 0.0)  # LM per level, finest first
    postprocess_s: float = 0.0  # hypothesis choice, covariance, copies to the host
    total_s: float = 0.0


@dataclass
class NetworkOutput:
    """The network's half of one localization (``Localizer.extract``): what ``localize`` needs from the
    image, so that the network of the next frame can run while this one's LM does."""

    pyramid: object  # network.FeaturePyramid of the (possibly downscaled) image
    camera: Camera  # the camera of that image, scaled to the network's input (float64)
    image_size: tuple[int, int]  # (width, height) of the image as given (the camera's size)
    preprocess_s: float = 0.0
    network_s: float = 0.0
    started_s: float = 0.0  # time.perf_counter() when the extraction began


@dataclass
class HypothesisResults:
    """Where every initial pose of one localization ended (index b = the b-th initial pose), so
    that a caller can keep several hypotheses alive across frames. Arrays are numpy, CPU."""

    cam_from_world: Pose  # (B,) final poses (float64)
    cost: np.ndarray  # (3, B) final mean robust cost per level, finest first (inf where a level did not run)
    initial_cost: np.ndarray  # (3, B) cost where each level started
    num_valid: np.ndarray  # (B,) int64 valid points at the fine level
    inlier_ratio: np.ndarray  # (B,) share of valid fine-level points with rho'(e) >= 0.5
    hessian: np.ndarray  # (B, 6, 6) undamped fine-level Gauss-Newton Hessian (engine order)
    sigma2: np.ndarray  # (B,) residual variance factor (``covariance.residual_variance``)
    singular: np.ndarray  # (B,) bool: an LM system of the fine level was not positive definite


class Failure(IntEnum):
    """Why the localizer gave no pose (``LocalizationResult.failure``); its text says the figures."""

    NONE = 0
    NO_POINTS = 1  # the map returned no points for the prior
    POINTS_BEHIND_CAMERA = 2  # no point lies in front of any initial pose
    NO_LEVELS = 3  # every level has 0 iterations
    SINGULAR_SYSTEM = 4  # every hypothesis with enough points hit a singular LM system
    TOO_FEW_VALID_POINTS = 5  # no hypothesis kept enough valid points
    DEGENERATE_GEOMETRY = 6  # the points do not constrain all 6 pose directions
    COVARIANCE_FAILED = 7  # no finite covariance from the Hessian

    @property
    def key(self) -> str:
        """The first word of the reason text ("too_few_valid_points"); "ok" for NONE."""
        return "ok" if self == Failure.NONE else self.name.lower()


@dataclass
class LocalizationResult:
    """Outcome of one localization. Levels are indexed finest first (index 0 = stride 1)."""

    success: bool
    reason: str  # "ok", or why it failed: "<failure.key>: <figures>" (for people; decide by ``failure``)
    cam_from_world: Pose | None  # chosen pose (float64, CPU, batch shape ()), None when no hypothesis ran
    covariance: np.ndarray | None  # (6, 6) engine order [t, w], left perturbation of cam_from_world; None on failure
    cost: tuple[float, float, float] = (math.inf, math.inf, math.inf)  # final mean robust cost per level
    initial_cost: tuple[float, float, float] = (math.inf, math.inf, math.inf)  # cost where each level started
    iterations: tuple[int, int, int] = (0, 0, 0)  # LM iterations run per level (chosen hypothesis)
    num_valid: int = 0  # valid points at the fine level, final pose
    hypothesis: int = -1  # index of the chosen initial pose, -1 when none
    inlier_ratio: float = 0.0  # share of valid fine-level points with a small residual (rho' >= 0.5)
    sigma2: float = math.inf  # residual variance factor used for the covariance
    point_weights: np.ndarray | None = None  # (N,) float32 fine-level weights of the chosen hypothesis
    hypothesis_costs: np.ndarray | None = None  # (B,) float32 fine cost of every hypothesis
    confidences: list[np.ndarray] | None = None  # per level (H_l, W_l) float32 query confidence, for display
    timings: Timings = field(default_factory=Timings)
    hypotheses: HypothesisResults | None = None  # every initial pose's outcome (None when no level ran)
    lm_path: str = ""  # the LM implementation the levels ran: "fused" (Triton kernels) or "torch" ("": none ran)
    failure: Failure = Failure.NONE  # the code of ``reason``


class StageClock:
    """Stage timer that synchronises CUDA before each reading (accurate stage times)."""

    def __init__(self, device: torch.device):
        self.sync = device.type == "cuda"
        self.device = device
        self.last = self.start = self._now()

    def _now(self) -> float:
        if self.sync:
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def lap(self) -> float:
        now = self._now()
        dt, self.last = now - self.last, now
        return dt

    def total(self) -> float:
        return self._now() - self.start


@dataclass(frozen=True)
class ChoiceRules:
    """The settings ``choose_hypothesis`` applies (``LocalizerConfig``'s fields of the same names)."""

    min_valid_points: int  # a hypothesis needs this many valid fine-level points to be chosen
    lm_min_valid_points: int  # the LM's failure threshold (reference rule), for the reason text
    min_normalized_eigenvalue: float  # below this the Jacobi-scaled fine Hessian is rank deficient
    covariance_scale: float  # multiplies the covariance


def hypothesis_results(levels: dict[int, LevelResult], finest: int) -> HypothesisResults:
    """Every hypothesis' outcome (numpy, CPU) from the levels that ran (``finest``: the last one)."""
    fine = levels[finest]
    B = fine.cost.shape[0]
    inf = torch.full((B,), math.inf, dtype=torch.float64)
    cost = torch.stack([levels[l].cost.double().cpu() if l in levels else inf for l in range(3)])
    initial = torch.stack([levels[l].initial_cost.double().cpu() if l in levels else inf for l in range(3)])
    num_valid = fine.num_valid.cpu().numpy().astype(np.int64)
    sq = fine.weighted_sq_residual.double().cpu().numpy()
    sigma2 = np.array([residual_variance(float(sq[b]), int(num_valid[b]), fine.num_channels) for b in range(B)])
    return HypothesisResults(fine.cam_from_world.to("cpu", torch.float64), cost.numpy(), initial.numpy(),
                             num_valid, fine.inlier_ratio.double().cpu().numpy(),
                             fine.hessian.double().cpu().numpy(), sigma2, fine.singular.cpu().numpy())



def failure_result(code: "Failure", detail: str, clock: StageClock, pre: float, display, pose: Pose | None = None,
                   **kw) -> "LocalizationResult":
    """A failed ``LocalizationResult`` with reason ``"<code.key>: <detail>"``; ``display``: the
    confidence maps for display (or None); ``kw``: more fields (``levels_s`` the level times)."""
    post = clock.lap()
    timings = Timings(pre, 0.0, kw.pop("levels_s", (0.0, 0.0, 0.0)), post, clock.total())
    return LocalizationResult(False, f"{code.key}: {detail}", pose, None, timings=timings,
                              confidences=display, failure=code, **kw)


def choose_hypothesis(levels: dict[int, LevelResult], failed: torch.Tensor, rules: ChoiceRules, lm_path: str,
                      clock: StageClock, pre: float, level_times: tuple, display) -> "LocalizationResult":
    """The result of the levels that ran (``levels``: level -> its ``LevelResult``, finest is
    decisive): the eligible hypothesis (enough valid points, finite cost, no singular system, not
    ``failed`` (B,) by the reference rule) of lowest fine cost with its covariance, or a failure
    saying why none is. ``display``: the confidence maps for display (or None)."""
    finest = min(levels)
    fine = levels[finest]
    num_valid = fine.num_valid.cpu()
    cost = fine.cost.float().cpu()
    failed = failed.cpu()
    eligible = (num_valid >= rules.min_valid_points) & torch.isfinite(cost) & ~fine.singular.cpu() & ~failed

    per_hypothesis = hypothesis_results(levels, finest)

    def per_level(attr: str, b: int) -> tuple[float, float, float]:
        return tuple(float(getattr(levels[l], attr)[b]) if l in levels else math.inf for l in range(3))

    if not bool(eligible.any()):
        b = int(num_valid.argmax())
        pose = fine.cam_from_world[b].to("cpu", torch.float64)
        enough = num_valid >= rules.min_valid_points
        if bool((enough & fine.singular.cpu()).any()):
            code, why = Failure.SINGULAR_SYSTEM, "every hypothesis with enough points hit a singular LM system"
        elif bool((enough & failed).any()):
            code, why = Failure.TOO_FEW_VALID_POINTS, (f"every hypothesis fell below {rules.lm_min_valid_points} "
                                                       f"valid points at some level (the reference's failure rule)")
        else:
            code, why = Failure.TOO_FEW_VALID_POINTS, (f"best hypothesis has {int(num_valid[b])} valid points "
                                                       f"at level {finest}, need {rules.min_valid_points}")
        return failure_result(code, why, clock, pre, display, pose, levels_s=level_times, num_valid=int(num_valid[b]),
                              cost=per_level("cost", b), initial_cost=per_level("initial_cost", b),
                              iterations=tuple(int(levels[l].iterations[b]) if l in levels else 0 for l in range(3)),
                              hypothesis_costs=cost.numpy(), hypotheses=per_hypothesis, lm_path=lm_path)
    b = int(torch.where(eligible, cost, torch.full_like(cost, math.inf)).argmin())
    pose = fine.cam_from_world[b].to("cpu", torch.float64)
    H = fine.hessian[b].cpu().numpy()
    sigma2 = residual_variance(float(fine.weighted_sq_residual[b]), int(num_valid[b]), fine.num_channels)
    common = dict(
        cost=per_level("cost", b), initial_cost=per_level("initial_cost", b),
        iterations=tuple(int(levels[l].iterations[b]) if l in levels else 0 for l in range(3)),
        num_valid=int(num_valid[b]), hypothesis=b, inlier_ratio=float(fine.inlier_ratio[b]),
        sigma2=sigma2, point_weights=fine.weights[b].float().cpu().numpy(),
        hypothesis_costs=cost.numpy(), confidences=display, hypotheses=per_hypothesis,
        lm_path=lm_path)
    min_eig = normalized_min_eigenvalue(H)
    cov = None
    if min_eig < rules.min_normalized_eigenvalue:
        code, why = Failure.DEGENERATE_GEOMETRY, (f"the points do not constrain all 6 pose directions "
                                                  f"(normalised Hessian min eigenvalue {min_eig:.2e} < "
                                                  f"{rules.min_normalized_eigenvalue:.0e})")
    else:
        cov = pose_covariance(H, sigma2 * rules.covariance_scale)
        code, why = Failure.COVARIANCE_FAILED, f"sigma^2 = {sigma2} with Hessian eigenvalue ratio {min_eig:.2e}"
    if cov is None:
        post = clock.lap()
        return LocalizationResult(False, f"{code.key}: {why}", pose, None, failure=code,
                                  timings=Timings(pre, 0.0, level_times, post, clock.total()), **common)
    post = clock.lap()
    return LocalizationResult(True, "ok", pose, cov,
                              timings=Timings(pre, 0.0, level_times, post, clock.total()), **common)

