"""One training step's forward pass and loss (PixLoc's recipe: features, confidences and damping
learned end to end from poses).

One training example is a pair of images of a mapped place with known poses: a reference image
(the map) and a query. The query is localised from the reference's pose with the full
coarse-to-fine Levenberg-Marquardt of ``core/engine/lm/optimizer.py`` (differentiable: no detach inside a
level), using the reference's features sampled at the projections of the pair's 3D points. The
loss compares where the 3D points land in the query under the estimated and the true pose
(DESIGN.md "Training"):

- per level l: ``err_l = mean_points rho(|p(T_l P) - p(T_gt P)|)`` in network-input pixels,
  ``rho(e) = c (sqrt(1 + (e / c)^2) - 1)`` (Barron's alpha = 1, scale c = 2 px: quadratic below
  c, ~e above), clamped at 50 px (a clamped level gives no gradient: the pair failed there);
- levels run coarse (stride 16) -> fine (1); the coarse term always counts, a finer one only
  when the coarser level ended within ``3 px x its stride`` (no gradient from hopeless levels);
- the total is the sum over levels divided by the number of levels.
Gradients reach the query and reference features and confidences through the residuals, the
Jacobians and the weights, and the learned damping through the damped solve. As in the
reference, the pose is detached between levels. The damping thetas learn with a larger step
(x100 by default) than the network.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from pixloc_ros.core.geometry.camera import Camera
from pixloc_ros.core.geometry.pose import Pose, pose_error
from pixloc_ros.core.engine.interpolation import BilinearSampler
from pixloc_ros.core.engine.localizer import level_pads
from pixloc_ros.core.geometry.metrics import CMU_THRESHOLDS
from pixloc_ros.core.engine.network import STRIDES, PixLocModel
from pixloc_ros.core.engine.lm.config import LMConfig
from pixloc_ros.core.engine.lm.optimizer import optimize_level
from .batchnorm import confidence_spread, mean_spread
from .config import TrainConfig
from .pairs import TrainingPair


# ---------------------------------------------------------------------------------------------
# Forward pass and loss
# ---------------------------------------------------------------------------------------------

@dataclass
class PairOutput:
    """What one pair's forward pass and loss give."""

    loss: torch.Tensor  # scalar (graph attached when training); 0 for a pair without enough points
    level_errors: list[float]  # robust reprojection error per level after LM, finest first (clamped), px
    init_error: float  # same at the initial pose (not clamped), px
    level_success: list[bool]  # finest first: the level ended within success_thresh x stride
    pose: Pose  # final estimate (finest level run), detached, float64, ()
    rotation_error_deg: float  # of the final estimate vs the truth
    translation_error_m: float  # camera-centre distance of the final estimate vs the truth
    num_points: int  # points valid under both the true and the initial pose
    valid: bool  # enough points for the loss
    contrastive: float = math.nan  # the auxiliary contrastive term (mean over levels), nan when off
    # (std, p5, p95) of the query's confidence map over its pixels, per level, finest first
    confidence: list[tuple[float, float, float]] = field(default_factory=list)


def robust_reprojection_error(pose: Pose, xyz: torch.Tensor, p_true: torch.Tensor, mask: torch.Tensor,
                              camera: Camera, scale_px: float) -> torch.Tensor:
    """Mean over ``mask`` of ``rho(|p(pose xyz) - p_true|)``, rho(e) = c (sqrt(1 + (e/c)^2) - 1).

    pose: (); xyz (N, 3); p_true (N, 2) pixels; mask (N,) bool; -> scalar tensor (pixels).
    Projections behind the camera are clamped to the near plane (finite, large errors).
    """
    p2d, _ = camera.world2image(pose.transform(xyz))
    e2 = ((p2d - p_true) ** 2).sum(-1)
    c = scale_px
    rho = c * (torch.sqrt(1 + e2 / (c * c)) - 1)
    m = mask.to(rho.dtype)
    return (rho * m).sum() / m.sum().clamp(min=1)


def reference_terms(features: list[torch.Tensor], confidences: list[torch.Tensor], xyz: torch.Tensor,
                    cam_from_world: Pose, camera: Camera, pads: Sequence[float]
                    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Reference features and confidences of the points, sampled in the order the map compiler uses.

    features[l] (1, C_l, H_l, W_l) of the reference image: the raw maps for the reference profile
    (the reference trains on normalised samples of the raw maps), the normalised ones for the
    native profile; confidences[l] (1, 1, H_l, W_l);
    xyz (N, 3); pads: border of each level, level pixels, finest first (``localizer.level_pads``).
    Returns per level (N, C_l) L2-normalised features and (N,) confidences, the confidence set
    to 0 where the projection is behind the camera or within that level's pad of the border (so
    the point does not count at that level). Differentiable in the maps.
    """
    p_cam = cam_from_world.transform(xyz)
    feats, confs = [], []
    for level, stride in enumerate(STRIDES):
        cam_l = camera.scale(1.0 / stride)
        p2d, visible = cam_l.world2image(p_cam)
        table = torch.cat([features[level][0], confidences[level][0]], 0)
        s = BilinearSampler(table).sample(p2d[None].to(table.dtype), float(pads[level]), gradients=False)
        C = features[level].shape[1]
        feats.append(F.normalize(s.values[0, :, :C], dim=-1))
        confs.append(s.values[0, :, C] * (s.valid[0] & visible).to(table.dtype))
    return feats, confs


def contrastive_term(query_features: torch.Tensor, ref_features: torch.Tensor, p2d: torch.Tensor,
                     mask: torch.Tensor, temperature: float, min_sep: float) -> torch.Tensor:
    """InfoNCE of reference features against the query features at the points' true projections.

    query_features (C, H, W) of one level (L2-normalised); ref_features (N, C); p2d (N, 2) true
    projections in that level's pixels; mask (N,) points to use. Each point's positive is its own
    projection, its negatives the other points' projections at least ``min_sep`` pixels away.
    Returns a scalar (0 with fewer than 2 usable points). Differentiable in both feature sets.
    """
    s = BilinearSampler(query_features).sample(p2d[None].to(query_features.dtype), 0.0, gradients=False)
    use = mask & s.valid[0]
    if int(use.sum()) < 2:
        return query_features.new_zeros(())
    fq = F.normalize(s.values[0][use], dim=-1)
    fr = ref_features[use].to(fq.dtype)
    logits = fr @ fq.T / temperature  # (M, M): row i = reference i against every projection
    p = p2d[use]
    close = torch.cdist(p, p) < min_sep
    close.fill_diagonal_(False)
    logits = logits.masked_fill(close, float("-inf"))
    return F.cross_entropy(logits, torch.arange(len(fq), device=fq.device))


def _images_tensor(images: Sequence[np.ndarray], device: torch.device) -> torch.Tensor:
    batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)
    return batch.to(device).float() / 255.0


def pair_forward(model: PixLocModel, pair: TrainingPair, config: TrainConfig, device: torch.device,
                 lm_iterations: Sequence[int] | None = None, pose_loss: bool = True) -> PairOutput:
    """Network on both images, coarse-to-fine LM from ``pair.init``, and the loss.

    ``pose_loss`` False: only the contrastive term (no LM; the pose stays at the initial one).

    Differentiable when called with grad enabled (and ``model.train()``); use under
    ``torch.no_grad()`` for validation. ``lm_iterations`` (finest first) overrides the config.
    """
    iters = tuple(lm_iterations or config.lm_iterations)
    loss_cfg = config.loss
    # Training solves the system inference will solve: the Jacobian, the stopping rule, the pads
    # and the reference sampling order of the weights' engine profile.
    profile = model.engine_profile
    raw = profile.reference_sampling == "raw_then_normalize"
    same_size = pair.reference_image.shape == pair.query_image.shape
    if config.reference_grad and same_size:
        pyr = model(_images_tensor([pair.reference_image, pair.query_image], device), keep_raw=raw)
        ref_maps = pyr.raw_features if raw else pyr.features
        ref_f = [f[0:1] for f in ref_maps]
        ref_c = [c[0:1] for c in pyr.confidences]
        q_f = [f[1:2] for f in pyr.features]
        q_c = [c[1:2] for c in pyr.confidences]
    else:
        with torch.set_grad_enabled(config.reference_grad and torch.is_grad_enabled()):
            ref = model(_images_tensor([pair.reference_image], device), keep_raw=raw)
        query = model(_images_tensor([pair.query_image], device))
        ref_f = ref.raw_features if raw else ref.features
        ref_c, q_f, q_c = ref.confidences, query.features, query.confidences

    spread = [confidence_spread(c) for c in q_c]

    dt = torch.float32
    xyz = torch.from_numpy(pair.xyz).to(device=device, dtype=dt)
    ref_pose = pair.reference_from_world.to(device=device, dtype=dt)
    truth = pair.query_from_world.to(device=device, dtype=dt)
    init = pair.init.to(device=device, dtype=dt)
    ref_cam = pair.reference_camera.to(device=device, dtype=dt)
    q_cam = pair.query_camera.to(device=device, dtype=dt)
    pad = config.lm_pad if config.lm_pad is not None else profile.pad
    ref_pads = level_pads(pad, [f.shape[-2:] for f in ref_f])
    query_pads = level_pads(pad, [f.shape[-2:] for f in q_f])
    lm_settings = dict(gradient=profile.gradient, stopping=profile.stopping)
    if profile.stopping == "reference" and model.training:
        # The reference never stops early while training (``early_stop`` checks ``not self.training``);
        # its failure rule (too few valid points) still applies.
        lm_settings.update(stop_dt=0.0, stop_dw_deg=0.0, grad_stop=0.0)
    f_ref, c_ref = reference_terms(ref_f, ref_c, xyz, ref_pose, ref_cam, ref_pads)

    # Loss mask as in the reference: points in front of, and inside, the query under both the
    # true and the initial pose.
    p_cam_true = truth.transform(xyz)
    p_true, v_true = q_cam.world2image(p_cam_true)
    p_init, v_init = q_cam.world2image(init.transform(xyz))
    mask = v_true & v_init & q_cam.in_image(p_true) & q_cam.in_image(p_init)
    num_points = int(mask.sum())
    valid = num_points >= loss_cfg.min_points
    init_error = float(robust_reprojection_error(init, xyz, p_true, mask, q_cam, loss_cfg.robust_scale_px))

    pose = init[None]
    total = torch.zeros((), device=device)
    contrastive = math.nan
    if loss_cfg.contrastive_weight > 0 and valid:
        terms = []
        for level, stride in enumerate(STRIDES):
            p_l, _ = q_cam.scale(1.0 / stride).world2image(p_cam_true)
            terms.append(contrastive_term(q_f[level][0], f_ref[level], p_l, mask & (c_ref[level] > 0),
                                          loss_cfg.contrastive_temperature, loss_cfg.contrastive_min_sep))
        aux = torch.stack(terms).mean()
        total = total + loss_cfg.contrastive_weight * aux
        contrastive = float(aux.detach())
    errors: dict[int, float] = {}
    success: dict[int, bool] = {}
    previous_ok = True
    ran = [lv for lv in (2, 1, 0) if iters[lv] > 0] if pose_loss else []
    for level in ran:
        lm = LMConfig(num_iters=int(iters[level]), pad=query_pads[level], **lm_settings)
        res = optimize_level(q_f[level][0], q_c[level][0], xyz, f_ref[level], c_ref[level],
                             q_cam.scale(1.0 / STRIDES[level]), pose, model.optimizer[level].dampingnet(), lm)
        estimate = res.cam_from_world[0]
        err = robust_reprojection_error(estimate, xyz, p_true, mask, q_cam, loss_cfg.robust_scale_px)
        err = err.clamp(max=loss_cfg.clamp_px)
        if previous_ok and valid and bool(torch.isfinite(err)):
            total = total + err / len(ran)
        errors[level] = float(err.detach())
        success[level] = errors[level] < loss_cfg.success_thresh * STRIDES[level]
        previous_ok = previous_ok and success[level]
        pose = res.cam_from_world.detach()  # the reference detaches the pose between levels
    final = pose[0].to("cpu", torch.float64)
    rot, trans = pose_error(final, pair.query_from_world.double())
    return PairOutput(total, [errors.get(lv, math.nan) for lv in range(3)], init_error,
                      [success.get(lv, False) for lv in range(3)], final, float(rot), float(trans),
                      num_points, valid, contrastive, spread)


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------

@dataclass
class ValidationResult:
    """Localisation of fixed validation pairs with eval-time LM iterations."""

    num_pairs: int
    mean_loss: float
    median_translation_m: float
    median_rotation_deg: float
    recall: list[float]  # at ``thresholds``
    thresholds: list[tuple[float, float]] = field(default_factory=lambda: list(CMU_THRESHOLDS))
    # per level (finest first), the mean over the pairs' query images of the confidence map's
    # spread: {"std", "p5", "p95"}
    confidence: list[dict[str, float]] = field(default_factory=list)


def validate(model: PixLocModel, pairs: Sequence[TrainingPair], config: TrainConfig, device: torch.device,
             lm_iterations: Sequence[int] = (25, 25, 25)) -> ValidationResult:
    """Localise every pair (eval mode, no grad) and summarise errors and recall."""
    was_training = model.training
    model.eval()
    # restored below to train mode with the loop's BatchNorm setting
    losses, dts, drs, spreads = [], [], [], []
    with torch.no_grad():
        for pair in pairs:
            out = pair_forward(model, pair, config, device, lm_iterations)
            losses.append(float(out.loss.detach()))
            dts.append(out.translation_error_m)
            drs.append(out.rotation_error_deg)
            spreads.append(out.confidence)
    if was_training:
        set_train_mode(model, config.freeze_batchnorm)
    dts, drs = np.array(dts), np.array(drs)
    recall = [float(np.mean((dts <= m) & (drs <= d))) for m, d in CMU_THRESHOLDS]
    return ValidationResult(len(pairs), float(np.mean(losses)), float(np.median(dts)), float(np.median(drs)), recall,
                            confidence=mean_spread(spreads))


def set_train_mode(model: PixLocModel, freeze_batchnorm: bool) -> None:
    """``model.train()``, with the BatchNorm layers left in eval mode when ``freeze_batchnorm``
    (their affine parameters still learn; their running statistics stay as they are)."""
    model.train()
    if freeze_batchnorm:
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.eval()
