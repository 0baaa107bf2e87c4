"""Properties of the batched SE(3)/SO(3) helpers (core/geometry/pose.py)."""
import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from pixloc_ros.core.geometry.pose import (Pose, pose_error, random_rotation, rotation_angle, skew, so3_exp,
    so3_log)

BATCH_SHAPES = [(), (1,), (5,), (2, 3)]


def random_pose(shape, seed=0, dtype=torch.float64) -> Pose:
    g = torch.Generator().manual_seed(seed)
    R = random_rotation(shape, generator=g, dtype=dtype)
    t = torch.randn(*shape, 3, generator=g, dtype=dtype) * 3
    return Pose.from_Rt(R, t)


@pytest.mark.parametrize("shape", BATCH_SHAPES)
def test_exp_log_round_trip(shape):
    g = torch.Generator().manual_seed(1)
    xi = torch.randn(*shape, 6, generator=g, dtype=torch.float64)
    xi[..., 3:] *= 0.9  # angles below pi so the rotation vector is the principal one
    P = Pose.exp(xi)
    assert P.shape == torch.Size(shape)
    torch.testing.assert_close(P.log(), xi, atol=1e-10, rtol=0)
    # and the other way round: exp(log(P)) == P for arbitrary rotations
    Q = random_pose(shape, seed=2)
    Q2 = Pose.exp(Q.log())
    torch.testing.assert_close(Q2.R, Q.R, atol=1e-10, rtol=0)
    torch.testing.assert_close(Q2.t, Q.t, atol=1e-12, rtol=0)


@pytest.mark.parametrize("shape", BATCH_SHAPES)
def test_inverse_and_composition(shape):
    P = random_pose(shape, seed=3)
    Q = random_pose(shape, seed=4)
    eye = (P.inv() @ P).to_4x4()
    torch.testing.assert_close(eye, torch.eye(4, dtype=torch.float64).expand_as(eye), atol=1e-12, rtol=0)
    # composition equals the product of homogeneous matrices, and transform agrees with it
    torch.testing.assert_close((P @ Q).to_4x4(), P.to_4x4() @ Q.to_4x4(), atol=1e-12, rtol=0)
    pts = torch.randn(*shape, 7, 3, dtype=torch.float64)
    torch.testing.assert_close((P @ Q).transform(pts), P.transform(Q.transform(pts)), atol=1e-12, rtol=0)
    homog = torch.cat([pts, torch.ones_like(pts[..., :1])], -1)
    expected = (homog @ P.to_4x4().transpose(-1, -2))[..., :3]
    torch.testing.assert_close(P @ pts, expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("shape", BATCH_SHAPES)
def test_quaternion_round_trip_matches_scipy(shape):
    P = random_pose(shape, seed=5)
    q = P.to_quat_xyzw()
    assert (q[..., 3] >= 0).all()
    torch.testing.assert_close(q.norm(dim=-1), torch.ones(shape, dtype=torch.float64))
    P2 = Pose.from_quat_xyzw(q, P.t)
    torch.testing.assert_close(P2.R, P.R, atol=1e-12, rtol=0)
    R_np = P.R.reshape(-1, 3, 3).numpy()
    q_scipy = Rotation.from_matrix(R_np).as_quat()  # xyzw
    q_scipy *= np.sign(q_scipy[:, 3:4] + 1e-300)
    np.testing.assert_allclose(q.reshape(-1, 4).numpy(), q_scipy, atol=1e-12)


@pytest.mark.parametrize("angle", [0.0, 1e-9, 1e-5, 1e-3, 0.5, 3.0, math.pi - 1e-6, math.pi - 1e-9, math.pi])
def test_so3_log_small_and_near_pi(angle):
    axes = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [1, 2, 3], [-0.3, 0.1, -2]], dtype=torch.float64)
    axes = axes / axes.norm(dim=-1, keepdim=True)
    w = axes * angle
    R = so3_exp(w)
    R_ref = torch.from_numpy(Rotation.from_rotvec(w.numpy()).as_matrix())
    torch.testing.assert_close(R, R_ref, atol=1e-14, rtol=0)
    w2 = so3_log(R)
    assert torch.isfinite(w2).all()
    torch.testing.assert_close(w2.norm(dim=-1), torch.full((5,), angle, dtype=torch.float64), atol=1e-8, rtol=0)
    # near pi the axis sign is ambiguous: compare the rotations instead of the vectors
    torch.testing.assert_close(so3_exp(w2), R, atol=1e-12, rtol=0)
    torch.testing.assert_close(rotation_angle(R), torch.full((5,), angle, dtype=torch.float64), atol=1e-8, rtol=0)


def test_exp_log_gradients_finite_at_zero():
    w = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    so3_exp(w).sum().backward()
    assert torch.isfinite(w.grad).all()
    # d exp(w) / dw at 0 is the generator: d/dw (R u) = -[u]x
    u = torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64)
    J = torch.autograd.functional.jacobian(lambda w: so3_exp(w) @ u, torch.zeros(3, dtype=torch.float64))
    torch.testing.assert_close(J, -skew(u))


def test_skew_is_cross_product():
    a, b = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    torch.testing.assert_close((skew(a) @ b[..., None])[..., 0], torch.cross(a, b, dim=-1))


@pytest.mark.parametrize("shape", [(), (3,), (2, 2)])
def test_J_transform_matches_autograd_for_left_update(shape):
    P = random_pose(shape, seed=6)
    pts = torch.randn(*shape, 4, 3, dtype=torch.float64)

    def f(xi):
        return (Pose.exp(xi) @ P).transform(pts)

    xi0 = torch.zeros(*shape, 6, dtype=torch.float64)
    J_auto = torch.autograd.functional.jacobian(f, xi0)  # (*shape, 4, 3, *shape, 6)
    n = int(np.prod(shape)) if shape else 1
    J_auto = J_auto.reshape(n, 4, 3, n, 6)
    J_auto = torch.stack([J_auto[i, :, :, i] for i in range(n)]).reshape(*shape, 4, 3, 6)
    J = Pose.J_transform(P.transform(pts))
    torch.testing.assert_close(J, J_auto, atol=1e-12, rtol=0)


def test_left_update_matches_pixloc_formula():
    P = random_pose((), seed=7)
    xi = torch.tensor([0.1, -0.2, 0.3, 0.01, 0.02, -0.03], dtype=torch.float64)
    Q = Pose.exp(xi) @ P
    dR = so3_exp(xi[3:])
    torch.testing.assert_close(Q.R, dR @ P.R)
    torch.testing.assert_close(Q.t, dR @ P.t + xi[:3])


def test_magnitude_indexing_and_conversions():
    P = random_pose((4,), seed=8)
    deg, m = P.magnitude()
    assert deg.shape == (4,) and m.shape == (4,)
    torch.testing.assert_close(m, P.t.norm(dim=-1))
    assert (deg >= 0).all() and (deg <= 180).all()
    assert P[1].shape == () and P[1:3].shape == (2,) and len(P) == 4
    torch.testing.assert_close(P[2].R, P.R[2])
    Pf = P.to(torch.float32)
    assert Pf.dtype == torch.float32 and Pf.R.dtype == torch.float32
    R, t = P.numpy()
    assert R.shape == (4, 3, 3) and t.shape == (4, 3) and R.dtype == np.float64
    P2 = Pose.from_4x4(P.to_4x4_numpy())
    torch.testing.assert_close(P2.R, P.R)
    P3 = Pose.from_numpy(R, t)
    torch.testing.assert_close(P3.t, P.t)
    S = Pose.stack([P[0], P[1]])
    assert S.shape == (2,)
    I = Pose.identity((2, 3))
    assert I.shape == (2, 3) and I.dtype == torch.float32


def test_pose_error_measures_centre_distance():
    P = random_pose((), seed=9)
    w_from_c = P.inv()
    shift = Pose.from_Rt(torch.eye(3, dtype=torch.float64), torch.tensor([0.0, 0.0, 2.0], dtype=torch.float64))
    moved = (w_from_c @ shift).inv()  # camera moved 2 m along its own optical axis
    deg, m = pose_error(moved, P)
    assert float(deg) == pytest.approx(0.0, abs=1e-6)
    assert float(m) == pytest.approx(2.0, abs=1e-9)
