"""Triton kernels of the per-point terms of one LM iteration, for all hypotheses at once, in two
passes (``fused_lm`` drives them; ``lm_update`` holds the solve and pose update that follow).

The arithmetic is ``optimizer.LevelProblem.evaluate`` written per point (equations: the
``optimizer`` module docstring). ``J^T J = A^T (G^T G) A`` and ``J^T r = A^T (G^T r)`` with
``G = dF/dp`` (C x 2) and ``A = dp/dxi`` (2 x 6), so the channels meet the pose only through five
numbers per point: ``|r|^2``, ``G^T r`` (2) and ``G^T G`` (3). Hence the split:

1. ``lm_channels_kernel`` (the channel reduction), grid (B, N / BLOCK_N): projects BLOCK_N points
   of hypothesis b, gathers the bilinear taps of their valid projections in [BLOCK_N, CHUNK]
   tiles, looping over the channels CHUNK at a time, and writes per point the five reductions and
   the query confidence to a record (REC_SLOTS, B, N). Tiles stay small whatever C is (a
   [BLOCK_N, C] tile at C = 128 spilled 30-47 KB per thread, BENCHMARKS.md), and only the few
   per-point values of the projection live beside them.
2. ``lm_sums_kernel`` (the per-point pass), grid (B, N / BLOCK_P), one point per thread: projects
   again (cheaper than storing the 12 Jacobian entries), forms the robust weight, the 6x1 and
   6x6 terms and the cost, and adds its points' shares into one row of a partial-sum buffer.

Kernels are compiled for CUDA tensors; under ``TRITON_INTERPRET=1`` (or for CPU tensors, see
``fused_lm.kernels``) Triton's interpreter runs the same source with numpy, which is how the
tests check the arithmetic on a machine without a GPU; ``scripts/check_gpu_kernels.py`` compiles
every variant for real GPU targets (registers, spills). Module-level constants a kernel reads
must be ``tl.constexpr`` (Triton refuses other globals when compiling; its interpreter does not).

Layouts (all contiguous):
- pose state: R (B, 9) float32 row-major, t (B, 3) float32, active (B,) int32;
- points: xyz (N, 3), f_ref (N, C), c_ref (N,), point_ok (N,) int32 (0: never valid, e.g. padding);
- query map: table (H*W, C) channels-last, conf (H*W,);
- cam (CAM_SLOTS,) float32: fx fy cx cy k1 k2 p1 p2 k3 max_r2 pad two_c2 (device-side, so a
  CUDA graph captured once serves any camera and pad of the same shapes);
- record (REC_SLOTS, B, N) float32: e, G^T r (2), G^T G (00 01 11), query confidence;
- partials (B, NB, SLOTS) float32, summed over NB by the caller into (B, SLOTS) float64.
Hand-written: no library offers this fused form (torch.compile's kernels materialise the
per-point matrices and return to Python every iteration, BENCHMARKS.md).
"""
from __future__ import annotations

import triton
import triton.language as tl

# Slots of the per-hypothesis sums (partials and sums).
SLOT_G = 0  # 6: g = sum w J^T r, order [t, w]
SLOT_H = 6  # 21: upper triangle of H = sum w J^T J, row by row (00 01 .. 05 11 .. 55)
SLOT_COST = 27  # sum of rho(e) over valid points
SLOT_VALID = 28  # number of valid points
SLOT_WE = 29  # sum over valid points of w e (the residual variance's numerator)
SLOT_INLIERS = 30  # valid points with e <= 2 c^2 (rho' >= 0.5)
SLOTS = 32
CAM_SLOTS = 12
REC_SLOTS = 7  # per point and hypothesis: e, gr0, gr1, g00, g01, g11, conf_q
MIN_DEPTH = tl.constexpr(1e-3)  # camera.MIN_DEPTH (repeated: a kernel constant)

# Block sizes, chosen by ptxas's report (scripts/check_gpu_kernels.py, BENCHMARKS.md): with 4 warps
# a [16, 32] tile is one float4 per thread and tap (each point's 32 channels one 128-byte line):
# 56-96 registers on sm_80-sm_90 and no spills; [32, 32] needed 95-174, [64, 32] spilled.
BLOCK_N = 16  # points per program of the channel pass
CHUNK = 32  # channels per tile of the channel pass (at most: min(CHUNK, next power of 2 of C))
BLOCK_P = 128  # points per program of the per-point pass: one per thread with 4 warps
NUM_WARPS = 4


def channel_chunk(channels: int) -> int:
    """Channels per tile of the channel pass: ``CHUNK``, or the next power of two of fewer channels."""
    return min(CHUNK, 1 << max(0, (int(channels) - 1).bit_length()))


@triton.jit
def _camera_points(R_ptr, t_ptr, cam_ptr, xyz_ptr, b, offs, inb):
    """Points offs of the pose of hypothesis b in the camera frame, their projection and the
    distortion terms (camera.world2image_with_jacobian): px py pz, u v, visible, and for the
    Jacobian iz (1 / depth), nx ny, radial, d_radial, and the camera's fx fy p1 p2."""
    fx = tl.load(cam_ptr + 0)
    fy = tl.load(cam_ptr + 1)
    cx = tl.load(cam_ptr + 2)
    cy = tl.load(cam_ptr + 3)
    k1 = tl.load(cam_ptr + 4)
    k2 = tl.load(cam_ptr + 5)
    p1 = tl.load(cam_ptr + 6)
    p2 = tl.load(cam_ptr + 7)
    k3 = tl.load(cam_ptr + 8)
    max_r2 = tl.load(cam_ptr + 9)
    X = tl.load(xyz_ptr + offs * 3 + 0, mask=inb, other=0.0)
    Y = tl.load(xyz_ptr + offs * 3 + 1, mask=inb, other=0.0)
    Z = tl.load(xyz_ptr + offs * 3 + 2, mask=inb, other=0.0)
    px = tl.load(R_ptr + b * 9 + 0) * X + tl.load(R_ptr + b * 9 + 1) * Y + tl.load(R_ptr + b * 9 + 2) * Z
    py = tl.load(R_ptr + b * 9 + 3) * X + tl.load(R_ptr + b * 9 + 4) * Y + tl.load(R_ptr + b * 9 + 5) * Z
    pz = tl.load(R_ptr + b * 9 + 6) * X + tl.load(R_ptr + b * 9 + 7) * Y + tl.load(R_ptr + b * 9 + 8) * Z
    px += tl.load(t_ptr + b * 3 + 0)
    py += tl.load(t_ptr + b * 3 + 1)
    pz += tl.load(t_ptr + b * 3 + 2)
    zc = tl.maximum(pz, MIN_DEPTH)
    iz = 1.0 / zc
    nx = px / zc  # a division, as camera.project: the same rounding as the torch LM
    ny = py / zc
    r2 = nx * nx + ny * ny
    radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
    d_radial = k1 + r2 * (2.0 * k2 + 3.0 * k3 * r2)
    u = fx * (nx * radial + 2.0 * p1 * nx * ny + p2 * (r2 + 2.0 * nx * nx)) + cx
    v = fy * (ny * radial + p1 * (r2 + 2.0 * ny * ny) + 2.0 * p2 * nx * ny) + cy
    visible = (pz > MIN_DEPTH) & (r2 < max_r2)
    return px, py, pz, u, v, visible, iz, nx, ny, radial, d_radial, fx, fy, p1, p2


@triton.jit
def _inside(cam_ptr, u, v, W, H):
    """Whether projections (u, v) lie at least the pad (cam slot 10) inside the W x H map."""
    pad = tl.load(cam_ptr + 10)
    Wf = W * 1.0
    Hf = H * 1.0
    return (u >= pad) & (u <= Wf - 1.0 - pad) & (v >= pad) & (v <= Hf - 1.0 - pad)


@triton.jit
def lm_channels_kernel(R_ptr, t_ptr, active_ptr, xyz_ptr, fref_ptr, ok_ptr, table_ptr, conf_ptr, cam_ptr,
                       rec_ptr, N, W, H,
                       C: tl.constexpr, CHUNK: tl.constexpr, BLOCK_N: tl.constexpr, CENTRAL: tl.constexpr):
    """Grid (B, N / BLOCK_N): the channel reductions of points j*BLOCK_N .. of hypothesis b (pass 1)."""
    b = tl.program_id(0)
    j = tl.program_id(1)
    B = tl.num_programs(0)
    if tl.load(active_ptr + b) == 0:
        return  # an inactive hypothesis (converged, failed, a padding row): the per-point pass skips it too
    offs = j * BLOCK_N + tl.arange(0, BLOCK_N)
    inb = offs < N
    px, py, pz, u, v, visible, iz, nx, ny, radial, d_radial, fx, fy, p1, p2 = _camera_points(
        R_ptr, t_ptr, cam_ptr, xyz_ptr, b, offs, inb)
    ok = tl.load(ok_ptr + offs, mask=inb, other=0) != 0
    # Only valid projections are gathered: the others have zero weight (their e is never read).
    valid = visible & _inside(cam_ptr, u, v, W, H) & ok & inb

    # Bilinear cell (interpolation.BilinearSampler._sample); NaN coordinates clamp to 0.
    Wf = W * 1.0
    Hf = H * 1.0
    xs = tl.minimum(tl.maximum(tl.where(u == u, u, 0.0), 0.0), Wf - 1.0)
    ys = tl.minimum(tl.maximum(tl.where(v == v, v, 0.0), 0.0), Hf - 1.0)
    x0f = tl.minimum(tl.floor(xs), Wf - 2.0)
    y0f = tl.minimum(tl.floor(ys), Hf - 2.0)
    ax = xs - x0f
    ay = ys - y0f
    bx = 1.0 - ax
    by = 1.0 - ay
    x0 = x0f.to(tl.int32)
    y0 = y0f.to(tl.int32)
    i00 = y0 * W + x0
    c00 = tl.load(conf_ptr + i00, mask=valid, other=0.0)
    c10 = tl.load(conf_ptr + i00 + 1, mask=valid, other=0.0)
    c01 = tl.load(conf_ptr + i00 + W, mask=valid, other=0.0)
    c11 = tl.load(conf_ptr + i00 + W + 1, mask=valid, other=0.0)
    conf_q = bx * (by * c00 + ay * c01) + ax * (by * c10 + ay * c11)

    ax2 = ax[:, None]
    ay2 = ay[:, None]
    bx2 = bx[:, None]
    by2 = by[:, None]
    row = i00.to(tl.int64)[:, None] * C  # the 64-bit row offsets: H*W*C may exceed 2^31
    ref_row = offs.to(tl.int64)[:, None] * C
    left = (valid & (x0 >= 1))[:, None]
    right = (valid & (x0 + 2 < W))[:, None]
    up = (valid & (y0 >= 1))[:, None]
    down = (valid & (y0 + 2 < H))[:, None]
    e = tl.zeros([BLOCK_N], dtype=tl.float32)
    gr0 = tl.zeros([BLOCK_N], dtype=tl.float32)
    gr1 = tl.zeros([BLOCK_N], dtype=tl.float32)
    g00 = tl.zeros([BLOCK_N], dtype=tl.float32)
    g01 = tl.zeros([BLOCK_N], dtype=tl.float32)
    g11 = tl.zeros([BLOCK_N], dtype=tl.float32)
    for c0 in range(0, C, CHUNK):
        ch = (c0 + tl.arange(0, CHUNK))[None, :]
        m2 = valid[:, None] & (ch < C)
        T00 = tl.load(table_ptr + row + ch, mask=m2, other=0.0)
        T10 = tl.load(table_ptr + row + C + ch, mask=m2, other=0.0)
        T01 = tl.load(table_ptr + row + W * C + ch, mask=m2, other=0.0)
        T11 = tl.load(table_ptr + row + (W + 1) * C + ch, mask=m2, other=0.0)
        r = by2 * (bx2 * T00 + ax2 * T10) + ay2 * (bx2 * T01 + ax2 * T11)
        r -= tl.load(fref_ptr + ref_row + ch, mask=m2, other=0.0)
        if CENTRAL:
            # (F(p + 1px) - F(p - 1px)) / 2 with zero padding: 8 more taps (interpolation, "central").
            Tl0 = tl.load(table_ptr + row - C + ch, mask=m2 & left, other=0.0)
            Tr0 = tl.load(table_ptr + row + 2 * C + ch, mask=m2 & right, other=0.0)
            Tl1 = tl.load(table_ptr + row + (W - 1) * C + ch, mask=m2 & left, other=0.0)
            Tr1 = tl.load(table_ptr + row + (W + 2) * C + ch, mask=m2 & right, other=0.0)
            Gx = 0.5 * (by2 * (bx2 * T10 + ax2 * Tr0 - bx2 * Tl0 - ax2 * T00)
                        + ay2 * (bx2 * T11 + ax2 * Tr1 - bx2 * Tl1 - ax2 * T01))
            Tu0 = tl.load(table_ptr + row - W * C + ch, mask=m2 & up, other=0.0)
            Tu1 = tl.load(table_ptr + row - (W - 1) * C + ch, mask=m2 & up, other=0.0)
            Td0 = tl.load(table_ptr + row + 2 * W * C + ch, mask=m2 & down, other=0.0)
            Td1 = tl.load(table_ptr + row + (2 * W + 1) * C + ch, mask=m2 & down, other=0.0)
            Gy = 0.5 * (bx2 * (by2 * T01 + ay2 * Td0 - by2 * Tu0 - ay2 * T00)
                        + ax2 * (by2 * T11 + ay2 * Td1 - by2 * Tu1 - ay2 * T10))
        else:
            # Derivative of the bilinear interpolant (interpolation, "analytic").
            Gx = by2 * (T10 - T00) + ay2 * (T11 - T01)
            Gy = bx2 * (T01 - T00) + ax2 * (T11 - T10)
        e += tl.sum(r * r, axis=1)
        gr0 += tl.sum(Gx * r, axis=1)
        gr1 += tl.sum(Gy * r, axis=1)
        g00 += tl.sum(Gx * Gx, axis=1)
        g01 += tl.sum(Gx * Gy, axis=1)
        g11 += tl.sum(Gy * Gy, axis=1)

    out = rec_ptr + b.to(tl.int64) * N + offs
    plane = B.to(tl.int64) * N  # one (B, N) plane per record slot
    m = offs < N
    tl.store(out, e, mask=m)
    tl.store(out + plane, gr0, mask=m)
    tl.store(out + 2 * plane, gr1, mask=m)
    tl.store(out + 3 * plane, g00, mask=m)
    tl.store(out + 4 * plane, g01, mask=m)
    tl.store(out + 5 * plane, g11, mask=m)
    tl.store(out + 6 * plane, conf_q, mask=m)


@triton.jit
def lm_sums_kernel(R_ptr, t_ptr, active_ptr, xyz_ptr, cref_ptr, ok_ptr, cam_ptr, rec_ptr, partial_ptr,
                   w_out_ptr, e_out_ptr, valid_out_ptr, N, W, H,
                   BLOCK_P: tl.constexpr, WRITE_POINTS: tl.constexpr):
    """Grid (B, N / BLOCK_P): weights, cost and the g, H shares of points j*BLOCK_P .. of
    hypothesis b into partials[b, j] (pass 2); with WRITE_POINTS also each point's w, e, valid."""
    b = tl.program_id(0)
    j = tl.program_id(1)
    B = tl.num_programs(0)
    nb = tl.num_programs(1)
    out = partial_ptr + (b * nb + j) * 32
    if tl.load(active_ptr + b) == 0:
        # An inactive hypothesis: zero sums (the update ignores them; a padding row's are never read).
        tl.store(out + tl.arange(0, 32), tl.zeros([32], dtype=tl.float32))
        return
    offs = j * BLOCK_P + tl.arange(0, BLOCK_P)
    inb = offs < N
    px, py, pz, u, v, visible, iz, nx, ny, radial, d_radial, fx, fy, p1, p2 = _camera_points(
        R_ptr, t_ptr, cam_ptr, xyz_ptr, b, offs, inb)
    ok = tl.load(ok_ptr + offs, mask=inb, other=0) != 0
    valid = visible & _inside(cam_ptr, u, v, W, H) & ok & inb
    two_c2 = tl.load(cam_ptr + 11)

    rec = rec_ptr + b.to(tl.int64) * N + offs
    plane = B.to(tl.int64) * N
    e = tl.maximum(tl.load(rec, mask=valid, other=0.0), 0.0)
    gr0 = tl.load(rec + plane, mask=valid, other=0.0)
    gr1 = tl.load(rec + 2 * plane, mask=valid, other=0.0)
    g00 = tl.load(rec + 3 * plane, mask=valid, other=0.0)
    g01 = tl.load(rec + 4 * plane, mask=valid, other=0.0)
    g11 = tl.load(rec + 5 * plane, mask=valid, other=0.0)
    conf_q = tl.load(rec + 6 * plane, mask=valid, other=0.0)
    c_ref = tl.load(cref_ptr + offs, mask=inb, other=0.0)
    x_e = e / two_c2
    w = tl.where(valid, c_ref * tl.maximum(conf_q, 0.0) / (1.0 + x_e), 0.0)
    # log(1 + x) accurate for small x (Goldberg's trick: not every backend has log1p).
    u1 = 1.0 + x_e
    d1 = u1 - 1.0
    log1p = tl.where(d1 == 0.0, x_e, tl.log(u1) * (x_e / tl.where(d1 == 0.0, 1.0, d1)))
    rho = tl.where(valid, two_c2 * log1p, 0.0)

    # J_p = f * J_distort @ J_project, rows (a0 a1 a2) and (b0 b1 b2) (camera.world2image_with_jacobian).
    dxx = radial + 2.0 * nx * nx * d_radial + 2.0 * p1 * ny + 6.0 * p2 * nx
    dxy = 2.0 * nx * ny * d_radial + 2.0 * p1 * nx + 2.0 * p2 * ny
    dyy = radial + 2.0 * ny * ny * d_radial + 6.0 * p1 * ny + 2.0 * p2 * nx
    qx = -px * iz * iz
    qy = -py * iz * iz
    a0 = fx * dxx * iz
    a1 = fx * dxy * iz
    a2 = fx * (dxx * qx + dxy * qy)
    b0 = fy * dxy * iz
    b1 = fy * dyy * iz
    b2 = fy * (dxy * qx + dyy * qy)
    # dp/dxi = J_p [I | -[Pc]x]: the rotation columns are Pc x (row).
    a3 = py * a2 - pz * a1
    a4 = pz * a0 - px * a2
    a5 = px * a1 - py * a0
    b3 = py * b2 - pz * b1
    b4 = pz * b0 - px * b2
    b5 = px * b1 - py * b0

    # g = sum w A^T (G^T r); H = sum w A^T (G^T G) A with (G^T G) A = rows P and Q.
    wa0 = w * a0
    wb0 = w * b0
    tl.store(out + 0, tl.sum(wa0 * gr0 + wb0 * gr1, axis=0))
    wa1 = w * a1
    wb1 = w * b1
    tl.store(out + 1, tl.sum(wa1 * gr0 + wb1 * gr1, axis=0))
    wa2 = w * a2
    wb2 = w * b2
    tl.store(out + 2, tl.sum(wa2 * gr0 + wb2 * gr1, axis=0))
    wa3 = w * a3
    wb3 = w * b3
    tl.store(out + 3, tl.sum(wa3 * gr0 + wb3 * gr1, axis=0))
    wa4 = w * a4
    wb4 = w * b4
    tl.store(out + 4, tl.sum(wa4 * gr0 + wb4 * gr1, axis=0))
    wa5 = w * a5
    wb5 = w * b5
    tl.store(out + 5, tl.sum(wa5 * gr0 + wb5 * gr1, axis=0))
    P0 = g00 * a0 + g01 * b0
    Q0 = g01 * a0 + g11 * b0
    tl.store(out + 6, tl.sum(wa0 * P0 + wb0 * Q0, axis=0))
    P1 = g00 * a1 + g01 * b1
    Q1 = g01 * a1 + g11 * b1
    tl.store(out + 7, tl.sum(wa0 * P1 + wb0 * Q1, axis=0))
    tl.store(out + 12, tl.sum(wa1 * P1 + wb1 * Q1, axis=0))
    P2 = g00 * a2 + g01 * b2
    Q2 = g01 * a2 + g11 * b2
    tl.store(out + 8, tl.sum(wa0 * P2 + wb0 * Q2, axis=0))
    tl.store(out + 13, tl.sum(wa1 * P2 + wb1 * Q2, axis=0))
    tl.store(out + 17, tl.sum(wa2 * P2 + wb2 * Q2, axis=0))
    P3 = g00 * a3 + g01 * b3
    Q3 = g01 * a3 + g11 * b3
    tl.store(out + 9, tl.sum(wa0 * P3 + wb0 * Q3, axis=0))
    tl.store(out + 14, tl.sum(wa1 * P3 + wb1 * Q3, axis=0))
    tl.store(out + 18, tl.sum(wa2 * P3 + wb2 * Q3, axis=0))
    tl.store(out + 21, tl.sum(wa3 * P3 + wb3 * Q3, axis=0))
    P4 = g00 * a4 + g01 * b4
    Q4 = g01 * a4 + g11 * b4
    tl.store(out + 10, tl.sum(wa0 * P4 + wb0 * Q4, axis=0))
    tl.store(out + 15, tl.sum(wa1 * P4 + wb1 * Q4, axis=0))
    tl.store(out + 19, tl.sum(wa2 * P4 + wb2 * Q4, axis=0))
    tl.store(out + 22, tl.sum(wa3 * P4 + wb3 * Q4, axis=0))
    tl.store(out + 24, tl.sum(wa4 * P4 + wb4 * Q4, axis=0))
    P5 = g00 * a5 + g01 * b5
    Q5 = g01 * a5 + g11 * b5
    tl.store(out + 11, tl.sum(wa0 * P5 + wb0 * Q5, axis=0))
    tl.store(out + 16, tl.sum(wa1 * P5 + wb1 * Q5, axis=0))
    tl.store(out + 20, tl.sum(wa2 * P5 + wb2 * Q5, axis=0))
    tl.store(out + 23, tl.sum(wa3 * P5 + wb3 * Q5, axis=0))
    tl.store(out + 25, tl.sum(wa4 * P5 + wb4 * Q5, axis=0))
    tl.store(out + 26, tl.sum(wa5 * P5 + wb5 * Q5, axis=0))
    tl.store(out + 27, tl.sum(rho, axis=0))
    tl.store(out + 28, tl.sum(tl.where(valid, 1.0, 0.0), axis=0))
    tl.store(out + 29, tl.sum(w * e, axis=0))
    tl.store(out + 30, tl.sum(tl.where(valid & (e <= two_c2), 1.0, 0.0), axis=0))
    if WRITE_POINTS:
        m = offs < N
        tl.store(w_out_ptr + b.to(tl.int64) * N + offs, w, mask=m)
        tl.store(e_out_ptr + b.to(tl.int64) * N + offs, e, mask=m)
        tl.store(valid_out_ptr + b.to(tl.int64) * N + offs, valid.to(tl.int32), mask=m)
