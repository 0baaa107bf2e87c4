"""The pipeline on a rig drive (issue 30): a front/left/right rig recorded by ``synth --rig``,
mapped with every camera, replayed frame by frame (odometry and GNSS as the node feeds them) as
``RigFrameInput``s; a side camera drops out for a frame and comes back, the anchor drops out."""
import json

import numpy as np
import pytest

from pixloc_ros.core.geometry.camera import Camera
from pixloc_ros.core.geometry.metrics import pose_errors
from pixloc_ros.core.geometry.rig import Rig, RigCamera
from pixloc_ros.core.tracking.frames import FrameInput
from pixloc_ros.core.tracking.pipeline import load_pipeline
from pixloc_ros.core.tracking.rig_observe import RigFrameInput
from pixloc_ros.data import bags


def read_rig_drive(data):
    """(rig, {camera: Drive}) of the rig bag's one season."""
    info = json.loads((data / "world.json").read_text())
    drives, cameras = {}, []
    for mount in info["rig"]:
        d = bags.read_drive(data / "queries" / "snow", bags.DriveTopics(image=mount["image_topic"],
                                                                       camera_info=mount["camera_info_topic"]))
        ci = d.camera_info
        drives[mount["name"]] = d
        cameras.append(RigCamera(mount["name"], Camera.from_camera_info(ci.width, ci.height, ci.k, ci.d,
                                                                       ci.distortion_model), d.base_from_camera()))
    return Rig(cameras), drives


def run(weights, rig_map, rig, drives, present, extract_first=False):
    """One pipeline over the drive, started from the operator's initial pose at the first frame's
    ground truth (tracking from there: odometry, hypotheses, gating as the node runs them);
    ``present(k)``: the cameras of frame k; extract_first: the network stage apart
    (``process(frame, extract(frame))``, as the overlapped worker runs it).
    -> [(output, map_from_base truth, cameras)]."""
    p = load_pipeline(str(rig_map.map_file), str(weights), "cpu")
    front = drives[rig.names[0]]
    for o in front.odometry:
        p.add_odometry(o.stamp_ns, o.matrix)
    p.set_initial_pose(front.frames[0].stamp_ns - 1, front.ground_truth[0].matrix, is_2d=False)
    outs = []
    for k, f in enumerate(front.frames):
        sub = rig.subset(present(k))
        frame = FrameInput(f.stamp_ns, f.image, sub.cameras[0].camera, sub.cameras[0].base_from_camera) \
            if sub.names == ("front",) else RigFrameInput(f.stamp_ns, sub, [drives[n].frames[k].image for n in sub.names])
        out = p.process(frame, p.extract(frame)) if extract_first else p.process(frame)
        outs.append((out, front.ground_truth[k].matrix, sub.names))
    return outs


def errors(outs):
    """(metres, degrees) of every frame's estimate (the pose the decision was about)."""
    out = []
    for o, gt, _ in outs:
        assert o.estimate is not None, o.reason
        dt, dr = pose_errors(o.estimate.map_from_base[:3, :3], o.estimate.map_from_base[:3, 3], gt[:3, :3], gt[:3, 3])
        out.append((float(dt), float(dr)))
    return np.array(out)


@pytest.fixture(scope="module")
def rig_drive(synth_rig_map):
    return read_rig_drive(synth_rig_map.data)


def test_rig_drive_stays_on_the_truth_where_the_front_camera_alone_drifts(localizing_weights, synth_rig_map,
                                                                         rig_drive):
    """From the true first pose, every frame of the rig (one pose, three cameras' points) stays
    within centimetres; the front camera alone, on the same frames and map (the single-camera
    path, ``FrameInput``), drifts along the road on this short, point-poor map (shipped weights:
    0.07 -> 0.27 m over the four frames, the rig 0.05 m at most)."""
    rig, drives = rig_drive
    outs = run(localizing_weights, synth_rig_map, rig, drives, lambda k: rig.names)
    err = errors(outs)
    assert len(outs) >= 4 and (err[:, 0] < 0.15).all() and (err[:, 1] < 0.5).all(), err
    for out, _, _ in outs:  # every camera's points in the one LM: more rows than any one camera has
        assert out.result.success and len(out.points_xyz) == len(out.point_weights) > 500
    front = errors(run(localizing_weights, synth_rig_map, rig, drives, lambda k: ("front",)))
    print(f"\nrig errors (m, deg) {err.round(3).tolist()}\nfront alone {front.round(3).tolist()}")
    assert front[:, 0].max() > 3 * err[:, 0].max(), (front, err)


def published_within(outs, metres=0.15, degrees=0.5):
    """Every published pose (``map_from_base``) within the bounds of its frame's truth."""
    for k, (o, gt, names) in enumerate(outs):
        if o.success:
            dt, dr = pose_errors(o.map_from_base[:3, :3], o.map_from_base[:3, 3], gt[:3, :3], gt[:3, 3])
            assert dt < metres and dr < degrees, (k, names, dt, dr)


def test_rig_drive_carries_on_while_cameras_drop_out_and_rejoin(localizing_weights, synth_rig_map, rig_drive):
    """The right camera drops out at frame 1 and rejoins at frame 2; the front camera (the anchor)
    drops out at frame 3, and the side cameras carry the pose alone (the left one is the anchor
    then): every frame's estimate within centimetres, every one of them published from frame 1 on."""
    rig, drives = rig_drive
    plan = {1: ("front", "left"), 3: ("left", "right")}
    outs = run(localizing_weights, synth_rig_map, rig, drives, lambda k: plan.get(k, rig.names))
    err = errors(outs)
    print(f"\ncameras per frame {[names for _, _, names in outs]}\nerrors (m, deg) {err.round(3).tolist()}")
    assert [names for _, _, names in outs][:4] == [rig.names, plan[1], rig.names, plan[3]]
    assert (err[:, 0] < 0.15).all() and (err[:, 1] < 0.5).all(), err
    assert all(o.success for o, _, _ in outs[1:4]), [o.reason for o, _, _ in outs]
    published_within(outs)


def test_rig_drive_left_out_leaves_the_along_road_position_to_a_camera_that_mislocks(localizing_weights,
                                                                                  synth_rig_map, rig_drive):
    """The left camera drops out at frame 1 instead. With the shipped weights the right camera does
    not localize this snow drive on its own (alone it is metres off along the road by frame 1,
    where the left one alone stays within centimetres), and the front camera does not fix the
    along-road position (the first test): front + right put frame 1 about 0.2 m back along the road
    with an inlier ratio under the weights' fitted gate. What must hold: no pose worse than the
    bounds is published, the frame's estimate is not lost (the next frame's LM starts near it),
    and once the left camera rejoins (frame 2), and with the anchor out (frame 3), the estimates
    are back within centimetres and published again by frame 3."""
    rig, drives = rig_drive
    plan = {1: ("front", "right"), 3: ("left", "right")}
    outs = run(localizing_weights, synth_rig_map, rig, drives, lambda k: plan.get(k, rig.names))
    err = errors(outs)
    print(f"\ncameras per frame {[names for _, _, names in outs]}\nerrors (m, deg) {err.round(3).tolist()}"
          f"\n{[o.reason for o, _, _ in outs]}")
    assert [names for _, _, names in outs][:4] == [rig.names, plan[1], rig.names, plan[3]]
    published_within(outs)
    assert err[1, 0] < 1.0 and err[1, 1] < 5.0, err  # degraded, not a wrong lock (evaluate's 1 m / 5 deg)
    assert (err[[0, 2, 3], 0] < 0.15).all() and (err[[0, 2, 3], 1] < 0.5).all(), err
    assert outs[3][0].success, outs[3][0].reason


def test_rig_network_stage_apart_gives_the_same_poses(localizing_weights, synth_rig_map, rig_drive):
    """``extract`` of a rig instant (every camera's network) handed to ``process``: the same estimates
    as ``process`` alone, bit for bit; features of a rig with a single-camera frame are refused."""
    rig, drives = rig_drive
    plan = {1: ("front", "left"), 3: ("left", "right")}
    alone = run(localizing_weights, synth_rig_map, rig, drives, lambda k: plan.get(k, rig.names))
    apart = run(localizing_weights, synth_rig_map, rig, drives, lambda k: plan.get(k, rig.names), extract_first=True)
    for (a, _, _), (b, _, _) in zip(alone, apart):
        assert a.why == b.why and np.array_equal(a.estimate.map_from_base, b.estimate.map_from_base)
        assert b.timings.network_s > 0
    p = load_pipeline(str(synth_rig_map.map_file), str(localizing_weights), "cpu")
    f = drives["front"].frames[0]
    instant = RigFrameInput(f.stamp_ns, rig, [drives[n].frames[0].image for n in rig.names])
    single = FrameInput(f.stamp_ns, f.image, rig.cameras[0].camera, rig.cameras[0].base_from_camera)
    with pytest.raises(ValueError, match="features of a rig"):
        p.process(single, p.extract(instant))
    with pytest.raises(ValueError, match="features of a single camera"):
        p.process(instant, p.extract(single))
    with pytest.raises(ValueError, match="features of 3 cameras handed with a rig instant of 2"):
        sub = rig.subset(("front", "left"))
        p.process(RigFrameInput(f.stamp_ns, sub, instant.images_rgb[:2]), p.extract(instant))


def test_keyframe_seeds_become_anchor_poses_of_the_camera_that_took_them():
    from pixloc_ros.core.geometry.transforms import make_transform, rot_z
    from pixloc_ros.core.tracking.rig_observe import anchor_seeds, keyframe_camera
    from pixloc_ros.core.tracking.seeds import Seed, SeedKind

    assert keyframe_camera("left_00012.png", ("front", "left")) == "left"
    assert keyframe_camera("rear/1418.jpg", ("rear",)) == "rear"
    assert keyframe_camera("00012.png", ("front",)) is None and keyframe_camera("left", ("left",)) is None
    optical = np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0]], float)
    cam = Camera.from_params(320, 240, 250.0, 250.0, 159.5, 119.5)
    rig = Rig([RigCamera("front", cam, make_transform(optical, (1.2, 0, 1.5))),
               RigCamera("left", cam, make_transform(rot_z(np.pi / 2) @ optical, (0.9, 0.6, 1.5)))])
    map_from_base = make_transform(rot_z(0.3), (10.0, 5.0, 0.0))
    map_from_left = map_from_base @ rig.cameras[1].base_from_camera  # a keyframe the left camera took here
    seeds = [Seed(map_from_left, SeedKind.KEYFRAME, 0), Seed(map_from_left, SeedKind.KEYFRAME, 1),
             Seed(np.eye(4), SeedKind.INITIAL_POSE)]
    out = anchor_seeds(seeds, rig, ["left_00000.png", "rear_00000.png"])
    assert [s.kind for s in out] == [SeedKind.KEYFRAME, SeedKind.INITIAL_POSE]  # the rear keyframe: no such camera
    np.testing.assert_allclose(out[0].map_from_cam, map_from_base @ rig.cameras[0].base_from_camera, atol=1e-12)
    # The front and left keyframes of one place are one anchor pose: tried once; the next place's
    # is kept, as far as max_seeds allows; a GNSS seed keeps its fix's stamp.
    elsewhere = make_transform(rot_z(0.3), (12.0, 5.0, 0.0))
    kf = [map_from_left, map_from_base @ rig.cameras[0].base_from_camera, elsewhere @ rig.cameras[0].base_from_camera]
    seeds = [Seed(T, SeedKind.KEYFRAME, k, prior_stamp_ns=7) for k, T in enumerate(kf)]
    names = ["left_00000.png", "front_00000.png", "front_00001.png"]
    out = anchor_seeds(seeds, rig, names)
    assert [s.keyframe for s in out] == [0, 2] and all(s.prior_stamp_ns == 7 for s in out)
    assert [s.keyframe for s in anchor_seeds(seeds, rig, names, max_seeds=1)] == [0]


def test_rig_frames_of_a_bag_group_by_stamp_and_a_missing_frame_leaves_one_group(synth_rig):
    import dataclasses

    from pixloc_ros.data.evaluation.rig_replay import group_rig_frames, read_rig_drive as read_bag

    rig, drives = read_bag(synth_rig / "queries" / "snow", ["front", "left", "right"])
    assert rig.names == ("front", "left", "right") and rig.anchor == 0
    n = len(drives["front"].frames)
    groups = group_rig_frames(rig, drives, 10_000_000)
    assert len(groups) == n and all(g.missing == () for g in groups)
    drives["left"] = dataclasses.replace(drives["left"], frames=[f for k, f in enumerate(drives["left"].frames)
                                                                 if k != 1])
    groups = group_rig_frames(rig, drives, 10_000_000)
    assert [g.missing for g in groups] == [()] + [("left",)] + [()] * (n - 2)
    with pytest.raises(ValueError, match="rig camera 'rear': no images"):
        read_bag(synth_rig / "queries" / "snow", ["front", "rear"])


def test_evaluate_command_replays_a_rig_bag(localizing_weights, synth_rig_map, tmp_path):
    """``pixloc-ros evaluate --rig``: the rig bag through the node's pipeline, frame records as for
    one camera, every instant running one LM over all three cameras' points."""
    from pixloc_ros.cli import main

    report = tmp_path / "rig.json"
    assert main(["evaluate", "--map", str(synth_rig_map.map_file), "--bag", str(synth_rig_map.data / "queries" / "snow"),
                 "--weights", str(localizing_weights), "--rig", "front,left,right", "--json", str(report),
                 "--quiet"]) == 0
    per_frame = json.loads(report.read_text())["per_frame"]
    assert len(per_frame) == len(read_rig_drive(synth_rig_map.data)[1]["front"].frames)
    assert all(r["num_points"] > 0 and r["gt_map_from_base"] is not None for r in per_frame), per_frame
    # From the GNSS fixes alone (1 Hz, the car drives 3.3 m between frames): the keyframes near a
    # fix are moved with the odometry from the fix's stamp to the frame's, and the GNSS gate
    # compares each pose where it was at the fix. Before, every seed lay up to 9 m behind the car,
    # the rig locked a minimum 3.1 m back along the road and published it twice, and the true pose,
    # found by a probe, was refused as "10.0 m from the fix".
    published = [(r["translation_error_m"], r["rotation_error_deg"]) for r in per_frame if r["success"]]
    print(f"\npublished (m, deg) {published}; {[r['reason'] for r in per_frame]}")
    assert len(published) >= len(per_frame) - 1, [r["reason"] for r in per_frame]
    assert all(dt < 0.15 and dr < 0.5 for dt, dr in published), published
    assert main(["evaluate", "--map", str(synth_rig_map.map_file), "--bag", str(synth_rig_map.data / "queries" / "snow"),
                 "--weights", str(localizing_weights), "--rig", "front,top", "--quiet"]) == 1
    # A rig of the left camera alone: the keyframes near the GNSS fix may all be other cameras'; the
    # frame then has no seed and says why (it used to end the replay with an AttributeError).
    assert main(["evaluate", "--map", str(synth_rig_map.map_file), "--bag", str(synth_rig_map.data / "queries" / "snow"),
                 "--weights", str(localizing_weights), "--rig", "left", "--json", str(report), "--quiet"]) == 0
    assert all(r["reason"] for r in json.loads(report.read_text())["per_frame"])


def test_calibrate_command_fits_a_rig_calibration_on_rig_drives(localizing_weights, synth_rig_map, tmp_path, capsys):
    """``pixloc-ros calibrate --rig``: rig drives replayed as ``evaluate --rig`` replays them (one
    pose from every camera), the fit written with the cameras it holds, and the pipeline loads it.
    (The tiny drive has 4 instants; a fit needs 12 frames, so it is given three times: a check of
    the mechanics, not a calibration to use; its inlier gates, from 4 distinct frames, are far too
    strict.)"""
    from pixloc_ros.cli import main
    from pixloc_ros.core.tracking.covariance_calibration import CovarianceCalibration, calibration_path_for

    bag, out = synth_rig_map.data / "queries" / "snow", tmp_path / "rig.covariance.json"
    drive = ["--drive", str(synth_rig_map.map_file), str(bag)]
    # Replayed with the weights' own calibration (its inlier gates), as the second pass of the
    # two-pass procedure: uncalibrated, the default 0.2 gate refuses most of these weights' frames.
    shipped = calibration_path_for(localizing_weights)
    if not shipped.exists():
        pytest.skip(f"no calibration next to {localizing_weights.name} to replay with")
    assert main(["calibrate", "--weights", str(localizing_weights), *drive * 3, "--rig", "front,left,right",
                 "--replay-calibration", str(shipped), "--out", str(out), "--quiet"]) == 0, capsys.readouterr().err
    calib = CovarianceCalibration.load(out)
    assert calib.fitted_on["rig"] == ["front", "left", "right"] and calib.fitted_on["samples"] >= 12
    assert load_pipeline(str(synth_rig_map.map_file), str(localizing_weights), "cpu", calibration=out).calibration == calib
    capsys.readouterr()
    assert main(["calibrate", "--weights", str(localizing_weights), *drive, "--rig", "front,top", "--quiet"]) == 1
    assert "rig camera 'top'" in capsys.readouterr().err
