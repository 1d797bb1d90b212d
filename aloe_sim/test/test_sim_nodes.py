"""sim_node and operator_node as separate processes, driven by an executor stand-in in the test.

The stand-in is what executor_node does in lock-step: answer every /clock tick with one
/aloe/command (optionally forwarding an active Intervention's action).
"""

from __future__ import annotations

import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402

pytestmark = pytest.mark.system

RELIABLE = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


class ExecutorStandIn:
    """An rclpy node in the test process: records what the sim publishes, answers each clock."""

    def __init__(self, skip_ticks=(), forward_interventions=False, policy=None):
        from aloe_msgs.msg import EpisodeEvent, ExecutedAction, Intervention
        from rosgraph_msgs.msg import Clock
        from sensor_msgs.msg import Image, JointState
        from std_msgs.msg import Float32, Float64MultiArray, String

        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("executor_stand_in", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.Float64MultiArray = Float64MultiArray
        self.skip_ticks = set(skip_ticks)
        self.forward = forward_interventions
        self.policy = policy or (lambda: [0.0] * 7)
        self.ExecutedAction = ExecutedAction
        self.clock_wall = []
        self.clocks, self.images, self.events, self.joints, self.rewards, self.tasks = [], [], [], [], [], []
        self.interventions, self.commands = [], []
        self.command_pub = None
        n = self.node
        n.create_subscription(Clock, "/clock", self.on_clock, RELIABLE)
        n.create_subscription(Image, "/camera/front/image_raw", self.images.append, RELIABLE)
        n.create_subscription(EpisodeEvent, "/aloe/episode_event", self.events.append, RELIABLE)
        n.create_subscription(JointState, "/joint_states", self.joints.append, RELIABLE)
        n.create_subscription(Float32, "/aloe/reward", lambda m: self.rewards.append(m.data), RELIABLE)
        n.create_subscription(String, "/aloe/task", lambda m: self.tasks.append(m.data), LATCHED)
        n.create_subscription(Intervention, "/aloe/intervention", self.interventions.append, RELIABLE)
        self.executed_pub = n.create_publisher(ExecutedAction, "/aloe/executed_action", RELIABLE)

    def spin_until(self, predicate, timeout: float, what: str, proc=None):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.05)
            if predicate():
                return
        log = proc.log()[-3000:] if proc is not None else ""
        raise AssertionError(f"timed out after {timeout} s waiting for {what}; node log:\n{log}")

    def start_commanding(self):
        """Creating the command publisher is what lets sim_node start its first episode."""
        self.command_pub = self.node.create_publisher(self.Float64MultiArray, "/aloe/command", RELIABLE)

    def on_clock(self, msg):
        ns = msg.clock.sec * 1_000_000_000 + msg.clock.nanosec
        self.clocks.append(ns)
        self.clock_wall.append(time.monotonic())
        if self.command_pub is None or len(self.clocks) - 1 in self.skip_ticks:
            return
        human = self.forward and bool(self.interventions) and self.interventions[-1].active
        action = [float(a) for a in self.interventions[-1].action] if human else list(self.policy())
        self.commands.append(action)
        self.command_pub.publish(self.Float64MultiArray(data=action))
        source = self.ExecutedAction.SOURCE_HUMAN if human else self.ExecutedAction.SOURCE_POLICY
        self.executed_pub.publish(self.ExecutedAction(action=action, source=source))

    def close(self):
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


@pytest.fixture
def stand_in_factory():
    made = []

    def make(**kwargs):
        s = ExecutorStandIn(**kwargs)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


SIM_PARAMS = dict(episodes=2, max_steps=4, image_size=32, cameras=["front"], pause_between_episodes_s=0.3,
                  command_timeout_s=1.0, startup_timeout_s=30.0, seed=3, task="pick up the cube",
                  wait_for_subscribers=["/aloe/episode_event"])


def test_sim_node_runs_lock_step_episodes_and_holds_on_a_missing_command(ros_node_process, stand_in_factory):
    from aloe_msgs.msg import EpisodeEvent

    sim = ros_node_process("aloe_sim", "sim_node", SIM_PARAMS)
    ex = stand_in_factory(skip_ticks={2})  # no answer to the third tick: the sim must hold and warn
    ex.spin_until(lambda: ex.node.count_publishers("/aloe/episode_event") > 0, 40, "sim_node to come up", sim)
    time.sleep(0.5)  # let DDS match the endpoints both ways before the first START
    ex.start_commanding()
    ex.spin_until(lambda: sim.popen.poll() is not None, 45, "sim_node to finish 2 episodes", sim)
    for _ in range(10):
        ex.executor.spin_once(timeout_sec=0.02)

    assert sim.popen.returncode == 0, sim.log()[-3000:]
    log = sim.log()
    assert "done: 2 episodes" in log
    assert "no command within 1.0 s" in log and "holding" in log, "timeout must hold and warn"
    assert log.count("no command within") == 1, "the hold warning is logged once per outage, not per tick"

    # /clock: one tick per step, 0.1 s apart, never backwards, across both episodes.
    steps = SIM_PARAMS["max_steps"]
    assert len(ex.clocks) == 2 * (steps + 1)
    assert set(np.diff(ex.clocks)) == {100_000_000}
    assert ex.clocks[0] == 1_000_000_000  # clock_start_s

    # Episodes: START / end pairs with matching fresh ids, stamped on sim time.
    kinds = [e.event for e in ex.events]
    assert kinds[0::2] == [EpisodeEvent.START] * 2
    assert all(k in (EpisodeEvent.SUCCESS, EpisodeEvent.FAILURE) for k in kinds[1::2]) and len(kinds) == 4
    ids = [e.episode_id for e in ex.events]
    assert ids[0] == ids[1] and ids[2] == ids[3] and ids[0] != ids[2]
    assert all(e.task == "pick up the cube" for e in ex.events)
    assert ex.events[-1].reward == 0.0  # zero actions never lift the cube: FAILURE at the time limit
    end_ns = ex.events[1].header.stamp.sec * 1_000_000_000 + ex.events[1].header.stamp.nanosec
    assert end_ns == ex.clocks[steps]

    # Observations: one per tick, images of the configured size and encoding.
    assert len(ex.images) == len(ex.clocks)
    img = ex.images[0]
    assert (img.height, img.width, img.encoding, img.step, len(img.data)) == (32, 32, "rgb8", 96, 32 * 32 * 3)
    js = ex.joints[0]
    assert list(js.name) == [f"panda_joint{i}" for i in range(1, 8)] + ["panda_gripper"]
    assert len(js.position) == len(js.velocity) == 8
    assert len(ex.rewards) == 2 * steps
    assert ex.tasks == ["pick up the cube"]


def test_scripted_operator_in_demo_mode_drives_the_sim_to_success(ros_node_process, stand_in_factory):
    from aloe_msgs.msg import EpisodeEvent, Intervention

    sim = ros_node_process("aloe_sim", "sim_node", dict(SIM_PARAMS, episodes=1, max_steps=60, seed=5))
    op = ros_node_process("aloe_sim", "operator_node",
                          dict(mode="demo", use_sim_time=True, max_steps=60, reaction_delay_ticks=0))
    ex = stand_in_factory(forward_interventions=True)
    op.wait_for_log("scripted operator ready", timeout=40)
    ex.spin_until(lambda: ex.node.count_publishers("/aloe/episode_event") > 0
                  and ex.node.count_publishers("/aloe/intervention") > 0, 40, "sim_node and operator_node", sim)
    time.sleep(0.5)
    ex.start_commanding()
    ex.spin_until(lambda: sim.popen.poll() is not None, 50, "the demo episode to end", sim)
    for _ in range(10):
        ex.executor.spin_once(timeout_sec=0.02)

    assert sim.popen.returncode == 0, sim.log()[-3000:]
    ends = [e for e in ex.events if e.event != EpisodeEvent.START]
    assert [e.event for e in ends] == [EpisodeEvent.SUCCESS], sim.log()[-2000:]
    assert ends[0].reward == 1.0
    assert ex.interventions and all(i.active and i.device == Intervention.DEVICE_SCRIPTED for i in ex.interventions)
    assert all(len(i.action) == 7 for i in ex.interventions)
    stamps = [i.header.stamp.sec + 1e-9 * i.header.stamp.nanosec for i in ex.interventions]
    assert 0.5 < stamps[-1] < 1.0 + 0.1 * 61, "Intervention stamps must be sim time (use_sim_time)"


def test_reset_service_aborts_the_episode_and_sigint_exits_cleanly(ros_node_process, stand_in_factory):
    """episodes 0 runs forever; ~/reset ends the episode with ABORT and starts a new one;
    real_time_factor caps the tick rate."""
    import signal

    from aloe_msgs.msg import EpisodeEvent
    from std_srvs.srv import Trigger

    sim = ros_node_process("aloe_sim", "sim_node", dict(SIM_PARAMS, episodes=0, max_steps=1000, cameras=[""],
                                                         real_time_factor=2.0, pause_between_episodes_s=0.1))
    ex = stand_in_factory()
    ex.spin_until(lambda: ex.node.count_publishers("/aloe/episode_event") > 0, 40, "sim_node to come up", sim)
    time.sleep(0.5)
    ex.start_commanding()
    ex.spin_until(lambda: len(ex.clocks) >= 8, 30, "8 ticks", sim)
    client = ex.node.create_client(Trigger, "/sim_node/reset")
    assert client.wait_for_service(timeout_sec=10.0)
    future = client.call_async(Trigger.Request())
    ex.spin_until(future.done, 10, "the reset reply", sim)
    assert future.result().success
    ex.spin_until(lambda: [e.event for e in ex.events][:3] == [EpisodeEvent.START, EpisodeEvent.ABORT,
                                                                EpisodeEvent.START], 10, "ABORT then START", sim)
    assert np.median(np.diff(ex.clock_wall)) >= 0.045, "real_time_factor 2 allows at most 20 ticks per wall second"
    assert sim.stop(signal.SIGINT) in (0, -signal.SIGINT)
    assert "Traceback" not in sim.log()


def test_operator_in_correct_mode_takes_over_a_drifting_policy_and_hands_back(ros_node_process,
                                                                             stand_in_factory):
    # 100 ticks: the drifting policy wastes ticks between corrections, and the operator's
    # commands reach the sim a tick late whenever the executor ticks before they arrive.
    sim = ros_node_process("aloe_sim", "sim_node", dict(SIM_PARAMS, episodes=1, max_steps=100, cameras=[""]))
    op = ros_node_process("aloe_sim", "operator_node",
                          dict(mode="correct", use_sim_time=True, max_steps=100, reaction_delay_ticks=2,
                               correction_ticks=8))
    drift = [0.0, 0.02, 0.01, 0.0, 0.0, 0.0, -1.0]  # the "policy": moves away from the cube
    ex = stand_in_factory(forward_interventions=True, policy=lambda: drift)
    op.wait_for_log("scripted operator ready", timeout=40)
    ex.spin_until(lambda: ex.node.count_publishers("/aloe/intervention") > 0, 40, "operator_node", op)
    time.sleep(0.5)
    ex.start_commanding()
    ex.spin_until(lambda: sim.popen.poll() is not None, 50, "the episode to end", sim)
    active = [i.active for i in ex.interventions]
    assert any(active) and not all(active), "operator must take over and hand back"
    assert "takeover (" in op.log() and "hand back" in op.log()
    from aloe_msgs.msg import EpisodeEvent

    assert [e.event for e in ex.events][-1] == EpisodeEvent.SUCCESS, \
        f"corrections must rescue the episode; operator log:\n{op.log()}\nsim log:\n{sim.log()}"
