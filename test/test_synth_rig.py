"""``synth`` with a camera rig (issue 30): every camera's images on its own topics, /tf_static with
every mount, world.json's rig section, and each camera's picture is the world seen from its mount
at the recorded ground truth."""
import json

import numpy as np
import pytest

from pixloc_ros.core.geometry.transforms import invert_transform
from pixloc_ros.data import bags
from pixloc_ros.data.sim.dataset import load_dataset
from pixloc_ros.data.sim.drive import base_from_camera
from pixloc_ros.data.sim.render import render
from pixloc_ros.data.sim.rig import parse_rig, rig_mounts


def test_rig_mounts_put_the_forward_camera_first_and_turn_the_others():
    front, left, right = rig_mounts()
    assert np.array_equal(front.base_from_cam, base_from_camera())  # the single-camera extrinsic
    assert left.base_from_cam[1, 2] > 0.99 and right.base_from_cam[1, 2] < -0.99  # optical z to +y / -y
    assert left.topics.image == "/left/image_raw" and right.frame_id == "right_camera_optical_frame"
    assert parse_rig(" front, rear ") == ("front", "rear")
    with pytest.raises(ValueError, match="unknown rig cameras \\['top'\\]"):
        parse_rig("front,top")
    with pytest.raises(ValueError, match="repeat"):
        parse_rig("left,left")


def test_rig_bag_records_every_camera_with_its_extrinsic(synth_rig):
    info = json.loads((synth_rig / "world.json").read_text())
    rig = info["rig"]
    assert [c["name"] for c in rig] == ["front", "left", "right"]
    data = load_dataset(synth_rig)
    stamps = None
    for cam in rig:
        drive = bags.read_drive(synth_rig / "queries" / "snow",
                                bags.DriveTopics(image=cam["image_topic"], camera_info=cam["camera_info_topic"]))
        assert len(drive.frames) == info["queries"]["snow"]["frames"] >= 4
        assert all(f.frame_id == cam["frame_id"] and f.camera_info.frame_id == cam["frame_id"] for f in drive.frames)
        np.testing.assert_allclose(drive.base_from_camera(), np.array(cam["base_from_cam"]), atol=1e-9)
        if stamps is None:
            stamps = [f.stamp_ns for f in drive.frames]
        assert [f.stamp_ns for f in drive.frames] == stamps == [g.stamp_ns for g in drive.ground_truth]
        # The picture is the world from this camera's mount at the ground truth (the noise seed
        # differs per camera, so compare against a noiseless render loosely and against a shifted pose).
        k = len(drive.frames) - 1
        world_from_cam = drive.ground_truth[k].matrix @ np.array(cam["base_from_cam"])
        clean, _ = render(data.world, "snow", data.camera, invert_transform(world_from_cam))
        diff = np.abs(clean.astype(int) - drive.frames[k].image.astype(int)).mean()
        shifted = world_from_cam.copy()
        shifted[:3, 3] += world_from_cam[:3, 0] * 0.5  # half a metre to the camera's right
        off, _ = render(data.world, "snow", data.camera, invert_transform(shifted))
        assert diff < 3 and np.abs(off.astype(int) - drive.frames[k].image.astype(int)).mean() > 3 * diff, cam["name"]
    # The cameras see different things (not one image three times).
    fronts = bags.read_drive(synth_rig / "queries" / "snow", bags.DriveTopics(image="/front/image_raw",
                                                                             camera_info="/front/camera_info"))
    lefts = bags.read_drive(synth_rig / "queries" / "snow", bags.DriveTopics(image="/left/image_raw",
                                                                            camera_info="/left/camera_info"))
    assert np.abs(fronts.frames[0].image.astype(int) - lefts.frames[0].image.astype(int)).mean() > 10


def test_cli_rejects_an_unknown_rig_camera_before_generating_anything(tmp_path):
    from pixloc_ros.cli import main

    with pytest.raises(SystemExit, match="--rig: unknown rig cameras \\['top'\\]"):
        main(["synth", "--out", str(tmp_path / "out"), "--rig", "front,top"])
    assert not (tmp_path / "out").exists()


def test_rig_map_holds_every_camera_and_each_camera_retrieves_its_own_views(synth_rig_map):
    """Maps from rigs: the SfM model and the compiled map hold keyframes of every camera, and
    retrieval at each camera's pose on the rig (the first query frame's ground truth) finds that
    camera's keyframes and points."""
    from pixloc_ros.core.geometry.camera import Camera
    from pixloc_ros.core.maps.colmap_io import read_model
    from pixloc_ros.core.maps.open_index import open_map_index

    data_dir = synth_rig_map.data
    prefixes = {"front": "front_", "left": "left_", "right": "right_"}
    observed = {name: 0 for name in prefixes}  # observations of triangulated points per camera
    for im in read_model(data_dir / "sfm").images.values():
        cam = next(n for n, p in prefixes.items() if im.name.startswith(p))
        observed[cam] += int((np.asarray(im.point3D_ids) >= 0).sum())
    assert all(v > 300 for v in observed.values()), observed
    index = open_map_index(synth_rig_map.map_file)
    info = json.loads((data_dir / "world.json").read_text())
    cam = load_dataset(data_dir).camera
    camera = Camera.from_params(cam.width, cam.height, cam.fx, cam.fy, cam.cx, cam.cy)
    gt = bags.read_drive(data_dir / "queries" / "snow", bags.DriveTopics(image="/front/image_raw",
                                                                        camera_info="/front/camera_info"),
                         load_images=False).ground_truth[0].matrix
    for mount in info["rig"]:
        r = index.retrieve(invert_transform(gt @ np.array(mount["base_from_cam"])), camera=camera)
        found = [index.keyframe_names[i] for i in r.keyframe_indices]
        assert found and all(n.startswith(prefixes[mount["name"]]) for n in found), (mount["name"], found)
        assert len(r.points) > 100, (mount["name"], len(r.points))
