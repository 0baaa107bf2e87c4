"""Bilinear sampling of dense maps at sub-pixel points, with the spatial gradient dF/dp.

Pixel convention: (0, 0) is the centre of the top-left pixel; a point (x, y) lies between the
pixel centres floor(x), floor(x)+1 (same for y).

Two gradients (``GRADIENTS``; which one weights were trained with is part of their
``engine_profile.EngineProfile``):
- "central": the reference's (cvg/pixloc ``interpolate_tensor_bilinear``): the central difference
  of the interpolant, (F(p + 1 px) - F(p - 1 px)) / 2 per axis, with zeros outside the map (the
  reference samples with ``grid_sample``'s zero padding). The released weights' learned damping
  was trained against this Jacobian. Since the interpolant is linear in the map, the difference
  of two interpolations is one interpolation with a wider stencil: 12 taps (the 2x2 of the value,
  plus the two columns left and right of it and the two rows above and below), one gather and one
  (3 x 12) @ (12 x C) product per point; nothing is precomputed per map.
- "analytic": the exact derivative of the bilinear interpolant, from the same four taps that
  give the value (one 2x2 gather, one (3 x 4) @ (4 x C) product). It is the derivative of the
  function the LM minimises (piecewise constant across pixel borders); this project's "native"
  profile, which the shipped synthetic weights were trained with.

Hand-written: ``torch.nn.functional.grid_sample`` gives values only (its gradient w.r.t. the
grid comes from autograd, i.e. a second pass and a graph we do not want in the LM loop).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .small_ops import small_matmul

GRADIENTS = ("central", "analytic")

# Central-difference stencil: 12 taps as (row, column) offsets from the 2x2 cell's top-left pixel
# (x0, y0): rows y0 and y0 + 1 over columns x0 - 1 .. x0 + 2, then columns x0 and x0 + 1 at rows
# y0 - 1 and y0 + 2.
_CENTRAL_ROWS = (0, 0, 0, 0, 1, 1, 1, 1, -1, -1, 2, 2)
_CENTRAL_COLS = (-1, 0, 1, 2, -1, 0, 1, 2, 0, 1, 0, 1)


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

    def __init__(self, fmap: torch.Tensor, dtype: torch.dtype | None = None, gradient: str = "analytic",
                 confidence: torch.Tensor | None = None):
        """fmap: (C, H, W) or (Bf, C, H, W); Bf is 1 (shared by all hypotheses: nothing is
        copied per hypothesis) or the batch size of the points. ``dtype``: storage dtype of the
        gathered taps (default: the map's; values come back in the points' dtype).
        ``gradient``: "central" or "analytic" (module docstring); values are the same for both.
        ``confidence``: optional (H, W), (1, H, W) or (Bf, 1, H, W) map sampled (value only) by
        ``sample_with_confidence`` at the same cells.

        The table is a view, not a copy, when the map is stored channels-last (NHWC strides, as
        the CPU runtimes' maps are, ``network_runtime``); otherwise the transpose is one copy."""
        if gradient not in GRADIENTS:
            raise ValueError(f"Unsupported gradient {gradient!r}, expected one of {GRADIENTS}")
        self.gradient = gradient
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
        self.conf_table = None
        if confidence is not None:
            if confidence.numel() != Bf * H * W:
                raise ValueError(f"confidence {tuple(confidence.shape)} does not match the {Bf}x{H}x{W} map")
            self.conf_table = confidence.reshape(Bf * H * W).to(self.table.dtype)

    def sample_stacked(self, p: torch.Tensor, pad: float = 0.0, gradients: bool = True
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample at points p (B, N, 2) (x, y) pixels -> (M (B, N, 3, C), valid (B, N)).

        ``M[..., 0, :]`` is the value, ``M[..., 1, :]`` dF/dx and ``M[..., 2, :]`` dF/dy (the
        sampler's ``gradient``; with ``gradients=False`` the two gradient rows are the analytic
        ones, from the cheaper 2x2 stencil). All three are linear in the taps, so they come out of
        ONE gather (2x2 analytic, 12 taps central) and ONE batched (3 x taps) @ (taps x C) product
        per point: few kernels, few passes over memory. B must equal Bf, or Bf must be 1. Points outside [pad, size-1-pad] are marked invalid
        (their values are those of the clamped position: finite, but meaningless).
        """
        M, valid, _ = self._sample(p, pad, gradients, False)
        return M, valid

    def sample_with_confidence(self, p: torch.Tensor, pad: float = 0.0
                               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``sample_stacked`` (with gradients) plus the bilinear confidence at the same points:
        p (B, N, 2) -> (M (B, N, 3, C), valid (B, N), confidence (B, N)). Needs ``confidence``."""
        if self.conf_table is None:
            raise ValueError("BilinearSampler was built without a confidence map")
        return self._sample(p, pad, True, True)

    def _sample(self, p: torch.Tensor, pad: float, gradients: bool, with_confidence: bool):
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
        one = torch.ones_like(ax)
        bx, by = one - ax, one - ay
        base = (torch.arange(B, device=p.device) * (H * W))[:, None] if Bf > 1 else None
        idx = y0.long() * W + x0.long()  # (B, N)
        if base is not None:
            idx = idx + base
        # taps in the order 00, 10, 01, 11 (x first)
        cell = (idx[..., None] + torch.tensor([0, 1, W, W + 1], device=p.device)).reshape(-1)
        conf = None
        if with_confidence:
            ctaps = self.conf_table.index_select(0, cell).view(B, N, 4).to(p.dtype)
            conf = bx * (by * ctaps[..., 0] + ay * ctaps[..., 2]) + ax * (by * ctaps[..., 1] + ay * ctaps[..., 3])
        if self.gradient == "central" and gradients:
            return self._sample_central(x0.long(), y0.long(), ax, ay, bx, by, base, p.dtype), valid, conf
        taps = self.table.index_select(0, cell).view(B, N, 4, C)
        # rows: value, d/dx, d/dy; columns: taps 00, 10, 01, 11
        weights = torch.stack([bx * by, ax * by, bx * ay, ax * ay,
                               -by, by, -ay, ay,
                               -bx, -ax, bx, ax], -1).view(B, N, 3, 4)
        M = small_matmul(weights, taps.to(p.dtype))
        return M, valid, conf

    def _sample_central(self, x0: torch.Tensor, y0: torch.Tensor, ax: torch.Tensor, ay: torch.Tensor,
                        bx: torch.Tensor, by: torch.Tensor, base: torch.Tensor | None,
                        dtype: torch.dtype) -> torch.Tensor:
        """[F, dF/dx, dF/dy] (B, N, 3, C) with central differences, from the 12-tap stencil.

        x0, y0 (B, N) int64 top-left pixel of the 2x2 cell (clamped so the cell is inside the
        map), ax, ay its fractional offsets, bx = 1 - ax, by = 1 - ay. Taps outside the map
        count as 0 (``grid_sample``'s zero padding), so even points within 1 px of the border
        get the reference's gradient.
        """
        _, C, H, W = self.shape
        B, N = x0.shape
        dev = x0.device
        cols = x0[..., None] + torch.tensor(_CENTRAL_COLS, device=dev)  # (B, N, 12)
        rows = y0[..., None] + torch.tensor(_CENTRAL_ROWS, device=dev)
        inside = ((cols >= 0) & (cols < W) & (rows >= 0) & (rows < H)).to(dtype)
        idx = rows.clamp(0, H - 1) * W + cols.clamp(0, W - 1)
        if base is not None:
            idx = idx + base[..., None]
        taps = self.table.index_select(0, idx.reshape(-1)).view(B, N, 12, C)
        z = torch.zeros_like(ax)
        h = 0.5
        # Value: the 2x2 cell = taps 1, 2 (row y0) and 5, 6 (row y0 + 1).
        value = [z, bx * by, ax * by, z, z, bx * ay, ax * ay, z, z, z, z, z]
        # d/dx: (F(p + e_x) - F(p - e_x)) / 2; F(p + e_x) interpolates columns x0 + 1, x0 + 2 with
        # weights bx, ax, F(p - e_x) columns x0 - 1, x0; rows y0, y0 + 1 weigh by, ay.
        dx = [-h * bx * by, -h * ax * by, h * bx * by, h * ax * by,
              -h * bx * ay, -h * ax * ay, h * bx * ay, h * ax * ay, z, z, z, z]
        # d/dy: the same along the columns x0 (weight bx) and x0 + 1 (weight ax), rows y0 - 1 .. y0 + 2.
        dy = [z, -h * bx * ay, -h * ax * ay, z, z, h * bx * by, h * ax * by, z,
              -h * bx * by, -h * ax * by, h * bx * ay, h * ax * ay]
        weights = torch.stack(value + dx + dy, -1).view(B, N, 3, 12) * inside[..., None, :]
        return small_matmul(weights, taps.to(dtype))

    def sample(self, p: torch.Tensor, pad: float = 0.0, gradients: bool = True) -> Samples:
        """Sample at points p (B, N, 2) (x, y) pixels: values (B,N,C), valid (B,N), grad (B,N,C,2)."""
        M, valid = self.sample_stacked(p, pad, gradients)
        grad = M[..., 1:, :].transpose(-1, -2) if gradients else None
        return Samples(M[..., 0, :], valid, grad)


def interpolate(fmap: torch.Tensor, p: torch.Tensor, pad: float = 0.0, gradients: bool = True,
                gradient: str = "analytic") -> Samples:
    """One-shot ``BilinearSampler(fmap, gradient=gradient).sample(p, pad, gradients)``: fmap
    (C,H,W) or (B,C,H,W), p (B, N, 2) pixels -> values (B,N,C), valid (B,N), grad (B,N,C,2)."""
    return BilinearSampler(fmap, gradient=gradient).sample(p, pad, gradients)
