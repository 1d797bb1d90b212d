"""What every launch file builds: one Node action per entry of a node set (node_sets.py), all with
the set's parameters YAML. Imported by the launch files only (it needs launch and launch_ros)."""

import os

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from .node_sets import COMMANDER, NODE_SETS, RESPAWN_DELAY_S


def node_set_description(set_name: str, launch_dir: str, remappings=()) -> LaunchDescription:
    """``launch_dir``: the launch file's folder; its config/<set_name>.yaml is the default
    params_file (launch/config in the repository, share/aloe_bringup/launch/config installed)."""
    params = LaunchConfiguration("params_file")
    use_sim_time = LaunchConfiguration("use_sim_time")
    actions = [
        DeclareLaunchArgument("params_file", default_value=os.path.join(launch_dir, "config", f"{set_name}.yaml"),
                              description="parameters YAML for every node of this launch file"),
        DeclareLaunchArgument("use_sim_time", default_value="true" if set_name == "sim" else "false"),
    ]
    for package, executable, name in NODE_SETS[set_name]:
        # supervision as aloe-bringup does it (node_sets.py): the commander's exit ends the launch,
        # any other node is restarted while the commander holds the robot
        supervision = ({"on_exit": [Shutdown(reason=f"{name} exited: nothing commands the robot")]}
                       if name == COMMANDER else {"respawn": True, "respawn_delay": RESPAWN_DELAY_S})
        actions.append(Node(package=package, executable=executable, name=name, output="screen",
                            parameters=[params, {"use_sim_time": use_sim_time}],
                            remappings=list(remappings), **supervision))
    return LaunchDescription(actions)
