"""Bilinear sampling of dense maps at sub-pixel points, with the spatial gradient dF/dp.

Pixel convention: (0, 0) is the centre of the top-left pixel; a point (x, y) lies between the
pixel centres floor(x), floor(x)+1 (same for y).

Gradient choice: analytic derivative of the bilinear interpolant itself, from the same four
taps that give the value. Why:
- it is the exact derivative of the function the optimizer minimises, so Gauss-Newton steps
  are consistent with the cost (and the tests can check it against autograd);
- it costs no extra memory traffic (no precomputed gradient maps to gather: gathering is the
  expensive part on a GPU) and no extra kernels;
- its weakness (piecewise constant across pixel borders) does not hurt PixLoc's features,
  which are smooth at every level by construction (learned, upsampled bilinearly).
The reference takes central differences of the interpolant at +-1 px (four more samples per
point, a slightly smoothed gradient); for features smooth on the pixel scale both agree.

Hand-written: ``torch.nn.functional.grid_sample`` gives values only (its gradient w.r.t. the
grid comes from autograd, i.e. a second pass and a graph we do not want in the LM loop).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .small_ops import small_matmul


@dataclass
class Samples:
    """Result of ``BilinearSampler.sample``."""

    values: torch.Tensor  # (B, N, C) interpolated values
    valid: torch.Tensor  # (B, N) bool: all four taps inside the map (and inside pad)
    grad: torch.Tensor | None  # (B, N, C, 2) dF/d(x, y) in units per pixel, or None


class BilinearSampler:
    """Holds one map (or one map per batch item) in a gather-friendly channels-last layout.

    Build it once per pyramid level and call ``sample`` every LM iteration: the (C, H, W) ->
    (H*W, C) transpose happens once, and each gathered tap is a contiguous row of C channels.
    """

    def __init__(self, fmap: torch.Tensor, dtype: torch.dtype | None = None):
        """fmap: (C, H, W) or (Bf, C, H, W); Bf is 1 (shared by all hypotheses: nothing is
        copied per hypothesis) or the batch size of the points. ``dtype``: storage dtype of the
        gathered taps (default: the map's; values come back in the points' dtype)."""
        if fmap.ndim == 3:
            fmap = fmap[None]
        if fmap.ndim != 4:
            raise ValueError(f"expected a (C,H,W) or (B,C,H,W) map, got {tuple(fmap.shape)}")
        Bf, C, H, W = fmap.shape
        if H < 2 or W < 2:
            raise ValueError(f"map of size {H}x{W} is too small to interpolate (needs >= 2x2)")
        self.shape = (Bf, C, H, W)
        table = fmap.permute(0, 2, 3, 1).reshape(Bf * H * W, C)
        self.table = table.to(dtype) if dtype is not None else table.contiguous()

    def sample_stacked(self, p: torch.Tensor, pad: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample at points p (B, N, 2) (x, y) pixels -> (M (B, N, 3, C), valid (B, N)).

        ``M[..., 0, :]`` is the value, ``M[..., 1, :]`` dF/dx and ``M[..., 2, :]`` dF/dy. All
        three are linear in the four taps, so they come out of ONE gather of the 2x2 stencil and
        ONE batched (3 x 4) @ (4 x C) product per point: few kernels, few passes over memory.
        B must equal Bf, or Bf must be 1. Points outside [pad, size-1-pad] are marked invalid
        (their values are those of the clamped position: finite, but meaningless).
        """
        Bf, C, H, W = self.shape
        B, N, _ = p.shape
        if Bf not in (1, B):
            raise ValueError(f"{Bf} maps cannot be sampled by {B} point sets")
        x, y = p[..., 0], p[..., 1]
        valid = (x >= pad) & (x <= W - 1 - pad) & (y >= pad) & (y <= H - 1 - pad)
        # Clamp so that the 2x2 stencil is always inside the map; at the far border x0 = W-2
        # with ax = 1 reproduces the border value exactly. NaN (e.g. a degenerate pose) -> 0 so
        # that indices stay in range; such points are already invalid.
        x = torch.nan_to_num(x, nan=0.0).clamp(0, W - 1)
        y = torch.nan_to_num(y, nan=0.0).clamp(0, H - 1)
        x0 = x.floor().clamp(max=W - 2)
        y0 = y.floor().clamp(max=H - 2)
        ax = x - x0
        ay = y - y0
        idx = y0.long() * W + x0.long()  # (B, N)
        if Bf > 1:
            idx = idx + (torch.arange(B, device=p.device) * (H * W))[:, None]
        # taps in the order 00, 10, 01, 11 (x first)
        offsets = torch.tensor([0, 1, W, W + 1], device=p.device)
        taps = self.table.index_select(0, (idx[..., None] + offsets).reshape(-1)).view(B, N, 4, C)
        one = torch.ones_like(ax)
        bx, by = one - ax, one - ay
        # rows: value, d/dx, d/dy; columns: taps 00, 10, 01, 11
        weights = torch.stack([bx * by, ax * by, bx * ay, ax * ay,
                               -by, by, -ay, ay,
                               -bx, -ax, bx, ax], -1).view(B, N, 3, 4)
        M = small_matmul(weights, taps.to(p.dtype))
        return M, valid

    def sample(self, p: torch.Tensor, pad: float = 0.0, gradients: bool = True) -> Samples:
        """Sample at points p (B, N, 2) (x, y) pixels: values (B,N,C), valid (B,N), grad (B,N,C,2)."""
        M, valid = self.sample_stacked(p, pad)
        grad = M[..., 1:, :].transpose(-1, -2) if gradients else None
        return Samples(M[..., 0, :], valid, grad)


def interpolate(fmap: torch.Tensor, p: torch.Tensor, pad: float = 0.0, gradients: bool = True) -> Samples:
    """One-shot ``BilinearSampler(fmap).sample(p, pad, gradients)``: fmap (C,H,W) or (B,C,H,W),
    p (B, N, 2) pixels -> values (B,N,C), valid (B,N), grad (B,N,C,2)."""
    return BilinearSampler(fmap).sample(p, pad, gradients)
