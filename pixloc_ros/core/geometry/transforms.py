"""Rigid transforms as numpy (..., 4, 4) float64 arrays, the form poses take outside the engine
(the pipeline, bags, importers, the synthetic world, ROS messages). The engine's batched torch
``Pose`` (``pose``) is for the optimizer; this module needs no torch, and imports scipy (its
``Rotation`` does the quaternion maths) only when a quaternion is asked for, so that tools that
never touch one (the bag player) do not pay for it.

Conventions: ``a_from_b`` names, composed ``a_from_b @ b_from_c``; quaternions are (x, y, z, w)
unless the name says ``wxyz`` (COLMAP's order); angles in radians unless the name says ``deg``.
"""
from __future__ import annotations

import math

import numpy as np


def rot_x(a) -> np.ndarray:
    """Rotation matrices about x for angles ``a`` (...,) radians -> (..., 3, 3)."""
    a = np.asarray(a, np.float64)
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([o, z, z], -1), np.stack([z, c, -s], -1), np.stack([z, s, c], -1)], -2)


def rot_y(a) -> np.ndarray:
    """Rotation matrices about y, (...,) radians -> (..., 3, 3)."""
    a = np.asarray(a, np.float64)
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([c, z, s], -1), np.stack([z, o, z], -1), np.stack([-s, z, c], -1)], -2)


def rot_z(a) -> np.ndarray:
    """Rotation matrices about z, (...,) radians -> (..., 3, 3)."""
    a = np.asarray(a, np.float64)
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([c, -s, z], -1), np.stack([s, c, z], -1), np.stack([z, z, o], -1)], -2)


def make_transform(R, t) -> np.ndarray:
    """(..., 3, 3) rotations and (..., 3) translations -> (..., 4, 4) homogeneous transforms."""
    R = np.asarray(R, np.float64)
    t = np.asarray(t, np.float64)
    T = np.zeros(R.shape[:-2] + (4, 4))
    T[..., :3, :3] = R
    T[..., :3, 3] = t
    T[..., 3, 3] = 1.0
    return T


def invert_transform(T) -> np.ndarray:
    """Inverse of rigid (..., 4, 4) transforms: (R^T, -R^T t)."""
    T = np.asarray(T, np.float64)
    R = T[..., :3, :3]
    t = T[..., :3, 3]
    Rt = np.swapaxes(R, -1, -2)
    return make_transform(Rt, -np.einsum("...ij,...j->...i", Rt, t))


def quat_xyzw_from_matrix(R) -> np.ndarray:
    """(..., 3, 3) rotation matrices -> (..., 4) unit quaternions (x, y, z, w) with w >= 0."""
    from scipy.spatial.transform import Rotation

    R = np.asarray(R, np.float64)
    q = Rotation.from_matrix(R.reshape(-1, 3, 3)).as_quat()  # scipy's order is xyzw
    q = np.where(q[:, 3:4] < 0, -q, q)
    return q.reshape(R.shape[:-2] + (4,))


def matrix_from_quat_xyzw(q) -> np.ndarray:
    """(..., 4) quaternions (x, y, z, w) -> (..., 3, 3) rotation matrices. Normalises each one;
    ValueError for a zero or non-finite quaternion (a message that was never filled in)."""
    from scipy.spatial.transform import Rotation

    q = np.asarray(q, np.float64)
    flat = q.reshape(-1, 4)
    norms = np.linalg.norm(flat, axis=1) if np.all(np.isfinite(flat)) else np.full(len(flat), math.nan)
    if not np.all(norms > 1e-6):
        bad = flat[~(norms > 1e-6)][0]
        raise ValueError(f"Invalid quaternion (xyzw) {bad.tolist()}: zero or non-finite")
    return Rotation.from_quat(flat / norms[:, None]).as_matrix().reshape(q.shape[:-1] + (3, 3))


def matrix_from_quat_wxyz(q_wxyz) -> np.ndarray:
    """Unit quaternion (w, x, y, z) (COLMAP / NVM order) (4,) -> (3, 3) rotation matrix.

    ValueError for a quaternion far from unit norm (a corrupted pose line in a dataset file):
    normalising it silently would hide a parse error.
    """
    from scipy.spatial.transform import Rotation

    q = np.asarray(q_wxyz, np.float64).reshape(4)
    n = float(np.linalg.norm(q))
    if not math.isfinite(n) or abs(n - 1.0) > 1e-3:
        raise ValueError(f"quaternion {q.tolist()} is not unit-norm (|q| = {n:.6f})")
    return Rotation.from_quat(q / n, scalar_first=True).as_matrix()


def as_transform(pose) -> np.ndarray:
    """A single pose as a (4, 4) float64 array: a (4, 4) array or tensor, an (R, t) pair, or
    anything with ``to_4x4()`` (the engine's ``Pose``). ValueError for another shape."""
    if isinstance(pose, tuple) and len(pose) == 2:
        return make_transform(pose[0], np.asarray(pose[1], np.float64).reshape(3))
    if hasattr(pose, "to_4x4"):
        pose = pose.to_4x4()
    if hasattr(pose, "detach"):  # a torch tensor, without importing torch here
        pose = pose.detach().cpu().double().numpy()
    T = np.asarray(pose, np.float64)
    if T.shape != (4, 4):
        raise ValueError(f"expected a single pose as a (4, 4) matrix, got shape {T.shape}")
    return T


def check_transform(T, what: str) -> np.ndarray:
    """``T`` as a (4, 4) float64 rigid transform; ValueError naming ``what`` when it is not finite,
    not (4, 4), or its rotation is not orthonormal with determinant 1 (within 1e-3)."""
    T = np.asarray(T, np.float64)
    if T.shape != (4, 4) or not np.isfinite(T).all():
        raise ValueError(f"{what} must be a finite (4, 4) transform, got shape {T.shape}"
                         f"{'' if T.shape != (4, 4) else ' with NaN/inf'}")
    R = T[:3, :3]
    if abs(np.linalg.det(R) - 1.0) > 1e-3 or np.abs(R @ R.T - np.eye(3)).max() > 1e-3:
        raise ValueError(f"{what} has an invalid rotation (not orthonormal)")
    return T


def rotation_angle_deg(R) -> float:
    """Angle of a (3, 3) rotation matrix, degrees in [0, 180]."""
    from scipy.spatial.transform import Rotation

    return math.degrees(Rotation.from_matrix(np.asarray(R, np.float64)).magnitude())


def pose_difference(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """(6,) difference of two poses (4, 4) of one frame in the same frame (``map_from_base`` twice):
    ``[p_1 - p_2, log(R_1 R_2^T)]``, position difference and left rotation vector in the common frame
    (the ROS / robot_localization error convention of an absolute pose measurement; metres, radians)."""
    from scipy.spatial.transform import Rotation

    first, second = np.asarray(first, np.float64), np.asarray(second, np.float64)
    dp = first[:3, 3] - second[:3, 3]
    phi = Rotation.from_matrix(first[:3, :3] @ second[:3, :3].T).as_rotvec()
    return np.concatenate([dp, phi])


__all__ = ["as_transform", "check_transform", "invert_transform", "make_transform", "matrix_from_quat_wxyz",
           "matrix_from_quat_xyzw", "pose_difference", "quat_xyzw_from_matrix", "rot_x", "rot_y", "rot_z",
           "rotation_angle_deg"]
