"""replay_node as a real process: reads a bag, publishes one ValueEstimate per chunk."""

import time

import pytest


def test_replay_node_publishes_value_estimates_for_every_chunk(aloe_checkpoint, ros_node_process):
    rclpy = pytest.importorskip("rclpy")
    from aloe_msgs.msg import ValueEstimate
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    root, ck = aloe_checkpoint
    bag = root / "bags" / "ep1"
    rclpy.init()
    node = rclpy.create_node("replay_listener")
    received = []
    node.create_subscription(ValueEstimate, "/aloe/value_estimate", received.append,
                             QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
    try:
        proc = ros_node_process("aloe_critic", "replay_node",
                                {"bag_path": str(bag), "critic_path": str(ck), "rate_hz": 20.0,
                                 "cache_dir": str(root / "cache"), "wait_for_subscribers": 1, "wait_timeout_s": 30.0})
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and len(received) < 10 and proc.popen.poll() is None:
            rclpy.spin_once(node, timeout_sec=0.1)
        assert len(received) >= 10, proc.log()[-3000:]
        proc.wait_for_log("published all 10 value estimates", timeout=30)
    finally:
        node.destroy_node()
        rclpy.shutdown()
    first = received[:10]
    assert [m.chunk_id for m in first] == list(range(10))
    for m in first:
        assert m.advantage == pytest.approx(m.q - m.v, abs=1e-5) and m.method == "aloe" and len(m.policy_id) == 16
    assert first[0].header.stamp.sec == 1 and first[1].header.stamp.nanosec == 100_000_000
