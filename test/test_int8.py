"""The int8 network (core/engine/network_int8.py) and the map's int8 cache (core/tracking/int8_map.py).

int8 maps must stay within INT8_COS / INT8_CONF of float32's (measured: 1 - cos 1e-4 to 2e-4 per
level on the seasonal drives, BENCHMARKS.md "Issue 29"); the cache is used when fresh, rebuilt when
stale (other weights, another map) or unreadable (with one warning), and never unpickled; auto's
choice follows the CPU's flags and the int8 check. Everything quantises for real (NNCF), on small
settings; the module skips without NNCF.
"""
import json
import warnings

import numpy as np
import pytest
import torch

from pixloc_ros.core.engine import network_runtime
from pixloc_ros.core.engine.checkpoint import load_weights, weights_fingerprint
from pixloc_ros.core.engine.localizer import LocalizerConfig
from pixloc_ros.core.engine.network_int8 import count_int8_convolutions, quantize_unet, quantizer_installed
from pixloc_ros.core.maps.open_index import open_map_index
from pixloc_ros.core.tracking import int8_map
from pixloc_ros.core.tracking.int8_map import Int8Options, Int8Unavailable, build_int8, int8_folder, load_int8
from pixloc_ros.core.tracking.pipeline import load_pipeline

pytestmark = pytest.mark.skipif(not quantizer_installed(), reason="NNCF / OpenVINO not installed")

INT8_COS = 5e-3  # mean 1 - cos(int8, f32) of the unit features per level, at most
INT8_CONF = 2e-2  # mean |confidence difference| per level, at most
SMALL = Int8Options(calibration_images=3, check_keyframes=1, check_variants=("as_mapped",))


def _images(synth_small, n):
    import cv2
    files = sorted((synth_small / "mapping" / "images").glob("*.png"))
    return [cv2.resize(cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB), (160, 120), interpolation=cv2.INTER_AREA)
            for f in files[::max(1, len(files) // n)][:n]]


def test_int8_maps_are_close_to_f32_and_really_int8(test_weights, synth_small):
    model = load_weights(test_weights.path, "cpu")
    model.config.cpu_runtime, model.config.cpu_precision = "openvino", "f32"
    images = _images(synth_small, 6)
    graph = quantize_unet(model.extractor, images[:3], model.config.pad_mode)
    quantised, total = count_int8_convolutions(graph)
    assert quantised == total - 6 and total == 23  # every 3x3 convolution; the six 1x1 heads stay float
    test = images[3]  # not a calibration image
    f32 = model.extract(test)
    model.set_int8_unet(graph, checked=False)
    model.config.cpu_precision = "int8"
    got = model.extract(test)
    assert model._compiled.precision == "int8"
    for level in range(3):
        cos = 1 - (got.features[level] * f32.features[level]).sum(1)
        assert 0 < float(cos.mean()) < INT8_COS  # not the float graph, and close to it
        assert float((got.confidences[level] - f32.confidences[level]).abs().mean()) < INT8_CONF
        assert torch.allclose(got.features[level].norm(dim=1), torch.ones(1), atol=1e-4)
    with torch.no_grad():  # weights changed in place: the int8 graph is refused, never run stale
        model.extractor.adaptation[0][0].bias.add_(1.0)
    with pytest.raises(RuntimeError, match="weights changed"):
        model.extract(test)


@pytest.fixture
def map_copy(synth_map, tmp_path):
    """A private copy of the test map (the cache goes beside it)."""
    import shutil
    path = tmp_path / "street.pxmap"
    shutil.copy(synth_map.map_file, path)
    return path


@pytest.mark.slow
def test_cache_is_reused_rebuilt_when_stale_or_unreadable_and_never_unpickled(synth_map, synth_small, map_copy):
    model = load_weights(synth_map.weights, "cpu")
    fingerprint = weights_fingerprint(model)
    index = open_map_index(map_copy, expected_fingerprint=fingerprint)
    images = synth_small / "mapping" / "images"
    with pytest.raises(Int8Unavailable, match="pixloc-ros quantize"):
        load_int8(model, index, map_copy, fingerprint, options=SMALL)  # none yet, nothing to build from
    built = load_int8(model, index, map_copy, fingerprint, images=images, options=SMALL)
    folder = int8_folder(map_copy)
    assert built.source == "built" and folder == map_copy.parent / "street.pxmap.int8"
    assert sorted(p.name for p in folder.iterdir()) == ["int8.json", "unet.bin", "unet.xml"]  # IR + JSON, no pickle
    meta = json.loads((folder / "int8.json").read_text())
    assert meta["key"]["weights_fingerprint"] == fingerprint and meta["key"]["map"] == int8_map.map_identity(index)
    assert meta["check"]["attempts"] >= 1 and model.int8_state in ("checked", "unchecked")

    assert load_int8(model, index, map_copy, fingerprint, options=SMALL).source == "cache"
    # stale: another map identity (a rebuilt map) -> rebuilt from the images folder the cache names
    meta["key"]["map"] = "0" * 64
    (folder / "int8.json").write_text(json.dumps(meta))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a stale cache is rebuilt without a warning
        assert load_int8(model, index, map_copy, fingerprint, options=SMALL).source == "rebuilt-stale"
    # unreadable: a damaged graph file -> one warning, rebuilt
    with open(folder / "unet.bin", "r+b") as f:
        f.seek(100)
        f.write(b"\xff" * 64)
    said = []
    net = load_int8(model, index, map_copy, fingerprint, options=SMALL, warn=said.append)
    assert net.source == "rebuilt-unreadable" and len(said) == 1 and "unreadable" in said[0]
    # unreadable record, no images given: nothing names the images any more -> what to run
    (folder / "int8.json").write_text("{not json")
    said.clear()
    with pytest.raises(Int8Unavailable, match="pixloc-ros quantize"):
        load_int8(model, index, map_copy, fingerprint, options=SMALL, warn=said.append)
    assert len(said) == 1
    index.close()


def test_auto_and_int8_through_load_pipeline(synth_map, synth_small, map_copy, monkeypatch):
    """auto on a CPU without bf16 units: int8 only with a checked int8 network, else f32; with bf16
    units: bf16; an explicit int8 without an int8 network fails at start with what to run."""
    monkeypatch.setattr(network_runtime, "cpu_has_bf16", lambda: False)  # a processor without bf16 units
    config = LocalizerConfig(cpu_runtime="openvino", cpu_precision="int8")
    with pytest.raises(Int8Unavailable, match="pixloc-ros quantize"):
        load_pipeline(str(map_copy), str(synth_map.weights), "cpu", localizer_config=config)
    auto = LocalizerConfig(cpu_runtime="openvino", cpu_precision="auto")
    p = load_pipeline(str(map_copy), str(synth_map.weights), "cpu", localizer_config=auto)
    assert p.summary().network_precision == "f32" and p.summary().int8.startswith("none")
    p.close()
    model = load_weights(synth_map.weights, "cpu")
    fingerprint = weights_fingerprint(model)
    index = open_map_index(map_copy, expected_fingerprint=fingerprint)
    build_int8(model, index, map_copy, synth_small / "mapping" / "images", fingerprint, options=SMALL)
    index.close()
    for passed, expected in ((True, "int8"), (False, "f32")):
        meta_path = int8_folder(map_copy) / "int8.json"
        meta = json.loads(meta_path.read_text())
        meta["check"]["passed"] = passed  # the check's verdict decides auto (the digest covers the graph only)
        meta_path.write_text(json.dumps(meta))
        p = load_pipeline(str(map_copy), str(synth_map.weights), "cpu", localizer_config=auto)
        assert p.summary().network_precision == expected and p.summary().int8.startswith("cache")
        p.close()
    p = load_pipeline(str(map_copy), str(synth_map.weights), "cpu", localizer_config=config)
    assert p.summary().network_precision == "int8"  # asked for: runs even where the check failed
    p.close()
    monkeypatch.setattr(network_runtime, "cpu_has_bf16", lambda: True)  # with bf16 units: bf16, checked or not
    meta["check"]["passed"] = True
    meta_path.write_text(json.dumps(meta))
    p = load_pipeline(str(map_copy), str(synth_map.weights), "cpu", localizer_config=auto)
    assert p.summary().network_precision == "bf16"
    p.close()
