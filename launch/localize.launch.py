"""Launch the PixLoc relocalization node (and optionally RViz and robot_localization's EKFs).

    ros2 launch pixloc_ros localize.launch.py map:=/data/maps/street.pxmap \
        weights:=/data/weights/pixloc_cmu.safetensors use_sim_time:=true rviz:=true
    pixloc-ros play /data/queries/night     # or: ros2 bag play --clock /data/queries/night

Parameters come from params_file (default config/localize.yaml); an argument given explicitly
(map, weights, use_sim_time, ekf) overrides the file, one left out leaves the file's value.
Booleans take true/false, 1/0, yes/no, on/off in any case.

With ekf:=true, robot_localization runs two EKFs (ekf_params, default config/ekf.yaml): the odom
EKF publishes odom -> base_link, the map EKF fuses this node's pose and publishes map -> odom; the
node's own tf is then switched off (publish_tf false), since two publishers of one transform fight.

With namespace:=robot1 every node runs in /robot1, /tf and /tf_static become /robot1/tf and
/robot1/tf_static (as nav2 does for several robots), and RViz opens a copy of rviz_config whose
topics are moved under /robot1.

Everything is checked before anything starts (pixloc_ros/ros/launch_support.py): the params file,
that map and weights are given somewhere, the EKF params file, and the robot_localization / rviz2
packages when ekf / rviz ask for them. The node logs the parameter files it loaded.

The node runs with config/fastdds_large_frames.xml as its Fast DDS profile (unless the environment
names a profile already, or fastdds_profile:= another), set under both names Fast DDS reads:
FASTRTPS_DEFAULT_PROFILES_FILE (Fast DDS 2.x: Humble, Jazzy) and FASTDDS_DEFAULT_PROFILES_FILE
(3.x: Kilted); each version ignores the other's name. The profile gives a larger shared-memory
segment, so that its heatmaps of big frames reach best-effort subscribers such as RViz. Camera
drivers that publish frames over ~0.5 MB best effort need the same (README, "QoS").

No composable-node option: rclpy has no components (rclcpp_components loads C++ nodes only).
"""
from pathlib import Path

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration

SHARE = Path(__file__).resolve().parents[1]  # share/pixloc_ros (or the source tree): launch/, config/
ARGUMENTS = {
    "map": ("", "Compiled map file (pixloc-ros build-map); default: map_file of the params file."),
    "weights": ("", "PixLoc weights (official checkpoint or .safetensors); default: weights of the params file."),
    "params_file": (str(SHARE / "config" / "localize.yaml"), "Node parameters (YAML with a /** key)."),
    "namespace": ("", "Namespace of the launched nodes (tf remapped into it, RViz topics too)."),
    "use_sim_time": ("", "Follow /clock (bag replay); default: the params files' value."),
    "rviz": ("false", "Start RViz with rviz_config."),
    "rviz_config": (str(SHARE / "config" / "pixloc.rviz"), "RViz config (its topics are namespaced)."),
    "ekf": ("false", "Start robot_localization's odom and map EKFs (ekf_params); the node's tf is switched off."),
    "ekf_params": (str(SHARE / "config" / "ekf.yaml"), "Parameters of the two EKFs."),
    "log_level": ("info", "Log level of the localizer."),
    "fastdds_profile": ("", "Fast DDS XML profile of the localizer (FASTDDS_ or FASTRTPS_DEFAULT_PROFILES_FILE): "
                            "default the environment's, else the shipped one with a 16 MiB shared-memory segment."),
}


def launch_setup(context, *args, **kwargs):
    """The nodes, once every argument and file was checked (launch_support.plan_launch raises first)."""
    from pixloc_ros.ros.launch_nodes import localization_nodes
    from pixloc_ros.ros.launch_support import plan_launch

    return localization_nodes(plan_launch({name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS},
                                          str(SHARE)))


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        *[DeclareLaunchArgument(name, default_value=default, description=text)
          for name, (default, text) in ARGUMENTS.items()],
        OpaqueFunction(function=launch_setup),
    ])
