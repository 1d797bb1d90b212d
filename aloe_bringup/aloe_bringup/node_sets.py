"""Which nodes each launch file starts, in one place.

Read by the launch files (launch/robot|sim|replay.launch.py, through launch_description.py) and by
``aloe-bringup`` (bringup.py), which starts the same node set as plain processes from the console
entry points on machines without the ``launch`` package. Each entry: (package, executable, node name).
"""

NODE_SETS = {
    "robot": [
        ("aloe_policy", "policy_node", "policy_node"),
        ("aloe_policy", "executor_node", "executor_node"),
        ("aloe_teleop", "teleop_node", "teleop_node"),
        ("aloe_teleop", "recorder_node", "recorder_node"),
    ],
    "sim": [
        ("aloe_sim", "sim_node", "sim_node"),
        ("aloe_sim", "operator_node", "operator_node"),
        ("aloe_policy", "policy_node", "policy_node"),
        ("aloe_policy", "executor_node", "executor_node"),
        ("aloe_teleop", "recorder_node", "recorder_node"),
    ],
    "replay": [
        ("aloe_critic", "replay_node", "replay_node"),
    ],
}

# Supervision, the same under ros2 launch and aloe-bringup: the node that commands the robot
# ends the whole set when it exits (nothing would command the robot); the others are restarted after
# RESPAWN_DELAY_S while the commander holds the robot (their chunks / inputs go stale).
COMMANDER = "executor_node"
RESPAWN_DELAY_S = 2.0
