"""Launch the PixLoc relocalization node (and optionally RViz and robot_localization's EKFs).

    ros2 launch pixloc_ros localize.launch.py map:=/data/maps/street.pxmap \
        weights:=/data/weights/pixloc_cmu.safetensors use_sim_time:=true rviz:=true
    pixloc-ros play /data/queries/night     # or: ros2 bag play --clock /data/queries/night

With ekf:=true, robot_localization runs two EKFs (config/ekf.yaml): the odom EKF publishes
odom -> base_link, the map EKF fuses this node's pose and publishes map -> odom; the node's own
tf is then switched off (publish_tf false), since two publishers of one transform fight.

The node runs with config/fastdds_large_frames.xml as its Fast DDS profile (unless the environment
names a profile already, or fastdds_profile:= another), set under both names Fast DDS reads:
FASTRTPS_DEFAULT_PROFILES_FILE (Fast DDS 2.x: Humble, Jazzy) and FASTDDS_DEFAULT_PROFILES_FILE
(3.x: Kilted); each version ignores the other's name. The profile gives a larger shared-memory
segment, so that its heatmaps of big frames reach best-effort subscribers such as RViz. Camera
drivers that publish frames over ~0.5 MB best effort need the same (README, "QoS").
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import EnvironmentVariable, LaunchConfiguration, PathJoinSubstitution, PythonExpression
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

PACKAGE = "pixloc_ros"


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare(PACKAGE)
    arguments = [
        DeclareLaunchArgument("map", description="Compiled map file (pixloc-ros build-map)."),
        DeclareLaunchArgument("weights", description="PixLoc weights (official checkpoint or .safetensors)."),
        DeclareLaunchArgument("params_file", default_value=PathJoinSubstitution([share, "config", "localize.yaml"]),
                              description="Node parameters (YAML with a /** key)."),
        DeclareLaunchArgument("namespace", default_value="", description="Namespace of the launched nodes."),
        DeclareLaunchArgument("use_sim_time", default_value="false", choices=["true", "false"],
                              description="Follow /clock (bag replay)."),
        DeclareLaunchArgument("rviz", default_value="false", choices=["true", "false"],
                              description="Start RViz with config/pixloc.rviz."),
        DeclareLaunchArgument("ekf", default_value="false", choices=["true", "false"],
                              description="Start robot_localization's odom and map EKFs (config/ekf.yaml); "
                                          "the node's tf is switched off."),
        DeclareLaunchArgument("log_level", default_value="info", description="Log level of the localizer."),
        DeclareLaunchArgument(
            "fastdds_profile",
            default_value=EnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE", default_value=EnvironmentVariable(
                "FASTRTPS_DEFAULT_PROFILES_FILE", default_value=PathJoinSubstitution(
                    [share, "config", "fastdds_large_frames.xml"]))),
            description="Fast DDS XML profile of the localizer (FASTDDS_ or FASTRTPS_DEFAULT_PROFILES_FILE): "
                        "default the environment's, else the shipped one with a 16 MiB shared-memory segment."),
    ]
    namespace = LaunchConfiguration("namespace")
    use_sim_time = ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool)
    ekf = LaunchConfiguration("ekf")
    fastdds_profile = LaunchConfiguration("fastdds_profile")
    # The node broadcasts map -> odom unless the map EKF does.
    publish_tf = ParameterValue(PythonExpression(["'", ekf, "'.lower() not in ('true', '1')"]), value_type=bool)

    localizer = Node(
        package=PACKAGE,
        executable="localizer_node",
        name="pixloc_localizer",
        namespace=namespace,
        output="screen",
        emulate_tty=True,
        parameters=[
            LaunchConfiguration("params_file"),
            {"map_file": LaunchConfiguration("map"), "weights": LaunchConfiguration("weights"),
             "use_sim_time": use_sim_time, "publish_tf": publish_tf},
        ],
        arguments=["--ros-args", "--log-level", LaunchConfiguration("log_level")],
        additional_env={"FASTRTPS_DEFAULT_PROFILES_FILE": fastdds_profile,  # Fast DDS 2.x (Humble, Jazzy)
                        "FASTDDS_DEFAULT_PROFILES_FILE": fastdds_profile},  # Fast DDS 3.x (Kilted)
    )
    ekf_params = PathJoinSubstitution([share, "config", "ekf.yaml"])
    ekf_odom = Node(
        package="robot_localization", executable="ekf_node", name="ekf_filter_node_odom", namespace=namespace,
        output="screen", parameters=[ekf_params, {"use_sim_time": use_sim_time}],
        remappings=[("odometry/filtered", "odometry/local")], condition=IfCondition(ekf),
    )
    ekf_map = Node(
        package="robot_localization", executable="ekf_node", name="ekf_filter_node_map", namespace=namespace,
        output="screen", parameters=[ekf_params, {"use_sim_time": use_sim_time}],
        remappings=[("odometry/filtered", "odometry/global")], condition=IfCondition(ekf),
    )
    rviz = Node(
        package="rviz2", executable="rviz2", name="rviz2", namespace=namespace, output="screen",
        arguments=["-d", PathJoinSubstitution([share, "config", "pixloc.rviz"])],
        parameters=[{"use_sim_time": use_sim_time}], condition=IfCondition(LaunchConfiguration("rviz")),
    )
    return LaunchDescription([*arguments, localizer, ekf_odom, ekf_map, rviz])
