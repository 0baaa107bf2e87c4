"""The PixLoc network: a VGG UNet giving 3 levels of dense features and confidences.

Module names mirror the reference implementation (cvg/pixloc ``UNet`` inside ``TwoViewRefiner``)
so that ``PixLocModel().state_dict()`` has exactly the keys of the released checkpoints:
``extractor.encoder.*``, ``extractor.decoder.*``, ``extractor.adaptation.*``,
``extractor.uncertainty.*`` and ``optimizer.{0,1,2}.dampingnet.const``.

The VGG encoder is written out here rather than taken from torchvision: torchvision is not a
dependency of the project, and this way nothing can ever try to download ImageNet weights.

Levels are ordered finest first: level 0 at stride 1 (32 channels), level 1 at stride 4 (128),
level 2 at stride 16 (128). A pixel (x, y) of the input image (origin at the centre of the
top-left pixel) sits at x_l = (x + 0.5) / stride_l - 0.5 on level l: max-pooling (2x2, stride 2,
floor) and bilinear x2 upsampling with ``align_corners=False`` both keep that relation, and
the padding used for sizes that are not a multiple of 16 is added at the bottom/right only.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .profile import EngineProfile, native_profile
from .network_runtime import (CPU_PRECISIONS, CPU_RUNTIMES, CompiledUNet, resolve_cpu_precision,
    resolve_cpu_runtime)

STRIDES = (1, 4, 16)  # stride of each output level, finest first
OUTPUT_DIMS = (32, 128, 128)  # channels of each output level, finest first
DECODER_DIMS = (64, 64, 64, 32)  # output channels of the decoder blocks, coarse to fine
ENCODER_STRIDE = 16  # stride of the deepest encoder block (4 max-pools)
LOG10_DAMPING_RANGE = (-6.0, 5.0)  # lambda = 10 ** (lo + (hi - lo) * sigmoid(theta))
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Conv output channels of each VGG block (torchvision's ``features`` split at every max-pool;
# the fifth max-pool and the classifier are not used).
VGG_BLOCKS = {
    "vgg16": ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    "vgg19": ((64, 64), (128, 128), (256,) * 4, (512,) * 4, (512,) * 4),
}
ENCODERS = tuple(VGG_BLOCKS)
PAD_MODES = ("replicate", "reflect", "constant", None)


@dataclass
class NetworkConfig:
    """Run-time behaviour of :class:`PixLocModel` (does not change the weights)."""

    # Run the network under fp16 autocast when the input is on CUDA (outputs stay float32).
    fp16_on_cuda: bool = True
    # Run the torch network under bf16 autocast when the input is on the CPU (outputs stay float32).
    # For training on processors with bf16 units (AVX512-BF16, AMX); BENCHMARKS.md "Training" has
    # what it gains and how far its features move. Inference runtimes ignore it (``cpu_precision``).
    bf16_on_cpu: bool = False
    # How to handle images whose size is not a multiple of 16. "replicate", "reflect" or
    # "constant" (black) pad the bottom and right edges of the [0, 1] image up to a multiple of 16
    # and crop every level back to ceil(size / stride), so the maps cover the whole image. None reproduces the reference exactly: the maps cover only the
    # top-left 16 * floor(size / 16) pixels (level l has size 16 * floor(size / 16) / stride_l).
    pad_mode: str | None = "replicate"
    # On CUDA, run the convolutions in NHWC (channels-last) layout, which fp16 tensor-core kernels
    # prefer; the weights are converted on the first such call. Outputs are the same maps.
    channels_last: bool = False
    # Inference runtime of the UNet for CPU images without autograd (``network_runtime``): "torch",
    # "openvino", "onnxruntime" or "auto" (the fastest installed). Training and CUDA always use torch.
    cpu_runtime: str = "torch"
    # Precision of that runtime (``network_runtime.CPU_PRECISIONS``): "f32", "bf16" (OpenVINO on a
    # processor with bf16 units; features within about 1 %), "int8" (the graph in ``PixLocModel.int8_unet``)
    # or "auto" (bf16 where there are such units, else int8 when that graph's accuracy was checked).
    cpu_precision: str = "f32"

    def __post_init__(self):
        if self.pad_mode not in PAD_MODES:
            raise ValueError(f"Unsupported pad_mode {self.pad_mode!r}, expected one of {PAD_MODES}")
        if self.cpu_runtime not in CPU_RUNTIMES:
            raise ValueError(f"Unsupported cpu_runtime {self.cpu_runtime!r}, expected one of {CPU_RUNTIMES}")
        if self.cpu_precision not in CPU_PRECISIONS:
            raise ValueError(f"Unsupported cpu_precision {self.cpu_precision!r}, expected one of {CPU_PRECISIONS}")


@dataclass
class FeaturePyramid:
    """Dense features and confidences of one batch of images, level 0 (finest) first.

    ``features[l]``: (B, C_l, H_l, W_l) float32, unit L2 norm over channels, C = (32, 128, 128).
    ``confidences[l]``: (B, 1, H_l, W_l) float32 in (0, 1) (exactly 0 or 1 only where the
    float32 sigmoid saturates, |logit| > ~17; not clamped, to keep the reference's numbers).
    Pixel (x, y) of the image is at ((x + 0.5) / s_l - 0.5, (y + 0.5) / s_l - 0.5) on level l,
    s_l = ``strides[l]``. ``image_size`` is the (H, W) of the input image.
    """

    features: list[torch.Tensor]
    confidences: list[torch.Tensor]
    image_size: tuple[int, int]
    strides: tuple[int, ...] = field(default=STRIDES)
    # The features before L2 normalisation (float32), when asked for (``keep_raw``): the reference
    # samples reference features from these and normalises the samples (engine_profile).
    raw_features: list[torch.Tensor] | None = None

    def detach(self) -> "FeaturePyramid":
        """A copy without autograd history."""
        raw = None if self.raw_features is None else [f.detach() for f in self.raw_features]
        return FeaturePyramid([f.detach() for f in self.features],
                              [c.detach() for c in self.confidences], self.image_size, self.strides, raw)

    def to(self, device: torch.device | str) -> "FeaturePyramid":
        """A copy on ``device``."""
        raw = None if self.raw_features is None else [f.to(device) for f in self.raw_features]
        return FeaturePyramid([f.to(device) for f in self.features],
                              [c.to(device) for c in self.confidences], self.image_size, self.strides, raw)


def _vgg_encoder(name: str) -> nn.ModuleList:
    """VGG ``features`` split at each max-pool into 5 blocks (strides 1, 2, 4, 8, 16).

    Layer indices inside each block match the reference (conv at 0, 2 in block 0; the other
    blocks start with their max-pool, so convs at 1, 3, 5, ...).
    """
    if name not in VGG_BLOCKS:
        raise ValueError(f"Unsupported encoder {name!r}, expected one of {ENCODERS}")
    blocks = []
    in_channels = 3
    for index, widths in enumerate(VGG_BLOCKS[name]):
        layers: list[nn.Module] = []
        if index > 0:
            # floor mode: the reference asserts ceil_mode=False (the decoder crops the skips).
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        for width in widths:
            layers += [nn.Conv2d(in_channels, width, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            in_channels = width
        blocks.append(nn.Sequential(*layers))
    return nn.ModuleList(blocks)


class DecoderBlock(nn.Module):
    """Upsample x2 (bilinear), crop the skip to that size, concat [up, skip], conv3x3-BN-ReLU."""

    def __init__(self, previous: int, skip: int, out: int):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(previous + skip, out, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out),
            nn.ReLU(inplace=True),
        )

    def forward(self, previous: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """(B, C_prev, h, w), (B, C_skip, >=2h, >=2w) -> (B, out, 2h, 2w)."""
        upsampled = F.interpolate(previous, scale_factor=2.0, mode="bilinear", align_corners=False)
        hu, wu = upsampled.shape[-2:]
        # Floor pooling drops the last row/column of odd-sized maps, so the skip can be one
        # larger; cropping at the bottom/right keeps the top-left pixel centres aligned.
        skip = skip[:, :, :hu, :wu]
        return self.layers(torch.cat([upsampled, skip], dim=1))


class UNet(nn.Module):
    """The reference PixLoc UNet (``output_scales=[0, 2, 4]``, ``output_dim=[32, 128, 128]``,
    ``compute_uncertainty=True``).

    ``forward(image)``: (B, 3, H, W) RGB in [0, 1] with H, W multiples of 16 (or not: the maps
    then cover the top-left 16 * floor(H / 16) pixels) -> (features, uncertainty logits), each a
    list of 3 tensors finest first; features are not normalised yet.
    """

    def __init__(self, encoder: str = "vgg16"):
        super().__init__()
        self.encoder_name = encoder
        self.encoder = _vgg_encoder(encoder)
        skip_dims = [widths[-1] for widths in VGG_BLOCKS[encoder]]  # 64, 128, 256, 512, 512

        decoder = []
        previous = skip_dims[-1]
        for out, skip in zip(DECODER_DIMS, skip_dims[:-1][::-1]):  # in: 1024, 320, 192, 128
            decoder.append(DecoderBlock(previous, skip, out))
            previous = out
        self.decoder = nn.ModuleList(decoder)

        # Pre-features (fine to coarse): decoder outputs at strides 1, 2, 4, 8, then the deepest
        # encoder block at stride 16. Output levels take indices 0, 2, 4 of that list.
        self.output_scales = (0, 2, 4)
        in_dims = [DECODER_DIMS[-1 - i] if i < len(skip_dims) - 1 else skip_dims[i]
                   for i in self.output_scales]  # 32, 64, 512
        self.adaptation = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, d, kernel_size=1)) for c, d in zip(in_dims, OUTPUT_DIMS))
        self.uncertainty = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, 1, kernel_size=1)) for c in in_dims)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, image: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        x = (image - self.mean.to(image.dtype)) / self.std.to(image.dtype)
        skips = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
        pre = [skips[-1]]
        for block, skip in zip(self.decoder, skips[:-1][::-1]):
            pre.append(block(pre[-1], skip))
        pre = pre[::-1]  # fine to coarse: strides 1, 2, 4, 8, 16
        features = [adapt(pre[i]) for adapt, i in zip(self.adaptation, self.output_scales)]
        logits = [unc(pre[i]) for unc, i in zip(self.uncertainty, self.output_scales)]
        return features, logits


class DampingNet(nn.Module):
    """Learned constant damping of one level: lambda = 10 ** (-6 + 11 * sigmoid(const))."""

    def __init__(self):
        super().__init__()
        self.const = nn.Parameter(torch.zeros(6))  # theta, order [tx, ty, tz, rx, ry, rz]

    def forward(self) -> torch.Tensor:
        """-> (6,) damping factors lambda, same order as ``const``."""
        lo, hi = LOG10_DAMPING_RANGE
        return 10.0 ** (lo + (hi - lo) * torch.sigmoid(self.const))


class LevelOptimizer(nn.Module):
    """Holds the learned parameters of the LM optimizer of one level (only its damping)."""

    def __init__(self):
        super().__init__()
        self.dampingnet = DampingNet()


class PixLocModel(nn.Module):
    """The PixLoc network plus the learned LM damping, laid out like the released checkpoints.

    ``extract(image) -> FeaturePyramid``; ``damping() -> (3, 6)``. The model does not switch
    itself to eval mode: loaders return it in eval mode, training code calls ``train()``.
    """

    def __init__(self, encoder: str = "vgg16", config: NetworkConfig | None = None,
                 profile: EngineProfile | None = None):
        """``profile``: the engine formulation the weights belong to (default: this project's
        native one; loaders set it from the file). ``config`` default: ``NetworkConfig`` with the
        profile's image handling (``pad_mode``)."""
        super().__init__()
        self.engine_profile = profile or native_profile()
        self.config = config or NetworkConfig(pad_mode=self.engine_profile.network_pad_mode)
        self.extractor = UNet(encoder)
        self.optimizer = nn.ModuleList(LevelOptimizer() for _ in STRIDES)
        self._compiled: CompiledUNet | None = None  # the UNet in a CPU runtime, built on first use
        # The UNet quantised to int8 (an ``ov.Model``, ``network_int8``; set by ``set_int8_unet``) and
        # whether its accuracy was checked ("none", "unchecked", "checked": ``resolve_cpu_precision``).
        self.int8_unet = None
        self.int8_state = "none"

    @property
    def encoder_name(self) -> str:
        return self.extractor.encoder_name

    @property
    def device(self) -> torch.device:
        return self.optimizer[0].dampingnet.const.device

    def damping(self) -> torch.Tensor:
        """-> (3, 6) lambda per level, level 0 (finest) first, order [tx, ty, tz, rx, ry, rz]."""
        return torch.stack([opt.dampingnet() for opt in self.optimizer])

    def num_parameters(self) -> int:
        """Number of learnable scalars (BatchNorm running statistics excluded)."""
        return sum(p.numel() for p in self.parameters())

    def forward(self, image: torch.Tensor, keep_raw: bool = False) -> FeaturePyramid:
        """(B, 3, H, W) float RGB in [0, 1] on the model's device -> FeaturePyramid (float32).

        ``keep_raw``: also return the features before normalisation (``FeaturePyramid.raw_features``).

        Keeps autograd (training goes through here); wrap in ``torch.no_grad()`` to
        extract (or call ``extract``). Level l has size ceil((H, W) / s_l) (or see ``NetworkConfig.pad_mode=None``).
        """
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"PixLocModel expects a (B, 3, H, W) image, got {tuple(image.shape)}")
        if not image.is_floating_point():
            raise ValueError(f"PixLocModel expects a float image in [0, 1], got {image.dtype}")
        height, width = image.shape[-2:]
        pad_mode = self.config.pad_mode
        if pad_mode is not None:
            pad_h = -height % ENCODER_STRIDE
            pad_w = -width % ENCODER_STRIDE
            if pad_h or pad_w:
                # Bottom/right only, so pixel coordinates are unchanged.
                image = F.pad(image, (0, pad_w, 0, pad_h), mode=pad_mode)
        elif height < ENCODER_STRIDE or width < ENCODER_STRIDE:
            raise ValueError(f"Image {height}x{width} is smaller than the network stride {ENCODER_STRIDE}")

        use_fp16 = self.config.fp16_on_cuda and image.is_cuda
        if self.config.channels_last and image.is_cuda:
            if not getattr(self, "_channels_last_weights", False):
                self.extractor.to(memory_format=torch.channels_last)
                self._channels_last_weights = True
            image = image.contiguous(memory_format=torch.channels_last)
        compiled = self._compiled_unet(image)
        if compiled is not None:
            raw_features, logits = compiled(image)
        elif self.config.bf16_on_cpu and not image.is_cuda:
            with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
                raw_features, logits = self.extractor(image)
        else:
            with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=use_fp16):
                raw_features, logits = self.extractor(image)

        features, confidences, raw = [], [], []
        for stride, feat, logit in zip(STRIDES, raw_features, logits):
            if pad_mode is not None:
                h, w = -(-height // stride), -(-width // stride)  # ceil
                feat, logit = feat[..., :h, :w], logit[..., :h, :w]
            # Normalise and squash in float32: fp16 norms of 128-d vectors lose precision.
            raw.append(feat.float())
            features.append(F.normalize(raw[-1], dim=1))
            confidences.append(torch.sigmoid(-logit.float()))
        return FeaturePyramid(features, confidences, (int(height), int(width)),
                              raw_features=raw if keep_raw else None)

    def cpu_runtime(self) -> str:
        """The runtime the UNet runs in for CPU inference (``NetworkConfig.cpu_runtime`` resolved)."""
        return resolve_cpu_runtime(self.config.cpu_runtime)

    def cpu_precision(self) -> str:
        """The precision of that runtime, "f32", "bf16" or "int8" (``NetworkConfig.cpu_precision`` resolved)."""
        return resolve_cpu_precision(self.config.cpu_precision, self.cpu_runtime(), self.int8_state)

    def set_int8_unet(self, graph, checked: bool) -> None:
        """Hand the model its UNet quantised to int8 (an ``ov.Model`` of the current weights, or None
        to drop it); ``checked``: its accuracy was measured good enough for ``cpu_precision: auto``."""
        self.int8_unet = graph
        self.int8_state = "none" if graph is None else ("checked" if checked else "unchecked")
        self._compiled = None

    def _compiled_unet(self, image: torch.Tensor) -> CompiledUNet | None:
        """The runtime-compiled UNet for this forward pass, or None where torch must run it:
        CUDA, autograd, training mode (batch statistics), batches, non-float32 images."""
        if (image.is_cuda or self.training or torch.is_grad_enabled() or image.shape[0] != 1
                or image.dtype != torch.float32 or self.config.cpu_runtime == "torch"):
            return None
        runtime = self.cpu_runtime()
        if runtime == "torch":
            return None
        precision = self.cpu_precision()
        compiled = self._compiled
        if compiled is None or (compiled.runtime, compiled.precision) != (runtime, precision):
            int8 = self.int8_unet if precision == "int8" else None
            compiled = self._compiled = CompiledUNet(self.extractor, runtime, precision, int8)
        return compiled

    def extract(self, image: np.ndarray | torch.Tensor, keep_raw: bool = False) -> FeaturePyramid:
        """Features of one image or a batch, without autograd.

        ``image``: a (H, W, 3) uint8 RGB numpy array, or a float tensor (3, H, W) / (B, 3, H, W)
        in [0, 1]. It is moved to the model's device. Returns float32 maps on that device
        (``keep_raw``: plus the unnormalised features).
        Uses ``no_grad`` rather than ``inference_mode`` so the maps can still enter autograd
        graphs later (e.g. Jacobian checks that differentiate through the interpolation).
        """
        if isinstance(image, np.ndarray):
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise ValueError("PixLocModel.extract expects a (H, W, 3) uint8 RGB array, got "
                                 f"{image.shape} {image.dtype}")
            tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None]
            tensor = tensor.to(self.device).float() / 255.0
        elif isinstance(image, torch.Tensor):
            tensor = image[None] if image.ndim == 3 else image
            tensor = tensor.to(self.device)
        else:
            raise TypeError(f"PixLocModel.extract expects a numpy array or a tensor, got {type(image)}")
        with torch.no_grad():
            return self.forward(tensor, keep_raw)
