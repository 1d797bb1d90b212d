"""An episode bag: what the recorder writes and ingestion reads (ROS-free).

Bag layout (see docs/interfaces.md, "Bags")::

    <output_dir>/<episode_id>/                 one directory per episode (rosbag2 bag)
        <episode_id>_0.mcap                    MCAP, profile ros2, cdr messages, ros2msg schemas
        metadata.yaml                          rosbag2 metadata version 8 (read by Jazzy and Kilted)

``metadata.yaml`` exists only once the bag was closed (or re-indexed after a crash, bag_repair);
its ``custom_data`` (string -> string, JSON for structured values) is listed in
``CUSTOM_DATA_KEYS`` and computed from the recorded stream itself (``EpisodeSummary``);
``load_episode_metadata`` is the one reader of it.
"""

from __future__ import annotations

import collections
import json
import os
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import yaml
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2.metadata import dump_qos_v8

from aloe_data.atomic import write_atomic
from aloe_data.bag_layout import make_typestore
from aloe_data.schema import EVENT_NAMES, TOPIC_TASK
from aloe_data.schema import SOURCE_NAMES as _SOURCES

BAG_FORMAT_VERSION = "1"
ROSBAG2_METADATA_VERSION = 8  # string QoS profiles; parsed by rosbag2 Jazzy (8) and Kilted (9)
SOURCE_NAMES = dict(enumerate(_SOURCES))

# custom_data keys written to metadata.yaml (all values are strings; (json) ones are JSON text).
CUSTOM_DATA_KEYS = {
    "aloe_bag_format": "layout version of these keys ('1')",
    "episode_id": "EpisodeEvent.episode_id of the START event",
    "task": "language instruction (START event's task, else the latest task topic message)",
    "outcome": "SUCCESS | FAILURE | ABORT | INCOMPLETE (no end event in the bag)",
    "end_reason": "event | new_start | disk_full | write_error | shutdown | crash",
    "reward": "terminal reward of the end event (float), 0.0 when INCOMPLETE",
    "policy_ids": "(json) list of ActionChunk/ExecutedAction policy_id values, in order first seen",
    "takeovers": "number of operator takeovers (Intervention.active rising edges)",
    "executed_ticks": "(json) ExecutedAction count per source {POLICY, HUMAN, HOLD}",
    "message_counts": "(json) {topic: messages in the bag}",
    "dropped_messages": "(int) messages lost to recorder queue overflow while the bag was open",
    "start_time_ns": "stamp of the START event (recorder clock, ns)",
    "end_time_ns": "stamp of the end event, or of the last message when INCOMPLETE",
    "reindexed": "'true' when metadata.yaml was rebuilt by reindex_bag after a crash",
    "stamp_gaps": "(json) {topic: {missing, period_s}}: messages missing from a regular header-stamp stream (a gap "
                  "of k periods counts k - 1), for topics with such gaps: loss before the recorder saw them "
                  "(middleware history overflow, a dropped best-effort sample), which dropped_messages cannot count",
    "stream_topics": "(json) {'camera:<name>': topic, 'joint_states': topic, 'ee_pose': topic}: which recorded "
                     "topic holds each observation stream (ingestion reads them from here, so bags of any "
                     "camera topic names train)",
}

MSGTYPE_EVENT = "aloe_msgs/msg/EpisodeEvent"
MSGTYPE_INTERVENTION = "aloe_msgs/msg/Intervention"
MSGTYPE_EXECUTED = "aloe_msgs/msg/ExecutedAction"
MSGTYPE_CHUNK = "aloe_msgs/msg/ActionChunk"
MSGTYPE_STRING = "std_msgs/msg/String"


class BagError(RuntimeError):
    """A bag could not be written, repaired, read or turned into an episode; the message says why
    and what to do."""


@dataclass(frozen=True)
class QosInfo:
    """A publisher's offered QoS in rmw enum values (ROS-free copy of rclpy's QoSProfile)."""

    history: int = 1          # KEEP_LAST
    depth: int = 10
    reliability: int = 1      # RELIABLE
    durability: int = 2       # VOLATILE
    liveliness: int = 1       # AUTOMATIC
    deadline_ns: int = 0
    lifespan_ns: int = 0
    liveliness_lease_duration_ns: int = 0

    def to_rosbags(self) -> Qos:
        def t(ns: int) -> QosTime:
            # 0 = unspecified (the rmw default); rmw's "infinite" arrives as 2**63-1 ns.
            ns = max(0, min(ns, 2**63 - 1))
            return QosTime(ns // 1_000_000_000, ns % 1_000_000_000)

        return Qos(QosHistory(self.history), self.depth, QosReliability(self.reliability),
                   QosDurability(self.durability), t(self.deadline_ns), t(self.lifespan_ns),
                   QosLiveliness(self.liveliness), t(self.liveliness_lease_duration_ns), False)

    @property
    def transient_local(self) -> bool:
        return self.durability == 1


def dump_qos_profiles(profiles: Iterable[QosInfo]) -> str:
    return dump_qos_v8([p.to_rosbags() for p in profiles])


# --------------------------------------------------------------------------------------------
# Episode summary (custom_data), computed from the recorded stream itself
# --------------------------------------------------------------------------------------------

class EpisodeSummary:
    """Derives the bag's custom_data from the messages written to it.

    Only small control messages are decoded (EpisodeEvent, Intervention, ExecutedAction,
    ActionChunk, the task String), by type, so the same code serves the live recorder and
    :func:`reindex_bag` on a bag cut by a crash.
    """

    def __init__(self, task_topic: str = TOPIC_TASK, stream_topics: dict[str, str] | None = None):
        self.task_topic = task_topic
        self.stream_topics = dict(stream_topics or {})
        self.typestore = make_typestore()
        self.episode_id = ""
        self.event_task = ""
        self.topic_task = ""
        self.outcome = "INCOMPLETE"
        self.reward = 0.0
        self.policy_ids: list[str] = []
        self.takeovers = 0
        self._operator_active = False
        self.executed_ticks = {name: 0 for name in SOURCE_NAMES.values()}
        self.message_counts: dict[str, int] = collections.defaultdict(int)
        self.start_time_ns = 0
        self.end_time_ns = 0
        self.first_stamp = 0
        self.last_stamp = 0
        self.decode_errors = 0
        self.header_stamps: dict[str, list[int]] = collections.defaultdict(list)
        self._stamped: dict[str, bool] = {}

    def _header_stamp(self, msgtype: str, data: bytes) -> int | None:
        """header.stamp (ns) read straight from the CDR bytes of a message whose first field is a
        std_msgs/Header (no full decode: this runs for every camera frame)."""
        stamped = self._stamped.get(msgtype)
        if stamped is None:
            try:
                first = self.typestore.fielddefs[msgtype][1][0]
                stamped = first[0] == "header" and first[1][1] == "std_msgs/msg/Header"
            except (KeyError, IndexError, TypeError):
                stamped = False
            self._stamped[msgtype] = stamped
        if not stamped or len(data) < 12:
            return None
        sec, nanosec = struct.unpack_from("<iI" if data[1] == 1 else ">iI", data, 4)
        return sec * 1_000_000_000 + nanosec

    def stamp_gaps(self, min_messages: int = 20, regular: float = 0.9) -> dict[str, dict]:
        """{topic: {"missing": n, "period_s": p}} for regular stamped streams with gaps: the period is
        the median stamp step; a step of k periods (k >= 2, rounded) means k - 1 messages missing.
        Only streams where at least ``regular`` of the steps lie within 20 % of a whole number of
        periods are judged (a driver at a fixed rate); irregular streams are left alone."""
        out = {}
        for topic, stamps in self.header_stamps.items():
            if len(stamps) < min_messages:
                continue
            steps = np.diff(np.unique(np.asarray(stamps, np.int64)))
            if not len(steps):
                continue
            period = float(np.median(steps))
            if period <= 0:
                continue
            ratio = steps / period
            k = np.rint(ratio)
            if np.mean((k >= 1) & (np.abs(ratio - k) <= 0.2)) < regular:
                continue  # not a fixed-rate stream: a long step is no evidence of loss
            missing = int(np.sum(k[steps > 1.5 * period] - 1))
            if missing > 0:
                out[topic] = {"missing": missing, "period_s": period * 1e-9}
        return out

    def observe(self, topic: str, msgtype: str, stamp_ns: int, data: bytes) -> None:
        self.message_counts[topic] += 1
        header_ns = self._header_stamp(msgtype, data)
        if header_ns:
            self.header_stamps[topic].append(header_ns)
        if not self.first_stamp:
            self.first_stamp = stamp_ns
        self.last_stamp = max(self.last_stamp, stamp_ns)
        if msgtype not in (MSGTYPE_EVENT, MSGTYPE_INTERVENTION, MSGTYPE_EXECUTED, MSGTYPE_CHUNK) \
                and not (msgtype == MSGTYPE_STRING and topic == self.task_topic):
            return
        try:
            msg = self.typestore.deserialize_cdr(bytes(data), msgtype)
        except Exception:  # a malformed control message must not stop recording
            self.decode_errors += 1
            return
        if msgtype == MSGTYPE_EVENT:
            if msg.event == 0:
                self.episode_id = self.episode_id or msg.episode_id
                self.event_task = msg.task or self.event_task
                self.start_time_ns = self.start_time_ns or stamp_ns
            elif msg.event in EVENT_NAMES:
                self.outcome = EVENT_NAMES[msg.event]
                self.reward = float(msg.reward)
                self.end_time_ns = stamp_ns
                self.episode_id = self.episode_id or msg.episode_id
        elif msgtype == MSGTYPE_INTERVENTION:
            if msg.active and not self._operator_active:
                self.takeovers += 1
            self._operator_active = bool(msg.active)
        elif msgtype in (MSGTYPE_EXECUTED, MSGTYPE_CHUNK):
            if msg.policy_id and msg.policy_id not in self.policy_ids:
                self.policy_ids.append(msg.policy_id)
            if msgtype == MSGTYPE_EXECUTED:
                name = SOURCE_NAMES.get(msg.source)
                if name:
                    self.executed_ticks[name] += 1
        else:
            self.topic_task = msg.data

    @property
    def task(self) -> str:
        return self.event_task or self.topic_task

    def custom_data(self, end_reason: str, dropped: int = 0) -> dict[str, str]:
        return {
            "aloe_bag_format": BAG_FORMAT_VERSION,
            "episode_id": self.episode_id,
            "task": self.task,
            "outcome": self.outcome,
            "end_reason": end_reason,
            "reward": repr(float(self.reward)),
            "policy_ids": json.dumps(self.policy_ids),
            "takeovers": str(self.takeovers),
            "executed_ticks": json.dumps(self.executed_ticks),
            "message_counts": json.dumps(dict(self.message_counts)),
            "dropped_messages": str(int(dropped)),
            "start_time_ns": str(self.start_time_ns or self.first_stamp),
            "end_time_ns": str(self.end_time_ns or self.last_stamp),
            **({"stream_topics": json.dumps(self.stream_topics, sort_keys=True)} if self.stream_topics else {}),
            **({"stamp_gaps": json.dumps(gaps, sort_keys=True)} if (gaps := self.stamp_gaps()) else {}),
        }


# --------------------------------------------------------------------------------------------
# rosbag2 metadata.yaml
# --------------------------------------------------------------------------------------------

@dataclass
class TopicRecord:
    topic: str
    msgtype: str
    qos_profiles: str  # rosbag2 v8 offered_qos_profiles YAML string
    type_hash: str
    count: int = 0


def rosbag2_metadata(relative_files: list[str], topics: list[TopicRecord], start_ns: int, end_ns: int,
                     custom_data: dict[str, str]) -> dict:
    """The ``rosbag2_bagfile_information`` mapping of metadata.yaml (version 8 layout)."""
    count = sum(t.count for t in topics)
    duration = max(0, end_ns - start_ns) if count else 0
    start = start_ns if count else 0
    return {
        "version": ROSBAG2_METADATA_VERSION,
        "storage_identifier": "mcap",
        "duration": {"nanoseconds": duration},
        "starting_time": {"nanoseconds_since_epoch": start},
        "message_count": count,
        "topics_with_message_count": [
            {"topic_metadata": {"name": t.topic, "type": t.msgtype, "serialization_format": "cdr",
                                "offered_qos_profiles": t.qos_profiles,
                                "type_description_hash": t.type_hash},
             "message_count": t.count}
            for t in topics],
        "compression_format": "",
        "compression_mode": "",
        "relative_file_paths": list(relative_files),
        "files": [{"path": name, "starting_time": {"nanoseconds_since_epoch": start},
                   "duration": {"nanoseconds": duration}, "message_count": count}
                  for name in relative_files],
        "custom_data": dict(custom_data),
        "ros_distro": os.environ.get("ROS_DISTRO", "kilted"),
    }


def write_metadata_yaml(bag_dir: Path, info: dict) -> None:
    """Write metadata.yaml atomically (temp file + rename), so it is either whole or absent."""
    text = yaml.safe_dump({"rosbag2_bagfile_information": info}, sort_keys=False,
                          default_flow_style=False, width=1_000_000)
    write_atomic(bag_dir / "metadata.yaml", text, fsync=True)


def _policy_ids(text: str) -> list[str]:
    """policy_ids: a JSON list (this recorder) or comma-separated ids (other writers)."""
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, list):
        return [str(x) for x in parsed]
    return [part.strip() for part in str(text).split(",") if part.strip()]


def load_episode_metadata(bag_dir: Path | str) -> dict:
    """custom_data of an episode bag with its JSON / number values decoded: the one reader of
    metadata.yaml (the recorder's tests, ingestion, tools). A bag cut by a crash has none:
    BagError (``bag_repair.reindex_bag`` rebuilds it; ingestion does that first). A value that does
    not decode (a bag edited or written by another tool) is left out with a warning: ingestion then
    falls back to the recorded stream."""
    bag_dir = Path(bag_dir)
    if not (bag_dir / "metadata.yaml").is_file():
        raise BagError(f"{bag_dir}: no metadata.yaml (a bag cut by a crash): aloe_data.bag_repair.reindex_bag "
                       "rebuilds it")
    info = (yaml.safe_load((bag_dir / "metadata.yaml").read_text()) or {}).get("rosbag2_bagfile_information") or {}
    raw = info.get("custom_data") or {}
    out: dict = dict(raw)
    decoders = {"policy_ids": _policy_ids,
                **dict.fromkeys(("executed_ticks", "message_counts", "stream_topics", "stamp_gaps"), json.loads),
                **dict.fromkeys(("takeovers", "dropped_messages", "start_time_ns", "end_time_ns"), int),
                "reward": float}
    for key, decode in decoders.items():
        if key in raw:
            try:
                out[key] = decode(raw[key])
            except (TypeError, ValueError) as exc:
                del out[key]
                warnings.warn(f"{bag_dir}: metadata.yaml custom_data {key!r} = {raw[key]!r} does not decode "
                              f"({exc}); ignored", stacklevel=2)
    return out
