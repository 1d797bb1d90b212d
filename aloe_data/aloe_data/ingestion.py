"""Bags -> episodes: ROS-free ingestion of episode bags (the trainer, evaluation, the main job).

One bag (a rosbag2 MCAP directory, one episode) is decoded **once** into a columnar cache of
``.npy`` files, one per column, opened with ``mmap_mode="r"``; the cache entry is keyed by the
sha256 of the bag's ``.mcap`` bytes plus the decoding parameters, so later runs reuse it and
never re-parse a bag.

Per control tick t (one ``/aloe/executed_action`` message, ordered by header stamp):

* o_t: the newest image of every camera, joint_states and ee_pose with header stamp <= t
  (converted by ``aloe_data.observation``), and the episode's task text. Leading ticks before
  every observation stream has produced a message are dropped (the policy could not have
  acted on them either).
* a_t: the action really sent, whatever its source (POLICY / HUMAN / HOLD).
* r_t: ``/aloe/reward`` when recorded (each message is credited to the newest tick logged
  before it: the reward follows the action that caused it); otherwise sparse, 1 at the
  SUCCESS tick (the last tick stamped <= the SUCCESS event) and 0 elsewhere. Ticks after the
  episode's end event are not part of the episode.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Iterable

import numpy as np

from .atomic import write_atomic
from .bag_repair import reindex_bag
from .episode_bag import BagError, load_episode_metadata  # one error for a bag that cannot be used
from .observation import (ObservationError, ProprioSpec, format_mismatch, image_format, message_to_rgb, proprio_vector,
                          resize_rgb)
from .schema import (EVENT_NAMES, SOURCE_POLICY, TOPIC_CAMERA_FMT, TOPIC_EE_POSE, TOPIC_EPISODE_EVENT,
                     TOPIC_EXECUTED_ACTION, TOPIC_JOINT_STATES, TOPIC_REWARD, TOPIC_TASK)

log = logging.getLogger(__name__)

OUTCOMES = ("SUCCESS", "FAILURE", "ABORT", "INCOMPLETE", "UNKNOWN")  # INCOMPLETE: recorder saw no end event
TERMINAL_OUTCOMES = ("SUCCESS", "FAILURE")

# Bump when the cached columns' meaning changes: old entries are then ignored, not misread.
CACHE_VERSION = 2


class SkippedBagWarning(UserWarning):
    """A bag could not be ingested (corrupt, truncated, unknown types); it was skipped."""


@dataclass
class IngestionConfig:
    """How bags are decoded. Every field that changes the decoded numbers is part of the cache key."""

    cache_dir: str = "~/.cache/aloe/episodes"  # columnar episode cache (one entry per bag hash + decoding)
    cameras: list[str] | None = None          # None: every /camera/<name>/image_raw (or /compressed) topic
    image_size: int = 64                      # images resized to (size, size, 3)
    depth_range_m: float = 0.0                # > 0: depth cameras (16UC1 / 32FC1) become grey metres, 255 = this
                                              # range (PolicyConfig.depth_range_m); 0: a depth camera is an error
    proprio_joints: list[str] = field(default_factory=lambda: ProprioSpec().joints)  # arm joints in proprio
    gripper_joints: list[str] = field(default_factory=lambda: ProprioSpec().gripper_joints)  # gripper joints
    use_velocity: bool = True                 # proprio includes arm joint velocities
    use_ee_pose: bool = True                  # proprio includes the EE xyz (needs the ee_pose topic)
    topic_joint_states: str = TOPIC_JOINT_STATES         # sensor_msgs/JointState
    topic_ee_pose: str = TOPIC_EE_POSE                   # geometry_msgs/PoseStamped
    topic_task: str = TOPIC_TASK                         # std_msgs/String (else metadata / EpisodeEvent task)
    topic_executed_action: str = TOPIC_EXECUTED_ACTION   # aloe_msgs/ExecutedAction: the control ticks
    topic_episode_event: str = TOPIC_EPISODE_EVENT       # aloe_msgs/EpisodeEvent: outcome, end of episode
    topic_reward: str = TOPIC_REWARD                     # std_msgs/Float32 per tick (optional)

    @property
    def proprio_spec(self) -> ProprioSpec:
        return ProprioSpec(joints=list(self.proprio_joints), gripper_joints=list(self.gripper_joints),
                           use_velocity=self.use_velocity, use_ee_pose=self.use_ee_pose)

    def decode_key(self) -> str:
        """Digest of everything (but the bag bytes) that determines the cached columns."""
        d = asdict(self)
        d.pop("cache_dir")
        d["cache_version"] = CACHE_VERSION
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:10]


@dataclass
class Episode:
    """One episode as per-tick columns (numpy, memory-mapped when loaded from the cache).

    images[cam]: (T, h, w, 3) uint8 RGB; proprio: (T, P) float32; actions: (T, A) float32 in
    action units; sources: (T,) uint8 SOURCE_*; rewards: (T,) float32; stamps: (T,) int64 ns
    (tick header stamps); chunk_ids: (T,) uint64; policy_index: (T,) int32 into ``policy_ids``
    (-1 for HUMAN/HOLD ticks).
    """

    images: dict[str, np.ndarray]
    proprio: np.ndarray
    actions: np.ndarray
    sources: np.ndarray
    rewards: np.ndarray
    stamps: np.ndarray
    chunk_ids: np.ndarray
    policy_index: np.ndarray
    policy_ids: list[str]
    task: str = ""
    outcome: str = "UNKNOWN"
    bag: str = ""
    bag_hash: str = ""
    episode_id: str = ""
    camera_formats: dict[str, str] = field(default_factory=dict)  # camera -> "<encoding> <W>x<H>" it sent

    def __setstate__(self, state: dict) -> None:
        # An episode pickled before a field existed (a benchmark's cache) unpickles with that field's default.
        state = dict(state)
        for f in fields(self):
            if f.name not in state and f.default is not MISSING:
                state[f.name] = f.default
            elif f.name not in state and f.default_factory is not MISSING:
                state[f.name] = f.default_factory()
        self.__dict__.update(state)

    @property
    def terminal(self) -> bool:
        return self.outcome in TERMINAL_OUTCOMES

    def __len__(self) -> int:
        return int(self.actions.shape[0])

    @classmethod
    def from_arrays(cls, actions, proprio, rewards, *, images=None, sources=None, outcome="SUCCESS", task="",
                    policy_id="", bag="", episode_id="", stamps=None) -> "Episode":
        """An in-memory episode (synthetic data, tests); same semantics as an ingested bag."""
        actions = np.asarray(actions, np.float32)
        T = actions.shape[0]
        sources = np.zeros(T, np.uint8) if sources is None else np.asarray(sources, np.uint8)
        return cls(images={k: np.asarray(v, np.uint8) for k, v in (images or {}).items()},
                   proprio=np.asarray(proprio, np.float32).reshape(T, -1), actions=actions, sources=sources,
                   rewards=np.asarray(rewards, np.float32),
                   stamps=np.arange(T, dtype=np.int64) * 100_000_000 if stamps is None else np.asarray(stamps, np.int64),
                   chunk_ids=np.zeros(T, np.uint64),
                   policy_index=np.where(sources == SOURCE_POLICY, 0, -1).astype(np.int32),
                   policy_ids=[policy_id], task=task, outcome=outcome, bag=bag, bag_hash="", episode_id=episode_id)


# ---------------------------------------------------------------------------------------------
# Bag decoding
# ---------------------------------------------------------------------------------------------

_COLUMNS = ("proprio", "actions", "sources", "rewards", "stamps", "chunk_ids", "policy_index")


def _is_bag(d: Path) -> bool:
    return (d / "metadata.yaml").exists() or any(d.glob("*.mcap"))


def find_bags(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Expand paths into bag directories: a bag dir (holding metadata.yaml or *.mcap) is taken as
    is, a ``.mcap`` file means its directory, any other directory is searched at any depth (a
    bag's own folder is not searched further; hidden folders are skipped). The main loop's
    ``runs/<run>/bags/<phase>/<episode>/`` and a recorder's flat ``output_dir`` both work."""
    bags: list[Path] = []
    for p in map(Path, paths):
        p = p.expanduser()
        if p.is_file() and p.suffix == ".mcap":
            bags.append(p.parent)
        elif p.is_dir() and _is_bag(p):
            bags.append(p)
        elif p.is_dir():
            for root, dirs, _files in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                here = Path(root)
                if here != p and _is_bag(here):
                    bags.append(here)
                    dirs[:] = []
        else:
            raise FileNotFoundError(f"{p}: not a bag directory, .mcap file or directory of bags")
    seen, unique = set(), []
    for b in bags:
        if b.resolve() not in seen:
            seen.add(b.resolve())
            unique.append(b)
    return unique


def no_usable_bags(paths, report: "IngestionReport") -> str:
    """Why nothing could be trained on, never an empty reason."""
    where = ", ".join(str(p) for p in paths)
    if not report.skipped:
        return (f"no bags under {where}: no folder there holds a metadata.yaml or *.mcap (searched at any depth); "
                "point --bags at the recorder's output_dir or a run's bags/ folder")
    return f"no usable bags under {where}: " + "; ".join(f"{b}: {r}" for b, r in report.skipped)


def bag_content_hash(bag_dir: Path, memo_dir: Path | None = None) -> str:
    """sha256 over the bag's .mcap files (sorted by name): the cache key of its decoded episode.

    With ``memo_dir``, the hash is remembered per (path, size, mtime) of the files, as git's
    index does, so an unchanged bag is not read again just to be recognised.
    """
    files = sorted(Path(bag_dir).glob("*.mcap"))
    if not files:
        raise BagError("no .mcap file in the bag directory")
    memo = None
    if memo_dir is not None:
        stat_key = json.dumps([(str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files])
        memo = Path(memo_dir) / (hashlib.sha256(stat_key.encode()).hexdigest()[:32] + ".sha256")
        if memo.is_file():
            text = memo.read_text().strip()
            if len(text) == 64:
                return text
    h = hashlib.sha256()
    for f in files:
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    digest = h.hexdigest()
    if memo is not None:
        memo.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(memo, digest)
    return digest


def _stamp_ns(header) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def _ensure_indexed(bag_dir: Path) -> None:
    """A crash-cut bag has no metadata.yaml: rebuild it in place (aloe_data.bag_repair)."""
    if (bag_dir / "metadata.yaml").exists():
        return
    try:
        reindex_bag(bag_dir)
    except Exception as exc:  # reindexing a damaged bag can fail in many ways
        raise BagError(f"no metadata.yaml and reindex_bag failed: {exc}") from exc
    if not (bag_dir / "metadata.yaml").exists():
        raise BagError("no metadata.yaml, and reindex_bag did not write one")


def _newest_at_or_before(stamps: np.ndarray, ticks: np.ndarray) -> np.ndarray:
    """Index of the newest message with stamp <= tick, for each tick (-1 if none). stamps sorted."""
    return np.searchsorted(stamps, ticks, side="right") - 1


def decode_bag(bag_dir: Path, config: IngestionConfig) -> tuple[dict[str, np.ndarray], dict]:
    """Parse one bag into per-tick columns + metadata (the expensive step the cache avoids).

    Raises BagError with the reason when the bag cannot be used.
    """
    from rosbags.rosbag2 import Reader

    from .bag_layout import make_typestore

    typestore = make_typestore()
    custom = load_episode_metadata(bag_dir)
    try:
        reader = Reader(bag_dir)
        reader.open()
    except Exception as exc:
        raise BagError(f"cannot open ({type(exc).__name__}: {exc}): the .mcap file is truncated or corrupt; if it "
                       "was cut by a crash or an interrupted copy, move its metadata.yaml away and the next "
                       "ingestion re-indexes whatever was flushed (aloe_data.bag_repair.reindex_bag)") from exc
    try:
        by_topic = {c.topic: c for c in reader.connections}
        if config.topic_executed_action not in by_topic:
            raise BagError(f"no {config.topic_executed_action} topic (control ticks) in the bag")
        # Which topic holds each stream: the recorder writes it into the bag's metadata
        # (stream_topics); bags without it follow the default /camera/<name>/image_raw layout.
        streams = custom.get("stream_topics") or {}
        recorded_cams = {k.split(":", 1)[1]: t for k, t in streams.items() if k.startswith("camera:")}
        if not recorded_cams:
            recorded_cams = {t.split("/")[2]: t.removesuffix("/compressed") for t in by_topic
                             if t.startswith("/camera/") and t.endswith(("/image_raw", "/image_raw/compressed"))}
        cameras = sorted(recorded_cams) if config.cameras is None else list(config.cameras)
        cam_topics = {}
        for cam in cameras:
            topic = recorded_cams.get(cam, TOPIC_CAMERA_FMT.format(name=cam))
            if topic in by_topic:
                cam_topics[topic] = cam
            elif f"{topic}/compressed" in by_topic:
                cam_topics[f"{topic}/compressed"] = cam
            else:
                raise BagError(f"camera {cam!r}: neither {topic} nor {topic}/compressed recorded "
                               f"(recorded cameras: {recorded_cams or 'none'})")
        topic_joint_states = streams.get("joint_states", config.topic_joint_states)
        topic_ee_pose = streams.get("ee_pose", config.topic_ee_pose)
        wanted = {config.topic_executed_action, topic_joint_states, config.topic_task,
                  config.topic_episode_event, config.topic_reward, *cam_topics}
        if config.use_ee_pose:
            wanted.add(topic_ee_pose)
        for name in (topic_joint_states,) + ((topic_ee_pose,) if config.use_ee_pose else ()):
            if name not in by_topic:
                raise BagError(f"no {name} topic in the bag (needed for proprio)")
        conns = [c for c in reader.connections if c.topic in wanted]
        for c in conns:
            if c.msgtype not in typestore.types:
                raise BagError(f"topic {c.topic} has unknown message type {c.msgtype}")

        ticks, images, joints, ees, tasks, events, rewards = [], {c: [] for c in cameras}, [], [], [], [], []
        formats: dict[str, str] = {}  # camera -> its first frame's format; a change of kind or aspect is an error
        spec = config.proprio_spec
        n_read = 0
        try:
            for conn, logtime, raw in reader.messages(connections=conns):
                n_read += 1
                msg = typestore.deserialize_cdr(raw, conn.msgtype)
                topic = conn.topic
                if topic == config.topic_executed_action:
                    ticks.append((_stamp_ns(msg.header), logtime, np.asarray(msg.action, np.float32),
                                  int(msg.source), int(msg.chunk_id), str(msg.policy_id)))
                elif topic in cam_topics:
                    rgb, cam = message_to_rgb(msg, config.depth_range_m), cam_topics[topic]
                    fmt = image_format(msg, rgb)
                    if formats.setdefault(cam, fmt) != fmt and format_mismatch(formats[cam], fmt):
                        raise BagError(f"camera {cam!r} on {topic} changed from {formats[cam]} to {fmt} mid-episode: "
                                       f"{format_mismatch(formats[cam], fmt)}")
                    images[cam].append((_stamp_ns(msg.header), resize_rgb(rgb, config.image_size)))
                elif topic == topic_joint_states:
                    joints.append((_stamp_ns(msg.header), list(msg.name), np.asarray(msg.position),
                                   np.asarray(msg.velocity)))
                elif topic == topic_ee_pose:
                    p = msg.pose.position
                    ees.append((_stamp_ns(msg.header), np.array([p.x, p.y, p.z])))
                elif topic == config.topic_task:
                    tasks.append(str(msg.data))
                elif topic == config.topic_episode_event:
                    events.append((_stamp_ns(msg.header), int(msg.event), str(msg.task), str(msg.episode_id)))
                elif topic == config.topic_reward:
                    rewards.append((logtime, float(msg.data)))
        except (BagError, ObservationError):
            raise
        except Exception as exc:  # rosbags/mcap raise many types on truncated or corrupt chunks
            raise BagError(f"corrupt or truncated after {n_read} messages: {type(exc).__name__}: {exc}") from exc
        expected = sum(c.msgcount for c in conns)
        if n_read < expected:
            raise BagError(f"truncated: read {n_read} of the {expected} messages metadata.yaml lists")
    finally:
        reader.close()

    if not ticks:
        raise BagError(f"no {config.topic_executed_action} messages (no control ticks)")
    ticks.sort(key=lambda x: x[0])
    tick_stamps = np.array([t[0] for t in ticks], np.int64)

    # Episode end: ticks after the end event belong to no episode.
    end_events = [e for e in events if e[1] in (1, 2, 3)]
    outcome = str(custom.get("outcome") or (EVENT_NAMES[end_events[-1][1]] if end_events else "UNKNOWN")).upper()
    if outcome not in OUTCOMES:
        outcome = "UNKNOWN"
    end_stamp = end_events[-1][0] if end_events else None
    keep = np.ones(len(ticks), bool) if end_stamp is None else tick_stamps <= end_stamp
    if end_stamp is not None and not keep.any():
        keep[0] = True  # end event stamped before every tick: keep the first so the outcome still lands

    # Observation alignment: newest message with stamp <= tick.
    def aligned(stream):
        stream.sort(key=lambda x: x[0])
        idx = _newest_at_or_before(np.array([s[0] for s in stream], np.int64), tick_stamps)
        return idx

    streams = {"joint_states": joints}
    if config.use_ee_pose:
        streams["ee_pose"] = ees
    for cam in cameras:
        streams[f"camera {cam}"] = images[cam]
    idx = {}
    for name, stream in streams.items():
        if not stream:
            raise BagError(f"no {name} messages")
        idx[name] = aligned(stream)
        keep &= idx[name] >= 0
    if not keep.any():
        raise BagError("no control tick has every observation stream (images, joint_states, ee_pose) before it")
    sel = np.flatnonzero(keep)

    proprio = np.stack([proprio_vector(spec, joints[idx["joint_states"][i]][1], joints[idx["joint_states"][i]][2],
                                       joints[idx["joint_states"][i]][3],
                                       ees[idx["ee_pose"][i]][1] if config.use_ee_pose else None) for i in sel])
    dims = {ticks[i][2].shape[0] for i in sel}
    if len(dims) != 1:
        raise BagError(f"executed actions have different sizes {sorted(dims)}")
    actions = np.stack([ticks[i][2] for i in sel]).astype(np.float32)
    if not np.all(np.isfinite(actions)):
        raise BagError("executed actions contain NaN or inf")
    sources = np.array([ticks[i][3] for i in sel], np.uint8)
    policy_ids = list(dict.fromkeys([ticks[i][5] for i in sel if ticks[i][3] == SOURCE_POLICY and ticks[i][5]]))
    for pid in custom.get("policy_ids") or []:
        if pid not in policy_ids:
            policy_ids.append(pid)
    policy_index = np.array([policy_ids.index(ticks[i][5]) if ticks[i][3] == SOURCE_POLICY and ticks[i][5]
                             in policy_ids else -1 for i in sel], np.int32)

    T = len(sel)
    reward = np.zeros(T, np.float32)
    if rewards:
        log_times = np.array([ticks[i][1] for i in sel], np.int64)
        order = np.argsort(log_times, kind="stable")
        for t_log, value in rewards:
            j = np.searchsorted(log_times[order], t_log, side="right") - 1
            if j >= 0:
                reward[order[j]] += value
    elif outcome == "SUCCESS":
        succ = [e for e in end_events if e[1] == 1]
        k = T - 1
        if succ:
            k = int(np.searchsorted(tick_stamps[sel], succ[-1][0], side="right") - 1)
            k = min(max(k, 0), T - 1)
        reward[k] = 1.0

    task = str(custom.get("task") or (tasks[-1] if tasks else next((e[2] for e in events if e[2]), "")))
    episode_id = str(custom.get("episode_id") or next((e[3] for e in events if e[3]), bag_dir.name))
    columns = {
        "proprio": proprio.astype(np.float32), "actions": actions, "sources": sources, "rewards": reward,
        "stamps": tick_stamps[sel], "chunk_ids": np.array([ticks[i][4] for i in sel], np.uint64),
        "policy_index": policy_index,
    }
    for cam in cameras:
        frames = images[cam]
        columns[f"image_{cam}"] = np.stack([frames[idx[f"camera {cam}"][i]][1] for i in sel])
    meta = {"task": task, "outcome": outcome, "policy_ids": policy_ids, "cameras": cameras, "camera_formats": formats,
            "episode_id": episode_id, "num_ticks": T, "dropped_leading_ticks": int((~keep[:sel[0]]).sum())}
    return columns, meta


def _load_cached(entry: Path, bag_dir: Path, bag_hash: str) -> Episode:
    meta = json.loads((entry / "meta.json").read_text())
    cols = {name: np.load(entry / f"{name}.npy", mmap_mode="r") for name in _COLUMNS}
    images = {cam: np.load(entry / f"image_{cam}.npy", mmap_mode="r") for cam in meta["cameras"]}
    return Episode(images=images, policy_ids=meta["policy_ids"], task=meta["task"], outcome=meta["outcome"],
                   bag=str(bag_dir), bag_hash=bag_hash, episode_id=meta["episode_id"],
                   camera_formats=meta["camera_formats"], **cols)


def load_episode(bag_dir: str | os.PathLike, config: IngestionConfig) -> tuple[Episode, bool]:
    """One bag -> Episode, decoded once and then served from the cache. Returns (episode, from_cache).

    Raises BagError when the bag cannot be used.
    """
    bag_dir = Path(bag_dir).expanduser()
    _ensure_indexed(bag_dir)
    cache_root = Path(config.cache_dir).expanduser()
    bag_hash = bag_content_hash(bag_dir, memo_dir=cache_root / "hashes")
    entry = cache_root / f"{bag_hash[:24]}-{config.decode_key()}"
    if (entry / "meta.json").exists():
        try:
            return _load_cached(entry, bag_dir, bag_hash), True
        except (OSError, ValueError, KeyError) as exc:
            log.warning("cache entry %s unreadable (%s); decoding %s again", entry, exc, bag_dir)
            shutil.rmtree(entry, ignore_errors=True)
    columns, meta = decode_bag(bag_dir, config)
    cache_root.mkdir(parents=True, exist_ok=True)
    # Write beside the final name and rename: a killed ingestion never leaves a half entry.
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=cache_root))
    for name, arr in columns.items():
        np.save(tmp / f"{name}.npy", arr)
    meta.update(bag=str(bag_dir), bag_hash=bag_hash)
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    try:
        os.rename(tmp, entry)
    except OSError:  # a concurrent ingestion won the race; its entry is identical
        shutil.rmtree(tmp, ignore_errors=True)
    return _load_cached(entry, bag_dir, bag_hash), False


@dataclass
class IngestionReport:
    episodes: list[Episode]
    decoded: list[str] = field(default_factory=list)    # bags parsed this run
    cached: list[str] = field(default_factory=list)     # bags served from the cache
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (bag, reason)


def ingest_bags(paths: Iterable[str | os.PathLike], config: IngestionConfig | None = None,
                progress: bool = False) -> IngestionReport:
    """Every usable bag under ``paths`` -> episodes. An unusable bag gets one SkippedBagWarning
    naming it and why, and the rest are still used."""
    config = config or IngestionConfig()
    bags = find_bags(paths)
    report = IngestionReport(episodes=[])
    it = bags
    if progress:
        from aloe_data.progress import progress_bar
        it = progress_bar(bags, desc="ingest bags", unit="bag")
    for bag in it:
        try:
            episode, from_cache = load_episode(bag, config)
        except (BagError, ObservationError) as exc:
            report.skipped.append((str(bag), str(exc)))
            warnings.warn(f"skipping bag {bag}: {exc}", SkippedBagWarning, stacklevel=2)
            continue
        (report.cached if from_cache else report.decoded).append(str(bag))
        report.episodes.append(episode)
    return report
