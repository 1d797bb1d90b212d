"""Output adapters: one commanded action (D floats) -> the user's robot command interface.

Chosen by the executor's ``output_adapter`` parameter:
- ``float64_multi_array``: ``std_msgs/Float64MultiArray`` (joint or EE-delta command;
  what forward_command_controller and the ALOE sim take).
- ``joint_trajectory``: ``trajectory_msgs/JointTrajectory`` with one point reached after one
  control period (joint_trajectory_controller; header.stamp 0 = start on receipt).
- ``twist_stamped``: ``geometry_msgs/TwistStamped`` from the first 6 dims
  ``[vx, vy, vz, wx, wy, wz]`` times ``twist_scale``; 0 (the default) means 1/control_period,
  which turns per-tick deltas into m/s and rad/s (REP-103 units); further dims (gripper) are not sent.
- ``moveit_py``: joint-position goals through MoveIt 2's moveit_py; loads only where
  moveit_py imports (a robot with MoveIt installed), fails with a clear message elsewhere.

Commands are published reliable (a dropped command is a missed tick on the robot).
"""

from __future__ import annotations

import abc
import threading

import numpy as np
from rclpy.duration import Duration
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

COMMAND_QOS = QoSProfile(depth=10, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)

ADAPTER_NAMES = ("float64_multi_array", "joint_trajectory", "twist_stamped", "moveit_py")
# Adapters that command absolute positions: a HOLD repeats the last command (zeros would be a target).
POSITION_ADAPTERS = ("joint_trajectory", "moveit_py")


class AdapterError(RuntimeError):
    """The adapter cannot be used with this configuration or on this machine."""


class CommandAdapter(abc.ABC):
    """Sends one action per control tick. ``send(action (D,) float64, stamp builtin_interfaces/Time)``."""

    name = ""
    _pub = None  # the command publisher of the topic adapters (reliable, COMMAND_QOS)

    @abc.abstractmethod
    def send(self, action: np.ndarray, stamp) -> None:
        """Publish ``action`` as this adapter's command message, stamped ``stamp``."""

    def flush(self, timeout_s: float) -> bool:
        """Wait, at most ``timeout_s``, until every reader has acknowledged the commands sent: the last
        command of a process that is exiting must not die with it in a send queue. True when they are
        (or there is nothing to wait for: no publisher, no reader)."""
        return True if self._pub is None else self._pub.wait_for_all_acked(Duration(seconds=timeout_s))

    def close(self) -> None:
        pass


class Float64MultiArrayAdapter(CommandAdapter):
    name = "float64_multi_array"

    def __init__(self, node, topic: str, action_names):
        from std_msgs.msg import Float64MultiArray, MultiArrayDimension

        self._msg_type, self._dim_type = Float64MultiArray, MultiArrayDimension
        self._size = len(action_names)
        self._pub = node.create_publisher(Float64MultiArray, topic, COMMAND_QOS)

    def send(self, action, stamp) -> None:
        msg = self._msg_type()
        msg.layout.dim = [self._dim_type(label="action", size=int(action.size), stride=int(action.size))]
        msg.data = [float(x) for x in action]
        self._pub.publish(msg)


class JointTrajectoryAdapter(CommandAdapter):
    name = "joint_trajectory"

    def __init__(self, node, topic: str, joint_names, control_period_s: float):
        from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

        if not joint_names:
            raise AdapterError("joint_trajectory adapter needs joint_names (parameter joint_names or action_names)")
        self._types = (JointTrajectory, JointTrajectoryPoint)
        self._joint_names = list(joint_names)
        self._reach = Duration(seconds=control_period_s).to_msg()
        self._pub = node.create_publisher(JointTrajectory, topic, COMMAND_QOS)

    def send(self, action, stamp) -> None:
        trajectory_type, point_type = self._types
        msg = trajectory_type()
        msg.joint_names = self._joint_names  # header.stamp left 0: controller starts it on receipt
        msg.points = [point_type(positions=[float(x) for x in action], time_from_start=self._reach)]
        self._pub.publish(msg)


class TwistStampedAdapter(CommandAdapter):
    name = "twist_stamped"

    def __init__(self, node, topic: str, action_dim: int, frame_id: str, scale: float):
        from geometry_msgs.msg import TwistStamped

        if action_dim < 6:
            raise AdapterError(f"twist_stamped adapter needs action_dim >= 6 ([vx vy vz wx wy wz ...]), "
                               f"got {action_dim}")
        if action_dim > 6:
            node.get_logger().info(f"twist_stamped: dims 6..{action_dim - 1} (e.g. gripper) are not sent")
        self._msg_type, self._frame_id, self._scale = TwistStamped, frame_id, float(scale)
        self._pub = node.create_publisher(TwistStamped, topic, COMMAND_QOS)

    def send(self, action, stamp) -> None:
        msg = self._msg_type()
        msg.header.stamp = stamp
        msg.header.frame_id = self._frame_id
        v = [float(x) * self._scale for x in action[:6]]
        msg.twist.linear.x, msg.twist.linear.y, msg.twist.linear.z = v[0], v[1], v[2]
        msg.twist.angular.x, msg.twist.angular.y, msg.twist.angular.z = v[3], v[4], v[5]
        self._pub.publish(msg)


class MoveItPyAdapter(CommandAdapter):
    """Joint-position goals for one planning group through moveit_py (optional backend).

    Planning + execution run in a worker thread so the control timer never blocks; a goal
    that arrives while the previous one still plans replaces the pending goal.
    """

    name = "moveit_py"

    def __init__(self, node, planning_group: str, joint_names):
        try:
            from moveit.planning import MoveItPy  # noqa: F401  (only on machines with MoveIt 2)
        except ImportError as exc:
            raise AdapterError(
                f"output_adapter 'moveit_py' needs MoveIt 2's moveit_py, which does not import here ({exc}). "
                "Install MoveIt 2 (apt ros-$ROS_DISTRO-moveit-py) or choose output_adapter "
                "float64_multi_array, joint_trajectory or twist_stamped") from exc
        from moveit.core.robot_state import RobotState

        if not planning_group or not joint_names:
            raise AdapterError("moveit_py adapter needs parameters moveit_planning_group and joint_names")
        self._robot = MoveItPy(node_name=f"{node.get_name()}_moveit_py")
        self._component = self._robot.get_planning_component(planning_group)
        self._state_type = RobotState
        self._group, self._joint_names = planning_group, list(joint_names)
        self._pending: np.ndarray | None = None
        self._wake = threading.Condition()
        self._closed = False
        self._log = node.get_logger()
        self._thread = threading.Thread(target=self._run, name="moveit_py_adapter", daemon=True)
        self._thread.start()

    def send(self, action, stamp) -> None:
        with self._wake:
            self._pending = np.array(action, dtype=np.float64)
            self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                while self._pending is None and not self._closed:
                    self._wake.wait(timeout=1.0)
                if self._closed:
                    return
                goal, self._pending = self._pending, None
            state = self._state_type(self._robot.get_robot_model())
            state.set_joint_group_positions(self._group, goal)
            self._component.set_start_state_to_current_state()
            self._component.set_goal_state(robot_state=state)
            plan = self._component.plan()
            if plan:
                self._robot.execute(plan.trajectory, controllers=[])
            else:
                self._log.warn(f"moveit_py: no plan to {goal.tolist()}")

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()


def make_adapter(name: str, node, *, topic: str, action_names, joint_names, control_period_s: float,
                 frame_id: str = "base_link", twist_scale: float = 1.0, moveit_planning_group: str = ""
                 ) -> CommandAdapter:
    """The adapter called ``name`` (one of ``ADAPTER_NAMES``) publishing on ``topic``."""
    if name == "float64_multi_array":
        return Float64MultiArrayAdapter(node, topic, action_names)
    if name == "joint_trajectory":
        return JointTrajectoryAdapter(node, topic, joint_names or action_names, control_period_s)
    if name == "twist_stamped":
        scale = twist_scale if twist_scale > 0 else 1.0 / control_period_s
        return TwistStampedAdapter(node, topic, len(action_names), frame_id, scale)
    if name == "moveit_py":
        return MoveItPyAdapter(node, moveit_planning_group, joint_names or action_names)
    raise AdapterError(f"unknown output_adapter {name!r}; use one of {list(ADAPTER_NAMES)}")
