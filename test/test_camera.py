"""Camera model: Jacobians vs autograd, COLMAP / CameraInfo conversions, monotonic range."""
import cv2
import numpy as np
import pytest
import torch

from pixloc_ros.core.geometry.camera import Camera, random_points_in_view

# One camera per distortion configuration the engine represents (engine convention).
CAMERAS = {
    "pinhole": Camera.from_params(640, 480, 500.0, 500.0, 319.5, 239.5),
    "pinhole_fx_fy": Camera.from_params(640, 480, 510.0, 495.0, 320.2, 241.1),
    "simple_radial": Camera.from_params(640, 480, 500.0, 500.0, 320.0, 240.0, [-0.12]),
    "radial": Camera.from_params(640, 480, 500.0, 500.0, 320.0, 240.0, [-0.2, 0.05]),
    "opencv": Camera.from_params(1024, 768, 800.0, 790.0, 512.3, 383.7, [-0.25, 0.08, 1e-3, -2e-3]),
    "opencv_k3": Camera.from_params(1024, 768, 800.0, 790.0, 512.3, 383.7, [-0.25, 0.08, 1e-3, -2e-3, -0.01]),
}


def points_in_front(n=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    xy = (torch.rand(n, 2, generator=g, dtype=torch.float64) - 0.5) * 1.2
    z = 1 + 9 * torch.rand(n, 1, generator=g, dtype=torch.float64)
    return torch.cat([xy * z, z], -1)


@pytest.mark.parametrize("name", CAMERAS)
def test_J_world2image_matches_autograd(name):
    cam = CAMERAS[name]
    p = points_in_front()
    J_auto = torch.autograd.functional.jacobian(lambda x: cam.world2image(x)[0], p)  # (N,2,N,3)
    J_auto = torch.stack([J_auto[i, :, i] for i in range(len(p))])
    J = cam.J_world2image(p)
    torch.testing.assert_close(J, J_auto, atol=1e-9, rtol=1e-9)
    p2d, valid, J2 = cam.world2image_with_jacobian(p)
    torch.testing.assert_close(J2, J)
    torch.testing.assert_close(p2d, cam.world2image(p)[0])
    assert valid.all()


@pytest.mark.parametrize("name", CAMERAS)
def test_J_distort_matches_autograd(name):
    cam = CAMERAS[name]
    pn = (torch.rand(30, 2, dtype=torch.float64) - 0.5) * 1.0
    J_auto = torch.autograd.functional.jacobian(lambda x: cam.distort(x)[0], pn)
    J_auto = torch.stack([J_auto[i, :, i] for i in range(len(pn))])
    torch.testing.assert_close(cam.J_distort(pn), J_auto, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("name", CAMERAS)
def test_projection_matches_opencv(name):
    cam = CAMERAS[name]
    p = points_in_front(seed=1)
    p2d, _ = cam.world2image(p)
    K = cam.K.numpy()
    dist = cam.dist.numpy()
    ref, _ = cv2.projectPoints(p.numpy(), np.zeros(3), np.zeros(3), K, dist)
    np.testing.assert_allclose(p2d.numpy(), ref[:, 0], atol=1e-6)


@pytest.mark.parametrize("name", CAMERAS)
def test_undistort_inverts_projection(name):
    cam = CAMERAS[name]
    p = points_in_front(seed=2)
    p2d, _ = cam.world2image(p)
    pn, valid = cam.undistort_points(p2d)
    assert valid.all()
    torch.testing.assert_close(pn, p[:, :2] / p[:, 2:], atol=1e-9, rtol=0)


def test_batched_cameras_broadcast_over_points():
    cams = Camera.stack([CAMERAS["radial"], CAMERAS["opencv_k3"].scale(640 / 1024)])
    p = points_in_front(20)[None].expand(2, 20, 3)
    p2d, valid = cams.world2image(p)
    assert p2d.shape == (2, 20, 2) and valid.shape == (2, 20)
    torch.testing.assert_close(p2d[1], cams[1].world2image(p[1])[0])
    J = cams.J_world2image(p)
    assert J.shape == (2, 20, 2, 3)
    torch.testing.assert_close(J[0], cams[0].J_world2image(p[0]))


def test_validity_depth_and_monotonic_range():
    cam = CAMERAS["radial"]  # k1 = -0.2, k2 = 0.05: d'(u) = 1 - 0.6u + 0.25u^2 > 0 always
    assert torch.isinf(cam.max_r2)
    barrel = Camera.from_params(640, 480, 500, 500, 320, 240, [-0.3])  # d'(u) = 1 - 0.9u: u < 1.111
    assert float(barrel.max_r2) == pytest.approx(1 / 0.9)
    p = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 1.0], [1.1, 0.0, 1.0], [0.0, 0.0, -1.0], [0, 0, 1e-4]],
                     dtype=torch.float64)
    _, valid = barrel.world2image(p)
    assert valid.tolist() == [True, True, False, False, False]
    # beyond the bound the distorted radius really decreases (why those points are invalid)
    r = torch.tensor([[1.0, 0.0], [1.1, 0.0], [1.2, 0.0]], dtype=torch.float64)
    d, _ = barrel.distort(r)
    assert d[1, 0] < d[0, 0] + 0.05 and d[2, 0] < d[1, 0]
    k3cam = CAMERAS["opencv_k3"]
    u = float(k3cam.max_r2)
    k1, k2, k3 = -0.25, 0.08, -0.01
    assert 1 + 3 * k1 * u + 5 * k2 * u ** 2 + 7 * k3 * u ** 3 == pytest.approx(0, abs=1e-9)


def test_in_image_uses_pixel_centres():
    cam = Camera.from_params(10, 8, 5, 5, 4.5, 3.5)
    p = torch.tensor([[0.0, 0.0], [9.0, 7.0], [9.01, 7.0], [-0.01, 3.0], [2.0, 2.0]], dtype=torch.float64)
    assert cam.in_image(p).tolist() == [True, True, False, False, True]
    assert cam.in_image(p, pad=2).tolist() == [False, False, False, False, True]


def test_scale_keeps_pixel_centres_consistent():
    cam = CAMERAS["opencv"]
    p = points_in_front(seed=3)
    p_full, _ = cam.world2image(p)
    for s in (0.25, 1 / 16, 0.5):
        p_s, _ = cam.scale(s).world2image(p)
        # pixel centre i of the scaled image covers full-res pixels [i/s, (i+1)/s): centre (i+0.5)/s-0.5
        torch.testing.assert_close((p_s + 0.5) / s - 0.5, p_full, atol=1e-9, rtol=0)
    sc = cam.scale((0.5, 0.25))
    torch.testing.assert_close(sc.size, torch.tensor([512.0, 192.0], dtype=torch.float64))


COLMAP_CASES = [
    ("SIMPLE_PINHOLE", [500.0, 320.0, 240.0]),
    ("PINHOLE", [500.0, 490.0, 320.0, 240.0]),
    ("SIMPLE_RADIAL", [500.0, 320.0, 240.0, -0.1]),
    ("RADIAL", [500.0, 320.0, 240.0, -0.1, 0.02]),
    ("OPENCV", [500.0, 490.0, 320.0, 240.0, -0.1, 0.02, 0.001, -0.002]),
    ("FULL_OPENCV", [500.0, 490.0, 320.0, 240.0, -0.1, 0.02, 0.001, -0.002, 0.003, 0, 0, 0]),
]


@pytest.mark.parametrize("model,params", COLMAP_CASES)
def test_colmap_round_trip_and_half_pixel_shift(model, params):
    cam = Camera.from_colmap(model, 640, 480, params)
    cx_colmap, cy_colmap = (params[1], params[2]) if model in ("SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL") \
        else (params[2], params[3])
    assert float(cam.c[0]) == cx_colmap - 0.5 and float(cam.c[1]) == cy_colmap - 0.5
    back = cam.to_colmap()
    assert back.model == model and (back.width, back.height) == (640, 480)
    np.testing.assert_array_equal(back.params, np.array(params))


def test_colmap_projection_matches_pycolmap():
    pycolmap = pytest.importorskip("pycolmap")
    model, params = COLMAP_CASES[4]
    pc = pycolmap.Camera(model=model, width=640, height=480, params=params)
    cam = Camera.from_colmap(model, 640, 480, params)
    p = points_in_front(seed=4)
    ours, _ = cam.world2image(p)
    theirs = np.asarray(pc.img_from_cam(p.numpy()))
    # COLMAP pixels = ours + 0.5
    np.testing.assert_allclose(ours.numpy() + 0.5, theirs[:, :2], atol=1e-6)


def test_colmap_model_by_id_and_errors():
    cam = Camera.from_colmap(1, 100, 80, [50, 50, 50, 40])
    assert cam.to_colmap().model == "SIMPLE_PINHOLE"  # fx == fy: the simplest exact model
    with pytest.raises(ValueError, match="FISHEYE"):
        Camera.from_colmap("FISHEYE", 100, 80, [50, 50, 40, 0, 0])
    with pytest.raises(ValueError, match="PINHOLE"):
        Camera.from_colmap("PINHOLE", 100, 80, [50, 50, 40])
    with pytest.raises(ValueError, match="k4..k6"):
        Camera.from_colmap("FULL_OPENCV", 100, 80, [50, 50, 50, 40, 0, 0, 0, 0, 0, 0.1, 0, 0])


def test_from_camera_info_models_and_errors():
    K = [500.0, 0, 319.5, 0, 505.0, 239.5, 0, 0, 1]
    cam = Camera.from_camera_info(640, 480, K, [-0.1, 0.01, 0.001, 0.002, 0.0005], "plumb_bob")
    torch.testing.assert_close(cam.data, torch.tensor(
        [640, 480, 500, 505, 319.5, 239.5, -0.1, 0.01, 0.001, 0.002, 0.0005], dtype=torch.float64))
    rp = Camera.from_camera_info(640, 480, K, [-0.1, 0.01, 0.001, 0.002, 0.0005, 0, 0, 0], "rational_polynomial")
    torch.testing.assert_close(rp.data, cam.data)
    plain = Camera.from_camera_info(640, 480, K, [], "")
    assert (plain.dist == 0).all()
    for model in ("equidistant", "fisheye", "kannala_brandt"):
        with pytest.raises(ValueError, match=model):
            Camera.from_camera_info(640, 480, K, [0.1, 0.01, 0, 0], model)
    with pytest.raises(ValueError, match="rational_polynomial"):
        Camera.from_camera_info(640, 480, K, [-0.1, 0.01, 0, 0, 0, 0.2, 0, 0], "rational_polynomial")
    with pytest.raises(ValueError, match="focal"):
        Camera.from_camera_info(640, 480, [0.0] * 9, [], "plumb_bob")
    with pytest.raises(ValueError, match="9 values"):
        Camera.from_camera_info(640, 480, K[:6], [], "plumb_bob")


def test_random_points_in_view_project_inside_the_image_at_their_depths():
    cam = Camera.from_params(160, 120, 128.0, 128.0, 79.5, 59.5)
    xyz = random_points_in_view(cam, 500, torch.Generator().manual_seed(3), 5.0, 30.0)
    assert xyz.shape == (500, 3) and xyz.dtype == torch.float64
    assert bool(((xyz[:, 2] >= 5.0) & (xyz[:, 2] <= 30.0)).all())
    p2d, valid = cam.world2image(xyz)
    assert bool(valid.all()) and bool(cam.in_image(p2d).all())
