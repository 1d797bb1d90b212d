"""ros2 launch launch/robot.launch.py [params_file:=...] — the 'robot' node set (launch/node_sets.py)
with launch/config/robot.yaml. Without the launch package: `python -m aloe_sim.bringup robot`."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import node_set_description  # noqa: E402


def generate_launch_description():
    return node_set_description("robot")
