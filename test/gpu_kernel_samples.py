"""Kernels for test_gpu_kernels.py (scripts/check_gpu_kernels.py --variants): one reads a plain float
global (Triton refuses it when compiling for a GPU; its interpreter runs it), one the same value
as a tl.constexpr, one keeps a [64, 128] tile per warp live (spills)."""
from dataclasses import dataclass

import triton
import triton.language as tl

SCALE = 2.0
SCALE_CONSTEXPR = tl.constexpr(2.0)


@triton.jit
def plain_global_kernel(x_ptr, N, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(x_ptr + offs, tl.load(x_ptr + offs, mask=offs < N) * SCALE, mask=offs < N)


@triton.jit
def constexpr_global_kernel(x_ptr, N, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(x_ptr + offs, tl.load(x_ptr + offs, mask=offs < N) * SCALE_CONSTEXPR, mask=offs < N)


@triton.jit
def spilling_kernel(x_ptr, ROWS: tl.constexpr, COLS: tl.constexpr):
    r = tl.arange(0, ROWS)[:, None]
    c = tl.arange(0, COLS)[None, :]
    x = tl.load(x_ptr + r * COLS + c)
    y = x * tl.sum(x * x, axis=1)[:, None] + tl.sum(x, axis=0)[None, :]
    tl.store(x_ptr + r * COLS + c, y * x)


@dataclass(frozen=True)
class Variant:
    kernel: object
    name: str
    signature: dict
    constexprs: dict
    aligned: tuple
    num_warps: int


def variants():
    sig = {"x_ptr": "*fp32", "N": "i32", "BLOCK": "constexpr"}
    return [Variant(plain_global_kernel, "plain_global", sig, {"BLOCK": 128}, ("x_ptr",), 4),
            Variant(constexpr_global_kernel, "constexpr_global", sig, {"BLOCK": 128}, ("x_ptr",), 4),
            Variant(spilling_kernel, "spilling", {"x_ptr": "*fp32", "ROWS": "constexpr", "COLS": "constexpr"},
                    {"ROWS": 64, "COLS": 128}, ("x_ptr",), 1)]
