"""The launch_ros ``Node`` actions of a ``launch_support.LaunchPlan``, shared by
launch/localize.launch.py and launch/nav2_localization.launch.py. Imports launch_ros only when
called (it exists on a ROS 2 install, not among the PyPI wheels)."""
from __future__ import annotations

from pixloc_ros.ros.launch_support import NODE_NAME, LaunchPlan

PACKAGE = "pixloc_ros"
LIFECYCLE_MANAGER = "lifecycle_manager_localization"  # nav2's name for AMCL's manager


def localization_nodes(plan: LaunchPlan) -> list:
    """The localizer, and robot_localization's two EKFs and RViz when the plan asks for them."""
    from launch_ros.actions import Node

    sim_time = plan.sim_time()
    nodes = [Node(
        package=PACKAGE, executable="localizer_node", name=NODE_NAME, namespace=plan.namespace,
        output="screen", emulate_tty=True,
        parameters=[p for p in plan.localizer_parameters if p],  # the file, then the explicit arguments
        remappings=list(plan.remappings), arguments=["--ros-args", "--log-level", plan.log_level],
        additional_env={"FASTRTPS_DEFAULT_PROFILES_FILE": plan.fastdds_profile,  # Fast DDS 2.x (Humble, Jazzy)
                        "FASTDDS_DEFAULT_PROFILES_FILE": plan.fastdds_profile})]  # Fast DDS 3.x (Kilted)
    if plan.ekf:
        for name, output in (("ekf_filter_node_odom", "odometry/local"), ("ekf_filter_node_map", "odometry/global")):
            nodes.append(Node(package="robot_localization", executable="ekf_node", name=name,
                              namespace=plan.namespace, output="screen",
                              parameters=[plan.ekf_params, sim_time] if sim_time else [plan.ekf_params],
                              remappings=[("odometry/filtered", output), *plan.remappings]))
    if plan.rviz:
        nodes.append(Node(package="rviz2", executable="rviz2", name="rviz2", namespace=plan.namespace, output="screen",
                          arguments=["-d", plan.rviz_config], parameters=[sim_time] if sim_time else [],
                          remappings=list(plan.remappings)))
    return nodes


def nav2_nodes(plan: LaunchPlan, params_file: str, autostart: bool) -> list:
    """nav2's map_server (when the plan has an occupancy map) and its lifecycle manager driving it
    and the localizer, with ``bond_timeout`` 0.0: the localizer has no bond (ros/lifecycle.py)."""
    from launch_ros.actions import Node

    sim_time = plan.sim_time()
    nodes = []
    if plan.occupancy_map:
        nodes.append(Node(package="nav2_map_server", executable="map_server", name="map_server",
                          namespace=plan.namespace, output="screen",
                          parameters=[params_file, {"yaml_filename": plan.occupancy_map, **sim_time}],
                          remappings=list(plan.remappings)))
    nodes.append(Node(package="nav2_lifecycle_manager", executable="lifecycle_manager", name=LIFECYCLE_MANAGER,
                      namespace=plan.namespace, output="screen",
                      parameters=[params_file, {"node_names": plan.lifecycle_nodes, "autostart": autostart,
                                                "bond_timeout": 0.0, **sim_time}]))
    return nodes
