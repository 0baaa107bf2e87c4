"""PixLoc's training recipe on a user's own map: pairs of covisible images (``pairs``), the
differentiable coarse-to-fine LM and its reprojection loss (``losses``), the loop with checkpoints
in the official layout (``loop``), their settings (``config``). Imports ``core.geometry``,
``core.engine`` and ``core.maps``; never the data layer (a renderer comes in as a function).

Public API (imported on first use): every name below.
"""
from pixloc_ros.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    **dict.fromkeys(["CHECKPOINT_NAME", "METRICS_NAME", "DAMPING_AXES", "RenderFn", "AugmentConfig", "PairConfig",
                     "LossConfig", "TrainConfig", "BATCHNORM_INITS", "CPU_BF16_MODES"], "config"),
    **dict.fromkeys(["BatchNormEstimate", "estimate_batchnorm_statistics", "confidence_spread", "mean_spread"],
                    "batchnorm"),
    **dict.fromkeys(["TrainingPair", "PairSampler", "MultiSampler", "color_jitter", "car_like_offset", "initial_reprojection_error"],
                    "pairs"),
    **dict.fromkeys(["PairOutput", "ValidationResult", "pair_forward", "validate", "set_train_mode",
                     "robust_reprojection_error", "reference_terms", "contrastive_term"], "losses"),
    **dict.fromkeys(["TrainResult", "train", "make_optimizer", "freeze_encoder", "damping_parameters", "official_conf",
                     "config_to_dict", "read_training_state", "prepare_model", "resolve_cpu_bf16", "head_parameters"], "loop"),
})
