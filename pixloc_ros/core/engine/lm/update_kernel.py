"""Triton kernel of the second half of one LM iteration: per hypothesis, the damped 6x6 solve, the
pose update and the stop tests (``optimizer._lm_step`` and ``solve.damped_solve``, unrolled),
on the float64 sums that ``lm_kernels`` and the caller's float64 sum produced. ``fused_lm``
launches it with one warp per hypothesis (its work is scalar).

Module-level constants a kernel reads must be ``tl.constexpr`` (Triton refuses other globals
when compiling for a GPU; its interpreter does not: ``scripts/check_gpu_kernels.py`` catches it).
Hand-written: no library offers this fused form.
"""
from __future__ import annotations

import triton
import triton.language as tl

# Solve parameters (float64, device-side): lambda (6), lambda_min, stop_dt, stop_dw (rad),
# grad_stop, min_valid_points.
SOLVE_SLOTS = 11
SMALL_ANGLE2 = tl.constexpr(1e-6)  # geometry._SMALL_ANGLE2: Taylor series of so3_exp below this squared angle


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

    # Damped system H + diag(max(lambda diag(H), lambda_min)) (solve.damped_solve).
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

    # Cholesky L L^T, unrolled (solve.cholesky_solve_spd); pivots clamped, ``ok`` records them.
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
