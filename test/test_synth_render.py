"""The synthetic world and its renderer: geometry is exact, depth is consistent between views,
textures live on the surfaces (photo-consistent), conditions change appearance, not geometry."""
import numpy as np
import pytest

from pixloc_ros.data.sim.drive import base_from_camera, route_path
from pixloc_ros.core.geometry.transforms import invert_transform, make_transform, rot_z
from pixloc_ros.data.sim.raycast import GROUND, SKY, PinholeCamera, raycast
from pixloc_ros.data.sim.render import render
from pixloc_ros.data.sim.world import Kind, Shape
from pixloc_ros.data.sim.generate import generate_world

W, H = 200, 150


@pytest.fixture(scope="module")
def world():
    return generate_world(3)


def street_pose(world, s, lateral=0.0, yaw_offset=0.0, route="ABC"):
    """cam_from_world of a car camera ``s`` metres along ``route`` (4, 4)."""
    path = route_path(world, route, lateral_offset_m=world.config.lane_offset_m + lateral)
    k = int(np.searchsorted(path.s, s))
    T = make_transform(rot_z(path.heading[k] + yaw_offset), [path.xy[k, 0], path.xy[k, 1], 0.0])
    return invert_transform(T @ base_from_camera())


def backproject(depth, camera, cam_from_world):
    """World points (H, W, 3) of every pixel from its depth."""
    u, v = np.meshgrid(np.arange(camera.width), np.arange(camera.height))
    depth = np.where(np.isfinite(depth), depth, 0.0)  # sky: no point (its row is ignored)
    p_cam = np.stack([(u - camera.cx) / camera.fx * depth, (v - camera.cy) / camera.fy * depth, depth], -1)
    R, t = cam_from_world[:3, :3], cam_from_world[:3, 3]
    return (p_cam - t) @ R  # R^T (p - t)


def project(points, camera, cam_from_world):
    p = points @ cam_from_world[:3, :3].T + cam_from_world[:3, 3]
    z = p[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.stack([camera.fx * p[..., 0] / z + camera.cx, camera.fy * p[..., 1] / z + camera.cy], -1), z


def bilinear(img, uv):
    """Bilinear samples of img (H, W[, C]) at uv (N, 2) (pixel centres at integers) and whether
    the 4 neighbours were inside."""
    h, w = img.shape[:2]
    u0, v0 = np.floor(uv[:, 0]).astype(int), np.floor(uv[:, 1]).astype(int)
    ok = (u0 >= 0) & (v0 >= 0) & (u0 + 1 < w) & (v0 + 1 < h)
    u0c, v0c = np.clip(u0, 0, w - 2), np.clip(v0, 0, h - 2)
    du, dv = uv[:, 0] - u0c, uv[:, 1] - v0c
    if img.ndim == 3:
        du, dv = du[:, None], dv[:, None]
    a, b = img[v0c, u0c], img[v0c, u0c + 1]
    c, d = img[v0c + 1, u0c], img[v0c + 1, u0c + 1]
    return (a * (1 - du) + b * du) * (1 - dv) + (c * (1 - du) + d * du) * dv, ok, (a, b, c, d)


def test_depth_reprojects_consistently_between_two_views(world):
    camera = PinholeCamera.from_fov(W, H, 61.0)
    pose_a = street_pose(world, 20.0)
    pose_b = street_pose(world, 23.0, lateral=0.4, yaw_offset=np.radians(4.0))
    _, depth_a = render(world, "summer", camera, pose_a)
    _, depth_b = render(world, "summer", camera, pose_b)
    finite = np.isfinite(depth_a)
    assert 0.5 < finite.mean() < 0.95  # a street: mostly surfaces, some sky
    pts = backproject(depth_a, camera, pose_a)[finite]
    uv, z_pred = project(pts, camera, pose_b)
    inv_b = np.where(np.isfinite(depth_b), 1.0 / depth_b, 0.0)
    # Inverse depth is affine in the pixel coordinates on a plane, so bilinear interpolation of it
    # is exact inside planar patches; keep patches whose 4 neighbours agree (no depth edge).
    inv, ok, corners = bilinear(inv_b, uv)
    stack = np.stack(corners, 1)
    smooth = ok & (z_pred > 0.1) & (stack.min(1) > 0) & (stack.max(1) < 1.02 * stack.min(1))
    assert smooth.sum() > 0.3 * finite.sum()
    rel = np.abs(1.0 / inv[smooth] - z_pred[smooth]) / z_pred[smooth]
    # Occlusions make a few pixels disagree; surfaces seen from both agree to float precision.
    assert np.mean(rel < 1e-3) > 0.9, np.percentile(rel, [50, 90, 99])
    assert np.median(rel) < 1e-4


def test_every_hit_lies_on_the_surface_it_reports(world):
    camera = PinholeCamera.from_fov(W, H, 61.0)
    pose = street_pose(world, 45.0, yaw_offset=np.radians(10.0))
    scene = world.scene("summer")
    hits = raycast(scene, camera, pose)
    pts = backproject(hits.depth, camera, pose).reshape(-1, 3)
    prim = hits.prim.reshape(-1)
    assert np.all(np.isinf(hits.depth.reshape(-1)[prim == SKY]))
    ground = prim == GROUND
    assert ground.any() and np.abs(pts[ground, 2]).max() < 1e-3
    prims = scene.primitives
    seen = np.unique(prim[prim >= 0])
    assert {Kind.BUILDING, Kind.SIDEWALK, Kind.CAR_BODY, Kind.CROWN} <= set(prims.kind[seen].tolist())
    for i in seen:
        q = pts[prim == i] - prims.center[i]
        if prims.shape[i] == Shape.BOX:
            c, s = prims.axis[i, :2]
            local = np.stack([c * q[:, 0] + s * q[:, 1], -s * q[:, 0] + c * q[:, 1], q[:, 2]], 1)
            residual = np.abs(np.abs(local) / prims.size[i]).max(1) - 1.0  # 0 on the box surface
            scale = prims.size[i].min()
        elif prims.shape[i] == Shape.CYLINDER:
            a = prims.axis[i]
            h = q @ a
            radial = np.linalg.norm(q - h[:, None] * a, axis=1)
            r, length = prims.size[i, :2]
            residual = np.minimum(np.abs(radial - r) / r + np.clip(-h, 0, None) + np.clip(h - length, 0, None),
                                  np.minimum(np.abs(h), np.abs(h - length)) + np.clip(radial - r, 0, None))
            scale = r
        else:
            residual = np.linalg.norm(q / prims.size[i], axis=1) - 1.0
            scale = prims.size[i].min()
        assert np.abs(residual).max() * scale < 1e-3, (i, prims.kind[i], np.abs(residual).max() * scale)


def test_textures_are_photo_consistent_between_views(world):
    """Procedural textures are defined on the surfaces: a static surface point has the same colour
    in two views (Lambertian light, no noise), so features can be matched across views."""
    camera = PinholeCamera.from_fov(W, H, 61.0)
    pose_a = street_pose(world, 30.0)
    pose_b = street_pose(world, 32.0, lateral=0.3, yaw_offset=np.radians(-3.0))
    rgb_a, depth_a = render(world, "summer", camera, pose_a)
    rgb_b, depth_b = render(world, "summer", camera, pose_b)
    hits = raycast(world.scene("summer"), camera, pose_a)
    kinds = np.where(hits.prim >= 0, world.scene("summer").primitives.kind[np.maximum(hits.prim, 0)], -1)
    static = (hits.prim == GROUND) | (kinds == Kind.BUILDING)
    # Centre of the image only: vignetting darkens the corners by up to 12 %.
    u, v = np.meshgrid(np.arange(W), np.arange(H))
    central = ((u - camera.cx) / W) ** 2 + ((v - camera.cy) / W) ** 2 < 0.06
    sel = static & central & np.isfinite(depth_a) & (depth_a < 40)
    pts = backproject(depth_a, camera, pose_a)[sel]
    uv, z_pred = project(pts, camera, pose_b)
    inv_b = np.where(np.isfinite(depth_b), 1.0 / depth_b, 0.0)
    inv, ok, corners = bilinear(inv_b, uv)
    stack = np.stack(corners, 1)
    visible = ok & (stack.min(1) > 0) & (np.abs(1.0 / np.maximum(inv, 1e-9) - z_pred) < 0.01 * z_pred)
    assert visible.sum() > 2000
    col_b, _, _ = bilinear(rgb_b.astype(np.float64), uv[visible])
    diff = np.abs(col_b - rgb_a[sel][visible].astype(np.float64)).mean(1)
    assert np.median(diff) < 6.0 and np.percentile(diff, 80) < 15.0, np.percentile(diff, [50, 80, 95])
    # ... while a pose 2 m off would not match (the check is not vacuous).
    wrong = street_pose(world, 34.0, lateral=0.3, yaw_offset=np.radians(-3.0))
    uvw, _ = project(pts, camera, wrong)
    colw, okw, _ = bilinear(rgb_b.astype(np.float64), uvw)
    diff_wrong = np.abs(colw[okw] - rgb_a[sel][okw].astype(np.float64)).mean(1)
    assert np.median(diff_wrong) > 2 * np.median(diff)


def test_conditions_change_appearance_not_buildings(world):
    camera = PinholeCamera.from_fov(W, H, 61.0)
    pose = street_pose(world, 25.0)
    summer = world.scene("summer")
    base_rgb, base_depth = render(world, "summer", camera, pose)
    base_hits = raycast(summer, camera, pose)
    for name in ("overcast", "autumn", "snow", "dusk"):
        rgb, depth = render(world, name, camera, pose)
        hits = raycast(world.scene(name), camera, pose)
        # Buildings and road are where they were; only cars and trees may come and go.
        static = lambda h, sc: (h.prim == GROUND) | (h.prim == SKY) | np.isin(
            np.where(h.prim >= 0, sc.primitives.kind[np.maximum(h.prim, 0)], -1), [Kind.BUILDING, Kind.SIDEWALK])
        both = static(base_hits, summer) & static(hits, world.scene(name))
        assert both.mean() > 0.6
        same = np.isclose(depth[both], base_depth[both], rtol=1e-5) | (np.isinf(depth[both]) & np.isinf(base_depth[both]))
        assert same.mean() > 0.999
        assert np.abs(rgb.astype(int) - base_rgb.astype(int)).mean() > 8, name  # looks different
    # Snow covers the road: the lower image (street) is much brighter than in summer.
    snow, _ = render(world, "snow", camera, pose)
    assert snow[H * 3 // 4:].mean() > base_rgb[H * 3 // 4:].mean() + 40


def test_render_is_deterministic_and_accepts_plain_parameters(world):
    camera = PinholeCamera.from_fov(96, 72, 61.0)
    pose = street_pose(world, 10.0)
    a, da = render(world, "dusk", (camera.fx, camera.fy, camera.cx, camera.cy), pose, 96, 72, noise_seed=5)
    b, db = render(world, "dusk", camera, (pose[:3, :3], pose[:3, 3]), noise_seed=5)
    c, _ = render(world, "dusk", camera, pose, noise_seed=6)
    assert a.shape == (72, 96, 3) and a.dtype == np.uint8 and da.dtype == np.float32 and da.shape == (72, 96)
    assert np.array_equal(a, b) and np.array_equal(da, db, equal_nan=True)
    assert not np.array_equal(a, c)  # sensor noise follows its seed
    with pytest.raises(ValueError, match="Unknown condition"):
        render(world, "monsoon", camera, pose)
    with pytest.raises(ValueError, match="width and height"):
        render(world, "summer", (1, 1, 0, 0), pose)


def test_world_is_deterministic_and_lanes_are_free(world):
    again = generate_world(3)
    other = generate_world(4)
    assert [b.center.tolist() for b in again.buildings] == [b.center.tolist() for b in world.buildings]
    assert [b.center.tolist() for b in other.buildings] != [b.center.tolist() for b in world.buildings]
    # Nothing but overhanging crowns and lamp arms above 2.5 m may reach into the driving lanes.
    prims = world.scene("summer").primitives
    cfg = world.config
    corridor = cfg.half_road - cfg.parking_width_m - 0.1
    for street in world.streets:
        d, left = street.direction, street.left
        for i in range(len(prims)):
            lo, hi = prims.aabb_min[i], prims.aabb_max[i]
            if lo[2] > 2.5 or prims.kind[i] == Kind.SIDEWALK:
                continue
            corners = np.array([[x, y] for x in (lo[0], hi[0]) for y in (lo[1], hi[1])]) - street.start
            s, lat = corners @ d, corners @ left
            overlaps = (s.max() > 0) and (s.min() < street.length) and (lat.max() > -corridor) and (lat.min() < corridor)
            assert not overlaps, (street.name, prims.kind[i], lo, hi)


def test_parked_cars_change_with_the_condition(world):
    key = lambda c: (c.slot, round(c.shift, 6), round(c.length, 6))
    summer = world.cars_for("summer")
    assert [key(c) for c in summer] == [key(c) for c in world.cars]
    for name in ("overcast", "autumn", "snow", "dusk"):
        cars = world.cars_for(name)
        assert [key(c) for c in cars] == [key(c) for c in world.cars_for(name)]  # deterministic
        unchanged = len({key(c) for c in cars} & {key(c) for c in summer})
        assert 0.3 * len(summer) < unchanged < 0.95 * len(summer), name
