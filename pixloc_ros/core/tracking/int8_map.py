"""The map's int8 network: the UNet quantised on the map's own keyframe images, checked, cached beside it.

int8 convolutions are the CPU's fastest (``core/engine/network_int8.py``), but their activation
ranges come from calibration images, and a map's keyframes are the best sample there is of what the
camera will see. ``build_int8`` quantises the model's UNet on up to ``calibration_images`` keyframes
spread over the map, then checks it: other keyframes (none of the calibration ones) are localized
against the rest of the map from a perturbed prior (``map_calibration``'s held-out localizations, as
mapped and in a darker, blurred variant), once with the float32 network and once with the int8 one.
The check passes when int8 localizes every keyframe float32 localized (within 0.25 m / 2 deg of its
SfM pose), at least as many in all, and its poses there stay within a median of
``median_translation_m`` / ``median_rotation_deg`` of float32's (a median: the LM's basin is shallow,
and bf16 too moved single localizations by up to 7 cm, BENCHMARKS.md "Issue 29"); only
a passed check lets ``cpu_precision: auto`` take int8 (on a processor without bf16 units).

The cache, ``<map>.int8/`` (beside a map file, or a tiled map's folder): ``unet.xml`` + ``unet.bin``
(OpenVINO IR: an XML graph and raw weights, no pickle) and ``int8.json`` (the key, the IR's sha256,
the check's figures, the images folder). The key is the weights' fingerprint, the map's identity
(its header and keyframe checksums: a rebuilt map is another map) and the quantiser's versions; the
settings it was built with are recorded and reused by a rebuild. ``load_int8``: a fresh cache is read; a stale one is rebuilt from the images folder it
names; an unreadable one (bad JSON, a digest mismatch, an IR OpenVINO cannot read) is rebuilt with
one warning. Without the images or NNCF it cannot be rebuilt: ``Int8Unavailable`` says what to run.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from ..engine.images import camera_scale
from ..engine.localizer import Localizer, LocalizerConfig
from ..engine.network_int8 import (CALIBRATION_IMAGES, DEFAULT_IGNORED, count_int8_convolutions, ir_digest, load_ir,
                                   quantize_unet, quantizer_installed, quantizer_versions, save_ir)
from ..geometry.pose import Pose
from ..geometry.transforms import pose_difference
from ..maps.compile_keyframes import load_keyframe_image
from ..maps.retrieval import BASE_FROM_OPTICAL, MapIndex, RetrievalConfig
from .map_calibration import VARIANTS, CalibrationOptions, held_out_points, perturbed_prior, photometric_change

CACHE_FORMAT = 1
GRAPH_FILE, META_FILE = "unet.xml", "int8.json"


class Int8Unavailable(ValueError):
    """The map has no usable int8 network and none can be built here; the message says what to run."""


@dataclass
class Int8Options:
    """How the int8 network of a map is built and checked (module doc)."""

    calibration_images: int = CALIBRATION_IMAGES  # keyframes the activation ranges are measured on
    ignored: tuple[str, ...] = DEFAULT_IGNORED  # node-name patterns kept in float (network_int8)
    check_keyframes: int = 12  # other keyframes localized with float32 and int8 (x the variants below)
    check_variants: tuple[str, ...] = ("as_mapped", "darker_blurred")  # map_calibration.VARIANTS names
    # int8 pose vs float32 pose where float32 was correct: the median difference allowed (bf16's and
    # int8's were 0.5-1 cm / 0.01-0.03 deg on the maps measured, BENCHMARKS.md "Issue 29").
    median_translation_m: float = 0.02
    median_rotation_deg: float = 0.1
    correct_m: float = 0.25  # a localization is correct within this of the SfM pose ...
    correct_deg: float = 2.0  # ... and this
    seed: int = 0


@dataclass
class Int8Check:
    """The figures of the accuracy check (JSON-able)."""

    attempts: int = 0
    f32_correct: int = 0
    int8_correct: int = 0
    lost: int = 0  # localized correctly by float32, not by int8
    max_translation_m: float = math.nan  # int8 vs float32 poses, where float32 localized correctly
    max_rotation_deg: float = math.nan
    median_translation_m: float = math.nan
    median_rotation_deg: float = math.nan
    passed: bool = False


@dataclass
class Int8Network:
    """A map's int8 UNet: the graph (``ov.Model``), where it is cached, its check, how it was had."""

    graph: object
    folder: Path
    check: Int8Check
    source: str  # "cache", "built" (no cache yet), "rebuilt-stale", "rebuilt-unreadable"
    int8_convolutions: tuple[int, int] = (0, 0)
    meta: dict = field(default_factory=dict)


def int8_folder(map_path: str | Path) -> Path:
    """``<map>.int8`` beside a map file or a tiled map's folder."""
    path = Path(map_path)
    return path.parent / (path.name + ".int8")


def map_identity(index: MapIndex) -> str:
    """sha256 of the map's header and keyframe checksums: changes whenever the map is rebuilt."""
    h = hashlib.sha256(json.dumps(index.map.header.to_json(), sort_keys=True, default=str).encode())
    h.update(np.ascontiguousarray(index.map.keyframe_obs_crc32).tobytes())
    return h.hexdigest()


def cache_key(index: MapIndex, fingerprint: str) -> dict:
    """What a cached int8 graph must match to be used (module doc). The settings it was built with
    (calibration images, layers kept in float) are recorded beside, not matched: they were chosen
    when it was built (``pixloc-ros quantize``), and a node must not undo that choice."""
    return {"format": CACHE_FORMAT, "weights_fingerprint": fingerprint, "map": map_identity(index),
            "versions": quantizer_versions()}


def _keyframe_image(index: MapIndex, images: Path, row: int, profile):
    """Keyframe ``row``'s image as the map compile fed it to the network, and its camera."""
    header = index.map.header
    max_edge = header.compile_info.get("config", {}).get("max_image_edge")
    max_edge = profile.max_image_edge if max_edge is None else max_edge
    full = index.keyframe_camera(row)
    w0, h0 = (int(round(float(v))) for v in full.size)
    rgb = load_keyframe_image(images / header.keyframe_names[row], w0, h0, max_edge, profile.resize)
    h, w = rgb.shape[:2]
    return rgb, (full.scale(camera_scale(w0, h0, w, h, profile.resize)) if (w, h) != (w0, h0) else full)


def _rows(count: int, wanted: int) -> np.ndarray:
    return np.unique(np.linspace(0, count - 1, max(1, min(wanted, count))).round().astype(int))


def check_int8(model, index: MapIndex, images: Path, rows: np.ndarray, localizer_config: LocalizerConfig,
               options: Int8Options) -> Int8Check:
    """Localize keyframe ``rows`` (held out of the map) with float32 and with int8 (``model`` holds
    the int8 graph already) from the same priors and compare (module doc)."""
    variants = [v for v in VARIANTS if v[0] in options.check_variants]
    cal = CalibrationOptions()
    retrieval = RetrievalConfig(num_keyframes=2)
    poses = {}
    for precision in ("f32", "int8"):
        localizer = Localizer(model, replace(localizer_config, device="cpu", cpu_precision=precision))
        rng = np.random.default_rng(options.seed)  # the same priors, points and noise for both
        out = poses[precision] = []
        for row in rows:
            rgb, camera = _keyframe_image(index, images, int(row), localizer.profile)
            truth = index.keyframe_world_from_cam[row] @ np.linalg.inv(BASE_FROM_OPTICAL)
            for _, gain, contrast, gamma, blur, noise in variants:
                prior = perturbed_prior(index.keyframe_world_from_cam[row], cal.prior_sigma_m, cal.prior_sigma_deg, rng)
                cam_from_world = np.linalg.inv(prior)
                points = held_out_points(index, int(row), cam_from_world, camera, cal, retrieval, rng)
                image = photometric_change(np.clip(rgb, 0, 255).astype(np.uint8), gain, contrast, gamma, blur, noise, rng)
                if points is None:
                    out.append(None)
                    continue
                result = localizer.localize(image, camera, points,
                                            Pose.from_numpy(cam_from_world[:3, :3], cam_from_world[:3, 3]))
                estimate = (result.cam_from_world.inv().to_4x4_numpy() @ np.linalg.inv(BASE_FROM_OPTICAL)
                            if result.success else None)
                out.append((estimate, truth))
    check = Int8Check()
    dts, drs = [], []
    for a, b in zip(poses["f32"], poses["int8"]):
        if a is None:
            continue
        check.attempts += 1
        ok = [p is not None and p[0] is not None and _within(pose_difference(p[0], p[1]), options.correct_m,
                                                               options.correct_deg) for p in (a, b)]
        check.f32_correct += ok[0]
        check.int8_correct += ok[1]
        check.lost += ok[0] and not ok[1]
        if ok[0] and b[0] is not None:  # where float32 localized correctly: how far int8 moved that pose
            d = pose_difference(b[0], a[0])
            dts.append(float(np.linalg.norm(d[:3])))
            drs.append(math.degrees(float(np.linalg.norm(d[3:]))))
    if dts:
        check.max_translation_m, check.max_rotation_deg = max(dts), max(drs)
        check.median_translation_m, check.median_rotation_deg = float(np.median(dts)), float(np.median(drs))
    check.passed = bool(check.f32_correct > 0 and check.lost == 0 and check.int8_correct >= check.f32_correct
                        and check.median_translation_m <= options.median_translation_m
                        and check.median_rotation_deg <= options.median_rotation_deg)
    return check


def _within(d: np.ndarray, metres: float, degrees: float) -> bool:
    return float(np.linalg.norm(d[:3])) <= metres and math.degrees(float(np.linalg.norm(d[3:]))) <= degrees


def build_int8(model, index: MapIndex, map_path: str | Path, images: str | Path, fingerprint: str,
               localizer_config: LocalizerConfig | None = None, options: Int8Options | None = None,
               source: str = "built") -> Int8Network:
    """Quantise ``model``'s UNet on the map's keyframes from ``images`` (the folder the map was
    compiled from), check it, write ``<map>.int8/`` and hand the graph to the model
    (``PixLocModel.set_int8_unet``). Int8Unavailable without NNCF or without the images."""
    options = options or Int8Options()
    if not quantizer_installed():
        raise Int8Unavailable("building the int8 network needs NNCF and OpenVINO (pip install -r requirements/accel.txt)")
    images = Path(images).resolve()
    if not images.is_dir():
        raise Int8Unavailable(f"no keyframe images at {images} to calibrate the int8 network on "
                              "(`pixloc-ros quantize --map MAP --images DIR` with the folder the map was built from)")
    start = time.perf_counter()
    config = localizer_config or LocalizerConfig()
    profile = config.profile or model.engine_profile
    calibration = _rows(index.num_keyframes, options.calibration_images)
    others = np.setdiff1d(np.arange(index.num_keyframes), calibration)
    checks = others[_rows(len(others), options.check_keyframes)] if len(others) else calibration[:options.check_keyframes]
    rgb = [_keyframe_image(index, images, int(r), profile)[0] for r in calibration]
    model.set_int8_unet(None, False)
    graph = quantize_unet(model.extractor, rgb, model.config.pad_mode, options.ignored)
    model.set_int8_unet(graph, False)
    check = check_int8(model, index, images, checks, config, options)
    model.set_int8_unet(graph, check.passed)
    folder = int8_folder(map_path)
    meta = {"key": cache_key(index, fingerprint), "images": str(images), "check": asdict(check),
            "options": {**asdict(options), "ignored": list(options.ignored)},
            "calibration_keyframes": [index.map.header.keyframe_names[r] for r in calibration],
            "check_keyframes": [index.map.header.keyframe_names[r] for r in checks],
            "seconds": round(time.perf_counter() - start, 1), "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    _write(folder, graph, meta)
    return Int8Network(graph, folder, check, source, count_int8_convolutions(graph), meta)


def _write(folder: Path, graph, meta: dict) -> None:
    """Write the cache in a sibling temporary folder and swap it in (a crash leaves the old or none)."""
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
    try:
        save_ir(graph, tmp / GRAPH_FILE)
        meta = {**meta, "ir_sha256": ir_digest(tmp / GRAPH_FILE)}
        (tmp / META_FILE).write_text(json.dumps(meta, indent=1))
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def load_int8(model, index: MapIndex, map_path: str | Path, fingerprint: str, images: str | Path | None = None,
              localizer_config: LocalizerConfig | None = None, options: Int8Options | None = None,
              warn=None) -> Int8Network:
    """The map's int8 network for ``model`` (handed to it, ``PixLocModel.set_int8_unet``): from
    ``<map>.int8/`` when it is fresh, else rebuilt (module doc) from ``images`` or the folder the
    cache names. ``warn(text)``: the one warning about an unreadable cache (default: ``warnings``).
    Int8Unavailable when there is no cache and nothing to rebuild it from. ``options``: for a build
    (default: those the cache recorded, else ``Int8Options()``)."""
    folder = int8_folder(map_path)
    meta_path = folder / META_FILE
    if not meta_path.exists():
        if images is None:
            raise Int8Unavailable(f"no int8 network for {map_path} (run `pixloc-ros quantize --map {map_path} "
                                  "--images DIR` with the folder the map was built from)")
        return build_int8(model, index, map_path, images, fingerprint, localizer_config, options or Int8Options(),
                          "built")
    problem, meta = None, {}
    try:
        meta = json.loads(meta_path.read_text())
        if not isinstance(meta, dict) or not isinstance(meta.get("key"), dict):
            raise ValueError("not an int8 cache record")
        if meta.get("ir_sha256") != ir_digest(folder / GRAPH_FILE):
            raise ValueError("the graph's sha256 does not match its record")
    except (OSError, ValueError, UnicodeDecodeError) as err:
        problem = f"{type(err).__name__}: {err}"
    source_images = images if images is not None else meta.get("images")
    if options is None:
        try:
            recorded = dict(meta.get("options") or {})
            options = Int8Options(**{**recorded, "ignored": tuple(recorded.get("ignored", Int8Options().ignored)),
                                     "check_variants": tuple(recorded.get("check_variants", Int8Options().check_variants))})
        except (TypeError, ValueError, AttributeError):
            options = Int8Options()
    if problem is None and meta["key"] == cache_key(index, fingerprint):
        try:
            graph = load_ir(folder / GRAPH_FILE)
        except (OSError, RuntimeError) as err:
            problem = f"{type(err).__name__}: {err}"
        else:
            check = Int8Check(**meta.get("check", {}))
            model.set_int8_unet(graph, check.passed)
            return Int8Network(graph, folder, check, "cache", count_int8_convolutions(graph), meta)
    if problem is not None:
        text = f"the int8 network cached at {folder} is unreadable ({problem}); rebuilding it"
        if warn is None:
            import warnings
            warnings.warn(text, RuntimeWarning, stacklevel=2)
        else:
            warn(text)
    if source_images is None:
        raise Int8Unavailable(f"the int8 network at {folder} must be rebuilt but names no images folder "
                              f"(run `pixloc-ros quantize --map {map_path} --images DIR`)")
    return build_int8(model, index, map_path, source_images, fingerprint, localizer_config, options,
                      "rebuilt-unreadable" if problem is not None else "rebuilt-stale")


__all__ = ["CACHE_FORMAT", "Int8Check", "Int8Network", "Int8Options", "Int8Unavailable", "build_int8", "cache_key",
           "check_int8", "int8_folder", "load_int8", "map_identity"]
