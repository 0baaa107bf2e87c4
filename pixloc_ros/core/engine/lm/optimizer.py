"""PixLoc's Levenberg-Marquardt on one pyramid level, batched over pose hypotheses.

Per level (DESIGN.md "Optimizer"), for the pose ``cam_from_world = (R, t)`` of each hypothesis:
- ``p = world2image(R P + t)`` with the camera scaled to the level,
- residual ``r = F_q[p] - F_ref`` (both L2-normalised), ``e = |r|^2``,
- weight ``w = rho'(e) * C_ref * C_q[p] * valid`` with the Cauchy ``rho(e) = 2 c^2 log(1 + e / (2 c^2))``,
  ``rho'(e) = 1 / (1 + e / (2 c^2))``, c = 0.1,
- ``J = dF/dp * dp/dPc * [I | -[Pc]x]``, ``g = sum w J^T r``, ``H = sum w J^T J``,
- ``H' = H + diag(max(lambda * diag(H), lambda_min))``, ``delta = -H'^-1 g``,
- left update ``R <- exp([dw]x) R``, ``t <- exp([dw]x) t + dt`` (``Pose.exp(delta) @ pose``).
Every step is applied (no accept/reject test), as in the reference whose damping was learned
for exactly that.

The image gradient ``dF/dp`` (``LMConfig.gradient``, see ``interpolation``) and the stopping rule
(``LMConfig.stopping``) are part of the weights' engine profile (``engine_profile``):
- "reference" stopping (cvg/pixloc ``BaseOptimizer.early_stop``): convergence is tested only after
  the iterations whose 0-based index is a multiple of 10 (1, 11, 21, ... counted from 1); a
  hypothesis stops there when its step moved less than ``stop_dt`` and ``stop_dw_deg``, or when the
  norm of its gradient ``g`` (at the pose before that step) is below ``grad_stop``. A hypothesis
  with fewer than ``min_valid_points`` valid points fails (its steps are zero from then on, and
  ``LevelResult.failed`` says so), as the reference's ``failed`` mask does. The reference stops a
  whole batch when all of it is done; here each hypothesis stops on its own, which is what the
  reference does for a batch of one, its evaluation setting.
- "native" stopping: each hypothesis stops at its first step under ``stop_dt`` / ``stop_dw_deg``.

Performance notes (the loop is meant to run on a GPU without host round trips):
- shapes are static over the iterations; hypotheses that converged keep being evaluated but
  stop moving (a per-hypothesis mask), and the only host sync is the early-stop test every
  ``check_every`` iterations;
- ``J^T J`` is never formed per channel: with ``G = dF/dp`` (C x 2) and ``A = dp/dxi`` (2 x 6),
  ``J^T J = A^T (G^T G) A`` and ``J^T r = A^T (G^T r)``. The C-sized work is one gather of the
  2x2 stencil, one (3 x 4) @ (4 x C) product giving [F, dF/dx, dF/dy], and one (3 x 3) Gram
  matrix of [r, G] per point; the (B, N, C, 6) Jacobian never exists;
- the query map is shared by all hypotheses (one channels-last table, a view when the network
  returned NHWC maps, and the confidence gathered at the same cells);
- ``LMConfig.compile`` wraps one iteration in ``torch.compile`` (kernel fusion; with
  ``compile_mode="reduce-overhead"`` also CUDA graphs), padding the points to fixed buckets;
- ``LMConfig.path`` "fused" (the default "auto" on CUDA with triton installed) runs the whole level
  in ``fused_lm``: two Triton kernels per iteration, the loop as CUDA graphs, no Python between
  iterations; same results within float32 round-off (test_fused_lm.py). The CPU keeps this loop.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ...geometry.camera import Camera
from ..profile import REFERENCE_CHECK_EVERY
from ...geometry.pose import Pose, so3_exp
from ..interpolation import BilinearSampler
from ..small_ops import gram_rows, small_matmul, weighted_outer_sum
from .config import LevelResult, LMConfig, orthonormalize
from .solve import damped_solve


@dataclass
class LevelTerms:
    """Per-iteration quantities of one evaluation of the cost."""

    g: torch.Tensor  # (B, 6)
    H: torch.Tensor  # (B, 6, 6)
    cost_sum: torch.Tensor  # (B,) sum of rho over valid points
    num_valid: torch.Tensor  # (B,)
    w: torch.Tensor  # (B, N)
    e: torch.Tensor  # (B, N) squared residual norms
    valid: torch.Tensor  # (B, N)


class LevelProblem:
    """Everything about one level that does not change over the iterations."""

    def __init__(self, features: torch.Tensor, confidence: torch.Tensor | None, xyz: torch.Tensor,
                 ref_features: torch.Tensor, ref_confidence: torch.Tensor | None, camera: Camera,
                 config: LMConfig, cam_from_anchor: Pose | None = None):
        """One camera's level: its query map, points and camera (arguments of ``optimize_level``).
        ``cam_from_anchor``: this camera's pose in the frame whose pose the LM estimates (a rig's
        anchor camera, ``lm.rig``), or None when the LM estimates this camera's own pose."""
        dt = config.dtype
        device = xyz.device
        if features.ndim == 4:
            if features.shape[0] != 1:
                raise ValueError(f"one query map per level expected, got {tuple(features.shape)}")
            features = features[0]
        C, H, W = features.shape
        if ref_features.shape[-2:] != (xyz.shape[0], C) or ref_features.ndim not in (2, 3):
            raise ValueError(f"reference features {tuple(ref_features.shape)} do not match "
                             f"{xyz.shape[0]} points x {C} channels")
        if confidence is None:
            confidence = torch.ones(1, H, W, dtype=features.dtype, device=device)
        # The table is a view of a channels-last map (no copy); the confidence is gathered at the
        # same cells (its own 1-channel table).
        self.sampler = BilinearSampler(features, gradient=config.gradient,
                                       confidence=confidence.reshape(1, H, W).to(features.dtype))
        self.C = C
        # Rows with non-finite coordinates can never be valid; zero them so nothing NaN enters sums.
        finite = torch.isfinite(xyz).all(-1)
        self.point_ok = finite
        self.xyz = torch.where(finite[:, None], xyz, torch.zeros_like(xyz)).to(dt)
        self.f_ref = ref_features.to(dt)
        n = xyz.shape[0]
        c_ref = torch.ones(n, dtype=dt, device=device) if ref_confidence is None else ref_confidence.to(dt)
        self.c_ref = torch.where(finite, c_ref, torch.zeros_like(c_ref))
        self.camera = camera.to(device=device, dtype=dt)
        self.camera.max_r2  # computed once here (a host round trip), not inside the loop
        self.pad = config.pad
        self.two_c2 = 2 * config.cauchy_scale ** 2
        self.num_points = n
        self.device = device
        self.chain = None if cam_from_anchor is None else (cam_from_anchor.R.to(device, dt),
                                                          cam_from_anchor.t.to(device, dt))
        if config.compile and config.point_bucket > 1:
            # Pad with inert rows (never valid, zero weight) so the compiled shapes repeat.
            extra = -n % config.point_bucket
            if extra or n == 0:
                extra = extra or config.point_bucket
                self.xyz = torch.cat([self.xyz, self.xyz.new_zeros(extra, 3)])
                self.point_ok = torch.cat([self.point_ok, self.point_ok.new_zeros(extra)])
                self.c_ref = torch.cat([self.c_ref, self.c_ref.new_zeros(extra)])
                pad_shape = (*self.f_ref.shape[:-2], extra, C)
                self.f_ref = torch.cat([self.f_ref, self.f_ref.new_zeros(pad_shape)], -2)

    def evaluate(self, R: torch.Tensor, t: torch.Tensor, reduce_dtype: torch.dtype | None = None) -> LevelTerms:
        """Cost, gradient and Gauss-Newton Hessian at the poses (R (B,3,3), t (B,3))."""
        p_a = small_matmul(self.xyz[None], R.transpose(-1, -2)) + t[:, None, :]  # (B, N, 3) estimated frame
        if self.chain is None:
            p_c = p_a
            p2d, visible, J_p = self.camera.world2image_with_jacobian(p_c)  # J_p (B, N, 2, 3)
        else:
            # A rig camera: P_c = R_k P_a + t_k. The left perturbation acts on P_a, so
            # dp/dxi = J_p R_k [I | -[P_a]x]: the chain folds into J_p, and P_a takes P_c's place below.
            R_k, t_k = self.chain
            p_c = small_matmul(p_a, R_k.T[None]) + t_k
            p2d, visible, J_p = self.camera.world2image_with_jacobian(p_c)
            J_p = small_matmul(J_p.reshape(J_p.shape[0], -1, 3), R_k[None]).view_as(J_p)
        # M rows: [F, dF/dx, dF/dy] over the C channels; conf_q the query confidence there.
        M, inside, conf_q = self.sampler.sample_with_confidence(p2d, self.pad)
        valid = visible & inside & self.point_ok
        M[..., 0, :] -= self.f_ref  # row 0 becomes the residual r (in place: no extra tensor)
        # Gram matrix of [r, G_x, G_y] over the channels: |r|^2, G^T r and G^T G in one product.
        gram = gram_rows(M)  # (B, N, 3, 3)
        e = gram[..., 0, 0].clamp(min=0)
        Gtr = gram[..., 1:, 0]  # (B, N, 2)
        GtG = gram[..., 1:, 1:]  # (B, N, 2, 2)
        rho_d = 1 / (1 + e / self.two_c2)
        w = torch.where(valid, rho_d * self.c_ref * conf_q.clamp(min=0), torch.zeros_like(e))
        rho = self.two_c2 * torch.log1p(e / self.two_c2)
        # dp/dxi = J_p [I | -[P_a]x] (P_a = P_c without a chain); row a of J_p times -[P_a]x equals (P_a x a)^T.
        A = torch.cat([J_p, torch.cross(p_a[..., None, :].expand_as(J_p), J_p, dim=-1)], -1)  # (B,N,2,6)
        if reduce_dtype is not None:
            A, GtG, Gtr, w = A.to(reduce_dtype), GtG.to(reduce_dtype), Gtr.to(reduce_dtype), w.to(reduce_dtype)
        wA = A * w[..., None, None]
        g = (wA * Gtr[..., None]).sum((1, 2))
        Hm = weighted_outer_sum(wA, small_matmul(GtG, A))
        Hm = 0.5 * (Hm + Hm.transpose(-1, -2))
        cost_sum = torch.where(valid, rho, torch.zeros_like(rho)).sum(-1)
        return LevelTerms(g, Hm, cost_sum, valid.sum(-1), w, e, valid)


def _lm_step(prob: "LevelProblem", R: torch.Tensor, t: torch.Tensor, active: torch.Tensor,
             iterations: torch.Tensor, singular: torch.Tensor, failed: torch.Tensor, lam: torch.Tensor,
             lambda_min: float, stop_dt: float, stop_dw: float, grad_stop: float, min_valid: int,
             reference: bool, check: bool):
    """One LM iteration for all hypotheses; only tensors in and out, no host sync (compilable).

    Hypotheses that are no longer ``active`` are evaluated but not moved. ``reference``: the
    reference's stopping rule and failure on too few valid points (module docstring); ``check``:
    whether this iteration tests convergence (always true for the native rule).
    Returns (R, t, active, iterations, singular, failed, cost_sum, num_valid) at the new state;
    the cost and count are those evaluated at the input pose.
    """
    terms = prob.evaluate(R, t)
    if reference:
        failed = failed | (active & (terms.num_valid < min_valid))
        active = active & ~failed
    delta, ok = damped_solve(terms.H, terms.g, lam, lambda_min)
    delta = torch.where(active[:, None], delta, torch.zeros_like(delta))
    dR = so3_exp(delta[:, 3:])
    R = dR @ R
    t = (dR @ t[..., None])[..., 0] + delta[:, :3]
    iterations = iterations + active.long()
    singular = singular | (active & ~ok)
    if check:
        small = (delta[:, :3].norm(dim=-1) < stop_dt) & (delta[:, 3:].norm(dim=-1) < stop_dw)
        if reference:
            small = small | (terms.g.norm(dim=-1) < grad_stop)
        active = active & ~small
    return R, t, active, iterations, singular, failed, terms.cost_sum, terms.num_valid


_COMPILED_STEPS: dict = {}


def _compiled_step(mode: str | None):
    """``torch.compile(_lm_step)`` per mode, built once per process (graphs are cached per shape)."""
    if mode not in _COMPILED_STEPS:
        _COMPILED_STEPS[mode] = torch.compile(_lm_step, dynamic=False, mode=mode)
    return _COMPILED_STEPS[mode]


def fused_blocker(config: LMConfig, features, confidence, xyz, ref_features, ref_confidence, init: Pose,
                  damping) -> tuple[str | None, bool]:
    """Why the fused kernels cannot run this problem: (None, False) when they can, else (reason,
    whether it is this machine: triton missing, CPU tensors without Triton's interpreter) -- the
    other reasons (autograd, per-hypothesis reference features, dtype) belong to the problem."""
    from .fused import interpreted, triton_available

    tensors = [t for t in (features, confidence, xyz, ref_features, ref_confidence, init.R, init.t, damping)
               if t is not None]
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return "autograd (training) needs the torch path", False
    if ref_features.ndim != 2:
        return "per-hypothesis reference features need the torch path", False
    if config.dtype != torch.float32 or config.compile:
        return "float32 without torch.compile only", False
    if not triton_available():
        return "triton is not installed (pip install triton)", True
    if xyz.device.type != "cuda" and not interpreted():
        return ("its kernels run on CUDA tensors (on the CPU only in Triton's interpreter: TRITON_INTERPRET=1 "
                "before triton is imported, for tests)"), True
    return None, False


def resolve_lm_path(config: LMConfig, features, confidence, xyz, ref_features, ref_confidence, init: Pose,
                    damping) -> str:
    """"torch" or "fused" for this problem (``LMConfig.path``); ValueError when "fused" is asked
    for a problem the fused kernels do not handle. (The localizer goes through ``lm_guard``,
    which turns such errors, and every failure of the fused path, into a fallback.)"""
    if config.path == "torch" or (config.path == "auto" and xyz.device.type != "cuda"):
        return "torch"  # without importing triton (its import costs about a second)
    why, _ = fused_blocker(config, features, confidence, xyz, ref_features, ref_confidence, init, damping)
    if config.path == "fused":
        if why:
            raise ValueError(f"LMConfig.path='fused' cannot run this problem: {why}")
        return "fused"
    return "fused" if why is None else "torch"


def optimize_level(features: torch.Tensor, confidence: torch.Tensor | None, xyz: torch.Tensor,
                   ref_features: torch.Tensor, ref_confidence: torch.Tensor | None, camera: Camera,
                   init: Pose, damping: torch.Tensor, config: LMConfig | None = None) -> LevelResult:
    """Run LM on one level for B hypotheses sharing one query map and one point set.

    features: (C, H, W) or (1, C, H, W) query features of the level (L2-normalised, any float dtype);
    confidence: (1, H, W), (H, W) or (1, 1, H, W) query confidence in [0, 1], or None (all ones);
    xyz: (N, 3) world points (metres); ref_features: (N, C), shared by all hypotheses, or
    (B, N, C), one set per hypothesis (e.g. Monte-Carlo draws); ref_confidence: (N,) or None;
    camera: single Camera scaled to this level (pixel-centre origin); init: Pose (B,) cam_from_world;
    damping: (6,) learned lambda of this level, order [tx, ty, tz, rx, ry, rz].
    Never raises on degenerate data (no points, points behind the camera, singular systems):
    those show up as num_valid = 0, cost = inf, singular = True.
    """
    config = config or LMConfig()
    if init.shape == ():
        init = init[None]
    if len(init.shape) != 1:
        raise ValueError(f"init must be a Pose of batch shape (B,), got {tuple(init.shape)}")
    if resolve_lm_path(config, features, confidence, xyz, ref_features, ref_confidence, init, damping) == "fused":
        from .fused import optimize_level_fused
        return optimize_level_fused(features, confidence, xyz, ref_features, ref_confidence, camera, init,
                                    damping, config)
    prob = LevelProblem(features, confidence, xyz, ref_features, ref_confidence, camera, config)
    return run_level(prob, init, damping, config)


def run_level(prob, init: Pose, damping: torch.Tensor, config: LMConfig) -> LevelResult:
    """The torch LM loop on a built problem: ``LevelProblem`` (one camera) or any object with its
    ``evaluate``, ``device``, ``two_c2``, ``C`` and ``num_points`` (``rig.RigLevelProblem``: one pose, every
    camera's residuals). init: Pose (B,) of the estimated frame; damping: (6,) in that frame."""
    device = prob.device
    dt = config.dtype
    R = init.R.to(device=device, dtype=dt)
    t = init.t.to(device=device, dtype=dt)
    lam = damping.to(device=device, dtype=torch.float64)
    B = R.shape[0]
    active = torch.ones(B, dtype=torch.bool, device=device)
    iterations = torch.zeros(B, dtype=torch.int64, device=device)
    singular = torch.zeros(B, dtype=torch.bool, device=device)
    failed = torch.zeros(B, dtype=torch.bool, device=device)
    stop_dw = math.radians(config.stop_dw_deg)
    reference = config.stopping == "reference"
    step = _compiled_step(config.compile_mode) if config.compile else _lm_step
    # CUDA graphs (torch.compile's "reduce-overhead"/"max-autotune") reuse their output buffers on
    # the next replay: mark each iteration as a new step and copy the state out of the graph.
    graphs = config.compile and device.type == "cuda" and config.compile_mode in ("reduce-overhead", "max-autotune")
    initial = None
    for i in range(config.num_iters):
        if graphs:
            torch.compiler.cudagraph_mark_step_begin()
        # Reference rule: convergence is tested after iterations 1, 11, 21, ... (0-based i % 10 == 0).
        check = i % REFERENCE_CHECK_EVERY == 0 if reference else True
        out = step(prob, R, t, active, iterations, singular, failed, lam, config.lambda_min, config.stop_dt,
                   stop_dw, config.grad_stop, config.min_valid_points, reference, check)
        if graphs:
            out = tuple(x.clone() for x in out)
        R, t, active, iterations, singular, failed, cost_sum, num_valid = out
        if initial is None:
            initial = (cost_sum, num_valid)  # fresh tensors (CUDA-graph outputs are copied above)
        sync = check if reference else (i + 1) % max(config.check_every, 1) == 0
        if sync and not bool(active.any()):
            break  # the only host sync of the loop
    R = orthonormalize(R)
    # Final evaluation (its reductions in float64: this Hessian feeds the covariance).
    final = prob.evaluate(R, t, reduce_dtype=torch.float64)
    if initial is None:
        initial = (final.cost_sum, final.num_valid)

    def mean_cost(cost_sum: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        return torch.where(n > 0, cost_sum.to(dt) / n.clamp(min=1), torch.full_like(cost_sum, math.inf, dtype=dt))

    inliers = (final.valid & (final.e <= prob.two_c2)).sum(-1)
    wr2 = torch.where(final.valid, final.w.double() * final.e.double(), torch.zeros_like(final.e, dtype=torch.float64)).sum(-1)
    return LevelResult(
        cam_from_world=Pose(R, t),
        cost=mean_cost(final.cost_sum, final.num_valid),
        initial_cost=mean_cost(*initial),
        num_valid=final.num_valid,
        num_valid_initial=initial[1],
        iterations=iterations,
        converged=~active & ~failed,
        hessian=final.H.double(),
        gradient=final.g.double(),
        weighted_sq_residual=wr2,
        num_channels=prob.C,
        weights=final.w[:, :prob.num_points].to(dt),
        inlier_ratio=inliers.to(dt) / final.num_valid.clamp(min=1).to(dt),
        singular=singular,
        failed=failed,
    )
