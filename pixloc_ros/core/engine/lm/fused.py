"""One pyramid level's whole LM loop in fused kernels, without returning to Python per iteration.

``optimize_level_fused`` computes what ``optimizer.optimize_level`` computes (same arguments,
same ``LevelResult``; results equal within float32 round-off, tested) with three Triton kernels
per iteration: the channel pass and the per-point pass of ``lm_kernels`` (cost, gradient and
Gauss-Newton Hessian of all hypotheses), a float64 sum of their per-block partial sums, and
``lm_update`` (damped 6x6 solve, pose update and stop tests per hypothesis). The state (poses,
active mask, counters) lives in device buffers updated in place, so a run of iterations is a
fixed sequence of launches: on CUDA it is captured once as a CUDA graph per segment length and
replayed. Segments end where the host may stop the loop (every ``check_every`` iterations for the
native rule; for the reference rule after iteration 1 and then every 10, i.e. right after each of
its convergence tests at 0-based iterations 0, 10, 20, ...); converged hypotheses stop moving on
the device whatever the segmentation, so the host test only saves time.

No host sync inside a level on CUDA: the small inputs (camera, damping, stop thresholds) go up
from pinned memory without blocking, and the early-stop test reads the "any hypothesis still
active" flag of the segment before the one just queued (copied to pinned memory, waited on with
an event), so the GPU always has the next segment queued; at most one segment of no-op
iterations runs after the last hypothesis stopped (results are unchanged by it).

Shapes are bucketed so that CUDA graphs repeat: the hypotheses are padded to
``hypothesis_bucket(B)`` rows (padding rows are inactive from the start: their points are never
gathered) and the points to ``point_bucket(n, LMConfig.point_bucket)`` (padding points are never
valid). Buffers and graphs are cached per bucket (hypotheses, points, map size, channels,
gradient, stopping rule); the map buffers are shared by every bucket of one map size. Each call
copies its inputs into the cached buffers, so a node whose frames vary within a bucket replays
the graphs captured at warm-up; ``cache_stats`` counts what was built and captured.

On CPU tensors the kernels run in Triton's interpreter (numpy; slow, for tests only; see
``kernels``). Needs the optional ``triton`` package (``requirements/accel.txt``; PyTorch's CUDA
wheels bring it).
"""
from __future__ import annotations

import importlib.util
import math
from collections import OrderedDict
from dataclasses import dataclass

import torch

from ...geometry.camera import Camera
from ..profile import REFERENCE_CHECK_EVERY
from ...geometry.pose import Pose
from .config import LevelResult, orthonormalize

MAX_CACHED = 48  # problem buckets whose buffers and graphs are kept (per process): 3 levels x a few buckets
MIN_HYPOTHESES = 4  # smallest hypothesis bucket: frames with 1-4 hypotheses share their graphs
_CACHE: OrderedDict = OrderedDict()
_MAPS: dict = {}  # (device, H, W, C) -> _MapBuffers, shared by the buckets of one map size
_COUNTS = {"states": 0, "graphs": 0}


@dataclass(frozen=True)
class CacheStats:
    """What the fused LM built in this process (monotonic counters, plus the current cache size)."""

    states_built: int  # buckets whose buffers were allocated (each needs its CUDA graphs captured)
    graphs_captured: int  # CUDA graphs captured (one per segment length and bucket)
    cached: int  # buckets held now (at most MAX_CACHED)


def cache_stats() -> CacheStats:
    """Counters of the bucket cache (a node that re-captured per frame would show it here)."""
    return CacheStats(_COUNTS["states"], _COUNTS["graphs"], len(_CACHE))


def clear_cache() -> None:
    """Drop every cached bucket, map buffer and graph (the counters keep counting)."""
    _CACHE.clear()
    _MAPS.clear()


def triton_available() -> bool:
    """Whether the ``triton`` package can be imported."""
    return importlib.util.find_spec("triton") is not None


def interpreted() -> bool:
    """Whether the kernels were built for Triton's interpreter (``TRITON_INTERPRET=1`` at import)."""
    from triton.runtime.interpreter import InterpretedFunction

    from . import kernels as lm_kernels
    return isinstance(lm_kernels.lm_channels_kernel, InterpretedFunction)


def kernels(device: torch.device):
    """(channel pass, per-point pass, update) kernels for tensors on ``device``: compiled for CUDA;
    on the CPU they exist only in Triton's interpreter, i.e. with ``TRITON_INTERPRET=1`` set before
    triton is first imported (Triton's own library functions, ``tl.sum`` among them, are
    interpreted only then; the tests' conftest sets it on machines without CUDA)."""
    from . import kernels as k
    from . import update_kernel as u
    if device.type != "cuda" and not interpreted():
        raise RuntimeError("the fused LM runs on CUDA tensors; on the CPU only in Triton's interpreter "
                           "(set TRITON_INTERPRET=1 before the process imports triton; for tests)")
    return k.lm_channels_kernel, k.lm_sums_kernel, u.lm_update_kernel


def use_cuda_graphs(device: torch.device) -> bool:
    """Whether the loop is captured as CUDA graphs on ``device`` (CUDA only)."""
    return device.type == "cuda"


def _next_pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def hypothesis_bucket(num_hypotheses: int) -> int:
    """Rows the hypotheses are padded to: the next power of four from ``MIN_HYPOTHESES`` on (4, 16,
    64, 256, ...; padding rows cost almost nothing: their programs load nothing)."""
    bucket = MIN_HYPOTHESES
    while bucket < num_hypotheses:
        bucket *= 4
    return bucket


def point_bucket(num_points: int, granularity: int) -> int:
    """Rows the points are padded to: ``granularity`` (rounded up to the per-point block) times
    the next power of two of the multiples needed; at least one granule (also for 0 points)."""
    from .kernels import BLOCK_N, BLOCK_P
    block = max(BLOCK_N, BLOCK_P)
    granule = max(block, -(-int(granularity) // block) * block)
    return granule * _next_pow2(max(1, -(-int(num_points) // granule)))


def warm_up_shapes(max_points: int, max_hypotheses: int, granularity: int) -> list[tuple[int, int]]:
    """(hypotheses, points) problems that together meet every bucket of frames with 1..max_hypotheses
    hypotheses and 1..max_points points: each bucket's largest size, the last ones capped at the maxima."""
    def sizes(top: int, bucket) -> list[int]:
        out, size = [], 1
        while True:
            size = bucket(size)
            out.append(min(size, top))
            if size >= top:
                return out
            size += 1

    return [(b, n) for b in sizes(max(1, max_hypotheses), hypothesis_bucket)
            for n in sizes(max(1, max_points), lambda k: point_bucket(k, granularity))]


def channel_block(device: torch.device) -> int:
    """Points per program of the channel pass: ``lm_kernels.BLOCK_N`` on a GPU (what ptxas's report
    chose); ``BLOCK_P`` in Triton's interpreter, which runs programs one after the other in Python
    (4x fewer of them; the arithmetic does not depend on the block size)."""
    from .kernels import BLOCK_N, BLOCK_P
    return BLOCK_N if device.type == "cuda" else BLOCK_P


class _MapBuffers:
    """One level's query map in the kernels' layout: table (H*W, C) channels-last, conf (H*W,)."""

    def __init__(self, device: torch.device, H: int, W: int, C: int):
        self.table = torch.zeros(H * W, C, device=device)
        self.conf = torch.zeros(H * W, device=device)


class _FusedLevel:
    """Buffers, state and CUDA graphs of one bucket (see the module docstring)."""

    def __init__(self, device: torch.device, B: int, N: int, H: int, W: int, C: int, central: bool,
                 reference: bool):
        from . import kernels as k
        from . import update_kernel as u

        self.device, self.B, self.N, self.H, self.W, self.C = device, B, N, H, W, C
        self.central, self.reference = central, reference
        self.chunk = k.channel_chunk(C)
        f32, i32, f64 = torch.float32, torch.int32, torch.float64

        def z(*shape, dtype=f32):
            return torch.zeros(*shape, dtype=dtype, device=device)

        key = (str(device), H, W, C)
        if key not in _MAPS:
            _MAPS[key] = _MapBuffers(device, H, W, C)
        self.maps = _MAPS[key]
        # inputs
        self.xyz, self.fref, self.cref, self.ok = z(N, 3), z(N, C), z(N), z(N, dtype=i32)
        self.cam, self.solve = z(k.CAM_SLOTS), z(u.SOLVE_SLOTS, dtype=f64)
        self.R0, self.t0, self.real = z(B, 9), z(B, 3), z(B, dtype=i32)
        # state
        self.R, self.t = z(B, 9), z(B, 3)
        self.active, self.iters, self.step = z(B, dtype=i32), z(B, dtype=i32), z(B, dtype=i32)
        self.singular, self.failed = z(B, dtype=i32), z(B, dtype=i32)
        self.init = z(B, 2, dtype=f64)
        self.record = z(k.REC_SLOTS, B, N)
        self.partials, self.sums = z(B, N // k.BLOCK_P, k.SLOTS), z(B, k.SLOTS, dtype=f64)
        self.w, self.e, self.valid = z(B, N), z(B, N), z(B, N, dtype=i32)
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        if device.type == "cuda":  # the lagged early-stop flags (module docstring)
            self.any_host = torch.zeros(2, dtype=torch.bool).pin_memory()
            self.events = [torch.cuda.Event(), torch.cuda.Event()]
        _COUNTS["states"] += 1

    def load(self, features, conf, xyz, fref, cref, ok, cam, solve, R0, t0) -> None:
        """Copy one call's inputs into the buffers: features (C, H, W), conf (H, W) or None, the
        call's n points and b hypotheses (rows past them stay inert)."""
        C, H, W = features.shape
        self.maps.table.view(H, W, C).copy_(features.permute(1, 2, 0))
        if conf is None:
            self.maps.conf.fill_(1.0)
        else:
            self.maps.conf.view(H, W).copy_(conf.reshape(H, W))
        n, b = xyz.shape[0], R0.shape[0]
        for buf, src in ((self.xyz, xyz), (self.fref, fref), (self.cref, cref), (self.ok, ok)):
            buf[:n].copy_(src)
            buf[n:].zero_()
        non_blocking = self.device.type == "cuda"  # from pinned memory (``_host_inputs``)
        self.cam.copy_(cam, non_blocking=non_blocking)
        self.solve.copy_(solve, non_blocking=non_blocking)
        self.R0[:b].copy_(R0)
        self.t0[:b].copy_(t0)
        if b < self.B:  # padding rows: identity poses, inactive from the start
            self.R0[b:].copy_(torch.eye(3, device=self.device).reshape(9))
            self.t0[b:].zero_()
        self.real[:b].fill_(1)
        self.real[b:].zero_()

    def reset(self) -> None:
        self.R.copy_(self.R0)
        self.t.copy_(self.t0)
        self.active.copy_(self.real)
        for buf in (self.iters, self.step, self.singular, self.failed, self.init):
            buf.zero_()

    def _terms(self, active: torch.Tensor, write_points: bool) -> None:
        from . import kernels as k
        channels, per_point, _ = kernels(self.device)
        maps = self.maps
        block = channel_block(self.device)
        channels[(self.B, self.N // block)](
            self.R, self.t, active, self.xyz, self.fref, self.ok, maps.table, maps.conf, self.cam, self.record,
            self.N, self.W, self.H, C=self.C, CHUNK=self.chunk, BLOCK_N=block, CENTRAL=self.central,
            num_warps=k.NUM_WARPS)
        per_point[(self.B, self.N // k.BLOCK_P)](
            self.R, self.t, active, self.xyz, self.cref, self.ok, self.cam, self.record, self.partials,
            self.w, self.e, self.valid, self.N, self.W, self.H, BLOCK_P=k.BLOCK_P, WRITE_POINTS=write_points,
            num_warps=k.NUM_WARPS)
        torch.sum(self.partials, dim=1, dtype=torch.float64, out=self.sums)

    def iterate(self) -> None:
        """One LM iteration of every hypothesis, in place."""
        self._terms(self.active, False)
        _, _, update = kernels(self.device)
        update[(self.B,)](self.sums, self.R, self.t, self.active, self.iters, self.step, self.singular,
                          self.failed, self.init, self.solve, REFERENCE=self.reference,
                          CHECK_EVERY=REFERENCE_CHECK_EVERY, num_warps=1)

    def evaluate_final(self) -> None:
        """Cost, gradient, Hessian and per-point weights of every real hypothesis at the current poses."""
        self._terms(self.real, True)

    def run(self, segments: list[int], graphs: bool) -> None:
        """Run the segments (iteration counts) in order, stopping early once no hypothesis moves
        (on CUDA judged one segment late, without draining the queue: module docstring)."""
        if graphs:
            missing = sorted({n for n in segments if n not in self.graphs})
            if missing:
                self._capture(missing)
        lagged = self.device.type == "cuda"
        pending = None
        for i, n in enumerate(segments):
            if graphs:
                self.graphs[n].replay()
            else:
                for _ in range(n):
                    self.iterate()
            if not lagged:
                if not bool(self.active.any()):  # CPU: the arithmetic is synchronous anyway
                    break
                continue
            slot = i % 2
            self.any_host[slot:slot + 1].copy_(self.active.any().reshape(1), non_blocking=True)
            self.events[slot].record()
            if pending is not None:
                self.events[pending].synchronize()  # the previous segment's flag; this one stays queued
                if not bool(self.any_host[pending]):
                    break
            pending = slot

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
            _COUNTS["graphs"] += 1


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
        if len(_CACHE) > MAX_CACHED:
            while len(_CACHE) > MAX_CACHED:
                _CACHE.popitem(last=False)
            used = {(str(s.device), s.H, s.W, s.C) for s in _CACHE.values()}
            for stale in [k for k in _MAPS if k not in used]:  # map buffers no cached bucket uses
                del _MAPS[stale]
    else:
        _CACHE.move_to_end(key)
    return state


def bucket_key(device: torch.device, num_hypotheses: int, num_points: int, features_shape, config) -> tuple:
    """The cache key of a problem: (device, hypothesis bucket, point bucket, H, W, C, central, reference)."""
    C, H, W = (int(v) for v in tuple(features_shape)[-3:])
    return (str(device), hypothesis_bucket(num_hypotheses), point_bucket(num_points, config.point_bucket),
            H, W, C, config.gradient == "central", config.stopping == "reference")


def _host_inputs(camera: Camera, damping: torch.Tensor, config, device: torch.device):
    """The camera slots and solve parameters as float32 / float64 tensors ready to copy to ``device``
    without a host sync: pinned CPU tensors for CUDA (damping read on the host only when it is
    there already; a device damping is joined on the device)."""
    cam = camera.to(device="cpu", dtype=torch.float64)
    values = [float(v) for v in cam.f.reshape(-1)] + [float(v) for v in cam.c.reshape(-1)]
    values += [float(v) for v in cam.dist.reshape(-1)] + [float(cam.max_r2.reshape(()))]
    values += [float(config.pad), 2 * config.cauchy_scale ** 2]
    rest = [config.lambda_min, config.stop_dt, math.radians(config.stop_dw_deg), config.grad_stop,
            float(config.min_valid_points)]
    cam_t = torch.tensor(values, dtype=torch.float32)
    if damping.device.type == "cpu":
        solve = torch.cat([damping.reshape(-1).double(), torch.tensor(rest, dtype=torch.float64)])
    else:
        solve = torch.tensor(rest, dtype=torch.float64)
    if device.type == "cuda":
        cam_t, solve = cam_t.pin_memory(), solve.pin_memory()
    if damping.device.type != "cpu":
        solve = torch.cat([damping.reshape(-1).to(device, torch.float64), solve.to(device, non_blocking=True)])
    return cam_t, solve


def optimize_level_fused(features: torch.Tensor, confidence: torch.Tensor | None, xyz: torch.Tensor,
                         ref_features: torch.Tensor, ref_confidence: torch.Tensor | None, camera: Camera,
                         init: Pose, damping: torch.Tensor, config, graphs: bool | None = None):
    """``optimizer.optimize_level`` through the fused kernels (arguments and result alike; see there).

    Supports reference features shared by all hypotheses ((N, C)), float32 arithmetic, no
    autograd. ``graphs``: capture and replay CUDA graphs (default: ``use_cuda_graphs``). Pass
    ``damping`` on the CPU to keep the call free of host syncs (a CUDA damping costs none either,
    it is joined on the device).
    """
    from . import kernels as k

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
    graphs = use_cuda_graphs(device) if graphs is None else bool(graphs)
    f32 = torch.float32
    b = init.shape[0]
    n = xyz.shape[0]
    key = bucket_key(device, b, n, features.shape, config)
    state = _level_state(device, *key[1:])
    B, N = state.B, state.N

    with torch.no_grad():
        finite = torch.isfinite(xyz).all(-1)
        pts = torch.where(finite[:, None], xyz, torch.zeros_like(xyz)).to(f32)
        c_ref = torch.ones(n, device=device) if ref_confidence is None else ref_confidence.to(f32)
        c_ref = torch.where(finite, c_ref, torch.zeros_like(c_ref))
        cam_t, solve = _host_inputs(camera, damping, config, device)
        state.load(features.to(f32), None if confidence is None else confidence.to(f32), pts,
                   ref_features.to(f32), c_ref, finite.to(torch.int32), cam_t, solve,
                   init.R.to(device=device, dtype=f32).reshape(b, 9), init.t.to(device=device, dtype=f32))
        segments = segments_of(config.num_iters, config.stopping == "reference", config.check_every)
        if graphs and any(s not in state.graphs for s in segments):
            state._capture(sorted({s for s in segments if s not in state.graphs}))
        state.reset()
        state.run(segments, graphs)
        iterations_run = bool(segments)
        R = orthonormalize(state.R.view(B, 3, 3).clone())
        state.R.copy_(R.reshape(B, 9))
        state.evaluate_final()
        sums = state.sums[:b].clone()
        init_sums = state.init[:b].clone() if iterations_run else sums[:, [k.SLOT_COST, k.SLOT_VALID]]

    g = sums[:, k.SLOT_G:k.SLOT_G + 6]
    upper = sums[:, k.SLOT_H:k.SLOT_H + 21]
    rows, cols = torch.triu_indices(6, 6, device=device)
    Hm = torch.zeros(b, 6, 6, dtype=torch.float64, device=device)
    Hm[:, rows, cols] = upper
    Hm[:, cols, rows] = upper
    num_valid = sums[:, k.SLOT_VALID].round().long()
    num_valid_init = init_sums[:, 1].round().long()

    def mean_cost(cost_sum: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
        return torch.where(count > 0, cost_sum.to(f32) / count.clamp(min=1),
                           torch.full_like(cost_sum, math.inf, dtype=f32))

    active = state.active[:b].bool()
    failed = state.failed[:b].bool()
    return LevelResult(
        cam_from_world=Pose(R[:b], state.t[:b].clone()),
        cost=mean_cost(sums[:, k.SLOT_COST], num_valid),
        initial_cost=mean_cost(init_sums[:, 0], num_valid_init),
        num_valid=num_valid,
        num_valid_initial=num_valid_init,
        iterations=state.iters[:b].long(),
        converged=~active & ~failed,
        hessian=Hm,
        gradient=g.clone(),
        weighted_sq_residual=sums[:, k.SLOT_WE].clone(),
        num_channels=C,
        weights=state.w[:b, :n].clone(),
        inlier_ratio=(sums[:, k.SLOT_INLIERS] / num_valid.clamp(min=1)).to(f32),
        singular=state.singular[:b].bool(),
        failed=failed,
    )


__all__ = ["optimize_level_fused", "triton_available", "interpreted", "segments_of", "hypothesis_bucket",
           "point_bucket", "bucket_key", "cache_stats", "clear_cache", "CacheStats", "use_cuda_graphs",
           "channel_block", "warm_up_shapes"]
