"""The suite's bag layout: the one rosbags type registration (topic names: aloe_data.schema).

ROS-free (no rclpy): used by the recorder, the trainer's ingestion and the replay tools.
The aloe_msgs types are registered from the installed ``.msg`` files, so a bag written here
carries the exact definitions ``ros2 bag`` and Foxglove need.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from rosbags.typesys import Stores, get_typestore, get_types_from_msg
from rosbags.typesys.base import Nodetype
from rosbags.typesys.store import Typestore

ALOE_MSG_NAMES = ("ActionChunk", "ExecutedAction", "Intervention", "EpisodeEvent", "ValueEstimate")


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
    _check_references(typestore, types, msg_dir)
    typestore.register(types)
    return typestore


def _referenced_type(nodetype, spec) -> str | None:
    """The message type a field refers to (NAME, or a sequence/array of NAME), else None."""
    if nodetype == Nodetype.NAME:
        return spec
    if nodetype in (Nodetype.ARRAY, Nodetype.SEQUENCE):
        return _referenced_type(*spec[0])
    return None


def _check_references(typestore: Typestore, types: dict, msg_dir: Path) -> None:
    # rosbags' parser is lenient ("this is not a field" parses as a field of type "this"):
    # every referenced type must be known, or the definition is malformed.
    for typename, (_, fields) in types.items():
        for field_name, (nodetype, spec) in fields:
            ref = _referenced_type(nodetype, spec)
            if ref is not None and ref not in types and ref not in typestore.types:
                raise TypeRegistrationError(
                    f"cannot parse {msg_dir / typename.rsplit('/', 1)[-1]}.msg: field {field_name!r} "
                    f"refers to unknown type {ref!r}")


@lru_cache(maxsize=None)
def make_typestore(store: str = "ROS2_KILTED", msg_dir: str | None = None) -> Typestore:
    """A rosbags typestore with the standard ROS 2 types of ``store`` plus aloe_msgs.

    Cached: the same registration is shared by the recorder, ingestion and replay.
    """
    typestore = get_typestore(getattr(Stores, store))
    return register_aloe_types(typestore, Path(msg_dir) if msg_dir else None)


def _installed_msg_file(msgtype: str) -> Path | None:
    pkg, kind, name = msgtype.split("/")
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        path = Path(prefix) / "share" / pkg / kind / f"{name}.msg"
        if prefix and path.is_file():
            return path
    return None


def _referenced_types(node) -> set[str]:
    """Message type names used by a rosbags field definition (nested in tuples)."""
    if isinstance(node, str):
        return {node} if node.count("/") == 2 else set()
    if isinstance(node, (tuple, list)):
        return set().union(*(_referenced_types(x) for x in node)) if node else set()
    return set()


def register_installed_type(typestore: Typestore, msgtype: str) -> bool:
    """Register ``msgtype`` and the types it uses from installed ``share/<pkg>/msg/<Name>.msg`` files.

    For a user's own message types (neither standard ROS 2 nor aloe_msgs) that the recorder meets
    on the graph. Returns False when some definition is not installed (nothing is registered then).
    """
    if msgtype in typestore.types:
        return True
    found: dict = {}
    pending = [msgtype]
    while pending:
        name = pending.pop()
        if name in typestore.types or name in found:
            continue
        path = _installed_msg_file(name) if name.count("/") == 2 else None
        if path is None:
            return False
        try:
            types = get_types_from_msg(path.read_text(), name)
        except Exception as exc:  # rosbags raises several parser error types
            raise TypeRegistrationError(f"cannot parse {path}: {exc}") from exc
        found.update(types)
        pending.extend(_referenced_types(types[name][1]))
    typestore.register(found)
    return True
