"""The compiled forms of the fused LM's Triton kernels, as ``fused_lm`` launches them on a GPU:
the list ``scripts/check_gpu_kernels.py`` compiles for each target (registers, spills) and
``gpu_bench.sh``'s pre-flight reports. Keep it in step with ``fused_lm._FusedLevel._terms`` and
``iterate`` (a test compares the constexpr values with what a launch passes).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..profile import REFERENCE_CHECK_EVERY


@dataclass(frozen=True)
class KernelVariant:
    """One compiled form of a kernel as this module launches it on a GPU (for ahead-of-time checks:
    ``scripts/check_gpu_kernels.py``). ``signature`` maps every argument to a Triton type string
    ("*fp32", "i32", "constexpr"), ``constexprs`` gives the constexpr values, ``aligned`` names the
    arguments a launch sees divisible by 16 (buffers are whole tensors; N is a multiple of 128)."""

    kernel: object  # the @triton.jit function
    name: str  # "lm_channels_kernel[C=128,CENTRAL=1]"
    signature: dict
    constexprs: dict
    aligned: tuple
    num_warps: int


def kernel_variants(channels: tuple[int, ...] = (32, 128)) -> list[KernelVariant]:
    """Every (kernel, constexpr values) combination ``optimize_level_fused`` launches on CUDA for
    maps of ``channels`` channels (PixLoc's levels: 32 and 128): both image gradients, with and
    without the per-point outputs, both stopping rules."""
    from . import kernels as k
    from . import update_kernel as u

    def make(kernel, types: dict, constexprs: dict, num_warps: int) -> KernelVariant:
        sig = {name: ("constexpr" if name in constexprs else types.get(name, "*fp32")) for name in kernel.arg_names}
        label = ",".join(f"{n}={int(v) if isinstance(v, bool) else v}" for n, v in constexprs.items())
        aligned = tuple(n for n, t in sig.items() if t.startswith("*") or n == "N")
        return KernelVariant(kernel, f"{kernel.__name__}[{label}]", sig, dict(constexprs), aligned, num_warps)

    ints = {"active_ptr": "*i32", "ok_ptr": "*i32", "valid_out_ptr": "*i32", "N": "i32", "W": "i32", "H": "i32"}
    out = []
    for C in channels:
        for central in (False, True):
            out.append(make(k.lm_channels_kernel, ints, dict(C=C, CHUNK=k.channel_chunk(C), BLOCK_N=k.BLOCK_N,
                                                             CENTRAL=central), k.NUM_WARPS))
    for write in (False, True):
        out.append(make(k.lm_sums_kernel, ints, dict(BLOCK_P=k.BLOCK_P, WRITE_POINTS=write), k.NUM_WARPS))
    update_types = {n: "*i32" for n in u.lm_update_kernel.arg_names}
    update_types.update(sums_ptr="*fp64", init_ptr="*fp64", solve_ptr="*fp64", R_ptr="*fp32", t_ptr="*fp32")
    for reference in (False, True):
        out.append(make(u.lm_update_kernel, update_types, dict(REFERENCE=reference, CHECK_EVERY=REFERENCE_CHECK_EVERY),
                        1))
    return out


__all__ = ["KernelVariant", "kernel_variants"]
