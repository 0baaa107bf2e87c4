"""Everything that touches pycolmap lives here: its API moves between releases (4.x added rigs
and frames, made ``cam_from_world`` a method), so the rest of the code sees only the plain,
typed containers below.

Conventions of the containers: poses are ``cam_from_world`` as (R (3, 3), t (3,)) float64
numpy arrays, camera parameters and keypoints are in COLMAP's own convention (pixel origin
at the corner of the top-left pixel); ``Camera.from_colmap`` converts to the engine's
pixel-centre convention.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pycolmap

INVALID_POINT3D_ID = -1


@dataclass
class SfmCamera:
    """A COLMAP camera: ``model`` name (e.g. "PINHOLE"), image size in pixels, ``params`` as COLMAP stores them."""

    camera_id: int
    model: str
    width: int
    height: int
    params: np.ndarray  # (P,) float64, COLMAP order and pixel convention


@dataclass
class SfmImage:
    """A registered image: its pose, camera and 2D observations."""

    image_id: int
    name: str
    camera_id: int
    R: np.ndarray  # (3, 3) float64, rotation of cam_from_world
    t: np.ndarray  # (3,) float64, translation of cam_from_world, metres
    xys: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))  # (K, 2) keypoints, COLMAP pixels
    point3D_ids: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))  # (K,), -1 = none

    @property
    def center(self) -> np.ndarray:
        """Camera centre in world coordinates, (3,) metres."""
        return -self.R.T @ self.t


@dataclass
class SfmModel:
    """A sparse reconstruction with its points stored as flat arrays (fast to index)."""

    cameras: dict[int, SfmCamera]
    images: dict[int, SfmImage]
    point_ids: np.ndarray  # (P,) int64
    xyz: np.ndarray  # (P, 3) float64, world coordinates, metres
    rgb: np.ndarray  # (P, 3) uint8
    track_image_ids: list[np.ndarray]  # P arrays (L_i,) int64: images observing each point
    track_point2D_idx: list[np.ndarray]  # P arrays (L_i,) int64: keypoint index in that image

    @property
    def track_lengths(self) -> np.ndarray:
        """Number of observations per point, (P,) int64."""
        return np.array([len(t) for t in self.track_image_ids], np.int64)

    def image_by_name(self, name: str) -> SfmImage:
        """Return the image called ``name``; KeyError naming it when absent."""
        for image in self.images.values():
            if image.name == name:
                return image
        raise KeyError(f"no image named {name!r} in the SfM model")


def read_model(path: str | Path) -> SfmModel:
    """Read a COLMAP model (text or binary) from the folder ``path``.

    Raises FileNotFoundError with the path when the folder holds no model.
    """
    path = Path(path)
    if not path.is_dir() or not any((path / f"cameras.{ext}").exists() for ext in ("bin", "txt")):
        raise FileNotFoundError(f"no COLMAP model (cameras.bin or cameras.txt) in {path}")
    rec = pycolmap.Reconstruction(str(path))
    cameras = {
        cid: SfmCamera(cid, cam.model.name, int(cam.width), int(cam.height), np.asarray(cam.params, np.float64))
        for cid, cam in rec.cameras.items()
    }
    images = {}
    for iid, im in rec.images.items():
        if not im.has_pose:
            continue  # unregistered images carry no pose; nothing downstream can use them
        cam_from_world = im.cam_from_world()
        p2d = im.points2D
        xys = np.array([p.xy for p in p2d], np.float64).reshape(-1, 2)
        ids = np.array([p.point3D_id if p.has_point3D() else INVALID_POINT3D_ID for p in p2d], np.int64)
        images[iid] = SfmImage(
            iid, im.name, int(im.camera_id),
            np.asarray(cam_from_world.rotation.matrix(), np.float64),
            np.asarray(cam_from_world.translation, np.float64), xys, ids,
        )
    pids = np.array(sorted(rec.points3D.keys()), np.int64)
    xyz = np.zeros((len(pids), 3))
    rgb = np.zeros((len(pids), 3), np.uint8)
    track_images, track_idx = [], []
    for i, pid in enumerate(pids):
        p = rec.points3D[int(pid)]
        xyz[i] = p.xyz
        rgb[i] = p.color
        elements = p.track.elements
        track_images.append(np.array([e.image_id for e in elements], np.int64))
        track_idx.append(np.array([e.point2D_idx for e in elements], np.int64))
    return SfmModel(cameras, images, pids, xyz, rgb, track_images, track_idx)


def write_model(model: SfmModel, path: str | Path, text: bool = False) -> None:
    """Write ``model`` as a COLMAP model (binary, or text if ``text``) into the folder ``path``.

    Every observation in the tracks must point at a keypoint of its image whose
    ``point3D_ids`` entry is that point.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    rec = pycolmap.Reconstruction()
    for cam in model.cameras.values():
        rec.add_camera_with_trivial_rig(
            pycolmap.Camera(model=cam.model, width=cam.width, height=cam.height,
                            params=np.asarray(cam.params, np.float64), camera_id=cam.camera_id))
    for im in model.images.values():
        image = pycolmap.Image(name=im.name, camera_id=im.camera_id, image_id=im.image_id)
        image.points2D = pycolmap.Point2DList([pycolmap.Point2D(np.asarray(xy, np.float64)) for xy in im.xys])
        rec.add_image_with_trivial_frame(
            image, pycolmap.Rigid3d(pycolmap.Rotation3d(np.asarray(im.R, np.float64)), np.asarray(im.t, np.float64)))
    for pid, xyz, rgb, imgs, idxs in zip(model.point_ids, model.xyz, model.rgb,
                                         model.track_image_ids, model.track_point2D_idx):
        track = pycolmap.Track()
        for iid, idx in zip(imgs, idxs):
            track.add_element(int(iid), int(idx))
        point = pycolmap.Point3D(xyz=np.asarray(xyz, np.float64), color=np.asarray(rgb, np.uint8), track=track)
        rec.add_point3D_with_id(int(pid), point)
    if text:
        rec.write_text(str(path))
    else:
        rec.write_binary(str(path))


# ---------------------------------------------------------------------------------------------
# Building a map the way users build theirs: SIFT, matching, triangulation with known poses
# ---------------------------------------------------------------------------------------------

class _quiet_colmap:
    """Silence COLMAP's INFO logging (thousands of lines per triangulation) while building a map;
    warnings and errors still show."""

    def __enter__(self):
        self.level = pycolmap.logging.minloglevel
        pycolmap.logging.minloglevel = max(self.level, 1)

    def __exit__(self, *exc):
        pycolmap.logging.minloglevel = self.level


@dataclass
class TriangulationReport:
    """Statistics of a model triangulated from known poses."""

    num_images: int
    num_points: int
    num_observations: int
    mean_track_length: float
    mean_reprojection_error_px: float


def extract_sift_features(database_path: str | Path, image_dir: str | Path, image_names: list[str],
                          width: int, height: int, fx: float, fy: float, cx: float, cy: float, *,
                          max_num_features: int = 4096, num_threads: int = 1,
                          peak_threshold: float | None = None) -> None:
    """Detect SIFT features (CPU) in ``image_names`` under ``image_dir`` into a new COLMAP database.

    All images share one PINHOLE camera with the given intrinsics in the engine convention
    (pixel-centre origin); COLMAP's principal point is moved by +0.5 px here. The images are
    registered in the database in the order of ``image_names`` before COLMAP runs (COLMAP
    itself numbers them in the order its threads finish), so any ``num_threads`` (-1: all
    cores) gives the same database and map on every run. ``peak_threshold``: the DoG contrast
    a keypoint needs (COLMAP's default 0.02 / 3 when None; lower finds more keypoints in weak
    texture). COLMAP's default ``first_octave=-1`` (detection on the image upsampled x2) stays.
    """
    database_path = Path(database_path)
    if database_path.exists():
        raise FileExistsError(f"{database_path} exists; feature extraction writes a new database")
    if peak_threshold is not None and not peak_threshold > 0:
        raise ValueError(f"peak_threshold must be > 0, got {peak_threshold}")
    params = [fx, fy, cx + 0.5, cy + 0.5]
    _register_images(database_path, list(image_names), pycolmap.Camera(
        model="PINHOLE", width=int(width), height=int(height), params=np.asarray(params, np.float64)))
    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = "PINHOLE"
    reader.camera_params = ",".join(f"{v:.17g}" for v in params)
    options = pycolmap.FeatureExtractionOptions()
    options.num_threads = num_threads
    options.use_gpu = False
    options.sift.max_num_features = max_num_features
    if peak_threshold is not None:
        options.sift.peak_threshold = peak_threshold
    with _quiet_colmap():
        pycolmap.extract_features(database_path, image_dir, image_names=list(image_names),
                                  camera_mode=pycolmap.CameraMode.SINGLE, reader_options=reader,
                                  extraction_options=options, device=pycolmap.Device.cpu)
    with pycolmap.Database.open(database_path) as db:
        if db.num_cameras() != 1:
            raise RuntimeError(f"COLMAP added cameras to {database_path}: {db.num_cameras()} instead of 1")
        missing = [im.name for im in db.read_all_images() if not db.exists_keypoints(im.image_id)]
        if missing:
            raise RuntimeError(f"COLMAP extracted no features from {len(missing)} images (missing or unreadable "
                               f"under {image_dir}?), e.g. {missing[:3]}")
        for cam in db.read_all_cameras():
            if (cam.width, cam.height) != (width, height):
                raise ValueError(f"images are {cam.width}x{cam.height}, expected {width}x{height}")


def _register_images(database_path: Path, image_names: list[str], camera) -> None:
    """Write ``camera`` (with a trivial rig) and one image with its frame per name, in order,
    into a new database: image i gets id i + 1 whatever order extraction threads finish in.
    COLMAP's extractor then fills in these images' keypoints (it looks them up by name)."""
    camera.has_prior_focal_length = True  # as COLMAP marks a camera whose parameters were given
    with pycolmap.Database.open(database_path) as db:
        camera_id = db.write_camera(camera)
        sensor = pycolmap.sensor_t(pycolmap.SensorType.CAMERA, camera_id)
        rig = pycolmap.Rig()
        rig.add_ref_sensor(sensor)
        rig_id = db.write_rig(rig)
        for name in image_names:
            image = pycolmap.Image(name=name, camera_id=camera_id)
            image_id = db.write_image(image)
            frame = pycolmap.Frame()
            frame.rig_id = rig_id
            frame.add_data_id(pycolmap.data_t(sensor, image_id))
            image = db.read_image(image_id)
            image.frame_id = db.write_frame(frame)
            db.update_image(image)


def pairs_from_poses(names: list[str], centers: np.ndarray, view_dirs: np.ndarray, *,
                     max_distance_m: float = 30.0, max_angle_deg: float = 60.0,
                     max_pairs_per_image: int = 10) -> list[tuple[str, str]]:
    """Image pairs to match, chosen from known poses: for each image its nearest neighbours
    within ``max_distance_m`` whose optical axes differ by less than ``max_angle_deg``.

    centers: (N, 3) camera centres; view_dirs: (N, 3) unit optical axes, world frame.
    """
    centers = np.asarray(centers, np.float64)
    view_dirs = np.asarray(view_dirs, np.float64)
    dist = np.linalg.norm(centers[:, None] - centers[None], axis=-1)
    cos = view_dirs @ view_dirs.T
    ok = (dist <= max_distance_m) & (cos >= np.cos(np.radians(max_angle_deg)))
    np.fill_diagonal(ok, False)
    pairs = set()
    for i in range(len(names)):
        candidates = np.nonzero(ok[i])[0]
        for j in candidates[np.argsort(dist[i, candidates])][:max_pairs_per_image]:
            pairs.add((min(i, int(j)), max(i, int(j))))
    return [(names[i], names[j]) for i, j in sorted(pairs)]


def match_pairs(database_path: str | Path, pairs: list[tuple[str, str]], *, num_threads: int = -1,
                min_num_inliers: int = 15, geometric_verification: bool = True) -> int:
    """Match SIFT features of the given image pairs (by name) and, unless
    ``geometric_verification`` is False (see ``verify_matches_with_poses``), verify them with
    COLMAP's RANSAC.

    Returns the number of verified pairs. The pair list goes through a temporary text file,
    the format COLMAP's imported-pairs matcher reads.
    """
    import tempfile
    database_path = Path(database_path)
    with tempfile.TemporaryDirectory() as tmp:
        pair_file = Path(tmp) / "pairs.txt"
        pair_file.write_text("".join(f"{a} {b}\n" for a, b in pairs))
        matching = pycolmap.FeatureMatchingOptions()
        matching.num_threads = num_threads
        matching.use_gpu = False
        matching.skip_geometric_verification = not geometric_verification
        # Exact nearest neighbours: the default approximate CPU index is not deterministic.
        matching.sift.cpu_brute_force_matcher = True
        pairing = pycolmap.ImportedPairingOptions()
        pairing.match_list_path = pair_file
        verification = pycolmap.TwoViewGeometryOptions()
        verification.min_num_inliers = min_num_inliers
        with _quiet_colmap():
            pycolmap.match_image_pairs(database_path, matching_options=matching, pairing_options=pairing,
                                       verification_options=verification, device=pycolmap.Device.cpu)
    with pycolmap.Database.open(database_path) as db:
        return int(db.num_verified_image_pairs())


def match_pairs_exact(database_path: str | Path, pairs: list[tuple[str, str]], *, max_ratio: float = 0.8,
                      max_distance: float = 0.7, cross_check: bool = True,
                      poses: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
                      max_epipolar_error_px: float = 2.0) -> int:
    """Match the SIFT descriptors of the given pairs by exact nearest neighbours, with the rules
    of COLMAP's SIFT matcher (angle between descriptors, Lowe ratio ``max_ratio``, largest angle
    ``max_distance`` radians, mutual check), and write the raw matches to the database.

    Same results as COLMAP's brute-force CPU matcher, deterministic, and much faster here (one
    BLAS product per pair). Follow with ``verify_matches_with_poses``. Returns the number of
    pairs written.

    ``poses`` (name -> (R (3, 3), t (3,)) of cam_from_world, the known poses): guided matching,
    as COLMAP's ``guided_matching`` does with an estimated geometry: only keypoint pairs whose
    Sampson error under the pair's fundamental matrix is below ``max_epipolar_error_px`` compete
    (nearest neighbour, ratio test and mutual check among them). Repeated structure (window
    rows, lane dashes) then no longer fails the ratio test against its look-alikes elsewhere
    in the image, which multiplies the matches of a street scene.
    """
    if poses is not None and not max_epipolar_error_px > 0:
        raise ValueError(f"max_epipolar_error_px must be > 0, got {max_epipolar_error_px}")
    written = 0
    with pycolmap.Database.open(database_path) as db:
        images = {im.name: im for im in db.read_all_images()}
        cameras = {cam.camera_id: cam for cam in db.read_all_cameras()} if poses is not None else {}
        cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        keypoints: dict[int, np.ndarray] = {}

        def descriptors(image_id: int) -> tuple[np.ndarray, np.ndarray]:
            # Raw uint8 values as float32: their dot products (< 2^24) are exact integers in any
            # summation order, so the matches do not depend on how BLAS splits the work.
            if image_id not in cache:
                d = np.asarray(db.read_descriptors(image_id).data, np.float32)
                cache[image_id] = (d, np.maximum(np.sqrt((d * d).sum(1)), 1e-6))
            return cache[image_id]

        def xy(image_id: int) -> np.ndarray:
            if image_id not in keypoints:
                keypoints[image_id] = np.asarray(db.read_keypoints(image_id))[:, :2].astype(np.float64)
            return keypoints[image_id]

        for a, b in pairs:
            if a not in images or b not in images:
                raise KeyError(f"pair ({a!r}, {b!r}): image not in the database")
            if poses is not None and (a not in poses or b not in poses):
                raise KeyError(f"pair ({a!r}, {b!r}): no pose for guided matching")
            id1, id2 = images[a].image_id, images[b].image_id
            (d1, n1), (d2, n2) = descriptors(id1), descriptors(id2)
            if len(d1) < 2 or len(d2) < 2:
                continue
            sim = d1 @ d2.T  # (N1, N2) cosines below; angles are monotonic in them
            sim /= n1[:, None]
            sim /= n2[None, :]
            if poses is not None:
                F = _fundamental_from_poses(poses[a], poses[b], _pinhole_K(cameras[images[a].camera_id]),
                                            _pinhole_K(cameras[images[b].camera_id]))
                # -1: the largest possible angle, so these never win nor spoil the ratio test.
                # In blocks of rows: the temporaries stay ~50 MB even with 8192 x 8192 features.
                for i0 in range(0, len(d1), 1536):
                    np.copyto(sim[i0:i0 + 1536], np.float32(-1.0),
                              where=_epipolar_outliers(xy(id1)[i0:i0 + 1536], xy(id2), F, max_epipolar_error_px))
            matches = _ratio_matches(sim, max_ratio, max_distance)
            if cross_check:
                back = _ratio_matches(sim.T, max_ratio, max_distance)
                back_of = np.full(len(d2), -1)
                back_of[back[:, 0]] = back[:, 1]
                matches = matches[back_of[matches[:, 1]] == matches[:, 0]]
            if len(matches):
                db.write_matches(id1, id2, np.ascontiguousarray(matches, np.uint32))
                written += 1
    return written


def _fundamental_from_poses(pose1: tuple[np.ndarray, np.ndarray], pose2: tuple[np.ndarray, np.ndarray],
                            K1: np.ndarray, K2: np.ndarray) -> np.ndarray:
    """F (3, 3) with x2^T F x1 = 0 for two cameras (R, t) of cam_from_world and intrinsics K (3, 3)."""
    E, _, _ = _essential_from_poses(pose1, pose2)
    return np.linalg.inv(K2).T @ E @ np.linalg.inv(K1)


def _essential_from_poses(pose1: tuple[np.ndarray, np.ndarray], pose2: tuple[np.ndarray, np.ndarray]
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(E (3, 3), R (3, 3), t (3,)): essential matrix and relative pose cam2_from_cam1 of two
    cam_from_world poses (R, t)."""
    R1, t1 = (np.asarray(v, np.float64) for v in pose1)
    R2, t2 = (np.asarray(v, np.float64) for v in pose2)
    R = R2 @ R1.T
    t = t2 - R @ t1
    E = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]]) @ R
    return E, R, t


def _epipolar_outliers(xy1: np.ndarray, xy2: np.ndarray, F: np.ndarray, max_error_px: float) -> np.ndarray:
    """(N1, N2) bool: keypoint pairs whose Sampson error under F is at least ``max_error_px``;
    xy1 (N1, 2), xy2 (N2, 2) pixels. float32 and in place: this runs on ~10^6 pairs per image pair."""
    x1, y1 = xy1[:, 0], xy1[:, 1]
    x2, y2 = (np.asarray(v, np.float32) for v in (xy2[:, 0], xy2[:, 1]))
    a, b, c = (np.asarray(F[i, 0] * x1 + F[i, 1] * y1 + F[i, 2], np.float32) for i in range(3))  # F x1, image 2
    d, e = (F[0, i] * xy2[:, 0] + F[1, i] * xy2[:, 1] + F[2, i] for i in range(2))  # first two of F^T x2
    # Sampson error^2 = (x2^T F x1)^2 / (a^2 + b^2 + d^2 + e^2), compared without the division.
    r = np.multiply.outer(a, x2)
    r += np.multiply.outer(b, y2)
    r += c[:, None]
    r *= r
    s2 = max_error_px ** 2
    bound = np.add.outer(np.asarray(s2 * (a.astype(np.float64) ** 2 + b.astype(np.float64) ** 2), np.float32),
                         np.asarray(s2 * (d * d + e * e), np.float32))
    return r >= bound


def _ratio_matches(sim: np.ndarray, max_ratio: float, max_distance: float) -> np.ndarray:
    """Rows' most similar columns passing COLMAP's tests on descriptor angles: the best angle
    at most ``max_distance`` and below ``max_ratio`` times the second best. (M, 2) [row, col]."""
    sim = np.ascontiguousarray(sim)  # a transposed view is copied: row-wise argmax is ~10x faster
    rows = np.arange(len(sim))
    first = sim.argmax(1)
    s0 = sim[rows, first]
    sim[rows, first] = -np.inf  # restored below: the caller's matrix comes back unchanged
    s1 = sim.max(1)
    sim[rows, first] = s0
    best = np.arccos(np.clip(s0, -1.0, 1.0))
    second = np.arccos(np.clip(s1, -1.0, 1.0))
    ok = (best <= max_distance) & (best < max_ratio * second)
    return np.stack([rows[ok], first[ok]], 1)


def verify_matches_with_poses(database_path: str | Path, poses: dict[str, tuple[np.ndarray, np.ndarray]], *,
                              max_error_px: float = 1.0, min_num_inliers: int = 15) -> int:
    """Geometric verification from known poses (as hloc does for triangulation): keep the matches
    whose Sampson epipolar error under the known relative pose is below ``max_error_px``.

    Replaces every two-view geometry of the database; ``poses``: name -> (R, t) of
    cam_from_world. Returns the number of pairs with at least ``min_num_inliers`` inliers.
    Tighter than RANSAC's 4 px, it removes most mismatches of repeated structure (windows, lane
    dashes) that do not lie on the epipolar line.
    """
    kept = 0
    with pycolmap.Database.open(database_path) as db:
        images = {im.image_id: im for im in db.read_all_images()}
        cameras = {cam.camera_id: cam for cam in db.read_all_cameras()}
        pair_ids, all_matches = db.read_all_matches()
        keypoints: dict[int, np.ndarray] = {}
        db.clear_two_view_geometries()
        for pair_id, matches in zip(pair_ids, all_matches):
            id1, id2 = pycolmap.pair_id_to_image_pair(pair_id)
            im1, im2 = images[id1], images[id2]
            if im1.name not in poses or im2.name not in poses or len(matches) == 0:
                continue
            for iid in (id1, id2):
                if iid not in keypoints:
                    keypoints[iid] = np.asarray(db.read_keypoints(iid))[:, :2].astype(np.float64)
            E, R, t = _essential_from_poses(poses[im1.name], poses[im2.name])
            K1, K2 = (_pinhole_K(cameras[images[i].camera_id]) for i in (id1, id2))
            F = np.linalg.inv(K2).T @ E @ np.linalg.inv(K1)
            x1 = np.c_[keypoints[id1][matches[:, 0]], np.ones(len(matches))]
            x2 = np.c_[keypoints[id2][matches[:, 1]], np.ones(len(matches))]
            Fx1 = x1 @ F.T
            Ftx2 = x2 @ F
            num = np.einsum("ij,ij->i", x2, Fx1) ** 2
            den = Fx1[:, 0] ** 2 + Fx1[:, 1] ** 2 + Ftx2[:, 0] ** 2 + Ftx2[:, 1] ** 2
            inliers = matches[np.sqrt(num / np.maximum(den, 1e-12)) < max_error_px]
            if len(inliers) < min_num_inliers:
                continue
            geometry = pycolmap.TwoViewGeometry()
            geometry.config = pycolmap.TwoViewGeometryConfiguration.CALIBRATED
            geometry.E, geometry.F = E, F
            geometry.cam2_from_cam1 = pycolmap.Rigid3d(pycolmap.Rotation3d(R), t)
            geometry.inlier_matches = np.ascontiguousarray(inliers, np.uint32)
            db.write_two_view_geometry(id1, id2, geometry)
            kept += 1
    return kept


def _pinhole_K(camera) -> np.ndarray:
    """3x3 intrinsics (COLMAP pixel convention) of a PINHOLE-like pycolmap camera."""
    name = camera.model.name
    p = np.asarray(camera.params, np.float64)
    if name == "PINHOLE":
        fx, fy, cx, cy = p[:4]
    elif name in ("SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL"):
        fx = fy = p[0]
        cx, cy = p[1:3]
    else:
        raise ValueError(f"Unsupported camera model {name!r} for pose-based verification (undistorted models only)")
    return np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]])


def triangulate_known_poses(database_path: str | Path, image_dir: str | Path, output_dir: str | Path,
                            poses: dict[str, tuple[np.ndarray, np.ndarray]], *, min_tri_angle_deg: float = 1.5,
                            max_reproj_error_px: float = 2.0, num_threads: int = -1) -> TriangulationReport:
    """Triangulate the verified matches of the database with the images fixed at ``poses``
    (name -> (R (3, 3), t (3,)) of cam_from_world) and write the COLMAP model to ``output_dir``.

    Poses and intrinsics stay fixed (COLMAP's point triangulator: points only are refined).
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    rec = pycolmap.Reconstruction()
    with pycolmap.Database.open(database_path) as db:
        for cam in db.read_all_cameras():
            rec.add_camera_with_trivial_rig(cam)
        for image in db.read_all_images():
            if image.name not in poses:
                continue
            R, t = poses[image.name]
            im = pycolmap.Image(name=image.name, camera_id=image.camera_id, image_id=image.image_id)
            rec.add_image_with_trivial_frame(
                im, pycolmap.Rigid3d(pycolmap.Rotation3d(np.asarray(R, np.float64)), np.asarray(t, np.float64)))
    missing = set(poses) - {im.name for im in rec.images.values()}
    if missing:
        raise ValueError(f"{len(missing)} posed images are not in the database, e.g. {sorted(missing)[:3]}")
    options = pycolmap.IncrementalPipelineOptions()
    options.num_threads = num_threads
    # Fixed seeds: the same database gives the same model (COLMAP draws at random otherwise).
    options.random_seed = 0
    options.triangulation.random_seed = 0
    options.mapper.random_seed = 0
    options.triangulation.min_angle = min_tri_angle_deg
    options.mapper.filter_max_reproj_error = max_reproj_error_px
    options.mapper.filter_min_tri_angle = min_tri_angle_deg
    options.ba_refine_focal_length = False
    options.ba_refine_principal_point = False
    options.ba_refine_extra_params = False
    with _quiet_colmap():
        out = pycolmap.triangulate_points(rec, database_path, image_dir, output_dir, clear_points=True,
                                          options=options, refine_intrinsics=False)
    return TriangulationReport(int(out.num_reg_images()), int(out.num_points3D()),
                               int(out.compute_num_observations()), float(out.compute_mean_track_length()),
                               float(out.compute_mean_reprojection_error()))


# ---------------------------------------------------------------------------------------------
# Dataset importers (data/importers): cameras given in COLMAP's own terms, several per database
# ---------------------------------------------------------------------------------------------

def extract_sift_features_for_camera(database_path: str | Path, image_dir: str | Path, image_names: list[str],
                                     model: str, width: int, height: int, params, *,
                                     max_num_features: int = 4096, num_threads: int = -1) -> None:
    """Detect SIFT features (CPU) in ``image_names`` under ``image_dir``, all taken by one camera
    given as a COLMAP ``model`` name and ``params`` in COLMAP's order *and pixel convention*
    (e.g. a dataset's OPENCV camera with distortion), appending to the database (created when
    absent). Call once per physical camera; each call adds one camera to the database.
    """
    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = str(model).upper()
    reader.camera_params = ",".join(f"{float(v):.12g}" for v in np.asarray(params, np.float64).reshape(-1))
    options = pycolmap.FeatureExtractionOptions()
    options.num_threads = num_threads
    options.use_gpu = False
    options.sift.max_num_features = max_num_features
    pycolmap.extract_features(Path(database_path), image_dir, image_names=list(image_names),
                              camera_mode=pycolmap.CameraMode.SINGLE, reader_options=reader,
                              extraction_options=options, device=pycolmap.Device.cpu)
    with pycolmap.Database.open(Path(database_path)) as db:
        wanted = set(image_names)
        cameras = {cam.camera_id: cam for cam in db.read_all_cameras()}
        for image in db.read_all_images():
            if image.name in wanted:
                cam = cameras[image.camera_id]
                if (cam.width, cam.height) != (width, height):
                    raise ValueError(f"{image.name} is {cam.width}x{cam.height}, expected {width}x{height}")
