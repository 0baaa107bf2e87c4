"""PixLoc localization of one image: network once, then LM coarse (stride 16) -> fine (stride 1).

``Localizer(model, config).localize(image, camera, points, init_poses)`` runs the network and
``localize_features`` (also usable without a network: tests, training). Several initial
hypotheses run in one batch through every level; the one with the lowest fine-level cost among
those with enough valid points wins. Degenerate problems (no points, all behind the camera, too
few valid points, an unobservable direction) come back as ``success=False`` with a reason;
only malformed input (wrong shapes, camera/image size mismatch) raises ValueError.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from ..geometry.camera import MIN_DEPTH, Camera, random_points_in_view
from .profile import EngineProfile, native_profile
from ..geometry.pose import Pose
from .images import camera_scale, downscale_rgb, downscale_tensor, rgb_to_tensor, upload_rgb
from .network_runtime import resolve_cpu_runtime
from .lm.guard import LMPathGuard, LMPathStatus
from .lm.config import LevelResult, LMConfig
from .query_points import QueryPoints
# The result types live in ``results`` (shared with the rig); importers keep finding them here.
from .results import (ChoiceRules, Failure, HypothesisResults, LocalizationResult, NetworkOutput, StageClock,
                      Timings, choose_hypothesis, failure_result)

DEFAULT_STRIDES = (1, 4, 16)  # network.STRIDES; repeated so this module does not need the network

# Border pad (level pixels) where a level's map is large: the reference's 4 px at every level of
# CMU's 1024x768 images, whose coarsest map (stride 16) is 64x48 px.
REFERENCE_PAD = 4.0
# Below that size the pad shrinks with the map: pad = min(4, short side / 12), i.e. 4 px at
# 48 px as at CMU size. A 320x240 image has a 20x15 coarse map; 4 px there would leave only the
# central 11x6 cells (25 % of the map) valid, 15 / 12 = 1.25 px leaves 71 %.
PAD_SIZE_RATIO = 1.0 / 12.0


def level_pads(pad: float | tuple[float, ...] | None, level_sizes) -> tuple[float, ...]:
    """Border pad of each level, level pixels, finest first.

    pad: None (the default rule: ``min(REFERENCE_PAD, min(H_l, W_l) * PAD_SIZE_RATIO)``: 4 px at
    every level of a 1024x768 image, less on small maps), one value for every level, or one
    value per level (finest first). level_sizes: (H_l, W_l) of each level's map, finest first.
    """
    sizes = [tuple(int(v) for v in hw) for hw in level_sizes]
    if pad is None:
        return tuple(min(REFERENCE_PAD, min(hw) * PAD_SIZE_RATIO) for hw in sizes)
    if isinstance(pad, (int, float)):
        pads = (float(pad),) * len(sizes)
    else:
        pads = tuple(float(v) for v in pad)
        if len(pads) != len(sizes):
            raise ValueError(f"pad has {len(pads)} values but there are {len(sizes)} levels (finest first)")
    if any(not (v >= 0) for v in pads):
        raise ValueError(f"pads must be >= 0 level pixels, got {pads}")
    return pads


@dataclass
class LocalizerConfig:
    """Settings of the localizer (levels are listed finest first, like everywhere in the engine)."""

    # Max LM iterations of levels 0, 1, 2 (0 skips a level); None: the engine profile's (reference 100 each, native 25).
    iterations: tuple[int, int, int] | None = None
    # Border margin (level pixels) inside which projections are invalid: None = the engine
    # profile's (reference: the checkpoint's pad at every level; native: ``level_pads``' size rule),
    # one value for every level, or a tuple per level (finest first).
    pad: float | tuple[float, float, float] | None = None
    # The engine formulation (``engine_profile``): None = the model's (what its weights were trained
    # with; native for ``localize_features`` without a model). Gradient, stopping rule, defaults.
    profile: EngineProfile | None = None
    min_valid_points: int = 50  # a hypothesis needs this many valid points at the fine level to be chosen
    device: str = "auto"  # "cpu", "cuda", "cuda:1", or "auto" (CUDA when available)
    half_precision: bool = True  # run the network under fp16 autocast on CUDA (ignored on the CPU)
    # Downscale images whose longer side exceeds this (pixels); None: the engine profile's (reference
    # 1024, like cvg/pixloc's localizer; native never); 0: never.
    max_image_size: int | None = None
    min_normalized_eigenvalue: float = 1e-6  # below this the Jacobi-scaled fine Hessian is called rank deficient
    covariance_scale: float = 1.0  # multiplies the covariance (inflation for correlated residuals)
    return_confidences: bool = True  # copy the confidence maps to numpy for display (costs a device->host copy)
    # torch intra-op threads when running on the CPU (None: torch's default, one per core). The LM
    # works on small tensors, where extra threads mostly spin: on a 2-core machine shared with
    # other processes one thread was 5x faster than two (measured, see BENCHMARKS.md).
    cpu_threads: int | None = None
    # Inference runtime of the network on the CPU (``network_runtime.CPU_RUNTIMES``): "auto" takes
    # OpenVINO or ONNX Runtime when installed (about 3x faster than torch here, BENCHMARKS.md),
    # else torch; naming a runtime that is not installed fails at start.
    cpu_runtime: str = "auto"
    # Its precision (``network_runtime.CPU_PRECISIONS``): "f32" (the reference's numbers); "bf16"
    # (OpenVINO on a processor with bf16 units, AVX512-BF16 / AMX: 6x faster at 640x480 on the
    # project's AMX machine, features within about 1 %, like the fp16 network on CUDA); "auto"
    # (bf16 where the processor has such units). Naming bf16 where it cannot run fails at start.
    cpu_precision: str = "f32"
    # torch threads of the LM on the CPU (None: as many as the network): its tensors are small, and
    # more threads only add OpenMP start-up and spinning (2 threads: 5-10x slower LM on the 2-core
    # box, BENCHMARKS.md), while the network gains from every core.
    lm_cpu_threads: int | None = 1
    lm: LMConfig = field(default_factory=LMConfig)  # shared LM settings (its num_iters and pad are replaced per level)

    def __post_init__(self):
        if self.iterations is not None:
            self.iterations = tuple(int(n) for n in self.iterations)
            if len(self.iterations) != 3 or any(n < 0 for n in self.iterations):
                raise ValueError(f"iterations needs 3 values >= 0 (finest first), got {self.iterations}")
        if self.pad is not None:
            if not isinstance(self.pad, (int, float)):
                self.pad = tuple(float(v) for v in self.pad)
            level_pads(self.pad, [(1, 1)] * 3)  # ValueError now for a wrong length or a negative pad


def resolve_device(name: str) -> torch.device:
    """"auto" -> CUDA when available else CPU; otherwise ``torch.device(name)`` (ValueError when CUDA is missing)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    return device


def _check_rgb(image: np.ndarray) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected a (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}")


def image_to_tensor(image: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(H, W, 3) uint8 RGB array or (3, H, W) / (1, 3, H, W) float tensor in [0, 1] -> (1, 3, H, W) float."""
    if isinstance(image, np.ndarray):
        _check_rgb(image)
        return rgb_to_tensor(image)
    if isinstance(image, torch.Tensor):
        t = image[None] if image.ndim == 3 else image
        if t.ndim != 4 or t.shape[:2] != (1, 3) or not t.is_floating_point():
            raise ValueError(f"expected a float (3, H, W) or (1, 3, H, W) image tensor, got "
                             f"{tuple(image.shape)} {image.dtype}")
        return t
    raise ValueError(f"expected a numpy array or a tensor image, got {type(image).__name__}")


class Localizer:
    """Localize images against map points with a PixLoc model."""

    def __init__(self, model: torch.nn.Module | None, config: LocalizerConfig | None = None):
        """``model``: a ``PixLocModel`` (put in eval mode and moved to the device here), or None
        to use only ``localize_features``."""
        self.config = config or LocalizerConfig()
        self.device = resolve_device(self.config.device)
        if self.device.type == "cpu" and self.config.cpu_threads:
            torch.set_num_threads(int(self.config.cpu_threads))  # process-wide: the node runs one localizer
        self.model = model
        # Fused Triton LM or torch loop per level, with the probe and fallback of ``lm_guard``.
        self.lm_guard = LMPathGuard()
        # The formulation the LM runs: the configured one, else the one the weights were trained with.
        self.profile: EngineProfile = (self.config.profile or getattr(model, "engine_profile", None)
                                       or native_profile())
        if model is not None:
            model.eval().to(self.device)
            if hasattr(model, "config") and hasattr(model.config, "fp16_on_cuda"):
                # The network owns its autocast switch and CPU runtime; mirror ours into it.
                model.config.fp16_on_cuda = self.config.half_precision
                model.config.cpu_runtime = self.config.cpu_runtime
                model.config.cpu_precision = self.config.cpu_precision
                if self.device.type == "cpu":
                    model.cpu_precision()  # an impossible precision fails here, at start-up
                if self.device.type == "cpu" and resolve_cpu_runtime(self.config.cpu_runtime) != "torch":
                    # The runtime's ONNX export (seconds; the graph is size-independent) happens here,
                    # at start-up, not in the first frame; ``warm_up`` also compiles for a frame size.
                    model.extract(torch.zeros(1, 3, 32, 32))

    def localize(self, image: np.ndarray | torch.Tensor, camera: Camera, points: QueryPoints,
                 init_poses: Pose) -> LocalizationResult:
        """Localize one image.

        image: (H, W, 3) uint8 RGB or float tensor (3, H, W) in [0, 1]; camera: single Camera of
        that image (pixel-centre origin, size must match); points: map points with reference
        features; init_poses: Pose (B,) or () initial ``cam_from_world`` hypotheses.
        """
        features = self.extract(image, camera)
        return self.localize_extracted(features, points, init_poses)

    def extract(self, image: np.ndarray | torch.Tensor, camera: Camera) -> NetworkOutput:
        """The network's half of ``localize``: the image downscaled as the profile says and its
        feature pyramid (same arguments; ValueError for a camera that does not fit the image).
        Touches only the network: it may run on another thread than ``localize_extracted``."""
        if self.model is None:
            raise ValueError("Localizer was built without a model: use localize_features")
        clock = StageClock(self.device)
        limit = self.config.max_image_size if self.config.max_image_size is not None else self.profile.max_image_edge
        if isinstance(image, np.ndarray):
            _check_rgb(image)
            h, w = image.shape[:2]
            # uint8 to the device (pinned, non-blocking on CUDA), converted to float there
            tensor = upload_rgb(downscale_rgb(image, limit, self.profile.resize), self.device)
        else:
            tensor = image_to_tensor(image)
            h, w = tensor.shape[-2:]
            tensor = downscale_tensor(tensor.to(self.device), limit, self.profile.resize)
        self._check_camera(camera, w, h)
        camera = camera.to(torch.float64)
        nh, nw = tensor.shape[-2:]
        if (nw, nh) != (w, h):
            camera = camera.scale(camera_scale(w, h, nw, nh, self.profile.resize))
        tensor = tensor.to(self.device)
        pre = clock.lap()
        pyramid = self.model.extract(tensor)
        return NetworkOutput(pyramid, camera, (int(w), int(h)), pre, clock.lap(), clock.start)

    def localize_extracted(self, features: NetworkOutput, points: QueryPoints, init_poses: Pose) -> LocalizationResult:
        """The LM's half of ``localize`` on the output of ``extract``; the same result as ``localize``
        (timings: the network's from ``extract``, total = both halves' work, not any wait between)."""
        if self.model is None:
            raise ValueError("Localizer was built without a model: use localize_features")
        damping = self.model.damping().detach()
        result = self.localize_features(features.pyramid, features.camera, points, init_poses, damping)
        t = result.timings
        result.timings = Timings(t.preprocess_s + features.preprocess_s, features.network_s, t.levels_s,
                                 t.postprocess_s, t.total_s + features.preprocess_s + features.network_s)
        return result

    def warm_up(self, width: int, height: int, num_points: int = 0, hypotheses: int = 1) -> float:
        """Run the network once on a black ``width`` x ``height`` image: builds what its first call
        would (a CPU runtime's ONNX export and compiled model for that size, lazily initialised
        kernels), so that the first real frame is not slower than the others. With ``num_points``
        > 0, also the LM on synthetic points (random pixels 5-30 m deep, random unit reference
        features) from up to ``hypotheses`` initial poses: with the fused LM (CUDA) once per shape
        bucket frames of at most that many points and hypotheses fall into (``lm_warm_up_shapes``),
        which compiles its kernels, probes each bucket against the torch LM and captures the
        bucket's CUDA graphs before the first frame (a failure falls back, ``lm_guard``). Returns seconds."""
        if self.model is None:
            return 0.0
        start = time.perf_counter()
        limit = self.config.max_image_size if self.config.max_image_size is not None else self.profile.max_image_edge
        image = downscale_rgb(np.zeros((int(height), int(width), 3), np.uint8), limit, self.profile.resize)
        pyramid = self.model.extract(upload_rgb(image, self.device))
        h, w = image.shape[:2]
        camera = Camera.from_params(w, h, w, w, (w - 1) / 2, (h - 1) / 2)
        g = torch.Generator().manual_seed(0)
        for b, n in self.lm_warm_up_shapes(num_points, hypotheses):
            xyz = random_points_in_view(camera, n, g, 5.0, 30.0)
            features = [torch.nn.functional.normalize(torch.randn(n, f.shape[1], generator=g), dim=1)
                        for f in pyramid.features]
            points = QueryPoints(xyz.float(), features, [torch.ones(n) for _ in features],
                                 torch.arange(n), torch.zeros(n, dtype=torch.int64))
            self.localize_features(pyramid, camera, points, Pose.identity((b,)), self.model.damping().detach())
        return time.perf_counter() - start

    def lm_warm_up_shapes(self, num_points: int, hypotheses: int) -> list[tuple[int, int]]:
        """(hypotheses, points) of the LM runs ``warm_up`` does: one per fused-LM shape bucket of
        frames with 1..``hypotheses`` hypotheses and 1..``num_points`` points on CUDA (each bucket's
        largest size, capped at the maximum); one run of the maximum elsewhere; none for 0 points."""
        n_max, b_max = int(num_points), max(1, int(hypotheses))
        if n_max <= 0:
            return []
        if self.device.type != "cuda" or self.config.lm.path == "torch":
            return [(b_max, n_max)]
        from .lm.fused import warm_up_shapes
        return warm_up_shapes(n_max, b_max, self.config.lm.point_bucket)

    def network_precision(self) -> str:
        """What the network runs in: on the CPU "f32", "bf16" or "int8" (``cpu_precision`` resolved;
        "f32" for the torch runtime); on CUDA "fp16" or "fp32" (``half_precision``); "" without a model."""
        if self.model is None:
            return ""
        if self.device.type == "cuda":
            return "fp16" if self.config.half_precision else "fp32"
        return self.model.cpu_precision() if hasattr(self.model, "cpu_precision") else "f32"

    def lm_status(self) -> LMPathStatus:
        """The LM implementation in use (requested path, the one levels run, why torch if it fell back)."""
        return self.lm_guard.status(self.config.lm.path)

    def set_lm_warning_handler(self, handler) -> None:
        """Where the one warning of a fused-LM fallback goes (``handler(text)``; default: logging)."""
        self.lm_guard.on_warning = handler

    @staticmethod
    def _check_camera(camera: Camera, width: int, height: int) -> None:
        if camera.shape != ():
            raise ValueError(f"expected a single camera, got batch shape {tuple(camera.shape)}")
        cw, ch = (int(round(float(v))) for v in camera.size)
        if (cw, ch) != (int(width), int(height)):
            raise ValueError(f"camera is {cw}x{ch} but the image is {int(width)}x{int(height)}")

    def localize_features(self, pyramid, camera: Camera, points: QueryPoints, init_poses: Pose,
                          damping: torch.Tensor) -> LocalizationResult:
        """Coarse-to-fine LM on given feature maps (no network); see ``_localize_features``.
        On the CPU it runs with ``LocalizerConfig.lm_cpu_threads`` torch threads."""
        threads = self.config.lm_cpu_threads
        previous = torch.get_num_threads()
        if self.device.type != "cpu" or not threads or threads == previous:
            return self._localize_features(pyramid, camera, points, init_poses, damping)
        torch.set_num_threads(int(threads))
        try:
            return self._localize_features(pyramid, camera, points, init_poses, damping)
        finally:
            torch.set_num_threads(previous)

    def _localize_features(self, pyramid, camera: Camera, points: QueryPoints, init_poses: Pose,
                           damping: torch.Tensor) -> LocalizationResult:
        """Coarse-to-fine LM on given feature maps (no network).

        pyramid: a ``network.FeaturePyramid`` or any object with ``features`` (3 tensors
        (1, C_l, H_l, W_l) or (C_l, H_l, W_l), finest first), ``confidences`` (3 tensors
        (1, 1, H_l, W_l) / (1, H_l, W_l), or None entries for "all ones") and optionally
        ``strides`` (default (1, 4, 16)); camera: the full-image camera (level l uses
        ``camera.scale(1 / strides[l])``); damping: (3, 6) lambda per level, finest first.
        """
        cfg = self.config
        clock = StageClock(self.device)
        features, confidences = list(pyramid.features), list(pyramid.confidences)
        strides = tuple(getattr(pyramid, "strides", None) or DEFAULT_STRIDES)
        if len(features) != 3 or len(confidences) != 3 or len(strides) != 3:
            raise ValueError("localize_features needs 3 levels of features, confidences and strides")
        if tuple(damping.shape) != (3, 6):
            raise ValueError(f"damping must be (3, 6), got {tuple(damping.shape)}")
        if init_poses.shape == ():
            init_poses = init_poses[None]
        if len(init_poses.shape) != 1 or init_poses.shape[0] == 0:
            raise ValueError(f"init_poses must be a Pose of shape (B,) with B >= 1, got {tuple(init_poses.shape)}")
        if camera.shape != ():
            raise ValueError(f"expected a single camera, got batch shape {tuple(camera.shape)}")
        dev = self.device
        dt = cfg.lm.dtype
        features = [f.to(dev) for f in features]
        confidences = [None if c is None else c.to(dev) for c in confidences]
        pts = points.to(dev)
        poses = init_poses.to(device=dev, dtype=dt)
        camera = camera.to("cpu", torch.float64)
        camera.max_r2  # distortion bound computed once here; every scaled level camera inherits it
        pre = clock.lap()

        def failure(code: Failure, detail: str) -> LocalizationResult:
            return failure_result(code, detail, clock, pre, self.display_confidences(confidences))

        n = len(pts)
        if n == 0:
            return failure(Failure.NO_POINTS, "the map returned no points for this prior")
        finite = torch.isfinite(pts.xyz).all(-1)
        depth_ok = (poses.transform(pts.xyz.to(dt)))[..., 2] > MIN_DEPTH  # (B, N)
        if int((depth_ok & finite).sum()) == 0:
            return failure(Failure.POINTS_BEHIND_CAMERA, f"none of the {n} points is in front of any of the "
                           f"{poses.shape[0]} initial poses")

        pads = level_pads(cfg.pad if cfg.pad is not None else self.profile.pad, [f.shape[-2:] for f in features])

        def run_level(level: int, poses: Pose, lm: LMConfig, damping_level: torch.Tensor):
            res = self.lm_guard.optimize_level(features[level], confidences[level], pts.xyz, pts.features[level],
                                               pts.confidences[level], camera.scale(1.0 / strides[level]), poses,
                                               damping_level, replace(lm, pad=pads[level]))
            return res, self.lm_guard.last_path or ""

        return self.coarse_to_fine(run_level, poses, damping, confidences, clock, pre)

    def coarse_to_fine(self, run_level, poses: Pose, damping: torch.Tensor, confidences, clock: StageClock,
                       pre: float) -> LocalizationResult:
        """Levels 2 -> 1 -> 0 from ``poses`` (B,), then ``results.choose_hypothesis``.

        ``run_level(level, poses, lm, damping_level) -> (LevelResult, lm path)`` runs one level from
        the previous level's poses (``lm``: this localizer's LM settings with the level's iterations
        and the profile's gradient and stopping rule; the callee sets the border pad); damping: (3, 6)
        lambda per level, finest first; confidences: per level, for display; ``pre``: seconds spent
        before (``Timings.preprocess_s``). Used by ``localize_features`` and ``rig_localizer``."""
        cfg = self.config
        profile = self.profile
        dev = self.device
        iterations = cfg.iterations if cfg.iterations is not None else profile.iterations
        levels: dict[int, LevelResult] = {}
        level_times = [0.0, 0.0, 0.0]
        # The reference rule's failures (too few points at some level) stay on the device until
        # every level ran, and the damping is read to the host once: no host sync between the
        # levels' launches but the stage clock's.
        failed = torch.zeros(poses.shape[0], dtype=torch.bool, device=dev)
        damping_host = damping.detach().to("cpu", torch.float64)
        lm_path = ""
        for level in (2, 1, 0):
            iters = int(iterations[level])
            if iters <= 0:
                continue
            lm = LMConfig(**{**cfg.lm.__dict__, "num_iters": iters,
                             "gradient": profile.gradient, "stopping": profile.stopping})
            res, lm_path = run_level(level, poses, lm, damping_host[level])
            poses = res.cam_from_world
            levels[level] = res
            failed = failed | res.failed.to(dev)
            level_times[level] = clock.lap()
        display = self.display_confidences(confidences)
        if not levels:
            return failure_result(Failure.NO_LEVELS, "every level has 0 iterations in LocalizerConfig.iterations",
                                  clock, pre, display)
        rules = ChoiceRules(cfg.min_valid_points, cfg.lm.min_valid_points, cfg.min_normalized_eigenvalue,
                            cfg.covariance_scale)
        return choose_hypothesis(levels, failed, rules, lm_path, clock, pre, tuple(level_times), display)

    def display_confidences(self, confidences: list) -> list[np.ndarray] | None:
        """Per level (H_l, W_l) float32 numpy copies of confidence maps (None entries kept), for
        display; None when ``LocalizerConfig.return_confidences`` is off."""
        if not self.config.return_confidences:
            return None
        out = []
        for c in confidences:
            if c is None:
                out.append(None)
                continue
            c = c.detach()
            out.append(c.reshape(c.shape[-2], c.shape[-1]).float().cpu().numpy())
        return out


__all__ = ["DEFAULT_STRIDES", "Failure", "HypothesisResults", "LocalizationResult", "Localizer", "LocalizerConfig",
           "NetworkOutput", "Timings", "image_to_tensor", "level_pads", "resolve_device"]
