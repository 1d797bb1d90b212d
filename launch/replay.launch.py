"""ros2 launch launch/replay.launch.py [params_file:=...] — the 'replay' node set (launch/node_sets.py)
with launch/config/replay.yaml. Without the launch package: `python -m aloe_sim.bringup replay`."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import node_set_description  # noqa: E402


def generate_launch_description():
    return node_set_description("replay")
