"""operator_node: the scripted operator (a stand-in for a human) over ROS.

Each /aloe/sim/state message (one per sim tick) goes through ``OperatorSupervisor.decide``
with the newest /aloe/executed_action; the result is published as aloe_msgs/Intervention
(device DEVICE_SCRIPTED), stamped on the node clock (run with ``use_sim_time: true``). An
EpisodeEvent START resets the supervisor. Modes: off (never takes over), correct (takes over
when the policy goes wrong, corrects, hands back), demo (drives whole episodes).
"""

from __future__ import annotations

from aloe_data import schema

import numpy as np
from aloe_msgs.msg import EpisodeEvent, ExecutedAction, Intervention
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from std_msgs.msg import Float64MultiArray

from aloe_data.ros_node import declare_parameters, run_node
from aloe_sim.env import TaskState
from aloe_sim.scripted import OperatorSupervisor, ScriptedConfig, SupervisorConfig

RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)

PARAMETERS = {
    "mode": ("correct", "off / correct / demo"),
    "noise": (0.0, "Gaussian action noise, as a fraction of the 3 cm step"),
    "bias": ([0.0, 0.0, 0.0], "aiming offset added to the cube position, metres"),
    "reaction_delay_ticks": (2, "ticks between noticing a problem and taking over"),
    "patience": (8, "ticks without progress towards the goal before taking over"),
    "correction_ticks": (15, "longest correction before handing back, ticks"),
    "max_handbacks": (2, "after this many corrections in an episode keep control to its end"),
    "max_steps": (100, "episode length in ticks (match sim_node max_steps): for the time-running-out check"),
    "seed": (0, "noise seed"),
    "state_topic": (schema.TOPIC_SIM_STATE, "std_msgs/Float64MultiArray privileged task state from sim_node"),
    "episode_event_topic": (schema.TOPIC_EPISODE_EVENT, "aloe_msgs/EpisodeEvent"),
    "executed_action_topic": (schema.TOPIC_EXECUTED_ACTION, "aloe_msgs/ExecutedAction"),
    "intervention_topic": (schema.TOPIC_INTERVENTION, "aloe_msgs/Intervention output"),
}


class OperatorNode(Node):
    def __init__(self):
        super().__init__("operator_node")
        p = declare_parameters(self, PARAMETERS)
        controller = ScriptedConfig(noise=float(p["noise"]), bias=tuple(float(b) for b in p["bias"]),
                                    seed=int(p["seed"]))
        self.supervisor = OperatorSupervisor(SupervisorConfig(
            mode=p["mode"], reaction_delay_ticks=int(p["reaction_delay_ticks"]), patience=int(p["patience"]),
            correction_ticks=int(p["correction_ticks"]), max_handbacks=int(p["max_handbacks"]),
            max_steps=int(p["max_steps"]), controller=controller))
        self.last_executed: np.ndarray | None = None
        self.was_active = False
        self.pub = self.create_publisher(Intervention, p["intervention_topic"], RELIABLE)
        self.create_subscription(Float64MultiArray, p["state_topic"], self.on_state, RELIABLE)
        self.create_subscription(EpisodeEvent, p["episode_event_topic"], self.on_event, RELIABLE)
        self.create_subscription(ExecutedAction, p["executed_action_topic"], self.on_executed, RELIABLE)
        if not self.get_parameter("use_sim_time").value:
            self.get_logger().warning("use_sim_time is false: Intervention stamps are wall time, not sim time")
        self.get_logger().info(f"scripted operator ready, mode {p['mode']}")

    def on_event(self, msg: EpisodeEvent) -> None:
        if msg.event == EpisodeEvent.START:
            self.supervisor.reset()
            self.last_executed, self.was_active = None, False
        elif self.supervisor.config.mode == "correct":
            self.get_logger().info(f"episode {msg.episode_id} ended after {self.supervisor.takeovers} takeovers")

    def on_executed(self, msg: ExecutedAction) -> None:
        self.last_executed = np.asarray(msg.action, dtype=np.float64)

    def on_state(self, msg: Float64MultiArray) -> None:
        try:
            state = TaskState.from_array(msg.data)
        except ValueError as exc:
            self.get_logger().error(f"ignoring malformed sim state: {exc}", throttle_duration_sec=5.0)
            return
        active, action = self.supervisor.decide(state, self.last_executed)
        if active != self.was_active and self.supervisor.config.mode == "correct":
            self.get_logger().info(f"takeover ({self.supervisor.reason}) at t={state.t:.1f} s" if active
                                   else f"hand back at t={state.t:.1f} s")
        self.was_active = active
        out = Intervention(active=bool(active), device=Intervention.DEVICE_SCRIPTED,
                           action=[float(a) for a in action])
        out.header.stamp = self.get_clock().now().to_msg()
        self.pub.publish(out)


def main(args=None):
    return run_node(OperatorNode, "operator_node", args)


if __name__ == "__main__":
    raise SystemExit(main())
