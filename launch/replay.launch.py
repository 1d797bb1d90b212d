"""ros2 launch aloe_bringup replay.launch.py [params_file:=...] (or launch/replay.launch.py from the repository):
the 'replay' node set of aloe_bringup/node_sets.py with config/replay.yaml next to this file.
Without the launch package: `aloe-bringup replay`."""

import os

from aloe_bringup.launch_description import node_set_description


def generate_launch_description():
    return node_set_description("replay", os.path.dirname(os.path.abspath(__file__)))
