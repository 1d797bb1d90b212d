"""Echo peer for the interface round-trip test: a separate process that republishes every
aloe_msgs message it receives on echo_in/<Type> to echo_out/<Type>, and serves LoadPolicy."""

import rclpy
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy

from aloe_msgs import msg as aloe_msg
from aloe_msgs.srv import LoadPolicy

TYPES = ("ActionChunk", "ExecutedAction", "Intervention", "EpisodeEvent", "ValueEstimate")


class InterfaceEcho(Node):
    def __init__(self):
        super().__init__("interface_echo")
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self._keep = []
        for name in TYPES:
            cls = getattr(aloe_msg, name)
            pub = self.create_publisher(cls, f"echo_out/{name}", qos)
            self._keep.append(self.create_subscription(cls, f"echo_in/{name}", pub.publish, qos))
        self.create_service(LoadPolicy, "echo/load_policy", self._load)
        self.get_logger().info("interface echo ready")

    def _load(self, request, response):
        response.success = request.checkpoint_path.endswith("good")
        response.message = f"echo: {request.checkpoint_path}"
        response.policy_id = "0123456789abcdef" if response.success else ""
        return response


def main():
    rclpy.init()
    node = InterfaceEcho()
    try:
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
