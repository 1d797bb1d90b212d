"""Fault injection with real processes: what the running system does when a part of it fails.

Every test starts the real entry points (policy_node, executor_node, aloe-train) as separate
processes, injects one fault (SIGKILL, restart, a bad chunk, silence, a corrupt checkpoint, a
damaged bag), and asserts on what reaches the robot (command topic, ExecutedAction) and on the
log line that tells the operator what happened. This test process plays the robot: camera,
joint_states, EE pose and task on wall time (no sim clock), like a real robot driver.

Measured figures (hold latency, recovery time) are appended as JSON lines to the file named by
``ALOE_RELIABILITY_OUT`` when set (BENCHMARKS.md, RELIABILITY).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("torch")
from aloe_msgs.msg import ActionChunk, ExecutedAction  # noqa: E402
from aloe_msgs.srv import LoadPolicy  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from geometry_msgs.msg import PoseStamped  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image, JointState  # noqa: E402
from std_msgs.msg import Float64MultiArray, String  # noqa: E402

from aloe_policy import testing  # noqa: E402
from aloe_policy.model import FlowMatchingPolicy, validate_checkpoint  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "aloe_critic" / "test"))
from critic_test_data import TINY_POLICY, write_training_bags  # noqa: E402  (the critic tests' training set)

pytestmark = pytest.mark.system

TASK = "pick up the cube"
JOINTS = [f"panda_joint{i}" for i in range(1, 8)] + ["panda_gripper"]
NAMES = ["dx", "dy", "dz", "rx", "ry", "rz", "grip"]
POLICY, HUMAN, HOLD = ExecutedAction.SOURCE_POLICY, ExecutedAction.SOURCE_HUMAN, ExecutedAction.SOURCE_HOLD
# Tiny network, text cache holding TASK (MiniLM never loads), actions spread wider than BOUND so
# the executor's clipping is exercised.
TINY = dict(image_size=16, chunk_horizon=4, cnn_channels=(8,), cnn_pool_size=2, hidden_dim=16, head_hidden_dim=32,
            head_layers=1, time_embed_dim=8, text_embed_dim=32, dropout=0.0, flow_steps=3)
BOUND = 0.05
POLICY_PARAMS = {"torch_threads": 1, "execution_horizon": 2, "observation_timeout_s": 2.0}
EXECUTOR_PARAMS = {"control_rate_hz": 10.0, "chunk_timeout_s": 1.0, "observation_timeout_s": 0.5,
                   "action_lower": [-BOUND] * 7, "action_upper": [BOUND] * 7}


def record(name: str, **values) -> None:
    """Append a measured figure for BENCHMARKS.md (RELIABILITY) when ALOE_RELIABILITY_OUT is set."""
    out = os.environ.get("ALOE_RELIABILITY_OUT")
    if out:
        with open(out, "a") as fh:
            fh.write(json.dumps({"test": name, **values}) + "\n")


def save_tiny_checkpoint(directory: Path, seed: int) -> str:
    return testing.save_tiny_checkpoint(directory, seed, TINY, TASK, action_spread=0.2)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("fault_ckpt")
    good = save_tiny_checkpoint(root / "a", 1)
    save_tiny_checkpoint(root / "corrupt", 2)
    weights = root / "corrupt" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:2000])  # a copy cut short (disk full, interrupted scp)
    return {"a": (str(root / "a"), good), "corrupt": str(root / "corrupt")}


@pytest.fixture(scope="module")
def rclpy_context():
    rclpy.init()
    yield
    rclpy.shutdown()


def _ns(stamp) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


class Robot:
    """Publishes the robot's inputs at 20 Hz while spinning; records what comes back with its
    arrival time (time.monotonic())."""

    def __init__(self):
        self.node = rclpy.create_node("fault_test_robot")
        self.cam_pub = self.node.create_publisher(Image, "/camera/front/image_raw", 10)
        self.js_pub = self.node.create_publisher(JointState, "/joint_states", 10)
        self.ee_pub = self.node.create_publisher(PoseStamped, "/aloe/ee_pose", 10)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.task_pub = self.node.create_publisher(String, "/aloe/task", latched)
        self.task_pub.publish(String(data=TASK))
        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        self.chunk_pub = self.node.create_publisher(ActionChunk, "/aloe/action_chunk", reliable)
        self.executed: list[tuple[float, ExecutedAction]] = []
        self.commands: list[tuple[float, list[float]]] = []
        self.chunks: list[tuple[float, ActionChunk]] = []
        self.node.create_subscription(ExecutedAction, "/aloe/executed_action",
                                      lambda m: self.executed.append((time.monotonic(), m)), reliable)
        self.node.create_subscription(Float64MultiArray, "/aloe/command",
                                      lambda m: self.commands.append((time.monotonic(), list(m.data))), reliable)
        self.node.create_subscription(ActionChunk, "/aloe/action_chunk",
                                      lambda m: self.chunks.append((time.monotonic(), m)), reliable)
        self.executor_status = ""  # the executor's /diagnostics message ("RUNNING", "HOLD_...: reason")
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self.send_observations = True
        self._last = 0.0
        self.rgb = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)

    def _on_diagnostics(self, msg: DiagnosticArray):
        for status in msg.status:
            if "action executor" in status.name:
                self.executor_status = status.message

    def now_ns(self) -> int:
        return self.node.get_clock().now().nanoseconds

    def publish_inputs(self):
        stamp = self.node.get_clock().now().to_msg()
        img = Image(height=16, width=16, encoding="rgb8", step=48, data=self.rgb.tobytes())
        img.header.stamp = stamp
        self.cam_pub.publish(img)
        js = JointState(name=JOINTS, position=[0.1] * 8, velocity=[0.0] * 8)
        js.header.stamp = stamp
        self.js_pub.publish(js)
        ee = PoseStamped()
        ee.header.stamp = stamp
        ee.pose.position.x, ee.pose.position.z = 0.4, 0.2
        self.ee_pub.publish(ee)

    def spin(self, seconds: float, until=None) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.send_observations and time.monotonic() - self._last > 0.05:
                self._last = time.monotonic()
                self.publish_inputs()
            rclpy.spin_once(self.node, timeout_sec=0.01)
            if until is not None and until():
                return True
        return until is None

    def wait_executed(self, predicate, timeout: float, what: str, *procs) -> tuple[float, ExecutedAction]:
        """First ExecutedAction arriving from now on that satisfies ``predicate``."""
        start = len(self.executed)
        found = []

        def seen():
            found[:] = [e for e in self.executed[start:] if predicate(e[1])][:1]
            return bool(found)
        if not self.spin(timeout, seen):
            logs = "\n".join(f"--- {p.name}:\n{p.log()[-2500:]}" for p in procs)
            raise AssertionError(f"no ExecutedAction {what} within {timeout} s; last: "
                                 f"{[(m.source, m.hold_reason) for _, m in self.executed[-3:]]}\n{logs}")
        return found[0]

    def publish_chunk(self, values: np.ndarray, horizon: int, chunk_id: int, observation_ns: int | None = None,
                      policy_id: str = "injected_policy"):
        msg = ActionChunk(chunk_id=chunk_id, policy_id=policy_id, horizon=horizon, action_dim=7, action_names=NAMES,
                          actions=[float(x) for x in np.ravel(values)])
        stamp_ns = self.now_ns() if observation_ns is None else observation_ns
        msg.observation_stamp.sec, msg.observation_stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
        msg.control_period.nanosec = 100_000_000
        msg.header.stamp = self.node.get_clock().now().to_msg()
        self.chunk_pub.publish(msg)

    def load_policy(self, path: str, timeout: float = 30.0) -> LoadPolicy.Response:
        client = self.node.create_client(LoadPolicy, "/aloe/load_policy")
        assert self.spin(20.0, client.service_is_ready), "/aloe/load_policy not available"
        future = client.call_async(LoadPolicy.Request(checkpoint_path=path))
        assert self.spin(timeout, future.done), f"/aloe/load_policy did not answer in {timeout} s"
        return future.result()

    def assert_commands_safe(self):
        """Nothing non-finite or outside the executor's bounds ever reached the command topic."""
        assert self.commands, "no command was received at all"
        values = np.array([c for _, c in self.commands])
        assert values.shape[1] == 7 and np.all(np.isfinite(values)), "non-finite command published"
        assert np.all(np.abs(values) <= BOUND + 1e-12), f"command outside bounds: max |u| = {np.abs(values).max()}"

    def close(self):
        self.node.destroy_node()


@pytest.fixture
def robot(rclpy_context):
    r = Robot()
    yield r
    r.close()


def start_policy(ros_node_process, checkpoint: str):
    return ros_node_process("aloe_policy", "policy_node", {**POLICY_PARAMS, "checkpoint": checkpoint})


def start_executor(ros_node_process, **params):
    return ros_node_process("aloe_policy", "executor_node", {**EXECUTOR_PARAMS, **params})


def running(m: ExecutedAction) -> bool:
    return m.source == POLICY


# ---------------------------------------------------------------------------------------------
# policy_node / executor_node process faults
# ---------------------------------------------------------------------------------------------

def test_policy_node_sigkill_mid_episode_executor_holds_with_reason_then_resumes_on_fresh_chunks(
        ros_node_process, robot, checkpoints):
    path, policy_id = checkpoints["a"]
    policy = start_policy(ros_node_process, path)
    executor = start_executor(ros_node_process)
    robot.wait_executed(running, 45.0, "from the policy", policy, executor)
    robot.spin(1.0)  # mid-episode: the policy has been driving for a while

    last_chunk_before = max(m.chunk_id for _, m in robot.chunks)
    t_kill = time.monotonic()
    policy.kill()
    t_hold, hold = robot.wait_executed(lambda m: m.source == HOLD, 3.0, "HOLD after the kill", executor)
    assert hold.hold_reason.startswith("newest chunk"), hold.hold_reason
    assert "exhausted" in hold.hold_reason or "s old" in hold.hold_reason, hold.hold_reason
    assert hold.policy_id == "" and list(hold.action) == [0.0] * 7
    robot.spin(1.5)  # the policy stays dead: the executor keeps holding, every tick
    down = [m for t, m in robot.executed if t > t_hold]
    assert len(down) >= 12, f"{len(down)} ticks in 1.5 s: the executor keeps ticking (and saying why) while holding"
    assert all(m.source == HOLD and m.hold_reason for m in down)

    t_restart = time.monotonic()
    restarted = start_policy(ros_node_process, path)
    t_resume, resumed = robot.wait_executed(running, 45.0, "from the restarted policy", restarted, executor)
    fresh = {m.chunk_id for t, m in robot.chunks if t > t_restart}
    assert resumed.chunk_id in fresh and resumed.policy_id == policy_id, "resumed on a chunk of the new process"
    assert all(m.source == HOLD for t, m in robot.executed if t_hold <= t < t_resume)
    robot.assert_commands_safe()
    log = executor.wait_for_log("-> RUNNING", timeout=5.0)
    assert "state RUNNING -> HOLD_STALE_CHUNK: newest chunk" in log, log[-2000:]
    assert restarted.wait_for_log("loaded policy " + policy_id)
    record("policy_node SIGKILL", hold_latency_s=round(t_hold - t_kill, 3),
           restart_to_running_s=round(t_resume - t_restart, 2), last_chunk_before_kill=last_chunk_before)


def test_executor_restart_stops_the_command_stream_and_nothing_unsafe_is_ever_published(
        ros_node_process, robot, checkpoints):
    path, _ = checkpoints["a"]
    policy = start_policy(ros_node_process, path)
    executor = start_executor(ros_node_process)
    robot.wait_executed(running, 45.0, "from the policy", policy, executor)
    robot.spin(1.0)
    chunk_values = np.array([a for _, c in robot.chunks for a in c.actions])
    assert np.abs(chunk_values).max() > BOUND, "the policy proposes actions beyond the bounds (clipping is tested)"

    t_kill = time.monotonic()
    executor.kill()
    robot.spin(2.0)
    late = [t for t, _ in robot.commands if t > t_kill + 0.5]  # in flight at the kill: at most one tick
    assert late == [], f"{len(late)} commands published while the executor was down"
    assert [m for t, m in robot.chunks if t > t_kill], "the policy kept publishing chunks meanwhile"

    t_restart = time.monotonic()
    restarted = start_executor(ros_node_process)
    t_cmd = None
    if robot.spin(20.0, lambda: any(t > t_restart for t, _ in robot.commands)):
        t_cmd = min(t for t, _ in robot.commands if t > t_restart)
    assert t_cmd is not None, restarted.log()[-2000:]
    t_resume, _ = robot.wait_executed(running, 20.0, "from the policy after the restart", restarted)
    robot.spin(1.0)
    robot.assert_commands_safe()
    log = restarted.wait_for_log("executor ready")
    assert "holding until a chunk arrives" in log and "-> RUNNING" in log, log[-2000:]
    record("executor_node SIGKILL + restart", commands_while_down=len(late),
           restart_to_first_command_s=round(t_cmd - t_restart, 2), restart_to_running_s=round(t_resume - t_restart, 2))


# ---------------------------------------------------------------------------------------------
# bad chunks (this process plays a faulty policy) and silent observations
# ---------------------------------------------------------------------------------------------

MARK = 0.0123  # the good chunks' value on every dimension; bad chunks carry other values


def _good(robot, chunk_id, horizon=20, observation_ns=None):
    robot.publish_chunk(np.full((horizon, 7), MARK), horizon, chunk_id, observation_ns)


BAD_CHUNKS = {
    # name: (values, declared horizon, expected state, reason text)
    "nan": (np.where(np.arange(140).reshape(20, 7) == 9, np.nan, 0.04), 20, "HOLD_MALFORMED",
            "1 NaN/inf action values"),
    "oversized": (np.full(20 * 7 + 7, 0.04), 20, "HOLD_MALFORMED",
                  "wrong size: 147 action values for horizon 20 x action_dim 7 = 140"),
    "undersized": (np.full(13, 0.04), 20, "HOLD_MALFORMED",
                   "wrong size: 13 action values for horizon 20 x action_dim 7 = 140"),
    # inference took 1.5 s: the chunk is older than chunk_timeout_s when it arrives
    "late": (np.full((20, 7), 0.04), 20, "HOLD_STALE_CHUNK", "newest chunk 2 is 1."),
}


@pytest.mark.parametrize("kind", sorted(BAD_CHUNKS))
def test_bad_chunk_is_never_executed_executor_holds_with_the_reason(ros_node_process, robot, kind):
    values, horizon, state, reason = BAD_CHUNKS[kind]
    executor = start_executor(ros_node_process)
    assert robot.spin(20.0, lambda: robot.chunk_pub.get_subscription_count() > 0)
    first = 0
    for first in range(1, 6):  # the first message after discovery may be lost: retry with a new chunk
        first_ns = robot.now_ns()
        _good(robot, first, horizon=5 if kind == "late" else 20, observation_ns=first_ns)
        try:
            robot.wait_executed(lambda m: running(m) and m.chunk_id == first, 1.5, "from the good chunk", executor)
            break
        except AssertionError:
            if first == 5:
                raise
    bad_id, next_id = first + 1, first + 2
    reason = reason.replace("chunk 2", f"chunk {bad_id}")

    stamp_ns = None
    if kind == "late":  # the good chunk runs out, then the next arrives 1.5 s after its observation
        robot.wait_executed(lambda m: m.source == HOLD, 3.0, "HOLD when the good chunk is used up", executor)
        robot.spin(max(0.0, (first_ns + 1_800_000_000 - robot.now_ns()) * 1e-9))
        stamp_ns = robot.now_ns() - 1_500_000_000
    t_bad = time.monotonic()
    robot.publish_chunk(values, horizon, bad_id, observation_ns=stamp_ns)
    t_hold, hold = robot.wait_executed(lambda m: m.source == HOLD and reason in m.hold_reason, 3.0,
                                       f"HOLD saying why the {kind} chunk is not executed", executor)
    robot.spin(1.0)
    during = [m for t, m in robot.executed if t >= t_hold]
    assert during and all(m.source == HOLD for m in during), "nothing runs behind a bad chunk"
    assert not any(m.chunk_id == bad_id for _, m in robot.executed), f"the {kind} chunk was executed"

    _good(robot, next_id)
    robot.wait_executed(lambda m: running(m) and m.chunk_id == next_id, 5.0, "from the next good chunk", executor)
    robot.spin(0.3)
    executed = np.array([m.action for _, m in robot.executed if m.source == POLICY])
    assert np.allclose(executed, MARK), "only the good chunks' values were ever executed"
    robot.assert_commands_safe()
    log = executor.wait_for_log(f"-> {state}")
    if state == "HOLD_MALFORMED":
        assert f"chunk {bad_id} from policy 'injected_policy' rejected: {reason}; not executed" in log, log[-2000:]
        assert f"good chunk {next_id} after 1 rejected chunk(s)" in log
    else:
        assert f"state RUNNING -> HOLD_STALE_CHUNK: newest chunk {first} exhausted" in log, log[-2000:]
    assert log.rstrip().splitlines()[-1].endswith("-> RUNNING"), log[-1000:]
    record(f"{kind} chunk", hold_latency_s=round(t_hold - t_bad, 3), hold_reason=hold.hold_reason)


def test_observations_stop_executor_holds_stale_obs_and_resumes_when_they_return(
        ros_node_process, robot, checkpoints):
    path, _ = checkpoints["a"]
    policy = start_policy(ros_node_process, path)
    executor = start_executor(ros_node_process)
    robot.wait_executed(running, 45.0, "from the policy", policy, executor)
    robot.spin(0.5)

    t_stop = time.monotonic()
    robot.send_observations = False  # the camera / joint_states driver dies
    # The policy gets no new observation, so its last chunk may run out first (HOLD_STALE_CHUNK);
    # observation_timeout_s after the last message the executor holds for the stale observation.
    t_hold, _ = robot.wait_executed(lambda m: m.source == HOLD, 3.0, "HOLD after the observations stop", executor)
    t_obs, hold = robot.wait_executed(lambda m: m.source == HOLD and m.hold_reason.startswith("no observation for"),
                                      3.0, "HOLD_STALE_OBS", executor)
    assert "(> observation_timeout_s 0.5)" in hold.hold_reason, hold.hold_reason
    robot.spin(1.5)
    assert all(m.source == HOLD for t, m in robot.executed if t >= t_hold), "nothing but HOLD while blind"
    assert robot.spin(2.0, lambda: robot.executor_status.startswith("HOLD_STALE_OBS: no observation for"))
    policy.wait_for_log("no inference: stale inputs")  # the policy stops inferring on stale inputs too

    t_back = time.monotonic()
    robot.send_observations = True
    t_resume, _ = robot.wait_executed(running, 10.0, "after the observations return", policy, executor)
    assert robot.spin(3.0, lambda: robot.executor_status == "RUNNING"), robot.executor_status
    robot.assert_commands_safe()
    executor.wait_for_log("-> HOLD_STALE_OBS: no observation for")
    record("observations stop", hold_latency_s=round(t_hold - t_stop, 3),
           stale_obs_hold_after_s=round(t_obs - t_stop, 3), observation_timeout_s=0.5,
           resume_after_return_s=round(t_resume - t_back, 2))


def test_executor_logs_every_real_outage_even_two_within_the_flap_window(ros_node_process, robot, checkpoints):
    path, _ = checkpoints["a"]
    policy = start_policy(ros_node_process, path)
    executor = start_executor(ros_node_process)
    robot.wait_executed(running, 45.0, "from the policy", policy, executor)
    holds = []
    for outage_s in (1.0, 2.5):  # two driver dropouts 3 s apart: the second is no flap
        robot.send_observations = False
        t0 = time.monotonic()
        robot.spin(outage_s)
        robot.send_observations = True
        holds.append(sum(m.hold_reason.startswith("no observation for") for t, m in robot.executed if t > t0))
        robot.wait_executed(running, 10.0, "after the observations return", policy, executor)
        robot.spin(0.5)
    assert holds[0] >= 4 and holds[1] >= 19, holds  # both outages really held the robot (ticks)
    log = executor.log()
    assert log.count("-> HOLD_STALE_OBS: no observation for") == 2, log[-1500:]


def test_corrupt_checkpoint_offered_while_running_is_refused_and_the_old_policy_keeps_driving(
        ros_node_process, robot, checkpoints):
    path, policy_id = checkpoints["a"]
    policy = start_policy(ros_node_process, path)
    executor = start_executor(ros_node_process)
    robot.wait_executed(running, 45.0, "from the policy", policy, executor)

    t_call = time.monotonic()
    response = robot.load_policy(checkpoints["corrupt"])
    answer_s = time.monotonic() - t_call
    assert not response.success and response.policy_id == policy_id
    assert "refused" in response.message and f"still running {policy_id}" in response.message, response.message
    robot.spin(1.5)
    after = [m for t, m in robot.executed if t > t_call]
    assert after and {m.policy_id for m in after if m.source == POLICY} == {policy_id}
    assert sum(m.source == POLICY for m in after) >= 0.8 * len(after), "the robot kept running the old policy"
    assert {c.policy_id for t, c in robot.chunks if t > t_call} == {policy_id}
    log = policy.wait_for_log(f"still running {policy_id}")
    assert f"LoadPolicy {checkpoints['corrupt']}: validating" in log
    record("corrupt checkpoint to LoadPolicy", refusal_answer_s=round(answer_s, 3),
           policy_ticks_during_1p5s=sum(m.source == POLICY for m in after), ticks_during_1p5s=len(after))


# ---------------------------------------------------------------------------------------------
# learning side: damaged bags at ingestion, trainer killed mid-iteration
# ---------------------------------------------------------------------------------------------

def _aloe_train() -> list[str]:
    exe = shutil.which("aloe-train")
    return [exe] if exe else [sys.executable, "-m", "aloe_critic.train"]


TRAIN_SMALL = ["--image-size", "8", "--chunk-horizon", "4", "--policy-steps", "10", "--policy-batch-size", "8",
               "--no-progress", "--ensemble-size", "3", "--critic-hidden-dim", "16", "--critic-steps", "5",
               "--critic-batch-size", "16", "--num-policy-samples", "2"]


def _write_bags(root: Path) -> list[Path]:
    return write_training_bags(root, writer="recorder")


def _write_unknown_type_bag(path: Path) -> Path:
    """A bag whose /joint_states was recorded with a vendor type this suite does not know."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import get_types_from_msg

    from aloe_data.bag_layout import make_typestore

    ts = make_typestore()
    ts.register(get_types_from_msg("float64[] position\nstring[] name\n", "acme_msgs/msg/ArmState"))
    writer = Writer(path, version=9, storage_plugin=StoragePlugin.MCAP)
    writer.open()
    arm = writer.add_connection("/joint_states", "acme_msgs/msg/ArmState", typestore=ts)
    act = writer.add_connection("/aloe/executed_action", "aloe_msgs/msg/ExecutedAction", typestore=ts)
    ee = writer.add_connection("/aloe/ee_pose", "geometry_msgs/msg/PoseStamped", typestore=ts)
    T = ts.types
    for k in range(5):
        ns = 1_000_000_000 + k * 100_000_000
        stamp = T["builtin_interfaces/msg/Time"](sec=ns // 10**9, nanosec=ns % 10**9)
        header = T["std_msgs/msg/Header"](stamp=stamp, frame_id="")
        pose = T["geometry_msgs/msg/Pose"](position=T["geometry_msgs/msg/Point"](x=0.0, y=0.0, z=0.0),
                                           orientation=T["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0))
        writer.write(ee, ns, bytes(ts.serialize_cdr(T["geometry_msgs/msg/PoseStamped"](header=header, pose=pose),
                                                    "geometry_msgs/msg/PoseStamped")))
        writer.write(arm, ns, bytes(ts.serialize_cdr(T["acme_msgs/msg/ArmState"](position=np.zeros(8), name=JOINTS),
                                                     "acme_msgs/msg/ArmState")))
        msg = T["aloe_msgs/msg/ExecutedAction"](header=header,
                                                action=np.zeros(7, np.float32), source=0, chunk_id=0, index_in_chunk=0,
                                                policy_id="p", hold_reason="")
        writer.write(act, ns + 1, bytes(ts.serialize_cdr(msg, "aloe_msgs/msg/ExecutedAction")))
    writer.close()
    return path


def test_truncated_bag_and_bag_with_unknown_types_are_skipped_with_a_warning_and_the_rest_is_used(tmp_path):
    bags = tmp_path / "bags"
    good = _write_bags(bags)
    truncated = shutil.copytree(good[0], bags / "truncated")
    mcap = next(truncated.glob("*.mcap"))
    mcap.write_bytes(mcap.read_bytes()[: mcap.stat().st_size // 2])  # disk full / copy cut mid-file
    _write_unknown_type_bag(bags / "vendor")
    (tmp_path / "policy.json").write_text(json.dumps(TINY_POLICY))
    cmd = _aloe_train() + ["--bags", str(bags), "--init-only", "--out", str(tmp_path / "iter0"), "--cache-dir",
                           str(tmp_path / "cache"), "--policy-config-file", str(tmp_path / "policy.json"), *TRAIN_SMALL]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=dict(os.environ, OMP_NUM_THREADS="1"))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert f"skipping bag {bags / 'truncated'}: cannot open (" in out
    assert "the .mcap file is truncated or corrupt" in out.split(f"skipping bag {bags / 'truncated'}")[1]
    assert f"skipping bag {bags / 'vendor'}: topic /joint_states has unknown message type acme_msgs/msg/ArmState" in out
    assert "30 transitions from 3 bags, 2 skipped" in out, out[-2000:]
    manifest = json.loads((tmp_path / "iter0" / "data_manifest.json").read_text())
    assert sorted(Path(b["bag"]).name for b in manifest["bags"]) == ["ep0", "ep1", "ep2"]
    assert {Path(s["bag"]).name for s in manifest["skipped"]} == {"truncated", "vendor"}
    assert validate_checkpoint(tmp_path / "iter0")[0]


def test_trainer_sigkill_mid_iteration_keeps_the_previous_checkpoint_valid_and_a_rerun_completes(tmp_path):
    bags = tmp_path / "bags"
    _write_bags(bags)
    (tmp_path / "policy.json").write_text(json.dumps(TINY_POLICY))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    base = ["--bags", str(bags), "--cache-dir", str(tmp_path / "cache"), *TRAIN_SMALL]
    ckpt = tmp_path / "current"
    first = subprocess.run(_aloe_train() + base + ["--init-only", "--out", str(ckpt), "--policy-config-file",
                                                   str(tmp_path / "policy.json")],
                           capture_output=True, text=True, timeout=120, env=env)
    assert first.returncode == 0, first.stderr[-2000:]
    before = {p.name: p.read_bytes() for p in ckpt.iterdir() if p.is_file()}
    old_id = FlowMatchingPolicy.from_pretrained(ckpt).policy_id

    shutil.copytree(ckpt, tmp_path / "policy_in")
    log = tmp_path / "killed.log"
    cmd = _aloe_train() + base + ["--policy-in", str(tmp_path / "policy_in"), "--out", str(ckpt), "--overwrite",
                                  "--method", "aloe", "--policy-steps", "1000000"]
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while "improving the policy" not in log.read_text() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "improving the policy" in log.read_text(), log.read_text()[-2000:]
        time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    assert {p.name: p.read_bytes() for p in ckpt.iterdir() if p.is_file()} == before, "checkpoint touched"
    ok, message = validate_checkpoint(ckpt)
    assert ok, message

    t0 = time.monotonic()
    rerun = subprocess.run(cmd[:-1] + ["10"], capture_output=True, text=True, timeout=120, env=env)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"wrote {ckpt} policy_id=" in rerun.stdout, rerun.stdout[-1000:]
    assert validate_checkpoint(ckpt)[0]
    assert FlowMatchingPolicy.from_pretrained(ckpt).policy_id != old_id
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".current.")], "no stage left behind"
    record("aloe-train SIGKILL mid-iteration", rerun_s=round(time.monotonic() - t0, 1))
