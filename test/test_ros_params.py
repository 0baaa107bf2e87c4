"""Node parameters: declaration with descriptors, validation, and config/localize.yaml."""
from dataclasses import fields, replace
from pathlib import Path

import pytest
import yaml

pytest.importorskip("rclpy")
import rclpy  # noqa: E402
from rclpy.context import Context  # noqa: E402
from rclpy.exceptions import InvalidParameterValueException  # noqa: E402
from rclpy.node import Node  # noqa: E402

from pixloc_ros.ros.params import NodeSettings, declare_settings, parameter_names  # noqa: E402
from ros_testing import domain_id_for  # noqa: E402

pytestmark = pytest.mark.ros
CONFIG = Path(__file__).resolve().parents[1] / "config" / "localize.yaml"
REQUIRED = {"map_file": "/maps/m.pxmap", "weights": "/w/pixloc_cmu.safetensors"}


def test_every_field_has_a_description():
    for f in fields(NodeSettings):
        assert len(f.metadata.get("description", "")) > 10, f.name


def test_required_and_valid_defaults():
    with pytest.raises(ValueError, match="'map_file' is required"):
        NodeSettings.from_values({})
    with pytest.raises(ValueError, match="'weights' is required"):
        NodeSettings.from_values({"map_file": "m"})
    s = NodeSettings.from_values(REQUIRED)
    assert s.device == "auto" and s.publish_tf and s.tf_mode == "map_odom"


@pytest.mark.parametrize("change, message", [
    ({"device": "tpu"}, "device"),
    ({"device": "cuda:x"}, "device"),
    ({"tf_mode": "odom_base"}, "not one of"),
    ({"image_transport": "theora"}, "not one of"),
    ({"num_hypotheses": 0}, "outside"),
    ({"max_rotation_deg": float("nan")}, "not finite"),
    ({"iterations": [25, 25]}, "iterations"),
    ({"iterations": [0, 0, 0]}, "iterations"),
    ({"image_topic": ""}, "must not be empty"),
    ({"odom_frame": "map"}, "must differ"),
    ({"odom_topic": ""}, "needs odometry"),
    ({"camera_extrinsic": [0.0, 0.0, 0.0]}, "7 finite values"),
    ({"warm_up_size": [640]}, r"'warm_up_size' needs \[width, height\]"),
    ({"warm_up_size": [640, 0]}, "16-100000"),
    ({"camera_extrinsic": [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0]}, "unit length"),
    ({"no_such_parameter": 1}, "Unknown parameters"),
    ({"rig_cameras": ["front", "front"]}, "distinct non-empty names"),
    ({"rig_cameras": ["front", "left"], "rig_image_topics": ["/f/image"]}, "one topic per rig camera"),
    ({"rig_cameras": ["front", "left"], "rig_extrinsics": [0.0] * 7}, r"7 values per rig camera \(14\)"),
    ({"rig_cameras": ["front", "left"], "rig_extrinsics": [0.0] * 6 + [1.0] + [0.0] * 7},
     "of camera 'left'.*unit quaternion"),
])
def test_invalid_settings_fail_with_a_specific_message(change, message):
    with pytest.raises(ValueError, match=message):
        NodeSettings.from_values({**REQUIRED, **change})


def test_no_odometry_is_fine_with_map_base_tf():
    s = NodeSettings.from_values({**REQUIRED, "odom_topic": "", "tf_mode": "map_base"})
    assert s.odom_topic == ""
    assert replace(s, publish_tf=False).validate()


def test_engine_configs_follow_the_settings_and_default_to_the_engine_defaults():
    from pixloc_ros.core.engine.localizer import LocalizerConfig
    from pixloc_ros.core.tracking.pipeline import PipelineConfig
    from pixloc_ros.ros.params import engine_configs

    # The node's defaults are the engine's: nothing is tuned twice.
    configs = engine_configs(NodeSettings.from_values(REQUIRED))
    assert configs.pipeline == PipelineConfig()
    default_localizer = LocalizerConfig()
    assert configs.localizer.iterations == default_localizer.iterations
    assert configs.localizer.max_image_size == default_localizer.max_image_size
    assert configs.localizer.device == "auto"
    assert configs.localizer.cpu_precision == default_localizer.cpu_precision
    assert configs.localizer.lm == default_localizer.lm and configs.localizer.lm.path == "auto"
    assert engine_configs(NodeSettings.from_values({**REQUIRED, "lm_path": "fused"})).localizer.lm.path == "fused"
    with pytest.raises(ValueError, match="'lm_path' = 'cuda' is not one of"):
        NodeSettings.from_values({**REQUIRED, "lm_path": "cuda"})
    changed = engine_configs(NodeSettings.from_values({**REQUIRED, "num_keyframes": 5, "lost_after": 7,
                                                       "min_valid_points": 42, "iterations": [1, 2, 3],
                                                       "max_image_size": 640, "device": "cpu",
                                                       "clock_jump_tolerance_s": 2.0, "cpu_precision": "bf16"}))
    assert changed.pipeline.retrieval.num_keyframes == 5 and changed.pipeline.hypotheses.lost_after == 7
    assert changed.pipeline.gating.min_valid_points == 42 and changed.pipeline.clock_jump_tolerance_s == 2.0
    assert (changed.localizer.iterations, changed.localizer.max_image_size, changed.localizer.device,
            changed.localizer.cpu_precision) == ((1, 2, 3), 640, "cpu", "bf16")
    # The tile loader's too (tiled maps).
    from pixloc_ros.core.maps.tile_loader import TileLoaderConfig

    assert configs.tiles == TileLoaderConfig()
    tiles = engine_configs(NodeSettings.from_values({**REQUIRED, "tile_load_radius_m": 80.0, "tile_lookahead_m": 0.0,
                                                     "max_loaded_tiles": 4})).tiles
    assert (tiles.load_radius_m, tiles.lookahead_m, tiles.max_loaded_tiles) == (80.0, 0.0, 4)


def test_pipeline_states_are_the_status_message_states():
    from pixloc_ros.core.tracking.frames import State
    from pixloc_ros.msg import LocalizationStatus

    for state in State:
        assert getattr(LocalizationStatus, f"STATE_{state.name}") == int(state)


def test_config_file_lists_exactly_the_parameters():
    data = yaml.safe_load(CONFIG.read_text())
    assert list(data) == ["/**"]
    params = data["/**"]["ros__parameters"]
    # camera_extrinsic, iterations, warm_up_size and the rig's lists are documented commented-out: an
    # empty list has no ROS type.
    commented = {"camera_extrinsic", "iterations", "warm_up_size", "rig_cameras", "rig_image_topics",
                 "rig_camera_info_topics", "rig_extrinsics"}
    assert set(params) == set(parameter_names()) - commented
    defaults = NodeSettings()
    for name, value in params.items():
        if name not in REQUIRED:
            assert value == getattr(defaults, name), f"{name}: yaml {value!r} != default {getattr(defaults, name)!r}"
            assert type(value) is type(getattr(defaults, name)), f"{name}: ROS would reject the yaml type"


@pytest.fixture
def context():
    ctx = Context()
    yield ctx
    ctx.try_shutdown()


def make_node(context, *overrides: str) -> Node:
    args = ["--ros-args", "--params-file", str(CONFIG)]
    for o in overrides:
        args += ["-p", o]
    rclpy.init(args=args, context=context, domain_id=domain_id_for(__name__))
    return Node("pixloc_localizer", context=context)


def test_declared_from_the_params_file_with_overrides(context):
    node = make_node(context, "map_file:=/maps/m.pxmap", "weights:=/w.safetensors", "num_keyframes:=3",
                     "iterations:=[10,20,30]", "camera_extrinsic:=[0.1,0.0,1.5,-0.5,0.5,-0.5,0.5]",
                     "warm_up_size:=[1241,376]", "rig_cameras:=[front,left]")
    try:
        s = declare_settings(node)
        assert (s.map_file, s.weights, s.num_keyframes) == ("/maps/m.pxmap", "/w.safetensors", 3)
        assert s.iterations == [10, 20, 30] and s.warm_up_size == [1241, 376]
        assert s.camera_extrinsic == [0.1, 0.0, 1.5, -0.5, 0.5, -0.5, 0.5]
        assert s.gnss_topic == "gnss/fix"
        assert s.rig_cameras == ["front", "left"] and s.rig_extrinsics == [] and s.rig_image_topics == []
        descriptor = node.describe_parameter("mahalanobis_probability")
        assert "Mahalanobis" in descriptor.description and descriptor.read_only
        assert descriptor.floating_point_range[0].to_value == 1.0
        assert node.describe_parameter("device").description.startswith("Where the network runs")
        assert "map_odom" in node.describe_parameter("tf_mode").additional_constraints
    finally:
        node.destroy_node()


def test_out_of_range_override_is_refused_at_declaration(context):
    node = make_node(context, "map_file:=m", "weights:=w", "num_hypotheses:=1000")
    try:
        with pytest.raises(ValueError, match=r"'num_hypotheses' = 1000 is outside \[1, 64\]") as err:
            declare_settings(node)
        assert isinstance(err.value.__cause__, InvalidParameterValueException)
    finally:
        node.destroy_node()


@pytest.mark.parametrize("override, message", [
    ("num_hypotheses:=four", "'num_hypotheses' must be an integer, got 'four'"),
    ("min_inlier_ratio:=1", "'min_inlier_ratio' must be a number with a decimal point .* got 1"),
    ("publish_tf:=maybe", "'publish_tf' must be true or false, got 'maybe'"),
    ("iterations:=[1.5,2.0,3.0]", "'iterations' must be a list of integers"),
])
def test_mistyped_override_names_the_parameter_and_what_it_needs(context, override, message):
    """With the params file (where rcl drops a -p value of another type without a word) and without."""
    node = make_node(context, "map_file:=m", "weights:=w", override)
    try:
        with pytest.raises(ValueError, match=message):
            declare_settings(node, ["node", "--ros-args", "--params-file", str(CONFIG), "-p", override])
    finally:
        node.destroy_node()
    alone = Context()
    try:
        rclpy.init(args=["--ros-args", "-p", "map_file:=m", "-p", "weights:=w", "-p", override], context=alone,
                   domain_id=domain_id_for(__name__))
        node = Node("pixloc_localizer", context=alone)
        with pytest.raises(ValueError, match=message):
            declare_settings(node)
        node.destroy_node()
    finally:
        alone.try_shutdown()


def test_misspelt_or_unknown_parameters_are_errors_with_a_suggestion(context):
    node = make_node(context, "map_file:=m", "weights:=w", "num_hypothesis:=4", "use_sim_time:=true",
                     "frobnicate:=1")
    try:
        with pytest.raises(ValueError) as err:
            declare_settings(node)
        text = str(err.value)
        assert "Unknown parameter 'num_hypothesis' (did you mean 'num_hypotheses'?)" in text
        assert "Unknown parameter 'frobnicate'" in text and "use_sim_time" not in text  # rclpy's own
    finally:
        node.destroy_node()


def test_bad_choice_from_params_fails_loudly(context):
    node = make_node(context, "map_file:=m", "weights:=w", "device:=tpu")
    try:
        with pytest.raises(ValueError, match="device"):
            declare_settings(node)
    finally:
        node.destroy_node()


def test_calibration_file_picks_the_published_covariance(synth_map, tmp_path):
    """calibration_file: empty -> the weights' own file when there is one; none -> uncalibrated;
    a path -> that file (e.g. a rig calibration); a missing path fails at start."""
    import shutil

    from pixloc_ros.core.tracking.covariance_calibration import calibration_path_for
    from pixloc_ros.ros.node import build_pipeline

    own = calibration_path_for(synth_map.weights)
    if not own.exists():
        pytest.skip(f"the test weights have no calibration file ({own.name})")
    settings = NodeSettings(map_file=str(synth_map.map_file), weights=str(synth_map.weights), device="cpu")
    other = tmp_path / "rig.covariance.json"
    shutil.copy(own, other)
    for value, calibrated in (("", True), ("none", False), ("NONE", False), (str(other), True)):
        pipeline = build_pipeline(replace(settings, calibration_file=value))
        try:
            assert pipeline.summary().calibrated is calibrated, value
        finally:
            pipeline.close()
    with pytest.raises(FileNotFoundError, match="no covariance calibration at"):
        build_pipeline(replace(settings, calibration_file=str(tmp_path / "missing.json")))
