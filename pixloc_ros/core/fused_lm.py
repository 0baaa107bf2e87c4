"""One pyramid level's whole LM loop in fused kernels, without returning to Python per iteration.

``optimize_level_fused`` computes what ``optimizer.optimize_level`` computes (same arguments,
same ``LevelResult``; results equal within float32 round-off, tested) with two Triton kernels
per iteration (``lm_kernels``): one pass over all points of all hypotheses for the cost,
gradient and Gauss-Newton Hessian, a float64 sum of the per-block partial sums, and one pass
over the hypotheses for the damped 6x6 solve, the pose update and the stop tests. The state
(poses, active mask, counters) lives in device buffers updated in place, so a run of iterations
is a fixed sequence of launches: on CUDA it is captured once as a CUDA graph per segment length
and replayed. Segments end where the host may stop the loop (every ``check_every`` iterations
for the native rule; for the reference rule after iteration 1 and then every 10, i.e. right
after each of its convergence tests at 0-based iterations 0, 10, 20, ...); converged hypotheses
stop moving on the device whatever the segmentation, so the host test only saves time.

Graphs, buffers and compiled kernels are cached per problem shape (hypotheses, points padded to
``LMConfig.point_bucket``, map size, channels, gradient, stopping rule); each call copies its
inputs into the cached buffers, so a node that sees the same shapes frame after frame replays
the same graphs. Camera, pad and damping are device-side inputs, not captured constants.

On CPU tensors the kernels run in Triton's interpreter (numpy; slow, for tests only; see
``kernels``). Needs the optional ``triton`` package (``requirements/accel.txt``; PyTorch's CUDA
wheels bring it).
"""
from __future__ import annotations

import importlib.util
import math
from collections import OrderedDict

import torch

from .camera import Camera
from .engine_profile import REFERENCE_CHECK_EVERY
from .geometry import Pose

MAX_CACHED = 8  # problem shapes whose buffers and graphs are kept (per process)
_CACHE: OrderedDict = OrderedDict()


def triton_available() -> bool:
    """Whether the ``triton`` package can be imported."""
    return importlib.util.find_spec("triton") is not None


def interpreted() -> bool:
    """Whether the kernels were built for Triton's interpreter (``TRITON_INTERPRET=1`` at import)."""
    from triton.runtime.interpreter import InterpretedFunction

    from . import lm_kernels
    return isinstance(lm_kernels.lm_terms_kernel, InterpretedFunction)


def kernels(device: torch.device):
    """(terms kernel, update kernel) for tensors on ``device``: compiled for CUDA; on the CPU they
    exist only in Triton's interpreter, i.e. with ``TRITON_INTERPRET=1`` set before triton is
    first imported (Triton's own library functions, ``tl.sum`` among them, are interpreted only
    then; the tests' conftest sets it on machines without CUDA)."""
    from . import lm_kernels as k
    if device.type != "cuda" and not interpreted():
        raise RuntimeError("the fused LM runs on CUDA tensors; on the CPU only in Triton's interpreter "
                           "(set TRITON_INTERPRET=1 before the process imports triton; for tests)")
    return k.lm_terms_kernel, k.lm_update_kernel


def _next_pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def block_points(channels: int) -> int:
    """Points per program: about 4096 channel values in registers per tap (32 x 128, 128 x 32)."""
    return max(8, min(128, 4096 // _next_pow2(channels)))


class _FusedLevel:
    """Buffers, state and CUDA graphs of one problem shape (see the module docstring)."""

    def __init__(self, device: torch.device, B: int, N: int, H: int, W: int, C: int, central: bool,
                 reference: bool):
        from . import lm_kernels as k

        self.device, self.B, self.N, self.H, self.W, self.C = device, B, N, H, W, C
        self.central, self.reference = central, reference
        self.CP = _next_pow2(C)
        self.block = block_points(C)
        self.NB = N // self.block
        f32, i32, f64 = torch.float32, torch.int32, torch.float64

        def z(*shape, dtype=f32):
            return torch.zeros(*shape, dtype=dtype, device=device)

        # inputs
        self.table, self.conf = z(H * W, C), z(H * W)
        self.xyz, self.fref, self.cref, self.ok = z(N, 3), z(N, C), z(N), z(N, dtype=i32)
        self.cam, self.solve = z(k.CAM_SLOTS), z(k.SOLVE_SLOTS, dtype=f64)
        self.R0, self.t0 = z(B, 9), z(B, 3)
        # state
        self.R, self.t = z(B, 9), z(B, 3)
        self.active, self.iters, self.step = z(B, dtype=i32), z(B, dtype=i32), z(B, dtype=i32)
        self.singular, self.failed = z(B, dtype=i32), z(B, dtype=i32)
        self.init = z(B, 2, dtype=f64)
        self.partials, self.sums = z(B, self.NB, k.SLOTS), z(B, k.SLOTS, dtype=f64)
        self.w, self.e, self.valid = z(B, N), z(B, N), z(B, N, dtype=i32)
        self.all_active = torch.ones(B, dtype=i32, device=device)
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}

    def load(self, table, conf, xyz, fref, cref, ok, cam, solve, R0, t0) -> None:
        """Copy one call's inputs into the buffers (rows past the call's points stay inert)."""
        n = xyz.shape[0]
        self.table.copy_(table)
        self.conf.copy_(conf)
        for buf, src in ((self.xyz, xyz), (self.fref, fref), (self.cref, cref), (self.ok, ok)):
            buf[:n].copy_(src)
            buf[n:].zero_()
        self.cam.copy_(cam)
        self.solve.copy_(solve)
        self.R0.copy_(R0)
        self.t0.copy_(t0)

    def reset(self) -> None:
        self.R.copy_(self.R0)
        self.t.copy_(self.t0)
        self.active.fill_(1)
        for buf in (self.iters, self.step, self.singular, self.failed, self.init):
            buf.zero_()

    def _terms(self, active: torch.Tensor, skip_inactive: bool, write_points: bool) -> None:
        terms, _ = kernels(self.device)
        terms[(self.B, self.NB)](
            self.R, self.t, active, self.xyz, self.fref, self.cref, self.ok, self.table, self.conf,
            self.cam, self.partials, self.w, self.e, self.valid, self.N, self.W, self.H,
            C=self.C, CP=self.CP, BLOCK_N=self.block, CENTRAL=self.central,
            SKIP_INACTIVE=skip_inactive, WRITE_POINTS=write_points)
        torch.sum(self.partials, dim=1, dtype=torch.float64, out=self.sums)

    def iterate(self) -> None:
        """One LM iteration of every hypothesis, in place."""
        self._terms(self.active, True, False)
        _, update = kernels(self.device)
        update[(self.B,)](self.sums, self.R, self.t, self.active, self.iters, self.step, self.singular,
                          self.failed, self.init, self.solve, REFERENCE=self.reference,
                          CHECK_EVERY=REFERENCE_CHECK_EVERY)

    def evaluate_final(self) -> None:
        """Cost, gradient, Hessian and per-point weights of every hypothesis at the current poses."""
        self._terms(self.all_active, False, True)

    def run(self, segments: list[int], graphs: bool) -> None:
        """Run the segments (iteration counts) in order, stopping early once no hypothesis moves."""
        if graphs:
            missing = sorted({n for n in segments if n not in self.graphs})
            if missing:
                self._capture(missing)
        for n in segments:
            if graphs:
                self.graphs[n].replay()
            else:
                for _ in range(n):
                    self.iterate()
            if not bool(self.active.any()):  # the only host sync, once per segment
                break

    def _capture(self, lengths: list[int]) -> None:
        # Warm up (compiles the kernels) on a side stream, as CUDA graph capture requires; the
        # state it moves is reset by the caller's ``reset`` after capture (capture runs nothing).
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            self.iterate()
            self.evaluate_final()
        torch.cuda.current_stream(self.device).wait_stream(stream)
        for n in lengths:
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                for _ in range(n):
                    self.iterate()
            self.graphs[n] = graph


def segments_of(num_iters: int, reference: bool, check_every: int) -> list[int]:
    """Iteration counts between host checks: reference [1, 10, 10, ..., rest], native [k, k, ..., rest]."""
    if num_iters <= 0:
        return []
    if reference:
        out, left = [1], num_iters - 1
        every = REFERENCE_CHECK_EVERY
    else:
        out, left = [], num_iters
        every = max(1, int(check_every))
    while left > 0:
        out.append(min(every, left))
        left -= out[-1]
    return out


def _level_state(device, B, N, H, W, C, central, reference) -> _FusedLevel:
    key = (str(device), B, N, H, W, C, central, reference)
    state = _CACHE.get(key)
    if state is None:
        state = _CACHE[key] = _FusedLevel(device, B, N, H, W, C, central, reference)
        while len(_CACHE) > MAX_CACHED:
            _CACHE.popitem(last=False)
    else:
        _CACHE.move_to_end(key)
    return state


def optimize_level_fused(features: torch.Tensor, confidence: torch.Tensor | None, xyz: torch.Tensor,
                         ref_features: torch.Tensor, ref_confidence: torch.Tensor | None, camera: Camera,
                         init: Pose, damping: torch.Tensor, config, graphs: bool | None = None):
    """``optimizer.optimize_level`` through the fused kernels (arguments and result alike; see there).

    Supports reference features shared by all hypotheses ((N, C)), float32 arithmetic, no
    autograd. ``graphs``: capture and replay CUDA graphs (default: on CUDA).
    """
    from . import lm_kernels as k
    from .optimizer import LevelResult, _orthonormalize

    if init.shape == ():
        init = init[None]
    if len(init.shape) != 1:
        raise ValueError(f"init must be a Pose of batch shape (B,), got {tuple(init.shape)}")
    if features.ndim == 4:
        if features.shape[0] != 1:
            raise ValueError(f"one query map per level expected, got {tuple(features.shape)}")
        features = features[0]
    C, H, W = features.shape
    if ref_features.ndim != 2 or tuple(ref_features.shape) != (xyz.shape[0], C):
        raise ValueError(f"the fused LM takes reference features (N, C) = ({xyz.shape[0]}, {C}) shared by "
                         f"all hypotheses, got {tuple(ref_features.shape)}")
    if H < 2 or W < 2:
        raise ValueError(f"map of size {H}x{W} is too small to interpolate (needs >= 2x2)")
    device = xyz.device
    graphs = device.type == "cuda" if graphs is None else bool(graphs and device.type == "cuda")
    f32 = torch.float32
    B = init.shape[0]
    n = xyz.shape[0]
    block = block_points(C)
    bucket = max(block, int(config.point_bucket) if device.type == "cuda" else block)
    bucket = -(-bucket // block) * block
    N = max(bucket, -(-n // bucket) * bucket)
    central = config.gradient == "central"
    reference = config.stopping == "reference"
    state = _level_state(device, B, N, H, W, C, central, reference)

    with torch.no_grad():
        table = features.permute(1, 2, 0).reshape(H * W, C)
        conf = (torch.ones(H * W, device=device) if confidence is None else confidence.reshape(H * W))
        finite = torch.isfinite(xyz).all(-1)
        pts = torch.where(finite[:, None], xyz, torch.zeros_like(xyz)).to(f32)
        c_ref = torch.ones(n, device=device) if ref_confidence is None else ref_confidence.to(f32)
        c_ref = torch.where(finite, c_ref, torch.zeros_like(c_ref))
        cam = camera.to(device="cpu", dtype=torch.float64)
        values = [float(v) for v in cam.f.reshape(-1)] + [float(v) for v in cam.c.reshape(-1)]
        values += [float(v) for v in cam.dist.reshape(-1)] + [float(cam.max_r2.reshape(()))]
        values += [float(config.pad), 2 * config.cauchy_scale ** 2]
        cam_t = torch.tensor(values, dtype=f32).to(device)
        solve = torch.tensor([*(float(v) for v in damping.reshape(-1)), config.lambda_min, config.stop_dt,
                              math.radians(config.stop_dw_deg), config.grad_stop, float(config.min_valid_points)],
                             dtype=torch.float64).to(device)
        state.load(table, conf, pts, ref_features, c_ref, finite.to(torch.int32), cam_t, solve,
                   init.R.to(device=device, dtype=f32).reshape(B, 9), init.t.to(device=device, dtype=f32))
        segments = segments_of(config.num_iters, reference, config.check_every)
        if graphs and any(s not in state.graphs for s in segments):
            state._capture(sorted({s for s in segments if s not in state.graphs}))
        state.reset()
        state.run(segments, graphs)
        iterations_run = bool(segments)
        R = _orthonormalize(state.R.view(B, 3, 3).clone())
        state.R.copy_(R.reshape(B, 9))
        state.evaluate_final()
        sums = state.sums.clone()
        init_sums = state.init.clone() if iterations_run else sums[:, [k.SLOT_COST, k.SLOT_VALID]]

    g = sums[:, k.SLOT_G:k.SLOT_G + 6]
    upper = sums[:, k.SLOT_H:k.SLOT_H + 21]
    rows, cols = torch.triu_indices(6, 6, device=device)
    Hm = torch.zeros(B, 6, 6, dtype=torch.float64, device=device)
    Hm[:, rows, cols] = upper
    Hm[:, cols, rows] = upper
    num_valid = sums[:, k.SLOT_VALID].round().long()
    num_valid_init = init_sums[:, 1].round().long()

    def mean_cost(cost_sum: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
        return torch.where(count > 0, cost_sum.to(f32) / count.clamp(min=1),
                           torch.full_like(cost_sum, math.inf, dtype=f32))

    active = state.active.bool()
    failed = state.failed.bool()
    return LevelResult(
        cam_from_world=Pose(R, state.t.clone()),
        cost=mean_cost(sums[:, k.SLOT_COST], num_valid),
        initial_cost=mean_cost(init_sums[:, 0], num_valid_init),
        num_valid=num_valid,
        num_valid_initial=num_valid_init,
        iterations=state.iters.long(),
        converged=~active & ~failed,
        hessian=Hm,
        gradient=g.clone(),
        weighted_sq_residual=sums[:, k.SLOT_WE].clone(),
        num_channels=C,
        weights=state.w[:, :n].clone(),
        inlier_ratio=(sums[:, k.SLOT_INLIERS] / num_valid.clamp(min=1)).to(f32),
        singular=state.singular.bool(),
        failed=failed,
    )


__all__ = ["optimize_level_fused", "triton_available", "interpreted", "segments_of", "block_points"]
