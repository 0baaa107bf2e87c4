"""A rig's camera extrinsics through tf (issue 30): /tf_static over DDS (loopback, this module's
own domain) and the parameter form, both back to the same base_from_camera."""
import numpy as np
import pytest

pytest.importorskip("rclpy")
from pixloc_ros.core.geometry.camera import Camera  # noqa: E402
from pixloc_ros.core.geometry.rig import Rig, RigCamera, extrinsics_to_parameters  # noqa: E402
from pixloc_ros.core.geometry.transforms import make_transform, rot_x, rot_z  # noqa: E402
from pixloc_ros.ros.rig_tf import (camera_frame_map, extrinsics_from_tf, rig_extrinsics,  # noqa: E402
                                   rig_static_transforms)
from pixloc_ros.ros.tf import StaticTransformBroadcaster, StaticTransformGraph, StaticTransformLookup  # noqa: E402
from ros_testing import ros  # noqa: E402,F401 (ros: the fixture)

pytestmark = pytest.mark.ros
OPTICAL = np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0]], float)  # optical axes in a forward-looking camera link


def make_rig() -> Rig:
    cam = Camera.from_params(320, 240, 250.0, 250.0, 159.5, 119.5)
    mounts = [("front", 0.0, (1.6, 0.0, 1.4)), ("left", np.pi / 2, (1.0, 0.7, 1.5)),
              ("rear", np.pi + 0.05, (-0.4, 0.02, 1.3))]
    # a little pitch so no rotation is a plain axis permutation
    return Rig([RigCamera(n, cam, make_transform(rot_z(yaw) @ rot_x(0.03) @ OPTICAL, t)) for n, yaw, t in mounts])


FRAMES = {"front": "front_camera_optical_frame", "left": "left_camera_optical_frame",
          "rear": "rear_camera_optical_frame"}


def test_rig_extrinsics_round_trip_through_tf_static_over_dds(ros):
    """The rig goes out on /tf_static (the left camera as a URDF has it: base_link -> left_camera_link
    -> optical frame), a listener in another node looks every camera up, and gets the rig back."""
    rig = make_rig()
    listener_node = ros.node("rig_listener")
    lookup = StaticTransformLookup(listener_node)
    with pytest.raises(ValueError, match="front \\(front_camera_optical_frame\\).*rear"):
        extrinsics_from_tf(lookup, "base_link", FRAMES)  # nothing broadcast yet: every camera named

    transforms = rig_static_transforms(rig, "base_link", FRAMES, stamp_ns=5)
    left = rig.cameras[rig.index("left")].base_from_camera
    base_from_link = make_transform(rot_z(np.pi / 2), (1.0, 0.7, 1.5))
    chained = rig_static_transforms(Rig([RigCamera("link", rig.cameras[0].camera, base_from_link)]), "base_link",
                                    {"link": "left_camera_link"})
    link_to_optical = rig_static_transforms(
        Rig([RigCamera("left", rig.cameras[0].camera, np.linalg.inv(base_from_link) @ left)]), "left_camera_link",
        {"left": FRAMES["left"]})
    talker = ros.node("rig_talker")
    broadcaster = StaticTransformBroadcaster(talker)
    broadcaster.send([transforms[0], transforms[2]] + chained + link_to_optical)

    def complete():
        try:
            return extrinsics_from_tf(lookup, "base_link", FRAMES)
        except ValueError:
            return None

    assert ros.spin_until(lambda: complete() is not None, timeout=20), "the rig's transforms never arrived"
    got = rig_extrinsics("base_link", FRAMES, lookup)
    for rc in rig.cameras:
        np.testing.assert_allclose(got[rc.name], rc.base_from_camera, atol=1e-9)
    # The round trip closes: a Rig built from what came back places every camera where the original does.
    back = Rig([RigCamera(n, rig.cameras[0].camera, got[n]) for n in rig.names])
    for k in range(len(rig)):
        np.testing.assert_allclose(back.cam_from_anchor(k), rig.cam_from_anchor(k), atol=1e-9)


def test_parameters_win_over_tf_and_round_trip():
    rig = make_rig()
    graph = StaticTransformGraph()  # tf holds something else: the parameters must win
    for n in rig.names:
        graph.add("base_link", FRAMES[n], np.eye(4))
    got = rig_extrinsics("base_link", FRAMES, graph, extrinsics_to_parameters(rig))
    for rc in rig.cameras:
        np.testing.assert_allclose(got[rc.name], rc.base_from_camera, atol=1e-12)
    np.testing.assert_allclose(rig_extrinsics("base_link", FRAMES, graph, [])["left"], np.eye(4))
    with pytest.raises(ValueError, match="7 values"):
        rig_extrinsics("base_link", FRAMES, graph, [0.0] * 7)
    with pytest.raises(ValueError, match="parameter or a tf lookup"):
        rig_extrinsics("base_link", FRAMES)


def test_camera_frame_map_rejects_what_tf_cannot_hold():
    assert camera_frame_map(["a", "b"], ["fa", "fb"]) == {"a": "fa", "b": "fb"}
    with pytest.raises(ValueError, match="2 rig cameras"):
        camera_frame_map(["a", "b"], ["fa"])
    with pytest.raises(ValueError, match="distinct"):
        camera_frame_map(["a", "b"], ["f", "f"])
    with pytest.raises(ValueError, match="leading '/'"):
        camera_frame_map(["a"], ["/f"])
    with pytest.raises(ValueError, match="no frame id for rig cameras \\['rear'\\]"):
        rig_static_transforms(make_rig(), "base_link", {"front": "f", "left": "l"})
