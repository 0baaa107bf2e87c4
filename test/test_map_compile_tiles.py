"""Tiled map compile: same features as the one-file compile, resumable, identical on Ray."""
import os
import subprocess
import sys

import numpy as np
import pytest
from test_map_compile import synthetic  # noqa: F401  (the module-scoped fixture: 4 keyframes, 2 cameras)

from pixloc_ros.core.engine.checkpoint import save_weights, weights_fingerprint
from pixloc_ros.core.maps.compile_keyframes import CompileConfig
from pixloc_ros.core.maps.compile import compile_map, compile_tiled_map
from pixloc_ros.core.maps.mapfile import open_map
from pixloc_ros.core.maps.retrieval import MapIndex
from pixloc_ros.core.maps.tiled_index import TiledMapIndex
from pixloc_ros.core.maps.tiles import INDEX_NAME, open_tiled_map, tile_file_name

TILE = 0.3  # the fixture's keyframe centres are 0.3 m apart along x: one keyframe per tile
CONFIG = CompileConfig(border_pad=1.0)
# Header entries that say when and how long, not what: they differ between two builds.
VOLATILE = {"created_utc", "network_seconds", "device"}


@pytest.fixture(scope="module")
def builds(synthetic, tmp_path_factory):  # noqa: F811
    root, sfm, model = synthetic
    out = tmp_path_factory.mktemp("tiled")
    fp = weights_fingerprint(model)
    one = compile_map(sfm, root / "images", model, out / "one.pxmap", fp, config=CONFIG, progress=False)
    tiled = compile_tiled_map(sfm, root / "images", model, out / "tiles", fp, TILE, config=CONFIG, progress=False)
    return one, tiled, out


def tile_arrays(path):
    m = open_map(path)
    m.verify()
    arrays = {name: np.array(getattr(m, name)) for name in m._table}
    info = {k: v for k, v in m.header.compile_info.items() if k not in VOLATILE}
    return arrays, {**m.header.to_json(), "compile_info": info}


def test_tiles_hold_the_one_file_maps_features(synthetic, builds):  # noqa: F811
    _, sfm, _ = synthetic
    one, tiled, _ = builds
    assert tiled.summary.num_tiles == 4 and tiled.tiles_built == 4 and tiled.tiles_reused == 0
    m = open_map(one.path)
    t = open_tiled_map(tiled.summary.folder, m.weights_fingerprint)
    assert t.index.num_keyframes == m.num_keyframes == tiled.keyframes_built
    assert tiled.num_dropped_observations == one.num_dropped_observations
    assert t.num_observations == m.num_observations
    assert t.index.header.cameras == m.header.cameras
    row = {int(k): i for i, k in enumerate(m.keyframe_ids)}
    for entry in t.entries:
        tile = t.open_tile(entry.key)
        for local, kid in enumerate(tile.keyframe_ids):
            a, b = tile.keyframe_observations(local), m.keyframe_observations(row[int(kid)])
            for x, y in zip(a.arrays()[1:], b.arrays()[1:]):
                assert np.array_equal(x, y)
            assert np.array_equal(tile.point_ids[a.point_index], m.point_ids[b.point_index])
            assert np.array_equal(tile.point_xyz[a.point_index], m.point_xyz[b.point_index])
            for name in ("keyframe_R", "keyframe_t", "keyframe_image_size", "keyframe_camera_index"):
                assert np.array_equal(getattr(tile, name)[local], getattr(m, name)[row[int(kid)]])
    # and retrieval over the tiles answers as over the file
    ref, index = MapIndex.open(one.path), TiledMapIndex.open(tiled.summary.folder, start_loader=False)
    for i in range(ref.num_keyframes):
        T = ref.keyframe_cam_from_world[i]
        index.retrieve(T)
        index.loader.wait_idle()
        a, b = index.retrieve(T, num_keyframes=2), ref.retrieve(T, num_keyframes=2)
        assert a.keyframe_ids.tolist() == b.keyframe_ids.tolist() and len(a.points) == len(b.points) > 0
        assert np.array_equal(a.points.features[1].numpy(), b.points.features[1].numpy())


def test_a_finished_tile_is_not_recomputed(synthetic, builds, tmp_path):  # noqa: F811
    import shutil
    root, sfm, model = synthetic
    _, tiled, _ = builds
    folder = tmp_path / "tiles"
    shutil.copytree(tiled.summary.folder, folder)
    files = {e.key: folder / e.file for e in open_tiled_map(folder).entries}
    keys = sorted(files)
    before = {k: (f.stat().st_mtime_ns, f.stat().st_ino) for k, f in files.items()}
    reference = {k: tile_arrays(f) for k, f in files.items()}
    files[keys[1]].unlink()  # interrupted before this tile
    with open(files[keys[2]], "r+b") as f:  # a damaged tile is rebuilt too
        f.truncate(files[keys[2]].stat().st_size - 10)
    fp = weights_fingerprint(model)
    again = compile_tiled_map(sfm, root / "images", model, folder, fp, TILE, config=CONFIG, progress=False)
    assert again.tiles_built == 2 and again.tiles_reused == 2 and again.keyframes_built == 2
    for k in (keys[0], keys[3]):
        assert (files[k].stat().st_mtime_ns, files[k].stat().st_ino) == before[k]  # untouched
    for k in keys:
        arrays, header = tile_arrays(files[k])
        ref_arrays, ref_header = reference[k]
        assert header == ref_header and all(np.array_equal(arrays[n], ref_arrays[n]) for n in ref_arrays)
    TiledMapIndex.open(folder, verify=True, start_loader=False).close()
    # other options: every tile is recomputed
    other = compile_tiled_map(sfm, root / "images", model, folder, fp, TILE,
                              config=CompileConfig(border_pad=1.0, sample_at="keypoint"), progress=False)
    assert other.tiles_built == 4 and other.tiles_reused == 0
    # a coarser grid (x < 0 and x >= 0): files of tiles that no longer exist are removed
    coarse = compile_tiled_map(sfm, root / "images", model, folder, fp, 10.0, config=CONFIG, progress=False)
    assert coarse.summary.num_tiles == 2 and coarse.tiles_built == 2
    assert coarse.removed_files == [tile_file_name((1, 0))[6:], tile_file_name((-2, 0))[6:]]
    assert sorted(p.name for p in (folder / "tiles").iterdir()) == sorted(
        tile_file_name(k)[6:] for k in [(-1, 0), (0, 0)])


def test_build_map_command_writes_tiles_and_a_summary(synthetic, tmp_path):  # noqa: F811
    root, sfm, model = synthetic
    from pixloc_ros.cli import main
    from pixloc_ros.core.maps.colmap_io import write_model

    weights = tmp_path / "w.safetensors"
    save_weights(model, weights)
    write_model(sfm, tmp_path / "sfm")
    argv = ["build-map", "--colmap", str(tmp_path / "sfm"), "--images", str(root / "images"), "--weights",
            str(weights), "--out", str(tmp_path / "city"), "--tile-size", str(TILE), "--border-pad", "1",
            "--quiet", "--verify"]
    code = subprocess.run([sys.executable, "-c", "import sys; from pixloc_ros.cli import main; rc = main(sys.argv[1:]);"
                           " print('RAY_IMPORTED' if 'ray' in sys.modules else 'NO_RAY'); sys.exit(rc)", *argv],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert code.returncode == 0, code.stderr
    out = code.stdout
    assert "4 tiles of 0.3 m (4 built, 0 reused" in out and "single process" in out
    assert "NO_RAY" in out  # without --ray nothing of Ray is imported
    assert (tmp_path / "city" / INDEX_NAME).is_file()
    assert main(argv) == 0  # again: everything reused


def test_build_map_ray_options_need_tiles(capsys, tmp_path):
    from pixloc_ros.cli import main
    code = main(["build-map", "--colmap", str(tmp_path), "--images", str(tmp_path), "--weights", "w", "--out",
                 str(tmp_path / "m.pxmap"), "--ray"])
    assert code == 1 and "--tile-size" in capsys.readouterr().err


def test_ray_built_tiles_equal_single_process_tiles(synthetic, builds, tmp_path):  # noqa: F811
    pytest.importorskip("ray")
    from pixloc_ros.core.maps.compile_ray import RayOptions
    root, sfm, model = synthetic
    _, single, _ = builds
    weights = tmp_path / "w.safetensors"
    save_weights(model, weights)
    fp = weights_fingerprint(model)
    stats = compile_tiled_map(sfm, root / "images", model, tmp_path / "ray_tiles", fp, TILE, config=CONFIG,
                              progress=False, ray=RayOptions(workers=2, device="cpu"), weights_path=weights)
    assert stats.engine == "ray: 2 workers" and stats.tiles_built == 4 and stats.startup_seconds > 0
    for entry in open_tiled_map(single.summary.folder).entries:
        a, ha = tile_arrays(single.summary.folder / entry.file)
        b, hb = tile_arrays(tmp_path / "ray_tiles" / entry.file)
        assert ha == hb
        for name in a:
            assert np.array_equal(a[name], b[name]), name
    ia, ib = (open_map(f / INDEX_NAME).header.compile_info["tiled_map"] for f in (single.summary.folder,
                                                                                  tmp_path / "ray_tiles"))
    for entry in ia["tiles"] + ib["tiles"]:
        entry.pop("file_size")  # the tile headers' timings differ in length
    assert ia == ib
