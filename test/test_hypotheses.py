"""Hypothesis grids (core/tracking/seed_grid.py): counts, and offsets in each camera's own frame."""
import math

import pytest
import torch

from pixloc_ros.core.geometry.pose import Pose, pose_error
from pixloc_ros.core.tracking.seed_grid import expand_hypotheses, relocalization_grid


def centre(p: Pose) -> torch.Tensor:
    return p.inv().t


def starts():
    return Pose.exp(torch.tensor([[1.0, 0.2, -3.0, 0.1, 0.5, -0.05], [-2.0, 0.0, 4.0, 0.0, -1.2, 0.02]],
                                 dtype=torch.float64))


def test_zero_offsets_return_the_starts():
    s = starts()
    out = expand_hypotheses(s)
    torch.testing.assert_close(out.R, s.R)
    torch.testing.assert_close(out.t, s.t)


def test_yaw_turns_about_the_camera_centre_and_shifts_follow_the_camera_axes():
    s = starts()
    out = expand_hypotheses(s, yaw_offsets_deg=(-10.0, 0.0, 10.0), lateral_offsets_m=(0.0, 1.5),
                            forward_offsets_m=(0.0, -2.0))
    assert out.shape == (2 * 3 * 2 * 2,)
    grid = out.reshape(2, 3, 2, 2)
    for k in range(2):
        world_from_cam = s[k].inv()
        for y, yaw in enumerate((-10.0, 0.0, 10.0)):
            h = grid[k, y, 0, 0]
            torch.testing.assert_close(centre(h), world_from_cam.t)  # yaw keeps the centre
            dr, _ = pose_error(h, s[k])
            assert math.isclose(float(dr), abs(yaw), abs_tol=1e-9)
            # yaw is about the camera's y axis: that axis (in the world) is unchanged
            torch.testing.assert_close(h.R[1], s[k].R[1])
            # the shift of the centre, in the start camera's frame, is (lateral, 0, forward)
            for i, lat in enumerate((0.0, 1.5)):
                for j, fwd in enumerate((0.0, -2.0)):
                    moved = world_from_cam.inv().transform(centre(grid[k, y, i, j])[None])[0]
                    torch.testing.assert_close(moved, torch.tensor([lat, 0.0, fwd], dtype=torch.float64))


def test_relocalization_grid_size_and_spread():
    s = starts()
    out = relocalization_grid(s, count=64)
    assert out.shape == (64,)
    single = relocalization_grid(s[0], count=64, yaw_span_deg=30.0)
    assert single.shape == (64,)
    yaws = [float(pose_error(single[i], s[0])[0]) for i in range(0, 64, 4)]
    assert max(yaws) == pytest.approx(15.0, abs=1e-6)
    with pytest.raises(ValueError, match="at least one"):
        expand_hypotheses(s, yaw_offsets_deg=())
