"""Shared fixtures.

``synth_small``: one tiny synthetic dataset (``pixloc_ros.data.sim.presets.TEST_PRESET``, seed 7),
generated once per test session into a temporary folder; the value is that folder's Path, laid
out as ``pixloc-ros synth`` output (docs/architecture.md, "Synthetic data layout"): a COLMAP
model in ``sfm/``, mapping images, and a rosbag2 per query condition in ``queries/``. Treat it
as read-only: other tests share it.

``test_weights``: the weights the localization tests run with: the shipped trained weights
(``pixloc_ros/assets/``) when present, else randomly initialised VGG16 weights (seed 0).
Tests that need a network that actually localizes ask for ``localizing_weights``, which skips
when only random weights are available.

``synth_map``: ``synth_small``'s map compiled once with ``test_weights``.

``synth_rig`` / ``synth_rig_map``: a tiny world recorded and mapped by a front/left/right camera rig
(``synth --rig``), and its map compiled with ``test_weights``.
"""
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

# One torch thread in the test process and the processes it starts (the node): on a 2-core box,
# extra threads only spin against each other (see BENCHMARKS.md), and tests run side by side.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Without a GPU, the fused LM's Triton kernels run in Triton's interpreter (test_fused_lm.py); it
# must be chosen before anything imports triton (torch.compile does). With CUDA they compile.
# (No torch at all: the distro checks' environments, scripts/check_distro_pythons.sh.)
if "TRITON_INTERPRET" not in os.environ and importlib.util.find_spec("torch") is not None:
    import torch  # noqa: E402

    if not torch.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402

SYNTH_TEST_SEED = 7
SHIPPED_WEIGHTS = Path(__file__).resolve().parents[1] / "pixloc_ros" / "assets" / "pixloc_synth_vgg16.safetensors"


@pytest.fixture(scope="session")
def synth_small(tmp_path_factory) -> Path:
    from pixloc_ros.data.sim.presets import TEST_PRESET
    from pixloc_ros.data.sim.synth import synthesize
    out = tmp_path_factory.mktemp("synth_small") / "data"
    synthesize(out, TEST_PRESET, seed=SYNTH_TEST_SEED, workers=2)
    return out


@dataclass
class TestWeights:
    path: Path
    trained: bool  # the shipped trained weights (else random init)


@pytest.fixture(scope="session")
def test_weights(tmp_path_factory) -> TestWeights:
    if os.environ.get("PIXLOC_ROS_TEST_WEIGHTS"):
        return TestWeights(Path(os.environ["PIXLOC_ROS_TEST_WEIGHTS"]), True)
    if SHIPPED_WEIGHTS.exists():
        return TestWeights(SHIPPED_WEIGHTS, True)
    from pixloc_ros.core.engine.checkpoint import init_weights, save_weights
    path = tmp_path_factory.mktemp("weights") / "random_vgg16.safetensors"
    save_weights(init_weights("vgg16", 0), path)
    return TestWeights(path, False)


@pytest.fixture(scope="session")
def localizing_weights(test_weights) -> Path:
    if not test_weights.trained:
        pytest.skip(f"needs weights that localize: {SHIPPED_WEIGHTS.name} is not shipped "
                    "(or set PIXLOC_ROS_TEST_WEIGHTS)")
    return test_weights.path


@dataclass
class SynthMap:
    data: Path  # pixloc-ros synth output
    map_file: Path
    weights: Path
    trained: bool


def compile_synth_map(data: Path, weights: Path, out: Path) -> Path:
    """The map of a synth output folder compiled with ``weights`` into ``out`` (world.json's build options)."""
    from pixloc_ros.core.engine.checkpoint import load_weights, weights_fingerprint
    from pixloc_ros.core.maps.colmap_io import read_model
    from pixloc_ros.core.geometry.georef import Georeference
    from pixloc_ros.core.maps.compile_keyframes import CompileConfig
    from pixloc_ros.core.maps.compile import compile_map

    model = load_weights(weights, "cpu")
    build = json.loads((data / "world.json").read_text()).get("build_map", {})
    compile_map(read_model(data / "sfm"), data / "mapping" / "images", model, out,
                weights_fingerprint(model), Georeference.load(data / "georef.json"),
                CompileConfig(max_image_edge=build.get("max_image_edge")), progress=False)
    return out


@pytest.fixture(scope="session")
def synth_map(synth_small, test_weights, tmp_path_factory) -> SynthMap:
    map_file = compile_synth_map(synth_small, test_weights.path, tmp_path_factory.mktemp("synth_map") / "street.pxmap")
    return SynthMap(synth_small, map_file, test_weights.path, test_weights.trained)


@pytest.fixture(scope="session")
def synth_rig(tmp_path_factory) -> Path:
    """A tiny world recorded by a front/left/right rig (``synth --rig``; about 10 s on 2 cores)."""
    from pixloc_ros.data.sim.presets import SynthPreset
    from pixloc_ros.data.sim.synth import synthesize

    # Big enough for a map of every camera (320x240, a keyframe every 2 m of 24 m per camera: about
    # 1000 observations each), 4-6 query frames of one season.
    preset = SynthPreset("rig-test", 320, 240, 61.0, keyframe_spacing_m=2.0, mapping_route="ABCDEFABE",
                         query_length_m=12.0, max_query_frames=6, camera_rate_hz=3.0, odom_rate_hz=10.0,
                         gnss_rate_hz=1.0, sift_max_features=4096, match_max_pairs_per_image=4,
                         query_conditions=("snow",), mapping_length_m=24.0, sift_peak_threshold=0.003,
                         match_epipolar_error_px=2.0)
    out = tmp_path_factory.mktemp("synth_rig") / "data"
    synthesize(out, preset, seed=5, workers=1, rig=("front", "left", "right"))
    return out


@pytest.fixture(scope="session")
def synth_rig_map(synth_rig, test_weights, tmp_path_factory) -> SynthMap:
    map_file = compile_synth_map(synth_rig, test_weights.path, tmp_path_factory.mktemp("synth_rig_map") / "rig.pxmap")
    return SynthMap(synth_rig, map_file, test_weights.path, test_weights.trained)
