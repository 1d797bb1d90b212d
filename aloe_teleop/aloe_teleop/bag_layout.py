"""The suite's bag layout: default topic names and the one rosbags type registration.

ROS-free (no rclpy): used by the recorder, the trainer's ingestion and the replay tools.
The aloe_msgs types are registered from the installed ``.msg`` files, so a bag written here
carries the exact definitions ``ros2 bag`` and Foxglove need.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from rosbags.typesys import Stores, get_typestore, get_types_from_msg
from rosbags.typesys.store import Typestore

ALOE_MSG_NAMES = ("ActionChunk", "ExecutedAction", "Intervention", "EpisodeEvent", "ValueEstimate")

# Default topic names (every node exposes them as remappable parameters).
TOPIC_CAMERA_FMT = "/camera/{name}/image_raw"
TOPIC_JOINT_STATES = "/joint_states"
TOPIC_TASK = "/aloe/task"
TOPIC_ACTION_CHUNK = "/aloe/action_chunk"
TOPIC_EXECUTED_ACTION = "/aloe/executed_action"
TOPIC_INTERVENTION = "/aloe/intervention"
TOPIC_EPISODE_EVENT = "/aloe/episode_event"
TOPIC_REWARD = "/aloe/reward"
TOPIC_VALUE_ESTIMATE = "/aloe/value_estimate"
TOPIC_COMMAND = "/aloe/command"


class TypeRegistrationError(RuntimeError):
    """The aloe_msgs definitions could not be found or parsed."""


def find_msg_dir() -> Path:
    """Directory holding the installed aloe_msgs ``.msg`` files.

    Looked up in ``$AMENT_PREFIX_PATH`` (a sourced workspace), then in the source tree beside
    this package (a checkout that was not built yet).
    """
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix and (Path(prefix) / "share/aloe_msgs/msg").is_dir():
            return Path(prefix) / "share/aloe_msgs/msg"
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "aloe_msgs/msg").is_dir():
            return parent / "aloe_msgs/msg"
    raise TypeRegistrationError(
        "aloe_msgs .msg files not found: source install/setup.bash (or scripts/env.sh) "
        "so that AMENT_PREFIX_PATH contains the aloe_msgs install prefix"
    )


def register_aloe_types(typestore: Typestore, msg_dir: Path | None = None) -> Typestore:
    """Register every aloe_msgs message from its ``.msg`` text into ``typestore`` (in place)."""
    msg_dir = Path(msg_dir) if msg_dir is not None else find_msg_dir()
    types = {}
    for name in ALOE_MSG_NAMES:
        path = msg_dir / f"{name}.msg"
        if not path.is_file():
            raise TypeRegistrationError(f"missing message definition {path}; rebuild aloe_msgs")
        try:
            types.update(get_types_from_msg(path.read_text(), f"aloe_msgs/msg/{name}"))
        except Exception as exc:  # rosbags raises several parser error types
            raise TypeRegistrationError(f"cannot parse {path}: {exc}") from exc
    typestore.register(types)
    return typestore


@lru_cache(maxsize=None)
def make_typestore(store: str = "ROS2_KILTED", msg_dir: str | None = None) -> Typestore:
    """A rosbags typestore with the standard ROS 2 types of ``store`` plus aloe_msgs.

    Cached: the same registration is shared by the recorder, ingestion and replay.
    """
    typestore = get_typestore(getattr(Stores, store))
    return register_aloe_types(typestore, Path(msg_dir) if msg_dir else None)
