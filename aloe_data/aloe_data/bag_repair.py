"""Crash repair of an episode bag (ROS-free): a bag cut by a crash (no metadata.yaml, an MCAP
without its summary) becomes a complete one in place: truncated to its last whole chunk, the
index and footer appended, metadata.yaml rebuilt from what was flushed (``reindex_bag``)."""

from __future__ import annotations

import collections
import logging
import os
import struct
import zlib
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

import yaml
from mcap.data_stream import ReadDataStream
from mcap.opcode import Opcode
from mcap.reader import make_reader
from mcap.records import Channel, Chunk, ChunkIndex, Header, MessageIndex, Metadata, MetadataIndex, Schema, Statistics

from .episode_bag import BagError, EpisodeSummary, TopicRecord, rosbag2_metadata, write_metadata_yaml
from .mcap_writer import MCAP_MAGIC, serialize_record, summary_section
from .schema import TOPIC_TASK

LOG = logging.getLogger("aloe_data.bag_repair")


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


def _read_definition(op: int, body: bytes, schemas: dict, channels: dict) -> None:
    """A SCHEMA or CHANNEL record (top level or inside a chunk) into its table, by id."""
    if op == Opcode.SCHEMA:
        record = Schema.read(ReadDataStream(BytesIO(body)))
        schemas[record.id] = record
    else:
        record = Channel.read(ReadDataStream(BytesIO(body)))
        channels[record.id] = record


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
                elif op in (Opcode.SCHEMA, Opcode.CHANNEL):
                    _read_definition(op, body, schemas, channels)
                elif op == Opcode.CHUNK:
                    chunk = Chunk.read(ReadDataStream(BytesIO(body)))
                    scan = _ChunkScan(pos, 9 + length, chunk)
                    for rop, roff, rbody in _chunk_records(chunk):
                        if rop in (Opcode.SCHEMA, Opcode.CHANNEL):
                            _read_definition(rop, rbody, schemas, channels)
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
            out += serialize_record(Header(profile="ros2", library="aloe_teleop.recorder (repaired)"))
        if chunks:
            last = chunks[-1]
            last.index_offsets = {}
            for cid, entries in last.index.items():
                last.index_offsets[cid] = cut + len(out)
                out += serialize_record(MessageIndex(channel_id=cid, records=entries))
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

