"""replay_node: scores a recorded bag with a trained critic and publishes one
``aloe_msgs/ValueEstimate`` per chunk (per control tick t: the chunk A_t executed from there).

The bag is read directly (``aloe_critic.dataset`` ingestion, cached), scored once at start
(``aloe_critic.evaluate.evaluate_bags``), then published at ``rate_hz`` on ``value_topic``
(reliable, keep-last ``qos_depth``), header.stamp = the chunk's observation stamp, chunk_id =
tick index in the episode. ``wait_for_subscribers`` > 0 holds publishing until that many
subscribers matched (deadline ``wait_timeout_s``), so a late listener misses nothing. With
``loop`` true it starts over at the end; otherwise it logs that it is done and stays up (idle)
until shut down.
"""

from __future__ import annotations

from aloe_data import schema
from aloe_data.ros_node import Param, declare_parameters, run_node
from aloe_msgs.msg import ValueEstimate
from builtin_interfaces.msg import Time
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy

from aloe_critic.evaluate import evaluate_bags


PARAMETERS = {
    "bag_path": ("", "bag directory (or directory of bags) to score"),
    "critic_path": ("", "checkpoint directory from aloe-train (holding critic/)"),
    "policy_path": ("", "policy for V; empty: the policy the critic was fit for"),
    "rate_hz": Param(10.0, "ValueEstimate messages per second", range=(0.1, 10000.0)),
    "value_topic": (schema.TOPIC_VALUE_ESTIMATE, "output topic"),
    "cache_dir": ("", "ingestion cache; empty: the training one"),
    "qos_depth": (100, "publisher history depth"),
    "loop": (False, "start over at the end of the bag"),
    "wait_for_subscribers": (0, "publish only once this many subscribers are matched (0: start at once)"),
    "wait_timeout_s": (10.0, "deadline for wait_for_subscribers; then publish anyway (with a warning)"),
}


class ReplayNode(Node):
    def __init__(self, **kwargs):
        super().__init__("replay_node", **kwargs)
        p = declare_parameters(self, PARAMETERS)
        bag, critic, policy, rate, topic, cache, depth = (p[k] for k in ("bag_path", "critic_path", "policy_path",
                                                                          "rate_hz", "value_topic", "cache_dir",
                                                                          "qos_depth"))
        self.loop, self.wait_for, self.wait_timeout_s = p["loop"], p["wait_for_subscribers"], p["wait_timeout_s"]
        if not bag or not critic:
            raise ValueError("parameters bag_path and critic_path are required")

        self.get_logger().info(f"scoring {bag} with critic {critic} ...")
        self.rows, _ = evaluate_bags([bag], critic, policy or None, cache or None)
        self.get_logger().info(f"scored {len(self.rows)} chunks ({self.rows[0]['method']}, policy "
                               f"{self.rows[0]['policy_id']}); publishing on {topic} at {rate:g} Hz")
        self.pub = self.create_publisher(ValueEstimate, topic,
                                         QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE))
        self.next = 0
        self.waiting_since = self.get_clock().now() if self.wait_for > 0 else None
        self.timer = self.create_timer(1.0 / rate, self.publish_next)

    def publish_next(self) -> None:
        if self.waiting_since is not None:
            waited = (self.get_clock().now() - self.waiting_since).nanoseconds * 1e-9
            matched = self.pub.get_subscription_count()
            if matched < self.wait_for and waited < self.wait_timeout_s:
                return
            if matched < self.wait_for:
                self.get_logger().warning(f"only {matched} of {self.wait_for} subscribers after "
                                          f"{self.wait_timeout_s:g} s; publishing anyway")
            self.waiting_since = None
        if self.next >= len(self.rows):
            if not self.loop:
                self.timer.cancel()
                self.get_logger().info(f"published all {len(self.rows)} value estimates")
                return
            self.next = 0
        r = self.rows[self.next]
        self.next += 1
        msg = ValueEstimate()
        ns = int(round(r["stamp_s"] * 1e9))
        msg.header.stamp = Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)
        msg.header.frame_id = ""
        msg.chunk_id = int(r["tick"])
        msg.q, msg.v, msg.advantage, msg.q_std = r["q"], r["v"], r["advantage"], r["q_std"]
        msg.policy_id, msg.method = r["policy_id"], r["method"]
        self.pub.publish(msg)


def main(args=None):
    return run_node(ReplayNode, "replay_node", args, config_errors=(ValueError, FileNotFoundError, RuntimeError))


if __name__ == "__main__":
    raise SystemExit(main())
