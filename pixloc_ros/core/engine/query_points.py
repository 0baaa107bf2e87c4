"""The 3D points handed to the localizer, with their reference features per level."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class QueryPoints:
    """One row per residual term: a map point seen from one keyframe (CMU mode "each observation
    its own residual", point ids repeat) or a point with its features averaged over keyframes.

    Levels are ordered finest first (level 0: stride 1, level 2: stride 16).
    """

    xyz: torch.Tensor  # (N, 3) float32, world (map) coordinates, metres
    features: list[torch.Tensor]  # 3 x (N, C_l) reference features, L2-normalised, float16 or float32
    confidences: list[torch.Tensor]  # 3 x (N,) reference confidences in [0, 1]
    point_ids: torch.Tensor  # (N,) int64 map point ids
    keyframe_ids: torch.Tensor  # (N,) int64 keyframe whose features the row holds, -1 when averaged

    def __post_init__(self):
        n = self.xyz.shape[0]
        if self.xyz.ndim != 2 or self.xyz.shape[1] != 3:
            raise ValueError(f"QueryPoints.xyz must be (N, 3), got {tuple(self.xyz.shape)}")
        if len(self.features) != 3 or len(self.confidences) != 3:
            raise ValueError(f"QueryPoints needs 3 levels, got {len(self.features)} features and "
                             f"{len(self.confidences)} confidences")
        for level, (f, c) in enumerate(zip(self.features, self.confidences)):
            if f.ndim != 2 or f.shape[0] != n or c.shape != (n,):
                raise ValueError(f"QueryPoints level {level}: features {tuple(f.shape)} and confidences "
                                 f"{tuple(c.shape)} do not match {n} points")
        if self.point_ids.shape != (n,) or self.keyframe_ids.shape != (n,):
            raise ValueError("QueryPoints.point_ids and keyframe_ids must be (N,)")

    def __len__(self) -> int:
        return self.xyz.shape[0]

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "QueryPoints":
        """Move to ``device``; ``dtype`` (if given) applies to xyz, features and confidences."""
        def mv(x):
            return x.to(device=device, dtype=dtype) if dtype is not None else x.to(device)
        return QueryPoints(mv(self.xyz), [mv(f) for f in self.features], [mv(c) for c in self.confidences],
                           self.point_ids.to(device), self.keyframe_ids.to(device))

    def select(self, mask_or_index: torch.Tensor) -> "QueryPoints":
        """Rows picked by a boolean mask (N,) or an index tensor."""
        m = mask_or_index
        return QueryPoints(self.xyz[m], [f[m] for f in self.features], [c[m] for c in self.confidences],
                           self.point_ids[m], self.keyframe_ids[m])
