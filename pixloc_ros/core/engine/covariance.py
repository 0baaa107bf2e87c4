"""Pose covariance from the Gauss-Newton Hessian, and its conversion to the ROS convention.

Engine covariance: 6x6 over ``xi = [dt, dw]``, the left perturbation of ``cam_from_world``
(``R <- exp([dw]x) R``, ``t <- exp([dw]x) t + dt``), camera frame, metres and radians.

ROS covariance (``PoseWithCovarianceStamped`` of ``map_from_base``): order (x, y, z, rot_x,
rot_y, rot_z); the position error is in the map frame, the rotation error is a left rotation
vector in the map frame (``R_map_base <- exp([phi]x) R_map_base``), which is what
robot_localization assumes for absolute pose measurements.
"""
from __future__ import annotations

import numpy as np
import torch

from ..geometry.pose import Pose, so3_log

# Smallest eigenvalue kept in a published covariance, in m^2 and rad^2 alike: std 1e-4 m
# (0.1 mm) and 1e-4 rad (0.006 deg). Far below anything the localizer can claim, so it never
# changes a meaningful covariance, and enough to keep the matrix positive definite after
# float rounding (robot_localization rejects non-PD covariances).
EIGENVALUE_FLOOR = 1e-12


def residual_variance(weighted_sq_residual: float, num_points: int, channels: int,
                      num_params: int = 6) -> float:
    """Variance factor sigma^2 = sum_i w_i |r_i|^2 / (m - 6), m = num_points * channels scalar residuals.

    Why this estimator: the LM solves a weighted least-squares problem in which the weights
    (robust x confidence) are known only up to a common scale. Treating w_i as inverse
    variances up to that scale, ``sigma^2 H^-1`` (H = sum w J^T J) is the covariance of the
    estimate and the weighted residual sum over the redundancy is the unbiased estimator of
    sigma^2 for a linear model with independent residuals (the "a posteriori variance factor"
    of photogrammetry; with robust weights it is the usual IRLS approximation). It is
    optimistic when residuals are correlated (neighbouring pixels, channels of one descriptor):
    ``LocalizerConfig.covariance_scale`` inflates it for that. Returns inf with no redundancy.
    """
    dof = num_points * channels - num_params
    if dof <= 0 or not np.isfinite(weighted_sq_residual):
        return float("inf")
    return float(weighted_sq_residual) / dof


def make_spd(cov: np.ndarray, floor: float = EIGENVALUE_FLOOR) -> np.ndarray:
    """Symmetrise and clamp the eigenvalues of a (6, 6) matrix to >= ``floor``."""
    cov = 0.5 * (np.asarray(cov, np.float64) + np.asarray(cov, np.float64).T)
    evals, evecs = np.linalg.eigh(cov)
    evals = np.clip(evals, floor, None)
    out = (evecs * evals) @ evecs.T
    return 0.5 * (out + out.T)


def normalized_min_eigenvalue(hessian: np.ndarray) -> float:
    """Smallest eigenvalue of ``D^-1/2 H D^-1/2`` (D = diag(H)): scale-free measure of how well
    the 6 pose directions are constrained (0: a direction is unobservable, 1: all independent).
    Returns 0 when a diagonal entry is not positive or values are not finite."""
    H = np.asarray(hessian, np.float64)
    d = np.diag(H)
    if not np.isfinite(H).all() or (d <= 0).any():
        return 0.0
    s = 1.0 / np.sqrt(d)
    Hn = H * s[:, None] * s[None, :]
    return float(np.linalg.eigvalsh(0.5 * (Hn + Hn.T))[0])


def pose_covariance(hessian: np.ndarray | torch.Tensor, sigma2: float,
                    floor: float = EIGENVALUE_FLOOR) -> np.ndarray | None:
    """Engine covariance ``sigma2 * H^-1`` (6, 6) from the undamped Gauss-Newton Hessian, made SPD.

    Returns None when H is not positive definite (an unobservable direction) or sigma2 is not
    finite: there is no meaningful covariance then, and the pose must not be published.
    """
    H = hessian.detach().cpu().double().numpy() if isinstance(hessian, torch.Tensor) else np.asarray(hessian, np.float64)
    H = 0.5 * (H + H.T)
    if not np.isfinite(H).all() or not np.isfinite(sigma2):
        return None
    evals, evecs = np.linalg.eigh(H)
    if evals[0] <= 0:
        return None
    cov = (evecs / evals) @ evecs.T * sigma2
    return make_spd(cov, floor)


def engine_to_ros_jacobian(cam_from_world: Pose, base_from_cam: Pose) -> np.ndarray:
    """(6, 6) matrix A with ``[dp_map, phi_map] = A [dt, dw]`` to first order.

    With ``map_from_base = cam_from_world^-1 @ cam_from_base`` and the engine perturbation
    ``cam_from_world' = E(xi) @ cam_from_world``: ``map_from_base' = map_from_cam @ E^-1 @ cam_from_base``,
    ``E^-1 x ~ x - dw x x - dt``, hence (R = R_map_cam, c = t_cam_from_base, the base origin in
    the camera frame): ``dp = -R dt + R [c]x dw``, ``phi = -R dw``.
    """
    R_wc, _ = cam_from_world.inv().numpy()
    _, c = base_from_cam.inv().numpy()
    R_wc, c = R_wc.reshape(3, 3), c.reshape(3)
    cx = np.array([[0, -c[2], c[1]], [c[2], 0, -c[0]], [-c[1], c[0], 0]])
    A = np.zeros((6, 6))
    A[:3, :3] = -R_wc
    A[:3, 3:] = R_wc @ cx
    A[3:, 3:] = -R_wc
    return A


def engine_to_ros_covariance(cov_engine: np.ndarray, cam_from_world: Pose, base_from_cam: Pose,
                             floor: float = EIGENVALUE_FLOOR) -> np.ndarray:
    """ROS covariance (6, 6) of ``map_from_base`` (x y z rx ry rz, map frame) from the engine
    covariance of ``cam_from_world``; symmetric positive definite (eigenvalues >= ``floor``).
    ``base_from_cam`` is the camera extrinsic (camera optical frame -> base_link)."""
    A = engine_to_ros_jacobian(cam_from_world, base_from_cam)
    return make_spd(A @ np.asarray(cov_engine, np.float64) @ A.T, floor)


def ros_pose_error(estimate_map_from_x: Pose, reference_map_from_x: Pose) -> np.ndarray:
    """(..., 6) error of poses in the ROS convention: [p_est - p_ref (map frame), log(R_est R_ref^T)]."""
    a, b = estimate_map_from_x.double(), reference_map_from_x.double()
    dp = a.t - b.t
    phi = so3_log(a.R @ b.R.transpose(-1, -2))
    return torch.cat([dp, phi], -1).cpu().numpy()
