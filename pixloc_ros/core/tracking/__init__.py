"""Frame after frame: the pipeline that turns frames, odometry, GNSS and initial poses into published
poses, and its named parts. Imports ``core.geometry``, ``core.engine`` and ``core.maps``.

The parts, in the order a frame meets them: ``frames`` (inputs, outputs, the shared ``Estimate``),
``odometry`` (the motion between frames), ``priors`` (initial pose, GNSS), ``seeds`` (the frame's
initial poses; ``seed_grid`` for a wide search), ``frame_points`` (the map points), ``candidates``
(each result judged and given its covariance; ``gating`` the checks, ``covariance_calibration``
the calibrated model), ``hypothesis_books`` (hypotheses over frames), ``decide`` (the verdict) and
``reasons`` (its codes); ``pipeline`` runs them.

Public API (imported on first use):
- ``RelocalizationPipeline``, ``PipelineConfig``, ``load_pipeline``: ``pipeline``;
- ``FrameInput``, ``FrameFeatures``, ``FrameOutput``, ``Estimate``, ``State``: ``frames``; ``Reason``, ``Why``: ``reasons``;
- ``HypothesisTracker``, ``HypothesisConfig``: ``hypothesis_books``; ``GatingConfig``: ``gating``;
- ``CovarianceCalibration``, ``fit_calibration``: ``covariance_calibration``;
- ``RigFrameGrouper``, ``RigGroup``, ``MembershipEvent``: ``rig_frames`` (a rig's frames grouped by stamp);
- ``build_int8``, ``load_int8``, ``Int8Unavailable``: ``int8_map`` (the map's int8 network).
"""
from pixloc_ros.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "RelocalizationPipeline": "pipeline", "PipelineConfig": "pipeline", "load_pipeline": "pipeline",
    "FrameInput": "frames", "FrameFeatures": "frames", "FrameOutput": "frames", "Estimate": "frames", "State": "frames",
    "Reason": "reasons", "Why": "reasons",
    "HypothesisTracker": "hypothesis_books", "HypothesisConfig": "hypothesis_books", "GatingConfig": "gating",
    "CovarianceCalibration": "covariance_calibration", "fit_calibration": "covariance_calibration",
    "RigFrameGrouper": "rig_frames", "RigGroup": "rig_frames", "MembershipEvent": "rig_frames",
    "build_int8": "int8_map", "load_int8": "int8_map", "Int8Unavailable": "int8_map",
})
