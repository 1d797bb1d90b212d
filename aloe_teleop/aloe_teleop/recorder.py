"""The episode recorder core: serialized messages -> one rosbag2 MCAP bag per episode.

ROS-free (no rclpy): ``recorder_node`` feeds it (stamp, topic, CDR bytes) from raw subscriptions.
The bag itself (layout, metadata, MCAP writer, crash repair) is aloe_data's: ``episode_bag``,
``mcap_writer``, ``bag_repair``; this module holds the queue, the writer thread and the episode
state machine.
"""

from __future__ import annotations

import collections
import json
import logging
import re
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from aloe_data.bag_layout import make_typestore
from aloe_data.bag_repair import reindex_bag
from aloe_data.episode_bag import MSGTYPE_EVENT, BagError, EpisodeSummary, QosInfo, dump_qos_profiles
from aloe_data.mcap_writer import McapBagWriter
from aloe_data.schema import EVENT_NAMES, TOPIC_EPISODE_EVENT, TOPIC_TASK

LOG = logging.getLogger("aloe_teleop.recorder")


def parse_topic_entry(entry: str) -> tuple[str, str]:
    """``"/topic"`` or ``"/topic:pkg/msg/Type"`` -> (topic, msgtype or '')."""
    topic, _, msgtype = entry.strip().partition(":")
    if not topic.startswith("/"):
        raise ValueError(f"topic {entry!r}: give absolute topic names ('/joint_states')")
    if msgtype and msgtype.count("/") != 2:
        raise ValueError(f"topic {entry!r}: type must look like 'sensor_msgs/msg/Image'")
    return topic, msgtype


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
        self.topic_types: dict[str, str] = {config.episode_event_topic: MSGTYPE_EVENT}
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
            event = self.typestore.deserialize_cdr(bytes(data), MSGTYPE_EVENT)
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
            bag.salvage()
            reindex_bag(bag.bag_dir, extra_custom_data={k: custom[k] for k in bag.SALVAGE_KEEP if k in custom})
            self.closed_bags.append(bag.bag_dir)
        except Exception as exc:
            self.log.error(f"recorder: could not finish {bag.bag_dir} ({exc!r}); run "
                           f"aloe_data.bag_repair.reindex_bag on it once disk space is available")

