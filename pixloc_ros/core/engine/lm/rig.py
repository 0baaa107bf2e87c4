"""One level's Levenberg-Marquardt over a camera rig: ONE pose per hypothesis, residuals from
every camera (issue 30; the rig and its pose convention: ``geometry.rig``).

The estimated pose is ``anchor_from_world`` (the anchor camera's optical frame, where the learned
damping lives). Camera k's points reach its image through the fixed chain
``P_k = R_k (R P + t) + t_k`` with ``(R_k, t_k) = cam_k_from_anchor``; for the left update of the
anchor pose, ``dp_k/dxi = J_p,k R_k [I | -[P_a]x]`` with ``P_a = R P + t``: each camera's Jacobian
is its own projection Jacobian chained through its extrinsic rotation (``LevelProblem`` with
``cam_from_anchor``). Every camera's ``g`` and ``H`` (6 x 6 in the anchor frame) are summed before
the one damped solve per hypothesis, so all cameras and all hypotheses move together in one
batch, with the same loop, stopping rule and result as the single-camera LM (``optimizer.run_level``).

A rig of one camera with no extrinsic (the anchor alone) goes straight to ``optimize_level``:
exactly today's LM, fused Triton path included. Several cameras run the torch loop (one
``LevelProblem.evaluate`` per camera per iteration, each batched over the hypotheses); the fused
kernels take one query map per level and are not rig-aware yet.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ...geometry.camera import Camera
from ...geometry.pose import Pose
from .config import LevelResult, LMConfig
from .optimizer import LevelProblem, LevelTerms, optimize_level, run_level


@dataclass
class RigView:
    """One camera's share of one level of a rig problem (the arguments ``optimize_level`` takes
    for a single camera, plus where the camera sits on the rig)."""

    features: torch.Tensor  # (C, H, W) or (1, C, H, W) query features of this camera at the level
    confidence: torch.Tensor | None  # (1, H, W) query confidence, or None (all ones)
    xyz: torch.Tensor  # (N_k, 3) world points this camera's keyframes observe (metres)
    ref_features: torch.Tensor  # (N_k, C) reference features
    ref_confidence: torch.Tensor | None  # (N_k,) or None
    camera: Camera  # this camera scaled to the level (pixel-centre origin)
    cam_from_anchor: Pose | None = None  # () this camera <- anchor optical frame; None: the anchor itself
    pad: float | None = None  # border pad of this camera's map (level px); None: the LMConfig's


class RigLevelProblem:
    """Every camera's ``LevelProblem`` of one level, evaluated as one cost of the anchor pose.

    Quacks like ``LevelProblem`` for ``optimizer.run_level``: ``evaluate(R, t)`` returns the summed
    gradient, Hessian, cost and valid count, and the per-point terms concatenated camera after
    camera (``offsets`` says where each camera's points start)."""

    def __init__(self, views: list[RigView], config: LMConfig):
        if not views:
            raise ValueError("a rig level needs at least one camera view")
        self.parts = [LevelProblem(v.features, v.confidence, v.xyz, v.ref_features, v.ref_confidence, v.camera,
                                   config if v.pad is None else replace(config, pad=float(v.pad)), v.cam_from_anchor)
                      for v in views]
        channels = {p.C for p in self.parts}
        if len(channels) != 1:
            raise ValueError(f"rig cameras have feature maps of different channel counts {sorted(channels)} "
                             "at one level (one network runs every camera)")
        devices = {p.device for p in self.parts}
        if len(devices) != 1:
            raise ValueError(f"rig views on several devices {sorted(map(str, devices))}")
        self.C = channels.pop()
        self.device = devices.pop()
        self.two_c2 = self.parts[0].two_c2
        counts = [p.num_points for p in self.parts]
        self.num_points = sum(counts)
        self.offsets = [sum(counts[:k]) for k in range(len(counts) + 1)]

    def evaluate(self, R: torch.Tensor, t: torch.Tensor, reduce_dtype: torch.dtype | None = None) -> LevelTerms:
        """Terms of the anchor poses (R (B, 3, 3), t (B, 3)) summed over the cameras."""
        terms = [p.evaluate(R, t, reduce_dtype) for p in self.parts]
        first = terms[0]
        g, H, cost, valid_count = first.g, first.H, first.cost_sum, first.num_valid
        for more in terms[1:]:
            g, H = g + more.g, H + more.H
            cost, valid_count = cost + more.cost_sum, valid_count + more.num_valid
        return LevelTerms(g, H, cost, valid_count, torch.cat([x.w for x in terms], 1),
                          torch.cat([x.e for x in terms], 1), torch.cat([x.valid for x in terms], 1))


def optimize_rig_level(views: list[RigView], init: Pose, damping: torch.Tensor,
                       config: LMConfig | None = None) -> LevelResult:
    """Run LM on one level for B hypotheses of one rig pose seen by every camera in ``views``.

    init: Pose (B,) ``anchor_from_world``; damping: (6,) lambda of the level, anchor-frame order
    [tx, ty, tz, rx, ry, rz]. Returns ``LevelResult`` whose ``cam_from_world`` is the anchor pose,
    ``hessian`` / ``gradient`` in the anchor frame, ``num_valid`` / ``weights`` over all cameras'
    points (weights camera after camera, in ``views`` order). Never raises on degenerate data,
    like ``optimize_level``; ValueError for views that cannot form one problem.
    """
    config = config or LMConfig()
    if init.shape == ():
        init = init[None]
    if len(views) == 1 and views[0].cam_from_anchor is None:
        v = views[0]
        cfg = config if v.pad is None else replace(config, pad=float(v.pad))
        return optimize_level(v.features, v.confidence, v.xyz, v.ref_features, v.ref_confidence, v.camera,
                              init, damping, cfg)
    # The compiled step pads each camera's points to its own bucket; the rig loop runs eagerly.
    config = replace(config, compile=False)
    return run_level(RigLevelProblem(views, config), init, damping, config)


def split_per_camera(values: torch.Tensor, problem_or_offsets) -> list[torch.Tensor]:
    """(..., N_total) per-point values (e.g. ``LevelResult.weights``) -> one (..., N_k) per camera."""
    offsets = getattr(problem_or_offsets, "offsets", problem_or_offsets)
    return [values[..., a:b] for a, b in zip(offsets[:-1], offsets[1:])]
