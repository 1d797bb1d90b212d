"""ros2 launch aloe_bringup robot.launch.py [params_file:=...] (or launch/robot.launch.py from the repository):
the 'robot' node set of aloe_bringup/node_sets.py with config/robot.yaml next to this file.
Without the launch package: `aloe-bringup robot`."""

import os

from aloe_bringup.launch_description import node_set_description


def generate_launch_description():
    return node_set_description("robot", os.path.dirname(os.path.abspath(__file__)))
