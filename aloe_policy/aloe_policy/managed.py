"""Managed (lifecycle) behaviour of policy_node and executor_node.

Both are ``rclpy.lifecycle`` nodes: **configure** loads and validates (the checkpoint, the
command output), **activate** starts inference / commanding, **deactivate** stops it (the
executor holds, the policy publishes no chunks), **cleanup** forgets what configure loaded. A ROS
launch file (``launch_ros.actions.LifecycleNode``), ``ros2 lifecycle set`` or a lifecycle manager
(nav2_lifecycle_manager) can sequence them.

The plain-node behaviour stays the default: with the parameter ``autostart`` (true) a node takes
itself through configure and activate at start. Where ``rclpy.lifecycle`` is missing (it is in
rclpy since Humble) the nodes fall back to plain nodes that are always active.
"""

from __future__ import annotations

try:
    from rclpy.lifecycle import LifecycleNode as _Base
    from rclpy.lifecycle import TransitionCallbackReturn
    HAVE_LIFECYCLE = True
except ImportError:  # pragma: no cover - rclpy without lifecycle support
    from rclpy.node import Node as _Base
    TransitionCallbackReturn = None
    HAVE_LIFECYCLE = False


class ManagedNode(_Base):
    """A lifecycle node whose subclass provides ``configure_node() -> (ok, message)`` and
    ``cleanup_node()``; ``self.active`` is True between activate and deactivate."""

    def __init__(self, name: str, **kwargs):
        super().__init__(name, **kwargs)
        self.active = False

    # -- subclass hooks ----------------------------------------------------------------------
    def configure_node(self) -> tuple[bool, str]:
        return True, "configured"

    def cleanup_node(self) -> None:
        pass

    # -- lifecycle transitions ---------------------------------------------------------------
    def on_configure(self, state):
        ok, message = self.configure_node()
        if ok:  # one logging call per severity (rclpy ties a severity to a call site)
            self.get_logger().info(f"configure: {message}")
            return TransitionCallbackReturn.SUCCESS
        self.get_logger().error(f"configure failed: {message}")
        return TransitionCallbackReturn.FAILURE

    def on_activate(self, state):
        self.active = True
        self.get_logger().info("activated")
        return super().on_activate(state)

    def on_deactivate(self, state):
        self.active = False
        self.get_logger().info("deactivated")
        return super().on_deactivate(state)

    def on_cleanup(self, state):
        self.active = False
        self.cleanup_node()
        self.get_logger().info("cleaned up")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state):
        self.active = False
        return TransitionCallbackReturn.SUCCESS

    def autostart(self, enabled: bool) -> None:
        """Configure and activate now (``enabled``), or wait for a lifecycle manager."""
        if not HAVE_LIFECYCLE:
            ok, message = self.configure_node()
            self.active = ok
            self.get_logger().info(f"no rclpy.lifecycle: plain node, {message}")
            return
        if not enabled:
            self.get_logger().info("autostart false: unconfigured, waiting for a lifecycle manager "
                                   "(configure loads, activate runs, deactivate holds)")
            return
        if self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            self.trigger_activate()
