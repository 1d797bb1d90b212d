"""Recorder core without ROS: episode splitting, custom_data, crash repair, disk guard, overflow."""

from __future__ import annotations

import json
import errno
import logging
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from mcap.reader import make_reader
from rosbags.rosbag2 import Reader

from aloe_data.bag_layout import make_typestore
from aloe_data.bag_repair import reindex_bag
from aloe_data.episode_bag import BagError, load_episode_metadata
from aloe_data.mcap_writer import McapBagWriter
from aloe_teleop.recorder import Recorder, RecorderConfig, parse_topic_entry

STORE = make_typestore()
T = STORE.types


def header(ns: int = 0):
    return T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=ns // 10**9, nanosec=ns % 10**9),
                                     frame_id="")


def cdr(msg, msgtype: str) -> bytes:
    return bytes(STORE.serialize_cdr(msg, msgtype))


def event(episode_id: str, kind: int, task: str = "pick up the cube", reward: float = 0.0) -> bytes:
    return cdr(T["aloe_msgs/msg/EpisodeEvent"](header=header(), episode_id=episode_id, event=kind, reward=reward,
                                                task=task), "aloe_msgs/msg/EpisodeEvent")


def joint(i: int) -> bytes:
    return cdr(T["sensor_msgs/msg/JointState"](header=header(), name=["j0"], position=np.array([float(i)]),
                                                velocity=np.zeros(1), effort=np.zeros(1)), "sensor_msgs/msg/JointState")


def intervention(active: bool) -> bytes:
    return cdr(T["aloe_msgs/msg/Intervention"](header=header(), active=active, device=1,
                                                action=np.zeros(7, np.float32)), "aloe_msgs/msg/Intervention")


def executed(source: int, policy_id: str) -> bytes:
    return cdr(T["aloe_msgs/msg/ExecutedAction"](header=header(), action=np.zeros(7, np.float32), source=source,
                                                  chunk_id=0, index_in_chunk=0, policy_id=policy_id, hold_reason=""),
               "aloe_msgs/msg/ExecutedAction")


def task(text: str) -> bytes:
    return cdr(T["std_msgs/msg/String"](data=text), "std_msgs/msg/String")


class Feed:
    """Drives a Recorder like the node would, with increasing stamps."""

    def __init__(self, recorder: Recorder):
        self.recorder = recorder
        self.t = time.time_ns()

    def __call__(self, topic: str, data: bytes) -> None:
        self.t += 1_000_000
        assert self.recorder.enqueue(self.t, topic, data)


def make_recorder(tmp_path: Path, free_bytes=None, **overrides) -> Recorder:
    cfg = dict(output_dir=str(tmp_path / "bags"), flush_interval_s=0.05, min_free_mb=1.0, fsync=False)
    cfg.update(overrides)
    rec = Recorder(RecorderConfig(**cfg), **({"free_bytes": free_bytes} if free_bytes else {}))
    rec.set_topic("/joint_states", "sensor_msgs/msg/JointState")
    rec.set_topic("/aloe/task", "std_msgs/msg/String", latched=True)
    rec.set_topic("/aloe/intervention", "aloe_msgs/msg/Intervention")
    rec.set_topic("/aloe/executed_action", "aloe_msgs/msg/ExecutedAction")
    return rec


def wait_until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def read_joint_indices(bag: Path) -> list[int]:
    with Reader(bag) as reader:
        conns = [c for c in reader.connections if c.topic == "/joint_states"]
        out = [int(STORE.deserialize_cdr(raw, c.msgtype).position[0]) for c, _, raw in reader.messages(conns)]
    with open(next(bag.glob("*.mcap")), "rb") as f:
        assert sum(1 for _ in make_reader(f).iter_messages(topics=["/joint_states"])) == len(out)
    return out


def test_parse_topic_entry_accepts_name_with_optional_type():
    assert parse_topic_entry("/joint_states") == ("/joint_states", "")
    assert parse_topic_entry("/cam:sensor_msgs/msg/Image") == ("/cam", "sensor_msgs/msg/Image")
    with pytest.raises(ValueError):
        parse_topic_entry("joint_states")


def test_one_bag_per_episode_with_latched_task_and_metadata(tmp_path):
    rec = make_recorder(tmp_path)
    rec.start()
    feed = Feed(rec)
    feed("/aloe/task", task("stack the blocks"))
    feed("/joint_states", joint(-1))  # before START: not recorded
    feed("/aloe/episode_event", event("ep1", 0, task=""))
    for i in range(10):
        feed("/joint_states", joint(i))
    feed("/aloe/executed_action", executed(0, "policyA"))
    feed("/aloe/intervention", intervention(True))
    feed("/aloe/intervention", intervention(True))
    feed("/aloe/executed_action", executed(1, ""))
    feed("/aloe/intervention", intervention(False))
    feed("/aloe/intervention", intervention(True))
    feed("/aloe/intervention", intervention(False))
    feed("/aloe/executed_action", executed(0, "policyB"))
    feed("/aloe/episode_event", event("ep1", 1, task="", reward=1.0))
    feed("/aloe/episode_event", event("ep/2", 0, task="other task"))
    for i in range(5):
        feed("/joint_states", joint(i))
    feed("/aloe/episode_event", event("ep/2", 2))
    wait_until(lambda: len(rec.closed_bags) == 2)
    rec.stop()

    bag1, bag2 = tmp_path / "bags/ep1", tmp_path / "bags/ep_2"
    assert rec.closed_bags == [bag1, bag2]
    assert sorted(p.name for p in bag1.iterdir()) == ["ep1_0.mcap", "metadata.yaml"]
    assert read_joint_indices(bag1) == list(range(10))
    assert read_joint_indices(bag2) == list(range(5))
    m1 = load_episode_metadata(bag1)
    assert m1["episode_id"] == "ep1" and m1["outcome"] == "SUCCESS" and m1["reward"] == 1.0
    assert m1["task"] == "stack the blocks"  # from the latched topic: the event carried none
    assert m1["policy_ids"] == ["policyA", "policyB"]
    assert m1["takeovers"] == 2
    assert m1["executed_ticks"] == {"POLICY": 2, "HUMAN": 1, "HOLD": 0}
    assert m1["message_counts"]["/joint_states"] == 10 and m1["message_counts"]["/aloe/task"] == 1
    assert m1["end_reason"] == "event" and m1["dropped_messages"] == 0
    m2 = load_episode_metadata(bag2)
    assert m2["outcome"] == "FAILURE" and m2["task"] == "other task"
    assert m2["message_counts"]["/aloe/task"] == 1  # latched task re-written at the start of each bag
    info = yaml.safe_load((bag1 / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert info["version"] == 8 and info["storage_identifier"] == "mcap"
    assert info["relative_file_paths"] == ["ep1_0.mcap"]
    assert all(t["topic_metadata"]["type_description_hash"].startswith("RIHS01_")
               for t in info["topics_with_message_count"])
    assert all(isinstance(v, str) for v in info["custom_data"].values())


def test_end_event_without_episode_and_start_while_open_are_handled(tmp_path, caplog):
    rec = make_recorder(tmp_path)
    rec.start()
    feed = Feed(rec)
    with caplog.at_level(logging.WARNING, logger="aloe_teleop.recorder"):
        feed("/aloe/episode_event", event("ghost", 1))
        feed("/aloe/episode_event", event("a", 0))
        feed("/joint_states", joint(0))
        feed("/aloe/episode_event", event("b", 0))
        feed("/aloe/episode_event", event("b", 3))
        wait_until(lambda: len(rec.closed_bags) == 2)
        rec.stop()
    assert "no bag is open" in caplog.text and "no end event" in caplog.text
    assert load_episode_metadata(tmp_path / "bags/a")["end_reason"] == "new_start"
    assert load_episode_metadata(tmp_path / "bags/a")["outcome"] == "INCOMPLETE"
    assert load_episode_metadata(tmp_path / "bags/b")["outcome"] == "ABORT"


def make_crash_source(tmp_path: Path, n: int = 600) -> tuple[Path, bytes]:
    """A bag with many flushed chunks, as the recorder leaves it."""
    bag = McapBagWriter(tmp_path / "src", typestore=STORE, fsync=False)
    bag.add_topic("/aloe/episode_event", "aloe_msgs/msg/EpisodeEvent")
    bag.add_topic("/joint_states", "sensor_msgs/msg/JointState")
    t = 10**18
    bag.write("/aloe/episode_event", t, event("crashy", 0))
    for i in range(n):
        bag.write("/joint_states", t + 1 + i, joint(i))
        if i % 50 == 49:
            bag.flush()
    bag.flush()
    bag.abandon()  # the process dies: no index, no footer, no metadata.yaml
    return bag.mcap_path, bag.mcap_path.read_bytes()


@pytest.mark.parametrize("fraction", [1.0, 0.999, 0.73, 0.5, 0.21, 0.02, 0.0])
def test_reindex_repairs_a_bag_cut_anywhere_into_a_readable_prefix(tmp_path, fraction):
    _, data = make_crash_source(tmp_path)
    bag = tmp_path / "cut"
    bag.mkdir()
    (bag / "cut_0.mcap").write_bytes(data[: int(len(data) * fraction)])
    info = reindex_bag(bag)
    got = read_joint_indices(bag)
    assert got == list(range(len(got)))
    if fraction == 1.0:
        assert len(got) == 600
    if fraction >= 0.5:
        assert len(got) >= int(600 * fraction) - 60  # at most the unflushed chunk is lost
    assert info["custom_data"]["end_reason"] == "crash" and info["custom_data"]["reindexed"] == "true"
    assert info["message_count"] >= len(got)
    reindex_bag(bag)  # idempotent: a repaired bag stays as it is
    assert read_joint_indices(bag) == got


def test_low_disk_during_recording_closes_the_bag_cleanly_and_stops(tmp_path, caplog):
    free = {"bytes": 10 * 2**30}
    rec = make_recorder(tmp_path, min_free_mb=100.0, disk_check_interval_s=0.01,
                        free_bytes=lambda _path: free["bytes"])
    rec.start()
    feed = Feed(rec)
    feed("/aloe/episode_event", event("ep_disk", 0))
    for i in range(20):
        feed("/joint_states", joint(i))
    wait_until(lambda: rec.stats["written"] >= 21)
    with caplog.at_level(logging.ERROR, logger="aloe_teleop.recorder"):
        free["bytes"] = 50 * 2**20
        wait_until(lambda: len(rec.closed_bags) == 1)
        feed("/joint_states", joint(99))  # after the stop: not recorded
        feed("/aloe/episode_event", event("ep_next", 0))  # refused while the disk is full
        wait_until(lambda: "not recording episode 'ep_next'" in caplog.text)
    rec.stop()
    assert "below min_free_mb" in caplog.text and "closing bag" in caplog.text
    bag = tmp_path / "bags/ep_disk"
    assert (bag / "metadata.yaml").is_file()
    assert read_joint_indices(bag) == list(range(20))
    meta = load_episode_metadata(bag)
    assert meta["end_reason"] == "disk_full" and meta["outcome"] == "INCOMPLETE"
    assert not (tmp_path / "bags/ep_next").exists()


def test_disk_write_error_keeps_the_flushed_part_as_a_valid_bag(tmp_path, caplog):
    rec = make_recorder(tmp_path, flush_interval_s=0.02)
    rec.start()
    feed = Feed(rec)
    feed("/aloe/episode_event", event("ep_enospc", 0))
    for i in range(30):
        feed("/joint_states", joint(i))
    wait_until(lambda: rec.stats["written"] >= 31)
    time.sleep(0.1)  # flushed

    def no_space(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    with caplog.at_level(logging.ERROR, logger="aloe_teleop.recorder"):
        rec._bag._write_all = no_space  # the next flush hits a full disk
        for i in range(30, 40):
            feed("/joint_states", joint(i))
        wait_until(lambda: len(rec.closed_bags) == 1)
    rec.stop()
    assert "No space left on device" in caplog.text
    bag = tmp_path / "bags/ep_enospc"
    assert read_joint_indices(bag) == list(range(30))
    assert load_episode_metadata(bag)["end_reason"] == "write_error"


def test_queue_overflow_is_counted_and_logged(tmp_path, caplog):
    rec = make_recorder(tmp_path, queue_max_messages=5)  # writer thread not started: nothing drains
    accepted = [rec.enqueue(i, "/joint_states", joint(i)) for i in range(8)]
    assert accepted == [True] * 5 + [False] * 3
    assert rec.queue.dropped == 3
    with caplog.at_level(logging.ERROR, logger="aloe_teleop.recorder"):
        rec.start()
        rec.stop()
    assert "3 messages dropped" in caplog.text


def test_zstd_compressed_bag_is_readable(tmp_path):
    rec = make_recorder(tmp_path, compression="zstd")
    rec.start()
    feed = Feed(rec)
    feed("/aloe/episode_event", event("z", 0))
    for i in range(100):
        feed("/joint_states", joint(i))
    feed("/aloe/episode_event", event("z", 1))
    wait_until(lambda: len(rec.closed_bags) == 1)
    rec.stop()
    assert read_joint_indices(tmp_path / "bags/z") == list(range(100))


def test_reindex_of_a_cleanly_closed_bag_keeps_its_outcome(tmp_path):
    rec = make_recorder(tmp_path)
    rec.start()
    feed = Feed(rec)
    feed("/aloe/episode_event", event("clean", 0))
    feed("/joint_states", joint(0))
    feed("/aloe/episode_event", event("clean", 1, reward=1.0))
    wait_until(lambda: len(rec.closed_bags) == 1)
    rec.stop()
    before = load_episode_metadata(tmp_path / "bags/clean")
    (tmp_path / "bags/clean/metadata.yaml").unlink()
    with pytest.raises(BagError, match="reindex_bag"):
        load_episode_metadata(tmp_path / "bags/clean")
    reindex_bag(tmp_path / "bags/clean")
    after = load_episode_metadata(tmp_path / "bags/clean")
    assert after["outcome"] == before["outcome"] == "SUCCESS"
    assert after["message_counts"] == before["message_counts"]


def test_user_message_type_is_recorded_from_its_installed_definition(tmp_path, monkeypatch, caplog):
    prefix = tmp_path / "prefix"
    (prefix / "share/my_msgs/msg").mkdir(parents=True)
    (prefix / "share/my_msgs/msg/GripperState.msg").write_text("std_msgs/Header header\nmy_msgs/Finger[] fingers\n")
    (prefix / "share/my_msgs/msg/Finger.msg").write_text("float64 position\n")
    monkeypatch.setenv("AMENT_PREFIX_PATH", f"{prefix}:{__import__('os').environ.get('AMENT_PREFIX_PATH', '')}")
    from rosbags.typesys import Stores, get_typestore, get_types_from_msg

    writer_store = get_typestore(Stores.ROS2_KILTED)  # the sender's view of the type, for the bytes
    writer_store.register(get_types_from_msg("float64 position\n", "my_msgs/msg/Finger"))
    writer_store.register(get_types_from_msg("std_msgs/Header header\nmy_msgs/Finger[] fingers\n",
                                             "my_msgs/msg/GripperState"))
    Finger, State = writer_store.types["my_msgs/msg/Finger"], writer_store.types["my_msgs/msg/GripperState"]
    raw = bytes(writer_store.serialize_cdr(State(header=header(), fingers=[Finger(position=0.5)]),
                                           "my_msgs/msg/GripperState"))
    rec = make_recorder(tmp_path)
    rec.set_topic("/gripper", "my_msgs/msg/GripperState")
    rec.set_topic("/unknown", "nobody_msgs/msg/Thing")
    rec.start()
    feed = Feed(rec)
    with caplog.at_level(logging.ERROR, logger="aloe_teleop.recorder"):
        feed("/aloe/episode_event", event("custom", 0))
        feed("/gripper", raw)
        for _ in range(3):
            feed("/unknown", b"\x00\x01\x00\x00")
        feed("/aloe/episode_event", event("custom", 1))
        wait_until(lambda: len(rec.closed_bags) == 1)
        rec.stop()
    assert caplog.text.count("not recording /unknown") == 1  # said once, not per message
    with Reader(tmp_path / "bags/custom") as reader:
        conns = {c.topic: c for c in reader.connections}
        assert conns["/gripper"].msgtype == "my_msgs/msg/GripperState" and conns["/gripper"].msgcount == 1
        assert "/unknown" not in conns
        assert "MSG: my_msgs/Finger" in conns["/gripper"].msgdef.data


def test_gaps_in_a_regular_stamped_stream_are_counted_as_missing_messages():
    from aloe_data.bag_layout import make_typestore
    from aloe_data.episode_bag import EpisodeSummary

    ts = make_typestore()
    T = ts.types

    def joint_state(ns):
        header = T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=ns // 10**9, nanosec=ns % 10**9),
                                          frame_id="")
        msg = T["sensor_msgs/msg/JointState"](header=header, name=["j"], position=np.zeros(1), velocity=np.zeros(0),
                                              effort=np.zeros(0))
        return bytes(ts.serialize_cdr(msg, "sensor_msgs/msg/JointState"))

    summary = EpisodeSummary()
    period = 500_000  # 2 kHz
    sent = [i for i in range(400) if not (100 <= i < 130 or i in (250, 300, 301))]  # 33 lost on the way
    for i in sent:
        summary.observe("/joint_states", "sensor_msgs/msg/JointState", 1, joint_state(10**9 + i * period))
    summary.observe("/aloe/task", "std_msgs/msg/String", 1, bytes(ts.serialize_cdr(T["std_msgs/msg/String"](
        data="x"), "std_msgs/msg/String")))
    gaps = summary.stamp_gaps()
    assert gaps == {"/joint_states": {"missing": 33, "period_s": pytest.approx(0.0005)}}
    custom = summary.custom_data("event")
    assert json.loads(custom["stamp_gaps"])["/joint_states"]["missing"] == 33
    complete = EpisodeSummary()
    for i in range(400):
        complete.observe("/joint_states", "sensor_msgs/msg/JointState", 1, joint_state(10**9 + i * period))
    assert complete.stamp_gaps() == {} and "stamp_gaps" not in complete.custom_data("event")


def test_an_irregular_stream_is_not_judged_for_gaps():
    from aloe_data.episode_bag import EpisodeSummary

    summary = EpisodeSummary()
    rng = np.random.default_rng(0)
    t = np.cumsum(rng.exponential(1e6, 300)).astype(np.int64) + 10**9  # event-driven, no fixed rate
    summary.header_stamps["/events"] = list(t)
    assert summary.stamp_gaps() == {}
