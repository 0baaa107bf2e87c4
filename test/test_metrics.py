import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from pixloc_ros.core.geometry.metrics import pose_errors, summarize


def test_pose_errors_recover_known_offsets():
    rng = np.random.default_rng(0)
    R_gt = Rotation.random(50, random_state=1).as_matrix()
    t_gt = rng.normal(size=(50, 3)) * 100
    angles = rng.uniform(0, 170, 50)
    axes = rng.normal(size=(50, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    R_est = R_gt @ Rotation.from_rotvec(axes * np.radians(angles)[:, None]).as_matrix()
    shift = rng.uniform(0, 3, 50)
    t_est = t_gt + axes * shift[:, None]
    dt, dr = pose_errors(R_est, t_est, R_gt, t_gt)
    np.testing.assert_allclose(dt, shift, atol=1e-9)
    np.testing.assert_allclose(dr, angles, atol=1e-6)


def test_recall_counts_unlocalized_frames_as_failures():
    s = summarize([0.1, 0.3, 2.0], [1.0, 1.0, 1.0], frames=6)
    assert s.localized == 3 and s.frames == 6
    assert s.recall == pytest.approx([1 / 6, 2 / 6, 3 / 6])
    assert s.median_translation_m == pytest.approx(0.3)
    # A frame within the distance but not the angle fails that threshold.
    assert summarize([0.1], [3.0], frames=1).recall == pytest.approx([0.0, 1.0, 1.0])


def test_summary_rejects_inconsistent_counts():
    with pytest.raises(ValueError):
        summarize([0.1, 0.2], [1.0], frames=3)
    with pytest.raises(ValueError):
        summarize([0.1, 0.2], [1.0, 1.0], frames=1)
    empty = summarize([], [], frames=4)
    assert empty.recall == [0.0, 0.0, 0.0] and np.isnan(empty.median_translation_m)
