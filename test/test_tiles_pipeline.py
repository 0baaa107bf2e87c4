"""The per-frame pipeline on a tiled map: same decisions and poses as on the one-file map."""
import numpy as np

from pixloc_ros.core.engine.checkpoint import load_weights
from pixloc_ros.core.engine.localizer import Localizer
from pixloc_ros.core.maps.mapfile import open_map
from pixloc_ros.core.tracking.pipeline import RelocalizationPipeline, load_pipeline
from pixloc_ros.core.maps.retrieval import MapIndex
from pixloc_ros.core.maps.tile_loader import TileLoaderConfig
from pixloc_ros.core.maps.tiled_index import TiledMapIndex
from pixloc_ros.core.maps.tiles import split_map
from pixloc_ros.data.evaluation.offline import evaluate_drive


def test_a_drive_on_tiles_gives_the_poses_of_the_one_file_map(synth_map, tmp_path):
    reference = MapIndex.open(synth_map.map_file)
    extent = np.ptp(reference.keyframe_centers[:, :2], axis=0).max()
    summary = split_map(open_map(synth_map.map_file), tmp_path / "tiles", tile_size_m=extent / 3)
    assert summary.num_tiles >= 3
    one = load_pipeline(str(synth_map.map_file), str(synth_map.weights), "cpu")
    on_tiles = load_pipeline(str(tmp_path / "tiles"), str(synth_map.weights), "cpu",
                             tile_loader_config=TileLoaderConfig(load_radius_m=40.0, max_loaded_tiles=2))
    assert type(on_tiles.index) is TiledMapIndex  # loading as the node's tile parameters say
    assert (on_tiles.index.loader.config.load_radius_m, on_tiles.index.loader.config.max_loaded_tiles) == (40.0, 2)
    on_tiles.index.close()
    index = TiledMapIndex.open(tmp_path / "tiles", expected_fingerprint=reference.weights_fingerprint)
    # The same settings as the one-file pipeline, its covariance calibration included (the books
    # fuse results with the calibrated covariance: without it the next frame starts elsewhere).
    tiled = RelocalizationPipeline(Localizer(load_weights(synth_map.weights, "cpu")), index, one.config,
                                   one.calibration)
    process = tiled.process

    def process_after_loading(frame):  # the background thread has a frame period to load what was asked
        assert index.loader.wait_idle(timeout_s=60)
        return process(frame)

    tiled.process = process_after_loading
    bag = synth_map.data / "queries" / "overcast"
    a, b = [], []
    evaluate_drive(one, bag, max_frames=8, on_frame=lambda out, _: a.append(out))
    evaluate_drive(tiled, bag, max_frames=8, on_frame=lambda out, _: b.append(out))
    assert len(a) == len(b) >= 5  # the test drives are short
    tiles_used = set()
    for x, y in zip(a, b):
        assert (x.state, x.success, x.reason) == (y.state, y.success, y.reason)
        assert x.keyframe_ids == y.keyframe_ids
        if x.result is not None:
            np.testing.assert_array_equal(x.points_xyz, y.points_xyz)
            np.testing.assert_allclose(x.result.cam_from_world.to_4x4_numpy(), y.result.cam_from_world.to_4x4_numpy(),
                                       atol=1e-9)
        rows = np.flatnonzero(np.isin(index.keyframe_ids, y.keyframe_ids))
        tiles_used |= {int(t) for t in index.tiled.keyframe_tile[rows]}
    assert len(tiles_used) >= 2  # the drive used keyframes of more than one tile
    assert any(o.success or o.reason.startswith("relocalization_candidate") for o in b)
    index.close()
