"""Products of many tiny matrices, written for the GPU's sake.

The LM works on per-point matrices of 2-4 rows (a bilinear stencil, 2x6 Jacobians, 3x3 Gram
matrices) for thousands of points. On the CPU, batched ``@`` is the fast way. On CUDA, cuBLAS
picks kernels built for large matrices for these shapes (on an H100 a third of an LM iteration
went to such ``bmm`` calls, BENCHMARKS.md), and torch.compile leaves them as opaque library
calls. Written as broadcast products and sums instead, they are plain element-wise work that
torch.compile fuses with its neighbours into a few kernels.

``use_elementwise(t)`` decides: CUDA tensors by default; ``FORCE`` (True/False) overrides it,
so that tests can run the CUDA formulation on the CPU.
"""
from __future__ import annotations

import torch

FORCE: bool | None = None  # None: element-wise on CUDA, batched matmul elsewhere


def use_elementwise(t: torch.Tensor) -> bool:
    """Whether to use the element-wise formulation for tensors like ``t``."""
    return t.is_cuda if FORCE is None else FORCE


def small_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` for batches of small matrices: a (..., m, k), b (..., k, n) -> (..., m, n).

    Element-wise (one multiply-add per k, k unrolled) when ``use_elementwise(a)``; meant for
    k <= 4 where the unrolled sum is a handful of fused ops.
    """
    if not use_elementwise(a):
        return a @ b
    out = a[..., :, 0, None] * b[..., None, 0, :]
    for k in range(1, a.shape[-1]):
        out = out + a[..., :, k, None] * b[..., None, k, :]
    return out


def gram_rows(M: torch.Tensor) -> torch.Tensor:
    """``M @ M^T`` over the last axis: M (..., r, C) -> (..., r, r), for small r and any C.

    Element-wise: the r (r + 1) / 2 distinct dot products as multiply-and-sum reductions.
    """
    if not use_elementwise(M):
        return M @ M.transpose(-1, -2)
    r = M.shape[-2]
    entries = {}
    for i in range(r):
        for j in range(i, r):
            entries[i, j] = (M[..., i, :] * M[..., j, :]).sum(-1)
    return torch.stack([torch.stack([entries[min(i, j), max(i, j)] for j in range(r)], -1) for i in range(r)], -2)


def weighted_outer_sum(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``einsum("bnik,bnil->bkl", a, b)``: a (B, N, i, k), b (B, N, i, l) -> (B, k, l).

    Element-wise: the (B, N, i, k, l) products summed over N and i in one reduction.
    """
    if not use_elementwise(a):
        return torch.einsum("bnik,bnil->bkl", a, b)
    return (a[..., :, None] * b[..., None, :]).sum((1, 2))
