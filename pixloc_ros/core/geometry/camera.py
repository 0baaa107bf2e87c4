"""Batched pinhole camera with OpenCV radial-tangential distortion (k1 k2 p1 p2 k3), in torch.

Internal parameters, last dimension of ``Camera.data`` (..., 11):
``[w, h, fx, fy, cx, cy, k1, k2, p1, p2, k3]`` in pixels, pixel origin at the CENTRE of the
top-left pixel (OpenCV / ROS ``CameraInfo``). COLMAP puts the origin at the corner of that
pixel: ``from_colmap`` / ``to_colmap`` shift the principal point by 0.5 px.

Projection of a camera-frame point ``p = (x, y, z)``: ``n = (x/z, y/z)``,
``r2 = |n|^2``, ``d = n (1 + k1 r2 + k2 r2^2 + k3 r2^3) + (2 p1 nx ny + p2 (r2 + 2 nx^2),
p1 (r2 + 2 ny^2) + 2 p2 nx ny)``, pixel ``= f * d + c`` (OpenCV's model without k4..k6).

Hand-written (OpenCV's projectPoints has no batched torch/autograd path); the analytic
Jacobians are tested against autograd in float64.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

# Points closer than this to the camera plane (metres, camera z) are invalid: the projection
# blows up and PixLoc uses the same threshold.
MIN_DEPTH = 1e-3

# COLMAP model name -> (id, parameter names) for the models this engine represents exactly.
COLMAP_MODELS = {
    "SIMPLE_PINHOLE": (0, ("f", "cx", "cy")),
    "PINHOLE": (1, ("fx", "fy", "cx", "cy")),
    "SIMPLE_RADIAL": (2, ("f", "cx", "cy", "k")),
    "RADIAL": (3, ("f", "cx", "cy", "k1", "k2")),
    "OPENCV": (4, ("fx", "fy", "cx", "cy", "k1", "k2", "p1", "p2")),
    "FULL_OPENCV": (6, ("fx", "fy", "cx", "cy", "k1", "k2", "p1", "p2", "k3", "k4", "k5", "k6")),
}
_COLMAP_ID_TO_NAME = {v[0]: k for k, v in COLMAP_MODELS.items()}


@dataclass
class ColmapCameraParams:
    """A camera in COLMAP's terms: ``model`` name, size in pixels, ``params`` in COLMAP's order
    and pixel convention (origin at the corner of the top-left pixel)."""

    model: str
    width: int
    height: int
    params: np.ndarray  # (P,) float64


def _model_name(model) -> str:
    """Accept a COLMAP model as name, numeric id, or an enum with ``.name`` (pycolmap)."""
    if isinstance(model, str):
        return model.upper()
    if hasattr(model, "name"):
        return str(model.name).upper()
    if isinstance(model, (int, np.integer)) and int(model) in _COLMAP_ID_TO_NAME:
        return _COLMAP_ID_TO_NAME[int(model)]
    raise ValueError(f"Unsupported camera model {model!r}")


def _max_undistorted_r2(dist: torch.Tensor) -> torch.Tensor:
    """Largest squared normalised radius for which the radial distortion is monotonic.

    ``d(r) = r (1 + k1 r^2 + k2 r^4 + k3 r^6)`` is monotonic while
    ``d'(r) = 1 + 3 k1 u + 5 k2 u^2 + 7 k3 u^3 > 0`` (``u = r^2``). With ``v = 1/u`` the roots
    are those of the monic cubic ``v^3 + 3 k1 v^2 + 5 k2 v + 7 k3`` (well defined whatever
    coefficient vanishes); the bound is ``1 / max positive real root`` (inf when none).
    Computed once per camera in float64 on the CPU. dist (..., 5) -> (...).
    """
    d = dist.detach().to("cpu", torch.float64)
    k1, k2, k3 = d[..., 0], d[..., 1], d[..., 4]
    comp = torch.zeros(*d.shape[:-1], 3, 3, dtype=torch.float64)
    comp[..., 0, 0] = -3 * k1
    comp[..., 0, 1] = -5 * k2
    comp[..., 0, 2] = -7 * k3
    comp[..., 1, 0] = 1
    comp[..., 2, 1] = 1
    roots = torch.linalg.eigvals(comp)
    real = roots.real
    # A near-real pair (|imag| ~ sqrt(eps)) is a double root: d' touches 0 there, counted as the bound.
    is_real = roots.imag.abs() <= 1e-6 * real.abs().clamp(min=1.0)
    # Roots v <= 1e-6 mean u >= 1e6, i.e. rays at more than 89.94 deg: no practical bound.
    v = torch.where(is_real & (real > 1e-6), real, torch.zeros_like(real)).amax(-1)
    no_dist = (k1 == 0) & (k2 == 0) & (k3 == 0)
    u = torch.where((v > 0) & ~no_dist, 1.0 / v.clamp(min=1e-300), torch.full_like(v, float("inf")))
    return u.to(device=dist.device, dtype=dist.dtype)


class Camera:
    """A batch of cameras; ``data`` (..., 11) = [w, h, fx, fy, cx, cy, k1, k2, p1, p2, k3]."""

    def __init__(self, data: torch.Tensor):
        if data.shape[-1] != 11:
            raise ValueError(f"Camera data must be (..., 11), got {tuple(data.shape)}")
        self.data = data
        self._max_r2: torch.Tensor | None = None  # cached monotonic-range bound, (...)

    # ---- constructors -------------------------------------------------------------------
    @classmethod
    def from_params(cls, width: float, height: float, fx: float, fy: float, cx: float, cy: float,
                    dist: Sequence[float] = (), dtype: torch.dtype = torch.float64,
                    device: torch.device | str | None = None) -> "Camera":
        """From plain values in the engine convention (pixel-centre origin); ``dist`` holds up
        to 5 values k1 k2 p1 p2 k3 (missing ones are 0)."""
        dist = list(dist)
        if len(dist) > 5:
            raise ValueError(f"at most 5 distortion values (k1 k2 p1 p2 k3), got {len(dist)}")
        values = [width, height, fx, fy, cx, cy] + dist + [0.0] * (5 - len(dist))
        return cls(torch.tensor([float(v) for v in values], dtype=dtype, device=device))

    @classmethod
    def from_colmap(cls, model, width: int, height: int, params, dtype: torch.dtype = torch.float64,
                    device: torch.device | str | None = None) -> "Camera":
        """From a COLMAP camera (name, numeric id or pycolmap enum; params in COLMAP order).

        Supports SIMPLE_PINHOLE, PINHOLE, SIMPLE_RADIAL, RADIAL, OPENCV, and FULL_OPENCV when
        k4 = k5 = k6 = 0. The principal point moves by -0.5 px (COLMAP's origin is the corner of
        the top-left pixel, ours its centre).
        """
        name = _model_name(model)
        p = [float(x) for x in np.asarray(params, dtype=np.float64).reshape(-1)]
        if name not in COLMAP_MODELS:
            raise ValueError(f"Unsupported camera model {name!r} (supported: {', '.join(COLMAP_MODELS)})")
        expected = COLMAP_MODELS[name][1]
        if len(p) != len(expected):
            raise ValueError(f"COLMAP model {name!r} takes {len(expected)} params {expected}, got {len(p)}")
        if name == "SIMPLE_PINHOLE":
            f, cx, cy = p
            fx, fy, dist = f, f, []
        elif name == "PINHOLE":
            fx, fy, cx, cy = p
            dist = []
        elif name == "SIMPLE_RADIAL":
            f, cx, cy, k = p
            fx, fy, dist = f, f, [k]
        elif name == "RADIAL":
            f, cx, cy, k1, k2 = p
            fx, fy, dist = f, f, [k1, k2]
        elif name == "OPENCV":
            fx, fy, cx, cy = p[:4]
            dist = p[4:]
        else:  # FULL_OPENCV: rational model, representable only without the denominator terms
            if any(v != 0 for v in p[9:]):
                raise ValueError(f"Unsupported camera model {name!r} with non-zero k4..k6 {p[9:]} "
                                 "(rational distortion is not implemented)")
            fx, fy, cx, cy = p[:4]
            dist = p[4:9]
        if fx <= 0 or fy <= 0 or width <= 0 or height <= 0:
            raise ValueError(f"COLMAP camera {name!r} has non-positive focal or size: "
                             f"f=({fx}, {fy}), size=({width}, {height})")
        return cls.from_params(width, height, fx, fy, cx - 0.5, cy - 0.5, dist, dtype, device)

    def to_colmap(self) -> ColmapCameraParams:
        """The simplest COLMAP model that represents this (single) camera exactly, principal
        point shifted by +0.5 px to COLMAP's convention."""
        if self.shape != ():
            raise ValueError(f"to_colmap needs a single camera, got batch shape {tuple(self.shape)}")
        w, h, fx, fy, cx, cy, k1, k2, p1, p2, k3 = [float(v) for v in self.data.detach().cpu().double()]
        cx, cy = cx + 0.5, cy + 0.5
        if k3 != 0:
            model, params = "FULL_OPENCV", [fx, fy, cx, cy, k1, k2, p1, p2, k3, 0.0, 0.0, 0.0]
        elif p1 != 0 or p2 != 0 or (fx != fy and (k1 != 0 or k2 != 0)):
            model, params = "OPENCV", [fx, fy, cx, cy, k1, k2, p1, p2]
        elif fx != fy:
            model, params = "PINHOLE", [fx, fy, cx, cy]
        elif k2 != 0:
            model, params = "RADIAL", [fx, cx, cy, k1, k2]
        elif k1 != 0:
            model, params = "SIMPLE_RADIAL", [fx, cx, cy, k1]
        else:
            model, params = "SIMPLE_PINHOLE", [fx, cx, cy]
        return ColmapCameraParams(model, int(round(w)), int(round(h)), np.array(params, np.float64))

    @classmethod
    def from_camera_info(cls, width: int, height: int, K: Sequence[float], D: Sequence[float],
                         distortion_model: str, dtype: torch.dtype = torch.float64,
                         device: torch.device | str | None = None) -> "Camera":
        """From the fields of a ROS ``sensor_msgs/CameraInfo`` (plain values, no message type).

        K: 9 values, row-major 3x3 intrinsics (pixel-centre origin, as ours). D: distortion.
        ``plumb_bob``: up to 5 values k1 k2 p1 p2 k3. ``rational_polynomial``: k1 k2 p1 p2 k3
        k4 k5 k6, accepted only when k4 = k5 = k6 = 0. An empty model name is accepted when D
        is empty or all zero. Anything else (equidistant, fisheye, ...) raises ValueError naming it.
        """
        K = [float(v) for v in np.asarray(K, dtype=np.float64).reshape(-1)]
        D = [float(v) for v in np.asarray(D, dtype=np.float64).reshape(-1)]
        name = distortion_model or ""
        if len(K) != 9:
            raise ValueError(f"CameraInfo K must have 9 values, got {len(K)}")
        fx, skew_, cx, _, fy, cy = K[0], K[1], K[2], K[3], K[4], K[5]
        if fx == 0 or fy == 0:
            raise ValueError(f"CameraInfo K has a zero focal length (fx={fx}, fy={fy}): uncalibrated camera")
        if fx < 0 or fy < 0 or not np.isfinite(K).all():
            raise ValueError(f"CameraInfo K is invalid: {K}")
        if skew_ != 0 or K[3] != 0 or K[6] != 0 or K[7] != 0 or K[8] != 1:
            raise ValueError(f"CameraInfo K must be [fx 0 cx; 0 fy cy; 0 0 1], got {K}")
        if width <= 0 or height <= 0:
            raise ValueError(f"CameraInfo has a non-positive image size {width}x{height}")
        if name == "plumb_bob":
            if len(D) > 5:
                raise ValueError(f"distortion model 'plumb_bob' takes at most 5 values, got {len(D)}")
            dist = D
        elif name == "rational_polynomial":
            if len(D) > 8:
                raise ValueError(f"distortion model 'rational_polynomial' takes at most 8 values, got {len(D)}")
            if any(v != 0 for v in D[5:]):
                raise ValueError(f"Unsupported distortion model 'rational_polynomial' with non-zero "
                                 f"k4..k6 {D[5:]}: only its plumb_bob subset is implemented")
            dist = D[:5]
        elif name in ("", "none") and all(v == 0 for v in D):
            dist = []
        else:
            raise ValueError(f"Unsupported distortion model {name!r} (supported: 'plumb_bob', "
                             "'rational_polynomial' with k4..k6 = 0)")
        return cls.from_params(width, height, fx, fy, cx, cy, dist, dtype, device)

    @classmethod
    def stack(cls, cameras: Sequence["Camera"]) -> "Camera":
        """Stack cameras of equal batch shape along a new first dimension."""
        return cls(torch.stack([c.data for c in cameras], 0))

    # ---- parameters ---------------------------------------------------------------------
    @property
    def size(self) -> torch.Tensor:
        """(..., 2) image size (w, h) in pixels."""
        return self.data[..., 0:2]

    @property
    def f(self) -> torch.Tensor:
        """(..., 2) focal lengths (fx, fy) in pixels."""
        return self.data[..., 2:4]

    @property
    def c(self) -> torch.Tensor:
        """(..., 2) principal point (cx, cy), pixel-centre origin."""
        return self.data[..., 4:6]

    @property
    def dist(self) -> torch.Tensor:
        """(..., 5) distortion k1 k2 p1 p2 k3."""
        return self.data[..., 6:11]

    @property
    def K(self) -> torch.Tensor:
        """(..., 3, 3) intrinsic matrices (pixel-centre origin)."""
        K = torch.zeros(*self.shape, 3, 3, dtype=self.dtype, device=self.device)
        K[..., 0, 0], K[..., 1, 1] = self.f[..., 0], self.f[..., 1]
        K[..., 0, 2], K[..., 1, 2] = self.c[..., 0], self.c[..., 1]
        K[..., 2, 2] = 1
        return K

    @property
    def max_r2(self) -> torch.Tensor:
        """(...) squared normalised radius bounding the monotonic range of the distortion (cached)."""
        if self._max_r2 is None:
            self._max_r2 = _max_undistorted_r2(self.dist)
        return self._max_r2

    def scale(self, s: float | Sequence[float] | torch.Tensor) -> "Camera":
        """Camera of the image resized by ``s`` (scalar or (sx, sy)): size * s, f * s,
        c' = (c + 0.5) s - 0.5 (pixel centres). A stride-k feature level uses s = 1/k."""
        s = torch.as_tensor(s, dtype=self.dtype, device=self.device)
        s = s.expand(*s.shape[:-1], 2) if s.ndim else s.expand(2)
        data = torch.cat([self.size * s, self.f * s, (self.c + 0.5) * s - 0.5, self.dist], -1)
        cam = Camera(data)
        cam._max_r2 = self._max_r2  # distortion acts on normalised coordinates: unchanged
        return cam

    # ---- projection ---------------------------------------------------------------------
    def distort(self, p_n: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Distort normalised points (..., N, 2) -> (distorted (..., N, 2), valid (..., N)).

        Valid: inside the monotonic range of the radial distortion (the tangential terms are
        not part of the check; they are small for real lenses)."""
        k = self.dist[..., None, :]
        k1, k2, p1, p2, k3 = k.unbind(-1)
        x, y = p_n.unbind(-1)
        r2 = x * x + y * y
        radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
        dx = 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
        dy = p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
        out = torch.stack([x * radial + dx, y * radial + dy], -1)
        valid = r2 < self.max_r2[..., None]
        return out, valid

    def J_distort(self, p_n: torch.Tensor) -> torch.Tensor:
        """Jacobian of ``distort`` w.r.t. the normalised point: (..., N, 2) -> (..., N, 2, 2)."""
        k = self.dist[..., None, :]
        k1, k2, p1, p2, k3 = k.unbind(-1)
        x, y = p_n.unbind(-1)
        r2 = x * x + y * y
        radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
        d_radial = k1 + r2 * (2 * k2 + 3 * k3 * r2)  # d radial / d r2
        dxx = radial + 2 * x * x * d_radial + 2 * p1 * y + 6 * p2 * x
        dxy = 2 * x * y * d_radial + 2 * p1 * x + 2 * p2 * y
        dyy = radial + 2 * y * y * d_radial + 6 * p1 * y + 2 * p2 * x
        return torch.stack([dxx, dxy, dxy, dyy], -1).reshape(*p_n.shape[:-1], 2, 2)

    @staticmethod
    def project(p_cam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Perspective division (..., N, 3) -> (normalised (..., N, 2), valid = z > MIN_DEPTH)."""
        z = p_cam[..., 2]
        valid = z > MIN_DEPTH
        return p_cam[..., :2] / z.clamp(min=MIN_DEPTH)[..., None], valid

    @staticmethod
    def J_project(p_cam: torch.Tensor) -> torch.Tensor:
        """Jacobian of ``project``: (..., N, 3) -> (..., N, 2, 3) = [[1/z, 0, -x/z^2], [0, 1/z, -y/z^2]]."""
        x, y, z = p_cam.unbind(-1)
        inv_z = 1 / z.clamp(min=MIN_DEPTH)
        o = torch.zeros_like(x)
        return torch.stack([inv_z, o, -x * inv_z * inv_z, o, inv_z, -y * inv_z * inv_z], -1
                           ).reshape(*p_cam.shape[:-1], 2, 3)

    def world2image(self, p_cam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Camera-frame points (..., N, 3) -> (pixels (..., N, 2), valid (..., N)).

        Valid: z > MIN_DEPTH and inside the distortion's monotonic range (not an image-bounds
        check: see ``in_image``). The camera batch broadcasts over N."""
        p_n, v_z = self.project(p_cam)
        p_d, v_d = self.distort(p_n)
        return p_d * self.f[..., None, :] + self.c[..., None, :], v_z & v_d

    def J_world2image(self, p_cam: torch.Tensor) -> torch.Tensor:
        """Jacobian of ``world2image`` w.r.t. the camera-frame point: (..., N, 3) -> (..., N, 2, 3)."""
        p_n, _ = self.project(p_cam)
        J = self.J_distort(p_n) @ self.J_project(p_cam)
        return J * self.f[..., None, :, None]

    def world2image_with_jacobian(self, p_cam: torch.Tensor
                                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``world2image`` and ``J_world2image`` sharing the intermediate terms (optimizer hot path)."""
        p_n, v_z = self.project(p_cam)
        p_d, v_d = self.distort(p_n)
        f = self.f[..., None, :]
        p2d = p_d * f + self.c[..., None, :]
        J = (self.J_distort(p_n) @ self.J_project(p_cam)) * f[..., None]
        return p2d, v_z & v_d, J

    def in_image(self, p2d: torch.Tensor, pad: float = 0.0) -> torch.Tensor:
        """(..., N, 2) pixels -> (..., N) inside [pad, size - 1 - pad] on both axes
        (pixel-centre origin: the outermost pixel centres are 0 and size - 1)."""
        size = self.size[..., None, :]
        return ((p2d >= pad) & (p2d <= size - 1 - pad)).all(-1)

    def undistort_points(self, p2d: torch.Tensor, iters: int = 20
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixels (..., N, 2) -> (normalised undistorted (x/z, y/z) (..., N, 2), valid (..., N)).

        Newton iterations on ``distort(n) = (p - c) / f`` from ``n = (p - c) / f``; valid when the
        result is in the monotonic range and reproduces the input within 1e-6 (normalised units).
        """
        target = (p2d - self.c[..., None, :]) / self.f[..., None, :]
        n = target.clone()
        for _ in range(iters):
            d, _ = self.distort(n)
            e = d - target
            J = self.J_distort(n)
            a, b, c, dd = J[..., 0, 0], J[..., 0, 1], J[..., 1, 0], J[..., 1, 1]
            det = a * dd - b * c
            det = torch.where(det.abs() < 1e-12, torch.full_like(det, 1e-12), det)
            step = torch.stack([(dd * e[..., 0] - b * e[..., 1]) / det,
                                (-c * e[..., 0] + a * e[..., 1]) / det], -1)
            n = n - step
        d, valid = self.distort(n)
        valid = valid & ((d - target).norm(dim=-1) < 1e-6) & torch.isfinite(n).all(-1)
        return n, valid

    # ---- tensor-like behaviour ----------------------------------------------------------
    @property
    def shape(self) -> torch.Size:
        return self.data.shape[:-1]

    @property
    def dtype(self) -> torch.dtype:
        return self.data.dtype

    @property
    def device(self) -> torch.device:
        return self.data.device

    def __getitem__(self, index) -> "Camera":
        if not isinstance(index, tuple):
            index = (index,)
        return Camera(self.data[index + (Ellipsis, slice(None))])

    def __len__(self) -> int:
        if len(self.shape) == 0:
            raise TypeError("len() of a single Camera")
        return self.shape[0]

    def to(self, *args, **kwargs) -> "Camera":
        """Same arguments as ``torch.Tensor.to``; keeps the cached distortion bound."""
        cam = Camera(self.data.to(*args, **kwargs))
        if self._max_r2 is not None:
            cam._max_r2 = self._max_r2.to(device=cam.device, dtype=cam.dtype)
        return cam

    def float(self) -> "Camera":
        return self.to(torch.float32)

    def double(self) -> "Camera":
        return self.to(torch.float64)

    def __repr__(self) -> str:
        if self.shape == ():
            return f"Camera({[round(float(v), 4) for v in self.data]})"
        return f"Camera(shape={tuple(self.shape)}, dtype={self.dtype})"


def random_points_in_view(camera: Camera, count: int, generator: torch.Generator,
                          min_depth_m: float, max_depth_m: float) -> torch.Tensor:
    """(count, 3) float64 points in ``camera``'s frame (x right, y down, z forward, metres): pixels
    drawn uniformly over the image, depths uniformly in [min_depth_m, max_depth_m], back-projected
    through the pinhole (distortion ignored). Synthetic problems for benchmarks and warm-ups."""
    w, h = (float(v) for v in camera.size)
    uv = torch.rand(count, 2, generator=generator, dtype=torch.float64) * torch.tensor([w - 1.0, h - 1.0], dtype=torch.float64)
    depth = min_depth_m + (max_depth_m - min_depth_m) * torch.rand(count, 1, generator=generator, dtype=torch.float64)
    f, c = camera.f.to(torch.float64), camera.c.to(torch.float64)
    return torch.cat([(uv - c) / f, torch.ones(count, 1, dtype=torch.float64)], -1) * depth
