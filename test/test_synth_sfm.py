"""The synthetic SfM map: built by pycolmap from the mapping images with the known poses; its
points reproject onto their keypoints and lie on the world's surfaces."""
import numpy as np

from pixloc_ros.core.colmap_io import read_model
from pixloc_ros.data.render import raycast
from pixloc_ros.data.synth import load_dataset, read_mapping_poses


def test_model_has_the_known_poses_and_camera(synth_small):
    model = read_model(synth_small / "sfm")
    data = load_dataset(synth_small)
    poses = {p.name: p.cam_from_world for p in read_mapping_poses(synth_small / "mapping" / "poses.txt")}
    assert len(model.images) == len(poses) == len(list((synth_small / "mapping" / "images").glob("*.png")))
    for image in model.images.values():
        T = poses[image.name]
        assert np.allclose(image.R, T[:3, :3], atol=1e-7) and np.allclose(image.t, T[:3, 3], atol=1e-6)
    (camera,) = model.cameras.values()
    c = data.camera
    assert camera.model == "PINHOLE" and (camera.width, camera.height) == (c.width, c.height)
    # COLMAP's pixel origin is the corner of the top-left pixel: principal point + 0.5.
    assert np.allclose(camera.params, [c.fx, c.fy, c.cx + 0.5, c.cy + 0.5])


def test_points_reproject_below_one_pixel(synth_small):
    model = read_model(synth_small / "sfm")
    assert len(model.point_ids) > 200 and model.track_lengths.min() >= 2
    fx, fy, cx, cy = next(iter(model.cameras.values())).params
    errors = []
    for xyz, images, idxs in zip(model.xyz, model.track_image_ids, model.track_point2D_idx):
        for iid, idx in zip(images, idxs):
            im = model.images[int(iid)]
            p = im.R @ xyz + im.t
            uv = np.array([fx * p[0] / p[2] + cx, fy * p[1] / p[2] + cy])
            errors.append(np.linalg.norm(uv - im.xys[idx]))
    errors = np.array(errors)
    assert errors.mean() < 1.0 and np.percentile(errors, 95) < 2.5, (errors.mean(), np.percentile(errors, 95))


def test_points_lie_on_the_surfaces_of_the_world(synth_small):
    """Each point against the rendered depth of an image observing it (the analytic scene)."""
    model = read_model(synth_small / "sfm")
    data = load_dataset(synth_small)
    cam = data.camera
    by_image: dict[int, list[int]] = {}
    for k, images in enumerate(model.track_image_ids):
        by_image.setdefault(int(images[0]), []).append(k)
    rel_errors = []
    for iid, ks in by_image.items():
        im = model.images[iid]
        T = np.eye(4)
        T[:3, :3], T[:3, 3] = im.R, im.t
        depth = raycast(data.world.scene("summer"), cam, T).depth
        p = model.xyz[ks] @ im.R.T + im.t
        u = np.round(cam.fx * p[:, 0] / p[:, 2] + cam.cx).astype(int)
        v = np.round(cam.fy * p[:, 1] / p[:, 2] + cam.cy).astype(int)
        ok = (u >= 1) & (v >= 1) & (u < cam.width - 1) & (v < cam.height - 1)
        for z, uu, vv in zip(p[ok, 2], u[ok], v[ok]):
            # Nearest surface in a 3x3 window: a keypoint on a depth edge may sit on either side.
            window = depth[vv - 1:vv + 2, uu - 1:uu + 2]
            rel_errors.append(np.min(np.abs(window - z)) / z)
    rel = np.array(rel_errors)
    assert len(rel) > 0.9 * len(model.point_ids)
    # Forward motion gives small triangulation angles (depth to a few %), and repeated
    # structure (window rows, lane dashes) leaves a few mismatches along epipolar lines, as in
    # any SfM map; most points sit on the surface.
    assert np.median(rel) < 0.01, np.percentile(rel, [50, 90, 99])
    assert np.mean(rel < 0.03) > 0.8 and np.mean(rel < 0.1) > 0.9, np.percentile(rel, [50, 80, 90, 99])
