"""`pixloc-ros synth`: the preview picture and argument handling (the full run is exercised by the
session fixture ``synth_small``)."""
import dataclasses
import json

import cv2
import numpy as np
import pytest

from pixloc_ros.cli import main
from pixloc_ros.data.sim.presets import PRESETS, TEST_PRESET, get_preset
from pixloc_ros.data.sim.dataset import load_dataset


def test_preview_shows_every_condition_from_one_pose(tmp_path, capsys):
    out = tmp_path / "preview.png"
    assert main(["synth", "--preview", str(out), "--preview-size", "160x120"]) == 0
    assert "preview:" in capsys.readouterr().out
    grid = cv2.imread(str(out))[..., ::-1]
    assert grid.shape == (240, 480, 3)  # 3 x 2 tiles: 5 conditions and the depth
    tiles = [grid[r * 120:(r + 1) * 120, c * 160:(c + 1) * 160] for r in range(2) for c in range(3)]
    # Same street, different looks: the conditions differ from each other below the labels.
    body = [t[30:].astype(int) for t in tiles[:5]]
    for i in range(5):
        for j in range(i + 1, 5):
            assert np.abs(body[i] - body[j]).mean() > 4, (i, j)


def test_cli_rejects_bad_arguments(tmp_path):
    with pytest.raises(SystemExit):
        main(["synth"])  # neither --out nor --preview
    with pytest.raises(SystemExit):
        main(["synth", "--preview", str(tmp_path / "p.png"), "--preview-size", "big"])
    with pytest.raises(SystemExit):
        main(["synth", "--out", str(tmp_path), "--preset", "huge"])
    with pytest.raises(ValueError, match="Unknown preset"):
        get_preset("huge")


def test_presets_fit_their_purpose():
    from pixloc_ros.core.engine.images import resized_size
    from pixloc_ros.data.sim.presets import camera_for, mapping_camera_for

    small, full = PRESETS["small"], PRESETS["full"]
    assert (small.width, small.height) == (320, 240) and small.max_query_frames <= 40
    assert (full.width, full.height) == (1024, 768)  # CMU Seasons' image size
    assert len(small.query_conditions) >= 3 and TEST_PRESET.width == small.width
    # Mapping images larger than the queries compile back to exactly the query camera with
    # build-map --max-image-edge <query long side>.
    for preset in (small, full, TEST_PRESET):
        mw, mh = preset.mapping_size
        q = camera_for(preset)
        assert resized_size(mw, mh, max(q.width, q.height)) == (q.width, q.height)
        m = mapping_camera_for(preset)
        s = q.width / m.width
        assert np.allclose([m.fx * s, m.fy * s, (m.cx + 0.5) * s - 0.5, (m.cy + 0.5) * s - 0.5],
                           [q.fx, q.fy, q.cx, q.cy])
    assert small.mapping_size == (640, 480)
    with pytest.raises(ValueError, match="mapping_scale"):
        dataclasses.replace(small, mapping_scale=1.01)  # 323.2 px: not a whole-pixel image


def test_output_is_protected_and_reloadable(synth_small, tmp_path):
    from pixloc_ros.data.sim.synth import synthesize
    with pytest.raises(FileExistsError):
        synthesize(synth_small, TEST_PRESET, seed=7)  # not empty, no --overwrite
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("do not delete")
    with pytest.raises(FileExistsError, match="no world.json"):
        synthesize(foreign, TEST_PRESET, overwrite=True)
    data = load_dataset(synth_small)
    info = json.loads((synth_small / "world.json").read_text())
    assert data.camera.width == info["image"]["width"] and data.query_conditions == info["query_conditions"]
    assert (synth_small / "georef.json").exists() and (synth_small / "mapping" / "poses.txt").exists()
    report = json.loads((synth_small / "synth_report.json").read_text())
    assert report["num_points"] == info["sfm"]["num_points"] > 0
    assert set(report["timings_s"]) >= {"render_mapping", "sfm_features", "sfm_triangulation", "total"}


@pytest.mark.slow
def test_same_seed_same_dataset(tmp_path):
    """Everything follows the seed: images, bags and the SfM model come out identical (SIFT runs
    on two threads; keyframes rendered larger than the queries, as in the small preset)."""
    import hashlib

    from pixloc_ros.core.maps.colmap_io import read_model
    from pixloc_ros.data.sim.synth import synthesize
    preset = dataclasses.replace(TEST_PRESET, name="tiny", mapping_length_m=60.0, max_query_frames=3,
                                 query_conditions=("snow",), mapping_scale=1.5)
    digests, models = [], []
    for run in ("a", "b"):
        out = tmp_path / run
        synthesize(out, preset, seed=11, workers=2)
        files = sorted(p for p in out.rglob("*") if p.is_file() and p.suffix in (".png", ".mcap", ".txt"))
        digests.append({str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files})
        models.append(read_model(out / "sfm"))
    assert digests[0] == digests[1]
    assert np.array_equal(models[0].xyz, models[1].xyz) and len(models[0].xyz) > 50
    assert [(c.width, c.height) for c in models[0].cameras.values()] == [(480, 360)]
    assert load_dataset(tmp_path / "a").mapping_camera.width == 480
