#!/usr/bin/env python3
"""Recorder throughput benchmark: cameras + joint states into recorder_node, nothing may be lost.

A separate publisher process sends N cameras (640x480 rgb8, 30 Hz) and joint_states (500 Hz),
reliable QoS, inside one episode (START ... SUCCESS) to a recorder_node process. Reported:

* messages lost per topic (published - recorded; target 0), offered and written MB/s,
* recorder CPU use (psutil, % of one core, over the publishing window),
* writer capacity: the recorder's ROS-free bag writer fed the same message sizes as fast as it can,
  against a plain sequential ``f.write`` of the same bytes, in the same run (ratio target >= 0.8).

Usage: ``python bench/bench_recorder.py --duration 60`` (source scripts/env.sh first).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=60.0, help="publishing time in seconds (default 60)")
    p.add_argument("--cameras", type=int, default=2, help="number of cameras (default 2)")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--camera-hz", type=float, default=30.0)
    p.add_argument("--joint-hz", type=float, default=500.0)
    p.add_argument("--flush-interval", type=float, default=1.0, help="recorder flush_interval_s")
    p.add_argument("--output-dir", default=None, help="where bags go (default: a temp dir, deleted)")
    p.add_argument("--keep", action="store_true", help="keep the recorded bag")
    p.add_argument("--realtime-priority", type=int, default=0,
                   help="recorder_node realtime_priority (SCHED_FIFO of its subscription thread; 0 = off)")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.add_argument("--publisher", action="store_true", help=argparse.SUPPRESS)  # internal: child mode
    return p.parse_args(argv)


# ---------------------------------------------------------------------------------------------
# Publisher process
# ---------------------------------------------------------------------------------------------

def run_publisher(args) -> None:
    import rclpy
    from aloe_msgs.msg import EpisodeEvent
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image, JointState

    rclpy.init()
    node = rclpy.create_node("bench_publisher")
    qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE)
    cams = [node.create_publisher(Image, f"/camera/cam{i}/image_raw", qos) for i in range(args.cameras)]
    joints = node.create_publisher(JointState, "/joint_states", QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=1000, reliability=ReliabilityPolicy.RELIABLE))
    events = node.create_publisher(EpisodeEvent, "/aloe/episode_event", 10)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not all(
            pub.get_subscription_count() for pub in [*cams, joints, events]):
        time.sleep(0.05)
    images = []
    for i in range(args.cameras):
        img = Image(height=args.height, width=args.width, encoding="rgb8", is_bigendian=0, step=args.width * 3)
        img.header.frame_id = f"cam{i}"
        img.data = bytes(random.Random(i).randbytes(args.width * args.height * 3))
        images.append(img)
    js = JointState(name=[f"panda_joint{i}" for i in range(1, 8)], position=[0.0] * 7, velocity=[0.0] * 7,
                    effort=[0.0] * 7)
    time.sleep(0.5)
    start = EpisodeEvent(episode_id="bench", event=EpisodeEvent.START, task="benchmark")
    events.publish(start)
    time.sleep(0.5)  # the recorder opens the bag

    counts = {f"/camera/cam{i}/image_raw": 0 for i in range(args.cameras)}
    counts["/joint_states"] = 0
    cam_period, joint_period = 1.0 / args.camera_hz, 1.0 / args.joint_hz
    t0 = time.monotonic()
    next_cam, next_joint = t0, t0
    end = t0 + args.duration
    late = 0
    while True:
        now = time.monotonic()
        if now >= end:
            break
        if now >= next_cam:
            stamp = node.get_clock().now().to_msg()
            for i, (pub, img) in enumerate(zip(cams, images)):
                img.header.stamp = stamp
                pub.publish(img)
                counts[f"/camera/cam{i}/image_raw"] += 1
            next_cam += cam_period
            if now - next_cam > cam_period:
                late += 1
        if now >= next_joint:
            js.header.stamp = node.get_clock().now().to_msg()
            js.position[0] = float(counts["/joint_states"])
            joints.publish(js)
            counts["/joint_states"] += 1
            next_joint += joint_period
        time.sleep(max(0.0, min(next_cam, next_joint) - time.monotonic()))
    elapsed = time.monotonic() - t0
    time.sleep(2.0)  # reliable delivery of the tail before the end event
    events.publish(EpisodeEvent(episode_id="bench", event=EpisodeEvent.SUCCESS, reward=1.0, task="benchmark"))
    time.sleep(1.0)
    print("PUBLISHED " + json.dumps({"counts": counts, "elapsed_s": elapsed, "late_camera_ticks": late}),
          flush=True)
    node.destroy_node()
    rclpy.shutdown()


# ---------------------------------------------------------------------------------------------
# Benchmark driver
# ---------------------------------------------------------------------------------------------

def recorder_command() -> list[str]:
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        exe = Path(prefix) / "lib" / "aloe_teleop" / "recorder_node"
        if exe.is_file():
            return [str(exe)]
    found = shutil.which("recorder_node")
    return [found] if found else [sys.executable, "-m", "aloe_teleop.recorder_node"]


def wait_for_text(path: Path, text: str, timeout: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    raise RuntimeError(f"{text!r} not in {path} within {timeout}s:\n{path.read_text(errors='replace')[-3000:]}")


def writer_capacity(sizes: list[tuple[str, int]], work: Path, flush_interval_msgs: int,
                    rounds: int = 3) -> dict:
    """MB/s of the recorder's bag writer vs a plain sequential write of the same bytes.

    Both write every message's bytes in order and flush + fsync after the same number of messages
    (one recorder flush interval's worth); rounds alternate so page-cache effects hit both alike.
    """
    from aloe_data.mcap_writer import McapBagWriter

    payload = {topic: os.urandom(size) for topic, size in set(sizes)}
    total = sum(size for _, size in sizes)
    types = {topic: ("sensor_msgs/msg/JointState" if topic == "/joint_states" else "sensor_msgs/msg/Image")
             for topic, _ in sizes}

    def plain_write() -> float:
        path = work / "plain.bin"
        t = time.perf_counter()
        with open(path, "wb") as f:
            for i, (topic, _) in enumerate(sizes):
                f.write(payload[topic])
                if i % flush_interval_msgs == flush_interval_msgs - 1:
                    f.flush()
                    os.fsync(f.fileno())
            f.flush()
            os.fsync(f.fileno())
        elapsed = time.perf_counter() - t
        path.unlink()
        return elapsed

    def bag_write(crc: bool) -> float:
        t = time.perf_counter()
        bag = McapBagWriter(work / "capacity", fsync=True, crc=crc)
        for topic, msgtype in types.items():
            bag.add_topic(topic, msgtype)
        stamp = time.time_ns()
        for i, (topic, _) in enumerate(sizes):
            bag.write(topic, stamp + i, payload[topic])
            if i % flush_interval_msgs == flush_interval_msgs - 1:
                bag.flush()
        bag.close({})
        elapsed = time.perf_counter() - t
        shutil.rmtree(work / "capacity")
        return elapsed

    plain_s, writer_s, nocrc_s = [], [], []
    for _ in range(rounds):
        plain_s.append(plain_write())
        writer_s.append(bag_write(crc=True))
        nocrc_s.append(bag_write(crc=False))
    mbps = lambda xs: [round(total / x / 1e6, 1) for x in xs]  # noqa: E731
    return {"bytes": total, "rounds": rounds,
            "plain_MBps": total / min(plain_s) / 1e6, "writer_MBps": total / min(writer_s) / 1e6,
            "writer_no_crc_MBps": total / min(nocrc_s) / 1e6,
            "plain_MBps_all": mbps(plain_s), "writer_MBps_all": mbps(writer_s), "writer_no_crc_MBps_all": mbps(nocrc_s),
            "ratio": min(plain_s) / min(writer_s), "ratio_no_crc": min(plain_s) / min(nocrc_s)}


def sum_published_bytes(published: dict, sizes: list[tuple[str, int]]) -> int:
    size_of = dict(sizes)  # every message of a topic has the same size here
    return sum(n * size_of.get(topic, 0) for topic, n in published["counts"].items())


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.publisher:
        run_publisher(args)
        return 0
    import psutil
    from mcap.reader import make_reader

    os.environ.setdefault("ROS_DOMAIN_ID", os.environ.get("ALOE_TEST_DOMAIN_ID", str(random.randint(101, 200))))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_LOCALHOST_ONLY", "1")
    work = Path(args.output_dir or tempfile.mkdtemp(prefix="aloe_bench_recorder_"))
    work.mkdir(parents=True, exist_ok=True)
    bags = work / "bags"
    topics = [f"/camera/cam{i}/image_raw:sensor_msgs/msg/Image" for i in range(args.cameras)]
    topics += ["/joint_states:sensor_msgs/msg/JointState", "/aloe/episode_event:aloe_msgs/msg/EpisodeEvent"]
    params = work / "recorder.yaml"
    import yaml
    params.write_text(yaml.safe_dump({"recorder_node": {"ros__parameters": {
        "output_dir": str(bags), "topics": topics, "flush_interval_s": args.flush_interval,
        "qos_depth": 1000, "realtime_priority": args.realtime_priority, "min_free_mb": 1000.0, "queue_max_mb": 1024.0, "status_period_s": 5.0}}}))
    env = dict(os.environ, PYTHONUNBUFFERED="1", RCUTILS_LOGGING_BUFFERED_STREAM="0")
    rec_log = work / "recorder.log"
    rec = subprocess.Popen(recorder_command() + ["--ros-args", "--params-file", str(params)],
                           stdout=rec_log.open("w"), stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        wait_for_text(rec_log, "waiting for", 60, rec)
        pub = subprocess.Popen([sys.executable, __file__, "--publisher", "--duration", str(args.duration),
                                "--cameras", str(args.cameras), "--width", str(args.width),
                                "--height", str(args.height), "--camera-hz", str(args.camera_hz),
                                "--joint-hz", str(args.joint_hz)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
        proc = psutil.Process(rec.pid)
        wait_for_text(rec_log, "recording to", 90, rec)
        # CPU over the publishing window: data starts ~0.5 s after the bag opens.
        cpu0, wall0 = proc.cpu_times(), time.monotonic()
        time.sleep(args.duration + 0.5)
        cpu1, wall1 = proc.cpu_times(), time.monotonic()
        out, _ = pub.communicate(timeout=120)
        published = json.loads(next(line for line in out.splitlines() if line.startswith("PUBLISHED "))[10:])
        wait_for_text(rec_log, "recorder: closed", 60, rec)
        rec.send_signal(signal.SIGINT)
        rec.wait(30)
    finally:
        if rec.poll() is None:
            rec.kill()
    bag = bags / "bench"
    mcap_file = next(bag.glob("*.mcap"))
    recorded: dict[str, int] = {}
    sizes: list[tuple[str, int]] = []
    first, last = 2**63, 0
    with open(mcap_file, "rb") as f:
        for _, channel, message in make_reader(f).iter_messages(log_time_order=True):
            recorded[channel.topic] = recorded.get(channel.topic, 0) + 1
            if channel.topic != "/aloe/episode_event":
                sizes.append((channel.topic, len(message.data)))
                first, last = min(first, message.log_time), max(last, message.log_time)
    meta = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    lost = {t: n - recorded.get(t, 0) for t, n in published["counts"].items()}
    data_s = (last - first) / 1e9  # first to last recorded data message (recorder clock)
    file_bytes = mcap_file.stat().st_size
    cpu_s = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
    payload = sum(s for _, s in sizes)
    offered_bps = sum_published_bytes(published, sizes) / published["elapsed_s"]
    flush_msgs = max(1, int(len(sizes) / max(data_s, 1e-9) * args.flush_interval))
    # The capacity comparison replays the recorded message sequence, capped at ~512 MB so the
    # 3 x 3 alternating writes stay short on a shared disk.
    sample, acc = [], 0
    for topic, size in sizes:
        if acc >= 512e6:
            break
        sample.append((topic, size))
        acc += size
    capacity = writer_capacity(sample, work, flush_msgs)
    results = {
        "duration_s": published["elapsed_s"], "published": published["counts"], "recorded": recorded,
        "lost": lost, "lost_total": sum(lost.values()),
        "late_camera_ticks_in_publisher": published["late_camera_ticks"],
        "offered_MBps": offered_bps / 1e6,
        "recorded_MBps": payload / data_s / 1e6,
        "bag_file_MBps": file_bytes / data_s / 1e6, "bag_bytes": file_bytes,
        "recorded_vs_offered": (payload / data_s) / offered_bps,
        "recorder_cpu_percent_of_one_core": 100.0 * cpu_s / (wall1 - wall0),
        "machine_cpus": os.cpu_count(), "load_avg_1min": os.getloadavg()[0],
        "capacity": capacity,
        "dropped_in_recorder_queue": int(meta["custom_data"].get("dropped_messages", "0")),
    }
    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"kept {work}")
    return 0 if results["lost_total"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
