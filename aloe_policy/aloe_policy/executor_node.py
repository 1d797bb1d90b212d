"""executor_node: the only node that commands the robot.

A timer at ``control_rate_hz`` (on sim time when ``use_sim_time`` is true: one tick per
period of /clock) decides each tick, in this order:

1. an ``Intervention`` with active=true received within ``intervention_timeout_s``
   -> the operator's action (source HUMAN);
2. the observation topic silent for ``observation_timeout_s`` -> HOLD_STALE_OBS;
3. no chunk yet -> NO_POLICY; newest chunk rejected -> HOLD_MALFORMED / HOLD_REJECTED_POLICY
   until a good chunk arrives; newest chunk too old or used up -> HOLD_STALE_CHUNK;
4. otherwise the action for now from the newest chunks (``aloe_policy.chunking``) -> RUNNING.

Every command passes the per-dimension bounds and rate limits (HOLD sends ``hold_command``
within bounds, not rate limited: stopping is the safe action). Each tick publishes the
command through the output adapter and one ``aloe_msgs/ExecutedAction``, HOLD included.
States are logged once on change; status goes to /diagnostics.
"""

from __future__ import annotations

import time

from aloe_data import schema
from aloe_msgs.msg import ActionChunk, EpisodeEvent, ExecutedAction, Intervention
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.clock import Clock, ClockType
from rclpy.duration import Duration
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import JointState

import numpy as np

from aloe_data.ros_node import Param, declare_parameters, run_node
from aloe_policy.chunking import (NS_PER_S, BlendMode, ChunkBlender, ChunkSpec, action_problems,
                                  limits_from_lists, make_chunk)
from aloe_policy.command_adapters import ADAPTER_NAMES, POSITION_ADAPTERS, AdapterError, make_adapter
from aloe_policy.managed import ManagedNode
from aloe_policy.realtime import apply_and_log

SIM_ACTION_NAMES = list(schema.SIM_ACTION_NAMES)

NO_POLICY = "NO_POLICY"
HOLD_INACTIVE = "HOLD_INACTIVE"  # lifecycle state unconfigured / inactive: commands nothing but holds
HOLD_NEW_EPISODE = "HOLD_NEW_EPISODE"  # an episode event dropped the plan; the next chunk is expected (not a fault)
RUNNING = "RUNNING"
HUMAN = "HUMAN"
HOLD_STALE_CHUNK = "HOLD_STALE_CHUNK"
HOLD_STALE_OBS = "HOLD_STALE_OBS"
HOLD_MALFORMED = "HOLD_MALFORMED"
HOLD_REJECTED_POLICY = "HOLD_REJECTED_POLICY"

FLAP_WINDOW_S = 5.0  # a state transition repeating faster than this is summarised in the log
FLAP_PERSIST_S = 1.0  # ... unless the new state lasts this long: then it is logged after all
SHUTDOWN_ACK_S = 3.0  # the final hold: how long the outputs wait, together, for their readers' acknowledgements
                      # (measured 1.0-2.4 s with Fast DDS; ros2 launch escalates to SIGTERM after 5 s)

_LEVEL = {RUNNING: DiagnosticStatus.OK, HUMAN: DiagnosticStatus.OK, HOLD_NEW_EPISODE: DiagnosticStatus.OK,
          HOLD_INACTIVE: DiagnosticStatus.OK,
          NO_POLICY: DiagnosticStatus.WARN,
          HOLD_STALE_CHUNK: DiagnosticStatus.WARN, HOLD_STALE_OBS: DiagnosticStatus.WARN,
          HOLD_MALFORMED: DiagnosticStatus.ERROR, HOLD_REJECTED_POLICY: DiagnosticStatus.ERROR}


def _stamp_ns(stamp) -> int:
    return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)


PARAMETERS = {
    "action_names": Param(SIM_ACTION_NAMES, "names of the D action dimensions, in order"),
    "control_rate_hz": Param(10.0, "control timer rate (on sim time when use_sim_time)", range=(0.1, 1000.0)),
    "chunk_horizon": Param(0, "expected chunk horizon H; 0 accepts any", range=(0, 100000)),
    "blending_mode": Param("linear", "newest | linear | temporal_ensemble"),
    "blend_steps": Param(3, "linear cross-fade length in ticks", range=(0, 1000)),
    "ensemble_decay": Param(0.01, "temporal_ensemble weight exp(-decay * i), i=0 the oldest chunk"),
    "max_rate": Param([], "per-dimension max change in action units per second (<=0: unlimited); [] none", array_type='double'),
    "hold_command": Param([], "command sent while holding (action units); [] = zeros", array_type='double'),
    "chunk_timeout_s": Param(1.0, "hold when the newest chunk's observation is older; 0 disables"),
    "observation_timeout_s": Param(0.5, "hold when observation_topic is silent this long; 0 disables"),
    "intervention_timeout_s": Param(0.25, "an active Intervention counts this long after its last message"),
    "allowed_policy_ids": Param([], "accept chunks only from these policy ids; [] any", array_type='string'),
    "blocked_policy_ids": Param([], "never execute chunks from these policy ids", array_type='string'),
    "action_chunk_topic": Param(schema.TOPIC_ACTION_CHUNK, "aloe_msgs/ActionChunk input"),
    "intervention_topic": Param(schema.TOPIC_INTERVENTION, "aloe_msgs/Intervention input"),
    "observation_topic": Param(schema.TOPIC_JOINT_STATES, "sensor_msgs/JointState watched for staleness"),
    "command_topic": Param(schema.TOPIC_COMMAND, "robot command output"),
    "executed_action_topic": Param(schema.TOPIC_EXECUTED_ACTION, "aloe_msgs/ExecutedAction output"),
    "episode_event_topic": Param(schema.TOPIC_EPISODE_EVENT, "aloe_msgs/EpisodeEvent input: every START/end drops "
                                                             "the chunks planned before it; '' = never"),
    "output_adapter": Param("float64_multi_array", f"one of {list(ADAPTER_NAMES)}"),
    "joint_names": Param([], "joint_trajectory / moveit_py joint names; [] = action_names", array_type='string'),
    "frame_id": Param("base_link", "twist_stamped header.frame_id"),
    "twist_scale": Param(0.0, "twist_stamped: action * scale = m/s, rad/s; 0 = 1 / control period (per-tick EE "
                              "deltas, as the policy's actions are, become velocities)"),
    "moveit_planning_group": Param("", "moveit_py planning group"),
    "autostart": Param(True, "configure and activate at start (a plain node); false = unconfigured until a lifecycle"
                             " manager activates it (it holds meanwhile)"),
    "hold_mode": Param("auto", "what a HOLD sends: 'command' = hold_command (zeros: stop, for delta and velocity "
                               "interfaces), 'last' = the last command again (for absolute position interfaces; "
                               "nothing before the first command), 'auto' = 'last' for joint_trajectory / moveit_py,"
                               " else 'command'"),
    "realtime_priority": Param(0, "SCHED_FIFO priority of the control thread (1-99) as ros2_control does; needs "
                                  "CAP_SYS_NICE or an rtprio limit; 0 = normal scheduling", range=(0, 99)),
}


def bound_parameters(action_dim: int) -> dict:
    """The action bounds, whose defaults follow the number of action_names."""
    return {"action_lower": Param([-1.0] * action_dim, "per-dimension lower bound (action units); [] none",
                                  array_type="double"),
            "action_upper": Param([1.0] * action_dim, "per-dimension upper bound (action units); [] none",
                                  array_type="double")}


class ExecutorNode(ManagedNode):
    def __init__(self, **kwargs):
        super().__init__("executor_node", **kwargs)
        p = declare_parameters(self, PARAMETERS)
        self.action_names = list(p["action_names"])
        self.action_dim = len(self.action_names)
        rate = p["control_rate_hz"]
        self.period_ns = int(round(NS_PER_S / rate))
        horizon = p["chunk_horizon"]
        mode = BlendMode.parse(p["blending_mode"])
        blend_steps = p["blend_steps"]
        decay = p["ensemble_decay"]
        bounds = declare_parameters(self, bound_parameters(self.action_dim))
        lower, upper = bounds["action_lower"], bounds["action_upper"]
        max_rate = p["max_rate"]
        hold = p["hold_command"]
        self.chunk_timeout_ns = int(p["chunk_timeout_s"] * NS_PER_S)
        self.obs_timeout_ns = int(p["observation_timeout_s"] * NS_PER_S)
        self.intervention_timeout_ns = int(p["intervention_timeout_s"] * NS_PER_S)
        allowed = p["allowed_policy_ids"]
        blocked = p["blocked_policy_ids"]
        chunk_topic = p["action_chunk_topic"]
        intervention_topic = p["intervention_topic"]
        obs_topic = p["observation_topic"]
        command_topic = p["command_topic"]
        executed_topic = p["executed_action_topic"]
        episode_topic = p["episode_event_topic"]
        adapter = p["output_adapter"]
        joint_names = p["joint_names"]
        frame_id = p["frame_id"]
        twist_scale = p["twist_scale"]
        group = p["moveit_planning_group"]
        self.autostart_enabled = p["autostart"]
        hold_mode = p["hold_mode"]
        self.realtime_priority = p["realtime_priority"]

        self.spec = ChunkSpec(self.action_dim, horizon, tuple(self.action_names), frozenset(allowed),
                              frozenset(blocked))
        self.limits = limits_from_lists(self.action_dim, lower, upper, max_rate)
        if hold and len(hold) != self.action_dim:
            raise ValueError(f"hold_command has {len(hold)} entries, expected action_dim={self.action_dim}")
        self.hold_command = self.limits.clip(np.asarray(hold or [0.0] * self.action_dim, dtype=np.float64))
        if hold_mode not in ("auto", "command", "last"):
            raise ValueError(f"hold_mode must be auto, command or last, got {hold_mode!r}")
        self.hold_last = hold_mode == "last" or (hold_mode == "auto" and adapter in POSITION_ADAPTERS)
        self.blender = ChunkBlender(mode, blend_steps, decay)
        self.adapter = make_adapter(adapter, self, topic=command_topic, action_names=self.action_names,
                                    joint_names=joint_names, control_period_s=self.period_ns / NS_PER_S,
                                    frame_id=frame_id, twist_scale=twist_scale, moveit_planning_group=group)

        self.state, self.hold_reason = "STARTING", ""  # first tick logs the first real state
        self.rejection: tuple[str, str] | None = None  # (state, reason) while the newest chunk is bad
        self._rejected_run = 0
        self._last_problems: list[str] | None = None
        self._transition_logged: dict[tuple[str, str], float] = {}
        self._suppressed: dict[tuple[str, str], int] = {}
        self._pending_log: tuple[str, float] | None = None  # (text, since) of a transition held back as a flap
        self.intervention: Intervention | None = None
        self.intervention_ns = 0
        self.obs_ns: int | None = None
        self.previous = self.hold_command.copy()  # rate limits start from the hold command
        self.commanded = False  # a policy or operator command has been sent (hold_mode 'last' repeats it)
        self.last_tick_ns: int | None = None
        self.ticks = self.missed_ticks = self.chunks_received = self.chunks_rejected = 0
        self._max_gap_ns = 0  # longest tick interval since the last diagnostics message

        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.executed_pub = self.create_publisher(ExecutedAction, executed_topic, QoSProfile(depth=100))
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_subscription(ActionChunk, chunk_topic, self._on_chunk, reliable)
        self.create_subscription(Intervention, intervention_topic, self._on_intervention, reliable)
        self.episode_start_ns = 0  # chunks observed before the newest episode event are never executed
        if episode_topic:
            self.create_subscription(EpisodeEvent, episode_topic, self._on_episode_event, reliable)
        self.create_subscription(JointState, obs_topic, self._on_observation, qos_profile_sensor_data)
        self.timer = self.create_timer(self.period_ns / NS_PER_S, self._tick)
        # Diagnostics on the steady clock: they keep coming while sim time is paused.
        self.create_timer(1.0, self._publish_diagnostics, clock=Clock(clock_type=ClockType.STEADY_TIME))
        self.get_logger().info(
            f"executor ready: {rate:g} Hz, {self.action_dim} dims {self.action_names}, blending {mode.value}, "
            f"adapter {adapter} -> {command_topic}, chunks from {chunk_topic}, observation {obs_topic}, "
            f"use_sim_time={self.get_parameter('use_sim_time').value}; holding until a chunk arrives")

    # ---- inputs -------------------------------------------------------------------------
    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def _on_chunk(self, msg: ActionChunk) -> None:
        self.chunks_received += 1
        chunk, problems = make_chunk(
            self.spec, chunk_id=msg.chunk_id, policy_id=msg.policy_id,
            observation_stamp_ns=_stamp_ns(msg.observation_stamp),
            control_period_ns=_stamp_ns(msg.control_period), horizon=msg.horizon, action_dim=msg.action_dim,
            action_names=msg.action_names, actions=msg.actions)
        if problems:
            self.chunks_rejected += 1
            state = HOLD_REJECTED_POLICY if all("policy_id" in p for p in problems) else HOLD_MALFORMED
            reason = f"chunk {msg.chunk_id} from policy '{msg.policy_id}' rejected: " + "; ".join(problems)
            if problems != self._last_problems:  # one line per distinct problem, not per chunk
                self.get_logger().error(f"{reason}; not executed, holding until a good chunk arrives")
            self._last_problems, self._rejected_run = problems, self._rejected_run + 1
            self.rejection = (state, reason)
            return
        if chunk.observation_stamp_ns < self.episode_start_ns:
            self.get_logger().info(f"chunk {msg.chunk_id} dropped: planned before the episode event at "
                                   f"{self.episode_start_ns * 1e-9:.3f} s")
            return
        if not self.blender.add(chunk):
            self.get_logger().debug(f"chunk {msg.chunk_id} ignored: not newer than the newest chunk")
            return
        if self.rejection is not None:
            self.get_logger().info(f"good chunk {chunk.chunk_id} after {self._rejected_run} rejected chunk(s)")
        self.rejection, self._rejected_run, self._last_problems = None, 0, None

    def _on_episode_event(self, msg: EpisodeEvent) -> None:
        # A plan made in one episode must not run into the next (after a reset the world moved):
        # forget the chunks; the next one must be observed after this event.
        self.episode_start_ns = _stamp_ns(msg.header.stamp) or self._now_ns()
        had = self.blender.newest is not None
        self.blender.clear()
        if had:
            self.get_logger().info(f"episode {msg.episode_id} event {msg.event}: chunks dropped, holding until "
                                   "a chunk observed after it arrives")

    def _on_intervention(self, msg: Intervention) -> None:
        self.intervention, self.intervention_ns = msg, self._now_ns()

    def _on_observation(self, msg: JointState) -> None:
        self.obs_ns = self._now_ns()

    # ---- control tick -------------------------------------------------------------------
    def _decide(self, now_ns: int):
        """-> (state, action (D,) or None for hold, hold_reason, chunk_id, index, policy_id)."""
        if not self.active:
            return HOLD_INACTIVE, None, "not active (lifecycle): holding until activated", 0, 0, ""
        iv = self.intervention
        if iv is not None and iv.active and now_ns - self.intervention_ns <= self.intervention_timeout_ns:
            problems = action_problems(iv.action, self.action_dim)
            if problems:
                return HOLD_MALFORMED, None, "operator action rejected: " + "; ".join(problems), 0, 0, ""
            return HUMAN, np.asarray(iv.action, dtype=np.float64), "", 0, 0, ""
        if self.obs_timeout_ns > 0:
            if self.obs_ns is None:
                return HOLD_STALE_OBS, None, "no observation received yet", 0, 0, ""
            age = now_ns - self.obs_ns
            if age > self.obs_timeout_ns:
                return (HOLD_STALE_OBS, None, f"no observation for {age * 1e-9:.3f} s "
                        f"(> observation_timeout_s {self.obs_timeout_ns * 1e-9:g})", 0, 0, "")
        if self.rejection is not None:
            return self.rejection[0], None, self.rejection[1], 0, 0, ""
        if self.blender.newest is None:
            since = now_ns - self.episode_start_ns if self.episode_start_ns else None
            if since is not None and since <= self.chunk_timeout_ns:  # the expected gap between episodes
                return HOLD_NEW_EPISODE, None, "new episode: waiting for its first chunk", 0, 0, ""
            if since is not None:
                return (NO_POLICY, None, f"no chunk for {since * 1e-9:.1f} s since the episode event (is "
                        "policy_node running with a checkpoint, and are its inputs fresh?)", 0, 0, "")
            return NO_POLICY, None, "no chunk received (is policy_node running with a checkpoint?)", 0, 0, ""
        stale = self.blender.stale_reason(now_ns, self.chunk_timeout_ns)
        if stale:
            return HOLD_STALE_CHUNK, None, stale, 0, 0, ""
        blended = self.blender.action_at(now_ns)
        return RUNNING, blended.action, "", blended.chunk_id, blended.index_in_chunk, blended.policy_id

    def _tick(self) -> None:
        now = self.get_clock().now()
        now_ns = now.nanoseconds
        if self.last_tick_ns is not None:
            gap = now_ns - self.last_tick_ns
            if gap > 1.5 * self.period_ns:
                self.missed_ticks += int(round(gap / self.period_ns)) - 1
            self._max_gap_ns = max(self._max_gap_ns, gap)
        self.last_tick_ns = now_ns
        self.ticks += 1
        if self.obs_ns == 0:  # received on sim time before the first /clock: count it as received now
            self.obs_ns = now_ns
        if self.intervention is not None and self.intervention_ns == 0:
            self.intervention_ns = now_ns
        state, action, reason, chunk_id, index, policy_id = self._decide(now_ns)
        if action is None:
            command, source = self._hold(), ExecutedAction.SOURCE_HOLD
        else:
            command = self.limits.apply(action, self.previous, self.period_ns / NS_PER_S)
            source = ExecutedAction.SOURCE_HUMAN if state == HUMAN else ExecutedAction.SOURCE_POLICY
            self.commanded = True
        self.previous = command
        stamp = now.to_msg()
        if self.commanded or not self.hold_last:  # a position interface gets no made-up target before the first
            self.adapter.send(command, stamp)
        msg = ExecutedAction(action=[float(x) for x in command], source=source, chunk_id=int(chunk_id),
                             index_in_chunk=int(index), policy_id=policy_id, hold_reason=reason)
        msg.header.stamp = stamp
        self.executed_pub.publish(msg)
        self._set_state(state, reason)

    def _set_state(self, state: str, reason: str) -> None:
        now = time.monotonic()
        if state == self.state:
            self.hold_reason = reason
            pending = self._pending_log
            if pending is not None and now - pending[1] >= FLAP_PERSIST_S:
                # A transition held back as a flap turned out to last: it is a real outage, say so.
                self._pending_log = None
                self._log_transition(pending[0] + f" (for {now - pending[1]:.1f} s now)", state)
            return
        previous, self.state, self.hold_reason = self.state, state, reason
        self._pending_log = None
        # Logged once per change; a transition that repeats within FLAP_WINDOW_S (e.g. a chunk used
        # up before the next arrives, every chunk) is counted and summarised, not printed each
        # time, unless the new state then lasts FLAP_PERSIST_S (then it is logged late, not lost).
        key = (previous, state)
        text = f"state {previous} -> {state}" + (f": {reason}" if reason else "")
        if now - self._transition_logged.get(key, -1e9) < FLAP_WINDOW_S:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            self._pending_log = (text, now)
            return
        self._transition_logged[key] = now
        repeats = self._suppressed.pop(key, 0)
        if repeats:
            text += f" ({repeats} more times in the last {FLAP_WINDOW_S:g}+ s, not logged)"
        self._log_transition(text, state)

    def _log_transition(self, text: str, state: str) -> None:
        if state in (RUNNING, HUMAN, HOLD_NEW_EPISODE, HOLD_INACTIVE):
            self.get_logger().info(text)
        else:
            self.get_logger().warn(text)

    def _publish_diagnostics(self) -> None:
        newest = self.blender.newest
        status = DiagnosticStatus(level=_LEVEL.get(self.state, DiagnosticStatus.WARN),
                                  name=f"{self.get_name()}: action executor",
                                  message=self.state + (f": {self.hold_reason}" if self.hold_reason else ""))
        values = {"state": self.state, "hold_reason": self.hold_reason, "ticks": self.ticks,
                  "missed_ticks": self.missed_ticks, "chunks_received": self.chunks_received,
                  "chunks_rejected": self.chunks_rejected,
                  "newest_chunk_id": newest.chunk_id if newest else "", "policy_id": newest.policy_id if newest else "",
                  "max_tick_interval_ms": f"{self._max_gap_ns * 1e-6:.1f}",
                  "blending_mode": self.blender.mode.value, "control_rate_hz": NS_PER_S / self.period_ns}
        self._max_gap_ns = 0
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        diag = DiagnosticArray(status=[status])
        diag.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(diag)

    def _hold(self) -> np.ndarray:
        """The command of a HOLD tick: hold_command, or (hold_mode 'last') the last command again."""
        return self.previous.copy() if self.hold_last and self.commanded else self.hold_command.copy()

    def hold_on_shutdown(self, why: str) -> None:
        """The last command of this node: ``hold_command`` on the output (and an ExecutedAction
        saying so), so a controller that keeps its last command does not keep moving on a policy
        action after the executor is gone. Sent twice, 50 ms apart (best-effort transports), then held
        until every reliable reader has acknowledged it (at most ``SHUTDOWN_ACK_S``): a process that
        exits right after publishing can take the message with it (seen on a loaded machine)."""
        reason = f"executor shutting down ({why})"
        hold = self._hold()
        if self.hold_last and not self.commanded:
            self.get_logger().info(f"{reason}: nothing was commanded, nothing to hold")
            return
        for _ in range(2):
            stamp = self.get_clock().now().to_msg()
            self.adapter.send(hold, stamp)
            msg = ExecutedAction(action=[float(x) for x in hold], source=ExecutedAction.SOURCE_HOLD,
                                 hold_reason=reason)
            msg.header.stamp = stamp
            self.executed_pub.publish(msg)
            time.sleep(0.05)
        deadline = time.monotonic() + SHUTDOWN_ACK_S  # acknowledgements come with the DDS heartbeats
        command_acked = self.adapter.flush(SHUTDOWN_ACK_S)
        left = max(0.0, deadline - time.monotonic())
        acked = self.executed_pub.wait_for_all_acked(Duration(seconds=left)) and command_acked
        self.get_logger().warn(f"state {self.state} -> HOLD: {reason}; sent "
                               f"{'the last command' if self.hold_last else 'hold_command'} "
                               f"{[round(float(x), 4) for x in hold]} as the last command"
                               + ("" if acked else f" (not acknowledged by every reader within {SHUTDOWN_ACK_S} s)"))

    def destroy_node(self):
        if getattr(self, "adapter", None) is not None:  # absent when __init__ failed
            self.adapter.close()
        return super().destroy_node()


def _start(node: ExecutorNode) -> None:
    node.autostart(node.autostart_enabled)
    apply_and_log(node.get_logger(), node.realtime_priority, "control thread")
    import gc

    gc.collect()
    gc.freeze()  # start-up objects never scanned again: shorter collector pauses inside ticks


def main(args=None):
    # rclpy's own signal handler would shut the context down on SIGINT before this node could
    # publish anything: SIGINT / SIGTERM are run_node's, the final hold goes out, then shutdown.
    return run_node(ExecutorNode, "executor_node", args, config_errors=(AdapterError, ValueError),
                    after_start=_start, on_exit=lambda node, why: node.hold_on_shutdown(why), own_signals=True)


if __name__ == "__main__":
    raise SystemExit(main())
