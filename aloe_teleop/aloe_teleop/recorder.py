"""The episode recorder core: serialized messages -> one rosbag2 MCAP bag per episode.

ROS-free (no rclpy): ``recorder_node`` feeds it (stamp, topic, CDR bytes) from raw subscriptions;
the trainer's ingestion calls :func:`reindex_bag` and :func:`load_episode_metadata`.

Bag layout (see docs/interfaces.md, "Bags")::

    <output_dir>/<episode_id>/                 one directory per episode (rosbag2 bag)
        <episode_id>_0.mcap                    MCAP, profile ros2, cdr messages, ros2msg schemas
        metadata.yaml                          rosbag2 metadata version 8 (read by Jazzy and Kilted)

``metadata.yaml`` exists only once the bag was closed (or re-indexed after a crash); its
``custom_data`` (string -> string, JSON for structured values) is listed in ``CUSTOM_DATA_KEYS``.

Why the MCAP is written here and not with rosbags' Writer: rosbags keeps a 1 MiB chunk in memory
and writes the index only at close, with no public way to flush mid-file, so a ``kill -9`` could
lose everything since the last 1 MiB and leave a file without footer that rosbags cannot open.
``mcap.Writer.flush()`` would allow flushing, but copies every byte four times (measured at
~40 % of a plain file write). :class:`McapBagWriter` writes the same MCAP ``ros2`` layout with
one copy (the kernel's): messages are chunked, every ``flush_interval_s`` the open chunk and its
message indexes are written and fsynced, and :func:`reindex_bag` turns a cut file back into a
complete one in place (truncate to the last whole chunk, append index + footer), so a crash
loses at most the last flush interval. Records are the ``mcap`` library's (``mcap.records``) and
the rosbags typestore (``bag_layout.make_typestore``) provides every definition and type hash.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import re
import shutil
import struct
import threading
import time
import zlib
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import yaml
from mcap.data_stream import ReadDataStream, RecordBuilder
from mcap.opcode import Opcode
from mcap.reader import make_reader
from mcap.records import (
    Channel,
    Chunk,
    ChunkIndex,
    DataEnd,
    Footer,
    Header,
    MessageIndex,
    Metadata,
    MetadataIndex,
    Schema,
    Statistics,
    SummaryOffset,
)
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2.metadata import dump_qos_v8

from aloe_data.bag_layout import make_typestore, register_installed_type
from aloe_data.schema import TOPIC_EPISODE_EVENT, TOPIC_TASK

LOG = logging.getLogger("aloe_teleop.recorder")

BAG_FORMAT_VERSION = "1"
ROSBAG2_METADATA_VERSION = 8  # string QoS profiles; parsed by rosbag2 Jazzy (8) and Kilted (9)
MCAP_MAGIC = b"\x89MCAP0\r\n"
from aloe_data.schema import EVENT_NAMES  # noqa: E402
from aloe_data.schema import SOURCE_NAMES as _SOURCES  # noqa: E402

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

_MSGTYPE_EVENT = "aloe_msgs/msg/EpisodeEvent"
_MSGTYPE_INTERVENTION = "aloe_msgs/msg/Intervention"
_MSGTYPE_EXECUTED = "aloe_msgs/msg/ExecutedAction"
_MSGTYPE_CHUNK = "aloe_msgs/msg/ActionChunk"
_MSGTYPE_STRING = "std_msgs/msg/String"


class BagError(RuntimeError):
    """A bag could not be written, repaired or read; the message says what to do."""


# --------------------------------------------------------------------------------------------
# QoS and topic configuration
# --------------------------------------------------------------------------------------------

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


def parse_topic_entry(entry: str) -> tuple[str, str]:
    """``"/topic"`` or ``"/topic:pkg/msg/Type"`` -> (topic, msgtype or '')."""
    topic, _, msgtype = entry.strip().partition(":")
    if not topic.startswith("/"):
        raise ValueError(f"topic {entry!r}: give absolute topic names ('/joint_states')")
    if msgtype and msgtype.count("/") != 2:
        raise ValueError(f"topic {entry!r}: type must look like 'sensor_msgs/msg/Image'")
    return topic, msgtype


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
        if msgtype not in (_MSGTYPE_EVENT, _MSGTYPE_INTERVENTION, _MSGTYPE_EXECUTED, _MSGTYPE_CHUNK) \
                and not (msgtype == _MSGTYPE_STRING and topic == self.task_topic):
            return
        try:
            msg = self.typestore.deserialize_cdr(bytes(data), msgtype)
        except Exception:  # a malformed control message must not stop recording
            self.decode_errors += 1
            return
        if msgtype == _MSGTYPE_EVENT:
            if msg.event == 0:
                self.episode_id = self.episode_id or msg.episode_id
                self.event_task = msg.task or self.event_task
                self.start_time_ns = self.start_time_ns or stamp_ns
            elif msg.event in EVENT_NAMES:
                self.outcome = EVENT_NAMES[msg.event]
                self.reward = float(msg.reward)
                self.end_time_ns = stamp_ns
                self.episode_id = self.episode_id or msg.episode_id
        elif msgtype == _MSGTYPE_INTERVENTION:
            if msg.active and not self._operator_active:
                self.takeovers += 1
            self._operator_active = bool(msg.active)
        elif msgtype in (_MSGTYPE_EXECUTED, _MSGTYPE_CHUNK):
            if msg.policy_id and msg.policy_id not in self.policy_ids:
                self.policy_ids.append(msg.policy_id)
            if msgtype == _MSGTYPE_EXECUTED:
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
    tmp = bag_dir / "metadata.yaml.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, bag_dir / "metadata.yaml")


def load_episode_metadata(bag_dir: Path | str) -> dict:
    """custom_data of an episode bag with JSON/int values decoded (for ingestion).

    Re-indexes the bag first when it has no metadata.yaml (cut by a crash).
    """
    bag_dir = Path(bag_dir)
    if not (bag_dir / "metadata.yaml").is_file():
        reindex_bag(bag_dir)
    info = yaml.safe_load((bag_dir / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    raw = info.get("custom_data") or {}
    out: dict = dict(raw)
    for key in ("policy_ids", "executed_ticks", "message_counts", "stream_topics", "stamp_gaps"):
        if key in raw:
            out[key] = json.loads(raw[key])
    for key in ("takeovers", "dropped_messages", "start_time_ns", "end_time_ns"):
        if key in raw:
            out[key] = int(raw[key])
    if "reward" in raw:
        out["reward"] = float(raw["reward"])
    return out


# --------------------------------------------------------------------------------------------
# MCAP bag writer (one episode)
# --------------------------------------------------------------------------------------------

COMPRESSIONS = ("none", "zstd", "lz4")
_SMALL_PIECE = 64 * 1024  # pieces below this are coalesced before the write() syscall


def _record(opcode: int, body: bytes) -> bytes:
    return struct.pack("<BQ", opcode, len(body)) + body


def _rec(record) -> bytes:
    """An mcap.records record serialized (opcode + length + body)."""
    builder = RecordBuilder()
    record.write(builder)
    return builder.end()


def _compress(name: str, data: bytes) -> bytes:
    if name == "zstd":
        import zstandard
        return zstandard.ZstdCompressor().compress(data)
    if name == "lz4":
        import lz4.frame
        return lz4.frame.compress(data)
    return data


def summary_section(base: int, schemas: Iterable[Schema], channels: Iterable[Channel], statistics: Statistics,
                    chunk_indexes: list[ChunkIndex], metadata_indexes: list[MetadataIndex]) -> bytes:
    """DataEnd + summary + summary offsets + footer + closing magic, for a data section ending at
    file offset ``base``. Shared by the writer's close and the crash repair."""
    builder = RecordBuilder()
    DataEnd(data_section_crc=0).write(builder)
    summary_start = base + builder.count
    offsets: list[SummaryOffset] = []

    def group(opcode: int, records: Iterable) -> None:
        start = builder.count
        for r in records:
            r.write(builder)
        if builder.count > start:
            offsets.append(SummaryOffset(group_opcode=opcode, group_start=base + start,
                                         group_length=builder.count - start))

    group(Opcode.SCHEMA, schemas)
    group(Opcode.CHANNEL, channels)
    group(Opcode.STATISTICS, [statistics])
    group(Opcode.CHUNK_INDEX, chunk_indexes)
    group(Opcode.METADATA_INDEX, metadata_indexes)
    summary_offset_start = base + builder.count
    for o in offsets:
        o.write(builder)
    Footer(summary_start=summary_start, summary_offset_start=summary_offset_start, summary_crc=0).write(builder)
    return builder.end() + MCAP_MAGIC


class McapBagWriter:
    """Writes one rosbag2 MCAP bag directory; flushable at any time, crash-repairable.

    ``write`` takes already-serialized CDR bytes (never deserializes, never copies them: a chunk
    is a list of byte pieces handed to ``write()`` syscalls, its CRC computed incrementally).
    ``flush`` ends the current chunk, writes it with its message indexes and fsyncs: everything
    written before a flush survives a crash. Schemas and channels are top-level records written
    before the first chunk that uses them; the summary (index) is written by ``close``.
    The layout follows the MCAP ``ros2`` profile as rosbag2's MCAP plugin writes it.
    """

    def __init__(self, bag_dir: Path, *, chunk_size: int = 4 * 2**20, compression: str = "none",
                 fsync: bool = True, crc: bool = True, typestore=None):
        if compression not in COMPRESSIONS:
            raise ValueError(f"compression {compression!r}: use one of {', '.join(COMPRESSIONS)}")
        self.bag_dir = Path(bag_dir)
        self.bag_dir.mkdir(parents=True, exist_ok=False)
        self.mcap_path = self.bag_dir / f"{self.bag_dir.name}_0.mcap"
        self.typestore = typestore or make_typestore()
        self.fsync = fsync
        self.crc = crc  # chunk CRC: lets repair tell a damaged chunk (power loss) from a whole one
        self.chunk_size = int(chunk_size)
        self.compression = "" if compression == "none" else compression
        self._fd = os.open(self.mcap_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        self._offset = 0
        self._pending: list = [MCAP_MAGIC, _rec(Header(profile="ros2", library="aloe_teleop.recorder"))]
        self._schemas: dict[str, Schema] = {}
        self._channels: dict[str, Channel] = {}
        self._chunk_indexes: list[ChunkIndex] = []
        self._metadata_indexes: list[MetadataIndex] = []
        self._channel_counts: dict[int, int] = collections.defaultdict(int)
        self._new_chunk()
        self.topics: dict[str, TopicRecord] = {}
        self.start_ns = 2**63 - 1
        self.end_ns = 0
        self.bytes_written = 0
        self.flushed_offset = 0
        self.closed = False

    # ---- building -------------------------------------------------------------------------
    def _new_chunk(self) -> None:
        self._chunk: list = []
        self._chunk_len = 0
        self._chunk_crc = 0
        self._chunk_t0 = 2**64 - 1
        self._chunk_t1 = 0
        self._chunk_index: dict[int, list[tuple[int, int]]] = {}

    def add_topic(self, topic: str, msgtype: str, qos_profiles: str = "") -> None:
        if topic in self._channels:
            return
        if msgtype not in self._schemas:
            try:
                if not register_installed_type(self.typestore, msgtype):
                    raise KeyError(f"no installed share/<pkg>/msg/<Type>.msg for {msgtype} or a type it uses")
                msgdef, _ = self.typestore.generate_msgdef(msgtype, ros_version=2)
            except Exception as exc:
                raise BagError(f"no message definition for {msgtype} (topic {topic}): source the workspace "
                               f"that installs its package ({exc})") from exc
            schema = Schema(id=len(self._schemas) + 1, name=msgtype, encoding="ros2msg", data=msgdef.encode())
            self._schemas[msgtype] = schema
            self._pending.append(_rec(schema))
        type_hash = self.typestore.hash_rihs01(msgtype)
        channel = Channel(id=len(self._channels) + 1, topic=topic, message_encoding="cdr",
                          schema_id=self._schemas[msgtype].id,
                          metadata={"offered_qos_profiles": qos_profiles, "topic_type_hash": type_hash})
        self._channels[topic] = channel
        self._pending.append(_rec(channel))
        self.topics[topic] = TopicRecord(topic, msgtype, qos_profiles, type_hash)

    def has_topic(self, topic: str) -> bool:
        return topic in self._channels

    def write(self, topic: str, stamp_ns: int, data: bytes) -> None:
        record = self.topics[topic]
        cid = self._channels[topic].id
        head = struct.pack("<BQHIQQ", Opcode.MESSAGE, 22 + len(data), cid, record.count & 0xFFFFFFFF,
                           stamp_ns, stamp_ns)
        self._chunk_index.setdefault(cid, []).append((stamp_ns, self._chunk_len))
        self._chunk.append(head)
        self._chunk.append(data)
        if self.crc:
            self._chunk_crc = zlib.crc32(data, zlib.crc32(head, self._chunk_crc))
        self._chunk_len += len(head) + len(data)
        self._chunk_t0 = min(self._chunk_t0, stamp_ns)
        self._chunk_t1 = max(self._chunk_t1, stamp_ns)
        self._channel_counts[cid] += 1
        record.count += 1
        self.bytes_written += len(data)
        self.start_ns = min(self.start_ns, stamp_ns)
        self.end_ns = max(self.end_ns, stamp_ns)
        if self._chunk_len >= self.chunk_size:
            self._finish_chunk()

    def _finish_chunk(self) -> None:
        """Move the open chunk (+ its message indexes) to the pending output."""
        if not self._chunk:
            return
        pieces = self._chunk
        if self.compression:
            pieces = [_compress(self.compression, b"".join(pieces))]
        stored = sum(len(p) for p in pieces)
        comp = self.compression.encode()
        head_body = struct.pack("<QQQI", self._chunk_t0, self._chunk_t1, self._chunk_len, self._chunk_crc)
        head_body += struct.pack("<I", len(comp)) + comp + struct.pack("<Q", stored)
        chunk_start = self._offset + sum(len(p) for p in self._pending)
        chunk_length = 9 + len(head_body) + stored
        self._pending.append(struct.pack("<BQ", Opcode.CHUNK, len(head_body) + stored) + head_body)
        self._pending.extend(pieces)
        index_offsets, index_bytes = {}, []
        pos = chunk_start + chunk_length
        for cid, entries in self._chunk_index.items():
            rec = _rec(MessageIndex(channel_id=cid, records=entries))
            index_offsets[cid] = pos
            pos += len(rec)
            index_bytes.append(rec)
        self._pending.extend(index_bytes)
        self._chunk_indexes.append(ChunkIndex(
            message_start_time=self._chunk_t0, message_end_time=self._chunk_t1,
            chunk_start_offset=chunk_start, chunk_length=chunk_length, message_index_offsets=index_offsets,
            message_index_length=pos - (chunk_start + chunk_length), compression=self.compression,
            compressed_size=stored, uncompressed_size=self._chunk_len))
        self._new_chunk()
        self._write_pending()

    def _write_pending(self) -> None:
        """Hand the pending pieces to the kernel; small ones coalesced, large ones not copied."""
        small = bytearray()
        for piece in self._pending:
            if len(piece) < _SMALL_PIECE:
                small += piece
                continue
            if small:
                self._write_all(small)
                small = bytearray()
            self._write_all(piece)
        if small:
            self._write_all(small)
        self._pending = []

    def _write_all(self, data) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            self._offset += n
            view = view[n:]

    # ---- durability -------------------------------------------------------------------------
    def flush(self) -> None:
        self._finish_chunk()
        self._write_pending()
        if self.fsync:
            os.fsync(self._fd)
        self.flushed_offset = self._offset

    def metadata(self, custom_data: dict[str, str]) -> dict:
        return rosbag2_metadata([self.mcap_path.name], list(self.topics.values()),
                                self.start_ns, self.end_ns, custom_data)

    def close(self, custom_data: dict[str, str]) -> None:
        """Finish the MCAP (index, footer), then write metadata.yaml: a closed bag has both."""
        info = self.metadata(custom_data)
        self.flush()
        meta = _rec(Metadata(name="rosbag2", metadata={"serialized_metadata": yaml.safe_dump(info, sort_keys=False)}))
        self._metadata_indexes.append(MetadataIndex(offset=self._offset, length=len(meta), name="rosbag2"))
        self._pending.append(meta)
        count = sum(self._channel_counts.values())
        stats = Statistics(
            message_count=count, schema_count=len(self._schemas), channel_count=len(self._channels),
            attachment_count=0, metadata_count=len(self._metadata_indexes), chunk_count=len(self._chunk_indexes),
            message_start_time=self.start_ns if count else 0, message_end_time=self.end_ns if count else 0,
            channel_message_counts=dict(self._channel_counts))
        base = self._offset + len(meta)
        self._pending.append(summary_section(base, self._schemas.values(), self._channels.values(), stats,
                                             self._chunk_indexes, self._metadata_indexes))
        self._write_pending()
        if self.fsync:
            os.fsync(self._fd)
        os.close(self._fd)
        self.closed = True
        write_metadata_yaml(self.bag_dir, info)

    def abandon(self) -> None:
        """Close the file as it is (what a crash leaves); for tests and salvage."""
        if not self.closed:
            os.close(self._fd)
            self.closed = True

    def salvage(self, custom_data: dict[str, str]) -> None:
        """After a write error (disk full): keep what was flushed, make it a valid bag.

        Truncates to the last successful flush (a failed write may have left part of a record),
        then repairs the file in place and writes metadata.yaml.
        """
        self.abandon()
        with open(self.mcap_path, "r+b") as f:
            f.truncate(self.flushed_offset)
        # Counts are recomputed from what is in the file; only keep what the file cannot tell.
        keep = ("end_reason", "dropped_messages", "stream_topics")
        reindex_bag(self.bag_dir, extra_custom_data={k: custom_data[k] for k in keep if k in custom_data})


# --------------------------------------------------------------------------------------------
# Crash repair and reindex
# --------------------------------------------------------------------------------------------

@dataclass
class _ChunkScan:
    start: int
    length: int
    chunk: Chunk
    index: dict[int, list[tuple[int, int]]] = field(default_factory=dict)  # channel -> (time, offset)
    index_offsets: dict[int, int] = field(default_factory=dict)
    index_end: int = 0


def _mcap_is_complete(f) -> bool:
    size = f.seek(0, os.SEEK_END)
    if size < 8 + 9 + 20 + 8:
        return False
    f.seek(size - 8)
    if f.read(8) != MCAP_MAGIC:
        return False
    f.seek(0)
    try:
        return make_reader(f).get_summary() is not None
    except Exception:
        return False


def _chunk_records(chunk: Chunk):
    """Yield (opcode, offset_in_uncompressed, body) of every record inside a chunk; CRC-checked."""
    if chunk.compression == "":
        data = chunk.data
    elif chunk.compression == "zstd":
        import zstandard
        data = zstandard.decompress(chunk.data, chunk.uncompressed_size)
    elif chunk.compression == "lz4":
        import lz4.frame
        data = lz4.frame.decompress(chunk.data)
    else:
        raise BagError(f"unsupported chunk compression {chunk.compression!r}")
    if len(data) != chunk.uncompressed_size or (chunk.uncompressed_crc and zlib.crc32(data) != chunk.uncompressed_crc):
        raise BagError("chunk failed its size/CRC check")
    pos = 0
    while pos < len(data):
        op, length = struct.unpack_from("<BQ", data, pos)
        body_start = pos + 9
        if body_start + length > len(data):
            raise BagError("chunk record overruns the chunk")
        yield op, pos, data[body_start:body_start + length]
        pos = body_start + length


def repair_mcap(path: Path) -> dict:
    """Make an MCAP cut by a crash complete again, in place; returns what was done.

    Keeps every whole record of the data section (chunks are CRC-checked), drops the partial
    tail, rebuilds the last chunk's message indexes and appends a fresh summary (schemas,
    channels, statistics, chunk and metadata indexes) and footer. A complete file is untouched.
    """
    path = Path(path)
    with open(path, "r+b") as f:
        if _mcap_is_complete(f):
            return {"repaired": False, "bytes_dropped": 0}
        size = f.seek(0, os.SEEK_END)
        f.seek(0)
        head = f.read(8)
        if size < 8 and MCAP_MAGIC.startswith(head):  # died before the first flush
            f.seek(0)
            f.truncate(0)
            f.write(MCAP_MAGIC)
            size = 8
        elif head != MCAP_MAGIC:
            raise BagError(f"{path} is not an MCAP file (bad magic); it cannot be recovered")
        schemas: dict[int, Schema] = {}
        channels: dict[int, Channel] = {}
        chunks: list[_ChunkScan] = []
        metadata_indexes: list[MetadataIndex] = []
        stats_counts: dict[int, int] = collections.defaultdict(int)
        t_min, t_max = 2**64 - 1, 0
        pos = 8
        good_end = 8
        seen_header = False
        while pos + 9 <= size:
            f.seek(pos)
            op, length = struct.unpack("<BQ", f.read(9))
            end = pos + 9 + length
            if end > size or op in (Opcode.DATA_END, Opcode.FOOTER) or op == 0:
                break
            body = f.read(length)
            if not seen_header and op != Opcode.HEADER:
                break
            try:
                if op == Opcode.HEADER:
                    seen_header = True
                elif op == Opcode.SCHEMA:
                    s = Schema.read(ReadDataStream(BytesIO(body)))
                    schemas[s.id] = s
                elif op == Opcode.CHANNEL:
                    c = Channel.read(ReadDataStream(BytesIO(body)))
                    channels[c.id] = c
                elif op == Opcode.CHUNK:
                    chunk = Chunk.read(ReadDataStream(BytesIO(body)))
                    scan = _ChunkScan(pos, 9 + length, chunk)
                    for rop, roff, rbody in _chunk_records(chunk):
                        if rop == Opcode.SCHEMA:
                            s = Schema.read(ReadDataStream(BytesIO(rbody)))
                            schemas[s.id] = s
                        elif rop == Opcode.CHANNEL:
                            c = Channel.read(ReadDataStream(BytesIO(rbody)))
                            channels[c.id] = c
                        elif rop == Opcode.MESSAGE:
                            cid, _seq, log_time = struct.unpack_from("<HIQ", rbody, 0)
                            scan.index.setdefault(cid, []).append((log_time, roff))
                    chunks.append(scan)
                elif op == Opcode.MESSAGE_INDEX:
                    if chunks:
                        (cid,) = struct.unpack_from("<H", body, 0)
                        chunks[-1].index_offsets[cid] = pos
                        chunks[-1].index_end = end
                elif op == Opcode.METADATA:
                    m = Metadata.read(ReadDataStream(BytesIO(body)))
                    metadata_indexes.append(MetadataIndex(offset=pos, length=9 + length, name=m.name))
                elif op == Opcode.MESSAGE:
                    raise BagError("unchunked MCAP messages are not supported by repair_mcap")
            except Exception as exc:  # any damage ends the recoverable prefix
                if isinstance(exc, BagError) and "unchunked" in str(exc):
                    raise
                LOG.warning("%s: record at byte %d is damaged (%s); cutting the file there", path, pos, exc)
                break
            pos = end
            good_end = end
        # The last chunk's message indexes may be partial: cut right after that chunk and
        # write them again from the scan.
        cut = good_end
        if chunks:
            last = chunks[-1]
            cut = last.start + last.length
            metadata_indexes = [m for m in metadata_indexes if m.offset + m.length <= cut]
        dropped = size - cut
        f.seek(cut)
        f.truncate(cut)
        out = bytearray()
        if not seen_header:  # cut inside the header record: nothing else can be there either
            out += _rec(Header(profile="ros2", library="aloe_teleop.recorder (repaired)"))
        if chunks:
            last = chunks[-1]
            last.index_offsets = {}
            for cid, entries in last.index.items():
                last.index_offsets[cid] = cut + len(out)
                out += _rec(MessageIndex(channel_id=cid, records=entries))
            last.index_end = cut + len(out)
        for scan in chunks:
            for cid, entries in scan.index.items():
                stats_counts[cid] += len(entries)
            if scan.index:
                t_min = min(t_min, scan.chunk.message_start_time)
                t_max = max(t_max, scan.chunk.message_end_time)
        message_count = sum(stats_counts.values())
        statistics = Statistics(
            attachment_count=0, channel_count=len(channels), channel_message_counts=dict(stats_counts),
            chunk_count=len(chunks), message_count=message_count,
            message_end_time=t_max if message_count else 0, message_start_time=t_min if message_count else 0,
            metadata_count=len(metadata_indexes), schema_count=len(schemas))
        chunk_indexes = [ChunkIndex(
            chunk_start_offset=s.start, chunk_length=s.length, message_index_offsets=dict(s.index_offsets),
            message_index_length=(s.index_end - (s.start + s.length)) if s.index_offsets else 0,
            message_start_time=s.chunk.message_start_time, message_end_time=s.chunk.message_end_time,
            compression=s.chunk.compression, compressed_size=len(s.chunk.data),
            uncompressed_size=s.chunk.uncompressed_size) for s in chunks]
        out += summary_section(cut + len(out), schemas.values(), channels.values(), statistics, chunk_indexes,
                               metadata_indexes)
        f.write(out)
        f.flush()
        os.fsync(f.fileno())
    return {"repaired": True, "bytes_dropped": dropped, "messages": message_count}


def reindex_bag(bag_dir: Path | str, *, task_topic: str = TOPIC_TASK,
                extra_custom_data: dict[str, str] | None = None) -> dict:
    """Rebuild metadata.yaml of a bag (like ``ros2 bag reindex``), repairing a crash-cut MCAP.

    Every ``*.mcap`` file of ``bag_dir`` is first made complete by :func:`repair_mcap` (the
    partial tail after the last whole chunk is dropped), then read once to count messages and
    recompute custom_data (episode_id, task, outcome, policy_ids, takeovers, ...). Values of
    ``extra_custom_data`` (e.g. end_reason) win over the recomputed ones; without it an existing
    metadata.yaml's end_reason/dropped_messages are kept, and a bag that had none is marked
    ``end_reason: crash`` and ``reindexed: true``. Returns the ``rosbag2_bagfile_information`` dict.
    """
    bag_dir = Path(bag_dir)
    files = sorted(bag_dir.glob("*.mcap"))
    if not files:
        raise BagError(f"{bag_dir}: no .mcap file; is this an aloe_teleop bag directory?")
    previous: dict[str, str] = {}
    meta_path = bag_dir / "metadata.yaml"
    if meta_path.is_file():
        try:
            previous = (yaml.safe_load(meta_path.read_text())["rosbag2_bagfile_information"]
                        .get("custom_data") or {})
        except Exception:
            previous = {}
    summary = EpisodeSummary(task_topic)
    topics: dict[str, TopicRecord] = {}
    start_ns, end_ns = 2**63 - 1, 0
    repaired = False
    for path in files:
        result = repair_mcap(path)
        repaired = repaired or result["repaired"]
        if result["repaired"]:
            LOG.warning("%s: repaired after an unclean stop, %d trailing bytes dropped",
                        path, result["bytes_dropped"])
        with open(path, "rb") as f:
            reader = make_reader(f)
            for channel in (reader.get_summary().channels.values() if reader.get_summary() else []):
                schema = reader.get_summary().schemas.get(channel.schema_id)
                if channel.topic not in topics and schema is not None:
                    topics[channel.topic] = TopicRecord(
                        channel.topic, schema.name, channel.metadata.get("offered_qos_profiles", ""),
                        channel.metadata.get("topic_type_hash", ""))
            for schema, channel, message in reader.iter_messages(log_time_order=True):
                rec = topics.get(channel.topic)
                if rec is None:
                    rec = topics[channel.topic] = TopicRecord(
                        channel.topic, schema.name if schema else "",
                        channel.metadata.get("offered_qos_profiles", ""),
                        channel.metadata.get("topic_type_hash", ""))
                rec.count += 1
                start_ns = min(start_ns, message.log_time)
                end_ns = max(end_ns, message.log_time)
                summary.observe(channel.topic, rec.msgtype, message.log_time, message.data)
    for rec in topics.values():
        if not rec.type_hash:
            try:
                rec.type_hash = summary.typestore.hash_rihs01(rec.msgtype)
            except Exception:
                rec.type_hash = ""
    had_metadata = bool(previous)
    custom = summary.custom_data(
        end_reason=previous.get("end_reason", "crash") if had_metadata else "crash",
        dropped=int(previous.get("dropped_messages", "0") or 0))
    if repaired or not had_metadata:
        custom["reindexed"] = "true"
    custom.update(extra_custom_data or {})
    info = rosbag2_metadata([p.name for p in files], list(topics.values()), start_ns, end_ns, custom)
    write_metadata_yaml(bag_dir, info)
    return info


# --------------------------------------------------------------------------------------------
# The recorder: queue + writer thread + episode state machine
# --------------------------------------------------------------------------------------------

@dataclass
class RecorderConfig:
    output_dir: str = "bags"
    episode_event_topic: str = TOPIC_EPISODE_EVENT
    task_topic: str = TOPIC_TASK
    latched_topics: tuple[str, ...] = (TOPIC_TASK,)
    flush_interval_s: float = 1.0
    chunk_size: int = 4 * 2**20
    compression: str = "none"
    fsync: bool = True
    chunk_crc: bool = True
    queue_max_mb: float = 512.0
    queue_max_messages: int = 100_000
    min_free_mb: float = 500.0
    disk_check_interval_s: float = 1.0
    stream_topics: dict = field(default_factory=dict)  # observation stream -> topic, written to the metadata


class RecorderQueue:
    """FIFO bounded by bytes and by count; ``put`` never blocks (callbacks must not)."""

    def __init__(self, max_bytes: int, max_items: int):
        self.max_bytes = max_bytes
        self.max_items = max_items
        self._items: collections.deque = collections.deque()
        self._bytes = 0
        self._cond = threading.Condition()
        self.dropped = 0
        self.high_water_bytes = 0

    def put(self, item: tuple[int, str, bytes]) -> bool:
        size = len(item[2])
        with self._cond:
            if self._bytes + size > self.max_bytes or len(self._items) >= self.max_items:
                self.dropped += 1
                return False
            self._items.append(item)
            self._bytes += size
            self.high_water_bytes = max(self.high_water_bytes, self._bytes)
            self._cond.notify()
        return True

    def get_batch(self, timeout: float, max_items: int = 256) -> list:
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
            batch = []
            while self._items and len(batch) < max_items:
                item = self._items.popleft()
                self._bytes -= len(item[2])
                batch.append(item)
            return batch

    def __len__(self) -> int:
        return len(self._items)

    @property
    def bytes(self) -> int:
        return self._bytes


def safe_dir_name(episode_id: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", episode_id).strip("._")
    return name or "episode"


def disk_free_bytes(path: str | Path) -> int:
    """Free bytes for an unprivileged writer on the filesystem holding ``path``."""
    return shutil.disk_usage(path).free


class Recorder:
    """Episode recorder: ``enqueue`` from subscription callbacks, a thread writes the bags.

    Every message goes through one FIFO so EpisodeEvents split the stream exactly where they
    were received. START opens ``<output_dir>/<episode_id>/`` (latched topics first, then the
    event); SUCCESS/FAILURE/ABORT is written, then the bag is closed with its custom_data.
    Messages outside an episode are counted, not recorded.
    """

    def __init__(self, config: RecorderConfig, logger=None,
                 free_bytes: Callable[[str | Path], int] = disk_free_bytes,
                 clock_ns: Callable[[], int] = time.time_ns):
        self.config = config
        self.log = logger or LOG
        self.free_bytes = free_bytes
        self.clock_ns = clock_ns
        self.output_dir = Path(config.output_dir).expanduser()
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.typestore = make_typestore()
        self.queue = RecorderQueue(int(config.queue_max_mb * 2**20), config.queue_max_messages)
        self.topic_types: dict[str, str] = {config.episode_event_topic: _MSGTYPE_EVENT}
        self.topic_qos: dict[str, str] = {}
        self.latched = set(config.latched_topics)
        self._latched_last: dict[str, tuple[int, bytes]] = {}
        self._unrecordable: set[str] = set()  # topics whose type has no definition here
        self._bag: McapBagWriter | None = None
        self._summary: EpisodeSummary | None = None
        self._dropped_at_open = 0
        self._last_flush = time.monotonic()
        self._last_disk_check = 0.0
        self._last_drop_log = 0.0
        self._dropped_logged = 0
        self.disk_full = False
        self.stats = collections.Counter()
        self.closed_bags: list[Path] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="aloe_recorder_writer", daemon=True)

    # ---- called from the node's threads --------------------------------------------------
    def set_topic(self, topic: str, msgtype: str, qos_profiles: Iterable[QosInfo] = (),
                  latched: bool = False) -> None:
        """Declare a topic's type (and offered QoS) before its messages are enqueued."""
        profiles = list(qos_profiles)
        self.topic_qos[topic] = dump_qos_profiles(profiles)
        self.topic_types[topic] = msgtype
        if latched or (profiles and all(p.transient_local for p in profiles)):
            self.latched.add(topic)

    def enqueue(self, stamp_ns: int, topic: str, data: bytes) -> bool:
        """Subscription callback body: O(1), never blocks; returns False when the queue is full."""
        return self.queue.put((stamp_ns, topic, data))

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Drain the queue, close an open bag (end_reason shutdown), join the writer thread."""
        self._stop.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            self.log.error(f"recorder writer thread did not stop within {timeout}s; "
                           f"{len(self.queue)} queued messages are lost")

    @property
    def recording(self) -> bool:
        return self._bag is not None

    @property
    def current_bag(self) -> Path | None:
        return self._bag.bag_dir if self._bag else None

    # ---- writer thread -------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            batch = self.queue.get_batch(timeout=min(0.1, self.config.flush_interval_s))
            for stamp, topic, data in batch:
                try:
                    self._handle(stamp, topic, data)
                except Exception as exc:  # never let one message kill the writer thread
                    self.stats["errors"] += 1
                    self.log.error(f"recorder: failed on a message of {topic}: {exc!r}")
            self._periodic()
            if self._stop.is_set() and not batch and len(self.queue) == 0:
                break
        if self._bag is not None:
            self._close("shutdown")
        self._report_drops(force=True)

    def _periodic(self) -> None:
        now = time.monotonic()
        self._report_drops()
        if self._bag is None:
            return
        if now - self._last_flush >= self.config.flush_interval_s:
            if not self._flush():
                return
        if now - self._last_disk_check >= self.config.disk_check_interval_s:
            self._last_disk_check = now
            free = self.free_bytes(self.output_dir)
            if free < self.config.min_free_mb * 2**20:
                self.log.error(
                    f"recorder: free disk space {free / 2**20:.0f} MB at {self.output_dir} is below "
                    f"min_free_mb={self.config.min_free_mb:.0f}: closing bag {self._bag.bag_dir} cleanly "
                    f"and stopping recording; free disk space, then start a new episode")
                self.disk_full = True
                self._close("disk_full")

    def _flush(self) -> bool:
        self._last_flush = time.monotonic()
        if self._bag is None:
            return False
        try:
            self._bag.flush()
        except OSError as exc:
            self._write_failed(exc)
            return False
        return True

    def _report_drops(self, force: bool = False) -> None:
        dropped = self.queue.dropped
        if dropped != self._dropped_logged and (force or time.monotonic() - self._last_drop_log > 1.0):
            self.log.error(
                f"recorder: queue full, {dropped - self._dropped_logged} messages dropped "
                f"({dropped} in total); raise queue_max_mb or flush_interval_s, or record fewer topics")
            self._dropped_logged = dropped
            self._last_drop_log = time.monotonic()

    def _handle(self, stamp: int, topic: str, data: bytes) -> None:
        self.stats["received"] += 1
        if topic == self.config.episode_event_topic:
            self._handle_event(stamp, data)
            return
        if topic in self.latched:
            self._latched_last[topic] = (stamp, data)
        if self._bag is None:
            self.stats["outside_episode"] += 1
            return
        self._write(topic, stamp, data)

    def _write(self, topic: str, stamp: int, data: bytes) -> None:
        bag = self._bag
        msgtype = self.topic_types.get(topic)
        if msgtype is None:
            self.stats["unknown_type"] += 1
            return
        if topic in self._unrecordable:
            self.stats["unrecordable"] += 1
            return
        try:
            if not bag.has_topic(topic):
                bag.add_topic(topic, msgtype, self.topic_qos.get(topic, ""))
            bag.write(topic, stamp, data)
        except BagError as exc:
            self._unrecordable.add(topic)
            self.log.error(f"recorder: not recording {topic}: {exc}")
            return
        except OSError as exc:
            self._write_failed(exc)
            return
        self.stats["written"] += 1
        self._summary.observe(topic, msgtype, stamp, data)

    def _handle_event(self, stamp: int, data: bytes) -> None:
        try:
            event = self.typestore.deserialize_cdr(bytes(data), _MSGTYPE_EVENT)
        except Exception as exc:
            self.log.error(f"recorder: undecodable EpisodeEvent ignored: {exc!r}")
            return
        name = EVENT_NAMES.get(event.event, f"unknown({event.event})")
        if event.event == 0:
            if self._bag is not None:
                self.log.warning(f"recorder: START of episode '{event.episode_id}' while "
                                 f"'{self._summary.episode_id}' is open (no end event): closing it as INCOMPLETE")
                self._close("new_start")
            if self._open(event.episode_id, stamp):
                self._write(self.config.episode_event_topic, stamp, data)
            return
        if self._bag is None:
            self.log.warning(f"recorder: {name} for episode '{event.episode_id}' but no bag is open; ignored")
            return
        if event.episode_id != self._summary.episode_id:
            self.log.warning(f"recorder: {name} names episode '{event.episode_id}' but the open bag is "
                             f"'{self._summary.episode_id}'; closing it anyway")
        self._write(self.config.episode_event_topic, stamp, data)
        if self._bag is not None:
            self._close("event")

    def _open(self, episode_id: str, stamp: int) -> bool:
        free = self.free_bytes(self.output_dir)
        if free < self.config.min_free_mb * 2**20:
            self.disk_full = True
            self.log.error(
                f"recorder: not recording episode '{episode_id}': free disk space {free / 2**20:.0f} MB at "
                f"{self.output_dir} is below min_free_mb={self.config.min_free_mb:.0f}; free disk space")
            return False
        self.disk_full = False
        name = safe_dir_name(episode_id)
        bag_dir = self.output_dir / name
        n = 1
        while bag_dir.exists():
            n += 1
            bag_dir = self.output_dir / f"{name}_{n}"
        if n > 1:
            self.log.warning(f"recorder: {self.output_dir / name} exists; recording episode into {bag_dir}")
        try:
            self._bag = McapBagWriter(bag_dir, chunk_size=self.config.chunk_size,
                                      compression=self.config.compression, fsync=self.config.fsync,
                                      crc=self.config.chunk_crc, typestore=self.typestore)
        except OSError as exc:
            self.log.error(f"recorder: cannot create bag {bag_dir}: {exc}; episode not recorded")
            return False
        self._summary = EpisodeSummary(self.config.task_topic, self.config.stream_topics)
        self._dropped_at_open = self.queue.dropped
        self._last_flush = time.monotonic()
        self._last_disk_check = time.monotonic()
        # Declare every known topic up front (like ros2 bag record), then the latched state.
        for topic, msgtype in list(self.topic_types.items()):  # the node thread may add topics
            if topic in self._unrecordable:
                continue
            try:
                self._bag.add_topic(topic, msgtype, self.topic_qos.get(topic, ""))
            except BagError as exc:
                self._unrecordable.add(topic)
                self.log.error(f"recorder: not recording {topic}: {exc}")
        for topic, (_old_stamp, latched_data) in sorted(self._latched_last.items()):
            self._write(topic, stamp, latched_data)
        self.log.info(f"recorder: episode '{episode_id}' recording to {bag_dir}")
        return True

    def _close(self, end_reason: str) -> None:
        bag, summary = self._bag, self._summary
        self._bag = None
        custom = summary.custom_data(end_reason, dropped=self.queue.dropped - self._dropped_at_open)
        if "stamp_gaps" in custom:
            gaps = json.loads(custom["stamp_gaps"])
            self.log.warning("recorder: messages missing before they reached the recorder (gaps in header stamps): "
                             + ", ".join(f"{t}: {g['missing']} at a {g['period_s'] * 1e3:.2f} ms period"
                                         for t, g in sorted(gaps.items()))
                             + "; raise qos_depth, or check the publisher's QoS and the CPU load")
        try:
            bag.close(custom)
        except OSError as exc:
            self.log.error(f"recorder: closing {bag.bag_dir} failed ({exc}); salvaging the flushed part")
            custom["end_reason"] = "write_error"
            self._salvage(bag, custom)
            return
        self.closed_bags.append(bag.bag_dir)
        counts = ", ".join(f"{t}={c}" for t, c in summary.message_counts.items())
        self.log.info(f"recorder: closed {bag.bag_dir} outcome={custom['outcome']} reason={end_reason} "
                      f"takeovers={custom['takeovers']} messages: {counts}")

    def _write_failed(self, exc: OSError) -> None:
        bag, summary = self._bag, self._summary
        self._bag = None
        self.disk_full = True
        self.log.error(f"recorder: writing {bag.bag_dir} failed ({exc}); keeping everything up to the "
                       f"last flush and stopping this episode's recording; check the disk")
        custom = summary.custom_data("write_error", dropped=self.queue.dropped - self._dropped_at_open)
        self._salvage(bag, custom)

    def _salvage(self, bag: McapBagWriter, custom: dict[str, str]) -> None:
        try:
            bag.salvage(custom)
            self.closed_bags.append(bag.bag_dir)
        except Exception as exc:
            self.log.error(f"recorder: could not finish {bag.bag_dir} ({exc!r}); run "
                           f"aloe_teleop.recorder.reindex_bag on it once disk space is available")
