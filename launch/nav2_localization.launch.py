"""nav2's localization with pixloc_ros in place of AMCL: the localizer as a lifecycle node under
nav2_lifecycle_manager, robot_localization's EKFs fusing its pose, and optionally nav2's map_server.

    ros2 launch pixloc_ros nav2_localization.launch.py map:=/data/maps/site.pxmap \
        weights:=/data/weights/pixloc_cmu.safetensors occupancy_map:=/data/maps/site.yaml

This replaces nav2_bringup's localization_launch.py (map_server + amcl); the rest of nav2 is
started as usual (navigation_launch.py). The manager (lifecycle_manager_localization, as nav2
names it) configures and activates the localizer, and the map_server when occupancy_map is given,
with bond_timeout 0.0: pixloc_ros has no bond (ros/lifecycle.py, README "nav2").

params_file (default config/nav2_pixloc.yaml) holds the sections of all three; the same rules as
localize.launch.py apply (pixloc_ros/ros/launch_support.py): explicit arguments win over the file,
booleans in any case, /tf remapped into the namespace, everything checked before anything starts
(robot_localization for ekf, nav2_lifecycle_manager, nav2_map_server for occupancy_map).
"""
from pathlib import Path

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration

SHARE = Path(__file__).resolve().parents[1]  # share/pixloc_ros (or the source tree): launch/, config/
ARGUMENTS = {
    "map": ("", "Compiled map file (pixloc-ros build-map); default: map_file of the params file."),
    "weights": ("", "PixLoc weights; default: weights of the params file."),
    "params_file": (str(SHARE / "config" / "nav2_pixloc.yaml"),
                    "Parameters of pixloc_localizer, lifecycle_manager_localization and map_server."),
    "namespace": ("", "Namespace of the launched nodes (tf remapped into it)."),
    "use_sim_time": ("", "Follow /clock; default: the params files' value."),
    "autostart": ("true", "The lifecycle manager configures and activates the nodes at start."),
    "occupancy_map": ("", "nav2 map_server yaml for the costmaps; empty: no map_server."),
    "ekf": ("true", "Start robot_localization's odom and map EKFs (ekf_params); the node's tf is switched off."),
    "ekf_params": (str(SHARE / "config" / "ekf.yaml"), "Parameters of the two EKFs."),
    "log_level": ("info", "Log level of the localizer."),
    "fastdds_profile": ("", "Fast DDS XML profile of the localizer; default the environment's, else the shipped one."),
}


def launch_setup(context, *args, **kwargs):
    """The nodes, once every argument and file was checked (launch_support.plan_launch raises first)."""
    from pixloc_ros.ros.launch_nodes import localization_nodes, nav2_nodes
    from pixloc_ros.ros.launch_support import parse_bool, plan_launch

    values = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    autostart = parse_bool("autostart", values["autostart"])
    plan = plan_launch(values, str(SHARE), nav2=True)
    return [*localization_nodes(plan), *nav2_nodes(plan, values["params_file"], autostart)]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        *[DeclareLaunchArgument(name, default_value=default, description=text)
          for name, (default, text) in ARGUMENTS.items()],
        OpaqueFunction(function=launch_setup),
    ])
