"""Overlapped stages: the network of frame k+1 on a second thread while frame k's LM runs gives the
same poses, states and reasons as one frame after the other (core/tracking/pipeline.py ``extract`` /
``process(frame, features)``, data/evaluation/offline.py ``evaluate_drive(overlap=True)``, the node's
two-stage worker)."""
import numpy as np

from pixloc_ros.core.tracking.frames import FrameInput
from pixloc_ros.core.tracking.pipeline import load_pipeline
from pixloc_ros.data.bags import read_drive
from pixloc_ros.data.evaluation.offline import camera_from_info, evaluate_drive

import pytest


def test_overlapped_network_gives_identical_poses(localizing_weights, synth_map):
    drive = read_drive(synth_map.data / "queries" / "overcast")
    runs = []
    for overlap in (False, True):
        pipeline = load_pipeline(str(synth_map.map_file), str(localizing_weights), "cpu")
        runs.append(evaluate_drive(pipeline, drive, max_frames=8, overlap=overlap))
        pipeline.close()
    plain, overlapped = runs
    assert sum(f.success for f in plain.frames) >= 4  # a drive that relocalizes and then tracks
    for a, b in zip(plain.frames, overlapped.frames, strict=True):
        assert (a.stamp_ns, a.state, a.success, a.reason) == (b.stamp_ns, b.state, b.success, b.reason)
        assert (a.estimate is None) == (b.estimate is None)
        if a.estimate is not None:  # bit for bit: the same network output, the same LM
            assert np.array_equal(a.estimate.map_from_base, b.estimate.map_from_base)
        if a.success:
            assert np.array_equal(np.asarray(a.map_from_base), np.asarray(b.map_from_base))
            assert np.array_equal(np.asarray(a.covariance), np.asarray(b.covariance))
        if b.network_s > 0:  # the latency of an overlapped frame covers its network stage too
            assert b.total_s >= b.network_s + b.optimizer_s


def test_features_of_another_frame_are_refused(localizing_weights, synth_map):
    drive = read_drive(synth_map.data / "queries" / "overcast")
    pipeline = load_pipeline(str(synth_map.map_file), str(localizing_weights), "cpu")
    f0, f1 = drive.frames[:2]
    frames = [FrameInput(f.stamp_ns, f.image, camera_from_info(f.camera_info), drive.base_from_camera())
              for f in (f0, f1)]
    features = pipeline.extract(frames[0])
    with pytest.raises(ValueError, match="features of the frame"):
        pipeline.process(frames[1], features)
    pipeline.close()
