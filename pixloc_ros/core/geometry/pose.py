"""Batched rigid transforms (SE(3)) and rotations (SO(3)) in torch.

Conventions (see docs/architecture.md):
- A ``Pose`` named ``a_from_b`` maps points from frame b to frame a: ``x_a = R x_b + t``;
  compose ``a_from_b @ b_from_c``.
- The 6-vector of a pose update or covariance is ``xi = [v, w]`` (translation part first):
  ``Pose.exp(xi) = Pose(R=so3_exp(w), t=v)``. The t-part ``v`` IS the translation of the
  resulting transform (the "SO(3) x R^3" chart), not the SE(3) tangent ``V(w)^-1 t``. A left
  update ``Pose.exp(xi) @ P`` therefore reads ``R <- exp([w]x) R, t <- exp([w]x) t + v``, exactly
  the PixLoc update, and ``J_transform`` is its derivative at ``xi = 0``.
- Quaternions are ``[x, y, z, w]`` (ROS, pycolmap).

Hand-written rather than taken from a library: kornia / pytorch3d / lietorch are not
dependencies here, and the functions are short; the tests check them against autograd and
scipy.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

# Below this squared angle (rad^2) the Taylor series are used: with theta^2 < 1e-6 the next term
# (theta^6/5040 and smaller) is far below float64 epsilon relative to 1.
_SMALL_ANGLE2 = 1e-6


def _as_tensor(x, dtype: torch.dtype | None = None, device=None) -> torch.Tensor:
    """Tensor view of ``x`` (numpy arrays become float64 unless ``dtype`` says otherwise)."""
    if isinstance(x, torch.Tensor):
        return x.to(device=device if device is not None else x.device, dtype=dtype or x.dtype)
    t = torch.as_tensor(np.asarray(x), device=device)
    if dtype is not None:
        t = t.to(dtype)
    elif not t.is_floating_point():
        t = t.to(torch.float64)
    return t


def skew(v: torch.Tensor) -> torch.Tensor:
    """Cross-product matrix: ``skew(v) @ u == cross(v, u)``. v (..., 3) -> (..., 3, 3)."""
    x, y, z = v.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack([o, -z, y, z, o, -x, -y, x, o], dim=-1).reshape(*v.shape[:-1], 3, 3)


def so3_exp(w: torch.Tensor) -> torch.Tensor:
    """Rotation matrix of the rotation vector ``w`` (axis * angle, radians). (..., 3) -> (..., 3, 3).

    Rodrigues' formula ``R = I + A K + B K^2`` with ``A = sin(t)/t``, ``B = (1 - cos t)/t^2``;
    Taylor series below ``t^2 = 1e-6`` so values and gradients stay finite at ``w = 0``.
    """
    theta2 = (w * w).sum(-1)
    small = theta2 < _SMALL_ANGLE2
    # Safe angle: the large-angle branch never sees 0 (its gradient would be NaN even when masked).
    theta2_safe = torch.where(small, torch.ones_like(theta2), theta2)
    theta = theta2_safe.sqrt()
    a = torch.where(small, 1 - theta2 / 6 + theta2 * theta2 / 120, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24 + theta2 * theta2 / 720, (1 - torch.cos(theta)) / theta2_safe)
    K = skew(w)
    eye = torch.eye(3, dtype=w.dtype, device=w.device).expand(K.shape)
    return eye + a[..., None, None] * K + b[..., None, None] * (K @ K)


def rotmat_to_quat_xyzw(R: torch.Tensor) -> torch.Tensor:
    """Unit quaternion [x, y, z, w] (w >= 0) of rotation matrices. (..., 3, 3) -> (..., 4).

    Shepperd's method: build the quaternion from whichever of w, x, y, z has the largest
    magnitude (never divide by a small number), so it is exact near pi as well as near 0.
    """
    m = R
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    # 4 * component^2 for w, x, y, z.
    sq = torch.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22,
                      1 - m00 - m11 + m22], dim=-1)
    q_abs = sq.clamp(min=0).sqrt()  # 2 * |component|
    d21, d02, d10 = m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]
    s21, s02, s10 = m[..., 2, 1] + m[..., 1, 2], m[..., 0, 2] + m[..., 2, 0], m[..., 1, 0] + m[..., 0, 1]
    # Candidate (w, x, y, z) * 2 * |pivot| for each pivot choice.
    cands = torch.stack([
        torch.stack([q_abs[..., 0] ** 2, d21, d02, d10], -1),
        torch.stack([d21, q_abs[..., 1] ** 2, s10, s02], -1),
        torch.stack([d02, s10, q_abs[..., 2] ** 2, s21], -1),
        torch.stack([d10, s02, s21, q_abs[..., 3] ** 2], -1),
    ], dim=-2)  # (..., 4 pivots, 4 comps)
    # The pivot's own magnitude is >= 1/2 (sum of squares is 4 over 4 components), so clamping
    # at 0.1 only affects candidates that are never chosen.
    cands = cands / (2 * q_abs[..., :, None].clamp(min=0.1))
    best = q_abs.argmax(-1)
    q_wxyz = torch.gather(cands, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    q_wxyz = q_wxyz * torch.where(q_wxyz[..., :1] < 0, -1.0, 1.0).to(q_wxyz)
    q_wxyz = q_wxyz / q_wxyz.norm(dim=-1, keepdim=True)
    return torch.cat([q_wxyz[..., 1:], q_wxyz[..., :1]], -1)


def quat_xyzw_to_rotmat(q: torch.Tensor) -> torch.Tensor:
    """Rotation matrices of quaternions [x, y, z, w] (normalised here). (..., 4) -> (..., 3, 3)."""
    q = q / q.norm(dim=-1, keepdim=True)
    x, y, z, w = q.unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
        2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
        2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y),
    ], -1).reshape(*q.shape[:-1], 3, 3)


def so3_log(R: torch.Tensor) -> torch.Tensor:
    """Rotation vector (axis * angle, angle in [0, pi]) of rotation matrices. (..., 3, 3) -> (..., 3).

    Goes through the quaternion (Shepperd) and ``angle = 2 atan2(|xyz|, w)``, which is well
    conditioned at every angle, including 0 and pi (where ``acos`` of the trace is not).
    """
    q = rotmat_to_quat_xyzw(R)
    v, w = q[..., :3], q[..., 3]
    n2 = (v * v).sum(-1)
    small = n2 < _SMALL_ANGLE2
    n = torch.where(small, torch.ones_like(n2), n2).sqrt()
    # angle / |v| = 2 atan2(n, w) / n; its series at n -> 0 (w ~ 1) is 2/w - 2 n^2 / (3 w^3).
    scale = torch.where(small, 2 / w - 2 * n2 / (3 * w ** 3), 2 * torch.atan2(n, w) / n)
    return v * scale[..., None]


def rotation_angle(R: torch.Tensor) -> torch.Tensor:
    """Rotation angle in radians, [0, pi], of rotation matrices (..., 3, 3) -> (...)."""
    q = rotmat_to_quat_xyzw(R)
    return 2 * torch.atan2(q[..., :3].norm(dim=-1), q[..., 3].abs())


class Pose:
    """A batch of rigid transforms ``x' = R x + t``; R (..., 3, 3), t (..., 3).

    ``shape`` is the batch shape (``()`` for a single pose). Indexing, ``len``, ``to``,
    ``detach`` and ``@`` (composition, or application to a point tensor) behave like tensors.
    """

    def __init__(self, R: torch.Tensor, t: torch.Tensor):
        if R.shape[-2:] != (3, 3) or t.shape[-1] != 3 or R.shape[:-2] != t.shape[:-1]:
            raise ValueError(f"Pose needs R (...,3,3) and t (...,3) with equal batch shapes, got "
                             f"{tuple(R.shape)} and {tuple(t.shape)}")
        self.R = R
        self.t = t

    # ---- constructors -------------------------------------------------------------------
    @classmethod
    def from_Rt(cls, R, t) -> "Pose":
        """From rotation (..., 3, 3) and translation (..., 3), tensors or arrays (arrays -> float64).
        Broadcasts the batch shapes of R and t."""
        R = _as_tensor(R)
        t = _as_tensor(t, dtype=R.dtype, device=R.device)
        # Equal batch shapes (the usual case) need no broadcasting; torch.broadcast_shapes's first
        # call imports torch's symbolic-shape machinery and sympy (0.4 s, measured in a node's first frame).
        shape = R.shape[:-2] if R.shape[:-2] == t.shape[:-1] else torch.broadcast_shapes(R.shape[:-2], t.shape[:-1])
        return cls(R.expand(*shape, 3, 3), t.expand(*shape, 3))

    @classmethod
    def from_4x4(cls, T) -> "Pose":
        """From homogeneous matrices (..., 4, 4) (tensor or array)."""
        T = _as_tensor(T)
        if T.shape[-2:] != (4, 4):
            raise ValueError(f"expected (..., 4, 4) matrices, got {tuple(T.shape)}")
        return cls(T[..., :3, :3], T[..., :3, 3])

    @classmethod
    def from_quat_xyzw(cls, q, t) -> "Pose":
        """From quaternions [x, y, z, w] (..., 4) (normalised here) and translations (..., 3)."""
        q = _as_tensor(q)
        t = _as_tensor(t, dtype=q.dtype, device=q.device)
        return cls.from_Rt(quat_xyzw_to_rotmat(q), t)

    @classmethod
    def identity(cls, shape: Sequence[int] | int = (), dtype: torch.dtype = torch.float32,
                 device: torch.device | str | None = None) -> "Pose":
        """Identity transforms with batch ``shape``."""
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        R = torch.eye(3, dtype=dtype, device=device).expand(*shape, 3, 3).clone()
        return cls(R, torch.zeros(*shape, 3, dtype=dtype, device=device))

    @classmethod
    def exp(cls, xi: torch.Tensor) -> "Pose":
        """Transform of the 6-vector ``xi = [v, w]`` (..., 6): ``R = so3_exp(w)``, ``t = v`` (metres).

        See the module docstring: ``v`` is the translation itself (SO(3) x R^3 chart).
        """
        return cls(so3_exp(xi[..., 3:]), xi[..., :3])

    @classmethod
    def stack(cls, poses: Sequence["Pose"]) -> "Pose":
        """Stack poses of equal batch shape along a new first batch dimension."""
        return cls(torch.stack([p.R for p in poses], 0), torch.stack([p.t for p in poses], 0))

    @classmethod
    def cat(cls, poses: Sequence["Pose"]) -> "Pose":
        """Concatenate poses along the first batch dimension."""
        return cls(torch.cat([p.R for p in poses], 0), torch.cat([p.t for p in poses], 0))

    # ---- group operations ---------------------------------------------------------------
    def log(self) -> torch.Tensor:
        """Inverse of ``Pose.exp``: (...) -> (..., 6) ``[t, so3_log(R)]``."""
        return torch.cat([self.t, so3_log(self.R)], -1)

    def inv(self) -> "Pose":
        """Inverse transform: ``b_from_a`` of ``a_from_b``."""
        Rt = self.R.transpose(-1, -2)
        return Pose(Rt, -(Rt @ self.t[..., None])[..., 0])

    def compose(self, other: "Pose") -> "Pose":
        """``self @ other``: first ``other``, then ``self`` (batch shapes broadcast)."""
        return Pose(self.R @ other.R, (self.R @ other.t[..., None])[..., 0] + self.t)

    def __matmul__(self, other):
        """``a_from_b @ b_from_c -> a_from_c``; ``pose @ points`` is ``transform(points)``."""
        if isinstance(other, Pose):
            return self.compose(other)
        if isinstance(other, torch.Tensor):
            return self.transform(other)
        return NotImplemented

    def transform(self, points: torch.Tensor) -> torch.Tensor:
        """Apply to points (..., N, 3) -> (..., N, 3); the pose batch broadcasts over N."""
        return points @ self.R.transpose(-1, -2) + self.t[..., None, :]

    @staticmethod
    def J_transform(p_transformed: torch.Tensor) -> torch.Tensor:
        """Jacobian of ``(Pose.exp(xi) @ P).transform(p)`` w.r.t. xi at 0, evaluated at the
        transformed points ``p' = P p`` (..., N, 3): ``[I | -[p']x]``, (..., N, 3, 6)."""
        eye = torch.eye(3, dtype=p_transformed.dtype, device=p_transformed.device)
        eye = eye.expand(*p_transformed.shape[:-1], 3, 3)
        return torch.cat([eye, -skew(p_transformed)], -1)

    # ---- conversions --------------------------------------------------------------------
    def to_4x4(self) -> torch.Tensor:
        """Homogeneous matrices (..., 4, 4)."""
        T = torch.zeros(*self.shape, 4, 4, dtype=self.dtype, device=self.device)
        T[..., :3, :3] = self.R
        T[..., :3, 3] = self.t
        T[..., 3, 3] = 1
        return T

    def to_quat_xyzw(self) -> torch.Tensor:
        """Unit quaternions [x, y, z, w] with w >= 0, (..., 4)."""
        return rotmat_to_quat_xyzw(self.R)

    def magnitude(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(rotation angle in degrees, translation norm in metres), each of batch shape."""
        return torch.rad2deg(rotation_angle(self.R)), self.t.norm(dim=-1)

    def numpy(self) -> tuple[np.ndarray, np.ndarray]:
        """(R (..., 3, 3), t (..., 3)) as float64 numpy arrays (copied to the CPU)."""
        return (self.R.detach().cpu().double().numpy(), self.t.detach().cpu().double().numpy())

    def to_4x4_numpy(self) -> np.ndarray:
        """Homogeneous matrices (..., 4, 4) as a float64 numpy array."""
        return self.to_4x4().detach().cpu().double().numpy()

    @classmethod
    def from_numpy(cls, R: np.ndarray, t: np.ndarray, dtype: torch.dtype = torch.float64,
                   device: torch.device | str | None = None) -> "Pose":
        """From numpy R (..., 3, 3) and t (..., 3)."""
        return cls.from_Rt(torch.as_tensor(np.asarray(R), dtype=dtype, device=device),
                           torch.as_tensor(np.asarray(t), dtype=dtype, device=device))

    # ---- tensor-like behaviour ----------------------------------------------------------
    @property
    def shape(self) -> torch.Size:
        """Batch shape."""
        return self.t.shape[:-1]

    @property
    def dtype(self) -> torch.dtype:
        return self.t.dtype

    @property
    def device(self) -> torch.device:
        return self.t.device

    def __len__(self) -> int:
        if len(self.shape) == 0:
            raise TypeError("len() of a single Pose")
        return self.shape[0]

    def __getitem__(self, index) -> "Pose":
        """Index the batch dimensions like a tensor of shape ``self.shape``."""
        if not isinstance(index, tuple):
            index = (index,)
        return Pose(self.R[index + (Ellipsis, slice(None), slice(None))],
                    self.t[index + (Ellipsis, slice(None))])

    def to(self, *args, **kwargs) -> "Pose":
        """Same arguments as ``torch.Tensor.to`` (device and/or dtype)."""
        return Pose(self.R.to(*args, **kwargs), self.t.to(*args, **kwargs))

    def cpu(self) -> "Pose":
        return self.to("cpu")

    def float(self) -> "Pose":
        return self.to(torch.float32)

    def double(self) -> "Pose":
        return self.to(torch.float64)

    def detach(self) -> "Pose":
        return Pose(self.R.detach(), self.t.detach())

    def clone(self) -> "Pose":
        return Pose(self.R.clone(), self.t.clone())

    def expand(self, *shape: int) -> "Pose":
        """Broadcast to batch ``shape`` (no copy)."""
        return Pose(self.R.expand(*shape, 3, 3), self.t.expand(*shape, 3))

    def reshape(self, *shape: int) -> "Pose":
        return Pose(self.R.reshape(*shape, 3, 3), self.t.reshape(*shape, 3))

    def __repr__(self) -> str:
        if self.shape.numel() <= 4:
            deg, m = self.magnitude()
            return f"Pose(shape={tuple(self.shape)}, rot_deg={deg.tolist()}, trans_m={m.tolist()})"
        return f"Pose(shape={tuple(self.shape)}, dtype={self.dtype}, device={self.device})"


def pose_error(a: Pose, b: Pose) -> tuple[torch.Tensor, torch.Tensor]:
    """Difference of two ``cam_from_world`` poses as (rotation deg, camera-centre distance m).

    The rotation error is the angle of ``R_a R_b^T``; the translation error compares camera
    centres ``-R^T t`` (what "off by 1 m" means for a localizer).
    """
    deg = torch.rad2deg(rotation_angle(a.R @ b.R.transpose(-1, -2)))
    ca = a.inv().t
    cb = b.inv().t
    return deg, (ca - cb).norm(dim=-1)


def random_rotation(shape: Sequence[int] = (), max_angle: float = math.pi,
                    generator: torch.Generator | None = None, dtype=torch.float64) -> torch.Tensor:
    """Random rotations (shape, 3, 3): uniform axis, angle uniform in [0, max_angle] (tests, benches)."""
    shape = tuple(shape)
    axis = torch.randn(*shape, 3, generator=generator, dtype=dtype)
    axis = axis / axis.norm(dim=-1, keepdim=True)
    angle = torch.rand(*shape, 1, generator=generator, dtype=dtype) * max_angle
    return so3_exp(axis * angle)
