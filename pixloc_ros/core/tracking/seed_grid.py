"""Many initial poses for one relocalization: keyframe poses x yaw and position offsets.

PixLoc converges from about a metre and a few degrees (DESIGN.md); a coarse prior (GNSS, an
operator's click) can be further off. Instead of one start per keyframe, ``expand_hypotheses``
spreads each start over a small grid of yaw angles and positions, and the LM runs all of them in
one batch (the fused kernels handle 64+ hypotheses in one pass, ``fused_lm``); the lowest final
cost wins (``localizer``). Offsets are taken in each camera's own frame (x right, y down, z
forward), so no map "up" axis is needed: yaw turns the camera about its vertical axis through its
centre, and shifts move the centre sideways (x) and along the view (z).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from ..geometry.pose import Pose, so3_exp


def expand_hypotheses(cam_from_world: Pose, yaw_offsets_deg: Sequence[float] = (0.0,),
                      lateral_offsets_m: Sequence[float] = (0.0,),
                      forward_offsets_m: Sequence[float] = (0.0,)) -> Pose:
    """Every start pose combined with every offset.

    cam_from_world: Pose (K,) or (); offsets: yaw about the camera's y axis (degrees, positive
    turns the view to the right), shifts of the camera centre along its x (right) and z (forward)
    axes (metres). Returns Pose (K * Y * L * F,) in that nesting order (all offsets of the first
    start first), same dtype and device as the input.
    """
    if cam_from_world.shape == ():
        cam_from_world = cam_from_world[None]
    if len(cam_from_world.shape) != 1:
        raise ValueError(f"cam_from_world must be a Pose (K,), got shape {tuple(cam_from_world.shape)}")
    if not (yaw_offsets_deg and lateral_offsets_m and forward_offsets_m):
        raise ValueError("every offset list needs at least one value (use (0.0,) for none)")
    dtype, device = cam_from_world.R.dtype, cam_from_world.R.device
    yaw = torch.tensor([math.radians(float(v)) for v in yaw_offsets_deg], dtype=dtype, device=device)
    lat = torch.tensor([float(v) for v in lateral_offsets_m], dtype=dtype, device=device)
    fwd = torch.tensor([float(v) for v in forward_offsets_m], dtype=dtype, device=device)
    Y, L, F = len(yaw), len(lat), len(fwd)
    # Offset of the new camera in the old camera's frame: oldcam_from_newcam = (R_y(yaw), c).
    axis = torch.zeros(Y, 3, dtype=dtype, device=device)
    axis[:, 1] = yaw
    R_off = so3_exp(axis)[:, None, None].expand(Y, L, F, 3, 3)
    centre = torch.zeros(Y, L, F, 3, dtype=dtype, device=device)
    centre[..., 0] = lat[None, :, None]
    centre[..., 2] = fwd[None, None, :]
    old_from_new = Pose.from_Rt(R_off.reshape(-1, 3, 3), centre.reshape(-1, 3))
    # cam'_from_world = new_from_old @ old_from_world, for every start and offset.
    new_from_old = old_from_new.inv()
    K, M = cam_from_world.shape[0], Y * L * F
    starts = cam_from_world[:, None].expand(K, M).reshape(K * M)
    offsets = new_from_old[None].expand(K, M).reshape(K * M)
    return offsets @ starts


def relocalization_grid(cam_from_world: Pose, count: int = 64, yaw_span_deg: float = 20.0,
                        shift_span_m: float = 2.0) -> Pose:
    """About ``count`` hypotheses around the given starts: yaw steps over +-``yaw_span_deg`` / 2 and
    a 2 x 2 grid of sideways / forward shifts over +-``shift_span_m`` / 2 (K starts: count // (4 K)
    yaw angles each, at least one). Returns Pose (K * Y * 4,)."""
    K = 1 if cam_from_world.shape == () else cam_from_world.shape[0]
    Y = max(1, count // (4 * K))
    yaws = [0.0] if Y == 1 else [yaw_span_deg * (i / (Y - 1) - 0.5) for i in range(Y)]
    half = shift_span_m / 2
    return expand_hypotheses(cam_from_world, yaws, (-half / 2, half / 2), (-half / 2, half / 2))


__all__ = ["expand_hypotheses", "relocalization_grid"]
