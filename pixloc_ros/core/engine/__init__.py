"""PixLoc itself: the network and its weights, the Levenberg-Marquardt optimizer (``lm/``) and the
localizer that runs both on one image. Imports ``core.geometry`` only.

Public API (imported on first use):
- ``Localizer``, ``LocalizerConfig``: ``localizer``; ``LocalizationResult``, ``Failure``: ``results``;
- ``localize_rig``, ``localize_rig_extracted``, ``localize_rig_features``, ``RigLocalizationResult``: ``rig_localizer``
  (a camera rig, one pose);
- ``PixLocModel``, ``NetworkConfig``, ``FeaturePyramid``: ``network``; ``quantize_unet``: ``network_int8``;
- ``load_weights``, ``weights_fingerprint``, ``WeightsError``, ``init_weights``: ``checkpoint``;
- ``EngineProfile``, ``named_profile``: ``profile`` (the formulation a set of weights was trained with);
- ``QueryPoints``: ``query_points`` (3D points with their reference features, the localizer's input);
- ``BilinearSampler``: ``interpolation``; ``render_heatmaps``: ``heatmap``;
- ``LMConfig``, ``optimize_level``: ``lm``.
"""
from pixloc_ros.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "Localizer": "localizer", "LocalizerConfig": "localizer", "LocalizationResult": "results", "Failure": "results",
    "localize_rig": "rig_localizer", "localize_rig_extracted": "rig_localizer", "localize_rig_features": "rig_localizer",
    "RigLocalizationResult": "rig_localizer",
    "PixLocModel": "network", "NetworkConfig": "network", "FeaturePyramid": "network",
    "quantize_unet": "network_int8",
    "load_weights": "checkpoint", "weights_fingerprint": "checkpoint", "WeightsError": "checkpoint",
    "init_weights": "checkpoint",
    "EngineProfile": "profile", "named_profile": "profile",
    "QueryPoints": "query_points", "BilinearSampler": "interpolation", "render_heatmaps": "heatmap",
    "LMConfig": "lm.config", "optimize_level": "lm.optimizer",
})
