"""The node's localization measured offline: a drive through the pipeline without DDS, per-frame
records against the ground truth, accuracy and covariance figures, and their plots.
ROS-free; imports ``core`` and ``data.bags``.

Public API (imported on first use): ``evaluate_drive``, ``DriveEvaluation``, ``FrameRecord``,
``GroundTruth``: ``offline``; ``plot_trajectory``, ``plot_errors``: ``plots``.
"""
from pixloc_ros.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "evaluate_drive": "offline", "DriveEvaluation": "offline", "FrameRecord": "offline",
    "GroundTruth": "offline", "plot_trajectory": "plots", "plot_errors": "plots",
})
