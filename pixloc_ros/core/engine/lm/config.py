"""What one level's Levenberg-Marquardt takes and returns, shared by its two implementations (the
torch loop in ``optimizer`` and the fused Triton loop in ``fused``): ``LMConfig``, ``LevelResult``
and the re-projection of the rotations onto SO(3) both apply after the last step."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ...geometry.pose import Pose, quat_xyzw_to_rotmat, rotmat_to_quat_xyzw
from ..interpolation import GRADIENTS
from ..profile import STOPPING_RULES

LM_PATHS = ("auto", "torch", "fused")


@dataclass
class LMConfig:
    """Settings of one level's Levenberg-Marquardt."""

    num_iters: int = 25  # maximum LM iterations at this level (the reference used up to 100 at evaluation)
    pad: float = 4.0  # projections closer than this to the map border (level pixels) are invalid, as in the reference
    lambda_min: float = 1e-6  # absolute floor of the damping added to diag(H): keeps H' invertible when H is not
    cauchy_scale: float = 0.1  # c of the Cauchy robust cost on the squared feature residual (reference value)
    stop_dt: float = 5e-3  # a hypothesis has converged when its step moves the translation less than this (m) ...
    stop_dw_deg: float = 0.05  # ... and rotates less than this (degrees); the reference's criteria
    check_every: int = 5  # native stopping: test "all hypotheses converged" (a host sync) only every this many iterations
    gradient: str = "analytic"  # image gradient: "central" (reference) or "analytic" (native); see ``interpolation``
    stopping: str = "native"  # "reference" or "native" (module docstring)
    grad_stop: float = 1e-4  # reference stopping: a hypothesis whose |g| falls below this has converged
    min_valid_points: int = 10  # reference stopping: fewer valid points than this and the hypothesis fails
    dtype: torch.dtype = torch.float32  # arithmetic dtype of the per-point terms; the 6x6 solves run in float64
    compile: bool = False  # torch.compile one LM iteration (fuses its ~100 small kernels; for CUDA). The first
    #                        call per shape compiles (tens of seconds): warm up at start-up
    compile_mode: str | None = None  # torch.compile mode, e.g. "reduce-overhead" (adds CUDA graphs)
    point_bucket: int = 1024  # with compile: pad the point count up to a multiple of this; the fused path pads
    #                           to this granule times a power of two (fused_lm.point_bucket): shapes (compiled
    #                           graphs, CUDA graphs) repeat
    # "torch": the loop below; "fused": one level in fused Triton kernels and CUDA graphs (``fused_lm``;
    # on CPU tensors Triton's interpreter, for tests); "auto": fused on CUDA when Triton is installed
    # and the problem allows it (no autograd, shared reference features, float32, no ``compile``).
    path: str = "auto"

    def __post_init__(self):
        if self.path not in LM_PATHS:
            raise ValueError(f"Unsupported LM path {self.path!r}, expected one of {LM_PATHS}")
        if self.gradient not in GRADIENTS:
            raise ValueError(f"Unsupported gradient {self.gradient!r}, expected one of {GRADIENTS}")
        if self.stopping not in STOPPING_RULES:
            raise ValueError(f"Unsupported stopping rule {self.stopping!r}, expected one of {STOPPING_RULES}")


@dataclass
class LevelResult:
    """Outcome of ``optimize_level`` for B hypotheses (all tensors on the input device)."""

    cam_from_world: Pose  # (B,) final poses
    cost: torch.Tensor  # (B,) mean robust cost rho(e) over valid points at the final pose (inf: none valid)
    initial_cost: torch.Tensor  # (B,) same at the initial pose
    num_valid: torch.Tensor  # (B,) int64 valid points at the final pose
    num_valid_initial: torch.Tensor  # (B,) int64 valid points at the initial pose
    iterations: torch.Tensor  # (B,) int64 iterations run before the hypothesis converged (or num_iters)
    converged: torch.Tensor  # (B,) bool: the stop criteria were met
    hessian: torch.Tensor  # (B, 6, 6) float64 undamped Gauss-Newton Hessian sum w J^T J at the final pose
    gradient: torch.Tensor  # (B, 6) float64 sum w J^T r at the final pose
    weighted_sq_residual: torch.Tensor  # (B,) float64 sum over valid points of w |r|^2 (for sigma^2)
    num_channels: int  # C, the residual dimension per point
    weights: torch.Tensor  # (B, N) final per-point weights w (0 where invalid)
    inlier_ratio: torch.Tensor  # (B,) share of valid points with rho'(e) >= 0.5, i.e. e <= 2 c^2
    singular: torch.Tensor  # (B,) bool: some damped system was not positive definite (step fell back)
    failed: torch.Tensor  # (B,) bool: reference stopping: fewer than min_valid_points valid at some iteration


def orthonormalize(R: torch.Tensor) -> torch.Tensor:
    """Project (B, 3, 3) near-rotations back onto SO(3) (float32 drift over many left updates)."""
    return quat_xyzw_to_rotmat(rotmat_to_quat_xyzw(R))
