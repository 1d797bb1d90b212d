"""policy_node: asynchronous VLA inference -> aloe_msgs/ActionChunk.

Subscription callbacks only keep the newest message of every input (cameras, joint_states,
EE pose, task). One worker thread assembles the observation (``aloe_data.observation``)
and runs the policy when the chunk being executed is about to run out:

    remaining = H - round((now - observation_stamp_of_last_chunk) / control_period)
    infer when remaining < execution_horizon + ceil(inference_delay / control_period)

where inference_delay is ``inference_delay_s`` or, when that is negative, the measured
delay from observation stamp to chunk publication on the node clock (EMA; inference latency
plus the observation's age, in sim time when use_sim_time). The next chunk thus lands
before the current one is used up (real-time chunking style), and the executor aligns it by
its observation stamp, skipping the actions whose time passed during inference. Every
inference needs an observation newer than the previous one's.

``~/load_policy`` (and the alias ``load_policy_alias``, default /aloe/load_policy) validates
a checkpoint fully (``load_checkpoint``: files, hash, a test forward pass; then compatibility with this node's inputs)
before an atomic swap; on any failure it refuses with the reason and the running policy stays.

The node spins a SingleThreadedExecutor: a validation therefore pauses the input callbacks for
its duration (~0.1 s for the built-in model; the worker keeps the newest inputs it has and the
executor keeps running the current chunk). A MultiThreadedExecutor was tried first and measured
(bench/bench_executor.py): its thread pool competes for the GIL with the inference worker and
stalled single inferences for 1-2.4 s (the robot idled 37-86 % of the ticks); with one executor
thread the worst inference was 30 ms.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque

import numpy as np
from aloe_data import schema
from aloe_msgs.msg import ActionChunk, EpisodeEvent
from aloe_msgs.srv import LoadPolicy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped
from rclpy.clock import Clock, ClockType
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import String

from aloe_data.ros_node import Param, declare_parameters, run_node
from aloe_policy.chunking import actions_left, inference_due
from aloe_policy.managed import ManagedNode
from aloe_policy.selection import ValueGuidedSelector
from aloe_data.observation import (ObservationError, ProprioSpec, format_mismatch, image_format, message_to_rgb,
                                    proprio_vector, resize_rgb)

NS_PER_S = 1_000_000_000


WAITING_REMINDER_S = 30.0  # a cause of waiting that lasts is repeated this often, not every loop


def _stamp_ns(stamp) -> int:
    return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)


def _time_msg(ns: int):
    from builtin_interfaces.msg import Time
    return Time(sec=ns // NS_PER_S, nanosec=ns % NS_PER_S)


class LoadedPolicy:
    """A validated policy and what the node reads from it per chunk (policy_id cached)."""

    def __init__(self, model, checkpoint: str, value_guided_samples: int = 0):
        self.model = model
        self.checkpoint = checkpoint
        # value-guided selection: the best of n samples under the critic in the checkpoint (0 = off)
        self.infer = (ValueGuidedSelector(model, checkpoint, value_guided_samples).predict_chunk
                      if value_guided_samples else model.predict_chunk)
        self.policy_id = model.policy_id
        c = model.config
        self.horizon, self.action_dim = c.chunk_horizon, c.action_dim
        self.action_names = list(c.action_names)
        self.period_ns = int(round(c.control_period_s * NS_PER_S))
        self.image_size, self.cameras = c.image_size, list(c.camera_names)
        self.camera_formats = dict(zip(c.camera_names, c.camera_formats))  # {} when the checkpoint records none
        self.depth_range_m = c.depth_range_m

    def camera_mismatch(self, cam: str, msg, rgb=None) -> str:
        """'' when camera ``cam``'s frame ``msg`` is the kind and aspect the policy was trained on
        (or the checkpoint records nothing); else why not (observation.format_mismatch)."""
        trained = self.camera_formats.get(cam)
        return format_mismatch(trained, image_format(msg, rgb)) if trained else ""


PARAMETERS = {
    "checkpoint": Param("", "policy checkpoint directory (backend openpi_remote: ws://host:port) loaded at start; ''"
                            " = wait for ~/load_policy"),
    "backend": Param("flow_matching", "policy backend (entry-point group aloe_policy.backends): flow_matching (the "
                                      "built-in model) | openpi_remote (a policy served over openpi's websocket "
                                      "protocol, e.g. pi0 on a GPU machine)"),
    "remote_contract": Param("", "openpi_remote: JSON file of the served policy's PolicyConfig (cameras, proprio, "
                                 "actions, horizon, period) when its server does not send one"),
    "value_guided_samples": Param(0, "> 1: sample this many chunks per inference and execute the best under the "
                                     "critic in the checkpoint (chunk_scorer.pt); 0 = one sample. Best of 8 did not "
                                     "change success in the offline mirror (BENCHMARKS.md, ALOE vs its rivals, 8)",
                                  range=(0, 1024)),
    "remote_timeout_s": Param(2.0, "openpi_remote: deadline of one request; past it the request fails, the executor "
                                   "holds, the next request reconnects"),
    "camera_names": Param(["front"], "camera names; topic = camera_topic_format.format(name=...)"),
    "camera_topic_format": Param(schema.TOPIC_CAMERA_FMT, "camera topic per name"),
    "image_transport": Param("raw", "raw (sensor_msgs/Image) or compressed (CompressedImage on <topic>/compressed)"),
    "proprio_joints": Param([f"panda_joint{i}" for i in range(1, 8)], "joint_states joints in proprio"),
    "gripper_joints": Param(["panda_gripper"], "joint_states gripper joints in proprio"),
    "use_velocity": Param(True, "proprio includes joint velocities"),
    "use_ee_pose": Param(True, "proprio includes the EE position from ee_pose_topic"),
    "joint_states_topic": Param(schema.TOPIC_JOINT_STATES, "sensor_msgs/JointState"),
    "ee_pose_topic": Param(schema.TOPIC_EE_POSE, "geometry_msgs/PoseStamped"),
    "task_topic": Param(schema.TOPIC_TASK, "std_msgs/String, transient local"),
    "default_task": Param("", "instruction used until one arrives on task_topic"),
    "action_chunk_topic": Param(schema.TOPIC_ACTION_CHUNK, "aloe_msgs/ActionChunk output"),
    "observation_timeout_s": Param(1.0, "no inference when an input is older"),
    "execution_horizon": Param(5, "infer when the executing chunk has fewer actions left than this (+ the inference "
                                  "delay in ticks)", range=(0, 10000)),
    "inference_delay_s": Param(-1.0, "assumed inference delay for early triggering; < 0 = measured observation-to-"
                                     "chunk delay (EMA)"),
    "device": Param("cpu", "torch device for the policy"),
    "seed": Param(0, "seed of the sampling noise generator"),
    "torch_threads": Param(0, "torch CPU threads; 0 = torch default", range=(0, 256)),
    "inference_nice": Param(10, "niceness added to the inference thread only (Linux: per thread): the control loop "
                                "and drivers win the CPU over inference; 0 = off", range=(0, 19)),
    "load_policy_alias": Param(schema.SERVICE_LOAD_POLICY, "second name of the LoadPolicy service; '' = none"),
    "action_names": Param([""], "the robot's action names in order (the executor's command); [''] = the first policy"
                                " loaded sets them and every later one must match"),
    "control_period_s": Param(0.0, "the robot's control period (s); 0 = the first policy loaded sets it and every "
                                   "later one must match"),
    "action_units": Param([""], "the unit of each action in order (\"m\", \"rad\"...); [''] = not checked"),
    "action_frame": Param("", "the frame the robot takes actions in (REP-105); '' = not checked"),
    "autostart": Param(True, "configure (load the checkpoint) and activate (infer) at start, a plain node; false = "
                             "unconfigured until a lifecycle manager moves it"),
    "episode_event_topic": Param(schema.TOPIC_EPISODE_EVENT, "aloe_msgs/EpisodeEvent: every START/end starts a fresh"
                                                             " chunk from a fresh observation; '' = never"),
}


class PolicyNode(ManagedNode):
    def __init__(self, **kwargs):
        super().__init__("policy_node", **kwargs)
        p = declare_parameters(self, PARAMETERS)
        self.checkpoint_param = p["checkpoint"]
        self.backend_name = p["backend"]
        self.remote_contract = p["remote_contract"]
        self.value_guided_samples = p["value_guided_samples"]
        self.remote_timeout_s = p["remote_timeout_s"]
        self.cameras = list(p["camera_names"])
        camera_fmt = p["camera_topic_format"]
        transport = p["image_transport"]
        joints = p["proprio_joints"]
        grippers = p["gripper_joints"]
        use_velocity = p["use_velocity"]
        use_ee = p["use_ee_pose"]
        joint_topic = p["joint_states_topic"]
        ee_topic = p["ee_pose_topic"]
        task_topic = p["task_topic"]
        self.default_task = p["default_task"]
        chunk_topic = p["action_chunk_topic"]
        self.obs_timeout_ns = int(p["observation_timeout_s"] * NS_PER_S)
        self.execution_horizon = p["execution_horizon"]
        self.inference_delay_s = p["inference_delay_s"]
        self.device = p["device"]
        self.seed = p["seed"]
        torch_threads = p["torch_threads"]
        self.inference_nice = p["inference_nice"]
        alias = p["load_policy_alias"]
        self.robot_action_names = list(p["action_names"])
        self.robot_action_names = [n for n in self.robot_action_names if n]
        self.robot_control_period_s = p["control_period_s"]
        self.robot_action_units = [u for u in p["action_units"] if u]
        self.robot_action_frame = p["action_frame"]

        import torch  # heavy import after parameters, so a parameter error is reported quickly

        self._torch = torch
        if torch_threads:
            torch.set_num_threads(torch_threads)
        self.spec = ProprioSpec(joints=list(joints), gripper_joints=list(grippers), use_velocity=use_velocity,
                                use_ee_pose=use_ee)
        self.generator = torch.Generator().manual_seed(int(self.seed))

        # Newest message of every input + its receive time (node clock); guarded by _lock.
        self._lock = threading.Lock()
        self._latest: dict[str, tuple[object, int]] = {}
        self._task: str = self.default_task
        self.policy: LoadedPolicy | None = None
        self._swap_count = 0
        self.chunk_id = 0
        self._last_chunk: tuple[int, int, int] | None = None  # (observation stamp, period, H) of our newest chunk
        self._last_obs_ns = -1
        self._episode_start_ns = 0  # observations before the newest episode event are not used
        self._delay_ema_s: float | None = None  # observation stamp -> chunk published, node clock
        self._latencies: deque[float] = deque(maxlen=100)
        self._publish_times: deque[float] = deque(maxlen=50)
        self._waiting = ""
        self._waiting_key, self._waiting_since, self._waiting_logged = "", 0.0, 0.0

        sensor = qos_profile_sensor_data
        self.topics = {}
        for cam in self.cameras:
            topic = camera_fmt.format(name=cam)
            if transport == "compressed":
                topic += "/compressed"
                self.create_subscription(CompressedImage, topic, self._keep(f"camera:{cam}"), sensor)
            elif transport == "raw":
                self.create_subscription(Image, topic, self._keep(f"camera:{cam}"), sensor)
            else:
                raise ValueError(f"image_transport must be 'raw' or 'compressed', got {transport!r}")
            self.topics[f"camera:{cam}"] = topic
        self.create_subscription(JointState, joint_topic, self._keep("joint_states"), sensor)
        self.topics["joint_states"] = joint_topic
        if use_ee:
            self.create_subscription(PoseStamped, ee_topic, self._keep("ee_pose"), sensor)
            self.topics["ee_pose"] = ee_topic
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.create_subscription(String, task_topic, self._on_task, latched)
        self.topics["task"] = task_topic
        self.chunk_pub = self.create_publisher(ActionChunk, chunk_topic,
                                               QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_service(LoadPolicy, "~/load_policy", self._on_load_policy)
        if alias:
            self.create_service(LoadPolicy, alias, self._on_load_policy)
        self.create_timer(1.0, self._publish_diagnostics, clock=Clock(clock_type=ClockType.STEADY_TIME))

        self.autostart_enabled = p["autostart"]
        self._alias = alias
        episode_topic = p["episode_event_topic"]
        if episode_topic:
            self.create_subscription(EpisodeEvent, episode_topic, self._on_episode_event,
                                     QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
        self.get_logger().info(f"policy node ready: cameras {self.topics}, execution_horizon "
                               f"{self.execution_horizon}, chunks -> {chunk_topic}")
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._run, name="policy_inference", daemon=True)
        self._worker.start()

    # ---- lifecycle: configure loads, activate infers, deactivate pauses (the executor holds) --
    def configure_node(self) -> tuple[bool, str]:
        if not self.checkpoint_param:
            self.get_logger().warn("no checkpoint parameter: waiting for a policy on ~/load_policy "
                                   f"({self._alias or 'no alias'}); the executor holds meanwhile")
            return True, "no checkpoint yet"
        ok, message = self.load(self.checkpoint_param)
        if ok or not self.autostart_enabled:
            return ok, message
        self._log_load(ok, message)  # a plain node keeps serving ~/load_policy after a bad start checkpoint
        return True, "waiting for a valid checkpoint on ~/load_policy"

    def cleanup_node(self) -> None:
        with self._lock:
            self.policy, self._last_chunk = None, None

    # ---- inputs (callbacks only store) --------------------------------------------------
    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def _keep(self, key):
        def store(msg):
            with self._lock:
                self._latest[key] = (msg, self._now_ns())
        return store

    def _on_task(self, msg: String) -> None:
        with self._lock:
            self._task = msg.data

    # ---- policy loading ------------------------------------------------------------------
    def load(self, checkpoint: str) -> tuple[bool, str]:
        """Validate and load ``checkpoint`` (for the openpi_remote backend: ws://host:port) with the
        backend of parameter ``backend``; swap only if everything is good. -> (ok, message)."""
        from aloe_policy.backends import load_backend

        t0 = time.monotonic()
        options = {"contract": self.remote_contract, "timeout_s": self.remote_timeout_s} \
            if self.backend_name == "openpi_remote" else {}
        try:
            model = load_backend(self.backend_name, checkpoint, self.device, **options)
        except Exception as exc:  # noqa: BLE001 - any failure: refuse, keep the running policy
            return False, f"refused: cannot load {checkpoint}: {exc}; still running {self._current_id() or 'no policy'}"
        try:
            loaded = LoadedPolicy(model, checkpoint, self.value_guided_samples)
        except (OSError, ValueError, RuntimeError) as exc:
            return False, f"refused: {exc}; still running {self._current_id() or 'no policy'}"
        missing = [c for c in loaded.cameras if c not in self.cameras]
        if missing:
            return False, (f"refused: policy {loaded.policy_id} needs cameras {loaded.cameras} but this node "
                           f"subscribes {self.cameras} (parameter camera_names)")
        if model.config.proprio_dim != self.spec.dim:
            return False, (f"refused: policy {loaded.policy_id} takes proprio_dim {model.config.proprio_dim} but "
                           f"proprio_joints/gripper_joints/use_velocity/use_ee_pose give {self.spec.dim}")
        theirs, ours = list(model.config.proprio_names), self.spec.names
        if theirs and theirs != ours:
            diff = next(i for i, (a, b) in enumerate(zip(theirs + [""] * len(ours), ours + [""] * len(theirs)))
                        if a != b)
            return False, (f"refused: policy {loaded.policy_id} reads proprio {theirs[diff:diff + 3]}... at entry "
                           f"{diff} where this robot gives {ours[diff:diff + 3]}... (parameters proprio_joints, "
                           f"gripper_joints, use_velocity, use_ee_pose; joints are matched by name)")
        problem = self._contract_mismatch(loaded)
        if not problem:  # cameras already streaming are checked now; the others at their first frame
            with self._lock:
                frames = {c: self._latest[f"camera:{c}"][0] for c in loaded.cameras if f"camera:{c}" in self._latest}
            problem = next((f"camera {c!r} ({self.topics[f'camera:{c}']}) {why}" for c, msg in frames.items()
                            if (why := loaded.camera_mismatch(c, msg))), "")
        if problem:
            return False, f"refused: policy {loaded.policy_id} {problem}; still running {self._current_id() or 'no policy'}"
        with self._lock:
            previous = self.policy
            self.policy, self._swap_count = loaded, self._swap_count + 1
            self._last_chunk, self._delay_ema_s = None, None  # the new policy starts its own chunks now
        return True, (f"loaded policy {loaded.policy_id} from {checkpoint} in {time.monotonic() - t0:.2f} s "
                      f"(H={loaded.horizon}, A={loaded.action_dim}); replaced "
                      f"{previous.policy_id if previous else 'no policy'}")

    def _contract_mismatch(self, loaded: LoadedPolicy) -> str:
        """'' when ``loaded`` commands the same robot as configured (parameters action_names,
        control_period_s, action_units, action_frame) or, where names and period are unset, as the
        running policy; else what differs.
        The executor rejects chunks of another action space, so swapping to one would hold the
        robot: refuse it here and keep the running policy driving."""
        with self._lock:
            running = self.policy
        names = self.robot_action_names or (running.action_names if running else None)
        if names is not None and loaded.action_names != names:
            source = "parameter action_names" if self.robot_action_names else f"running policy {running.policy_id}"
            return (f"commands actions {loaded.action_names} (dim {loaded.action_dim}) but the robot takes "
                    f"{names} (dim {len(names)}, {source})")
        c = loaded.model.config  # units and frame: checked where both the robot and the checkpoint say them
        if self.robot_action_units and c.action_units and list(c.action_units) != self.robot_action_units:
            return (f"commands its actions in units {list(c.action_units)} but the robot takes "
                    f"{self.robot_action_units} (parameter action_units)")
        if self.robot_action_frame and c.action_frame and c.action_frame != self.robot_action_frame:
            return (f"commands actions in frame {c.action_frame!r} but the robot takes them in "
                    f"{self.robot_action_frame!r} (parameter action_frame)")
        period_ns = (int(round(self.robot_control_period_s * NS_PER_S)) if self.robot_control_period_s > 0
                     else (running.period_ns if running else None))
        if period_ns is not None and loaded.period_ns != period_ns:
            return (f"has control period {loaded.period_ns * 1e-9:g} s but the robot runs at {period_ns * 1e-9:g} s "
                    f"({'parameter control_period_s' if self.robot_control_period_s > 0 else 'running policy'})")
        return ""

    def _log_load(self, ok: bool, message: str) -> None:
        # rclpy ties a severity to each logging call site: one call per severity.
        if ok:
            self.get_logger().info(message)
        else:
            self.get_logger().error(message)

    def _current_id(self) -> str:
        with self._lock:
            return self.policy.policy_id if self.policy else ""

    def _on_load_policy(self, request, response):
        self.get_logger().info(f"LoadPolicy {request.checkpoint_path}: validating")
        ok, message = self.load(request.checkpoint_path)
        self._log_load(ok, message)
        response.success, response.message, response.policy_id = ok, message, self._current_id()
        return response

    # ---- inference worker ----------------------------------------------------------------
    def _set_waiting(self, reason: str, key: str | None = None) -> None:
        """Log a change of why inference waits, once: ``key`` names the cause without the numbers
        that change every loop (ages), so a long outage is one line plus a reminder every
        WAITING_REMINDER_S, not a line per loop."""
        key = reason if key is None else key
        now = time.monotonic()
        if key != self._waiting_key:
            if reason:
                self.get_logger().warn(f"no inference: {reason}")
            elif self._waiting:
                self.get_logger().info(f"inputs complete: inferring (waited {now - self._waiting_since:.1f} s)")
            self._waiting, self._waiting_key, self._waiting_since, self._waiting_logged = reason, key, now, now
        elif reason and now - self._waiting_logged >= WAITING_REMINDER_S:
            self.get_logger().warn(f"still no inference after {now - self._waiting_since:.0f} s: {reason}")
            self._waiting_logged = now
        else:
            self._waiting = reason

    def _observation(self, policy: LoadedPolicy, now_ns: int):
        """-> (obs dict, observation stamp ns) or raises ObservationError saying what is missing."""
        with self._lock:
            latest, task = dict(self._latest), self._task
        needed = [f"camera:{c}" for c in policy.cameras] + ["joint_states"] + (["ee_pose"] if self.spec.use_ee_pose
                                                                              else [])
        missing = [f"{k.split(':')[-1]} ({self.topics[k]})" for k in needed if k not in latest]
        if missing:
            raise ObservationError(f"nothing received yet on {', '.join(missing)}")
        stale = [k for k in needed
                 if self.obs_timeout_ns > 0 and latest[k][1] > 0 and now_ns - latest[k][1] > self.obs_timeout_ns]
        if stale:
            err = ObservationError(f"stale inputs (> observation_timeout_s {self.obs_timeout_ns * 1e-9:g}): " + ", ".join(
                f"{k.split(':')[-1]} on {self.topics[k]} ({(now_ns - latest[k][1]) * 1e-9:.2f} s old)" for k in stale))
            # one line per outage, not per input: inputs that stop together go stale a few ms apart; the
            # reminder every WAITING_REMINDER_S names the inputs stale by then
            err.key = "stale"
            raise err
        if not task:
            raise ObservationError(f"no task instruction yet on {self.topics.get('task', 'the task topic')} "
                                   "(or parameter default_task)")
        images = {}
        for cam in policy.cameras:
            msg = latest[f"camera:{cam}"][0]
            rgb = message_to_rgb(msg, policy.depth_range_m)  # a depth camera: grey metres (checkpoint's range)
            problem = policy.camera_mismatch(cam, msg, rgb)
            if problem:
                err = ObservationError(f"camera {cam!r} ({self.topics[f'camera:{cam}']}) {problem}: holding (policy "
                                       f"{policy.policy_id}); fix the driver's encoding/resolution or load a matching "
                                       "checkpoint")
                err.key = f"format:{cam}:{image_format(msg, rgb)}"
                raise err
            rgb = resize_rgb(rgb, policy.image_size)
            images[cam] = rgb if rgb.flags.writeable else rgb.copy()  # torch wants writable arrays
        js = latest["joint_states"][0]
        ee = None
        if self.spec.use_ee_pose:
            pos = latest["ee_pose"][0].pose.position
            ee = (pos.x, pos.y, pos.z)
        proprio = proprio_vector(self.spec, js.name, js.position, js.velocity, ee)
        stamps = [_stamp_ns(latest[k][0].header.stamp) or latest[k][1] for k in needed]
        return {"images": images, "proprio": proprio, "task": task}, max(stamps)

    def _on_episode_event(self, msg: EpisodeEvent) -> None:
        with self._lock:
            self._episode_start_ns = _stamp_ns(msg.header.stamp) or self._now_ns()
            self._last_chunk = None  # infer as soon as the new episode's observation arrives

    def _due(self, now_ns: int) -> bool:
        if self._last_chunk is None:
            return True
        stamp, period, horizon = self._last_chunk
        delay = self.inference_delay_s if self.inference_delay_s >= 0 else (self._delay_ema_s or 0.0)
        return inference_due(actions_left(now_ns, stamp, period, horizon), self.execution_horizon, delay, period)

    def _run(self) -> None:
        if self.inference_nice:
            try:  # os.nice acts on the calling thread on Linux: only inference gets the lower priority
                os.nice(self.inference_nice)
            except (OSError, AttributeError) as exc:  # not Linux/POSIX: run at normal priority
                self.get_logger().warn(f"inference_nice {self.inference_nice} not applied: {exc}")
        while not self._stop.wait(0.005):
            try:
                self._step()
            except Exception as exc:  # noqa: BLE001 - keep serving; the executor holds on missing chunks
                if self._stop.is_set() or not self.context.ok():
                    return  # shutting down: the context went away under the worker
                self._set_waiting(f"inference failed: {type(exc).__name__}: {exc}")
                self._stop.wait(0.5)

    def _step(self) -> None:
        if not self.active:  # lifecycle: the transitions log themselves
            return
        with self._lock:
            policy, swaps = self.policy, self._swap_count
        if policy is None:
            self._set_waiting("no policy loaded (set parameter checkpoint or call ~/load_policy)")
            return
        now_ns = self._now_ns()
        if not self._due(now_ns):
            return
        try:
            obs, obs_ns = self._observation(policy, now_ns)
        except ObservationError as exc:
            self._set_waiting(str(exc), getattr(exc, "key", None))
            return
        if obs_ns < self._last_obs_ns:  # the inputs' clock went back (sim / bag restarted): start anew
            self.get_logger().warn(f"observation stamps went back by {(self._last_obs_ns - obs_ns) * 1e-9:.3f} s "
                                   "(clock reset, sim or bag restarted?): inferring on the new time line")
            with self._lock:
                self._last_obs_ns, self._last_chunk = -1, None
        if obs_ns <= self._last_obs_ns or obs_ns < self._episode_start_ns:
            return  # nothing new to infer from (or only the previous episode's last view)
        self._set_waiting("")
        text_encoder = getattr(policy.model, "text_encoder", None)  # remote backends encode text themselves
        if text_encoder is not None and obs["task"].strip() not in text_encoder.known_instructions:
            self.get_logger().warn(f"instruction {obs['task']!r} is not in the policy's text cache: encoding it "
                                   "with the sentence encoder (first time ~10 s; the executor holds meanwhile)")
        t0 = time.monotonic()
        actions = policy.infer(obs, generator=self.generator)
        latency = time.monotonic() - t0
        with self._lock:
            if swaps != self._swap_count:
                return  # the policy was swapped during inference: never publish the old one's chunk
            if obs_ns < self._episode_start_ns:
                return  # an episode event came during inference: the chunk belongs to the old episode
            publish_ns = self._now_ns()
            self._last_chunk = (obs_ns, policy.period_ns, policy.horizon)
            self._last_obs_ns = obs_ns
            delay = max(0.0, (publish_ns - obs_ns) / NS_PER_S)
            ema = self._delay_ema_s
            self._delay_ema_s = delay if ema is None else 0.8 * ema + 0.2 * delay
            self._latencies.append(latency)
            self.chunk_id += 1
            chunk_id = self.chunk_id
        msg = ActionChunk(chunk_id=chunk_id, policy_id=policy.policy_id, horizon=policy.horizon,
                          action_dim=policy.action_dim, action_names=policy.action_names,
                          actions=np.asarray(actions, dtype=np.float32).ravel().tolist())
        msg.header.stamp = _time_msg(publish_ns)
        msg.observation_stamp = _time_msg(obs_ns)
        msg.control_period.sec, msg.control_period.nanosec = divmod(policy.period_ns, NS_PER_S)
        self.chunk_pub.publish(msg)
        self._publish_times.append(time.monotonic())

    # ---- diagnostics -----------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        with self._lock:
            policy = self.policy
            lat = sorted(self._latencies)
            times = list(self._publish_times)
        rate = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0
        ok = policy is not None and not self._waiting
        status = DiagnosticStatus(level=DiagnosticStatus.OK if ok else DiagnosticStatus.WARN,
                                  name=f"{self.get_name()}: policy inference",
                                  message="inferring" if ok else (self._waiting or "waiting"))
        values = {"policy_id": policy.policy_id if policy else "", "checkpoint": policy.checkpoint if policy else "",
                  "chunks_published": self.chunk_id, "chunk_rate_hz": f"{rate:.2f}",
                  "inference_latency_ms_last": f"{self._latencies[-1] * 1e3 if lat else 0:.1f}",
                  "inference_latency_ms_p50": f"{lat[len(lat) // 2] * 1e3 if lat else 0:.1f}",
                  "inference_latency_ms_max": f"{lat[-1] * 1e3 if lat else 0:.1f}",
                  "observation_to_chunk_delay_ms_ema": f"{(self._delay_ema_s or 0) * 1e3:.1f}",
                  "waiting_reason": self._waiting}
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        diag = DiagnosticArray(status=[status])
        diag.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(diag)

    def destroy_node(self):
        if getattr(self, "_worker", None) is not None:  # absent when __init__ failed
            self._stop.set()
            self._worker.join(timeout=5.0)
        return super().destroy_node()


def main(args=None):
    # one SingleThreadedExecutor (see the module docstring: no executor thread pool)
    return run_node(PolicyNode, "policy_node", args, after_start=lambda node: node.autostart(node.autostart_enabled))


if __name__ == "__main__":
    raise SystemExit(main())
