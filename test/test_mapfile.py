"""The compiled map file: round trip, lazy integrity checks, weights and version refusal."""
import json
import struct

import numpy as np
import pytest

from pixloc_ros.core.geometry.georef import Georeference
from pixloc_ros.core.maps.mapfile_format import (FORMAT_VERSION, PREAMBLE, LevelInfo, MapCamera,
    MapCorruptedError, MapFileError, MapHeader, MapVersionError, Observations, WeightsMismatchError,
    observation_arrays)
from pixloc_ros.core.maps.mapfile_writer import MapWriter, contents_from_observations, write_map
from pixloc_ros.core.maps.mapfile import open_map

LEVELS = [LevelInfo(1, 8), LevelInfo(4, 16), LevelInfo(16, 16)]
FINGERPRINT = "ab" * 32


def random_contents(seed=0, num_kf=5, num_points=40, obs_per_kf=(0, 12, 7, 20, 3), georef=True):
    """A small random map; keyframe 0 deliberately has no observations."""
    rng = np.random.default_rng(seed)
    obs_kf = np.concatenate([np.full(n, k) for k, n in enumerate(obs_per_kf[:num_kf])])
    rng.shuffle(obs_kf)  # the writer groups them
    m = len(obs_kf)
    feats = [rng.normal(size=(m, l.dim)).astype(np.float16) for l in LEVELS]
    header = MapHeader(FINGERPRINT, "vgg16", LEVELS,
                       [MapCamera(1, "SIMPLE_PINHOLE", 640, 480, (500.0, 320.0, 240.0))],
                       [f"kf{k:03d}.png" for k in range(num_kf)],
                       Georeference(47.3, 8.5, 400.0, 30.0) if georef else None,
                       {"note": "test"})
    R = np.stack([np.eye(3)] * num_kf)
    kf_arrays = {"keyframe_ids": np.arange(num_kf) + 10, "keyframe_camera_index": np.zeros(num_kf),
                 "keyframe_R": R, "keyframe_t": rng.normal(size=(num_kf, 3)),
                 "keyframe_image_size": np.tile([640, 480], (num_kf, 1))}
    pt_arrays = {"point_ids": np.arange(num_points) * 3 + 1, "point_xyz": rng.normal(size=(num_points, 3)),
                 "point_track_length": rng.integers(2, 8, num_points)}
    contents = contents_from_observations(header, kf_arrays, pt_arrays, obs_kf, rng.integers(0, num_points, m),
                                          feats, rng.uniform(0, 1, (m, 3)), rng.uniform(0, 600, (m, 2)))
    return contents, obs_kf


def empty_observations(n):
    return Observations(np.zeros(n, np.int32), np.zeros((n, 2), np.float32), np.zeros((n, 3), np.float16),
                        [np.zeros((n, l.dim), np.float16) for l in LEVELS])


@pytest.fixture
def map_path(tmp_path):
    contents, _ = random_contents()
    return write_map(tmp_path / "test.pxmap", contents), contents


def test_round_trip(map_path):
    path, contents = map_path
    m = open_map(path, expected_fingerprint=FINGERPRINT)
    assert m.header.weights_fingerprint == FINGERPRINT
    assert m.header.levels == LEVELS and m.header.encoder == "vgg16"
    assert m.header.georef == contents.header.georef
    assert m.header.cameras == contents.header.cameras
    assert m.header.keyframe_names == contents.header.keyframe_names
    assert m.header.compile_info == {"note": "test"}
    for name, arr in {**contents.keyframe_arrays, **contents.point_arrays}.items():
        np.testing.assert_array_equal(getattr(m, name), arr)
    assert m.num_keyframes == 5 and m.num_points == 40 and m.num_observations == 42
    for k, block in enumerate(contents.observations):
        obs = m.keyframe_observations(k)
        assert len(obs) == len(block)
        for got, expected in zip(obs.arrays(), block.arrays()):
            assert got.dtype == expected.dtype and got.shape == expected.shape
            np.testing.assert_array_equal(got, expected)
    assert m.fully_verified
    assert not [p for p in path.parent.iterdir() if p != path]  # no partial file or spool left


def test_observations_grouped_by_keyframe_in_order():
    contents, obs_kf = random_contents(seed=3)
    for k, block in enumerate(contents.observations):
        assert len(block) == int((obs_kf == k).sum())


def test_arrays_are_memory_mapped_and_read_only(map_path):
    path, _ = map_path
    m = open_map(path)
    assert not m.point_xyz.flags.writeable
    assert not m.obs_feature_1.flags.writeable
    assert not m.keyframe_observations(1).features[0].flags.writeable
    # a view into the mapping, not a copy: its base chain ends at the mmap
    base = m.point_xyz
    while isinstance(base, np.ndarray) and base.base is not None:
        base = base.base
    assert not isinstance(base, np.ndarray)


def test_no_georeference_round_trip(tmp_path):
    contents, _ = random_contents(georef=False)
    m = open_map(write_map(tmp_path / "a.pxmap", contents))
    assert m.header.georef is None


def test_weights_mismatch_refused_with_both_fingerprints(map_path):
    path, _ = map_path
    other = "cd" * 32
    with pytest.raises(WeightsMismatchError) as err:
        open_map(path, expected_fingerprint=other)
    msg = str(err.value)
    assert FINGERPRINT in msg and other in msg and "build-map" in msg and "--weights" in msg


@pytest.mark.parametrize("keep_fraction", [0.0, 0.01, 0.3, 0.9, 0.999])
def test_truncated_file_detected_on_open(map_path, keep_fraction):
    path, _ = map_path
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep_fraction)])
    with pytest.raises(MapCorruptedError):
        open_map(path)


def test_trailing_bytes_detected(map_path):
    path, _ = map_path
    path.write_bytes(path.read_bytes() + b"\0" * 10)
    with pytest.raises(MapCorruptedError, match="trailing"):
        open_map(path)


def _flip(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


def _table(path):
    m = open_map(path)
    table = m._table
    return table, m


def test_flipped_byte_in_header_detected(map_path):
    path, _ = map_path
    _, _, _, header_offset, header_len, _ = PREAMBLE.unpack(path.read_bytes()[:PREAMBLE.size])
    _flip(path, header_offset + header_len // 2)
    with pytest.raises(MapCorruptedError, match="header"):
        open_map(path)


@pytest.mark.parametrize("name", ["point_xyz", "keyframe_R", "keyframe_obs_offsets", "keyframe_obs_crc32"])
def test_flipped_byte_in_small_array_detected_on_open(map_path, name):
    path, _ = map_path
    table, m = _table(path)
    offset = table[name]["offset"] + table[name]["nbytes"] // 2
    del m
    _flip(path, offset)
    with pytest.raises(MapCorruptedError, match=name):
        open_map(path)


@pytest.mark.parametrize("name", list(observation_arrays(LEVELS)))
def test_flipped_byte_in_observations_detected_on_first_touch(map_path, name):
    path, contents = map_path
    table, m = _table(path)
    offsets = m.keyframe_obs_offsets.copy()
    row_bytes = table[name]["nbytes"] // table[name]["shape"][0]
    del m
    bad_kf = 3
    _flip(path, table[name]["offset"] + int(offsets[bad_kf] + 2) * row_bytes + row_bytes // 2)
    m = open_map(path)  # opening stays cheap: observations are checked lazily
    for k in (0, 1, 2, 4):
        for got, expected in zip(m.keyframe_observations(k).arrays(), contents.observations[k].arrays()):
            np.testing.assert_array_equal(got, expected)
    with pytest.raises(MapCorruptedError, match="kf003"):
        m.keyframe_observations(bad_kf)
    with pytest.raises(MapCorruptedError):  # and never becomes readable later
        m.keyframe_observations(bad_kf)
    with pytest.raises(MapCorruptedError):
        open_map(path).verify()
    with pytest.raises(MapCorruptedError):
        open_map(path, verify=True)


def test_version_mismatch(map_path):
    path, _ = map_path
    data = bytearray(path.read_bytes())
    struct.pack_into("<I", data, 8, FORMAT_VERSION + 1)
    path.write_bytes(bytes(data))
    with pytest.raises(MapVersionError, match=f"version {FORMAT_VERSION + 1}.*reads version {FORMAT_VERSION}"):
        open_map(path)


def test_older_version_written_by_header_refused(tmp_path):
    contents, _ = random_contents()
    contents.header.format_version = 0
    path = write_map(tmp_path / "old.pxmap", contents)
    with pytest.raises(MapVersionError, match="rebuild"):
        open_map(path)


def test_not_a_map(tmp_path):
    path = tmp_path / "x.pxmap"
    path.write_bytes(b"PK\x03\x04" + b"\1" * 200)
    with pytest.raises(MapFileError, match="not a pixloc_ros map"):
        open_map(path)
    with pytest.raises(FileNotFoundError):
        open_map(tmp_path / "missing.pxmap")


def test_interrupted_write_leaves_no_file(tmp_path):
    path = tmp_path / "m.pxmap"
    with pytest.raises(RuntimeError):
        with MapWriter(path, LEVELS) as writer:
            writer.add_keyframe_observations(empty_observations(4))
            raise RuntimeError("compile failed")
    assert not path.exists() and not list(tmp_path.iterdir())


def test_writer_rejects_wrong_rows_and_arrays(tmp_path):
    contents, _ = random_contents()
    with MapWriter(tmp_path / "m.pxmap", LEVELS) as writer:
        bad = empty_observations(3)
        bad.features[1] = np.zeros((3, 8), np.float16)
        with pytest.raises(ValueError, match="obs_feature_1"):
            writer.add_keyframe_observations(bad)
        for block in contents.observations:
            writer.add_keyframe_observations(block)
        bad = dict(contents.point_arrays, point_xyz=np.zeros((40, 2)))
        with pytest.raises(ValueError, match="point_xyz"):
            writer.finish(contents.header, contents.keyframe_arrays, bad)


def test_header_is_json_without_python_objects(map_path):
    path, _ = map_path
    _, _, _, header_offset, header_len, _ = PREAMBLE.unpack(path.read_bytes()[:PREAMBLE.size])
    header = json.loads(path.read_bytes()[header_offset:header_offset + header_len])
    assert header["counts"] == {"keyframes": 5, "points": 40, "observations": 42}
    assert all(entry["offset"] % 64 == 0 for entry in header["arrays"].values())


def _rewrite_header(path, mutate):
    """Edit the JSON header and re-sign it (a well-formed file with other content)."""
    data = path.read_bytes()
    magic, version, flags, offset, length, _ = PREAMBLE.unpack(data[:PREAMBLE.size])
    header = json.loads(data[offset:offset + length])
    mutate(header)
    new = json.dumps(header).encode()
    import hashlib
    preamble = PREAMBLE.pack(magic, version, flags, offset, len(new), hashlib.sha256(new).digest())
    path.write_bytes(preamble + data[PREAMBLE.size:offset] + new)


def test_header_cannot_request_other_dtypes_or_arrays(map_path):
    path, _ = map_path
    _rewrite_header(path, lambda h: h["arrays"]["point_ids"].update(dtype="|O"))
    with pytest.raises(MapFileError, match="point_ids has dtype"):
        open_map(path)


def test_header_with_unknown_arrays_refused(map_path):
    path, _ = map_path
    _rewrite_header(path, lambda h: h["arrays"].update(extra=dict(h["arrays"]["point_ids"])))
    with pytest.raises(MapFileError, match="not those of format version"):
        open_map(path)


def test_header_with_array_outside_the_file_refused(map_path):
    path, _ = map_path
    _rewrite_header(path, lambda h: h["arrays"]["obs_feature_2"].update(offset=h["arrays"]["obs_feature_2"]["offset"] + 10**9))
    with pytest.raises(MapCorruptedError, match="does not fit"):
        open_map(path)


def test_verify_by_reading_checks_what_verify_checks(map_path):
    path, contents = map_path
    m = open_map(path)
    m.verify_by_reading()
    assert m.fully_verified
    for k, expected in enumerate(contents.observations):  # the checked blocks read as written
        for got, want in zip(m.keyframe_observations(k).arrays(), expected.arrays()):
            np.testing.assert_array_equal(got, want)
    table, m = _table(path)
    offsets = m.keyframe_obs_offsets.copy()
    row_bytes = table["obs_feature_2"]["nbytes"] // table["obs_feature_2"]["shape"][0]
    del m
    _flip(path, table["obs_feature_2"]["offset"] + int(offsets[3] + 1) * row_bytes + 1)  # keyframe 3
    damaged = open_map(path)
    with pytest.raises(MapCorruptedError, match="kf003"):
        damaged.verify_by_reading()
    assert damaged._verified[:3].all() and not damaged._verified[3]
