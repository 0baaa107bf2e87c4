"""PixLoc's pose refinement written out literally from its equations, in float64: the oracle of
the parity tests (test_reference_parity.py).

Written from DESIGN.md ("PixLoc facts") and the issue's description of the released weights'
behaviour, without pixloc_ros.core's optimizer, interpolation or camera code, and in the
straightforward form rather than the engine's fast one: bilinear values with
``torch.nn.functional.grid_sample`` (``align_corners=True``, zero padding), the image gradient as
the central difference of two more ``grid_sample`` calls at +-1 px, the full per-channel
Jacobian (N, C, 6), ``einsum`` for g and H, a Cholesky solve, convergence tested after the
iterations whose 0-based index is a multiple of 10, and failure below 10 valid points.
Pinhole cameras only (the parity problems are rectified images). Images whose longer side
exceeds 1024 px are first downscaled to 1024 (``cv2.INTER_LINEAR`` on the float image, as the
reference's localizer does), with the camera scaled by 1024 / longer side on both axes, as the
reference's ``FeatureExtractor`` reports it (``downscale``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

CAUCHY_SCALE = 0.1
LAMBDA_MIN = 1e-6
MIN_DEPTH = 1e-3
STOP_DT_M = 5e-3
STOP_DR_DEG = 5e-2
STOP_GRAD = 1e-4
CHECK_EVERY = 10
MIN_VALID = 10
STRIDES = (1, 4, 16)
MAX_IMAGE_EDGE = 1024


def downscale(image: np.ndarray, cam: tuple) -> tuple[torch.Tensor, tuple]:
    """(H, W, 3) uint8 -> ((1, 3, H', W') float in [0, 1], the camera (fx, fy, cx, cy, w, h) of
    that image): the longer side at most 1024 px."""
    h, w = image.shape[:2]
    s = MAX_IMAGE_EDGE / max(h, w)
    img = image.astype(np.float32)
    if s < 1:
        nh, nw = int(round(h * s)), int(round(w * s))
        img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
        sx = sy = s  # the reference's scale_resize: not nh / h, although the height was rounded
        fx, fy, cx, cy, _, _ = cam
        cam = (fx * sx, fy * sy, (cx + 0.5) * sx - 0.5, (cy + 0.5) * sy - 0.5, w * sx, h * sy)
    return torch.from_numpy(img / 255.0).permute(2, 0, 1)[None].float(), cam


@dataclass
class PinholeLevel:
    """A pinhole camera scaled to one level: f * s, (c + 0.5) * s - 0.5, size * s (not rounded)."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: float
    height: float

    @classmethod
    def of(cls, fx, fy, cx, cy, width, height, stride):
        s = 1.0 / stride
        return cls(fx * s, fy * s, (cx + 0.5) * s - 0.5, (cy + 0.5) * s - 0.5, width * s, height * s)


def sample(fmap: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Bilinear values of fmap (C, H, W) at pixels p (N, 2), pixel-centre origin -> (N, C)."""
    _, H, W = fmap.shape
    grid = p / p.new_tensor([W - 1, H - 1]) * 2 - 1
    out = F.grid_sample(fmap[None], grid[None, None], mode="bilinear", align_corners=True)
    return out[0, :, 0].T


def central_gradient(fmap: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """(F(p + 1 px) - F(p - 1 px)) / 2 along x and y -> (N, C, 2)."""
    ex, ey = p.new_tensor([1.0, 0.0]), p.new_tensor([0.0, 1.0])
    gx = (sample(fmap, p + ex) - sample(fmap, p - ex)) / 2
    gy = (sample(fmap, p + ey) - sample(fmap, p - ey)) / 2
    return torch.stack([gx, gy], -1)


def inside_map(p: torch.Tensor, fmap: torch.Tensor, pad: float) -> torch.Tensor:
    """p inside [pad, size - 1 - pad] of the map (N,) bool."""
    _, H, W = fmap.shape
    return ((p[:, 0] >= pad) & (p[:, 0] <= W - 1 - pad) & (p[:, 1] >= pad) & (p[:, 1] <= H - 1 - pad))


def project(cam: PinholeLevel, p_cam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Camera points (N, 3) -> pixels (N, 2), visible (N,) = in front and inside the camera's image."""
    z = p_cam[:, 2]
    zc = z.clamp(min=MIN_DEPTH)
    p = torch.stack([cam.fx * p_cam[:, 0] / zc + cam.cx, cam.fy * p_cam[:, 1] / zc + cam.cy], -1)
    in_image = (p[:, 0] >= 0) & (p[:, 0] <= cam.width - 1) & (p[:, 1] >= 0) & (p[:, 1] <= cam.height - 1)
    return p, (z > MIN_DEPTH) & in_image


def skew(v: torch.Tensor) -> torch.Tensor:
    """(N, 3) -> (N, 3, 3) cross-product matrices."""
    z = torch.zeros_like(v[:, 0])
    return torch.stack([z, -v[:, 2], v[:, 1], v[:, 2], z, -v[:, 0], -v[:, 1], v[:, 0], z], -1).view(-1, 3, 3)


def rodrigues(w: torch.Tensor) -> torch.Tensor:
    """Axis-angle (3,) -> rotation (3, 3)."""
    theta = float(w.norm())
    if theta < 1e-12:
        return torch.eye(3, dtype=w.dtype) + skew(w[None])[0]
    K = skew((w / theta)[None])[0]
    return torch.eye(3, dtype=w.dtype) + math.sin(theta) * K + (1 - math.cos(theta)) * K @ K


@dataclass
class Observations:
    """Reference observations kept for the refinement, per level (finest first)."""

    keep: np.ndarray  # (N,) bool over the input points: valid at every level of the reference image
    features: list[torch.Tensor]  # 3 x (M, C_l) float64, L2-normalised samples of the raw maps
    confidences: list[torch.Tensor]  # 3 x (M,) float64


def reference_observations(raw_maps, confidence_maps, cam, ref_from_world: np.ndarray, xyz: np.ndarray,
                           pad: float) -> Observations:
    """Sample the reference image's raw feature maps (3 x (C, H, W)) and confidences (3 x (1, H, W))
    at the projections of ``xyz`` (N, 3) with the pose ``ref_from_world`` (4x4) and the full-image
    pinhole ``cam`` = (fx, fy, cx, cy, width, height); keep a point only where it is valid at every
    level; L2-normalise the kept samples."""
    xyz_t = torch.from_numpy(xyz).double()
    T = torch.from_numpy(ref_from_world).double()
    p_cam = xyz_t @ T[:3, :3].T + T[:3, 3]
    feats, confs, keep = [], [], torch.ones(len(xyz), dtype=torch.bool)
    for level, stride in enumerate(STRIDES):
        fmap = raw_maps[level].double()
        cmap = confidence_maps[level].double()
        p, visible = project(PinholeLevel.of(*cam, stride), p_cam)
        keep &= visible & inside_map(p, fmap, pad)
        feats.append(sample(fmap, p))
        confs.append(sample(cmap, p)[:, 0])
    return Observations(keep.numpy(), [F.normalize(f[keep], dim=-1) for f in feats], [c[keep] for c in confs])


@dataclass
class LevelOutcome:
    R: torch.Tensor  # (3, 3) float64 cam_from_world rotation after the level
    t: torch.Tensor  # (3,)
    iterations: int  # iterations run (the stop is tested after 1, 11, 21, ...)
    failed: bool  # fewer than 10 valid points at some iteration


def refine_level(query_features: torch.Tensor, query_confidence: torch.Tensor, xyz: torch.Tensor,
                 ref_features: torch.Tensor, ref_confidence: torch.Tensor, cam: PinholeLevel,
                 R: torch.Tensor, t: torch.Tensor, damping: torch.Tensor, pad: float, num_iters: int) -> LevelOutcome:
    """One level of the learned-damping LM, literally: query_features (C, H, W) L2-normalised,
    query_confidence (1, H, W), xyz (N, 3), ref_features (N, C), ref_confidence (N,), damping (6,)."""
    Fq, Cq = query_features.double(), query_confidence.double()
    failed = False
    i = 0
    for i in range(num_iters):
        p_cam = xyz @ R.T + t
        p, visible = project(cam, p_cam)
        valid = visible & inside_map(p, Fq, pad)
        failed = failed or int(valid.sum()) < MIN_VALID
        res = sample(Fq, p) - ref_features  # (N, C)
        cost = (res ** 2).sum(-1)
        w_loss = 1.0 / (1.0 + cost / (2 * CAUCHY_SCALE ** 2))  # rho'(s) of the Cauchy cost
        weights = w_loss * valid.double() * ref_confidence * sample(Cq, p)[:, 0]
        x, y, z = p_cam[:, 0], p_cam[:, 1], p_cam[:, 2].clamp(min=MIN_DEPTH)
        zero = torch.zeros_like(z)
        J_proj = torch.stack([cam.fx / z, zero, -cam.fx * x / z ** 2,
                              zero, cam.fy / z, -cam.fy * y / z ** 2], -1).view(-1, 2, 3)
        J_pose = torch.cat([torch.eye(3, dtype=z.dtype).expand(len(z), 3, 3), -skew(p_cam)], -1)  # (N, 3, 6)
        J = central_gradient(Fq, p) @ (J_proj @ J_pose)  # (N, C, 6)
        g = torch.einsum("nci,nc,n->i", J, res, weights)
        H = torch.einsum("nci,ncj,n->ij", J, J, weights)
        Hd = H + torch.diag((damping.double() * H.diagonal()).clamp(min=LAMBDA_MIN))
        if failed:
            delta = torch.zeros(6, dtype=torch.float64)
        else:
            delta = -torch.cholesky_solve(g[:, None], torch.linalg.cholesky(Hd))[:, 0]
        dR = rodrigues(delta[3:])
        R, t = dR @ R, dR @ t + delta[:3]
        if i % CHECK_EVERY == 0:
            angle = math.degrees(math.acos(max(-1.0, min(1.0, (float(dR.trace()) - 1) / 2))))
            if (float(delta[:3].norm()) < STOP_DT_M and angle < STOP_DR_DEG) or float(g.norm()) < STOP_GRAD:
                break
    return LevelOutcome(R, t, i + 1, failed)


def refine(query_features, query_confidences, xyz: np.ndarray, obs: Observations, cam, init_from_world: np.ndarray,
           damping: torch.Tensor, pad: float, num_iters: int = 100) -> tuple[np.ndarray, list[LevelOutcome]]:
    """Coarse to fine (levels 2, 1, 0) from ``init_from_world`` (4x4); returns the final 4x4 pose
    and the outcome of each level, finest first. ``damping`` (3, 6) finest first."""
    pts = torch.from_numpy(xyz[obs.keep]).double()
    T = torch.from_numpy(init_from_world).double()
    R, t = T[:3, :3], T[:3, 3]
    outcomes: dict[int, LevelOutcome] = {}
    for level in (2, 1, 0):
        out = refine_level(query_features[level], query_confidences[level], pts, obs.features[level],
                           obs.confidences[level], PinholeLevel.of(*cam, STRIDES[level]), R, t,
                           damping[level], pad, num_iters)
        outcomes[level] = out
        R, t = out.R, out.t
    pose = np.eye(4)
    pose[:3, :3], pose[:3, 3] = R.numpy(), t.numpy()
    return pose, [outcomes[level] for level in range(3)]
