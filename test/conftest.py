"""Shared fixtures.

``synth_small``: one tiny synthetic dataset (``pixloc_ros.data.synth.TEST_PRESET``, seed 7),
generated once per test session into a temporary folder; the value is that folder's Path, laid
out as ``pixloc-ros synth`` output (docs/architecture.md, "Synthetic data layout"): a COLMAP
model in ``sfm/``, mapping images, and a rosbag2 per query condition in ``queries/``. Treat it
as read-only: other tests share it.
"""
from pathlib import Path

import pytest

SYNTH_TEST_SEED = 7


@pytest.fixture(scope="session")
def synth_small(tmp_path_factory) -> Path:
    from pixloc_ros.data.synth import TEST_PRESET, synthesize
    out = tmp_path_factory.mktemp("synth_small") / "data"
    synthesize(out, TEST_PRESET, seed=SYNTH_TEST_SEED, workers=2)
    return out
