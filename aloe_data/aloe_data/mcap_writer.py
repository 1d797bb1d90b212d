"""The MCAP writer of an episode bag (ROS-free): the rosbag2 ``ros2`` MCAP layout, crash-safe.

Why the MCAP is written here and not with rosbags' Writer: rosbags keeps a 1 MiB chunk in memory
and writes the index only at close, with no public way to flush mid-file, so a ``kill -9`` could
lose everything since the last 1 MiB and leave a file without footer that rosbags cannot open.
``mcap.Writer.flush()`` would allow flushing, but copies every byte four times (measured at
~40 % of a plain file write). :class:`McapBagWriter` writes the same MCAP ``ros2`` layout with
one copy (the kernel's): messages are chunked, every ``flush_interval_s`` the open chunk and its
message indexes are written and fsynced, and ``bag_repair.reindex_bag`` turns a cut file back
into a complete one in place (truncate to the last whole chunk, append index + footer), so a
crash loses at most the last flush interval. Records are the ``mcap`` library's
(``mcap.records``) and the rosbags typestore (``bag_layout.make_typestore``) provides every
definition and type hash.
"""

from __future__ import annotations

import collections
import os
import struct
import zlib
from pathlib import Path
from typing import Iterable

import yaml
from mcap.data_stream import RecordBuilder
from mcap.opcode import Opcode
from mcap.records import (Channel, ChunkIndex, DataEnd, Footer, Header, MessageIndex, Metadata, MetadataIndex, Schema,
                          Statistics, SummaryOffset)

from .bag_layout import make_typestore, register_installed_type
from .episode_bag import BagError, TopicRecord, rosbag2_metadata, write_metadata_yaml

MCAP_MAGIC = b"\x89MCAP0\r\n"


# --------------------------------------------------------------------------------------------
# MCAP bag writer (one episode)
# --------------------------------------------------------------------------------------------

COMPRESSIONS = ("none", "zstd", "lz4")
_SMALL_PIECE = 64 * 1024  # pieces below this are coalesced before the write() syscall


def _record(opcode: int, body: bytes) -> bytes:
    return struct.pack("<BQ", opcode, len(body)) + body


def serialize_record(record) -> bytes:
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
        self._pending: list = [MCAP_MAGIC, serialize_record(Header(profile="ros2", library="aloe_teleop.recorder"))]
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
            self._pending.append(serialize_record(schema))
        type_hash = self.typestore.hash_rihs01(msgtype)
        channel = Channel(id=len(self._channels) + 1, topic=topic, message_encoding="cdr",
                          schema_id=self._schemas[msgtype].id,
                          metadata={"offered_qos_profiles": qos_profiles, "topic_type_hash": type_hash})
        self._channels[topic] = channel
        self._pending.append(serialize_record(channel))
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
            rec = serialize_record(MessageIndex(channel_id=cid, records=entries))
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
        meta = serialize_record(Metadata(name="rosbag2", metadata={"serialized_metadata": yaml.safe_dump(info, sort_keys=False)}))
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

    # What a repaired bag keeps of the writer's custom data (counts are recomputed from the file).
    SALVAGE_KEEP = ("end_reason", "dropped_messages", "stream_topics")

    def salvage(self) -> None:
        """After a write error (disk full): keep what was flushed. Truncates to the last successful
        flush (a failed write may have left part of a record); ``bag_repair.reindex_bag`` then makes
        it a valid bag (with the SALVAGE_KEEP part of the custom data)."""
        self.abandon()
        with open(self.mcap_path, "r+b") as f:
            f.truncate(self.flushed_offset)

