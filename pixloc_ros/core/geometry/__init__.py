"""Poses, cameras, georeference and pose errors: the leaf of the core (imports nothing else of it).

Public API (imported on first use, so that ``import pixloc_ros.core.geometry.georef`` does not
load torch for the tools that run without it):
- ``Pose`` (batched rigid transforms, torch), ``so3_exp`` / ``so3_log`` / ``skew``: ``pose``;
- ``Camera`` (batched pinhole + OpenCV distortion, pixel-centre origin), ``MIN_DEPTH``: ``camera``;
- ``Georeference`` (map origin and heading <-> WGS84): ``georef``;
- ``Rig``, ``RigCamera``, ``extrinsics_from_parameters``: ``rig`` (several cameras, one pose);
- ``pose_errors``, ``summarize``, ``AccuracySummary``, ``CMU_THRESHOLDS``: ``metrics``;
"""
from pixloc_ros.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "Pose": "pose", "so3_exp": "pose", "so3_log": "pose", "skew": "pose",
    "Camera": "camera", "MIN_DEPTH": "camera",
    "Georeference": "georef",
    "Rig": "rig", "RigCamera": "rig", "extrinsics_from_parameters": "rig",
    "pose_errors": "metrics", "summarize": "metrics", "AccuracySummary": "metrics", "CMU_THRESHOLDS": "metrics",
})
