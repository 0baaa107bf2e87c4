"""Frame after frame: priors, hypotheses and their books, gating, the published covariance and
its calibration, and the pipeline that turns frames, odometry, GNSS and initial poses into
published poses. Imports ``core.geometry``, ``core.engine`` and ``core.maps``.

Public API (imported on first use):
- ``RelocalizationPipeline``, ``PipelineConfig``, ``FrameInput``, ``FrameOutput``, ``State``,
  ``load_pipeline``: ``pipeline``;
- ``HypothesisTracker``, ``HypothesisConfig``: ``hypothesis_books``; ``GatingConfig``: ``gating``;
- ``CovarianceCalibration``, ``fit_calibration``: ``covariance_calibration``.
"""
from pixloc_ros.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "RelocalizationPipeline": "pipeline", "PipelineConfig": "pipeline", "FrameInput": "pipeline",
    "FrameOutput": "pipeline", "State": "pipeline", "load_pipeline": "pipeline",
    "HypothesisTracker": "hypothesis_books", "HypothesisConfig": "hypothesis_books", "GatingConfig": "gating",
    "CovarianceCalibration": "covariance_calibration", "fit_calibration": "covariance_calibration",
})
