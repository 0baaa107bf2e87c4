"""One pyramid level of PixLoc's Levenberg-Marquardt, batched over hypotheses: the torch loop
(``optimizer``), the fused Triton loop with CUDA graphs (``fused``, kernels in ``kernels`` and
``update_kernel``, their compiled variants in ``variants``) and the guard that probes the fused
loop against the torch one and falls back (``guard``).

Public API (imported on first use): ``LMConfig``, ``LevelResult`` (``config``); ``optimize_level``,
``resolve_lm_path``, ``run_level`` (``optimizer``); ``LMPathGuard``, ``LMPathStatus`` (``guard``);
``RigView``, ``optimize_rig_level`` (``rig``: one pose, every camera of a rig).
"""
from pixloc_ros.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "LMConfig": "config", "LevelResult": "config", "optimize_level": "optimizer",
    "resolve_lm_path": "optimizer", "run_level": "optimizer", "LMPathGuard": "guard", "LMPathStatus": "guard",
    "RigView": "rig", "optimize_rig_level": "rig",
})
