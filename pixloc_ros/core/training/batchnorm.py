"""BatchNorm statistics that normalise, and what the confidence maps spread over.

The UNet's decoder has a BatchNorm after every 3x3 conv. A random initialisation leaves its
running statistics at mean 0, variance 1 and training keeps them (``TrainConfig.freeze_batchnorm``:
with a few images per step batch statistics are noisy and differ from what inference uses), so the
decoder's features were never normalised: the confidence heads saw inputs that barely varied over
the image on top of a large constant offset (issue 27). ``estimate_batchnorm_statistics`` sets
the running statistics to the exact per-channel mean and variance of each BatchNorm's input over
a set of images (the map's), before training; training then keeps them fixed, as inference uses
them.

``confidence_spread`` summarises a confidence map the way the issue measures it: the standard
deviation over the pixels of an image and the 5th / 95th percentiles, per level.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from pixloc_ros.core.engine.network import PixLocModel


@dataclass
class BatchNormEstimate:
    """What ``estimate_batchnorm_statistics`` changed, per BatchNorm layer (network order)."""

    names: list[str]  # module names, e.g. "extractor.decoder.0.layers.1"
    mean_abs_mean: list[float]  # mean over channels of |estimated mean|
    mean_std: list[float]  # mean over channels of the estimated standard deviation
    images: int  # images the statistics were computed on
    preserved_function: bool  # the affine parameters were adjusted so that the outputs did not change

    def to_json(self) -> dict:
        """Plain containers for ``metrics.jsonl``."""
        return {"layers": {n: {"mean_abs_mean": m, "mean_std": s}
                           for n, m, s in zip(self.names, self.mean_abs_mean, self.mean_std)},
                "images": self.images, "preserved_function": self.preserved_function}


def _batches(images: Sequence[np.ndarray], batch_size: int, device: torch.device):
    for i in range(0, len(images), batch_size):
        chunk = np.stack(images[i:i + batch_size])  # (B, H, W, 3) uint8
        yield torch.from_numpy(chunk).permute(0, 3, 1, 2).to(device).float() / 255.0


def estimate_batchnorm_statistics(model: PixLocModel, images: Sequence[np.ndarray], batch_size: int = 4,
                                  preserve_function: bool = False) -> BatchNormEstimate:
    """Set every BatchNorm's running mean and variance to those of its input over ``images``.

    images: (H, W, 3) uint8 RGB arrays of one size. The statistics are exact (sums of x and x^2
    per channel over every pixel of every image, in float64), not a running average; the layers
    are estimated one after the other, so each sees the already normalised output of the ones
    before it. ``preserve_function``: also rescale each layer's weight and shift its bias so that
    its output is unchanged (for weights trained with other statistics: the running statistics
    become the true ones and the affine parameters carry the scale). The model's train/eval mode
    and its gradients are left as they were.
    """
    if not images:
        raise ValueError("estimate_batchnorm_statistics needs at least one image")
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    device = model.device
    was_training = model.training
    model.eval()  # every BatchNorm uses its running statistics while the others are estimated
    means, stds = [], []
    try:
        for name, bn in layers:
            sums: dict[str, torch.Tensor] = {}

            def hook(_module, inputs, _output, sums=sums):
                x = inputs[0].detach().double().transpose(0, 1).reshape(inputs[0].shape[1], -1)
                sums["n"] = sums.get("n", 0) + x.shape[1]
                sums["s"] = sums.get("s", 0) + x.sum(1)
                sums["ss"] = sums.get("ss", 0) + (x * x).sum(1)

            handle = bn.register_forward_hook(hook)
            with torch.no_grad():
                for batch in _batches(images, batch_size, device):
                    model(batch)
            handle.remove()
            mean = sums["s"] / sums["n"]
            var = (sums["ss"] / sums["n"] - mean * mean).clamp(min=0.0)
            with torch.no_grad():
                if preserve_function:
                    # y = g (x - m) / sqrt(v + e) + b must stay the same function of x.
                    old = torch.sqrt(bn.running_var.double() + bn.eps)
                    new = torch.sqrt(var + bn.eps)
                    g = bn.weight.double() / old
                    bn.bias.copy_((bn.bias.double() + g * (mean - bn.running_mean.double())).to(bn.bias.dtype))
                    bn.weight.copy_((g * new).to(bn.weight.dtype))
                bn.running_mean.copy_(mean.to(bn.running_mean.dtype))
                bn.running_var.copy_(var.to(bn.running_var.dtype))
            means.append(float(mean.abs().mean()))
            stds.append(float(var.sqrt().mean()))
    finally:
        model.train(was_training)
    return BatchNormEstimate([n for n, _ in layers], means, stds, len(images), preserve_function)


def confidence_spread(confidence: torch.Tensor) -> tuple[float, float, float]:
    """(std, p5, p95) of one confidence map (H, W) or (1, H, W) or (1, 1, H, W) over its pixels."""
    c = confidence.detach().float().reshape(-1)
    if c.numel() == 0:
        return float("nan"), float("nan"), float("nan")
    q = torch.quantile(c.cpu(), torch.tensor([0.05, 0.95]))
    return float(c.std()), float(q[0]), float(q[1])


def mean_spread(spreads: Sequence[Sequence[tuple[float, float, float]]]) -> list[dict[str, float]]:
    """Per level, the mean over images of (std, p5, p95): ``spreads[image][level]`` ->
    ``[{"std", "p5", "p95"}]`` finest first (empty input -> [])."""
    if not spreads:
        return []
    arr = np.asarray(spreads, np.float64)  # (images, levels, 3)
    return [{"std": float(np.nanmean(arr[:, lv, 0])), "p5": float(np.nanmean(arr[:, lv, 1])),
             "p95": float(np.nanmean(arr[:, lv, 2]))} for lv in range(arr.shape[1])]


__all__ = ["BatchNormEstimate", "estimate_batchnorm_statistics", "confidence_spread", "mean_spread"]
