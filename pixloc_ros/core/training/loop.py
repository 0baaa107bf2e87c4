"""The training loop: Adam (AdamW) over the network and, with a larger step, the learned damping;
gradient clipping, periodic validation, metrics (``metrics.jsonl``) and resumable checkpoints in the
official PixLoc layout (``checkpoint_last.tar``). One step: ``losses.pair_forward`` on the pairs
of ``pairs.PairSampler``.
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from pixloc_ros.core.geometry.metrics import CMU_THRESHOLDS
from pixloc_ros.core.engine.network import PixLocModel
from .batchnorm import estimate_batchnorm_statistics, mean_spread
from .config import BATCHNORM_INITS, CHECKPOINT_NAME, CPU_BF16_MODES, METRICS_NAME, TrainConfig
from .losses import PairOutput, pair_forward, set_train_mode, validate
from .pairs import PairSampler, TrainingPair


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------

@dataclass
class TrainResult:
    """Where a ``train`` call stopped."""

    step: int  # optimizer steps done in total (including resumed ones)
    steps_this_run: int
    seconds: float  # wall time of this run
    checkpoint: Path
    stopped_by: str  # "steps" or "max_minutes"
    history: list[dict]  # the metric records of this run (also in metrics.jsonl)


def damping_parameters(model: PixLocModel) -> list[torch.nn.Parameter]:
    """The damping thetas ``optimizer.{l}.dampingnet.const``."""
    return [opt.dampingnet.const for opt in model.optimizer]


def freeze_encoder(model: PixLocModel, blocks: int) -> None:
    """Stop gradients into the first ``blocks`` VGG blocks (0: train everything)."""
    encoder = model.extractor.encoder
    if not 0 <= blocks <= len(encoder):
        raise ValueError(f"freeze_encoder_blocks must be in [0, {len(encoder)}], got {blocks}")
    for i, block in enumerate(encoder):
        for p in block.parameters():
            p.requires_grad_(i >= blocks)


def head_parameters(model: PixLocModel) -> list[torch.nn.Parameter]:
    """The confidence heads' weights and biases ``extractor.uncertainty.{0,1,2}.0.*``."""
    return list(model.extractor.uncertainty.parameters())


def make_optimizer(model: PixLocModel, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW with three groups (named in ``group["name"]``): the network ("network": lr, weight
    decay), the confidence heads ("heads": head_lr, no decay) and the damping ("damping": lr x
    scale, no decay). Frozen parameters are in none."""
    damping = damping_parameters(model)
    heads = [p for p in head_parameters(model) if p.requires_grad]
    ids = {id(p) for p in damping} | {id(p) for p in heads}
    network = [p for p in model.parameters() if id(p) not in ids and p.requires_grad]
    return torch.optim.AdamW([
        {"params": network, "lr": config.lr, "weight_decay": config.weight_decay, "name": "network"},
        {"params": heads, "lr": config.head_lr, "weight_decay": 0.0, "name": "heads"},
        {"params": damping, "lr": config.lr * config.damping_lr_scale, "weight_decay": 0.0, "name": "damping"},
    ], lr=config.lr)


def resolve_cpu_bf16(mode: str, device: torch.device) -> bool:
    """Whether the network runs under CPU bf16 autocast: ``mode`` "on", "off" or "auto" (on a CPU
    device whose processor has bf16 units, ``network_runtime.cpu_flags_have_bf16``)."""
    from pixloc_ros.core.engine.network_runtime import cpu_flags_have_bf16

    if mode not in CPU_BF16_MODES:
        raise ValueError(f"Unsupported cpu_bf16 {mode!r}, expected one of {CPU_BF16_MODES}")
    if device.type != "cpu" or mode == "off":
        return False
    return mode == "on" or cpu_flags_have_bf16()


def prepare_model(model: PixLocModel, sampler, config: TrainConfig, rng: np.random.Generator,
                  log: Callable[[str], None] = print) -> dict:
    """What a new run does to the model before its first step: re-initialise the confidence heads
    (``config.reset_heads``) and estimate BatchNorm's statistics on ``config.batchnorm_images`` map
    images of ``sampler`` (``config.batchnorm_init``). Returns a JSON-ready record of it."""
    from pixloc_ros.core.engine.checkpoint import init_confidence_heads

    if config.batchnorm_init not in BATCHNORM_INITS:
        raise ValueError(f"Unsupported batchnorm_init {config.batchnorm_init!r}, expected one of {BATCHNORM_INITS}")
    record: dict = {"reset_heads": config.reset_heads, "batchnorm_init": config.batchnorm_init}
    if config.reset_heads is not None:
        init_confidence_heads(model, torch.Generator().manual_seed(config.seed + 1), config.reset_heads)
        log(f"confidence heads re-initialised ({config.reset_heads})")
    if config.batchnorm_init != "keep":
        tic = time.perf_counter()
        images = sampler.map_images(config.batchnorm_images, rng)
        estimate = estimate_batchnorm_statistics(model, images,
                                                 preserve_function=config.batchnorm_init == "estimate_preserve")
        record["batchnorm"] = estimate.to_json()
        log(f"BatchNorm statistics estimated on {len(images)} map images ({time.perf_counter() - tic:.0f} s): "
            "mean |mean| " + " ".join(f"{m:.2f}" for m in estimate.mean_abs_mean)
            + ", mean std " + " ".join(f"{v:.2f}" for v in estimate.mean_std))
    return record


def config_to_dict(config: TrainConfig) -> dict:
    """Plain containers (tuples as lists) for the checkpoint's ``conf.train``."""
    def plain(x):
        if isinstance(x, dict):
            return {k: plain(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [plain(v) for v in x]
        return x
    return plain(asdict(config))


def official_conf(model: PixLocModel, config: TrainConfig, data: dict | None = None) -> dict:
    """The ``conf`` of a checkpoint written by ``train``: reference-style model part, our data/train."""
    from pixloc_ros.core.engine.checkpoint import default_official_conf

    conf = default_official_conf(model.encoder_name)
    conf["model"]["optimizer"]["num_iters"] = list(config.lm_iterations)
    conf["model"]["success_thresh"] = config.loss.success_thresh
    conf["model"]["clamp_error"] = config.loss.clamp_px
    conf["data"] = dict(data or {})
    conf["train"] = config_to_dict(config)
    return conf


def read_training_state(path: str | Path) -> dict:
    """The whole dict of a checkpoint written by ``train`` (restricted unpickler, as for weights)."""
    from pixloc_ros.core.engine.checkpoint import read_torch_checkpoint

    path = Path(path)
    state = read_torch_checkpoint(path)
    if not isinstance(state, dict) or "model" not in state:
        raise ValueError(f"{path} is not a training checkpoint (no 'model' entry)")
    return state


def _rng_state(rng: np.random.Generator) -> dict:
    return rng.bit_generator.state


def train(model: PixLocModel, sampler: PairSampler, config: TrainConfig, out_dir: str | Path, *,
          resume: bool = True, data_info: dict | None = None, validation_pairs: Sequence[TrainingPair] = (),
          log: Callable[[str], None] = print) -> TrainResult:
    """Train ``model`` in place on pairs from ``sampler``; checkpoints go to ``out_dir``.

    Resumes from ``out_dir/checkpoint_last.tar`` when it exists and ``resume`` (model, optimizer,
    step, sampling RNG, GradScaler). Writes ``metrics.jsonl`` (one record per ``log_every``
    steps) and calls ``log`` with one line per record. ``validation_pairs`` are localised every
    ``val_every`` steps (and at the start) with eval-time iterations.
    """
    from pixloc_ros.core.engine.checkpoint import save_official_checkpoint
    from pixloc_ros.core.engine.localizer import resolve_device

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(config.device)
    threads_before = torch.get_num_threads()
    if config.num_threads is not None:
        torch.set_num_threads(config.num_threads)
    use_amp = config.amp and device.type == "cuda"
    model.config.fp16_on_cuda = use_amp  # the network owns its autocast
    model.config.bf16_on_cpu = resolve_cpu_bf16(config.cpu_bf16, device)
    model.to(device)
    set_train_mode(model, config.freeze_batchnorm)
    freeze_encoder(model, config.freeze_encoder_blocks)
    optimizer = make_optimizer(model, config)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    rng = np.random.default_rng(config.seed)
    step = 0
    ckpt_path = out / CHECKPOINT_NAME
    setup: dict | None = None
    if resume and ckpt_path.exists():
        state = read_training_state(ckpt_path)
        model.load_state_dict(state["model"])
        groups = state.get("optimizer", {}).get("param_groups") or []
        if len(groups) == len(optimizer.param_groups):
            wanted = [g["lr"] for g in optimizer.param_groups]
            optimizer.load_state_dict(state["optimizer"])
            for group, lr in zip(optimizer.param_groups, wanted):  # this run's settings, not the saved ones
                group["lr"] = lr
        elif groups:
            log(f"optimizer state of {len(groups)} parameter groups not loaded (this recipe has "
                f"{len(optimizer.param_groups)}): Adam's moments restart")
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        if state.get("rng"):
            rng.bit_generator.state = state["rng"]
        step = int(state.get("step", 0))
        log(f"resumed from {ckpt_path} at step {step}")
    else:
        setup = prepare_model(model, sampler, config, rng, log)
        set_train_mode(model, config.freeze_batchnorm)
    conf = official_conf(model, config, data_info)

    saved_step = -1

    def save() -> Path:
        nonlocal saved_step
        if saved_step == step:
            return ckpt_path
        saved_step = step
        save_official_checkpoint(
            model, ckpt_path, conf, optimizer=optimizer.state_dict(), lr_scheduler={},
            epoch=0, losses=history[-1] if history else None, eval=last_eval, step=step,
            rng=_rng_state(rng), scaler=scaler.state_dict() if use_amp else {})
        return ckpt_path

    history: list[dict] = []
    last_eval: dict = {}
    start = time.perf_counter()
    first_step = step
    window: list[PairOutput] = []
    window_start = time.perf_counter()
    stopped_by = "steps"
    metrics = open(out / METRICS_NAME, "a")
    if setup is not None:
        metrics.write(json.dumps({"type": "setup", "step": step, "cpu_bf16": model.config.bf16_on_cpu, **setup}) + "\n")
        metrics.flush()

    def run_validation() -> None:
        nonlocal last_eval
        if not validation_pairs:
            return
        tic = time.perf_counter()
        v = validate(model, validation_pairs, config, device)
        last_eval = {"step": step, "val_loss": v.mean_loss, "val_recall": v.recall,
                     "val_median_translation_m": v.median_translation_m,
                     "val_median_rotation_deg": v.median_rotation_deg, "val_pairs": v.num_pairs,
                     "val_confidence": v.confidence}
        metrics.write(json.dumps({"type": "val", **last_eval}) + "\n")
        metrics.flush()
        log(f"val step {step}: loss {v.mean_loss:.2f}, recall "
            + "/".join(f"{100 * r:.0f}" for r in v.recall)
            + f" % at {'/'.join(f'{m:g}m,{d:g}deg' for m, d in CMU_THRESHOLDS)}, median "
              f"{v.median_translation_m:.3f} m {v.median_rotation_deg:.2f} deg, confidence std/p5/p95 per level "
            + ", ".join(f"{c['std']:.3f}/{c['p5']:.2f}/{c['p95']:.2f}" for c in v.confidence)
            + f" ({time.perf_counter() - tic:.0f} s)")

    try:
        if config.val_every > 0 and step == 0:
            run_validation()
        while step < config.steps:
            if config.max_minutes is not None and time.perf_counter() - start > 60 * config.max_minutes:
                stopped_by = "max_minutes"
                break
            optimizer.zero_grad(set_to_none=True)
            outputs = []
            for _ in range(config.batch_size):
                pair = sampler.sample(rng)
                out_pair = pair_forward(model, pair, config, device,
                                        pose_loss=step >= config.contrastive_only_steps)
                loss = out_pair.loss / config.batch_size
                if out_pair.valid and loss.requires_grad and torch.isfinite(loss):
                    scaler.scale(loss).backward()
                outputs.append(out_pair)
            scaler.unscale_(optimizer)
            params = [p for g in optimizer.param_groups for p in g["params"]]
            grads_ok = all(p.grad is None or torch.isfinite(p.grad).all() for p in params)
            if grads_ok:
                if config.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
                scaler.step(optimizer)
            scaler.update()
            step += 1
            window += outputs
            if step % config.log_every == 0 or step == config.steps:
                record = _record(step, window, model, time.perf_counter() - window_start, grads_ok)
                history.append(record)
                metrics.write(json.dumps({"type": "train", **record}) + "\n")
                metrics.flush()
                log(_format_record(record))
                window, window_start = [], time.perf_counter()
            if config.val_every > 0 and step % config.val_every == 0:
                run_validation()
            if step % config.checkpoint_every == 0:
                save()
        save()
    finally:
        metrics.close()
        torch.set_num_threads(threads_before)
    return TrainResult(step, step - first_step, time.perf_counter() - start, ckpt_path, stopped_by, history)


def _record(step: int, window: list[PairOutput], model: PixLocModel, seconds: float, grads_ok: bool) -> dict:
    """Means over the pairs since the last record."""
    def mean(xs):
        xs = [x for x in xs if math.isfinite(x)]
        return float(np.mean(xs)) if xs else math.nan

    with torch.no_grad():
        damping = model.damping().double().cpu().tolist()
    return {
        "step": step,
        "loss": mean([float(o.loss.detach()) for o in window if o.valid]),
        "contrastive": mean([o.contrastive for o in window if o.valid]),
        "error_px": [mean([o.level_errors[lv] for o in window if o.valid]) for lv in range(3)],
        "init_error_px": mean([o.init_error for o in window if o.valid]),
        "success": [float(np.mean([o.level_success[lv] for o in window])) for lv in range(3)],
        "median_translation_m": float(np.median([o.translation_error_m for o in window])),
        "median_rotation_deg": float(np.median([o.rotation_error_deg for o in window])),
        "pairs": len(window),
        "seconds_per_step": seconds / max(1, len(window)),  # per pair (the name predates several pairs per step)
        "confidence": mean_spread([o.confidence for o in window if o.confidence]),  # query maps, per level
        "damping": damping,
        "finite_gradients": grads_ok,
    }


def _format_record(r: dict) -> str:
    e = r["error_px"]
    s = r["success"]
    d = r["damping"]
    aux = f"  contrastive {r['contrastive']:.3f}" if math.isfinite(r.get("contrastive", math.nan)) else ""
    return (f"step {r['step']:6d}  loss {r['loss']:7.3f}{aux}  err px fine/mid/coarse {e[0]:6.2f} {e[1]:6.2f} {e[2]:6.2f}"
            f" (init {r['init_error_px']:6.2f})  success {s[0]:.2f} {s[1]:.2f} {s[2]:.2f}"
            f"  median {r['median_translation_m']:.3f} m {r['median_rotation_deg']:.2f} deg"
            f"  {r['seconds_per_step']:.2f} s/pair"
            + (f"  conf std fine {r['confidence'][0]['std']:.3f} (p5-p95 {r['confidence'][0]['p5']:.2f}-"
               f"{r['confidence'][0]['p95']:.2f})" if r.get("confidence") else "")
            + f"  log10 damping coarse [{' '.join(f'{math.log10(v):.1f}' for v in d[2])}]")


__all__ = ["TrainResult", "damping_parameters", "head_parameters", "freeze_encoder", "make_optimizer", "resolve_cpu_bf16",
           "prepare_model", "config_to_dict", "official_conf",
           "read_training_state", "train"]
