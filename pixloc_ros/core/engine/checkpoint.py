"""Reading and writing PixLoc weights without ever running an untrusted pickle.

Two formats:
- the official training checkpoint (``checkpoint_best.tar`` of cvg/pixloc, also what
  ``pixloc-ros train`` writes): ``torch.save`` of a dict with ``model`` (state dict), ``conf``
  (OmegaConf config with ``data``, ``model``, ``train``), ``optimizer``, ``lr_scheduler``,
  ``epoch``, ``losses``, ``eval``. It is a pickle, so it is opened with
  ``torch.load(weights_only=True)`` and an allow-list of harmless types (``checkpoint_safe_globals()``);
  anything else in the file makes loading fail before it is constructed.
- ``.safetensors`` (no pickle at all), with the encoder name, a format version, the weights
  fingerprint and the engine profile in its metadata.

Every loaded model carries the engine profile its weights were trained with
(``model.engine_profile``, ``engine_profile.profile_for_weights``): official checkpoints get the
reference formulation with the pad of their ``conf``; files written here record theirs (in
``conf["pixloc_ros"]`` of a checkpoint, in the safetensors metadata).

The format is recognised from the file's first bytes, not its extension.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import struct
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pixloc_ros.core.engine.profile import (PROJECT_CONF_KEY, EngineProfile, native_profile,
    pad_from_official_conf, profile_for_weights, reference_profile)
from pixloc_ros.core.engine.network import ENCODERS, OUTPUT_DIMS, VGG_BLOCKS, NetworkConfig, PixLocModel
from pixloc_ros.core.engine.pickle_allowlist import checkpoint_safe_globals

SAFETENSORS_FORMAT = "pixloc_ros.weights"  # metadata["format"] of our safetensors files
SAFETENSORS_FORMAT_VERSION = "1"
_MAX_LISTED_KEYS = 12  # keys listed per category in a WeightsError before "... and N more"


class WeightsError(Exception):
    """A weights file that cannot be used: not a checkpoint, corrupt, unsafe, or wrong layout."""


@dataclass
class LoadedWeights:
    """What :func:`load_checkpoint` read: the model (eval mode) and what the file said about it."""

    model: PixLocModel
    path: Path
    file_format: str  # "torch" (official pickle layout) or "safetensors"
    encoder: str  # "vgg16" or "vgg19"
    conf: dict | None = None  # the official ``conf`` as plain containers (unresolved), if any
    epoch: int | None = None  # training epoch stored in an official checkpoint
    metadata: dict[str, str] = field(default_factory=dict)  # safetensors metadata

    @property
    def profile(self) -> EngineProfile:
        """The engine profile the weights were trained with (also ``model.engine_profile``)."""
        return self.model.engine_profile


def _sniff_format(path: Path) -> str:
    """"torch-zip", "torch-legacy" or "safetensors" from the first bytes; WeightsError otherwise."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
            size = os.fstat(f.fileno()).st_size
    except FileNotFoundError:
        raise WeightsError(f"{path}: no such weights file") from None
    except IsADirectoryError:
        raise WeightsError(f"{path}: is a directory, expected a .tar/.pth/.safetensors file") from None
    except OSError as err:
        raise WeightsError(f"{path}: cannot read weights file: {err}") from err
    if head.startswith(b"PK\x03\x04"):
        return "torch-zip"
    if len(head) >= 9 and head[8:9] == b"{":
        header_len = struct.unpack("<Q", head[:8])[0]
        if 8 + header_len <= size:
            return "safetensors"
    if head[:1] == b"\x80":  # pickle protocol >= 2: torch.save's pre-1.6 format (or a bare pickle)
        return "torch-legacy"
    raise WeightsError(f"{path}: not a PixLoc weights file (neither a torch checkpoint nor "
                       f"safetensors; {size} bytes)")


def _refused_globals(path: Path) -> list[str]:
    """Names of the non-allowed globals a zip checkpoint references (read without unpickling)."""
    try:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception:  # only used to improve an error message; the load already failed
        return []
    allowed = {item[1] if isinstance(item, tuple) else f"{item.__module__}.{item.__qualname__}"
               for item in checkpoint_safe_globals()}
    return sorted(set(unsafe) - allowed)


def _unpickler_reason(message: str) -> str:
    """The informative line of torch's long weights-only error message."""
    boilerplate = ("Weights only load failed", "Please file an issue", "Check the documentation")
    for line in message.splitlines():
        line = line.strip()
        if line and not line.startswith(boilerplate):
            return line.split("WeightsUnpickler error:", 1)[-1].strip() or line
    return "unpickling refused"


def _torch_load(path: Path, kind: str) -> object:
    """``torch.load(weights_only=True)`` with the allow-list; every failure -> WeightsError."""
    try:
        with torch.serialization.safe_globals(checkpoint_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        refused = _refused_globals(path) if kind == "torch-zip" else []
        what = f"it references {', '.join(refused)}" if refused else "it holds more than plain weights"
        raise WeightsError(
            f"{path}: refused to load: {what} ({_unpickler_reason(str(err))}). Only tensors, containers, OmegaConf configs and numpy scalars are "
            "allowed; nothing in the file was executed. If the file is a genuine PixLoc "
            "checkpoint, report the type named above; otherwise do not use this file.") from err
    except Exception as err:  # torch raises RuntimeError, EOFError, ValueError, ... on bad bytes
        raise WeightsError(f"{path}: not a readable torch checkpoint (truncated or corrupt?): "
                           f"{type(err).__name__}: {err}") from err


def read_torch_checkpoint(path: str | os.PathLike) -> object:
    """Whatever a torch checkpoint file holds (a training checkpoint's whole dict), unpickled with the
    restricted loader of the weights (tensors, containers, OmegaConf and numpy value types only);
    every failure -> WeightsError."""
    path = Path(path)
    return _torch_load(path, _sniff_format(path))


def infer_encoder(state_dict: Mapping[str, torch.Tensor]) -> str:
    """"vgg19" when the state dict has a 4th conv in the third VGG block, else "vgg16"."""
    return "vgg19" if "extractor.encoder.2.7.weight" in state_dict else "vgg16"


def _encoder_from_conf(conf: object) -> str | None:
    """``conf["model"]["extractor"]["encoder"]`` of a plain-container conf, or None."""
    try:
        name = conf["model"]["extractor"]["encoder"]  # type: ignore[index]
    except (KeyError, TypeError, IndexError):
        return None
    return name if isinstance(name, str) else None


def _list_keys(label: str, keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_LISTED_KEYS])
    more = f" ... and {len(keys) - _MAX_LISTED_KEYS} more" if len(keys) > _MAX_LISTED_KEYS else ""
    return f"{len(keys)} {label}: {shown}{more}"


def model_from_state_dict(state_dict: Mapping[str, torch.Tensor], encoder: str | None = None,
                          source: str = "state dict", config: NetworkConfig | None = None,
                          profile: EngineProfile | None = None) -> PixLocModel:
    """A :class:`PixLocModel` (eval mode, CPU) holding ``state_dict``; strict about the layout.

    ``encoder`` None: inferred from the keys; ``profile``: the weights' engine profile (default
    native); ``config`` default: the profile's. Raises WeightsError listing missing, unexpected
    and mis-shaped keys (``source`` names the file in the message).
    """
    if not isinstance(state_dict, Mapping) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state_dict.items()):
        raise WeightsError(f"{source}: the model entry is not a state dict of tensors")
    inferred = infer_encoder(state_dict)
    if encoder is None:
        encoder = inferred
    if encoder not in ENCODERS:
        raise WeightsError(f"{source}: unsupported encoder {encoder!r}, expected one of {ENCODERS}")
    if encoder != inferred:
        raise WeightsError(f"{source}: the config says encoder {encoder!r} but the weights are "
                           f"laid out for {inferred!r}")
    model = PixLocModel(encoder, config, profile)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mis_shaped = sorted(f"{k} {tuple(state_dict[k].shape)} (expected {tuple(v.shape)})"
                        for k, v in expected.items() if k in state_dict and state_dict[k].shape != v.shape)
    if missing or unexpected or mis_shaped:
        parts = []
        if missing:
            parts.append(_list_keys("missing keys", missing))
        if unexpected:
            parts.append(_list_keys("unexpected keys", unexpected))
        if mis_shaped:
            parts.append(_list_keys("keys with another shape", mis_shaped))
        raise WeightsError(
            f"{source}: weights do not fit the PixLoc {encoder} network "
            f"(UNet decoder [64, 64, 64, 32], outputs {list(OUTPUT_DIMS)}, 3 learned dampings): "
            + "; ".join(parts)
            + ". Use a pixloc_cmu / pixloc_megadepth checkpoint or one written by "
              "`pixloc-ros train` / `pixloc-ros weights init`.")
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


def _plain_conf(conf: object) -> dict | None:
    """The ``conf`` entry as plain containers, interpolations left unresolved (no resolvers run)."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(conf, DictConfig):
        return OmegaConf.to_container(conf, resolve=False)  # type: ignore[return-value]
    if isinstance(conf, dict):
        return conf
    return None


def _profile(path: Path, conf: dict | None, metadata: dict | None) -> EngineProfile:
    """``profile_for_weights`` with the file named in its errors."""
    try:
        return profile_for_weights(conf, metadata)
    except ValueError as err:
        raise WeightsError(f"{path}: {err}") from err


def _load_torch(path: Path, kind: str, config: NetworkConfig | None) -> LoadedWeights:
    obj = _torch_load(path, kind)
    if isinstance(obj, dict) and "model" in obj:
        state_dict, conf_obj, epoch = obj["model"], obj.get("conf"), obj.get("epoch")
    elif isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state_dict, conf_obj, epoch = obj, None, None  # a bare ``torch.save(model.state_dict())``
    else:
        raise WeightsError(f"{path}: a torch file but not a PixLoc checkpoint (expected a dict with "
                           f"a 'model' state dict, got {type(obj).__name__}"
                           + (f" with keys {sorted(map(str, obj))[:8]}" if isinstance(obj, dict) else "")
                           + ")")
    conf = _plain_conf(conf_obj)
    encoder = _encoder_from_conf(conf)
    model = model_from_state_dict(state_dict, encoder, str(path), config, _profile(path, conf, None))
    return LoadedWeights(model, path, "torch", model.encoder_name, conf,
                         epoch if isinstance(epoch, int) else None)


def _load_safetensors(path: Path, config: NetworkConfig | None) -> LoadedWeights:
    from safetensors import SafetensorError, safe_open

    try:
        state_dict = {}
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            for key in f.keys():
                state_dict[key] = f.get_tensor(key)
    except (SafetensorError, OSError, ValueError) as err:
        raise WeightsError(f"{path}: not a readable safetensors file (truncated or corrupt?): {err}") from err
    encoder = metadata.get("encoder")
    # Half-precision exports are widened back; the model runs in float32 unless moved to fp16.
    state_dict = {k: v.float() if v.is_floating_point() else v for k, v in state_dict.items()}
    model = model_from_state_dict(state_dict, encoder, str(path), config, _profile(path, None, metadata))
    stored = metadata.get("fingerprint")
    if stored is not None and stored != weights_fingerprint(model):
        raise WeightsError(f"{path}: the weights do not match the fingerprint in the file's "
                           "metadata (corrupt or edited file); export it again")
    return LoadedWeights(model, path, "safetensors", model.encoder_name, None, None, metadata)


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu",
                    config: NetworkConfig | None = None) -> LoadedWeights:
    """Read an official checkpoint (.tar/.pth) or a .safetensors file -> LoadedWeights.

    The model is in eval mode on ``device``. Raises WeightsError for a missing, truncated,
    non-checkpoint or unsafe file (nothing in it is executed) and for a layout mismatch.
    """
    path = Path(path)
    kind = _sniff_format(path)
    loaded = _load_safetensors(path, config) if kind == "safetensors" else _load_torch(path, kind, config)
    loaded.model.to(device)
    return loaded


def load_weights(path: str | os.PathLike, device: str | torch.device = "cpu",
                 config: NetworkConfig | None = None) -> PixLocModel:
    """The PixLoc model (eval mode, on ``device``) from an official checkpoint or safetensors."""
    return load_checkpoint(path, device, config).model


def weights_fingerprint(weights: nn.Module | Mapping[str, torch.Tensor]) -> str:
    """sha256 hex digest over the sorted state-dict keys, shapes and values.

    Floating tensors are hashed as float32 and integer ones as int64, on the CPU, so the
    fingerprint does not change with the device, a save/load round trip or the file format
    (a half-precision export has the fingerprint of its rounded values).
    """
    state_dict = weights.state_dict() if isinstance(weights, nn.Module) else weights
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        tensor = state_dict[key].detach().cpu()
        tensor = tensor.to(torch.float32) if tensor.is_floating_point() else tensor.to(torch.int64)
        digest.update(key.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.contiguous().reshape(-1).numpy().tobytes())
    return digest.hexdigest()


def _atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)`` then rename, so a crash never leaves a truncated file at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        # mkstemp creates 0600; a weights file is data others (the node's user) must read.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def export_safetensors(model: PixLocModel, path: str | os.PathLike,
                       metadata: Mapping[str, object] | None = None, half: bool = False) -> str:
    """Write the model's state dict to ``path`` (safetensors); returns the stored fingerprint.

    ``half``: floating tensors stored as float16 (half the size; loads back as float32).
    Metadata: ``format``, ``format_version``, ``encoder``, ``dtype``, ``fingerprint`` (of the
    weights as they load back), ``engine_profile`` (JSON of ``model.engine_profile``), plus
    ``metadata`` (values converted with ``str``).
    """
    from safetensors.torch import save_file

    tensors = {}
    for key, value in model.state_dict().items():
        value = value.detach().cpu()
        if half and value.is_floating_point():
            value = value.half()
        tensors[key] = value.contiguous()
    loaded_back = {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}
    fingerprint = weights_fingerprint(loaded_back)
    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    meta.update(format=SAFETENSORS_FORMAT, format_version=SAFETENSORS_FORMAT_VERSION,
                encoder=model.encoder_name, dtype="float16" if half else "float32",
                fingerprint=fingerprint, engine_profile=model.engine_profile.dumps())
    _atomic_write(Path(path), lambda tmp: save_file(tensors, tmp, metadata=meta))
    return fingerprint


def default_official_conf(encoder: str = "vgg16") -> dict:
    """The ``conf`` of the reference's ``train_pixloc_cmu.yaml`` (model part) for ``encoder``."""
    return {
        "data": {},
        "model": {
            "name": "two_view_refiner",
            "success_thresh": 3,
            "normalize_features": True,
            "duplicate_optimizer_per_scale": True,
            "normalize_dt": False,
            "extractor": {
                "name": "unet", "encoder": encoder, "decoder": [64, 64, 64, 32],
                "output_scales": [0, 2, 4], "output_dim": list(OUTPUT_DIMS),
                "do_average_pooling": False, "compute_uncertainty": True,
            },
            "optimizer": {
                "name": "learned_optimizer", "pad": 3, "lambda_": 0.01,
                "loss_fn": "scaled_barron(0, 0.1)", "learned_damping": True,
                "damping": {"type": "constant", "log_range": [-6.0, 5.0]},
            },
        },
        "train": {},
    }


def save_official_checkpoint(model: PixLocModel, path: str | os.PathLike,
                             conf: Mapping | None = None, **extra: object) -> None:
    """Write ``model`` in the official layout (``torch.save`` of a dict, atomically).

    ``conf``: a dict or OmegaConf config with ``data``, ``model``, ``train`` (default:
    :func:`default_official_conf`); stored as an OmegaConf ``DictConfig`` like the released
    files. ``extra`` sets/overrides the other entries: ``optimizer``, ``lr_scheduler``
    (state dicts), ``epoch``, ``losses``, ``eval``. Everything must be loadable by
    :func:`load_checkpoint` (tensors, containers, numbers, strings, numpy scalars).

    The model's engine profile is recorded in ``conf["pixloc_ros"]["engine_profile"]`` unless it is
    exactly what an official checkpoint with this conf implies (the reference formulation with the
    conf's pad): then the file is left as the reference would write it. The reference's loader
    reads only ``conf.model``, so the extra section does not stop it from loading the file.
    """
    from omegaconf import OmegaConf

    if conf is None:
        conf = default_official_conf(model.encoder_name)
    plain = OmegaConf.to_container(conf, resolve=False) if OmegaConf.is_config(conf) else dict(conf)
    stated = _encoder_from_conf(plain)
    if stated is not None and stated != model.encoder_name:
        raise ValueError(f"conf says encoder {stated!r} but the model is {model.encoder_name!r}")
    implied = reference_profile(pad_from_official_conf(plain))
    plain.pop(PROJECT_CONF_KEY, None)
    if model.engine_profile != implied:
        plain[PROJECT_CONF_KEY] = {"engine_profile": model.engine_profile.to_json()}
    conf = OmegaConf.create(plain)
    checkpoint = {
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "conf": conf,
        "optimizer": {"state": {}, "param_groups": []},
        "lr_scheduler": {},
        "epoch": 0,
        "losses": None,
        "eval": {},
    }
    checkpoint.update(extra)
    _atomic_write(Path(path), lambda tmp: torch.save(checkpoint, tmp))


def save_weights(model: PixLocModel, path: str | os.PathLike, **kwargs) -> None:
    """``.safetensors`` -> :func:`export_safetensors`, anything else -> :func:`save_official_checkpoint`."""
    if Path(path).suffix == ".safetensors":
        export_safetensors(model, path, **kwargs)
    else:
        save_official_checkpoint(model, path, **kwargs)


HEAD_INITS = ("reference", "small")  # confidence-head initialisations of ``init_weights``


def init_confidence_heads(model: PixLocModel, generator: torch.Generator, kind: str = "reference") -> None:
    """(Re-)initialise the confidence heads ``extractor.uncertainty.{0,1,2}`` in place.

    "reference": PyTorch's default for a Conv2d, which the reference implementation keeps (it
    never initialises its heads itself): weight and bias uniform in +-1/sqrt(fan_in), i.e. weight
    std 1/sqrt(3 fan_in) (0.10 / 0.072 / 0.026 for the 32 / 64 / 512 input channels). Large enough
    that the head's output follows its input's variation over the image from the first step, so
    the confidences can learn (issue 27: with std 0.01 they stayed flat through training).
    "small": normal with std 0.01 and zero bias (confidences start at 0.5 +- 0.01; what the shipped
    weights up to issue 27 started from).
    """
    if kind not in HEAD_INITS:
        raise ValueError(f"Unsupported head initialisation {kind!r}, expected one of {HEAD_INITS}")
    with torch.no_grad():
        for head in model.extractor.uncertainty:
            conv = head[0]
            if kind == "small":
                nn.init.normal_(conv.weight, std=1e-2, generator=generator)
                nn.init.zeros_(conv.bias)
            else:
                bound = 1.0 / float(np.sqrt(conv.weight[0].numel()))  # fan_in = C_in x 1 x 1
                nn.init.uniform_(conv.weight, -bound, bound, generator=generator)
                nn.init.uniform_(conv.bias, -bound, bound, generator=generator)


def init_weights(encoder: str = "vgg16", seed: int = 0, config: NetworkConfig | None = None,
                 profile: EngineProfile | None = None, head_init: str = "reference") -> PixLocModel:
    """A randomly initialised model (eval mode), identical for identical ``seed``; its engine
    ``profile`` (what it will be trained and run with) defaults to the native one.

    Convolutions: Kaiming normal (fan_out, ReLU) and zero bias, as torchvision's VGG, except
    the confidence heads (``init_confidence_heads``: ``head_init`` "reference", PyTorch's default,
    or "small"); BatchNorm: weight 1, bias 0, fresh running statistics (mean 0, var 1: estimate
    them on images before training, ``core.training.estimate_batchnorm_statistics``); damping
    thetas 0 (lambda ~ 0.32).
    """
    if encoder not in VGG_BLOCKS:
        raise ValueError(f"Unsupported encoder {encoder!r}, expected one of {ENCODERS}")
    if head_init not in HEAD_INITS:
        raise ValueError(f"Unsupported head initialisation {head_init!r}, expected one of {HEAD_INITS}")
    generator = torch.Generator().manual_seed(int(seed))
    model = PixLocModel(encoder, config, profile or native_profile())
    heads = set(model.extractor.uncertainty.modules())
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d) and module in heads:
                continue  # below, after the encoder and decoder (same draws for them as before)
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu",
                                        generator=generator)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                module.reset_parameters()
        for opt in model.optimizer:
            opt.dampingnet.const.zero_()
    init_confidence_heads(model, torch.Generator().manual_seed(int(seed) + 1), head_init)
    return model.eval()


def describe(loaded: LoadedWeights) -> dict:
    """JSON-ready summary: encoder, output dims, parameter count, format, fingerprint, damping."""
    model = loaded.model
    with torch.no_grad():
        damping = model.damping().double().cpu().tolist()
        theta = torch.stack([o.dampingnet.const for o in model.optimizer]).double().cpu().tolist()
    return {
        "path": str(loaded.path),
        "file_format": loaded.file_format,
        "file_size_bytes": loaded.path.stat().st_size,
        "encoder": loaded.encoder,
        "output_dims": list(OUTPUT_DIMS),
        "strides": [1, 4, 16],
        "num_parameters": model.num_parameters(),
        "fingerprint": weights_fingerprint(model),
        "damping_order": ["tx", "ty", "tz", "rx", "ry", "rz"],
        "damping": damping,
        "damping_theta": theta,
        "epoch": loaded.epoch,
        "metadata": loaded.metadata,
        "conf_model": (loaded.conf or {}).get("model") if isinstance(loaded.conf, dict) else None,
        "engine_profile": model.engine_profile.to_json(),
    }


__all__ = [
    "WeightsError", "LoadedWeights", "load_checkpoint", "load_weights", "model_from_state_dict",
    "infer_encoder", "weights_fingerprint", "export_safetensors", "save_official_checkpoint",
    "save_weights", "default_official_conf", "init_weights", "init_confidence_heads", "HEAD_INITS", "describe",
]
