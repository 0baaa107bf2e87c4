"""Keyframe and point retrieval from a compiled map: "what is near this prior?" in well under 1 ms.

``MapIndex`` opens a map file (``core/maps/mapfile.py``), builds a KD-tree (scipy) over the keyframe
centres, and answers:

- ``retrieve(cam_from_world, ...)``: the k keyframes nearest the prior camera centre whose
  optical axes point within ``max_heading_diff_deg`` of the prior's, the points they observe
  (track length >= 3, optionally inside the prior's frustum) and their precomputed reference
  features, as ``QueryPoints`` for the localizer. Two modes, as in PixLoc's CMU settings:
  "observations" (every (point, keyframe) observation is its own residual, the reference's
  default) or "averaged" (one row per point: confidence-weighted mean feature, renormalised,
  and mean confidence, as the reference's ``average_observations``).
- keyframe poses and centres (RViz markers), the map's bounds and distance to the nearest
  keyframe (is the prior inside the map?), ``lift_2d_pose`` (RViz's 2D initial pose to 6-DoF),
  ``gnss_to_map`` (through the map's georeference) and the weights fingerprint.

The "heading" difference is the 3D angle between optical axes: it needs no gravity direction,
so it works for maps that are not georeferenced, and for upright cars it equals the yaw
difference up to the (small) pitch differences.

A tiled map (``core/maps/tiles.py``) is answered by ``core.maps.tiled_index.TiledMapIndex``, a subclass
that reads observations from the tiles loaded around the vehicle; ``open_map_index`` opens
either. The subclass overrides the three hooks ``_usable``, ``_keyframe_blocks`` and
``num_points``; each block of observations indexes the ``PointTable`` of its own file.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from pixloc_ros.core.geometry.camera import MIN_DEPTH, Camera
from pixloc_ros.core.geometry.georef import Georeference
from pixloc_ros.core.geometry.transforms import as_transform
from pixloc_ros.core.maps.mapfile_format import LevelInfo, MapFileError, Observations
from pixloc_ros.core.maps.mapfile import MapFile, open_map
from pixloc_ros.core.engine.query_points import QueryPoints
from .point_table import PointTable


MODES = ("observations", "averaged")
# base_link (x forward, y left, z up, REP-103) from a forward-looking camera optical frame
# (z forward, x right, y down) at the same origin: the default mounting for ``lift_2d_pose``.
BASE_FROM_OPTICAL = np.array([[0.0, 0.0, 1.0, 0.0],
                              [-1.0, 0.0, 0.0, 0.0],
                              [0.0, -1.0, 0.0, 0.0],
                              [0.0, 0.0, 0.0, 1.0]])


@dataclass
class RetrievalConfig:
    """How ``MapIndex.retrieve`` picks keyframes and points."""

    num_keyframes: int = 2  # k; PixLoc's CMU setting uses 2 reference images
    max_heading_diff_deg: float = 60.0  # max angle between the prior's and a keyframe's optical axes
    max_distance_m: float = 50.0  # keyframes farther than this from the prior centre are never used
    mode: str = "observations"  # "observations" (one row per observation) or "averaged" (one per point)
    min_track_length: int = 3  # SfM track length a point needs (PixLoc: 3)
    frustum_margin: float = 0.25  # frustum check keeps points up to this fraction of the size outside the image
    frustum_max_depth_m: float = math.inf  # and closer than this (camera z)
    candidates: int = 8  # nearest keyframes examined before the heading filter (doubles if too few pass)

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"Unsupported retrieval mode {self.mode!r}, expected one of {MODES}")
        if self.num_keyframes < 1:
            raise ValueError(f"num_keyframes must be >= 1, got {self.num_keyframes}")


@dataclass
class MapBounds:
    """Axis-aligned box around the keyframe centres, metres in the map frame."""

    min: np.ndarray  # (3,)
    max: np.ndarray  # (3,)

    def contains(self, position, margin_m: float = 0.0) -> bool:
        """Whether ``position`` (3,) lies inside the box grown by ``margin_m``."""
        p = np.asarray(position, np.float64)
        return bool(np.all(p >= self.min - margin_m) and np.all(p <= self.max + margin_m))


@dataclass
class Retrieval:
    """What ``MapIndex.retrieve`` found for one prior."""

    keyframe_indices: np.ndarray  # (k,) int64 rows in the map, nearest first
    keyframe_ids: np.ndarray  # (k,) int64 COLMAP image ids of those keyframes
    distances_m: np.ndarray  # (k,) keyframe centre to prior centre
    heading_diffs_deg: np.ndarray  # (k,) angle between optical axes
    points: QueryPoints  # rows for the localizer (CPU tensors; features float16)
    num_observations: int  # observation rows of the keyframes before filtering
    num_dropped_track: int  # rows dropped for a short track
    num_dropped_frustum: int  # rows dropped by the frustum check
    mode: str = "observations"

    def __len__(self) -> int:
        return len(self.points)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


class MapIndex:
    """A compiled map opened for retrieval. Build with ``MapIndex.open(path, fingerprint)``
    (one map file) or ``open_map_index`` (a map file or a tiled map folder)."""

    def __init__(self, mapfile: MapFile):
        tiling = mapfile.header.compile_info.get("tiled_map")
        if isinstance(tiling, dict) and tiling.get("role") == "index":
            raise MapFileError(f"{mapfile.path} is the index of a tiled map: open its folder "
                               f"{mapfile.path.parent} (open_map_index) instead")
        self.map = mapfile
        self.path = mapfile.path
        self._init_keyframes(mapfile, np.diff(np.asarray(mapfile.keyframe_obs_offsets)) > 0)
        # Views into the mapping (no copy): the CRC check on open has just read these pages, so
        # the random access of every query hits the page cache.
        self._points = PointTable.of(mapfile)

    def _init_keyframes(self, mapfile: MapFile, has_observations: np.ndarray) -> None:
        """Keyframe poses, centres, view directions and KD-trees from ``mapfile``'s keyframe arrays."""
        R = np.asarray(mapfile.keyframe_R, np.float64)
        t = np.asarray(mapfile.keyframe_t, np.float64)
        K = len(R)
        T = np.tile(np.eye(4), (K, 1, 1))
        T[:, :3, :3], T[:, :3, 3] = R, t
        self.keyframe_cam_from_world = T  # (K, 4, 4)
        Tinv = np.tile(np.eye(4), (K, 1, 1))
        Tinv[:, :3, :3] = R.transpose(0, 2, 1)
        Tinv[:, :3, 3] = -np.einsum("kji,kj->ki", R, t)
        self._world_from_cam = Tinv
        self.keyframe_centers = Tinv[:, :3, 3].copy()  # (K, 3) = -R^T t
        self.keyframe_view_dirs = R[:, 2, :].copy()  # (K, 3) optical axis (camera z) in the map frame
        if K == 0:
            raise ValueError(f"{mapfile.path}: the map has no keyframes")
        self._tree = cKDTree(self.keyframe_centers)
        self._tree_xy = cKDTree(self.keyframe_centers[:, :2])
        # Keyframes whose observations all fell outside the feature maps at compile time hold
        # no points: retrieval skips them rather than spend one of its k slots on them.
        self._has_observations = np.asarray(has_observations, bool)
        self._keyframe_ids = np.asarray(mapfile.keyframe_ids)
        self._levels = mapfile.levels
        self._camera_cache = None  # (camera object, its numpy arrays) for the frustum check

    # ---- where observations come from (a tiled map overrides these) ---------------------
    def _usable(self, idx: np.ndarray) -> np.ndarray:
        """(n,) bool: keyframe rows ``idx`` whose observations retrieval can read now."""
        return self._has_observations[idx]

    def _keyframe_blocks(self, kf: np.ndarray) -> list[tuple[Observations, PointTable] | None]:
        """Per keyframe row: its observations (checked on first touch) and the point table they
        index into; None for one that cannot be read now (never for a one-file map)."""
        return [(self.map.keyframe_observations(int(i)), self._points) for i in kf]

    def prefetch(self, position) -> None:
        """Say where the vehicle is about to be (a GNSS fix, an initial pose): a tiled map
        starts loading the tiles around it. Nothing to do for a one-file map."""

    def unavailable_reason(self, position) -> str | None:
        """Why map data near ``position`` cannot be read now (tiles loading or damaged), or None."""
        return None

    def health(self):
        """``core.maps.tile_loader.TileHealth`` of a tiled map (loaded, loading, failed tiles); None for one file."""
        return None

    def close(self) -> None:
        """Release the map (a tiled map also stops its loader thread)."""
        self.map.close()

    @classmethod
    def open(cls, path: str | Path, expected_fingerprint: str | None = None, verify: bool = False,
             expected_profile: str | None = None) -> "MapIndex":
        """Open the map at ``path`` (see ``mapfile.open_map`` for the checks) and index it."""
        return cls(open_map(path, expected_fingerprint, verify, expected_profile))

    def verify(self) -> None:
        """Check the CRC-32 of every keyframe's observations now (reads the whole map once);
        ``mapfile.MapCorruptedError`` naming the damaged keyframe. The node calls this before it
        subscribes, so that a damaged map is a start-up error, not a bad frame later."""
        self.map.verify()

    # ---- map facts ----------------------------------------------------------------------
    @property
    def weights_fingerprint(self) -> str:
        return self.map.weights_fingerprint

    @property
    def georef(self) -> Georeference | None:
        return self.map.header.georef

    @property
    def levels(self) -> list[LevelInfo]:
        return self._levels

    @property
    def num_keyframes(self) -> int:
        return self.map.num_keyframes

    @property
    def num_points(self) -> int:
        return self.map.num_points

    @property
    def keyframe_ids(self) -> np.ndarray:
        """(K,) COLMAP image ids."""
        return self._keyframe_ids

    @property
    def keyframe_names(self) -> list[str]:
        return self.map.header.keyframe_names

    @property
    def keyframe_world_from_cam(self) -> np.ndarray:
        """(K, 4, 4) keyframe poses as camera-to-map transforms (what RViz markers draw); computed once."""
        return self._world_from_cam

    @property
    def bounds(self) -> MapBounds:
        """Box around the keyframe centres."""
        return MapBounds(self.keyframe_centers.min(0), self.keyframe_centers.max(0))

    def distance_to_map(self, position) -> float:
        """Distance (metres) from ``position`` (3,) to the nearest keyframe centre."""
        return float(self._tree.query(np.asarray(position, np.float64).reshape(3))[0])

    def gnss_to_map(self, latitude_deg, longitude_deg, altitude_m) -> np.ndarray:
        """WGS84 fix -> map coordinates (..., 3) through the map's georeference (ValueError if none)."""
        if self.georef is None:
            raise ValueError(f"{self.path} has no georeference: rebuild it with "
                             "`pixloc-ros build-map ... --georef georef.json` to use GNSS priors")
        return self.georef.to_map(latitude_deg, longitude_deg, altitude_m)

    # ---- keyframes ----------------------------------------------------------------------
    def nearest_keyframes(self, position, view_dir=None, k: int = 2, max_heading_diff_deg: float = 180.0,
                          max_distance_m: float = math.inf, candidates: int = 8,
                          require_observations: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Up to ``k`` keyframes nearest ``position`` (3,) within ``max_distance_m`` whose optical
        axis is within ``max_heading_diff_deg`` of ``view_dir`` (3,) (no filter when None), and
        that hold observations if ``require_observations``.

        Returns (indices (n,), distances_m (n,), heading_diffs_deg (n,)), nearest first, n <= k.
        """
        position = np.asarray(position, np.float64).reshape(3)
        num = self.num_keyframes
        cos_max = math.cos(math.radians(min(max_heading_diff_deg, 180.0)))
        d = None if view_dir is None else _unit(np.asarray(view_dir, np.float64).reshape(3))
        n = min(num, max(k, candidates))
        while True:
            dist, idx = self._tree.query(position, k=n, distance_upper_bound=max_distance_m)
            dist, idx = np.atleast_1d(dist), np.atleast_1d(idx)
            found = idx < num  # misses (beyond the distance bound) come back as index == num
            dist, idx = dist[found], idx[found]
            if d is None:
                cosines = np.ones(len(idx))
            else:
                cosines = self.keyframe_view_dirs[idx] @ d
            keep = cosines >= cos_max - 1e-12
            if require_observations:
                keep &= self._usable(idx)
            # Enough survivors, or nothing more to look at (all keyframes seen / the distance
            # bound cut the list): stop; otherwise look at twice as many candidates.
            if keep.sum() >= k or n >= num or not found.all():
                break
            n = min(num, 2 * n)
        sel = np.flatnonzero(keep)
        # Equal distances in keyframe-id order, so the answer does not depend on how the rows are
        # stored (a tiled map stores them by tile): the KD-tree orders ties arbitrarily.
        sel = sel[np.lexsort((self._keyframe_ids[idx[sel]], dist[sel]))][:k]
        angles = np.degrees(np.arccos(np.clip(cosines[sel], -1.0, 1.0)))
        return idx[sel].astype(np.int64), dist[sel], angles

    def keyframe_camera(self, index: int):
        """``core.camera.Camera`` (float64, pixel-centre origin) of keyframe row ``index`` at the
        resolution of its COLMAP camera."""
        cam = self.map.header.cameras[int(self.map.keyframe_camera_index[index])]
        return Camera.from_colmap(cam.model, cam.width, cam.height, np.asarray(cam.params))

    # ---- points -------------------------------------------------------------------------
    def retrieve(self, cam_from_world, *, camera=None, config: RetrievalConfig | None = None,
                 **overrides) -> Retrieval:
        """Keyframes and points for the prior ``cam_from_world`` (4x4 array/tensor, (R, t) or Pose).

        ``camera``: a ``core.camera.Camera`` of the query image; when given, rows whose point
        falls outside the prior's frustum (behind the camera, or beyond ``frustum_margin`` x the
        image size outside it, with the camera's distortion) are dropped. ``config`` or keyword
        overrides of its fields (``num_keyframes=3``, ``mode="averaged"``, ...) set the rest.
        Returns a ``Retrieval``; with no keyframe in range its ``points`` are empty.
        """
        cfg = replace(config or RetrievalConfig(), **overrides) if overrides else (config or RetrievalConfig())
        T = as_transform(cam_from_world)
        center = -T[:3, :3].T @ T[:3, 3]
        view_dir = T[2, :3]
        kf, dist, angles = self.nearest_keyframes(center, view_dir, cfg.num_keyframes, cfg.max_heading_diff_deg,
                                                  cfg.max_distance_m, cfg.candidates, require_observations=True)
        # Views into the mapping (checked on first touch); each field is copied out once below:
        # one contiguous slice per keyframe and field.
        entries = self._keyframe_blocks(kf)
        readable = np.array([e is not None for e in entries], bool)
        if not readable.all():  # a tile went away between the two calls (tiled maps only)
            kf, dist, angles = kf[readable], dist[readable], angles[readable]
            entries = [e for e in entries if e is not None]
        blocks = [b for b, _ in entries] or [self._empty_observations()]
        tables = [t for _, t in entries]
        sizes = [len(b) for b in blocks]
        row_kf = np.repeat(self.keyframe_ids[kf], sizes) if len(kf) else np.zeros(0, np.int64)
        num_obs = int(sum(sizes))

        if tables:  # each block indexes the point table of its own map file (tiles: one per tile)
            def per_point(field_of) -> np.ndarray:
                parts = [field_of(t, b.point_index) for b, t in zip(blocks, tables)]
                return parts[0] if len(parts) == 1 else np.concatenate(parts)

            keep = per_point(lambda t, rows: t.track_ok(cfg.min_track_length)[rows])
            xyz = per_point(lambda t, rows: t.xyz[rows])
            point_ids = per_point(lambda t, rows: t.ids[rows])
        else:
            keep, xyz, point_ids = np.zeros(0, bool), np.zeros((0, 3)), np.zeros(0, np.int64)
        num_dropped_track = int(num_obs - np.count_nonzero(keep))
        num_dropped_frustum = 0
        if camera is not None and num_obs:
            in_track = np.count_nonzero(keep)
            keep &= self._in_frustum(xyz, T, camera, cfg)
            num_dropped_frustum = int(in_track - np.count_nonzero(keep))
        sel = None if keep.all() else np.flatnonzero(keep)
        if sel is not None:  # per block: the selected rows, as indices local to the block
            starts = np.cumsum([0] + sizes)
            cuts = np.searchsorted(sel, starts)
            local = [sel[cuts[i]:cuts[i + 1]] - starts[i] for i in range(len(blocks))]

        def gather(parts: list[np.ndarray]) -> np.ndarray:
            """Concatenate the blocks' slices of one field, keeping only the selected rows
            (one copy: ``take`` writes straight into the output)."""
            if sel is None:
                return np.concatenate(parts)
            out = np.empty((len(sel), *parts[0].shape[1:]), parts[0].dtype)
            for part, rows, a, b in zip(parts, local, cuts[:-1], cuts[1:]):
                np.take(part, rows, axis=0, out=out[a:b])
            return out

        if sel is not None:
            point_ids, row_kf, xyz = point_ids[sel], row_kf[sel], xyz[sel]
        num_levels = len(self._levels)
        features = [torch.from_numpy(gather([b.features[l] for b in blocks])) for l in range(num_levels)]
        # fp16 -> fp32 in torch: numpy's half conversion is not vectorised (10x slower here).
        confidences = torch.from_numpy(gather([b.confidence for b in blocks])).float()  # (N, L)
        if cfg.mode == "averaged":
            points = self._averaged(point_ids, xyz, features, confidences)
        else:
            points = QueryPoints(
                torch.from_numpy(xyz.astype(np.float32)), features,
                [confidences[:, l].contiguous() for l in range(num_levels)],
                torch.from_numpy(np.asarray(point_ids, np.int64)), torch.from_numpy(row_kf.astype(np.int64)))
        return Retrieval(kf, self.keyframe_ids[kf], dist, angles, points, num_obs, num_dropped_track,
                         num_dropped_frustum, cfg.mode)

    def _in_frustum(self, xyz: np.ndarray, cam_from_world: np.ndarray, camera, cfg: RetrievalConfig) -> np.ndarray:
        """(N,) bool: in front of the camera, inside the distortion's valid range, projected
        within the margin around the image, and closer than the max depth.

        The projection is ``core.camera.Camera``'s model (OpenCV's k1 k2 p1 p2 k3) written out in
        numpy (a test checks it against ``Camera.world2image``): on ~2000 points torch's per-op
        overhead costs ~0.7 ms and ``cv2.projectPoints`` (it also builds Jacobians) ~1 ms; this ~0.1 ms.
        """
        K, dist, max_r2, size = self._camera_arrays(camera)
        p_cam = xyz @ cam_from_world[:3, :3].T + cam_from_world[:3, 3]
        z = p_cam[:, 2]
        ok = (z > MIN_DEPTH) & (z <= cfg.frustum_max_depth_m)
        if not ok.any():
            return ok
        front = p_cam[ok]
        x, y = front[:, 0] / front[:, 2], front[:, 1] / front[:, 2]
        r2 = x * x + y * y
        k1, k2, p1, p2, k3 = dist
        radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
        u = K[0, 0] * (x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)) + K[0, 2]
        v = K[1, 1] * (y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y) + K[1, 2]
        m = cfg.frustum_margin
        ok[ok] = ((r2 < max_r2) & (u >= -m * size[0]) & (u <= (1 + m) * size[0] - 1)
                  & (v >= -m * size[1]) & (v <= (1 + m) * size[1] - 1))
        return ok

    def _camera_arrays(self, camera) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
        """(K (3, 3), dist (5,), max_r2, size (2,)) of a ``core.camera.Camera``, cached for the
        last camera object seen (the node reuses its camera between frames)."""
        cached = self._camera_cache
        if cached is not None and cached[0] is camera:
            return cached[1]
        data = camera.data.detach().cpu().double().numpy().reshape(-1)
        if data.shape != (11,):
            raise ValueError(f"retrieve() needs a single camera, got batch shape {tuple(camera.shape)}")
        w, h, fx, fy, cx, cy = data[:6]
        K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
        arrays = (K, data[6:11].copy(), float(camera.max_r2), np.array([w, h]))
        self._camera_cache = (camera, arrays)
        return arrays

    def _empty_observations(self) -> Observations:
        """No rows, with the dtypes and widths of the map's observation arrays."""
        return Observations(np.zeros(0, np.int32), np.zeros((0, 2), np.float32),
                            np.zeros((0, len(self._levels)), np.float16),
                            [np.zeros((0, level.dim), np.float16) for level in self._levels])

    def _averaged(self, point_ids: np.ndarray, xyz: np.ndarray, features: list[torch.Tensor],
                  confidences: torch.Tensor) -> QueryPoints:
        """One row per point: feature = sum_i(c_i f_i) / sum_i(c_i), renormalised to unit length
        (the reference normalises after averaging); confidence = mean_i(c_i). Per level.

        The scale 1 / sum_i(c_i) does not change the direction, so only the weighted sum is
        formed (one ``index_add_`` over all levels side by side); when every c_i of a point is 0
        (fp16 underflow) the plain sum is used instead.
        """
        # Grouped by point id, not by row: in a tiled map one point has a row in each tile that sees it.
        unique, first, inverse = np.unique(point_ids, return_index=True, return_inverse=True)
        n = len(unique)
        inv = torch.from_numpy(inverse.reshape(-1).astype(np.int64))
        dims = [f.shape[1] for f in features]
        weighted = torch.cat([f.float().mul_(confidences[:, l:l + 1]) for l, f in enumerate(features)], dim=1)
        sums = torch.zeros(n, weighted.shape[1]).index_add_(0, inv, weighted)  # (n, sum C_l)
        conf_sum = torch.zeros(n, confidences.shape[1]).index_add_(0, inv, confidences)
        counts = torch.zeros(n).index_add_(0, inv, torch.ones(len(inv)))
        zero = conf_sum <= 0  # (n, L)
        if zero.any():
            plain = torch.zeros(n, weighted.shape[1]).index_add_(0, inv, torch.cat([f.float() for f in features], 1))
            zero_cols = torch.cat([zero[:, l:l + 1].expand(-1, d) for l, d in enumerate(dims)], dim=1)
            sums = torch.where(zero_cols, plain, sums)
        feats = [torch.nn.functional.normalize(part, dim=1).to(torch.float16) for part in sums.split(dims, dim=1)]
        mean_conf = conf_sum / counts[:, None]
        return QueryPoints(torch.from_numpy(xyz[first].astype(np.float32)), feats,
                           [mean_conf[:, l].contiguous() for l in range(len(dims))],
                           torch.from_numpy(np.asarray(unique, np.int64)), torch.full((n,), -1, dtype=torch.int64))

    # ---- RViz initial pose --------------------------------------------------------------
    def lift_2d_pose(self, x: float, y: float, yaw: float, base_from_cam=None, k: int = 3) -> np.ndarray:
        """RViz's 2D pose (x, y metres, yaw radians of base_link in the map) -> (4, 4) map_from_base.

        Height and tilt (roll, pitch) come from the ``k`` keyframes nearest (x, y): each
        keyframe's camera pose is turned into a base pose with ``base_from_cam`` (4x4; default
        ``BASE_FROM_OPTICAL``, a forward-looking camera at the base origin), its yaw removed,
        and the tilts averaged (scipy's rotation mean) and heights averaged. Assumes the map's
        +z is up (georeferenced or gravity-aligned maps).
        """
        base_from_cam = BASE_FROM_OPTICAL if base_from_cam is None else as_transform(base_from_cam)
        _, idx = self._tree_xy.query([float(x), float(y)], k=min(k, self.num_keyframes))
        idx = np.atleast_1d(idx)
        map_from_base = self.keyframe_world_from_cam[idx] @ np.linalg.inv(base_from_cam)
        Rb = map_from_base[:, :3, :3]
        yaws = np.arctan2(Rb[:, 1, 0], Rb[:, 0, 0])  # ZYX Euler: R = Rz(yaw) Ry(pitch) Rx(roll)
        tilts = Rotation.from_euler("z", -yaws[:, None]) * Rotation.from_matrix(Rb)
        tilt = tilts.mean() if len(idx) > 1 else tilts[0]
        # The mean of yaw-free tilts can carry a tiny yaw of its own: remove it too.
        Rt = tilt.as_matrix()
        tilt = Rotation.from_euler("z", -np.arctan2(Rt[1, 0], Rt[0, 0])) * tilt
        out = np.eye(4)
        out[:3, :3] = (Rotation.from_euler("z", yaw) * tilt).as_matrix()
        out[:3, 3] = [x, y, map_from_base[:, 2, 3].mean()]
        return out
