"""sim_node: the simulated Panda pick-cube robot behind the robot-facing topics, on sim time.

Lock-step (docs/interfaces.md): for each control tick t the node publishes the observation
of tick t (camera images, /joint_states, /aloe/ee_pose, /aloe/sim/state, /aloe/reward) and
then ``/clock = t``; it waits at most ``command_timeout_s`` (wall clock) for the first
``/aloe/command`` received after that, steps the sim with it (or with a hold = zero action and
a warning on timeout) and advances t by the control period (0.1 s), no faster than
``real_time_factor`` x real time (0 = as fast as possible).

Episodes: EpisodeEvent START (fresh episode_id, task text) at reset; SUCCESS (reward 1) when
the cube is lifted; FAILURE when the cube leaves the workspace or ``max_steps`` pass; ABORT on
``~/reset``. ``pause_between_episodes_s`` of wall time separates episodes (the recorder
closes its bag). Sim time never goes backwards: it keeps counting across episodes and starts
at ``clock_start_s`` (ROS reads a zero stamp as "no time"). After ``episodes`` episodes
(0 = forever) it logs a summary and exits 0.

Stepping runs in its own thread; the executor thread only runs callbacks, so waiting for a
command never blocks the subscription that delivers it.
"""

from __future__ import annotations

from aloe_data import schema

import threading
import time
import uuid

import numpy as np
import rclpy
from aloe_msgs.msg import EpisodeEvent
from geometry_msgs.msg import PoseStamped
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float32, Float64MultiArray, MultiArrayDimension, String
from std_srvs.srv import Trigger

from aloe_data.observation import rgb_to_image_fields
from aloe_data.ros_node import declare_parameters, run_node
from aloe_sim.env import ACTION_DIM, GRIPPER_JOINT_NAME, JOINT_NAMES, TASK_STATE_LABELS, PickCubeSim, SimConfig

# Everything the sim publishes is reliable: a reliable publisher also serves best-effort
# subscribers, and in lock-step nothing is lost to a slow recorder.
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)

PARAMETERS = {
    # name: (default, description)
    "episodes": (0, "episodes to run, then exit 0 (0 = forever)"),
    "seed": (0, "seed of the episode seed sequence (cube positions)"),
    "task": ("pick up the cube", "language instruction published on the task topic and in EpisodeEvents"),
    "image_size": (64, "square camera image side, pixels"),
    "cameras": (["workspace"], "cameras to render: workspace (scene camera over the table), front, handcam_rgb"),
    "max_steps": (100, "control ticks per episode before FAILURE (time limit)"),
    "pause_between_episodes_s": (1.0, "wall seconds between an episode's end event and the next START"),
    "command_timeout_s": (2.0, "wall seconds to wait for a command each tick before holding"),
    "startup_timeout_s": (20.0, "wall seconds to wait for the peers below before the first episode"),
    "startup_settle_s": (1.0, "wall seconds to wait once the peers are seen: the graph lists a subscriber "
                              "before DDS has matched it, and a message published then is lost"),
    "wait_for_subscribers": ([""], "topics that need a subscriber before the first episode (e.g. the recorder's "
                                   "/aloe/episode_event); a command publisher is always waited for"),
    "real_time_factor": (0.0, "cap on sim speed as a multiple of real time (0 = as fast as possible)"),
    "clock_start_s": (1.0, "sim time of the first tick, seconds"),
    "frame_id": ("panda_link0", "frame of the end-effector pose (the robot base; equal to the sim world frame)"),
    "command_topic": (schema.TOPIC_COMMAND, "std_msgs/Float64MultiArray, 7 floats [dx dy dz rx ry rz grip]"),
    "camera_topic_format": (schema.TOPIC_CAMERA_FMT, "sensor_msgs/Image topic per camera"),
    "joint_states_topic": (schema.TOPIC_JOINT_STATES, "sensor_msgs/JointState"),
    "ee_pose_topic": (schema.TOPIC_EE_POSE, "geometry_msgs/PoseStamped"),
    "task_topic": (schema.TOPIC_TASK, "std_msgs/String, transient local"),
    "reward_topic": (schema.TOPIC_REWARD, "std_msgs/Float32, one per step"),
    "state_topic": (schema.TOPIC_SIM_STATE, "std_msgs/Float64MultiArray, privileged task state"),
    "episode_event_topic": (schema.TOPIC_EPISODE_EVENT, "aloe_msgs/EpisodeEvent"),
}


def stamp_of(ns: int):
    from builtin_interfaces.msg import Time

    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


class SimNode(Node):
    def __init__(self):
        super().__init__("sim_node")
        self.p = p = declare_parameters(self, PARAMETERS)
        cameras = tuple(c for c in p["cameras"] if c)
        self.sim = PickCubeSim(SimConfig(image_size=int(p["image_size"]), cameras=cameras,
                                         max_steps=int(p["max_steps"]), seed=int(p["seed"])))
        self.period_ns = int(round(self.sim.control_period * 1e9))
        self.now_ns = int(round(float(p["clock_start_s"]) * 1e9))

        self.clock_pub = self.create_publisher(Clock, "/clock", RELIABLE)
        self.image_pubs = {c: self.create_publisher(Image, p["camera_topic_format"].format(name=c), RELIABLE)
                           for c in cameras}
        self.joint_pub = self.create_publisher(JointState, p["joint_states_topic"], RELIABLE)
        self.pose_pub = self.create_publisher(PoseStamped, p["ee_pose_topic"], RELIABLE)
        self.task_pub = self.create_publisher(String, p["task_topic"], LATCHED)
        self.reward_pub = self.create_publisher(Float32, p["reward_topic"], RELIABLE)
        self.state_pub = self.create_publisher(Float64MultiArray, p["state_topic"], RELIABLE)
        self.event_pub = self.create_publisher(EpisodeEvent, p["episode_event_topic"], RELIABLE)
        self.create_subscription(Float64MultiArray, p["command_topic"], self.on_command, RELIABLE)
        self.create_service(Trigger, "~/reset", self.on_reset)

        self._cond = threading.Condition()
        self._command: np.ndarray | None = None
        self._bad_command = ""
        self._reset_requested = False
        self._stop = threading.Event()
        self.finished = threading.Event()
        self.outcomes = {"SUCCESS": 0, "FAILURE": 0, "ABORT": 0}
        self.holds = 0
        self._holding = False
        self.error: Exception | None = None
        self._thread = threading.Thread(target=self.run, name="sim_stepping", daemon=True)

    def start(self) -> None:
        self.task_pub.publish(String(data=self.p["task"]))
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(timeout=5.0)
        self.sim.close()

    # -- callbacks (executor thread) -------------------------------------------------------
    def on_command(self, msg: Float64MultiArray) -> None:
        values = np.asarray(msg.data, dtype=np.float64)
        with self._cond:
            if values.shape != (ACTION_DIM,) or not np.all(np.isfinite(values)):
                self._bad_command = f"{values.size} values" if values.shape != (ACTION_DIM,) else "NaN/inf values"
                return
            self._command = values
            self._cond.notify_all()

    def on_reset(self, request, response):
        with self._cond:
            self._reset_requested = True
            self._cond.notify_all()
        response.success, response.message = True, "current episode ends with ABORT; a new one starts"
        return response

    # -- stepping thread -------------------------------------------------------------------
    def run(self) -> None:
        try:
            self._wait_for_peers()
            episodes = int(self.p["episodes"])
            index = 0
            while not self._stop.is_set() and (episodes <= 0 or index < episodes):
                if index > 0:
                    self.now_ns += self.period_ns
                self.run_episode(index)
                index += 1
                if not self._stop.is_set() and (episodes <= 0 or index < episodes):
                    self._stop.wait(float(self.p["pause_between_episodes_s"]))
            total = sum(self.outcomes.values())
            self.get_logger().info(
                f"done: {total} episodes, {self.outcomes['SUCCESS']} SUCCESS, {self.outcomes['FAILURE']} FAILURE, "
                f"{self.outcomes['ABORT']} ABORT; {self.holds} ticks held for lack of a command")
        except Exception as exc:
            if self._stop.is_set() or not self.context.ok():
                return  # Ctrl-C shut the context down under a publish: a normal stop
            self.get_logger().error(f"sim stepping failed: {exc!r}")  # main() then exits 1
            self.error = exc
        finally:
            self.finished.set()

    def _wait_for_peers(self) -> None:
        """Before the first START: an executor (command publisher) and the listed subscribers,
        so nobody misses the first episode's beginning. Deadline ``startup_timeout_s``."""
        topic = self.p["command_topic"]
        subscribed = [t for t in self.p["wait_for_subscribers"] if t]

        def missing():
            out = [f"a publisher on {topic}"] if self.count_publishers(topic) == 0 else []
            return out + [f"a subscriber on {t}" for t in subscribed if self.count_subscribers(t) == 0]

        deadline = time.monotonic() + float(self.p["startup_timeout_s"])
        while missing() and time.monotonic() < deadline and not self._stop.is_set():
            time.sleep(0.05)
        if missing():
            self.get_logger().warning(f"still no {', '.join(missing())} after {self.p['startup_timeout_s']} s: "
                                      "starting anyway (ticks hold until an executor_node commands)")
        self._stop.wait(float(self.p["startup_settle_s"]))

    def run_episode(self, index: int) -> None:
        episode_id = f"{time.strftime('%Y%m%d-%H%M%S')}-sim{index:04d}-{uuid.uuid4().hex[:6]}"
        obs = self.sim.reset()
        self.publish_event(episode_id, EpisodeEvent.START, 0.0)
        self.get_logger().info(f"episode {episode_id} START (seed {self.sim.episode_seed})")
        self.publish_tick(obs, reward=None)
        min_wall = self.sim.control_period / float(self.p["real_time_factor"]) if self.p["real_time_factor"] > 0 else 0.0
        outcome, why = None, "reset requested or shutting down"
        tick_start = time.monotonic()
        while outcome is None:
            action = self.wait_for_command()
            if action is None:  # stop or ~/reset
                outcome = "ABORT"
                break
            if min_wall > 0:
                self._stop.wait(max(0.0, tick_start + min_wall - time.monotonic()))
            tick_start = time.monotonic()
            obs, reward, terminated, truncated, info = self.sim.step(action)
            self.now_ns += self.period_ns
            self.publish_tick(obs, reward=reward)
            if terminated or truncated:
                outcome = "SUCCESS" if info["succeed"] else "FAILURE"
                why = "cube lifted" if info["succeed"] else "cube left the workspace" if terminated else \
                    f"time limit of {self.p['max_steps']} ticks"
        code = {"SUCCESS": EpisodeEvent.SUCCESS, "FAILURE": EpisodeEvent.FAILURE, "ABORT": EpisodeEvent.ABORT}[outcome]
        self.publish_event(episode_id, code, 1.0 if outcome == "SUCCESS" else 0.0)
        self.outcomes[outcome] += 1
        self.get_logger().info(f"episode {episode_id} {outcome} after {obs.step} ticks ({why})")

    def wait_for_command(self) -> np.ndarray | None:
        """First command received after this tick's /clock, or a hold (zeros) on timeout.
        None when the episode must end (stop or ~/reset)."""
        deadline = time.monotonic() + float(self.p["command_timeout_s"])
        with self._cond:
            while self._command is None and not self._reset_requested and not self._stop.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            if self._reset_requested or self._stop.is_set():
                self._reset_requested = False
                return None
            command, self._command, bad, self._bad_command = self._command, None, self._bad_command, ""
        if command is None:
            self.holds += 1
            if not self._holding:
                why = f"malformed command ({bad})" if bad else f"no command within {self.p['command_timeout_s']} s"
                self.get_logger().warning(f"{why} on {self.p['command_topic']}: holding (zero action) "
                                          "until commands arrive; is executor_node running on sim time?")
                self._holding = True
            return np.zeros(ACTION_DIM)
        if self._holding:
            self.get_logger().info("commands arrived again: stepping with them")
            self._holding = False
        return command

    # -- publishing ------------------------------------------------------------------------
    def publish_event(self, episode_id: str, event: int, reward: float) -> None:
        msg = EpisodeEvent(episode_id=episode_id, event=event, reward=float(reward), task=self.p["task"])
        msg.header.stamp = stamp_of(self.now_ns)
        self.event_pub.publish(msg)

    def publish_tick(self, obs, reward: float | None) -> None:
        """Observation of the current tick, then /clock (the executor's cue to command)."""
        stamp = stamp_of(self.now_ns)
        for name, pub in self.image_pubs.items():
            img = Image(**rgb_to_image_fields(obs.images[name]))
            img.header.stamp, img.header.frame_id = stamp, f"{name}_camera"
            pub.publish(img)
        js = JointState(name=[*JOINT_NAMES, GRIPPER_JOINT_NAME],
                        position=[*map(float, obs.joint_pos), float(obs.gripper)],
                        velocity=[*map(float, obs.joint_vel), 0.0])
        js.header.stamp = stamp
        self.joint_pub.publish(js)
        pose = PoseStamped()
        pose.header.stamp, pose.header.frame_id = stamp, self.p["frame_id"]
        pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = map(float, obs.tcp)
        w, x, y, z = map(float, obs.tcp_quat)
        pose.pose.orientation.w, pose.pose.orientation.x, pose.pose.orientation.y, pose.pose.orientation.z = w, x, y, z
        self.pose_pub.publish(pose)
        state = Float64MultiArray(data=obs.task_state().to_array().tolist())
        state.layout.dim = [MultiArrayDimension(label=",".join(TASK_STATE_LABELS), size=len(TASK_STATE_LABELS),
                                                stride=len(TASK_STATE_LABELS))]
        self.state_pub.publish(state)
        if reward is not None:
            self.reward_pub.publish(Float32(data=float(reward)))
        with self._cond:
            self._command = None  # only a command sent after this clock answers this tick
            self._bad_command = ""
        self.clock_pub.publish(Clock(clock=stamp))


def _spin_until_finished(node: SimNode) -> None:
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    node.start()
    try:
        while rclpy.ok() and not node.finished.is_set():
            executor.spin_once(timeout_sec=0.1)
        linger = time.monotonic() + 0.5  # let reliable subscribers fetch the last end event
        while rclpy.ok() and time.monotonic() < linger:
            executor.spin_once(timeout_sec=0.05)
    finally:
        node.stop()


def main(args=None):
    """Runs ``episodes`` episodes (0 = forever), then exits: 0, or 1 after a simulator error."""
    return run_node(SimNode, "sim_node", args, spin=_spin_until_finished)


if __name__ == "__main__":
    raise SystemExit(main())
