"""The one schema module: default topic names, codes and action names of the suite.

Every node exposes its topics as remappable parameters; these are their defaults. The codes are
those of aloe_msgs (EpisodeEvent.event, ExecutedAction.source), written here for the code that
reads bags without the generated message classes (ingestion, the recorder's summary).
"""

from __future__ import annotations

# --- topics and services (defaults) --------------------------------------------------------------
TOPIC_CAMERA_FMT = "/camera/{name}/image_raw"       # sensor_msgs/Image (CompressedImage on <topic>/compressed)
TOPIC_JOINT_STATES = "/joint_states"                 # sensor_msgs/JointState
TOPIC_EE_POSE = "/aloe/ee_pose"                      # geometry_msgs/PoseStamped
TOPIC_TASK = "/aloe/task"                            # std_msgs/String, transient local
TOPIC_ACTION_CHUNK = "/aloe/action_chunk"            # aloe_msgs/ActionChunk
TOPIC_EXECUTED_ACTION = "/aloe/executed_action"      # aloe_msgs/ExecutedAction: the control ticks
TOPIC_INTERVENTION = "/aloe/intervention"            # aloe_msgs/Intervention
TOPIC_EPISODE_EVENT = "/aloe/episode_event"          # aloe_msgs/EpisodeEvent
TOPIC_REWARD = "/aloe/reward"                        # std_msgs/Float32, one per step (optional)
TOPIC_VALUE_ESTIMATE = "/aloe/value_estimate"        # aloe_msgs/ValueEstimate
TOPIC_COMMAND = "/aloe/command"                      # the executor's command output
TOPIC_SIM_STATE = "/aloe/sim/state"                  # std_msgs/Float64MultiArray, the simulator's privileged state
SERVICE_LOAD_POLICY = "/aloe/load_policy"            # aloe_msgs/srv/LoadPolicy (policy_node's alias)

# --- codes (aloe_msgs) ---------------------------------------------------------------------------
EVENT_START, EVENT_SUCCESS, EVENT_FAILURE, EVENT_ABORT = 0, 1, 2, 3   # EpisodeEvent.event
EVENT_NAMES = {EVENT_START: "START", EVENT_SUCCESS: "SUCCESS", EVENT_FAILURE: "FAILURE", EVENT_ABORT: "ABORT"}
EVENT_CODES = {name: code for code, name in EVENT_NAMES.items()}
SOURCE_POLICY, SOURCE_HUMAN, SOURCE_HOLD = 0, 1, 2                    # ExecutedAction.source
SOURCE_NAMES = ("POLICY", "HUMAN", "HOLD")

# --- actions -------------------------------------------------------------------------------------
# The simulated Panda's 7 EE-delta actions (metres per tick, rotation ignored, gripper delta).
SIM_ACTION_NAMES = ("dx", "dy", "dz", "rx", "ry", "rz", "grip")
