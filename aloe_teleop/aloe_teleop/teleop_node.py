"""teleop_node: operator devices -> aloe_msgs/Intervention, episode keys -> aloe_msgs/EpisodeEvent.

Devices (parameter ``devices``): ``joy`` (sensor_msgs/Joy from a joy driver), ``keyboard`` (this
terminal, only when stdin is a TTY), ``spacemouse`` (only where ``pyspacemouse`` imports). One
device holds the takeover at a time. While its deadman is held, Intervention(active=true, action)
is published at device rate; on release one Intervention(active=false) goes out at once, so the
executor hands back to the policy from its next control tick. A held takeover whose device stops
reporting for ``device_timeout_s`` is released with a warning (an unplugged pad must not keep
control). Episode events come from device buttons/keys and from the std_srvs/Trigger services
``~/start``, ``~/success``, ``~/failure``, ``~/abort``.
"""

from __future__ import annotations

import os
import select
import sys
import threading
import time

import numpy as np
from aloe_data import schema
from aloe_msgs.msg import EpisodeEvent, Intervention
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Joy
from std_msgs.msg import String
from std_srvs.srv import Trigger

from aloe_teleop.devices import (
    ACTION_DIM,
    DeviceConfigError,
    DeviceUnavailable,
    JoyConfig,
    JoyMapper,
    KeyboardConfig,
    KeyboardMapper,
    SpaceMouseAdapter,
    spacemouse_default_config,
)
from aloe_teleop.episodes import EpisodeLabeller
from aloe_data.ros_node import dataclass_parameters, declare_parameters, run_node

RELIABLE = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
ZERO = np.zeros(ACTION_DIM, np.float32)


PARAMETERS = {
    "devices": (["joy", "keyboard"], "joy, keyboard, spacemouse"),
    "intervention_topic": (schema.TOPIC_INTERVENTION, "aloe_msgs/Intervention output"),
    "episode_event_topic": (schema.TOPIC_EPISODE_EVENT, "aloe_msgs/EpisodeEvent output (the episode labels)"),
    "task_topic": (schema.TOPIC_TASK, "std_msgs/String, transient local: the instruction put in EpisodeEvents"),
    "joy_topic": ("/joy", "sensor_msgs/Joy input"),
    "publish_rate_hz": (30.0, "rate of Intervention while a takeover is held (keyboard/SpaceMouse polling, Joy "
                              "repeat)"),
    "device_timeout_s": (0.5, "a held takeover is released when its device is silent this long"),
    "episode_id_prefix": ("", "prefix of the episode ids this node makes"),
}


def _device_section(node: Node, prefix: str, defaults) -> dict:
    """The ``<prefix>.*`` parameters of one device's config dataclass, without the prefix."""
    values = declare_parameters(node, dataclass_parameters(prefix, defaults))
    return {key[len(prefix) + 1:]: value for key, value in values.items()}


class TeleopNode(Node):
    def __init__(self):
        super().__init__("teleop_node")
        params = declare_parameters(self, PARAMETERS)
        p = params.__getitem__
        devices = list(p("devices"))
        self.rate_hz = float(p("publish_rate_hz"))
        self.device_timeout_s = float(p("device_timeout_s"))
        try:
            joy_cfg = JoyConfig.from_params(_device_section(self, "joy", JoyConfig()))
            kb_cfg = KeyboardConfig.from_params(_device_section(self, "keyboard", KeyboardConfig()))
            sm_cfg = JoyConfig.from_params(_device_section(self, "spacemouse", spacemouse_default_config()))
        except DeviceConfigError as exc:
            raise ValueError(f"bad device configuration: {exc}") from exc

        self._lock = threading.RLock()
        self._device_problems: dict[int, str] = {}  # device -> its last reading problems (logged on change)
        self._stop = threading.Event()
        self._task = ""
        self._holder: int | None = None  # Intervention.DEVICE_* currently holding the takeover
        self._last_action = ZERO
        self._last_publish = 0.0
        self._joy_seen = 0.0
        self.labeller = EpisodeLabeller(p("episode_id_prefix"))

        self.intervention_pub = self.create_publisher(Intervention, p("intervention_topic"), RELIABLE)
        self.event_pub = self.create_publisher(EpisodeEvent, p("episode_event_topic"), RELIABLE)
        self.create_subscription(String, p("task_topic"), self._on_task, LATCHED)
        for kind in ("start", "success", "failure", "abort"):
            self.create_service(Trigger, f"~/{kind}",
                                lambda req, resp, k=kind.upper(): self._on_trigger(k, resp))

        self.joy = None
        if "joy" in devices:
            self.joy = JoyMapper(joy_cfg)
            self.create_subscription(Joy, p("joy_topic"), self._on_joy, RELIABLE)
        self.spacemouse = None
        if "spacemouse" in devices:
            try:
                self.spacemouse = SpaceMouseAdapter(sm_cfg)
            except DeviceUnavailable as exc:
                self.get_logger().error(f"SpaceMouse disabled: {exc}")
        self.keyboard = None
        self._keyboard_thread = None
        if "keyboard" in devices:
            if sys.stdin.isatty():
                self.keyboard = KeyboardMapper(kb_cfg)
                self._keyboard_thread = threading.Thread(target=self._keyboard_loop, daemon=True,
                                                         name="teleop_keyboard")
                self._keyboard_thread.start()
            else:
                self.get_logger().info("keyboard device off: stdin is not a terminal")
        self.create_timer(1.0 / self.rate_hz, self._tick)
        self.get_logger().info(
            f"teleop ready: devices {devices}; deadman = joy button {joy_cfg.deadman_button}; "
            f"services ~/start ~/success ~/failure ~/abort")

    # ---- publishing ------------------------------------------------------------------------
    def _publish(self, device: int, active: bool, action) -> None:
        msg = Intervention(active=bool(active), device=device,
                           action=[float(a) for a in (action if active else ZERO)])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.intervention_pub.publish(msg)
        self._last_publish = time.monotonic()
        self._last_action = np.asarray(action, np.float32) if active else ZERO

    def _apply(self, device: int, command) -> None:
        """One device reading: take over, update, or hand back (the latter immediately)."""
        problems = "; ".join(command.problems)
        if problems != self._device_problems.get(device, ""):  # logged once per change, not per reading
            if problems:
                self.get_logger().warning(f"device reading not usable as is: {problems} (read as 0)")
            else:
                self.get_logger().info("device readings usable again")
            self._device_problems[device] = problems
        with self._lock:
            if command.active and self._holder in (None, device):
                self._holder = device
                self._publish(device, True, command.action)
            elif not command.active and self._holder == device:
                self._holder = None
                self._publish(device, False, ZERO)
                self.get_logger().info("takeover released: control handed back to the policy")
        for event in command.events:
            self._episode(event)

    # ---- devices -----------------------------------------------------------------------------
    def _on_joy(self, msg: Joy) -> None:
        self._joy_seen = time.monotonic()
        self._apply(Intervention.DEVICE_JOY, self.joy.update(msg.axes, msg.buttons))

    def _tick(self) -> None:
        now = time.monotonic()
        if self.spacemouse is not None:
            self._apply(Intervention.DEVICE_SPACEMOUSE, self.spacemouse.read())
        if self.keyboard is not None:
            with self._lock:
                state = self.keyboard.state(now)
            if state.active:
                self._apply(Intervention.DEVICE_KEYBOARD, state)
        with self._lock:
            if self._holder == Intervention.DEVICE_JOY:
                if now - self._joy_seen > self.device_timeout_s:
                    self.get_logger().warning(
                        f"no Joy message for {now - self._joy_seen:.2f}s while the takeover is held: "
                        f"releasing it (check the gamepad / joy driver)")
                    self.joy = JoyMapper(self.joy.config)  # forget the stale held state
                    self._holder = None
                    self._publish(Intervention.DEVICE_JOY, False, ZERO)
                elif now - self._last_publish >= 1.0 / self.rate_hz:
                    self._publish(Intervention.DEVICE_JOY, True, self._last_action)

    def _keyboard_loop(self) -> None:
        import termios
        import tty
        fd = sys.stdin.fileno()
        saved = termios.tcgetattr(fd)
        cfg = self.keyboard.config
        self.get_logger().info(
            f"keyboard: '{cfg.takeover_key}' toggles takeover; motion {cfg.motion_keys}; episode "
            f"start '{cfg.start_key}' success '{cfg.success_key}' failure '{cfg.failure_key}' abort '{cfg.abort_key}'")
        try:
            tty.setcbreak(fd)  # unbuffered keys, but Ctrl-C still sends SIGINT (raw mode would not)
            while not self._stop.is_set():
                ready, _, _ = select.select([fd], [], [], 0.1)
                if not ready:
                    continue
                char = os.read(fd, 1).decode(errors="ignore")
                with self._lock:
                    command = self.keyboard.key(char, time.monotonic())
                self._apply(Intervention.DEVICE_KEYBOARD, command)
        finally:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)

    # ---- episodes ------------------------------------------------------------------------------
    def _on_task(self, msg: String) -> None:
        if msg.data != self._task:
            self.get_logger().info(f"task: {msg.data!r}")
        self._task = msg.data

    def _episode(self, kind: str) -> tuple[bool, str]:
        ok, message, fields = self.labeller.request(kind, self._task)
        if fields is not None:
            event = EpisodeEvent(episode_id=fields.episode_id, event=fields.event, reward=fields.reward,
                                 task=fields.task)
            event.header.stamp = self.get_clock().now().to_msg()
            self.event_pub.publish(event)
            if kind == "START" and not fields.task:
                self.get_logger().warning("episode started with no task text: nothing on the task topic yet")
            self.get_logger().info(message)
        else:
            self.get_logger().warning(message)
        return ok, message

    def _on_trigger(self, kind: str, response: Trigger.Response) -> Trigger.Response:
        response.success, response.message = self._episode(kind)
        return response

    def destroy_node(self):
        self._stop.set()
        with self._lock:
            if self._holder is not None:  # never leave the executor on a stale human command
                try:
                    self._publish(self._holder, False, ZERO)
                except Exception as exc:  # context already shut down by the signal
                    self.get_logger().warning(f"could not publish the final release: {exc}")
                self._holder = None
        if self._keyboard_thread is not None:
            self._keyboard_thread.join(1.0)
        if self.spacemouse is not None:
            self.spacemouse.close()
        super().destroy_node()


def main(args=None):
    return run_node(TeleopNode, "teleop_node", args)


if __name__ == "__main__":
    raise SystemExit(main())
