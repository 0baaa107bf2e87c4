"""A synthetic scene with known dense features, for optimizer / localizer / covariance tests.

The camera stands inside a closed box (floor, ceiling, four walls), so every pixel's ray hits
exactly one plane and nothing occludes anything. Each level's features are smooth functions of
the 3D surface point, ``f_c(X) = sin(omega_c . X + phi_c)`` L2-normalised over channels, with a
wavelength that suits the level's pixel footprint (coarse: metres, fine: under a metre).
Query feature maps are "rendered" by casting each pixel's ray; reference features are the same
functions evaluated at 3D points on the surfaces, i.e. exactly what the true pose projects.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from pixloc_ros.core.geometry.camera import Camera
from pixloc_ros.core.geometry.pose import Pose, so3_exp
from pixloc_ros.core.engine.query_points import QueryPoints

STRIDES = (1, 4, 16)
WAVELENGTHS_M = (1.2, 4.0, 15.0)  # per level, finest first


@dataclass
class BoxScene:
    """Box [-x_half, x_half] x [y_top, y_floor] x [z_back, z_front] (camera-like axes: y down)."""

    channels: int = 16
    seed: int = 0
    x_half: float = 8.0
    y_top: float = -7.0
    y_floor: float = 1.6
    z_back: float = -30.0
    z_front: float = 45.0

    def __post_init__(self):
        g = torch.Generator().manual_seed(self.seed)
        self.omegas, self.phases = [], []
        for wl in WAVELENGTHS_M:
            d = torch.randn(self.channels, 3, generator=g, dtype=torch.float64)
            d = d / d.norm(dim=-1, keepdim=True)
            # spread the wavelengths a little around the level's nominal one
            k = 2 * math.pi / wl * (0.7 + 0.6 * torch.rand(self.channels, 1, generator=g, dtype=torch.float64))
            self.omegas.append(d * k)
            self.phases.append(2 * math.pi * torch.rand(self.channels, generator=g, dtype=torch.float64))
        # planes n . X = d with the inside at n . X < d
        self.normals = torch.tensor([[1.0, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]],
                                    dtype=torch.float64)
        self.offsets = torch.tensor([self.x_half, self.x_half, self.y_floor, -self.y_top, self.z_front,
                                     -self.z_back], dtype=torch.float64)

    def features(self, X: torch.Tensor, level: int) -> torch.Tensor:
        """(..., 3) surface points -> (..., C) L2-normalised features of ``level``."""
        f = torch.sin(X.double() @ self.omegas[level].T + self.phases[level])
        return f / f.norm(dim=-1, keepdim=True).clamp(min=1e-9)

    def intersect(self, origin: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
        """First hit of rays origin (3,) + s dirs (..., 3), s > 0, with the box -> (..., 3)."""
        nd = dirs @ self.normals.T  # (..., 6)
        s = (self.offsets - self.normals @ origin) / torch.where(nd.abs() < 1e-12, torch.full_like(nd, 1e-12), nd)
        s = torch.where(s > 0, s, torch.full_like(s, math.inf)).amin(-1)
        return origin + s[..., None] * dirs

    def rays(self, camera: Camera, cam_from_world: Pose, p2d: torch.Tensor) -> torch.Tensor:
        """Surface points seen at pixels p2d (..., 2) of a pinhole camera."""
        dirs_cam = torch.cat([(p2d - camera.c) / camera.f, torch.ones_like(p2d[..., :1])], -1)
        R, t = cam_from_world.R.double(), cam_from_world.t.double()
        return self.intersect(-R.T @ t, dirs_cam @ R)

    def render(self, camera: Camera, cam_from_world: Pose, level: int) -> torch.Tensor:
        """Feature map (C, H, W) float32 of the full-resolution pinhole ``camera`` at ``level``."""
        cam = camera.scale(1 / STRIDES[level])
        w, h = int(cam.size[0]), int(cam.size[1])
        ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64),
                                indexing="ij")
        X = self.rays(cam, cam_from_world, torch.stack([xs, ys], -1))
        return self.features(X, level).permute(2, 0, 1).float().contiguous()

    def sample_points(self, camera: Camera, cam_from_world: Pose, n: int, seed: int = 0,
                      margin: float = 20.0) -> torch.Tensor:
        """n surface points (n, 3) visible at random pixels of the true view (``margin`` px from the border)."""
        g = torch.Generator().manual_seed(seed)
        size = camera.size.double()
        p2d = margin + torch.rand(n, 2, generator=g, dtype=torch.float64) * (size - 1 - 2 * margin)
        return self.rays(camera, cam_from_world, p2d)

    def query_points(self, xyz: torch.Tensor, noise_std: float = 0.0, seed: int = 0) -> QueryPoints:
        """QueryPoints with exact reference features (plus optional Gaussian noise per channel)."""
        g = torch.Generator().manual_seed(seed)
        feats = []
        for level in range(3):
            f = self.features(xyz, level)
            if noise_std > 0:
                f = f + noise_std * torch.randn(f.shape, generator=g, dtype=f.dtype)
            feats.append(f.float())
        n = xyz.shape[0]
        return QueryPoints(xyz.float(), feats, [torch.ones(n) for _ in range(3)],
                           torch.arange(n), torch.full((n,), -1))


def default_camera() -> Camera:
    """640x480 pinhole, f = 500 px."""
    return Camera.from_params(640, 480, 500.0, 500.0, 319.5, 239.5)


def true_pose() -> Pose:
    """A camera 1.2 m above the floor, looking roughly down the box (+z), slightly rotated."""
    R = so3_exp(torch.tensor([0.03, 0.2, -0.02], dtype=torch.float64))
    centre = torch.tensor([1.0, 0.4, -5.0], dtype=torch.float64)
    return Pose.from_Rt(R, -R @ centre)


def perturb(pose: Pose, rot_deg: float, trans_m: float, seed: int) -> Pose:
    """Left-perturb ``cam_from_world`` by a random rotation of ``rot_deg`` about the camera centre
    and a camera-centre shift of ``trans_m`` in a random direction."""
    g = torch.Generator().manual_seed(seed)
    axis = torch.randn(3, generator=g, dtype=torch.float64)
    axis = axis / axis.norm()
    shift = torch.randn(3, generator=g, dtype=torch.float64)
    shift = shift / shift.norm() * trans_m
    world_from_cam = pose.inv()
    centre = world_from_cam.t + shift
    R = so3_exp(axis * math.radians(rot_deg)) @ pose.R
    return Pose.from_Rt(R, -R @ centre)
