"""Shared by the launch files: one Node action per entry of a node set, all with the set's YAML."""

import importlib.util
import os

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

HERE = os.path.dirname(os.path.abspath(__file__))


def _node_sets_module():
    spec = importlib.util.spec_from_file_location("aloe_node_sets", os.path.join(HERE, "node_sets.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def node_set_description(set_name: str, remappings=()) -> LaunchDescription:
    params = LaunchConfiguration("params_file")
    use_sim_time = LaunchConfiguration("use_sim_time")
    actions = [
        DeclareLaunchArgument("params_file", default_value=os.path.join(HERE, "config", f"{set_name}.yaml"),
                              description="parameters YAML for every node of this launch file"),
        DeclareLaunchArgument("use_sim_time", default_value="true" if set_name == "sim" else "false"),
    ]
    sets = _node_sets_module()
    for package, executable, name in sets.NODE_SETS[set_name]:
        # supervision as aloe_sim.bringup does it (node_sets.py): the commander's exit ends the launch,
        # any other node is restarted while the commander holds the robot
        supervision = ({"on_exit": [Shutdown(reason=f"{name} exited: nothing commands the robot")]}
                       if name == sets.COMMANDER else {"respawn": True, "respawn_delay": sets.RESPAWN_DELAY_S})
        actions.append(Node(package=package, executable=executable, name=name, output="screen",
                            parameters=[params, {"use_sim_time": use_sim_time}],
                            remappings=list(remappings), **supervision))
    return LaunchDescription(actions)
