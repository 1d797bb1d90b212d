"""ros2 launch aloe_bringup sim.launch.py [params_file:=...] (or launch/sim.launch.py from the repository):
the 'sim' node set of aloe_bringup/node_sets.py with config/sim.yaml next to this file.
Without the launch package: `aloe-bringup sim`."""

import os

from aloe_bringup.launch_description import node_set_description


def generate_launch_description():
    return node_set_description("sim", os.path.dirname(os.path.abspath(__file__)))
