"""A camera rig localized as one pose (issue 30): the rig description, the chained LM's
derivatives, N = 1 equal to the single-camera localizer, and a rig that resolves the along-road
direction one camera cannot."""
import math

import numpy as np
import pytest
import torch

from feature_scene import BoxScene, default_camera
from pixloc_ros.core.engine.lm.config import LMConfig
from pixloc_ros.core.engine.lm.optimizer import LevelProblem, optimize_level, run_level
from pixloc_ros.core.engine.lm.rig import RigLevelProblem, RigView, optimize_rig_level, split_per_camera
from pixloc_ros.core.engine.localizer import Localizer, LocalizerConfig
from pixloc_ros.core.engine.network import FeaturePyramid
from pixloc_ros.core.engine.rig_localizer import localize_rig_features
from pixloc_ros.core.geometry.camera import Camera
from pixloc_ros.core.geometry.pose import Pose
from pixloc_ros.core.geometry.rig import Rig, RigCamera, extrinsics_from_parameters, extrinsics_to_parameters
from pixloc_ros.core.geometry.transforms import invert_transform, make_transform, rot_z, rotation_angle_deg

DAMPING = torch.full((3, 6), 1e-2)
F64 = torch.float64

# Camera optical axes (columns: x right, y down, z forward) in base_link (x forward, y left, z up).
FRONT = np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0]], float)
LEFT = np.array([[1, 0, 0], [0, 0, 1], [0, -1, 0]], float)
RIGHT = np.array([[-1, 0, 0], [0, 0, -1], [0, -1, 0]], float)
# The box scene's world is camera-like (x right, y down, z along the box): base_link's axes in it.
WORLD_FROM_BASE_R = np.array([[0, -1, 0], [0, 0, -1], [1, 0, 0]], float)


def make_rig(names=("front", "left", "right")) -> Rig:
    mounts = {"front": (FRONT, (1.6, 0.0, 1.4)), "left": (LEFT, (1.0, 0.7, 1.5)), "right": (RIGHT, (1.0, -0.7, 1.5))}
    return Rig([RigCamera(n, default_camera(), make_transform(*mounts[n])) for n in names])


def base_from_world(along_m=0.0, lateral_m=0.0, yaw_deg=0.0) -> np.ndarray:
    """The vehicle on the box's floor (y = 1.6), moved ``along_m`` forward and ``lateral_m`` left."""
    world_from_base = make_transform(WORLD_FROM_BASE_R, (1.0, 1.6, -5.0)) @ make_transform(
        rot_z(math.radians(yaw_deg)), (along_m, lateral_m, 0.0))
    return invert_transform(world_from_base)


def to_pose(T) -> Pose:
    return Pose.from_4x4(torch.as_tensor(np.asarray(T), dtype=F64))


class RoadScene(BoxScene):
    """The box with features that stop changing along the road (world z) beyond ``z_split``:
    a facade pattern that repeats forever along the road. A camera that sees only that part
    cannot tell where along the road it is."""

    z_split = 12.0

    def features(self, X, level):
        X = X.double().clone()
        X[..., 2] = X[..., 2].clamp(max=self.z_split)
        return super().features(X, level)


def camera_frame(scene, rig, k, base_T, n, keep=None, seed=0):
    """Feature pyramid of rig camera k at the true base pose and ``n`` points it sees (``keep``
    filters them by world position)."""
    rc = rig.cameras[k]
    cam_T = to_pose(invert_transform(rc.base_from_camera) @ base_T)
    maps = [scene.render(rc.camera, cam_T, level)[None] for level in range(3)]
    xyz = scene.sample_points(rc.camera, cam_T, 4 * n, seed=seed)
    if keep is not None:
        xyz = xyz[keep(xyz)]
    xyz = xyz[:n]
    pyramid = FeaturePyramid(maps, [torch.ones(1, 1, *m.shape[-2:]) for m in maps], (480, 640))
    return pyramid, scene.query_points(xyz)


def errors(base_est: np.ndarray, base_true: np.ndarray) -> tuple[float, float, float]:
    """(along-road m, position m, rotation deg) of an estimated base pose."""
    world_est, world_true = invert_transform(base_est), invert_transform(base_true)
    delta = world_true[:3, :3].T @ (world_est[:3, 3] - world_true[:3, 3])  # in the true base frame
    return float(delta[0]), float(np.linalg.norm(delta)), rotation_angle_deg(base_est[:3, :3] @ base_true[:3, :3].T)


# --- the rig description ----------------------------------------------------------------------

def test_rig_chain_composes_each_camera_from_the_anchor_pose():
    rig = make_rig()
    T = base_from_world(0.3, -0.2, 4.0)
    anchor_T = rig.to_anchor(T)
    np.testing.assert_allclose(rig.to_base(anchor_T), T, atol=1e-12)
    for k, rc in enumerate(rig.cameras):
        direct = invert_transform(rc.base_from_camera) @ T
        np.testing.assert_allclose(rig.cam_from_anchor(k) @ anchor_T, direct, atol=1e-12)
    assert np.array_equal(rig.cam_from_anchor(rig.anchor), np.eye(4))


def test_rig_subset_keeps_or_moves_the_anchor_and_rejects_bad_rigs():
    rig = make_rig()
    assert rig.subset(["right", "front"]).names == ("front", "right")
    sides = rig.subset(["right", "left"])
    assert sides.names == ("left", "right") and sides.anchor == 0
    with pytest.raises(ValueError, match="no camera \\['rear'\\]"):
        rig.subset(["rear"])
    with pytest.raises(ValueError, match="unique"):
        Rig([rig.cameras[0], rig.cameras[0]])
    with pytest.raises(ValueError, match="invalid rotation"):
        RigCamera("bad", default_camera(), np.diag([1.0, 1.0, -1.0, 1.0]))


def test_extrinsics_from_parameters_round_trip_and_errors():
    rig = make_rig()
    values = extrinsics_to_parameters(rig)
    assert len(values) == 7 * len(rig)
    parsed = extrinsics_from_parameters(rig.names, values)
    for rc in rig.cameras:
        np.testing.assert_allclose(parsed[rc.name], rc.base_from_camera, atol=1e-12)
    with pytest.raises(ValueError, match="7 values .* per camera"):
        extrinsics_from_parameters(["a", "b"], values[:7])
    with pytest.raises(ValueError, match="camera 'a'.* norm 2.0"):
        extrinsics_from_parameters(["a"], [0, 0, 0, 0, 0, 0, 2.0])
    with pytest.raises(ValueError, match="camera 'a' has NaN"):
        extrinsics_from_parameters(["a"], [0, math.nan, 0, 0, 0, 0, 1.0])


# --- the chained LM ---------------------------------------------------------------------------

def random_view(seed: int, chain: Pose | None, C=6, H=40, W=50) -> RigView:
    g = torch.Generator().manual_seed(seed)
    fmap = torch.nn.functional.avg_pool2d(torch.randn(1, C, H + 4, W + 4, dtype=F64, generator=g), 5, 1)[0]
    cam = Camera.from_params(W, H, 40.0, 42.0, 24.3, 19.6, [-0.1, 0.02, 1e-3, -1e-3, 0.001])
    xyz_cam = torch.cat([torch.rand(60, 2, dtype=F64, generator=g) * 4 - 2,
                         3 + torch.rand(60, 1, dtype=F64, generator=g) * 3], -1)
    xyz = xyz_cam if chain is None else chain.inv().transform(xyz_cam)  # in front of this camera
    return RigView(fmap, torch.rand(1, H, W, dtype=F64, generator=g), xyz, torch.randn(60, C, dtype=F64, generator=g) * 0.3,
                   torch.rand(60, dtype=F64, generator=g), cam, chain, 1.0)


def test_chained_gradient_and_hessian_match_autograd():
    """g and H of the rig cost (3 cameras, two of them chained through rotated and shifted
    extrinsics, distorted cameras) against autograd of every camera's residuals w.r.t. the left
    update of the one anchor pose, float64."""
    views = [random_view(0, None),
             random_view(1, Pose.exp(torch.tensor([0.3, -0.1, 0.5, 0.1, 1.4, -0.05], dtype=F64))),
             random_view(2, Pose.exp(torch.tensor([-0.2, 0.1, -0.4, 0.05, -1.5, 0.1], dtype=F64)))]
    prob = RigLevelProblem(views, LMConfig(pad=1.0, dtype=F64))
    pose = Pose.exp(torch.tensor([[0.05, -0.03, 0.1, 0.01, -0.02, 0.015], [-0.1, 0.02, 0.0, -0.02, 0.01, 0.0]], dtype=F64))
    terms = prob.evaluate(pose.R, pose.t)
    per_camera = [int(v.sum()) for v in split_per_camera(terms.valid[0], prob)]
    assert min(per_camera) > 30, per_camera  # every camera contributes
    for b in range(2):
        def residuals(xi):
            P = Pose.exp(xi) @ pose[b]
            out = []
            for v, part in zip(views, prob.parts):
                cam_T = P if v.cam_from_anchor is None else v.cam_from_anchor @ P
                p2d, _ = v.camera.world2image(cam_T.transform(v.xyz))
                out.append(part.sampler.sample(p2d[None], 1.0, gradients=False).values[0] - v.ref_features)
            return torch.cat(out)

        J = torch.autograd.functional.jacobian(residuals, torch.zeros(6, dtype=F64), vectorize=True)  # (N, C, 6)
        r = residuals(torch.zeros(6, dtype=F64))
        w = terms.w[b]
        torch.testing.assert_close(terms.g[b], torch.einsum("n,nck,nc->k", w, J, r), atol=1e-9, rtol=1e-7)
        torch.testing.assert_close(terms.H[b], torch.einsum("n,nck,ncl->kl", w, J, J), atol=1e-9, rtol=1e-7)


def test_identity_chain_is_the_unchained_problem():
    v = random_view(3, None)
    chained = RigView(*[getattr(v, f) for f in ("features", "confidence", "xyz", "ref_features", "ref_confidence",
                                                "camera")], Pose.identity((), F64), 1.0)
    config = LMConfig(pad=1.0, dtype=F64)
    pose = Pose.exp(torch.tensor([[0.05, -0.03, 0.1, 0.01, -0.02, 0.015]], dtype=F64))
    a = RigLevelProblem([v], config).evaluate(pose.R, pose.t)
    b = RigLevelProblem([chained], config).evaluate(pose.R, pose.t)
    torch.testing.assert_close(a.g, b.g, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(a.H, b.H, rtol=1e-12, atol=1e-12)


def test_one_camera_rig_level_is_exactly_the_single_camera_lm():
    v = random_view(4, None)
    config = LMConfig(pad=1.0, num_iters=20)
    init = Pose.exp(torch.tensor([[0.05, -0.03, 0.1, 0.01, -0.02, 0.015], [0, 0.02, -0.05, 0, 0.01, 0]])).float()
    args = (v.features.float(), v.confidence.float(), v.xyz.float(), v.ref_features.float(), v.ref_confidence.float(),
            v.camera.float())
    single = optimize_level(*args, init, DAMPING[0], config)
    # the rig loop on a one-camera RigLevelProblem (no delegation), and the delegating entry point
    looped = run_level(RigLevelProblem([RigView(*args, None, 1.0)], config), init, DAMPING[0], config)
    entry = optimize_rig_level([RigView(*args, None, 1.0)], init, DAMPING[0], config)
    for other in (looped, entry):
        assert torch.equal(other.cam_from_world.R, single.cam_from_world.R)
        assert torch.equal(other.cam_from_world.t, single.cam_from_world.t)
        assert torch.equal(other.hessian, single.hessian) and torch.equal(other.iterations, single.iterations)
    assert isinstance(RigLevelProblem([RigView(*args, None, 1.0)], config).parts[0], LevelProblem)


# --- the rig localizer ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def localizer():
    return Localizer(None, LocalizerConfig(device="cpu"))


def test_one_camera_rig_localizes_exactly_like_the_single_camera_localizer(localizer):
    """N = 1 is today's localizer: a rig of the front camera alone, hypotheses given as base
    poses, gives bit-identical anchor poses, costs and covariance."""
    scene, rig = BoxScene(), make_rig(("front",))
    T = base_from_world()
    pyramid, qp = camera_frame(scene, rig, 0, T, 500)
    inits = np.stack([base_from_world(0.8, 0.3, 3.0), base_from_world(-0.5, -0.2, -2.0)])
    out = localize_rig_features(localizer, [pyramid], rig, [qp], to_pose(inits).float(), DAMPING)
    cam_inits = to_pose(rig.to_anchor(to_pose(inits).float().double().to_4x4().numpy())).float()
    ref = localizer.localize_features(pyramid, rig.cameras[0].camera, qp, cam_inits, DAMPING)
    assert ref.success and out.success, (ref.reason, out.result.reason)
    assert torch.equal(out.result.cam_from_world.R, ref.cam_from_world.R)
    assert torch.equal(out.result.cam_from_world.t, ref.cam_from_world.t)
    assert np.array_equal(out.result.covariance, ref.covariance) and out.result.cost == ref.cost
    assert out.result.iterations == ref.iterations and out.result.hypothesis == ref.hypothesis
    np.testing.assert_allclose(out.base_from_world, rig.to_base(ref.cam_from_world.to_4x4().numpy()), atol=1e-12)
    along, pos, deg = errors(out.base_from_world, T)
    assert pos < 0.02 and deg < 0.05, (along, pos, deg)


@pytest.fixture(scope="module")
def road():
    """The along-road case: the front camera sees only the repeating part of the road (beyond
    z_split + 3 m), the side cameras only the near part (before z_split - 3 m): disjoint points."""
    scene, rig = RoadScene(), make_rig()
    T = base_from_world()
    far = lambda xyz: (xyz[:, 2] > scene.z_split + 3) & (xyz[:, 2] < scene.z_front - 0.5)  # noqa: E731
    near = lambda xyz: xyz[:, 2] < scene.z_split - 3  # noqa: E731
    frames = [camera_frame(scene, rig, 0, T, 500, far), camera_frame(scene, rig, 1, T, 400, near, seed=1),
              camera_frame(scene, rig, 2, T, 400, near, seed=2)]
    assert all(len(qp) >= 300 for _, qp in frames), [len(qp) for _, qp in frames]
    return rig, T, frames


def test_front_camera_alone_cannot_find_its_place_along_the_road(road, localizer):
    """Its residuals barely change along the road (only through interpolation error): the LM
    drifts to a wrong place metres away, even when it starts at the truth, and the along-road
    information of its Hessian is a tiny fraction of the rig's."""
    rig, T, frames = road
    front = rig.subset(["front"])
    for along in (1.5, 0.0):
        init = to_pose(base_from_world(along, 0.2, 1.0)[None]).float()
        out = localize_rig_features(localizer, [frames[0][0]], front, [frames[0][1]], init, DAMPING)
        assert abs(errors(out.base_from_world, T)[0]) > 0.5, (along, out.result.reason)
        full = localize_rig_features(localizer, [f[0] for f in frames], rig, [f[1] for f in frames], init, DAMPING)
        # engine order: index 2 is the anchor's (front camera's) optical z, i.e. along the road
        h_front, h_rig = out.result.hypotheses.hessian[0][2, 2], full.result.hypotheses.hessian[0][2, 2]
        assert h_front < 0.01 * h_rig, (h_front, h_rig)


def test_rig_resolves_the_along_road_position_the_front_camera_cannot(road, localizer):
    rig, T, frames = road
    init = to_pose(base_from_world(1.5, 0.2, 1.0)[None]).float()
    out = localize_rig_features(localizer, [f[0] for f in frames], rig, [f[1] for f in frames], init, DAMPING)
    assert out.success, out.result.reason
    along, pos, deg = errors(out.base_from_world, T)
    assert abs(along) < 0.02 and pos < 0.03 and deg < 0.05, (along, pos, deg)
    assert all(out.num_weighted[n] > 200 for n in rig.names), out.num_weighted
    assert out.point_weights["left"].shape == (len(frames[1][1]),)
    cov = out.result.covariance
    assert np.linalg.eigvalsh(cov).min() > 0 and math.sqrt(cov[2, 2]) < 0.05  # optical z of the front = along road


@pytest.mark.parametrize("seed", [0, 1])
def test_rig_converges_from_known_perturbations_with_all_hypotheses_in_one_batch(localizer, seed):
    scene, rig = BoxScene(), make_rig()
    T = base_from_world()
    frames = [camera_frame(scene, rig, k, T, 300, seed=k) for k in range(3)]
    rng = np.random.default_rng(seed)
    inits = np.stack([base_from_world(*(rng.uniform(-1, 1, 2) * [1.5, 0.5]), rng.uniform(-3, 3)) for _ in range(4)])
    out = localize_rig_features(localizer, [f[0] for f in frames], rig, [f[1] for f in frames], to_pose(inits).float(),
                                DAMPING)
    assert out.success, out.result.reason
    assert out.hypotheses_base_from_world.shape == (4, 4, 4)
    for est in out.hypotheses_base_from_world:
        along, pos, deg = errors(est, T)
        assert pos < 0.03 and deg < 0.05, (along, pos, deg)


def test_rig_without_points_in_the_anchor_camera_still_localizes(localizer):
    """A camera with no points (dropped out, or nothing mapped in its view) leaves the LM; the
    others carry on through their chains even when the empty one is the anchor."""
    scene, rig = BoxScene(), make_rig()
    T = base_from_world()
    frames = [camera_frame(scene, rig, k, T, 300, seed=k) for k in range(3)]
    empty = frames[0][1].select(torch.zeros(len(frames[0][1]), dtype=torch.bool))
    init = to_pose(base_from_world(0.6, -0.3, 2.0)[None]).float()
    out = localize_rig_features(localizer, [f[0] for f in frames], rig, [empty, frames[1][1], frames[2][1]], init,
                                DAMPING)
    assert out.success, out.result.reason
    assert out.num_weighted["front"] == 0 and out.point_weights["front"].shape == (0,)
    # Every camera's confidence maps for its heatmaps, the anchor's being the result's own.
    assert list(out.confidences) == list(rig.names) and out.confidences["front"] is out.result.confidences
    for (pyramid, _), name in zip(frames, rig.names):
        shapes = [tuple(c.shape[-2:]) for c in pyramid.confidences]
        assert [m.shape for m in out.confidences[name]] == shapes and all(m.dtype == np.float32
                                                                            for m in out.confidences[name])
    along, pos, deg = errors(out.base_from_world, T)
    assert pos < 0.03 and deg < 0.05, (along, pos, deg)


def test_rig_inputs_are_checked(localizer):
    rig = make_rig()
    with pytest.raises(ValueError, match="2 feature pyramids for a rig of 3 cameras"):
        localize_rig_features(localizer, [None, None], rig, [None] * 3, to_pose(base_from_world()), DAMPING)


def test_localize_rig_runs_the_network_per_camera_and_one_camera_is_localize():
    """Through the network: a one-camera rig is ``Localizer.localize`` (same pose, same cost); a
    two-camera rig runs the network on each image and one LM for both."""
    network = pytest.importorskip("pixloc_ros.core.engine.network")
    from pixloc_ros.core.engine.query_points import QueryPoints
    from pixloc_ros.core.engine.rig_localizer import localize_rig

    torch.manual_seed(0)
    loc = Localizer(network.PixLocModel(), LocalizerConfig(device="cpu", iterations=(3, 3, 3), min_valid_points=5))
    cam = Camera.from_params(128, 96, 100.0, 100.0, 63.5, 47.5)
    g = torch.Generator().manual_seed(0)
    xyz = torch.cat([torch.rand(200, 2, generator=g) * 4 - 2, 4 + torch.rand(200, 1, generator=g) * 4], -1)
    feats = [torch.nn.functional.normalize(torch.randn(200, c, generator=g), dim=-1) for c in (32, 128, 128)]
    pts = QueryPoints(xyz, feats, [torch.rand(200, generator=g) for _ in range(3)], torch.arange(200),
                      torch.zeros(200, dtype=torch.long))
    rng = np.random.default_rng(0)
    images = [(rng.random((96, 128, 3)) * 255).astype(np.uint8) for _ in range(2)]
    rig = Rig([RigCamera("front", cam, make_transform(FRONT, (1.6, 0, 1.4))),
               RigCamera("left", cam, make_transform(LEFT, (1.0, 0.7, 1.5)))])
    base = to_pose(rig.to_base(np.eye(4))[None]).float()  # the front camera at the world origin
    one = localize_rig(loc, images[:1], rig.subset(["front"]), [pts], base)
    ref = loc.localize(images[0], cam, pts, to_pose(rig.to_anchor(base.double().to_4x4().numpy())).float())
    assert one.result.reason == ref.reason and one.result.cost == ref.cost
    assert torch.equal(one.result.cam_from_world.t, ref.cam_from_world.t)
    left_pts = QueryPoints(torch.from_numpy(rig.cam_from_anchor(1)[:3, :3].T @ (xyz.double().numpy().T
                                                                             - rig.cam_from_anchor(1)[:3, 3:])).T.float(),
                           feats, pts.confidences, pts.point_ids, pts.keyframe_ids)  # in front of the left camera
    both = localize_rig(loc, images, rig, [pts, left_pts], base)
    assert both.result.timings.network_s > 0 and both.result.timings.total_s >= both.result.timings.network_s
    assert set(both.point_weights) == {"front", "left"} and both.num_weighted["left"] > 0
