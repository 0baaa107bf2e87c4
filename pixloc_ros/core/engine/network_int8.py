"""The PixLoc UNet quantised to int8 for the CPU: NNCF post-training quantisation, OpenVINO IR files.

Processors without bf16 units (AVX2, AVX-512 VNNI) run 8-bit integer convolutions several times
faster than float32 ones (VNNI: one instruction per four multiply-adds); with bf16 units int8 is
still about 2x faster than bf16 (BENCHMARKS.md, "Issue 29"). ``quantize_unet`` exports the UNet
to ONNX (``network_runtime.export_onnx``), reads it into OpenVINO and lets NNCF insert fake-quantise
nodes (per-channel symmetric int8 weights, per-tensor activation ranges) calibrated on real images
of the place: the activations' ranges depend on what the camera sees, so a map's own keyframe
images calibrate it (``core/tracking/int8_map.py`` does that and keeps the result next to the map).

Which layers stay in float (``DEFAULT_IGNORED``): measured, not guessed (``scripts/int8_layers.py``
and BENCHMARKS.md): every 3x3 convolution of the encoder and the decoder quantises without a visible
change in the poses; the output heads (the 1x1 ``adaptation`` convolutions that make the features
and the ``uncertainty`` ones that make the confidence logits) are cheap and keep float, so the
features the LM compares with the map's float reference features are not rounded to 256 levels.

The quantised graph is stored as OpenVINO IR (an XML graph and a binary of raw weights: no pickle
anywhere) and compiled per input size like the float graphs (``network_runtime.CompiledUNet`` with
precision "int8"); layers left in float run in float32 (``INFERENCE_PRECISION_HINT`` f32).
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .network_runtime import export_onnx, runtime_installed

# Node name patterns (regular expressions over OpenVINO's friendly names of the exported UNet)
# kept in float: the 1x1 output heads (module doc).
DEFAULT_IGNORED = (r".*/adaptation\..*", r".*/uncertainty\..*")
CALIBRATION_IMAGES = 32  # images NNCF collects activation statistics on (more changed nothing, measured)
_INSTALL_HINT = "pip install nncf openvino onnx (requirements/accel.txt)"


def quantizer_installed() -> bool:
    """Whether NNCF and OpenVINO (with the ONNX exporter's ``onnx``) can be imported."""
    return importlib.util.find_spec("nncf") is not None and runtime_installed("openvino")


def quantizer_versions() -> dict[str, str]:
    """Versions of the packages that shape a quantised graph ("" for one not installed): part of
    a cached graph's key, since another NNCF can place its quantisers differently."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("nncf", "openvino"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = ""
    return out


def network_input(rgb: np.ndarray, pad_mode: str | None) -> np.ndarray:
    """(H, W, 3) uint8 (or float32 in [0, 255]) RGB -> (1, 3, H', W') float32 in [0, 1], padded to a
    multiple of 16 at the bottom/right as ``PixLocModel.forward`` pads it (``pad_mode`` None:
    unpadded): exactly what the compiled UNet receives for that image."""
    t = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float() / 255.0
    if pad_mode is not None:
        ph, pw = -t.shape[-2] % 16, -t.shape[-1] % 16
        if ph or pw:
            t = F.pad(t, (0, pw, 0, ph), mode=pad_mode)
    return t.contiguous().numpy()


def quantize_unet(unet: torch.nn.Module, images: Sequence[np.ndarray], pad_mode: str | None,
                  ignored: Sequence[str] = DEFAULT_IGNORED, subset_size: int | None = None):
    """NNCF post-training int8 quantisation of ``unet`` (``network.UNet``, eval mode) -> ``ov.Model``.

    images: calibration images, each (H, W, 3) uint8 RGB at the size the network sees (sizes may
    differ); pad_mode: the model's ``NetworkConfig.pad_mode``; ignored: node-name regular
    expressions kept in float; subset_size: images used (default all). The graph's height and width
    stay dynamic. ValueError without images; ImportError (saying what to install) without NNCF.
    """
    if not images:
        raise ValueError("int8 quantisation needs at least one calibration image")
    if not quantizer_installed():
        raise ImportError(f"int8 quantisation needs NNCF and OpenVINO ({_INSTALL_HINT})")
    import nncf
    import openvino as ov

    inputs = [network_input(rgb, pad_mode) for rgb in images]
    onnx = export_onnx(unet, torch.from_numpy(inputs[0]))
    with tempfile.TemporaryDirectory() as tmp:  # read_model takes a path for ONNX
        path = os.path.join(tmp, "unet.onnx")
        Path(path).write_bytes(onnx)
        model = ov.Core().read_model(path)
    if len({x.shape for x in inputs}) == 1:
        # One size (a map's keyframes): calibrate the graph at that static size. With dynamic shapes
        # OpenVINO dropped the decoder's skip crops of sizes that are not a multiple of 16 (the
        # reference profile's cropped images: "Argument shapes are inconsistent" at the concat).
        # The quantised graph is re-shaped per input size when compiled, like the float graphs.
        model.reshape({model.inputs[0]: ov.PartialShape(list(inputs[0].shape))})
    scope = nncf.IgnoredScope(patterns=list(ignored), validate=False) if ignored else None
    # PERFORMANCE: symmetric activations and weights (what the CPU plugin's int8 kernels take fastest);
    # fast bias correction re-centres each quantised convolution's output on the calibration set.
    return nncf.quantize(model, nncf.Dataset(inputs), preset=nncf.QuantizationPreset.PERFORMANCE,
                         target_device=nncf.TargetDevice.CPU, subset_size=int(subset_size or len(inputs)),
                         fast_bias_correction=True, ignored_scope=scope)


def save_ir(model, xml_path: str | Path) -> None:
    """Write ``model`` as OpenVINO IR: ``xml_path`` and the weights beside it (``.bin``); the bytes
    of both are what ``ir_digest`` hashes."""
    import openvino as ov

    ov.save_model(model, str(xml_path), compress_to_fp16=False)


def ir_digest(xml_path: str | Path) -> str:
    """sha256 of the IR's XML and binary files together (a cached graph's integrity check)."""
    h = hashlib.sha256()
    for path in (Path(xml_path), Path(xml_path).with_suffix(".bin")):
        h.update(path.read_bytes())
    return h.hexdigest()


def load_ir(xml_path: str | Path):
    """Read an OpenVINO IR (XML + ``.bin``) -> ``ov.Model``. Raises RuntimeError / OSError on an
    unreadable or truncated file (the caller rebuilds). Parsing IR never executes code."""
    import openvino as ov

    path = Path(xml_path)
    if not path.exists() or not path.with_suffix(".bin").exists():
        raise FileNotFoundError(f"no OpenVINO IR at {path} (and its .bin)")
    return ov.Core().read_model(str(path), str(path.with_suffix(".bin")))


def count_int8_convolutions(model) -> tuple[int, int]:
    """(quantised, total) convolutions of an ``ov.Model``: a convolution is quantised when its
    weights come from an 8-bit constant or pass through a FakeQuantize node (what NNCF inserts)."""
    quantised = total = 0
    for op in model.get_ordered_ops():
        if op.get_type_name() != "Convolution":
            continue
        total += 1
        node, seen = op.input_value(1).get_node(), 0
        while node is not None and seen < 6:  # Convert / Subtract / Multiply chains of compressed weights
            if node.get_type_name() == "FakeQuantize" or (
                    node.get_type_name() == "Constant" and node.get_element_type().get_type_name() in ("i8", "u8")):
                quantised += 1
                break
            node = node.input_value(0).get_node() if node.get_input_size() else None
            seen += 1
    return quantised, total


__all__ = ["CALIBRATION_IMAGES", "DEFAULT_IGNORED", "count_int8_convolutions", "ir_digest",
           "load_ir", "network_input", "quantize_unet", "quantizer_installed", "quantizer_versions", "save_ir"]
