#!/usr/bin/env python3
"""Executor runtime benchmark: control-tick jitter while the policy infers, and robot idle time.

One run, four phases on the same machine (each starts a fresh executor_node and, where
named, a fresh policy_node; this process plays the robot: 64x64 rgb8 camera, joint_states
and EE pose at the control rate, task latched):

1. ``baseline``: executor at ``--rate`` Hz fed synthetic chunks by this process (no inference).
2. ``inferring``: the same executor fed by policy_node inferring continuously
   (execution_horizon = H: a new inference on every new observation).
3. ``sync``: policy_node infers only when the executing chunk is used up
   (execution_horizon 1, inference_delay_s 0): the robot waits for every inference.
4. ``async``: asynchronous inference (execution_horizon ``--execution-horizon``, measured
   inference delay): the next chunk is inferred while the current one runs.

Reported: tick-interval error p50/p99 (ms) and missed ticks from the ExecutedAction stamps
(taken by the executor at the start of each tick); inference latency per chunk (policy_node
diagnostics) and observation-to-chunk latency; robot idle fraction = share of ticks that
HOLD after the first chunk. Ratios are against ``baseline`` (jitter) and ``sync`` (idle) of
the same run. The policy is an untrained built-in FlowMatchingPolicy of the default size
(64x64 camera, H=10) with control_period 1/rate; torch runs 1 thread (one core stays free
for control, the deployment setting on a 2-core machine).

Usage: ``python bench/bench_executor.py [--rate 50 --phase-s 15] [--realtime-priority 40]``
(source scripts/env.sh first); prints its section of BENCHMARKS.md; ``--write-benchmarks`` writes it there.
``--realtime-priority`` sets executor_node's ``realtime_priority`` (SCHED_FIFO for its control
thread, the deployment setting of launch/config/robot.yaml); 0 measures normal scheduling.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SECTION_BEGIN, SECTION_END = "<!-- BEGIN bench_executor -->", "<!-- END bench_executor -->"
TASK = "pick up the cube"
JOINTS = [f"panda_joint{i}" for i in range(1, 8)] + ["panda_gripper"]


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=50.0, help="executor control rate in Hz (default 50)")
    ap.add_argument("--phase-s", type=float, default=15.0, help="measured seconds per phase, all rounds (default 15)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds; every round runs every phase (default 3)")
    ap.add_argument("--warmup-s", type=float, default=3.0, help="seconds ignored at the start of each phase")
    ap.add_argument("--execution-horizon", type=int, default=5, help="policy_node execution_horizon in the async phase")
    ap.add_argument("--realtime-priority", type=int, default=0,
                    help="executor_node realtime_priority (SCHED_FIFO 1-99; 0 = normal scheduling)")
    ap.add_argument("--torch-threads", type=int, default=1, help="policy_node torch_threads (default 1)")
    ap.add_argument("--domain-id", type=int, default=int(os.environ.get("ALOE_BENCH_DOMAIN_ID", 23)))
    ap.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md", help="markdown file to update")
    ap.add_argument("--write-benchmarks", action="store_true",
                    help="replace this benchmark's section of --output (tracked BENCHMARKS.md); default: print only")
    ap.add_argument("--json", type=Path, help="also write the raw results as JSON here")
    ap.add_argument("--keep", action="store_true", help="keep the node logs and checkpoint (printed path)")
    return ap.parse_args(argv)


def entry_point(name: str) -> list[str]:
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        exe = Path(prefix) / "lib" / "aloe_policy" / name
        if exe.is_file():
            return [str(exe)]
    found = shutil.which(name)
    if found:
        return [found]
    sys.exit(f"entry point aloe_policy/{name} not found: source scripts/env.sh first")


class NodeProcess:
    def __init__(self, name: str, params: dict, workdir: Path):
        import yaml

        params_file = workdir / f"{name}.yaml"
        params_file.write_text(yaml.safe_dump({name: {"ros__parameters": params}}))
        self.log_path = workdir / f"{name}.log"
        self.popen = subprocess.Popen(entry_point(name) + ["--ros-args", "--params-file", str(params_file)],
                                      stdout=self.log_path.open("w"), stderr=subprocess.STDOUT,
                                      env=dict(os.environ, PYTHONUNBUFFERED="1"), start_new_session=True)

    def stop(self):
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGINT)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def make_checkpoint(directory: Path, period_s: float) -> str:
    import torch

    from aloe_policy.model import FlowMatchingPolicy, PolicyConfig, TextEncoder

    torch.manual_seed(0)
    config = PolicyConfig(control_period_s=period_s)
    encoder = TextEncoder(embed_dim=config.text_embed_dim,
                          encode_fn=lambda texts: np.ones((len(texts), config.text_embed_dim), np.float32) / 20.0)
    policy = FlowMatchingPolicy(config, text_encoder=encoder)
    rng = np.random.default_rng(0)
    policy.fit_normalization(rng.standard_normal((64, 18)), rng.uniform(-0.05, 0.05, (64, 10, 7)))
    policy.text_encoder.encode([TASK])  # cached in the checkpoint: policy_node never loads MiniLM
    return policy.save_pretrained(directory)


class Robot:
    """Publishes the robot inputs (and, in baseline, synthetic chunks); records executor output."""

    def __init__(self, rate: float):
        import rclpy
        from aloe_msgs.msg import ActionChunk, ExecutedAction
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import PoseStamped
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image, JointState
        from std_msgs.msg import String

        from aloe_data.observation import rgb_to_image_fields

        self.rclpy, self.types = rclpy, (ActionChunk, Image, JointState, PoseStamped)
        self.node = rclpy.create_node("bench_executor_robot")
        self.period = 1.0 / rate
        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        self.cam_pub = self.node.create_publisher(Image, "/camera/front/image_raw", 10)
        self.js_pub = self.node.create_publisher(JointState, "/joint_states", 10)
        self.ee_pub = self.node.create_publisher(PoseStamped, "/aloe/ee_pose", 10)
        self.chunk_pub = self.node.create_publisher(ActionChunk, "/aloe/bench_chunk", reliable)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.task_pub = self.node.create_publisher(String, "/aloe/task", latched)
        self.task_pub.publish(String(data=TASK))
        self.image_fields = rgb_to_image_fields(
            np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8), "rgb8")
        self.executed, self.chunks, self.diags = [], [], []
        self.node.create_subscription(ExecutedAction, "/aloe/executed_action",
                                      lambda m: self.executed.append(m), reliable)
        self.node.create_subscription(ActionChunk, "/aloe/action_chunk", lambda m: self.chunks.append(
            (m, self.node.get_clock().now().nanoseconds)), reliable)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self.diags.append, 10)
        self.feed_chunks = False
        self.chunk_id = 0

    def publish_inputs(self):
        Image, JointState, PoseStamped = self.types[1:]
        stamp = self.node.get_clock().now().to_msg()
        img = Image(**self.image_fields)
        img.header.stamp = stamp
        self.cam_pub.publish(img)
        js = JointState(name=JOINTS, position=[0.1] * 8, velocity=[0.0] * 8)
        js.header.stamp = stamp
        self.js_pub.publish(js)
        ee = PoseStamped()
        ee.header.stamp = stamp
        ee.pose.position.x = 0.4
        self.ee_pub.publish(ee)
        return stamp

    def feed_chunk(self, stamp):
        ActionChunk = self.types[0]
        self.chunk_id += 1
        msg = ActionChunk(chunk_id=self.chunk_id, policy_id="bench_replay", horizon=10, action_dim=7,
                          action_names=["dx", "dy", "dz", "rx", "ry", "rz", "grip"],
                          actions=[0.01] * 70)
        msg.header.stamp = stamp
        msg.observation_stamp = stamp
        msg.control_period.nanosec = int(round(self.period * 1e9))
        self.chunk_pub.publish(msg)

    def run(self, seconds: float):
        """Publish inputs at the control rate (chunks every 5 ticks when feeding) for `seconds`."""
        t0 = time.monotonic()
        next_pub, n = t0, 0
        while time.monotonic() - t0 < seconds:
            now = time.monotonic()
            if now >= next_pub:
                stamp = self.publish_inputs()
                if self.feed_chunks and n % 5 == 0:
                    self.feed_chunk(stamp)
                n += 1
                next_pub += self.period
                if next_pub < now:  # fell behind: do not burst
                    next_pub = now + self.period
            self.rclpy.spin_once(self.node, timeout_sec=max(0.0, min(0.005, next_pub - time.monotonic())))

    def wait_for(self, predicate, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.run(0.1)
            if predicate():
                return
        raise RuntimeError(f"timed out waiting for {what}")


def raw_ticks(executed, start_ns: int) -> dict:
    """Tick intervals (s) and HOLD counts after the first policy action, from ExecutedAction."""
    msgs = sorted((m for m in executed if m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec >= start_ns),
                  key=lambda m: (m.header.stamp.sec, m.header.stamp.nanosec))
    stamps = np.array([m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec for m in msgs])
    first = next((i for i, m in enumerate(msgs) if m.source == 0), len(msgs))  # SOURCE_POLICY
    reasons = {}
    for m in msgs[first:]:
        if m.source == 2:  # SOURCE_HOLD
            key = ("chunk exhausted" if "exhausted" in m.hold_reason else "chunk too old" if " s old" in m.hold_reason
                   else "no observation" if "observation" in m.hold_reason else m.hold_reason[:40])
            reasons[key] = reasons.get(key, 0) + 1
    return {"dt": (np.diff(stamps) * 1e-9).tolist(), "after_first": len(msgs) - first,
            "holds": sum(reasons.values()), "hold_reasons": reasons}


def raw_latency(robot, start_ns: int) -> dict:
    obs_to_chunk = [(recv - (m.observation_stamp.sec * 1_000_000_000 + m.observation_stamp.nanosec)) * 1e-6
                    for m, recv in robot.chunks if recv >= start_ns]
    for diag in reversed(robot.diags):
        for status in diag.status:
            if "policy inference" in status.name:
                values = {kv.key: kv.value for kv in status.values}
                return {"obs_to_chunk_ms": obs_to_chunk,
                        "inference_p50_ms": [float(values["inference_latency_ms_p50"])],
                        "inference_max_ms": [float(values["inference_latency_ms_max"])]}
    return {"obs_to_chunk_ms": obs_to_chunk, "inference_p50_ms": [], "inference_max_ms": []}


def summarize(name: str, raws: list[dict], period_s: float) -> dict:
    """Pool the rounds of one phase into the reported numbers."""
    dt = np.concatenate([np.asarray(r["dt"]) for r in raws])
    err_ms = np.abs(dt - period_s) * 1e3
    after, holds = sum(r["after_first"] for r in raws), sum(r["holds"] for r in raws)
    reasons = {}
    for r in raws:
        for k, v in r["hold_reasons"].items():
            reasons[k] = reasons.get(k, 0) + v
    out = {"phase": name, "ticks": int(dt.size + len(raws)), "jitter_p50_ms": float(np.percentile(err_ms, 50)),
           "jitter_p99_ms": float(np.percentile(err_ms, 99)), "jitter_max_ms": float(err_ms.max()),
           "missed_ticks": int(np.sum(np.maximum(np.round(dt / period_s) - 1, 0))),
           "idle_fraction": holds / after if after else 1.0, "hold_reasons": reasons}
    o2c = [x for r in raws for x in r.get("obs_to_chunk_ms", [])]
    if o2c:
        out.update(chunks=len(o2c), obs_to_chunk_p50_ms=float(np.percentile(o2c, 50)),
                   obs_to_chunk_p99_ms=float(np.percentile(o2c, 99)))
    p50s = [x for r in raws for x in r.get("inference_p50_ms", [])]
    if p50s:
        out.update(inference_p50_ms=float(np.median(p50s)),
                   inference_max_ms=float(max(x for r in raws for x in r["inference_max_ms"])))
    return out


def run_phase(name, args, robot, workdir, checkpoint, policy_params, seconds):
    """One round of one phase: fresh node processes, `seconds` measured; -> raw data."""
    executor_params = {"control_rate_hz": args.rate, "blending_mode": "linear", "observation_timeout_s": 0.5,
                       "chunk_timeout_s": 1.0, "realtime_priority": args.realtime_priority,
                       "action_chunk_topic": "/aloe/bench_chunk" if policy_params is None else "/aloe/action_chunk"}
    workdir.mkdir(parents=True, exist_ok=True)
    procs = [NodeProcess("executor_node", executor_params, workdir)]
    if policy_params is not None:
        procs.append(NodeProcess("policy_node", {"checkpoint": checkpoint, "torch_threads": args.torch_threads,
                                                 **policy_params}, workdir))
    try:
        robot.executed.clear(), robot.chunks.clear(), robot.diags.clear()
        robot.feed_chunks = policy_params is None
        robot.wait_for(lambda: any(m.source == 0 for m in robot.executed), 90.0, f"{name}: first policy action")
        robot.run(args.warmup_s)
        start_ns = robot.node.get_clock().now().nanoseconds
        robot.run(seconds)
        end_ns = robot.node.get_clock().now().nanoseconds
        robot.executed[:] = [m for m in robot.executed
                             if m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec <= end_ns]
        raw = raw_ticks(robot.executed, start_ns)
        if policy_params is not None:
            robot.run(1.2)  # one more diagnostics message covering the measured window
            raw.update(raw_latency(robot, start_ns))
        return raw
    finally:
        for p in reversed(procs):
            p.stop()
        robot.run(0.5)  # let the graph settle before the next phase


def markdown(results, args, command) -> str:
    by = {r["phase"]: r for r in results}
    base, inf, sync, asyn = by["baseline"], by["inferring"], by["sync"], by["async"]

    def ratio(a, b):
        return f"{a / b:.2f}x" if b > 0 else "n/a"

    lines = [
        SECTION_BEGIN,
        "## Executor: tick jitter under inference, robot idle time (bench/bench_executor.py)",
        "",
        f"Command: `{command}`  ",
        f"Machine: {platform.node()} ({os.cpu_count()} cores, shared with other users; load average "
        f"{args.load_at_start} at start, {args.load_at_end} at end), "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, CPU only, policy_node "
        f"torch_threads={args.torch_threads} (inference thread niceness 10, the node default). Executor at "
        f"{args.rate:g} Hz, realtime_priority={args.realtime_priority} "
        f"({'SCHED_FIFO' if args.realtime_priority else 'normal scheduling'}); {args.phase_s:g} s measured per phase "
        f"in {args.rounds} interleaved rounds (fresh node processes each); untrained default-size "
        "FlowMatchingPolicy (64x64 camera, H=10, 10 flow steps).",
        "",
        "| phase | ticks | tick error p50 (ms) | p99 (ms) | max (ms) | missed ticks | idle fraction | "
        "inference p50 / max (ms) | obs->chunk p50 (ms) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        inf_ms = (f"{r['inference_p50_ms']:.1f} / {r['inference_max_ms']:.1f}" if "inference_p50_ms" in r else "-")
        o2c = f"{r['obs_to_chunk_p50_ms']:.1f}" if "obs_to_chunk_p50_ms" in r else "-"
        lines.append(f"| {r['phase']} | {r['ticks']} | {r['jitter_p50_ms']:.2f} | {r['jitter_p99_ms']:.2f} | "
                     f"{r['jitter_max_ms']:.1f} | {r['missed_ticks']} | {r['idle_fraction']:.3f} | {inf_ms} | {o2c} |")
    lines += [
        "",
        f"- Tick error p99 with continuous inference vs baseline (no inference), same run: "
        f"**{ratio(inf['jitter_p99_ms'], base['jitter_p99_ms'])}** ({inf['jitter_p99_ms']:.2f} vs "
        f"{base['jitter_p99_ms']:.2f} ms); p50 {ratio(inf['jitter_p50_ms'], base['jitter_p50_ms'])}; missed ticks "
        f"{inf['missed_ticks']} vs {base['missed_ticks']}.",
        f"- Robot idle fraction (HOLD ticks after the first policy action): asynchronous inference "
        f"**{asyn['idle_fraction']:.3f}** vs synchronous (infer when the chunk is used up) "
        f"**{sync['idle_fraction']:.3f}**. Sync hold reasons: {sync['hold_reasons']}; async: {asyn['hold_reasons']}.",
        f"- Continuous inference: {inf.get('chunks', 0)} chunks, inference latency per chunk p50 "
        f"{inf.get('inference_p50_ms', float('nan')):.1f} ms (max {inf.get('inference_max_ms', float('nan')):.1f}); "
        f"observation-to-chunk p50/p99 {inf.get('obs_to_chunk_p50_ms', float('nan')):.1f}/"
        f"{inf.get('obs_to_chunk_p99_ms', float('nan')):.1f} ms.",
        "- Tick error = |interval between consecutive ExecutedAction stamps - control period|; stamps are taken "
        "by the executor at the start of each tick. A missed tick = an interval longer than 1.5 periods.",
        SECTION_END,
    ]
    return "\n".join(lines) + "\n"


def write_section(path: Path, section: str) -> None:
    """Replace (or append) only this benchmark's section; other sections stay untouched."""
    text = path.read_text() if path.exists() else "# ALOE benchmarks\n\nEach section is written by its bench script.\n"
    if SECTION_BEGIN in text and SECTION_END in text:
        head, rest = text.split(SECTION_BEGIN, 1)
        tail = rest.split(SECTION_END, 1)[1].lstrip("\n")
        text = head + section + ("\n" + tail if tail else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def main(argv=None):
    args = parse_args(argv)
    args.load_at_start = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    os.environ["ROS_DOMAIN_ID"] = str(args.domain_id)
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_LOCALHOST_ONLY", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import rclpy

    workdir = Path(tempfile.mkdtemp(prefix="bench_executor_"))
    checkpoint = workdir / "policy"
    print(f"checkpoint {make_checkpoint(checkpoint, 1.0 / args.rate)} in {checkpoint}", flush=True)
    rclpy.init()
    robot = Robot(args.rate)
    phases = [
        ("baseline", None),
        ("inferring", {"execution_horizon": 10, "inference_delay_s": 0.0}),
        ("sync", {"execution_horizon": 1, "inference_delay_s": 0.0}),
        ("async", {"execution_horizon": args.execution_horizon, "inference_delay_s": -1.0}),
    ]
    raws = {name: [] for name, _ in phases}
    try:
        # Phases interleaved round by round, so load from other users of the machine hits all alike.
        for rnd in range(args.rounds):
            for name, policy_params in phases:
                print(f"round {rnd + 1}/{args.rounds} phase {name} ...", flush=True)
                raws[name].append(run_phase(name, args, robot, workdir / f"{name}_{rnd}", str(checkpoint),
                                            policy_params, args.phase_s / args.rounds))
    finally:
        robot.node.destroy_node()
        rclpy.shutdown()
    results = [summarize(name, raws[name], 1.0 / args.rate) for name, _ in phases]
    for r in results:
        print(json.dumps(r), flush=True)
    args.load_at_end = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    command = "python bench/bench_executor.py " + " ".join(argv if argv is not None else sys.argv[1:])
    section = markdown(results, args, command.strip())
    print(section)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    if args.write_benchmarks:
        write_section(args.output, section)
        print(f"wrote section to {args.output}")
    if args.keep:
        print(f"node logs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
