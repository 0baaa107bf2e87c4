"""Which LM implementation runs a level, and the fused path's safety net: the node never dies of
its accelerator.

``LMPathGuard.optimize_level`` runs one level like ``optimizer.optimize_level`` (same arguments
and ``LevelResult``) and picks the implementation from ``LMConfig.path``:
- "torch": the torch loop, always;
- "auto": the fused Triton kernels where this machine runs them (CUDA with triton installed),
  else the torch loop, silently on a CPU;
- "fused": the fused kernels; where they cannot run here (no triton, CPU tensors without Triton's
  interpreter) that is a failure (below).
Problems the fused kernels do not handle (autograd, per-hypothesis reference features, float64,
torch.compile) go to the torch loop for that call, whatever the setting.

Before the fused path first runs a shape bucket (``fused_lm.bucket_key``: hypotheses and points
as padded, map size, channels, gradient, stopping rule) it is probed: a synthetic problem of
exactly that bucket (a random smooth map of the level's size and channels, points 5-30 m deep in
view of the level's camera, reference features sampled at their projections, hypotheses ~3 cm
and ~0.3 deg off) runs ``PROBE_ITERS`` iterations without early stop through both
implementations, and the results must agree: iterations and failure flags exactly, poses within
``PROBE_TOL_M`` / ``PROBE_TOL_RAD``, mean costs within ``PROBE_COST_RTOL``, valid-point counts
within ``PROBE_VALID_TOL``. The probe compiles the kernels and captures the bucket's CUDA graphs,
which the real frames then replay (``Localizer.warm_up`` probes the buckets a node will use).

Any failure -- a Triton ``CompilationError``, a CUDA graph capture error, any other exception of
the fused path, a probe mismatch, the fused path unavailable where it was asked for -- is
reported once through the warning handler (one line with the reason), and the torch loop runs
that level and every later one for the rest of the process. Exceptions of the torch loop itself
propagate: they are not the accelerator's.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from ...geometry.camera import Camera, random_points_in_view
from ...geometry.pose import Pose, so3_exp
from .config import LevelResult, LMConfig
from .optimizer import fused_blocker, optimize_level

PROBE_ITERS = 5  # LM iterations of the probe (no early stop: every hypothesis runs them all)
PROBE_TOL_M = 1e-4  # largest translation difference between the two implementations' poses, metres
PROBE_TOL_RAD = 1e-5  # largest difference of a rotation-matrix entry (about the angle, radians)
PROBE_COST_RTOL = 1e-3  # relative difference of the final mean costs
PROBE_VALID_TOL = 1e-3  # share of the points whose validity may differ (projections on the pad's edge)

_log = logging.getLogger(__name__)


class FusedLMMismatch(RuntimeError):
    """The fused LM's result on the probe problem differs from the torch LM's."""


@dataclass(frozen=True)
class LMPathStatus:
    """The LM implementation in use (for status messages, diagnostics, benchmarks)."""

    requested: str  # LMConfig.path: "auto", "fused" or "torch"
    path: str  # what the last level ran: "fused" or "torch" ("auto" / "fused": none ran yet)
    reason: str  # why the torch loop runs in place of the fused kernels for good ("" when it does not)


def probe_problem(bucket: tuple, camera: Camera, with_confidence: bool, seed: int = 0):
    """A synthetic problem of exactly ``bucket`` (``fused_lm.bucket_key``): (features (C, H, W),
    confidence (1, H, W) or None, xyz (N, 3), reference features (N, C), reference confidence
    (N,), init Pose (B,)), on the bucket's device. ``camera``: the level's camera (H x W)."""
    from ..interpolation import BilinearSampler

    device, B, N, H, W, C = torch.device(bucket[0]), *bucket[1:6]
    g = torch.Generator(device=device).manual_seed(seed)
    noise = torch.randn(1, C, H + 4, W + 4, generator=g, device=device)
    fmap = torch.nn.functional.normalize(torch.nn.functional.avg_pool2d(noise, 5, 1)[0], dim=0)
    conf = None
    if with_confidence:
        conf = torch.sigmoid(2 * torch.randn(1, H, W, generator=g, device=device))
    cpu = torch.Generator().manual_seed(seed)
    cam = camera.to(device="cpu", dtype=torch.float64)
    xyz = random_points_in_view(cam, N, cpu, 5.0, 30.0)
    p2d, _ = cam.world2image(xyz)
    sampled = BilinearSampler(fmap).sample(p2d[None].to(device=device, dtype=torch.float32), 0.0, gradients=False)
    ref = torch.nn.functional.normalize(sampled.values[0], dim=-1)
    c_ref = 0.5 + 0.5 * torch.rand(N, generator=cpu)
    xi = torch.cat([0.03 * torch.randn(B, 3, generator=cpu), 0.005 * torch.randn(B, 3, generator=cpu)], -1)
    init = Pose.from_Rt(so3_exp(xi[:, 3:].double()), xi[:, :3].double()).to(device=device, dtype=torch.float32)
    return fmap, conf, xyz.float().to(device), ref, c_ref.to(device), init


def compare_results(torch_result: LevelResult, fused_result: LevelResult) -> str | None:
    """Why two results of the probe problem disagree beyond the stated tolerances, or None."""
    a, b = torch_result, fused_result
    for name in ("iterations", "failed", "singular"):
        if getattr(a, name).tolist() != getattr(b, name).tolist():
            return f"{name} {getattr(a, name).tolist()} (torch) vs {getattr(b, name).tolist()} (fused)"
    dt = float((a.cam_from_world.t.double() - b.cam_from_world.t.double().to(a.cam_from_world.t.device))
               .norm(dim=-1).max())
    dR = float((a.cam_from_world.R.double() - b.cam_from_world.R.double().to(a.cam_from_world.R.device))
               .abs().max())
    if not dt <= PROBE_TOL_M or not dR <= PROBE_TOL_RAD:
        return f"poses differ by {dt:.2e} m / {dR:.2e} rad (tolerance {PROBE_TOL_M:g} m / {PROBE_TOL_RAD:g} rad)"
    ca, cb = a.cost.double().cpu(), b.cost.double().cpu()
    finite = torch.isfinite(ca)
    if not torch.equal(finite, torch.isfinite(cb)) or not bool(
            ((ca - cb).abs() <= PROBE_COST_RTOL * ca.abs() + 1e-7)[finite].all()):
        return f"mean costs {ca.tolist()} (torch) vs {cb.tolist()} (fused)"
    n = max(1, a.weights.shape[-1])
    dv = int((a.num_valid.cpu() - b.num_valid.cpu()).abs().max())
    if dv > max(1, PROBE_VALID_TOL * n):
        return f"valid points {a.num_valid.tolist()} (torch) vs {b.num_valid.tolist()} (fused)"
    return None


class LMPathGuard:
    """Runs levels through the fused kernels or the torch loop (module docstring); one per localizer."""

    def __init__(self, on_warning: Callable[[str], None] | None = None, probe: bool = True):
        """``on_warning``: called once with the fallback's one-line reason (default: this module's
        logger). ``probe``: check each new bucket against the torch loop before using it."""
        self.on_warning = on_warning or _log.warning
        self.probe = probe
        self.fallback_reason: str | None = None
        self.last_path: str | None = None
        self._probed: set[tuple] = set()

    @property
    def probed(self) -> frozenset:
        """The shape buckets (``fused_lm.bucket_key``) the fused path passed its probe for."""
        return frozenset(self._probed)

    def status(self, requested: str) -> LMPathStatus:
        """The path in use for ``requested`` (``LMConfig.path``)."""
        if self.last_path is not None:
            path = self.last_path
        else:
            path = "torch" if requested == "torch" or self.fallback_reason else requested
        return LMPathStatus(requested, path, self.fallback_reason or "")

    def _fail(self, reason: str) -> None:
        if self.fallback_reason is None:
            self.fallback_reason = reason
            self.on_warning(f"LM: the fused Triton kernels failed ({reason}); using the torch LM for the rest of "
                            f"the run (parameter lm_path: torch skips the fused path)")

    def optimize_level(self, features: torch.Tensor, confidence: torch.Tensor | None, xyz: torch.Tensor,
                       ref_features: torch.Tensor, ref_confidence: torch.Tensor | None, camera: Camera,
                       init: Pose, damping: torch.Tensor, config: LMConfig) -> LevelResult:
        """``optimizer.optimize_level`` (arguments and result alike) on the path chosen as the
        module docstring says; never raises for a failure of the fused path."""
        args = (features, confidence, xyz, ref_features, ref_confidence, camera, init, damping)
        if self._wants_fused(config, *args):
            from .fused import bucket_key, optimize_level_fused

            if init.shape == ():
                init = init[None]
            try:
                key = bucket_key(xyz.device, init.shape[0], xyz.shape[0], features.shape, config)
                if self.probe and key not in self._probed:
                    self._probe(key, features, confidence, camera, damping, config)
                    self._probed.add(key)
                result = optimize_level_fused(*args[:6], init, damping, config)
                self.last_path = "fused"
                return result
            except Exception as err:  # any failure of the accelerator path: warn once, then torch for good
                text = " ".join(str(err).split())
                reason = f"{type(err).__name__}: {text[:300]}"
                if not isinstance(err, ValueError):
                    self._fail(reason)
                else:  # malformed input raises in the torch loop too (and then is no fault of the GPU)
                    result = optimize_level(*args, replace(config, path="torch"))
                    self._fail(reason)
                    self.last_path = "torch"
                    return result
        self.last_path = "torch"
        return optimize_level(*args, replace(config, path="torch"))

    def _wants_fused(self, config: LMConfig, *args) -> bool:
        """Whether this call should try the fused kernels (records a failure when "fused" was asked
        for on a machine that cannot run them, or "auto" found a CUDA machine without triton)."""
        if config.path == "torch" or self.fallback_reason is not None:
            return False
        if config.path == "auto" and args[2].device.type != "cuda":
            return False
        features, confidence, xyz, ref_features, ref_confidence, _, init, damping = args
        why, machine = fused_blocker(config, features, confidence, xyz, ref_features, ref_confidence, init, damping)
        if why is not None and machine:
            self._fail(f"unavailable: {why}")
        return why is None

    def _probe(self, key: tuple, features, confidence, camera: Camera, damping: torch.Tensor,
               config: LMConfig) -> None:
        """Raise ``FusedLMMismatch`` (or whatever the fused path raises) unless both paths agree
        on the synthetic problem of ``key``'s bucket."""
        from .fused import optimize_level_fused

        fmap, conf, xyz, ref, c_ref, init = probe_problem(key, camera, confidence is not None)
        probe = replace(config, num_iters=PROBE_ITERS, stop_dt=0.0, stop_dw_deg=0.0, grad_stop=0.0)
        expected = optimize_level(fmap, conf, xyz, ref, c_ref, camera, init, damping, replace(probe, path="torch"))
        got = optimize_level_fused(fmap, conf, xyz, ref, c_ref, camera, init, damping, probe)
        why = compare_results(expected, got)
        if why is not None:
            B, N, H, W, C = key[1:6]
            raise FusedLMMismatch(f"on a synthetic {B} x {N}-point problem ({C} x {H} x {W} map) the fused result "
                                  f"differs from the torch LM's: {why}")


__all__ = ["LMPathGuard", "LMPathStatus", "FusedLMMismatch", "probe_problem", "compare_results", "PROBE_ITERS",
           "PROBE_TOL_M", "PROBE_TOL_RAD", "PROBE_COST_RTOL", "PROBE_VALID_TOL"]
