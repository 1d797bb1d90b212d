"""Test data for aloe_critic tests: hand-made episode bags and tiny training configs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

TICK0_NS = 1_000_000_000
PERIOD_NS = 100_000_000
JOINTS = [f"panda_joint{i}" for i in range(1, 8)] + ["panda_gripper"]


def write_episode_bag(path: Path, num_ticks: int = 8, sources=None, outcome: str = "SUCCESS", task: str = "pick the cube",
                      policy_id: str = "abcdef0123456789", image_size: int = 8, rewards=None,
                      metadata: bool = True, writer: str = "rosbags", crash: bool = False,
                      compressed: bool = False, camera_topic: str = "/camera/front/image_raw",
                      joint_states_topic: str = "/joint_states", stream_topics: dict | None = None,
                      encoding: str = "rgb8") -> Path:
    """One episode bag (rosbag2 MCAP, the topics of docs/interfaces.md).

    Tick k (stamp 1.0 + 0.1 k s) executes action [k]*7. Before tick k (stamp - 10 ms) the camera
    shows pixels = k, joint positions = k, EE x = k; a second frame stamped 50 ms *after* the
    tick shows 100 + k (it must only be used from tick k + 1 on... which it never is, since
    frame k + 1 arrives first). Events: START before the first tick, the end event at the last tick.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer

    from aloe_data.bag_layout import make_typestore

    ts = make_typestore()
    T = ts.types
    Time, Header = T["builtin_interfaces/msg/Time"], T["std_msgs/msg/Header"]
    sources = [0] * num_ticks if sources is None else list(sources)

    def header(ns):
        return Header(stamp=Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000), frame_id="")

    msgs = []  # (logtime, topic, msgtype, msg)

    def add(ns, topic, msgtype, msg):
        msgs.append((ns, topic, msgtype, msg))

    start_ns = TICK0_NS - 50_000_000
    add(start_ns, "/aloe/task", "std_msgs/msg/String", T["std_msgs/msg/String"](data=task))
    add(start_ns, "/aloe/episode_event", "aloe_msgs/msg/EpisodeEvent",
        T["aloe_msgs/msg/EpisodeEvent"](header=header(start_ns), episode_id="ep", event=0, reward=0.0, task=task))
    for k in range(num_ticks):
        tick = TICK0_NS + k * PERIOD_NS
        for stamp, value in ((tick - 10_000_000, k), (tick + 50_000_000, 100 + k)):
            pixels = np.full((image_size, image_size, 3), value % 256, np.uint8)
            if compressed:  # PNG: lossless, so pixel values stay checkable
                from aloe_data.observation import rgb_to_compressed
                add(stamp, camera_topic + "/compressed", "sensor_msgs/msg/CompressedImage",
                    T["sensor_msgs/msg/CompressedImage"](header=header(stamp), format="png",
                                                         data=np.frombuffer(rgb_to_compressed(pixels, "png"), np.uint8)))
                continue
            # the same grey value k in other encodings: a flat Bayer mosaic, big-endian 16-bit grey
            if encoding == "bayer_rggb8":
                raw, bigendian = pixels[..., 0], 0
            elif encoding == "mono16":
                raw, bigendian = (pixels[..., 0].astype(np.uint16) * 256).astype(">u2").view(np.uint8), 1
            elif encoding == "16UC1":  # depth: (value + 1) decimetres, in millimetres
                raw, bigendian = ((pixels[..., 0].astype(np.uint16) + 1) * 100).astype("<u2").view(np.uint8), 0
            else:
                raw, bigendian = pixels, 0
            add(stamp, camera_topic, "sensor_msgs/msg/Image",
                T["sensor_msgs/msg/Image"](header=header(stamp), height=image_size, width=image_size, encoding=encoding,
                                           is_bigendian=bigendian, step=raw.size // image_size,
                                           data=np.ascontiguousarray(raw).reshape(-1)))
        stamp = tick - 20_000_000
        add(stamp, joint_states_topic, "sensor_msgs/msg/JointState",
            T["sensor_msgs/msg/JointState"](header=header(stamp), name=JOINTS, position=np.full(8, float(k)),
                                            velocity=np.zeros(8), effort=np.zeros(0)))
        P = T["geometry_msgs/msg/Pose"]
        add(stamp, "/aloe/ee_pose", "geometry_msgs/msg/PoseStamped",
            T["geometry_msgs/msg/PoseStamped"](header=header(stamp), pose=P(
                position=T["geometry_msgs/msg/Point"](x=float(k), y=0.0, z=0.0),
                orientation=T["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0))))
        src = sources[k]
        add(tick + 1_000_000, "/aloe/executed_action", "aloe_msgs/msg/ExecutedAction",
            T["aloe_msgs/msg/ExecutedAction"](header=header(tick), action=np.full(7, float(k), np.float32), source=src,
                                              chunk_id=k // 4 if src == 0 else 0, index_in_chunk=k % 4 if src == 0 else 0,
                                              policy_id=policy_id if src == 0 else "", hold_reason=""))
        if rewards is not None:
            add(tick + 2_000_000, "/aloe/reward", "std_msgs/msg/Float32", T["std_msgs/msg/Float32"](data=float(rewards[k])))
    end = TICK0_NS + (num_ticks - 1) * PERIOD_NS + 5_000_000
    event = {"SUCCESS": 1, "FAILURE": 2, "ABORT": 3}[outcome]
    add(end, "/aloe/episode_event", "aloe_msgs/msg/EpisodeEvent",
        T["aloe_msgs/msg/EpisodeEvent"](header=header(end), episode_id="ep", event=event,
                                        reward=1.0 if outcome == "SUCCESS" else 0.0, task=task))
    msgs.sort(key=lambda m: m[0])

    if writer == "recorder":
        _write_with_recorder(path, msgs, ts, crash=crash)
        return path
    bag_writer = Writer(path, version=9, storage_plugin=StoragePlugin.MCAP)
    if metadata:
        bag_writer.set_custom_data("task", task)
        bag_writer.set_custom_data("policy_ids", policy_id)
        bag_writer.set_custom_data("outcome", outcome)
        if stream_topics:
            import json
            bag_writer.set_custom_data("stream_topics", json.dumps(stream_topics))
    bag_writer.open()
    conns = {}
    for logtime, topic, msgtype, msg in msgs:
        if topic not in conns:
            conns[topic] = bag_writer.add_connection(topic, msgtype, typestore=ts)
        bag_writer.write(conns[topic], logtime, bytes(ts.serialize_cdr(msg, msgtype)))
    bag_writer.close()
    if not metadata:
        (path / "metadata.yaml").unlink()
    return path


TINY_POLICY = {"image_size": 8, "cnn_channels": [4], "cnn_pool_size": 2, "hidden_dim": 16, "head_hidden_dim": 32,
               "head_layers": 1, "time_embed_dim": 8, "flow_steps": 3, "chunk_horizon": 4}
# A policy success, a failure the operator took over in the middle, an operator success: 10 ticks each.
TRAINING_EPISODES = (("SUCCESS", [0] * 10), ("FAILURE", [0] * 4 + [1] * 4 + [0] * 2), ("SUCCESS", [1] * 10))


def write_training_bags(bags_dir: Path, **kwargs) -> list[Path]:
    """The TRAINING_EPISODES as bags ``bags_dir/ep<i>`` (write_episode_bag's keywords pass on)."""
    return [write_episode_bag(Path(bags_dir) / f"ep{i}", num_ticks=10, outcome=outcome, sources=sources, **kwargs)
            for i, (outcome, sources) in enumerate(TRAINING_EPISODES)]


COMMON = ["--image-size", "8", "--chunk-horizon", "4", "--policy-steps", "15", "--policy-batch-size", "8",
          "--no-progress"]


def small_config(root, **kw):
    from aloe_critic.train import TrainConfig

    config = TrainConfig(**kw)
    config.progress = False
    config.ingestion.cache_dir = str(root / "cache")
    config.ingestion.image_size = 8
    config.critic.ensemble_size, config.critic.critic_hidden_dim = 3, 16
    config.critic.critic_steps, config.critic.critic_batch_size, config.critic.num_policy_samples = 10, 16, 2
    config.improvement.policy_steps, config.improvement.policy_batch_size = 10, 8
    return config


def _write_with_recorder(path: Path, msgs, ts, crash: bool) -> None:
    """Write through aloe_teleop.recorder's McapBagWriter (what recorder_node does). ``crash``:
    the bag dir holds the file as it was at a flush halfway through, no end event, no
    metadata.yaml (a kill -9 of the recorder)."""
    import shutil

    from aloe_data.episode_bag import EpisodeSummary
    from aloe_data.mcap_writer import McapBagWriter

    summary = EpisodeSummary()
    bag = McapBagWriter(path.parent / (path.name + ".live") if crash else path, chunk_size=4096, fsync=False)
    for k, (logtime, topic, msgtype, msg) in enumerate(msgs):
        data = bytes(ts.serialize_cdr(msg, msgtype))
        bag.add_topic(topic, msgtype)
        bag.write(topic, logtime, data)
        summary.observe(topic, msgtype, logtime, data)
        if crash and k == len(msgs) // 2:  # killed here: only what was flushed so far is on disk
            bag.flush()
            path.mkdir(parents=True)
            shutil.copy(bag.mcap_path, path / f"{path.name}_0.mcap")
    bag.flush()
    bag.close(summary.custom_data("event"))
    if crash:
        shutil.rmtree(bag.bag_dir)
