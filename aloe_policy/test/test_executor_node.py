"""executor_node in its own process, driven in lock-step on sim time by this test process.

The test plays the simulator: it publishes /clock one control period at a time (plus
/joint_states), like sim_node does, and waits for the one ExecutedAction of that tick.
Chunks and interventions are published between ticks, so every assertion is exact.
"""

import math
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
from aloe_msgs.msg import ActionChunk, ExecutedAction, Intervention  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from rosgraph_msgs.msg import Clock  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import Float64MultiArray  # noqa: E402

pytestmark = pytest.mark.system

PERIOD_NS = 100_000_000  # 10 Hz
T0_NS = 1000 * PERIOD_NS  # sim time of the first tick (100 s)
NAMES = ["dx", "dy", "dz", "rx", "ry", "rz", "grip"]
POLICY, HUMAN, HOLD = ExecutedAction.SOURCE_POLICY, ExecutedAction.SOURCE_HUMAN, ExecutedAction.SOURCE_HOLD
SETTLE_S = 0.5  # let a message published between ticks reach the executor before the next tick


def time_msg(ns):
    from builtin_interfaces.msg import Time
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


@pytest.fixture(scope="module")
def rclpy_context():
    rclpy.init()
    yield
    rclpy.shutdown()


class SimHarness:
    """Plays sim_node and the policy: /clock, /joint_states, chunks, interventions; records outputs."""

    def __init__(self, executor_proc):
        self.proc = executor_proc
        self.node = rclpy.create_node("executor_test_harness")
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.clock_pub = self.node.create_publisher(Clock, "/clock", 10)
        self.joint_pub = self.node.create_publisher(JointState, "/joint_states", 10)
        self.chunk_pub = self.node.create_publisher(ActionChunk, "/aloe/action_chunk", reliable)
        self.iv_pub = self.node.create_publisher(Intervention, "/aloe/intervention", reliable)
        self.executed: list[ExecutedAction] = []
        self.commands: list[list[float]] = []
        self.diagnostics: list[DiagnosticArray] = []
        self.node.create_subscription(ExecutedAction, "/aloe/executed_action", self.executed.append, reliable)
        self.node.create_subscription(Float64MultiArray, "/aloe/command", lambda m: self.commands.append(list(m.data)),
                                      reliable)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, 10)
        self.now_ns = T0_NS - PERIOD_NS
        self.next_chunk_id = 1
        self._wait(lambda: all(p.get_subscription_count() > 0 for p in
                               (self.clock_pub, self.joint_pub, self.chunk_pub, self.iv_pub))
                   and self.node.count_publishers("/aloe/executed_action") > 0, 30.0, "executor discovery")
        # Discovery is not symmetric: we may see the executor's publishers before its writers know our
        # readers, and a tick's ExecutedAction published then is lost (a republished /clock of the same
        # time makes no second tick). Its diagnostics (1 Hz, steady clock) reaching us show its writers
        # know our readers.
        self._wait(lambda: len(self.diagnostics) > 0, 30.0, "the executor's first diagnostics")

    def _wait(self, predicate, timeout, what):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rclpy.spin_once(self.node, timeout_sec=0.02)
            if predicate():
                return
        raise AssertionError(f"timed out waiting for {what}; executor log:\n{self.proc.log()[-3000:]}")

    def spin_for(self, seconds):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            rclpy.spin_once(self.node, timeout_sec=0.02)

    def step(self, joint_states=True) -> ExecutedAction:
        """Advance sim time by one period; return the ExecutedAction of that tick."""
        self.now_ns += PERIOD_NS
        if joint_states:
            js = JointState(name=["j"], position=[0.0], velocity=[0.0])
            js.header.stamp = time_msg(self.now_ns)
            self.joint_pub.publish(js)
            self.spin_for(0.03)  # observation before clock, as sim_node publishes them
        count = len(self.executed)
        for _ in range(3):  # /clock is best effort: republish if the tick did not come
            self.clock_pub.publish(Clock(clock=time_msg(self.now_ns)))
            try:
                self._wait(lambda: len(self.executed) > count, 3.0, f"tick at {self.now_ns}")
                break
            except AssertionError:
                continue
        else:
            raise AssertionError(f"no ExecutedAction for tick {self.now_ns}; log:\n{self.proc.log()[-3000:]}")
        msg = self.executed[-1]
        assert msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec == self.now_ns
        return msg

    def publish_chunk(self, actions, observation_ns=None, policy_id="policy_a", chunk_id=None, horizon=None,
                      action_dim=7):
        actions = np.asarray(actions, dtype=np.float32)
        msg = ActionChunk(chunk_id=self.next_chunk_id if chunk_id is None else chunk_id, policy_id=policy_id,
                          horizon=int(horizon if horizon is not None else actions.shape[0]),
                          action_dim=action_dim, action_names=NAMES if action_dim == 7 else [],
                          actions=[float(x) for x in actions.ravel()])
        self.next_chunk_id += 1
        msg.observation_stamp = time_msg(self.now_ns if observation_ns is None else observation_ns)
        msg.control_period.nanosec = PERIOD_NS
        msg.header.stamp = time_msg(self.now_ns)
        self.chunk_pub.publish(msg)
        self._delivered(self.chunk_pub)
        return msg

    def publish_intervention(self, active, action=None):
        msg = Intervention(active=active, device=Intervention.DEVICE_SCRIPTED,
                           action=[float(x) for x in (action if action is not None else [0.0] * 7)])
        msg.header.stamp = time_msg(self.now_ns)
        self.iv_pub.publish(msg)
        self._delivered(self.iv_pub)

    def _delivered(self, pub):
        """Let a message published between ticks reach the executor before the next tick.

        (Publisher.wait_for_all_acked would be exact but waits for Fast DDS's heartbeat, ~3 s.)
        """
        self.spin_for(SETTLE_S)

    def close(self):
        self.node.destroy_node()


def ramp_chunk(start, horizon=10, dims=7, scale=0.01):
    """(H, D) chunk whose action k is (start + k) * scale on every dim."""
    return np.array([[(start + k) * scale] * dims for k in range(horizon)], dtype=np.float32)


@pytest.fixture
def start_executor(ros_node_process, rclpy_context):
    harnesses = []

    def start(**params):
        base = {"use_sim_time": True, "control_rate_hz": 10.0, "blending_mode": "newest",
                "chunk_timeout_s": 1.0, "observation_timeout_s": 0.5, "intervention_timeout_s": 0.5}
        base.update(params)
        proc = ros_node_process("aloe_policy", "executor_node", base)
        harness = SimHarness(proc)
        harnesses.append(harness)
        return harness

    yield start
    for h in harnesses:
        h.close()


def test_executor_ticks_once_per_sim_period_and_holds_until_first_chunk(start_executor):
    sim = start_executor()
    first = [sim.step() for _ in range(3)]
    assert [m.source for m in first] == [HOLD] * 3
    assert "no chunk received" in first[-1].hold_reason
    assert all(list(m.action) == [0.0] * 7 for m in first)
    sim.spin_for(0.5)  # sim time stands still: no extra ticks
    assert len(sim.executed) == 3
    chunk = sim.publish_chunk(ramp_chunk(0), observation_ns=sim.now_ns)
    got = [sim.step() for _ in range(3)]
    assert [m.source for m in got] == [POLICY] * 3
    assert [m.index_in_chunk for m in got] == [1, 2, 3]  # aligned by observation stamp + k * period
    assert all(m.chunk_id == chunk.chunk_id and m.policy_id == "policy_a" for m in got)
    assert np.allclose([m.action[0] for m in got], [0.01, 0.02, 0.03], atol=1e-6)
    sim.spin_for(0.3)
    assert len(sim.executed) == 6, "exactly one ExecutedAction per sim period"
    # The command sent to the robot equals what was recorded as executed.
    assert len(sim.commands) == 6 and np.allclose(sim.commands[-1], got[-1].action, atol=1e-6)
    log = sim.proc.wait_for_log("RUNNING")
    assert log.count("-> NO_POLICY") == 1, "state logged once on change, not every tick"


def test_executor_holds_on_malformed_chunks_and_resumes_on_fresh_good_chunk(start_executor):
    sim = start_executor(blocked_policy_ids=["bad_policy"])
    good = sim.publish_chunk(ramp_chunk(0))
    assert sim.step().source == POLICY
    cases = [
        (dict(actions=np.where(np.arange(70).reshape(10, 7) == 5, np.nan, ramp_chunk(0))), "NaN/inf"),
        (dict(actions=ramp_chunk(0)[:9], horizon=10), "wrong size"),
        (dict(actions=ramp_chunk(0, dims=6), action_dim=6), "action_dim 6 != executor action_dim 7"),
        (dict(actions=ramp_chunk(0), policy_id="bad_policy"), "blocked"),
    ]
    for fields, reason in cases:
        bad = sim.publish_chunk(**fields)
        held = sim.step()
        assert held.source == HOLD and reason in held.hold_reason, (reason, held.hold_reason)
        assert list(held.action) == [0.0] * 7, "a rejected chunk is never executed"
        assert sim.step().source == HOLD, "keeps holding: the previous good chunk is not resumed"
        sim.proc.wait_for_log(f"chunk {bad.chunk_id} from policy '{bad.policy_id}' rejected")
        fresh = sim.publish_chunk(ramp_chunk(0))
        resumed = sim.step()
        assert resumed.source == POLICY and resumed.chunk_id == fresh.chunk_id
    assert good.chunk_id < fresh.chunk_id


def test_executor_holds_on_stale_chunk(start_executor):
    sim = start_executor(chunk_timeout_s=0.5)
    sim.step()
    sim.publish_chunk(ramp_chunk(0), observation_ns=sim.now_ns - 2_000_000_000)  # observed 2 s ago
    held = sim.step()
    assert held.source == HOLD and "old" in held.hold_reason and "chunk_timeout_s" in held.hold_reason
    sim.publish_chunk(ramp_chunk(0, horizon=3))
    assert [sim.step().source for _ in range(2)] == [POLICY, POLICY]
    exhausted = sim.step()  # index 3 of a 3-action chunk: used up, never extrapolated
    assert exhausted.source == HOLD and "exhausted" in exhausted.hold_reason
    # The same cycle again (as with synchronous inference): every tick still says why it holds,
    # but the log does not repeat the transition at chunk rate.
    sim.publish_chunk(ramp_chunk(0, horizon=3))
    assert [sim.step().source for _ in range(3)] == [POLICY, POLICY, HOLD]
    sim.proc.wait_for_log("-> HOLD_STALE_CHUNK")
    time.sleep(0.3)
    assert sim.proc.log().count("RUNNING -> HOLD_STALE_CHUNK") == 1


def test_executor_holds_on_stale_observation_and_resumes(start_executor):
    sim = start_executor(observation_timeout_s=0.3)
    sim.publish_chunk(ramp_chunk(0))
    assert sim.step().source == POLICY
    silent = [sim.step(joint_states=False) for _ in range(5)]
    assert [m.source for m in silent[:2]] == [POLICY] * 2  # up to 0.3 s of silence is tolerated
    assert silent[-1].source == HOLD and "no observation for" in silent[-1].hold_reason
    back = sim.step(joint_states=True)
    assert back.source == POLICY and back.index_in_chunk == 7
    sim.proc.wait_for_log("-> HOLD_STALE_OBS")


def test_takeover_sends_operator_action_from_next_tick_and_release_returns_to_policy(start_executor):
    sim = start_executor()
    chunk = sim.publish_chunk(ramp_chunk(0))
    assert sim.step().source == POLICY
    operator = [0.1, -0.2, 0.3, 0.0, 0.0, 0.0, 0.5]
    sim.publish_intervention(True, operator)
    human = sim.step()
    assert human.source == HUMAN and np.allclose(human.action, operator, atol=1e-6)
    assert human.chunk_id == 0 and human.policy_id == ""
    sim.publish_intervention(False)
    back = sim.step()
    assert back.source == POLICY and back.chunk_id == chunk.chunk_id and back.index_in_chunk == 3
    # An operator device that stops publishing times out (intervention_timeout_s 0.5) -> policy again.
    sim.publish_intervention(True, operator)
    sources = [sim.step().source for _ in range(6)]
    assert sources[0] == HUMAN and sources[-1] == POLICY
    sim.proc.wait_for_log("-> HUMAN")


def test_linear_blend_across_chunk_boundary_equals_hand_computed_sequence(start_executor):
    sim = start_executor(blending_mode="linear", blend_steps=2)
    t0 = sim.now_ns + PERIOD_NS
    first = sim.publish_chunk(ramp_chunk(0), observation_ns=t0)  # action k = 0.01 k
    a = [sim.step() for _ in range(3)]  # ticks t0, t0+1, t0+2: k = 0, 1, 2
    second = sim.publish_chunk(ramp_chunk(50), observation_ns=t0 + 2 * PERIOD_NS)  # action j = 0.01 (50 + j)
    b = [sim.step() for _ in range(4)]  # ticks t0+3 .. t0+6: old k = 3..6, new j = 1..4
    old = [0.03, 0.04, 0.05, 0.06]
    new = [0.51, 0.52, 0.53, 0.54]
    w = [1 / 3, 2 / 3, 1.0, 1.0]
    expected = [0.0, 0.01, 0.02] + [(1 - wi) * o + wi * n for wi, o, n in zip(w, old, new)]
    executed = [m.action[0] for m in a + b]
    assert executed == pytest.approx(expected, abs=1e-6)
    assert [m.chunk_id for m in b] == [second.chunk_id] * 4 and a[0].chunk_id == first.chunk_id
    assert [m.index_in_chunk for m in b] == [1, 2, 3, 4]


def test_temporal_ensemble_across_chunk_boundary_equals_hand_computed_sequence(start_executor):
    m = 0.5
    sim = start_executor(blending_mode="temporal_ensemble", ensemble_decay=m)
    t0 = sim.now_ns + PERIOD_NS
    sim.publish_chunk(ramp_chunk(0, horizon=4), observation_ns=t0)
    a = [sim.step() for _ in range(2)]  # k = 0, 1
    sim.publish_chunk(ramp_chunk(50, horizon=4), observation_ns=t0 + 1 * PERIOD_NS)
    b = [sim.step() for _ in range(4)]  # old k = 2, 3, -, -; new j = 1, 2, 3, 4(exhausted)
    w1 = math.exp(-m)
    expected = [0.0, 0.01, (0.02 + w1 * 0.51) / (1 + w1), (0.03 + w1 * 0.52) / (1 + w1), 0.53]
    assert [x.action[0] for x in a + b[:3]] == pytest.approx(expected, abs=1e-6)
    assert b[3].source == HOLD and "exhausted" in b[3].hold_reason


def test_bounds_and_rate_limits_are_applied_to_policy_and_operator_commands(start_executor):
    sim = start_executor(action_lower=[-0.5] * 7, action_upper=[0.5] * 7, max_rate=[1.0] * 6 + [0.0])
    sim.publish_chunk(np.full((10, 7), 0.9, dtype=np.float32))
    got = [sim.step().action for _ in range(7)]
    # From the hold command 0: at most 1.0 unit/s * 0.1 s per tick, then the 0.5 bound; grip dim unlimited.
    assert [g[0] for g in got] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5, 0.5, 0.5], abs=1e-6)
    assert [g[6] for g in got] == pytest.approx([0.5] * 7, abs=1e-6)
    sim.publish_intervention(True, [-0.9] * 7)
    human = sim.step()
    assert human.source == HUMAN and human.action[0] == pytest.approx(0.4) and human.action[6] == pytest.approx(-0.5)


def test_diagnostics_report_state_and_counters(start_executor):
    sim = start_executor()
    sim.step()
    sim.step()

    def latest():
        for diag in reversed(sim.diagnostics):
            for status in diag.status:
                if "action executor" in status.name:
                    return status, {kv.key: kv.value for kv in status.values}
        return None, {}

    # Diagnostics run on the steady clock: they keep coming while sim time stands still.
    sim._wait(lambda: latest()[1].get("ticks") == "2", 5.0, "diagnostics after two ticks")
    status, values = latest()
    assert values["state"] == "NO_POLICY" and status.level == status.WARN
    assert "no chunk received" in status.message
    assert int(values["missed_ticks"]) == 0 and "max_tick_interval_ms" in values


def test_twist_stamped_adapter_sends_first_six_dims_scaled(start_executor, rclpy_context):
    from geometry_msgs.msg import TwistStamped

    sim = start_executor(output_adapter="twist_stamped", frame_id="tool0",  # twist_scale 0: 1 / 0.1 s
                         command_topic="/aloe/twist_cmd")
    twists = []
    sim.node.create_subscription(TwistStamped, "/aloe/twist_cmd", twists.append,
                                 QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
    sim._wait(lambda: sim.node.count_publishers("/aloe/twist_cmd") > 0, 10.0, "twist publisher")
    sim.publish_chunk(np.tile(np.array([0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.5], dtype=np.float32), (10, 1)))
    sim.step()
    sim._wait(lambda: twists, 5.0, "a TwistStamped command")
    t = twists[-1]
    assert t.header.frame_id == "tool0"
    assert [t.twist.linear.x, t.twist.linear.y, t.twist.linear.z, t.twist.angular.x, t.twist.angular.y,
            t.twist.angular.z] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], abs=1e-5)


def test_moveit_adapter_without_moveit_py_exits_with_clear_message(ros_node_process):
    try:
        import moveit.planning  # noqa: F401
        pytest.skip("moveit_py is installed here")
    except ImportError:
        pass
    proc = ros_node_process("aloe_policy", "executor_node", {"output_adapter": "moveit_py"})
    proc.popen.wait(30)
    assert proc.popen.returncode == 1
    assert "needs MoveIt 2's moveit_py" in proc.log() and "float64_multi_array" in proc.log()


def test_joint_trajectory_adapter_sends_one_point_reached_in_one_period(start_executor, rclpy_context):
    from trajectory_msgs.msg import JointTrajectory

    joints = [f"j{i}" for i in range(7)]
    sim = start_executor(output_adapter="joint_trajectory", joint_names=joints, command_topic="/aloe/jtc_cmd")
    trajectories = []
    sim.node.create_subscription(JointTrajectory, "/aloe/jtc_cmd", trajectories.append,
                                 QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
    sim._wait(lambda: sim.node.count_publishers("/aloe/jtc_cmd") > 0, 10.0, "trajectory publisher")
    held = sim.step()
    sim.spin_for(0.3)
    assert held.source == HOLD and trajectories == [], "no made-up position target before the first command"
    sim.publish_chunk(ramp_chunk(10))
    executed = sim.step()
    sim._wait(lambda: trajectories, 5.0, "a JointTrajectory command")
    t = trajectories[-1]
    assert list(t.joint_names) == joints and len(t.points) == 1
    assert t.points[0].time_from_start.sec == 0 and t.points[0].time_from_start.nanosec == PERIOD_NS
    assert np.allclose(t.points[0].positions, executed.action, atol=1e-6)
    ticks = [sim.step() for _ in range(12)]  # the chunk runs out and goes stale: a position interface holds
    sim.spin_for(0.3)
    last_policy = [m for m in ticks if m.source == POLICY][-1]
    assert ticks[-1].source == HOLD and np.allclose(trajectories[-1].points[0].positions, last_policy.action, atol=1e-6)
    assert np.allclose(ticks[-1].action, last_policy.action, atol=1e-6), "HOLD repeats the last position, not zeros"


def test_bad_configuration_exits_with_the_parameter_named(ros_node_process):
    proc = ros_node_process("aloe_policy", "executor_node", {"control_rate_hz": 50, "blending_mode": "linear"})
    proc.popen.wait(30)
    assert proc.popen.returncode == 1
    assert "control_rate_hz" in proc.log() and "e.g. 50.0" in proc.log() and "Traceback" not in proc.log()
    proc = ros_node_process("aloe_policy", "executor_node", {"blending_mode": "cubic"})
    proc.popen.wait(30)
    assert proc.popen.returncode == 1 and "unknown blending mode 'cubic'" in proc.log()


def test_episode_event_drops_the_previous_episodes_plan(start_executor):
    """A chunk planned in one episode never runs into the next: after an EpisodeEvent the
    executor holds until a chunk observed after the event arrives (found in the main loop: the
    previous episode's 'gripper closed' tail was executed after the reset)."""
    from aloe_msgs.msg import EpisodeEvent

    sim = start_executor()
    event_pub = sim.node.create_publisher(EpisodeEvent, "/aloe/episode_event",
                                          QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
    sim._wait(lambda: event_pub.get_subscription_count() > 0, 30.0, "executor subscribes episode events")
    sim.step()
    sim.publish_chunk(ramp_chunk(0))
    assert sim.step().source == POLICY
    start = EpisodeEvent(episode_id="ep-2", event=EpisodeEvent.START, task="t")
    start.header.stamp = time_msg(sim.now_ns + PERIOD_NS)
    event_pub.publish(start)
    sim.spin_for(SETTLE_S)
    held = sim.step()
    assert held.source == HOLD and "new episode" in held.hold_reason  # expected, not a fault
    sim.publish_chunk(ramp_chunk(5), observation_ns=sim.now_ns - PERIOD_NS)  # in flight across the event
    assert sim.step().source == HOLD
    sim.proc.wait_for_log("dropped: planned before the episode event")
    sim.publish_chunk(ramp_chunk(0))  # observed in the new episode
    resumed = sim.step()
    assert resumed.source == POLICY and resumed.chunk_id == sim.next_chunk_id - 1
    log = sim.proc.log()
    assert "-> HOLD_NEW_EPISODE" in log and "-> NO_POLICY" not in log.split("-> HOLD_NEW_EPISODE", 1)[1], \
        "an episode boundary is no warning"
    # no chunk for longer than chunk_timeout_s after an event is a real fault: warned
    again = EpisodeEvent(episode_id="ep-3", event=EpisodeEvent.START, task="t")
    again.header.stamp = time_msg(sim.now_ns)
    event_pub.publish(again)
    sim.spin_for(SETTLE_S)
    reasons = [sim.step().hold_reason for _ in range(13)]
    assert "new episode" in reasons[0] and "s since the episode event" in reasons[-1]
    assert sum("new episode" in r for r in reasons) in (10, 11)  # chunk_timeout_s 1.0 = 10 ticks of 0.1 s
    sim.proc.wait_for_log("HOLD_NEW_EPISODE -> NO_POLICY")


def test_realtime_priority_helper_applies_fifo_to_the_calling_thread_or_says_why_not(monkeypatch):
    import os
    import threading

    from aloe_policy.realtime import apply_realtime_priority

    assert apply_realtime_priority(0) == ""  # off: nothing touched
    result = {}

    def in_thread():  # a throwaway thread: the test process's own threads keep their scheduling
        result["problem"] = apply_realtime_priority(10)
        result["policy"] = os.sched_getscheduler(0)

    t = threading.Thread(target=in_thread)
    t.start()
    t.join()
    if result["problem"] == "":
        assert result["policy"] == os.SCHED_FIFO
    else:
        assert "rtprio" in result["problem"] and result["policy"] == os.SCHED_OTHER
    assert os.sched_getscheduler(0) == os.SCHED_OTHER, "only the calling thread changes"

    def refuse(*args):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "sched_setscheduler", refuse)
    problem = apply_realtime_priority(40)
    assert problem.startswith("Operation not permitted") and "limits.conf" in problem


def test_executor_with_realtime_priority_runs_its_spin_thread_fifo_or_warns(start_executor):
    import os

    sim = start_executor(realtime_priority=20)
    sim.step()
    log = sim.proc.log()
    pid = sim.proc.popen.pid
    if "control thread runs SCHED_FIFO priority 20" in log:
        assert os.sched_getscheduler(pid) == os.SCHED_FIFO and os.sched_getparam(pid).sched_priority == 20
    else:
        assert "realtime_priority 20 not applied, normal scheduling" in log, log


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_executor_sends_a_final_hold_command_when_stopped(start_executor, sig):
    import signal

    sim = start_executor()
    sim.step()
    sim.publish_chunk(ramp_chunk(5), observation_ns=sim.now_ns)
    driving = sim.step()
    assert driving.source == POLICY and driving.action[0] > 0.0
    n_commands = len(sim.commands)
    sim.proc.popen.send_signal(getattr(signal, sig))
    sim._wait(lambda: any(m.source == HOLD and "shutting down" in m.hold_reason for m in sim.executed), 10.0,
              "the final hold")
    sim.spin_for(0.3)
    assert len(sim.commands) > n_commands and sim.commands[-1] == [0.0] * 7, "the last command is the hold"
    assert sim.proc.popen.wait(10) == 0
    assert f"executor shutting down ({sig})" in sim.proc.log()


def change_state(node, target: str, transition: str) -> bool:
    """Call <target>/change_state (lifecycle_msgs) from a test node; -> success."""
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState

    client = node.create_client(ChangeState, f"{target}/change_state")
    assert client.wait_for_service(timeout_sec=20.0), f"no {target}/change_state service"
    ids = {"configure": Transition.TRANSITION_CONFIGURE, "activate": Transition.TRANSITION_ACTIVATE,
           "deactivate": Transition.TRANSITION_DEACTIVATE, "cleanup": Transition.TRANSITION_CLEANUP}
    future = client.call_async(ChangeState.Request(transition=Transition(id=ids[transition])))
    rclpy.spin_until_future_complete(node, future, timeout_sec=20.0)
    return bool(future.result() and future.result().success)


def test_executor_as_a_managed_node_holds_until_activated_and_again_when_deactivated(start_executor):
    sim = start_executor(autostart=False)
    sim.step()
    sim.publish_chunk(ramp_chunk(1))
    held = sim.step()
    assert held.source == HOLD and "not active" in held.hold_reason, "unconfigured: it holds, it never commands"
    assert change_state(sim.node, "/executor_node", "configure") and change_state(sim.node, "/executor_node", "activate")
    sim.publish_chunk(ramp_chunk(1))
    assert sim.step().source == POLICY
    assert change_state(sim.node, "/executor_node", "deactivate")
    sim.publish_chunk(ramp_chunk(1))
    again = sim.step()
    assert again.source == HOLD and "not active" in again.hold_reason
    assert "deactivated" in sim.proc.log()


def test_a_command_adapter_flush_waits_for_its_readers_acknowledgements(rclpy_context):
    """What the final hold relies on: flush returns True once every reliable reader has acknowledged
    the commands sent (a process exiting right after publishing can lose them), and at once with no
    reader. The reader here shares the process; across processes the executor's final-hold test above."""
    from aloe_policy.command_adapters import Float64MultiArrayAdapter

    node = rclpy.create_node("flush_test_writer")
    reader = rclpy.create_node("flush_test_reader")
    try:
        adapter = Float64MultiArrayAdapter(node, "/aloe/flush_test", ["a", "b"])
        t0 = time.monotonic()
        assert adapter.flush(2.0) and time.monotonic() - t0 < 0.5, "no reader, nothing to wait for"
        got = []
        reader.create_subscription(Float64MultiArray, "/aloe/flush_test", got.append,
                                   QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
        deadline = time.monotonic() + 10.0
        while node.count_subscribers("/aloe/flush_test") == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        adapter.send(np.array([1.0, 2.0]), None)
        assert adapter.flush(10.0), "a live reader acknowledges"
        rclpy.spin_once(reader, timeout_sec=1.0)
        assert got and list(got[0].data) == [1.0, 2.0]
    finally:
        node.destroy_node()
        reader.destroy_node()
