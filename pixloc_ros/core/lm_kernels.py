"""Triton kernels of one LM iteration: the per-point terms of all hypotheses in one pass, then the
damped 6x6 solve and the pose update of every hypothesis in a second (``fused_lm`` drives them).

The arithmetic is ``optimizer._LevelProblem.evaluate`` and ``optimizer._lm_step`` written per point
(see the module docstring of ``optimizer`` for the equations); nothing per channel is ever
stored: each program gathers its points' taps, forms F, dF/dx, dF/dy over the channels in
registers, reduces them to the point's |r|^2, G^T r and G^T G, and adds its points' shares of
g = sum w J^T r and H = sum w J^T J into one row of a partial-sum buffer. Hand-written: no
library offers this fused form (torch.compile's kernels still materialise the per-point
matrices and return to Python every iteration, BENCHMARKS.md).

Kernels are compiled for CUDA tensors; under ``TRITON_INTERPRET=1`` (or for CPU tensors, see
``fused_lm.kernels``) Triton's interpreter runs the same source with numpy, which is how the
tests check them on a machine without a GPU.

Layouts (all contiguous):
- pose state: R (B, 9) float32 row-major, t (B, 3) float32, flags (B,) int32;
- points: xyz (N, 3), f_ref (N, C), c_ref (N,), point_ok (N,) int32 (0: never valid, e.g. padding);
- query map: table (H*W, C) channels-last, conf (H*W,);
- cam (CAM_SLOTS,) float32: fx fy cx cy k1 k2 p1 p2 k3 max_r2 pad two_c2 (device-side, so a
  CUDA graph captured once serves any camera and pad of the same shapes);
- partials (B, NB, SLOTS) float32, summed over NB by the caller into (B, SLOTS) float64.
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
# Solve parameters (float64, device-side): lambda (6), lambda_min, stop_dt, stop_dw (rad),
# grad_stop, min_valid_points.
SOLVE_SLOTS = 11
MIN_DEPTH = 1e-3  # camera.MIN_DEPTH (repeated: a kernel constant)
SMALL_ANGLE2 = 1e-6  # geometry._SMALL_ANGLE2: Taylor series of so3_exp below this squared angle


@triton.jit
def lm_terms_kernel(R_ptr, t_ptr, active_ptr, xyz_ptr, fref_ptr, cref_ptr, ok_ptr, table_ptr, conf_ptr,
                    cam_ptr, partial_ptr, w_out_ptr, e_out_ptr, valid_out_ptr,
                    N, W, H,
                    C: tl.constexpr, CP: tl.constexpr, BLOCK_N: tl.constexpr, CENTRAL: tl.constexpr,
                    SKIP_INACTIVE: tl.constexpr, WRITE_POINTS: tl.constexpr):
    """Grid (B, NB): program (b, j) handles points j*BLOCK_N .. of hypothesis b."""
    b = tl.program_id(0)
    j = tl.program_id(1)
    nb = tl.num_programs(1)
    offs = j * BLOCK_N + tl.arange(0, BLOCK_N)
    if SKIP_INACTIVE:
        # An inactive hypothesis has no points (its sums are zero; the update ignores them).
        # Written as one comparison: the interpreter rejects masks mixing a scalar and a vector.
        inb = offs < N * tl.load(active_ptr + b)
    else:
        inb = offs < N

    # Camera and pose (scalars).
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
    pad = tl.load(cam_ptr + 10)
    two_c2 = tl.load(cam_ptr + 11)
    r00 = tl.load(R_ptr + b * 9 + 0)
    r01 = tl.load(R_ptr + b * 9 + 1)
    r02 = tl.load(R_ptr + b * 9 + 2)
    r10 = tl.load(R_ptr + b * 9 + 3)
    r11 = tl.load(R_ptr + b * 9 + 4)
    r12 = tl.load(R_ptr + b * 9 + 5)
    r20 = tl.load(R_ptr + b * 9 + 6)
    r21 = tl.load(R_ptr + b * 9 + 7)
    r22 = tl.load(R_ptr + b * 9 + 8)
    t0 = tl.load(t_ptr + b * 3 + 0)
    t1 = tl.load(t_ptr + b * 3 + 1)
    t2 = tl.load(t_ptr + b * 3 + 2)

    # Points in the camera frame, projection and its Jacobian (camera.world2image_with_jacobian).
    X = tl.load(xyz_ptr + offs * 3 + 0, mask=inb, other=0.0)
    Y = tl.load(xyz_ptr + offs * 3 + 1, mask=inb, other=0.0)
    Z = tl.load(xyz_ptr + offs * 3 + 2, mask=inb, other=0.0)
    px = r00 * X + r01 * Y + r02 * Z + t0
    py = r10 * X + r11 * Y + r12 * Z + t1
    pz = r20 * X + r21 * Y + r22 * Z + t2
    visible = pz > MIN_DEPTH
    zc = tl.maximum(pz, MIN_DEPTH)
    nx = px / zc
    ny = py / zc
    iz = 1.0 / zc
    r2 = nx * nx + ny * ny
    radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
    d_radial = k1 + r2 * (2.0 * k2 + 3.0 * k3 * r2)
    u = fx * (nx * radial + 2.0 * p1 * nx * ny + p2 * (r2 + 2.0 * nx * nx)) + cx
    v = fy * (ny * radial + p1 * (r2 + 2.0 * ny * ny) + 2.0 * p2 * nx * ny) + cy
    visible = visible & (r2 < max_r2)
    dxx = radial + 2.0 * nx * nx * d_radial + 2.0 * p1 * ny + 6.0 * p2 * nx
    dxy = 2.0 * nx * ny * d_radial + 2.0 * p1 * nx + 2.0 * p2 * ny
    dyy = radial + 2.0 * ny * ny * d_radial + 6.0 * p1 * ny + 2.0 * p2 * nx
    qx = -px * iz * iz
    qy = -py * iz * iz
    # J_p = f * J_distort @ J_project, rows (a0 a1 a2) and (b0 b1 b2).
    a0 = fx * dxx * iz
    a1 = fx * dxy * iz
    a2 = fx * (dxx * qx + dxy * qy)
    b0 = fy * dxy * iz
    b1 = fy * dyy * iz
    b2 = fy * (dxy * qx + dyy * qy)
    # dp/dxi = J_p [I | -[Pc]x]: rotation columns are Pc x (row).
    a3 = py * a2 - pz * a1
    a4 = pz * a0 - px * a2
    a5 = px * a1 - py * a0
    b3 = py * b2 - pz * b1
    b4 = pz * b0 - px * b2
    b5 = px * b1 - py * b0

    # Bilinear cell (interpolation.BilinearSampler._sample).
    Wf = W * 1.0
    Hf = H * 1.0
    inside = (u >= pad) & (u <= Wf - 1.0 - pad) & (v >= pad) & (v <= Hf - 1.0 - pad)
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

    ch = tl.arange(0, CP)
    cmask = ch < C
    m2 = inb[:, None] & cmask[None, :]
    ax2 = ax[:, None]
    ay2 = ay[:, None]
    bx2 = bx[:, None]
    by2 = by[:, None]
    T00 = tl.load(table_ptr + i00.to(tl.int64)[:, None] * C + ch[None, :], mask=m2, other=0.0)
    T10 = tl.load(table_ptr + (i00 + 1).to(tl.int64)[:, None] * C + ch[None, :], mask=m2, other=0.0)
    T01 = tl.load(table_ptr + (i00 + W).to(tl.int64)[:, None] * C + ch[None, :], mask=m2, other=0.0)
    T11 = tl.load(table_ptr + (i00 + W + 1).to(tl.int64)[:, None] * C + ch[None, :], mask=m2, other=0.0)
    F = by2 * (bx2 * T00 + ax2 * T10) + ay2 * (bx2 * T01 + ax2 * T11)
    if CENTRAL:
        # (F(p + 1px) - F(p - 1px)) / 2 with zero padding: 8 more taps (interpolation, "central").
        left = x0 >= 1
        right = x0 + 2 < W
        up = y0 >= 1
        down = y0 + 2 < H
        Tl0 = tl.load(table_ptr + (i00 - 1).to(tl.int64)[:, None] * C + ch[None, :],
                      mask=m2 & left[:, None], other=0.0)
        Tr0 = tl.load(table_ptr + (i00 + 2).to(tl.int64)[:, None] * C + ch[None, :],
                      mask=m2 & right[:, None], other=0.0)
        Tl1 = tl.load(table_ptr + (i00 + W - 1).to(tl.int64)[:, None] * C + ch[None, :],
                      mask=m2 & left[:, None], other=0.0)
        Tr1 = tl.load(table_ptr + (i00 + W + 2).to(tl.int64)[:, None] * C + ch[None, :],
                      mask=m2 & right[:, None], other=0.0)
        Gx = 0.5 * (by2 * (bx2 * T10 + ax2 * Tr0 - bx2 * Tl0 - ax2 * T00)
                    + ay2 * (bx2 * T11 + ax2 * Tr1 - bx2 * Tl1 - ax2 * T01))
        Tu0 = tl.load(table_ptr + (i00 - W).to(tl.int64)[:, None] * C + ch[None, :],
                      mask=m2 & up[:, None], other=0.0)
        Tu1 = tl.load(table_ptr + (i00 - W + 1).to(tl.int64)[:, None] * C + ch[None, :],
                      mask=m2 & up[:, None], other=0.0)
        Td0 = tl.load(table_ptr + (i00 + 2 * W).to(tl.int64)[:, None] * C + ch[None, :],
                      mask=m2 & down[:, None], other=0.0)
        Td1 = tl.load(table_ptr + (i00 + 2 * W + 1).to(tl.int64)[:, None] * C + ch[None, :],
                      mask=m2 & down[:, None], other=0.0)
        Gy = 0.5 * (bx2 * (by2 * T01 + ay2 * Td0 - by2 * Tu0 - ay2 * T00)
                    + ax2 * (by2 * T11 + ay2 * Td1 - by2 * Tu1 - ay2 * T10))
    else:
        # Derivative of the bilinear interpolant (interpolation, "analytic").
        Gx = by2 * (T10 - T00) + ay2 * (T11 - T01)
        Gy = bx2 * (T01 - T00) + ax2 * (T11 - T10)
    c00 = tl.load(conf_ptr + i00, mask=inb, other=0.0)
    c10 = tl.load(conf_ptr + i00 + 1, mask=inb, other=0.0)
    c01 = tl.load(conf_ptr + i00 + W, mask=inb, other=0.0)
    c11 = tl.load(conf_ptr + i00 + W + 1, mask=inb, other=0.0)
    conf_q = bx * (by * c00 + ay * c01) + ax * (by * c10 + ay * c11)

    fref = tl.load(fref_ptr + offs.to(tl.int64)[:, None] * C + ch[None, :], mask=m2, other=0.0)
    r = F - fref
    e = tl.maximum(tl.sum(r * r, axis=1), 0.0)
    gr0 = tl.sum(Gx * r, axis=1)
    gr1 = tl.sum(Gy * r, axis=1)
    g00 = tl.sum(Gx * Gx, axis=1)
    g01 = tl.sum(Gx * Gy, axis=1)
    g11 = tl.sum(Gy * Gy, axis=1)

    ok = tl.load(ok_ptr + offs, mask=inb, other=0) != 0
    c_ref = tl.load(cref_ptr + offs, mask=inb, other=0.0)
    valid = visible & inside & ok & inb
    x_e = e / two_c2
    w = tl.where(valid, c_ref * tl.maximum(conf_q, 0.0) / (1.0 + x_e), 0.0)
    # log(1 + x) accurate for small x (Goldberg's trick: not every backend has log1p). Kernels
    # call no other jit function, so that Triton's interpreter can run them on CPU tensors.
    u1 = 1.0 + x_e
    d1 = u1 - 1.0
    log1p = tl.where(d1 == 0.0, x_e, tl.log(u1) * (x_e / tl.where(d1 == 0.0, 1.0, d1)))
    rho = tl.where(valid, two_c2 * log1p, 0.0)
    validf = tl.where(valid, 1.0, 0.0)

    # H = sum w A^T (G^T G) A, g = sum w A^T (G^T r); with B = (G^T G) A (rows P and Q).
    P0 = g00 * a0 + g01 * b0
    P1 = g00 * a1 + g01 * b1
    P2 = g00 * a2 + g01 * b2
    P3 = g00 * a3 + g01 * b3
    P4 = g00 * a4 + g01 * b4
    P5 = g00 * a5 + g01 * b5
    Q0 = g01 * a0 + g11 * b0
    Q1 = g01 * a1 + g11 * b1
    Q2 = g01 * a2 + g11 * b2
    Q3 = g01 * a3 + g11 * b3
    Q4 = g01 * a4 + g11 * b4
    Q5 = g01 * a5 + g11 * b5
    wa0 = w * a0
    wa1 = w * a1
    wa2 = w * a2
    wa3 = w * a3
    wa4 = w * a4
    wa5 = w * a5
    wb0 = w * b0
    wb1 = w * b1
    wb2 = w * b2
    wb3 = w * b3
    wb4 = w * b4
    wb5 = w * b5

    out = partial_ptr + (b * nb + j) * 32
    tl.store(out + 0, tl.sum(wa0 * gr0 + wb0 * gr1, axis=0))
    tl.store(out + 1, tl.sum(wa1 * gr0 + wb1 * gr1, axis=0))
    tl.store(out + 2, tl.sum(wa2 * gr0 + wb2 * gr1, axis=0))
    tl.store(out + 3, tl.sum(wa3 * gr0 + wb3 * gr1, axis=0))
    tl.store(out + 4, tl.sum(wa4 * gr0 + wb4 * gr1, axis=0))
    tl.store(out + 5, tl.sum(wa5 * gr0 + wb5 * gr1, axis=0))
    tl.store(out + 6, tl.sum(wa0 * P0 + wb0 * Q0, axis=0))
    tl.store(out + 7, tl.sum(wa0 * P1 + wb0 * Q1, axis=0))
    tl.store(out + 8, tl.sum(wa0 * P2 + wb0 * Q2, axis=0))
    tl.store(out + 9, tl.sum(wa0 * P3 + wb0 * Q3, axis=0))
    tl.store(out + 10, tl.sum(wa0 * P4 + wb0 * Q4, axis=0))
    tl.store(out + 11, tl.sum(wa0 * P5 + wb0 * Q5, axis=0))
    tl.store(out + 12, tl.sum(wa1 * P1 + wb1 * Q1, axis=0))
    tl.store(out + 13, tl.sum(wa1 * P2 + wb1 * Q2, axis=0))
    tl.store(out + 14, tl.sum(wa1 * P3 + wb1 * Q3, axis=0))
    tl.store(out + 15, tl.sum(wa1 * P4 + wb1 * Q4, axis=0))
    tl.store(out + 16, tl.sum(wa1 * P5 + wb1 * Q5, axis=0))
    tl.store(out + 17, tl.sum(wa2 * P2 + wb2 * Q2, axis=0))
    tl.store(out + 18, tl.sum(wa2 * P3 + wb2 * Q3, axis=0))
    tl.store(out + 19, tl.sum(wa2 * P4 + wb2 * Q4, axis=0))
    tl.store(out + 20, tl.sum(wa2 * P5 + wb2 * Q5, axis=0))
    tl.store(out + 21, tl.sum(wa3 * P3 + wb3 * Q3, axis=0))
    tl.store(out + 22, tl.sum(wa3 * P4 + wb3 * Q4, axis=0))
    tl.store(out + 23, tl.sum(wa3 * P5 + wb3 * Q5, axis=0))
    tl.store(out + 24, tl.sum(wa4 * P4 + wb4 * Q4, axis=0))
    tl.store(out + 25, tl.sum(wa4 * P5 + wb4 * Q5, axis=0))
    tl.store(out + 26, tl.sum(wa5 * P5 + wb5 * Q5, axis=0))
    tl.store(out + 27, tl.sum(rho, axis=0))
    tl.store(out + 28, tl.sum(validf, axis=0))
    tl.store(out + 29, tl.sum(w * e, axis=0))
    tl.store(out + 30, tl.sum(tl.where(valid & (e <= two_c2), 1.0, 0.0), axis=0))
    if WRITE_POINTS:
        tl.store(w_out_ptr + b * N + offs, w, mask=offs < N)
        tl.store(e_out_ptr + b * N + offs, e, mask=offs < N)
        tl.store(valid_out_ptr + b * N + offs, valid.to(tl.int32), mask=offs < N)


@triton.jit
def lm_update_kernel(sums_ptr, R_ptr, t_ptr, active_ptr, iters_ptr, step_ptr, singular_ptr, failed_ptr,
                     init_ptr, solve_ptr, REFERENCE: tl.constexpr, CHECK_EVERY: tl.constexpr):
    """Grid (B,): damped solve, pose update and stop tests of hypothesis b (``optimizer._lm_step``).

    sums (B, SLOTS) float64; init (B, 2) float64 receives (cost_sum, num_valid) at step 0;
    step (B,) int32 counts the iterations run (active or not), iters (B,) the active ones.
    """
    b = tl.program_id(0)
    s = sums_ptr + b * 32
    g0 = tl.load(s + 0)
    g1 = tl.load(s + 1)
    g2 = tl.load(s + 2)
    g3 = tl.load(s + 3)
    g4 = tl.load(s + 4)
    g5 = tl.load(s + 5)
    h00 = tl.load(s + 6)
    h01 = tl.load(s + 7)
    h02 = tl.load(s + 8)
    h03 = tl.load(s + 9)
    h04 = tl.load(s + 10)
    h05 = tl.load(s + 11)
    h11 = tl.load(s + 12)
    h12 = tl.load(s + 13)
    h13 = tl.load(s + 14)
    h14 = tl.load(s + 15)
    h15 = tl.load(s + 16)
    h22 = tl.load(s + 17)
    h23 = tl.load(s + 18)
    h24 = tl.load(s + 19)
    h25 = tl.load(s + 20)
    h33 = tl.load(s + 21)
    h34 = tl.load(s + 22)
    h35 = tl.load(s + 23)
    h44 = tl.load(s + 24)
    h45 = tl.load(s + 25)
    h55 = tl.load(s + 26)
    cost = tl.load(s + 27)
    nvalid = tl.load(s + 28)

    step = tl.load(step_ptr + b)
    first = step == 0
    tl.store(init_ptr + b * 2 + 0, tl.where(first, cost, tl.load(init_ptr + b * 2 + 0)))
    tl.store(init_ptr + b * 2 + 1, tl.where(first, nvalid, tl.load(init_ptr + b * 2 + 1)))

    # Flags as int32 0/1 (arithmetic instead of boolean scalars: the same in every backend).
    active = tl.load(active_ptr + b)
    failed = tl.load(failed_ptr + b)
    lam0 = tl.load(solve_ptr + 0)
    lam1 = tl.load(solve_ptr + 1)
    lam2 = tl.load(solve_ptr + 2)
    lam3 = tl.load(solve_ptr + 3)
    lam4 = tl.load(solve_ptr + 4)
    lam5 = tl.load(solve_ptr + 5)
    lambda_min = tl.load(solve_ptr + 6)
    stop_dt = tl.load(solve_ptr + 7)
    stop_dw = tl.load(solve_ptr + 8)
    grad_stop = tl.load(solve_ptr + 9)
    min_valid = tl.load(solve_ptr + 10)
    if REFERENCE:
        failed = tl.maximum(failed, active * (nvalid < min_valid).to(tl.int32))
        active = active * (1 - failed)

    # Damped system H + diag(max(lambda diag(H), lambda_min)) (optimizer.damped_solve).
    d0 = h00 + tl.maximum(lam0 * h00, lambda_min)
    d1 = h11 + tl.maximum(lam1 * h11, lambda_min)
    d2 = h22 + tl.maximum(lam2 * h22, lambda_min)
    d3 = h33 + tl.maximum(lam3 * h33, lambda_min)
    d4 = h44 + tl.maximum(lam4 * h44, lambda_min)
    d5 = h55 + tl.maximum(lam5 * h55, lambda_min)
    # Finite: x - x is 0 for finite x, NaN for inf and NaN.
    fin = (g0 - g0 == 0) & (g1 - g1 == 0) & (g2 - g2 == 0) & (g3 - g3 == 0) & (g4 - g4 == 0) & (g5 - g5 == 0)
    fin = fin & (d0 - d0 == 0) & (d1 - d1 == 0) & (d2 - d2 == 0) & (d3 - d3 == 0) & (d4 - d4 == 0)
    fin = fin & (d5 - d5 == 0) & (h01 - h01 == 0) & (h02 - h02 == 0) & (h03 - h03 == 0) & (h04 - h04 == 0)
    fin = fin & (h05 - h05 == 0) & (h12 - h12 == 0) & (h13 - h13 == 0) & (h14 - h14 == 0) & (h15 - h15 == 0)
    fin = fin & (h23 - h23 == 0) & (h24 - h24 == 0) & (h25 - h25 == 0) & (h34 - h34 == 0) & (h35 - h35 == 0)
    fin = fin & (h45 - h45 == 0)

    # Cholesky L L^T, unrolled (optimizer.cholesky_solve_spd); pivots clamped, ``ok`` records them.
    tiny = 1e-300
    piv = d0
    ok = fin & (piv > 0)
    L00 = tl.sqrt(tl.maximum(piv, tiny))
    L10 = h01 / L00
    L20 = h02 / L00
    L30 = h03 / L00
    L40 = h04 / L00
    L50 = h05 / L00
    piv = d1 - L10 * L10
    ok = ok & (piv > 0)
    L11 = tl.sqrt(tl.maximum(piv, tiny))
    L21 = (h12 - L20 * L10) / L11
    L31 = (h13 - L30 * L10) / L11
    L41 = (h14 - L40 * L10) / L11
    L51 = (h15 - L50 * L10) / L11
    piv = d2 - L20 * L20 - L21 * L21
    ok = ok & (piv > 0)
    L22 = tl.sqrt(tl.maximum(piv, tiny))
    L32 = (h23 - L30 * L20 - L31 * L21) / L22
    L42 = (h24 - L40 * L20 - L41 * L21) / L22
    L52 = (h25 - L50 * L20 - L51 * L21) / L22
    piv = d3 - L30 * L30 - L31 * L31 - L32 * L32
    ok = ok & (piv > 0)
    L33 = tl.sqrt(tl.maximum(piv, tiny))
    L43 = (h34 - L40 * L30 - L41 * L31 - L42 * L32) / L33
    L53 = (h35 - L50 * L30 - L51 * L31 - L52 * L32) / L33
    piv = d4 - L40 * L40 - L41 * L41 - L42 * L42 - L43 * L43
    ok = ok & (piv > 0)
    L44 = tl.sqrt(tl.maximum(piv, tiny))
    L54 = (h45 - L50 * L40 - L51 * L41 - L52 * L42 - L53 * L43) / L44
    piv = d5 - L50 * L50 - L51 * L51 - L52 * L52 - L53 * L53 - L54 * L54
    ok = ok & (piv > 0)
    L55 = tl.sqrt(tl.maximum(piv, tiny))
    y0 = g0 / L00
    y1 = (g1 - L10 * y0) / L11
    y2 = (g2 - L20 * y0 - L21 * y1) / L22
    y3 = (g3 - L30 * y0 - L31 * y1 - L32 * y2) / L33
    y4 = (g4 - L40 * y0 - L41 * y1 - L42 * y2 - L43 * y3) / L44
    y5 = (g5 - L50 * y0 - L51 * y1 - L52 * y2 - L53 * y3 - L54 * y4) / L55
    x5 = y5 / L55
    x4 = (y4 - L54 * x5) / L44
    x3 = (y3 - L43 * x4 - L53 * x5) / L33
    x2 = (y2 - L32 * x3 - L42 * x4 - L52 * x5) / L22
    x1 = (y1 - L21 * x2 - L31 * x3 - L41 * x4 - L51 * x5) / L11
    x0 = (y0 - L10 * x1 - L20 * x2 - L30 * x3 - L40 * x4 - L50 * x5) / L00
    ok = ok & (x0 - x0 == 0) & (x1 - x1 == 0) & (x2 - x2 == 0) & (x3 - x3 == 0) & (x4 - x4 == 0) & (x5 - x5 == 0)
    move = ok & (active != 0)
    dt0 = tl.where(move, -x0, 0.0)
    dt1 = tl.where(move, -x1, 0.0)
    dt2 = tl.where(move, -x2, 0.0)
    dw0 = tl.where(move, -x3, 0.0)
    dw1 = tl.where(move, -x4, 0.0)
    dw2 = tl.where(move, -x5, 0.0)

    # Left update R <- exp([dw]x) R, t <- exp([dw]x) t + dt (geometry.so3_exp, Rodrigues).
    th2 = dw0 * dw0 + dw1 * dw1 + dw2 * dw2
    small = th2 < SMALL_ANGLE2
    th2s = tl.where(small, 1.0, th2)
    th = tl.sqrt(th2s)
    ca = tl.where(small, 1.0 - th2 / 6.0 + th2 * th2 / 120.0, tl.sin(th) / th)
    cb = tl.where(small, 0.5 - th2 / 24.0 + th2 * th2 / 720.0, (1.0 - tl.cos(th)) / th2s)
    # exp = I + a K + b K^2 with K = [dw]x.
    e00 = 1.0 + cb * (-dw1 * dw1 - dw2 * dw2)
    e11 = 1.0 + cb * (-dw0 * dw0 - dw2 * dw2)
    e22 = 1.0 + cb * (-dw0 * dw0 - dw1 * dw1)
    e01 = -ca * dw2 + cb * dw0 * dw1
    e10 = ca * dw2 + cb * dw0 * dw1
    e02 = ca * dw1 + cb * dw0 * dw2
    e20 = -ca * dw1 + cb * dw0 * dw2
    e12 = -ca * dw0 + cb * dw1 * dw2
    e21 = ca * dw0 + cb * dw1 * dw2
    rp = R_ptr + b * 9
    m00 = tl.load(rp + 0).to(tl.float64)
    m01 = tl.load(rp + 1).to(tl.float64)
    m02 = tl.load(rp + 2).to(tl.float64)
    m10 = tl.load(rp + 3).to(tl.float64)
    m11 = tl.load(rp + 4).to(tl.float64)
    m12 = tl.load(rp + 5).to(tl.float64)
    m20 = tl.load(rp + 6).to(tl.float64)
    m21 = tl.load(rp + 7).to(tl.float64)
    m22 = tl.load(rp + 8).to(tl.float64)
    tp = t_ptr + b * 3
    v0 = tl.load(tp + 0).to(tl.float64)
    v1 = tl.load(tp + 1).to(tl.float64)
    v2 = tl.load(tp + 2).to(tl.float64)
    tl.store(rp + 0, (e00 * m00 + e01 * m10 + e02 * m20).to(tl.float32))
    tl.store(rp + 1, (e00 * m01 + e01 * m11 + e02 * m21).to(tl.float32))
    tl.store(rp + 2, (e00 * m02 + e01 * m12 + e02 * m22).to(tl.float32))
    tl.store(rp + 3, (e10 * m00 + e11 * m10 + e12 * m20).to(tl.float32))
    tl.store(rp + 4, (e10 * m01 + e11 * m11 + e12 * m21).to(tl.float32))
    tl.store(rp + 5, (e10 * m02 + e11 * m12 + e12 * m22).to(tl.float32))
    tl.store(rp + 6, (e20 * m00 + e21 * m10 + e22 * m20).to(tl.float32))
    tl.store(rp + 7, (e20 * m01 + e21 * m11 + e22 * m21).to(tl.float32))
    tl.store(rp + 8, (e20 * m02 + e21 * m12 + e22 * m22).to(tl.float32))
    tl.store(tp + 0, (e00 * v0 + e01 * v1 + e02 * v2 + dt0).to(tl.float32))
    tl.store(tp + 1, (e10 * v0 + e11 * v1 + e12 * v2 + dt1).to(tl.float32))
    tl.store(tp + 2, (e20 * v0 + e21 * v1 + e22 * v2 + dt2).to(tl.float32))

    tl.store(iters_ptr + b, tl.load(iters_ptr + b) + active)
    tl.store(singular_ptr + b, tl.maximum(tl.load(singular_ptr + b), active * (1 - ok.to(tl.int32))))
    # Stop tests: every iteration (native) or at 0-based steps that are multiples of CHECK_EVERY.
    stop = ((dt0 * dt0 + dt1 * dt1 + dt2 * dt2) < stop_dt * stop_dt) & (th2 < stop_dw * stop_dw)
    if REFERENCE:
        gn2 = g0 * g0 + g1 * g1 + g2 * g2 + g3 * g3 + g4 * g4 + g5 * g5
        stop = (stop | (gn2 < grad_stop * grad_stop)) & ((step % CHECK_EVERY) == 0)
    active = active * (1 - stop.to(tl.int32))
    tl.store(active_ptr + b, active)
    tl.store(failed_ptr + b, failed)
    tl.store(step_ptr + b, step + 1)
