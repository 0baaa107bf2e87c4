"""The PixLoc UNet through an optimised CPU inference runtime (OpenVINO or ONNX Runtime).

On the CPU, PyTorch runs the VGG16 UNet at 640x480 in about 2.5 s of CPU time on one core of
the project's machine; OpenVINO's CPU plugin in float32 needs 1.3-1.8 s (BENCHMARKS.md, "CPU
network runtimes"), with the same maps within 1e-6. ``CompiledUNet`` exports the UNet once to
ONNX (``torch.onnx.export``, height and width dynamic), then builds one runtime session per input
size (OpenVINO compiles static shapes, a fraction of a second each) and runs the forward pass
there. Only the UNet's convolutions move; the padding, L2 normalisation and sigmoid stay in
``PixLocModel.forward``, so both paths share them. The feature maps come back stored channels-last
(NHWC strides): the normalisation is then a reduction over contiguous memory and the LM's
sampling table a view (together about 0.2 s less per 640x480 frame than NCHW maps, measured).

Runtimes (``CPU_RUNTIMES``): "torch" (always there), "openvino", "onnxruntime" (optional
packages, ``requirements/accel.txt``); "auto" picks the first installed of openvino,
onnxruntime, torch (the order of their measured speed).

Precision (``CPU_PRECISIONS``): "f32" by default, and OpenVINO is told so
(``INFERENCE_PRECISION_HINT``), since on processors with bf16 units it would otherwise lower the
precision by itself. "bf16" runs OpenVINO's convolutions in bfloat16 (float32 in and out), for
processors with bf16 units (AVX512-BF16, AMX): on the project's AMX machine 6x faster than f32 at
640x480, features within about 1 % of the f32 ones (BENCHMARKS.md) - the CPU counterpart of the
fp16 autocast the network runs under on CUDA. "auto": bf16 where OpenVINO reports bf16 units,
f32 elsewhere (where bf16 would be emulated, slower than f32). "int8": a graph quantised by NNCF
(``network_int8``; calibrated on a map's keyframes, ``core/tracking/int8_map.py``) handed in as an
``ov.Model``; "auto" takes it where there are no bf16 units and its accuracy was checked
(``resolve_cpu_precision``).

The compiled graph holds a copy of the weights: ``CompiledUNet`` checks the parameters' version
counters and data pointers on every call and rebuilds when they changed (training updates the
weights in place; ``load_state_dict`` copies into them), so a stale graph is never run.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import io
import os
import tempfile
import warnings
from collections import OrderedDict
from pathlib import Path

import torch

CPU_RUNTIMES = ("auto", "torch", "openvino", "onnxruntime")
CPU_PRECISIONS = ("f32", "bf16", "int8", "auto")
_PREFERENCE = ("openvino", "onnxruntime")  # "auto": fastest first (BENCHMARKS.md)
_INSTALL_HINT = {"openvino": "pip install openvino onnx", "onnxruntime": "pip install onnxruntime onnx"}
MAX_SIZES = 4  # compiled input sizes kept per model (a node sees one; map compile maybe a few)
# ONNX exports by weight content, shared by the models of a process: loading the same weights
# again (a test suite, a pipeline rebuilt) skips the export (seconds for VGG16). ~60 MB each.
_EXPORTS: OrderedDict = OrderedDict()
MAX_EXPORTS = 2


def runtime_installed(name: str) -> bool:
    """Whether the runtime ``name`` and the ONNX exporter's dependency (``onnx``) can be imported."""
    if name == "torch":
        return True
    module = {"openvino": "openvino", "onnxruntime": "onnxruntime"}.get(name)
    if module is None:
        raise ValueError(f"Unsupported CPU runtime {name!r}, expected one of {CPU_RUNTIMES}")
    return importlib.util.find_spec(module) is not None and importlib.util.find_spec("onnx") is not None


def resolve_cpu_runtime(name: str) -> str:
    """"auto" -> the fastest installed runtime; an explicit one -> itself, or ValueError saying
    what to install when it is missing."""
    if name not in CPU_RUNTIMES:
        raise ValueError(f"Unsupported CPU runtime {name!r}, expected one of {CPU_RUNTIMES}")
    if name == "auto":
        return next((r for r in _PREFERENCE if runtime_installed(r)), "torch")
    if not runtime_installed(name):
        raise ValueError(f"CPU runtime {name!r} is not installed ({_INSTALL_HINT[name]})")
    return name


@functools.lru_cache(maxsize=1)  # a property of the machine; asking builds an OpenVINO Core
def cpu_has_bf16() -> bool:
    """Whether this processor has bf16 units, as OpenVINO's CPU plugin reports them (False when
    OpenVINO is not installed)."""
    if not runtime_installed("openvino"):
        return False
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


@functools.lru_cache(maxsize=1)
def cpu_flags_have_bf16() -> bool:
    """Whether the processor's flags (``/proc/cpuinfo``) name bf16 units (``avx512_bf16`` or
    ``amx_bf16``), where torch's CPU bf16 autocast runs natively; elsewhere (no such file) what
    OpenVINO reports (``cpu_has_bf16``)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return cpu_has_bf16()
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[-1].split())
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def resolve_cpu_precision(precision: str, runtime: str, int8: str = "none") -> str:
    """The precision the network runs in on the CPU, "f32", "bf16" or "int8", for a resolved ``runtime``.

    int8: what int8 graph the model holds: "none", "unchecked" (quantised, accuracy not measured
    or not good enough) or "checked" (its poses matched float32's on the map's keyframes,
    ``int8_map``). "auto" -> "bf16" with OpenVINO on a processor with bf16 units (poses closest to
    float32's of the two: BENCHMARKS.md "Issue 29"), else "int8" with OpenVINO and a checked graph,
    else "f32". An explicit "bf16" or "int8" that cannot run raises ValueError saying what to change.
    """
    if precision not in CPU_PRECISIONS:
        raise ValueError(f"Unsupported cpu_precision {precision!r}, expected one of {CPU_PRECISIONS}")
    if precision == "f32":
        return "f32"
    if runtime != "openvino":
        if precision == "auto":
            return "f32"
        raise ValueError(f"cpu_precision {precision!r} needs the openvino CPU runtime, not {runtime!r} "
                         "(set cpu_runtime to auto or openvino, or cpu_precision to f32)")
    if precision == "int8" or (precision == "auto" and int8 == "checked" and not cpu_has_bf16()):
        if int8 == "none":
            raise ValueError("cpu_precision 'int8' needs the map's int8 network (`pixloc-ros quantize --map MAP "
                             "--images DIR`, or build-map --int8); or set cpu_precision to auto, bf16 or f32")
        return "int8"
    has_bf16 = cpu_has_bf16()
    if precision == "bf16" and not has_bf16:
        raise ValueError("cpu_precision 'bf16': this processor has no bf16 units (AVX512-BF16 or AMX), "
                         "where bfloat16 would be emulated and slower; set cpu_precision to f32 or auto")
    return "bf16" if has_bf16 else "f32"


class _FlatUNet(torch.nn.Module):
    """The UNet with a flat tuple of outputs (ONNX graphs have no nested lists), features in
    NHWC order: the LM gathers channels-last rows, and this way the runtime writes them so (the
    tensors handed back are (1, C, H, W) views with channels-last strides, no copy anywhere)."""

    def __init__(self, unet: torch.nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, image: torch.Tensor):
        features, logits = self.unet(image)
        return (*(f.permute(0, 2, 3, 1) for f in features), *logits)


def export_onnx(unet: torch.nn.Module, example: torch.Tensor) -> bytes:
    """ONNX bytes of ``unet`` (eval mode) with a dynamic image height and width.

    example: (1, 3, H, W) float32 CPU image, used only for tracing.
    """
    buffer = io.BytesIO()
    was_training = unet.training
    unet.eval()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # The TorchScript exporter warns about its own deprecation and about tracing the
            # skip crops (they are shape ops, exported as such): nothing to act on here.
            warnings.simplefilter("ignore")
            torch.onnx.export(_FlatUNet(unet), (example,), buffer, dynamo=False, opset_version=17,
                              input_names=["image"], dynamic_axes={"image": {2: "height", 3: "width"}})
    finally:
        unet.train(was_training)
    return buffer.getvalue()


def _weights_digest(unet: torch.nn.Module) -> str:
    """Digest of every parameter and buffer (names, shapes, bytes): equal digests, equal graphs."""
    h = hashlib.blake2b(digest_size=16)
    for name, t in list(unet.state_dict().items()):
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
                 if t.numel() else b"")
    return h.hexdigest()


def _cached_export(unet: torch.nn.Module, example: torch.Tensor) -> bytes:
    """``export_onnx`` through the process-wide cache keyed by the weights' digest."""
    digest = _weights_digest(unet)
    onnx = _EXPORTS.get(digest)
    if onnx is None:
        onnx = _EXPORTS[digest] = export_onnx(unet, example)
        while len(_EXPORTS) > MAX_EXPORTS:
            _EXPORTS.popitem(last=False)
    else:
        _EXPORTS.move_to_end(digest)
    return onnx


class _OpenVinoSession:
    """One OpenVINO compiled model for a fixed input size; ``source``: ONNX bytes, or an ``ov.Model``
    (the int8 graph, dynamic height and width; copied before it is given this size)."""

    def __init__(self, source, shape: tuple[int, ...], threads: int, precision: str = "f32"):
        import openvino as ov

        core = ov.Core()
        if isinstance(source, bytes):
            # read_model takes a path for ONNX; the file lives only while the graph is read.
            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, "unet.onnx")
                with open(path, "wb") as f:
                    f.write(source)
                model = core.read_model(path)
        else:
            model = source.clone()
        model.reshape({model.inputs[0]: ov.PartialShape(list(shape))})
        # int8: the layers NNCF left in float run in f32 (bf16 there would round the features int8 spared).
        hint = "f32" if precision == "int8" else precision
        self.compiled = core.compile_model(model, "CPU", {
            "INFERENCE_NUM_THREADS": int(threads), "INFERENCE_PRECISION_HINT": hint,
            "PERFORMANCE_HINT": "LATENCY"})
        self.request = self.compiled.create_infer_request()

    def run(self, image):
        results = self.request.infer({0: image})
        return [results[out] for out in self.compiled.outputs]


class _OnnxRuntimeSession:
    """One ONNX Runtime session (dynamic shapes; one per size all the same, for symmetry)."""

    def __init__(self, onnx_bytes: bytes, shape: tuple[int, ...], threads: int, precision: str = "f32"):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def run(self, image):
        return self.session.run(None, {self.input: image})


_SESSIONS = {"openvino": _OpenVinoSession, "onnxruntime": _OnnxRuntimeSession}


class CompiledUNet:
    """``UNet.forward`` through an inference runtime, for float32 CPU images without autograd.

    ``compiled(image)``: (1, 3, H, W) float32 CPU tensor -> (features, logits), lists of 3 float32
    tensors finest first, like ``UNet.forward``. Sessions are built on first use of each size
    (export on the first call: seconds; warm up at start-up) and rebuilt when the weights change.
    """

    def __init__(self, unet: torch.nn.Module, runtime: str, precision: str = "f32", int8_model=None):
        """``runtime``: "openvino" or "onnxruntime"; ``precision``: a resolved one, "f32", "bf16" or
        "int8" (``resolve_cpu_precision``); ``int8_model``: for "int8", the quantised graph of
        ``unet``'s current weights (an ``ov.Model``, ``network_int8.quantize_unet``)."""
        if runtime not in _SESSIONS:
            raise ValueError(f"CompiledUNet needs one of {tuple(_SESSIONS)}, got {runtime!r}")
        if precision not in ("f32", "bf16", "int8"):
            raise ValueError(f"CompiledUNet needs a resolved precision, f32, bf16 or int8, got {precision!r}")
        if runtime == "onnxruntime" and precision != "f32":
            raise ValueError(f"ONNX Runtime runs the network in f32 only, not {precision!r}")
        if (precision == "int8") != (int8_model is not None):
            raise ValueError("CompiledUNet runs an int8_model exactly when the precision is int8")
        self.unet = unet
        self.runtime = runtime
        self.precision = precision
        self.int8_model = int8_model
        self._onnx: bytes | None = None
        self._weights_key: tuple | None = None
        # The int8 graph holds the weights it was quantised from: it is valid for these only.
        self._int8_key = self._current_weights_key() if int8_model is not None else None
        self._sessions: OrderedDict = OrderedDict()

    def _current_weights_key(self) -> tuple:
        # Version counters change on every in-place update (optimizer steps, load_state_dict).
        return tuple((t.data_ptr(), t._version) for t in list(self.unet.parameters()) + list(self.unet.buffers()))

    def __call__(self, image: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        if image.ndim != 4 or image.shape[0] != 1 or image.is_cuda or image.dtype != torch.float32:
            raise ValueError(f"CompiledUNet takes one float32 CPU image (1, 3, H, W), got "
                             f"{tuple(image.shape)} {image.dtype} on {image.device}")
        key = self._current_weights_key()
        if self.int8_model is not None:
            if key != self._int8_key:  # the graph is given: nothing to export, but it must still fit
                raise RuntimeError("the weights changed since the int8 network was quantised; quantise again")
        elif key != self._weights_key:
            self._onnx = _cached_export(self.unet, image)
            self._weights_key = key
            self._sessions.clear()
        threads = torch.get_num_threads()
        skey = (tuple(image.shape), threads)
        session = self._sessions.get(skey)
        if session is None:
            source = self.int8_model if self.int8_model is not None else self._onnx
            session = _SESSIONS[self.runtime](source, tuple(image.shape), threads, self.precision)
            self._sessions[skey] = session
            while len(self._sessions) > MAX_SIZES:
                self._sessions.popitem(last=False)
        else:
            self._sessions.move_to_end(skey)
        outputs = [torch.from_numpy(o) for o in session.run(image.contiguous().numpy())]
        return [f.permute(0, 3, 1, 2) for f in outputs[:3]], outputs[3:]


__all__ = ["CPU_PRECISIONS", "CPU_RUNTIMES", "CompiledUNet", "cpu_has_bf16", "cpu_flags_have_bf16", "export_onnx", "resolve_cpu_precision",
           "resolve_cpu_runtime", "runtime_installed"]
