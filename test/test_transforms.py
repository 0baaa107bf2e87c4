"""core/geometry/transforms.py: the numpy pose helpers every layer shares (properties over batch shapes)."""
import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from pixloc_ros.core.geometry.transforms import (as_transform, check_transform, invert_transform, make_transform,
                                                 matrix_from_quat_wxyz, matrix_from_quat_xyzw, pose_difference,
                                                 quat_xyzw_from_matrix, rot_x, rot_y, rot_z, rotation_angle_deg)

RNG = np.random.default_rng(7)


def random_transforms(shape):
    n = int(np.prod(shape)) if shape else 1
    R = Rotation.random(n, random_state=3).as_matrix().reshape(*shape, 3, 3)
    return make_transform(R, RNG.normal(size=(*shape, 3)) * 10)


@pytest.mark.parametrize("shape", [(), (5,), (2, 3)])
def test_inverse_composes_to_identity_and_quaternions_round_trip(shape):
    T = random_transforms(shape)
    assert T.shape == (*shape, 4, 4)
    np.testing.assert_allclose(invert_transform(T) @ T, np.broadcast_to(np.eye(4), T.shape), atol=1e-12)
    q = quat_xyzw_from_matrix(T[..., :3, :3])
    assert q.shape == (*shape, 4) and np.all(q[..., 3] >= 0)
    np.testing.assert_allclose(np.linalg.norm(q, axis=-1), 1.0, atol=1e-12)
    np.testing.assert_allclose(matrix_from_quat_xyzw(q), T[..., :3, :3], atol=1e-12)
    np.testing.assert_allclose(matrix_from_quat_xyzw(-3.0 * q), T[..., :3, :3], atol=1e-12)  # sign and scale


def test_axis_rotations_and_quaternion_orders():
    a = np.array([0.3, -1.2])
    for rot, axis in ((rot_x, [1, 0, 0]), (rot_y, [0, 1, 0]), (rot_z, [0, 0, 1])):
        expected = Rotation.from_rotvec(np.outer(a, axis)).as_matrix()
        np.testing.assert_allclose(rot(a), expected, atol=1e-12)
    s = math.sqrt(0.5)  # 90 deg about z, in both orders: x -> y
    np.testing.assert_allclose(matrix_from_quat_xyzw([0, 0, s, s]) @ [1, 0, 0], [0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(matrix_from_quat_wxyz([s, 0, 0, s]), rot_z(math.pi / 2), atol=1e-12)
    with pytest.raises(ValueError, match="zero or non-finite"):
        matrix_from_quat_xyzw([0, 0, 0, 0])
    with pytest.raises(ValueError, match="zero or non-finite"):
        matrix_from_quat_xyzw([[0, 0, 0, 1], [math.nan, 0, 0, 1]])
    with pytest.raises(ValueError, match="not unit-norm"):
        matrix_from_quat_wxyz([0.5, 0, 0, 0])  # a corrupted dataset line is not normalised away


def test_as_transform_accepts_every_pose_form_and_checks_shape():
    T = random_transforms(())
    np.testing.assert_array_equal(as_transform(T), T)
    np.testing.assert_allclose(as_transform((T[:3, :3], T[:3, 3])), T)

    class WithTo4x4:
        def to_4x4(self):
            return T
    np.testing.assert_array_equal(as_transform(WithTo4x4()), T)
    with pytest.raises(ValueError, match="single pose"):
        as_transform(random_transforms((2,)))


def test_pose_difference_and_rotation_angle():
    T = random_transforms(())
    np.testing.assert_allclose(pose_difference(T, T), np.zeros(6), atol=1e-12)
    moved = make_transform(rot_z(0.1) @ T[:3, :3], T[:3, 3] + [1.0, -2.0, 0.5])  # left rotation in the common frame
    d = pose_difference(moved, T)
    np.testing.assert_allclose(d, [1.0, -2.0, 0.5, 0.0, 0.0, 0.1], atol=1e-12)
    np.testing.assert_allclose(pose_difference(T, moved), -d, atol=1e-12)
    assert rotation_angle_deg(rot_y(math.radians(30))) == pytest.approx(30.0)


def test_check_transform_names_what_is_wrong():
    assert check_transform(np.eye(4), "x").shape == (4, 4)
    with pytest.raises(ValueError, match="odometry pose must be a finite"):
        check_transform(np.full((4, 4), math.nan), "odometry pose")
    with pytest.raises(ValueError, match="shape \\(3, 3\\)"):
        check_transform(np.eye(3), "odometry pose")
    with pytest.raises(ValueError, match="invalid rotation"):
        check_transform(np.diag([2.0, 1.0, 1.0, 1.0]), "initial pose")
