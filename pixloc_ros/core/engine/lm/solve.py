"""The damped 6x6 solve of every LM step (``optimizer``; ``update_kernel`` unrolls the same in
Triton): ``damped_solve`` and the unrolled ``cholesky_solve_spd`` that torch.compile fuses."""
from __future__ import annotations

import torch


def cholesky_solve_spd(A: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Solve ``A x = b`` for small batched symmetric positive-definite ``A`` by an unrolled Cholesky.

    A (..., n, n), b (..., n) -> (x (..., n), ok (...) bool: every pivot positive and finite).
    Where ``ok`` is False, x is garbage-free but meaningless (pivots are clamped): callers mask it.
    Hand-written for torch.compile: torch.linalg's factorizations stay opaque library calls
    (MAGMA/cuSOLVER on CUDA) in a compiled graph, while these element-wise ops fuse with the rest
    of the LM iteration. Autograd flows through them (training differentiates the damped step).
    """
    n = A.shape[-1]
    tiny = torch.finfo(A.dtype).tiny
    cols: list[torch.Tensor] = []  # cols[j] = column j of L, (..., n), zeros above the diagonal
    diag: list[torch.Tensor] = []
    ok = torch.isfinite(A).all(-1).all(-1) & torch.isfinite(b).all(-1)
    rows = torch.arange(n, device=A.device)
    for j in range(n):
        v = A[..., :, j]
        for k in range(j):
            v = v - cols[k] * cols[k][..., j:j + 1]
        pivot = v[..., j]
        ok = ok & (pivot > 0)
        d = torch.sqrt(pivot.clamp(min=tiny))
        cols.append(torch.where(rows >= j, v / d[..., None], torch.zeros_like(v)))
        diag.append(d)
    # Forward substitution L y = b, then back substitution L^T x = y (L[i, k] = cols[k][..., i]).
    y: list[torch.Tensor] = []
    for i in range(n):
        acc = b[..., i]
        for k in range(i):
            acc = acc - cols[k][..., i] * y[k]
        y.append(acc / diag[i])
    x: list[torch.Tensor] = [torch.zeros_like(y[0])] * n
    for i in reversed(range(n)):
        acc = y[i]
        for k in range(i + 1, n):
            acc = acc - cols[i][..., k] * x[k]
        x[i] = acc / diag[i]
    return torch.stack(x, -1), ok


def damped_solve(H: torch.Tensor, g: torch.Tensor, damping: torch.Tensor, lambda_min: float
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """``delta = -(H + diag(max(damping * diag(H), lambda_min)))^-1 g`` without raising.

    H (B, 6, 6), g (B, 6), damping (6,) -> (delta (B, 6) in H's dtype, ok (B,) bool). Solved in
    float64 by Cholesky (``torch.linalg``; ``cholesky_solve_spd`` under torch.compile). The damped
    system of a Gauss-Newton Hessian is positive definite (the ``lambda_min`` floor); where it is
    not (non-finite entries, roundoff on huge values, an indefinite H) ``ok`` is False and the
    step is 0.
    """
    Hd = H.double()
    gd = g.double()
    diag = Hd.diagonal(dim1=-2, dim2=-1)
    Hd = Hd + torch.diag_embed((damping.double() * diag).clamp(min=lambda_min))
    finite = torch.isfinite(Hd).all(-1).all(-1) & torch.isfinite(gd).all(-1)
    eye = torch.eye(6, dtype=Hd.dtype, device=Hd.device)
    A = torch.where(finite[:, None, None], Hd, eye)
    b = torch.where(finite[:, None], gd, torch.zeros_like(gd))
    if torch.compiler.is_compiling():
        # Under torch.compile the unrolled factorization fuses into the iteration's kernels.
        x, ok = cholesky_solve_spd(A, b)
    else:
        # Eager: library calls (LAPACK on the CPU); on CUDA the unrolled version's ~130 small
        # kernel launches made the eager LM 17% slower on an H100 (BENCHMARKS.md).
        L, info = torch.linalg.cholesky_ex(A)
        x = torch.cholesky_solve(b[..., None], L)[..., 0]
        ok = info == 0
    ok = ok & finite & torch.isfinite(x).all(-1)
    delta = torch.where(ok[:, None], -x, torch.zeros_like(x))
    return delta.to(H.dtype), ok
