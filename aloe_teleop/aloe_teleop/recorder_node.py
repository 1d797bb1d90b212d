"""recorder_node: records the configured topics to one rosbag2 MCAP bag per episode.

Wiring only: raw (serialized) subscriptions whose callbacks enqueue (stamp, topic, bytes) into
:class:`aloe_teleop.recorder.Recorder`, which owns the writer thread, the episode state machine,
flushing, the disk-space guard and the bag metadata.

Subscription QoS follows the publishers, like ``ros2 bag record``: a topic is subscribed once a
publisher is discovered, best-effort if any publisher is best-effort, transient-local when all
publishers are (latched topics, re-written at the start of every bag). The episode event and task
topics are subscribed at once (reliable; the task transient-local) so no event is missed.
"""

from __future__ import annotations

import importlib

from aloe_data import schema
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from aloe_data.ros_node import declare_parameters, run_node
from aloe_policy.realtime import apply_and_log
from aloe_teleop.recorder import QosInfo, Recorder, RecorderConfig, parse_topic_entry

DEFAULT_TOPICS = [
    schema.TOPIC_CAMERA_FMT.format(name="front") + ":sensor_msgs/msg/Image",
    schema.TOPIC_JOINT_STATES + ":sensor_msgs/msg/JointState",
    schema.TOPIC_EE_POSE + ":geometry_msgs/msg/PoseStamped",
    schema.TOPIC_TASK + ":std_msgs/msg/String",
    schema.TOPIC_ACTION_CHUNK + ":aloe_msgs/msg/ActionChunk",
    schema.TOPIC_EXECUTED_ACTION + ":aloe_msgs/msg/ExecutedAction",
    schema.TOPIC_INTERVENTION + ":aloe_msgs/msg/Intervention",
    schema.TOPIC_EPISODE_EVENT + ":aloe_msgs/msg/EpisodeEvent",
    schema.TOPIC_REWARD + ":std_msgs/msg/Float32",
    schema.TOPIC_COMMAND + ":std_msgs/msg/Float64MultiArray",
]


def stream_topics(camera_entries: list[str], recorded: list[str], joint_states: str, ee_pose: str) -> dict[str, str]:
    """{'camera:<name>': topic, 'joint_states': topic, 'ee_pose': topic} for the bag metadata.

    camera_entries: 'name=topic' items; none = the recorded topics that follow the default
    '/camera/<name>/image_raw' layout."""
    out = {}
    for entry in camera_entries:
        name, sep, topic = entry.partition("=")
        if not sep or not name.strip() or not topic.strip().startswith("/"):
            raise ValueError(f"camera_topics entry {entry!r}: expected 'name=/topic'")
        out[f"camera:{name.strip()}"] = topic.strip()
    if not camera_entries:
        for topic in recorded:
            parts = topic.split("/")
            if len(parts) == 4 and parts[1] == "camera" and parts[3] == "image_raw":
                out[f"camera:{parts[2]}"] = topic
    out["joint_states"] = joint_states
    if ee_pose:
        out["ee_pose"] = ee_pose
    return out


def message_class(msgtype: str):
    """'sensor_msgs/msg/Image' -> the rclpy message class (needed for the raw subscription)."""
    pkg, kind, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{pkg}.{kind}"), name)


def qos_info(profile) -> QosInfo:
    return QosInfo(history=int(profile.history), depth=int(profile.depth),
                   reliability=int(profile.reliability), durability=int(profile.durability),
                   liveliness=int(profile.liveliness), deadline_ns=profile.deadline.nanoseconds,
                   lifespan_ns=profile.lifespan.nanoseconds,
                   liveliness_lease_duration_ns=profile.liveliness_lease_duration.nanoseconds)


PARAMETERS = {
    "output_dir": ("aloe_bags", "bags go to <output_dir>/<episode_id>/"),
    "topics": (DEFAULT_TOPICS, "topics to record: '/topic' (type from the ROS graph) or '/topic:pkg/msg/Type'"),
    "camera_topics": ([""], "'name=topic' per camera (policy_node's camera_names / camera_topic_format): recorded, "
                            "and written to each bag's metadata so ingestion finds them; [''] = every "
                            "'/camera/<name>/image_raw' entry of topics"),
    "joint_states_topic": (schema.TOPIC_JOINT_STATES, "sensor_msgs/JointState of the proprio (recorded; named in the"
                                                      " metadata)"),
    "ee_pose_topic": (schema.TOPIC_EE_POSE, "geometry_msgs/PoseStamped of the EE (recorded; named in the metadata); "
                                            "'' = none"),
    "episode_event_topic": (schema.TOPIC_EPISODE_EVENT, "aloe_msgs/EpisodeEvent: START opens a bag, an end event "
                                                        "closes it"),
    "task_topic": (schema.TOPIC_TASK, "std_msgs/String, transient local: the instruction, written into every bag"),
    "latched_topics": ([schema.TOPIC_TASK], "topics whose last message is re-written at the start of every bag"),
    "flush_interval_s": (1.0, "a crash loses at most this much"),
    "chunk_size": (4 * 2**20, "MCAP chunk size, bytes"),
    "compression": ("none", "MCAP chunk compression: none, zstd, lz4"),
    "fsync": (True, "fsync at every flush (power-loss safety)"),
    "chunk_crc": (True, "CRC per MCAP chunk (repair detects damage)"),
    "queue_max_mb": (512.0, "writer queue bound; overflow is logged"),
    "min_free_mb": (500.0, "below this free disk space: close, stop"),
    "disk_check_interval_s": (1.0, "seconds between free-disk-space checks"),
    "qos_depth": (500, "subscription history depth"),
    "realtime_priority": (0, "SCHED_FIFO priority (1-99) of the thread that takes messages from the middleware; 0 = "
                             "normal scheduling. A publisher keeps only its history depth of undelivered messages "
                             "(10 for many drivers: 5 ms at 2 kHz), so under CPU load a waiting subscription thread "
                             "loses them before the recorder sees them; the writer thread keeps normal scheduling "
                             "and its queue"),
    "discovery_period_s": (0.25, "graph polling period for publishers"),
    "status_period_s": (10.0, "period of the status log line"),
    "diagnostics_period_s": (1.0, "period of /diagnostics"),
}


class RecorderNode(Node):
    def __init__(self):
        super().__init__("recorder_node")
        p = declare_parameters(self, PARAMETERS).__getitem__
        self.wanted: dict[str, str] = {}  # topic -> type ('' = from the graph)
        for entry in p("topics"):
            topic, msgtype = parse_topic_entry(entry)
            self.wanted[topic] = msgtype
        streams = stream_topics([c for c in p("camera_topics") if c], list(self.wanted), p("joint_states_topic"),
                                p("ee_pose_topic"))
        for key, topic in streams.items():
            self.wanted.setdefault(topic, "" if key.startswith("camera:") else
                                   ("sensor_msgs/msg/JointState" if key == "joint_states" else
                                    "geometry_msgs/msg/PoseStamped"))
        self.event_topic = p("episode_event_topic")
        self.task_topic = p("task_topic")
        config = RecorderConfig(
            output_dir=p("output_dir"), episode_event_topic=self.event_topic, task_topic=self.task_topic,
            latched_topics=tuple(p("latched_topics")), flush_interval_s=float(p("flush_interval_s")),
            chunk_size=int(p("chunk_size")), compression=p("compression"), fsync=bool(p("fsync")),
            chunk_crc=bool(p("chunk_crc")),
            queue_max_mb=float(p("queue_max_mb")), min_free_mb=float(p("min_free_mb")),
            disk_check_interval_s=float(p("disk_check_interval_s")), stream_topics=streams)
        self.qos_depth = int(p("qos_depth"))
        self.realtime_priority = int(p("realtime_priority"))
        self.wanted.setdefault(self.event_topic, "aloe_msgs/msg/EpisodeEvent")
        self.wanted.setdefault(self.task_topic, "std_msgs/msg/String")

        self.recorder = Recorder(config, logger=self.get_logger(),
                                 clock_ns=lambda: self.get_clock().now().nanoseconds)
        self.subscriptions_by_topic = {}
        # Control topics are subscribed now, with the QoS their publishers are specified with.
        self._subscribe(self.event_topic, "aloe_msgs/msg/EpisodeEvent", [])
        self._subscribe(self.task_topic, "std_msgs/msg/String", [], latched=True)
        # Housekeeping runs on the steady clock: with use_sim_time, sim time stands still until the
        # simulator ticks, and a simulator that waits for this recorder to subscribe before its
        # first tick would wait forever (it did: 20 s per sim_node start, its startup timeout).
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        self.create_timer(float(p("discovery_period_s")), self._discover, clock=steady)
        self.create_timer(float(p("status_period_s")), self._status, clock=steady)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._dropped_reported = 0
        self.create_timer(float(p("diagnostics_period_s")), self._diagnostics, clock=steady)
        self.recorder.start()
        self.get_logger().info(
            f"recording {len(self.wanted)} topics to {config.output_dir}/<episode_id>/ "
            f"(flush every {config.flush_interval_s}s, min_free_mb {config.min_free_mb:.0f}); "
            f"waiting for {self.event_topic} START")

    def _subscribe(self, topic: str, msgtype: str, publishers, latched: bool = False) -> None:
        profiles = [qos_info(info.qos_profile) for info in publishers]
        best_effort = any(q.reliability == int(ReliabilityPolicy.BEST_EFFORT) for q in profiles)
        transient = latched or (profiles and all(q.transient_local for q in profiles))
        qos = QoSProfile(
            history=HistoryPolicy.KEEP_LAST, depth=self.qos_depth,
            reliability=ReliabilityPolicy.BEST_EFFORT if best_effort else ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL if transient else DurabilityPolicy.VOLATILE)
        if not profiles:  # subscribed before discovery: store the QoS the topic is specified with,
            # so that `ros2 bag play` re-publishes the task latched
            profiles = [QosInfo(depth=1 if transient else 10, durability=1 if transient else 2)]
        try:
            cls = message_class(msgtype)
        except (ImportError, AttributeError, ValueError) as exc:
            self.get_logger().error(f"cannot record {topic}: message type {msgtype} not importable ({exc}); "
                                    f"install its interface package")
            self.subscriptions_by_topic[topic] = None
            return
        self.recorder.set_topic(topic, msgtype, profiles, latched=transient)
        enqueue, clock = self.recorder.enqueue, self.get_clock()

        def on_message(data: bytes) -> None:  # raw CDR bytes; never deserialized here
            enqueue(clock.now().nanoseconds, topic, data)

        self.subscriptions_by_topic[topic] = self.create_subscription(cls, topic, on_message, qos, raw=True)
        self.get_logger().info(f"subscribed {topic} [{msgtype}] "
                               f"{'best-effort' if best_effort else 'reliable'}"
                               f"{', transient-local' if transient else ''}")

    def _discover(self) -> None:
        pending = [t for t in self.wanted if t not in self.subscriptions_by_topic]
        if not pending:
            return
        graph = dict(self.get_topic_names_and_types())
        for topic in pending:
            publishers = self.get_publishers_info_by_topic(topic)
            if not publishers:
                continue
            msgtype = self.wanted[topic] or (graph.get(topic) or [""])[0]
            if not msgtype:
                continue
            if self.wanted[topic] and topic in graph and msgtype not in graph[topic]:
                self.get_logger().warning(f"{topic}: configured type {msgtype} but the graph has "
                                          f"{graph[topic]}; recording as {msgtype}")
            self._subscribe(topic, msgtype, publishers)

    def _status(self) -> None:
        r = self.recorder
        self.get_logger().info(
            f"status: {'recording ' + str(r.current_bag) if r.recording else 'idle'}; "
            f"written {r.stats['written']}, queued {len(r.queue)}, dropped {r.queue.dropped}, "
            f"bags closed {len(r.closed_bags)}")

    def _diagnostics(self) -> None:
        r = self.recorder
        dropped = r.queue.dropped
        if r.disk_full:
            level, message = DiagnosticStatus.ERROR, "disk space below min_free_mb: not recording"
        elif dropped > self._dropped_reported:
            level, message = DiagnosticStatus.WARN, f"{dropped - self._dropped_reported} messages dropped (queue full)"
        else:
            level, message = DiagnosticStatus.OK, "recording" if r.recording else "idle, waiting for START"
        self._dropped_reported = dropped
        values = {"bag": str(r.current_bag or ""), "written": r.stats["written"], "queued": len(r.queue),
                  "queued_mb": round(r.queue.bytes / 2**20, 1), "dropped_total": dropped,
                  "bags_closed": len(r.closed_bags)}
        status = DiagnosticStatus(level=level, name=f"{self.get_name()}: recorder", message=message,
                                  hardware_id="", values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self.diagnostics_pub.publish(array)

    def destroy_node(self):
        self.recorder.stop()
        super().destroy_node()


def _start(node: RecorderNode) -> None:
    # this thread spins: the subscription callbacks run here
    apply_and_log(node.get_logger(), node.realtime_priority, "subscription thread")


def main(args=None):
    return run_node(RecorderNode, "recorder_node", args, after_start=_start)


if __name__ == "__main__":
    raise SystemExit(main())
