"""Operator devices -> takeover state + action command in the executor's action units.

ROS-free: ``teleop_node`` feeds these mappers from sensor_msgs/Joy, the terminal and a SpaceMouse.
The action space is the executor's (docs/interfaces.md, "Actions"): 7 floats
``[dx, dy, dz, rx, ry, rz, grip]``, end-effector deltas in metres per control tick (useful steps
~0.03 m), gripper delta in [-1, 1]; every command is clipped to ``[-action_limit, action_limit]``.

Configs come from the ``joy.*`` / ``keyboard.*`` / ``spacemouse.*`` parameters of
``config/teleop.yaml`` (see ``JoyConfig.from_params``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from aloe_data.schema import SIM_ACTION_NAMES as ACTION_NAMES  # noqa: E402
ACTION_DIM = len(ACTION_NAMES)
EPISODE_EVENTS = ("START", "SUCCESS", "FAILURE", "ABORT")


class DeviceConfigError(ValueError):
    """A device mapping in the teleop YAML is malformed; the message names the parameter."""


class DeviceUnavailable(RuntimeError):
    """An optional device (library or hardware) is not available here."""


def apply_deadband(value: float, deadband: float) -> float:
    """Zero inside ``deadband``; rescaled outside so the output still reaches +-1 at full deflection."""
    magnitude = abs(value)
    if magnitude <= deadband:
        return 0.0
    return float(np.sign(value) * min(1.0, (magnitude - deadband) / (1.0 - deadband)))


@dataclass
class JoyConfig:
    """Axis/button mapping of a gamepad (or any device that gives axes in [-1, 1] and buttons).

    ``axes[d]``: index of the Joy axis driving action dimension d (-1: none); ``scales[d]``: action
    units at full deflection (signed, so an inverted axis has a negative scale). The gripper can
    also be driven by two buttons (``grip_close_button`` -> +grip_step, ``grip_open_button`` ->
    -grip_step). Episode buttons fire on the press (rising edge) only.
    """

    axes: list[int] = field(default_factory=lambda: [1, 0, 4, -1, -1, -1, -1])
    scales: list[float] = field(default_factory=lambda: [0.03, 0.03, 0.03, 0.0, 0.0, 0.0, 1.0])
    deadband: float = 0.1
    deadman_button: int = 4
    grip_close_button: int = 5
    grip_open_button: int = -1
    grip_step: float = 1.0
    start_button: int = 7
    success_button: int = 0
    failure_button: int = 1
    abort_button: int = 6
    action_limit: float = 1.0

    def __post_init__(self):
        if len(self.axes) != ACTION_DIM or len(self.scales) != ACTION_DIM:
            raise DeviceConfigError(f"axes and scales need {ACTION_DIM} entries {list(ACTION_NAMES)}, got "
                                    f"{len(self.axes)} and {len(self.scales)}")
        if not 0.0 <= self.deadband < 1.0:
            raise DeviceConfigError(f"deadband must be in [0, 1), got {self.deadband}")
        if self.deadman_button < 0:
            raise DeviceConfigError("deadman_button must be a button index: takeover needs a deadman")
        self.axes = [int(a) for a in self.axes]
        self.scales = [float(s) for s in self.scales]

    @classmethod
    def from_params(cls, params: Mapping[str, object]) -> "JoyConfig":
        """From a flat mapping of the ``joy.*`` parameters (prefix already stripped)."""
        known = set(cls.__dataclass_fields__)
        unknown = set(params) - known
        if unknown:
            raise DeviceConfigError(f"unknown joystick parameters {sorted(unknown)}; known: {sorted(known)}")
        return cls(**{k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in params.items()})

    @property
    def episode_buttons(self) -> dict[str, int]:
        return {"START": self.start_button, "SUCCESS": self.success_button,
                "FAILURE": self.failure_button, "ABORT": self.abort_button}


@dataclass
class DeviceCommand:
    """One device reading, mapped: takeover held?, the command, and what changed."""

    active: bool
    action: np.ndarray  # (7,) float32, action units
    released: bool = False  # deadman let go in this reading: hand back now
    events: list[str] = field(default_factory=list)  # episode events pressed in this reading
    problems: list[str] = field(default_factory=list)  # what was wrong with the reading (read as 0 instead)


def _button(buttons: Sequence[int], index: int) -> bool:
    return 0 <= index < len(buttons) and bool(buttons[index])


class JoyMapper:
    """sensor_msgs/Joy axes + buttons -> DeviceCommand (keeps the previous buttons for edges)."""

    def __init__(self, config: JoyConfig):
        self.config = config
        self._previous: list[int] = []
        self._active = False

    def update(self, axes: Sequence[float], buttons: Sequence[int]) -> DeviceCommand:
        c = self.config
        action = np.zeros(ACTION_DIM, np.float32)
        problems = []
        for d, (index, scale) in enumerate(zip(c.axes, c.scales)):
            if index < 0:
                continue
            if index >= len(axes):
                problems.append(f"axis {index} ({ACTION_NAMES[d]}) missing: the device reports {len(axes)} axes")
                continue
            value = float(axes[index])
            if not np.isfinite(value):  # a NaN must never reach the robot: read as centred
                problems.append(f"axis {index} ({ACTION_NAMES[d]}) is {value}")
                continue
            action[d] = scale * apply_deadband(value, c.deadband)
        if _button(buttons, c.grip_close_button):
            action[6] += c.grip_step
        if _button(buttons, c.grip_open_button):
            action[6] -= c.grip_step
        np.clip(action, -c.action_limit, c.action_limit, out=action)
        active = _button(buttons, c.deadman_button)
        events = [name for name, index in c.episode_buttons.items()
                  if _button(buttons, index) and not _button(self._previous, index)]
        released = self._active and not active
        self._active = active
        self._previous = list(buttons)
        if not active:
            action[:] = 0.0  # without the deadman the operator commands nothing
        return DeviceCommand(active, action, released, events, problems)


# ---------------------------------------------------------------------------------------------
# Keyboard (terminal): no key-up events exist, so takeover is a toggle and a key press commands
# its step for ``hold_s`` (longer than the terminal's auto-repeat delay, so a held key is smooth).
# ---------------------------------------------------------------------------------------------

KEY_NAMES = {"space": " ", "enter": "\n", "tab": "\t"}


@dataclass
class KeyboardConfig:
    """``motion_keys`` entries look like ``"w:+dx"`` (key, sign, action name)."""

    motion_keys: list[str] = field(default_factory=lambda: [
        "w:+dx", "s:-dx", "a:+dy", "d:-dy", "r:+dz", "f:-dz", "c:+grip", "o:-grip"])
    step: float = 0.03       # action units per tick for dx..rz
    grip_step: float = 1.0
    hold_s: float = 0.6
    takeover_key: str = "space"
    start_key: str = "n"
    success_key: str = "y"
    failure_key: str = "x"
    abort_key: str = "b"

    @classmethod
    def from_params(cls, params: Mapping[str, object]) -> "KeyboardConfig":
        known = set(cls.__dataclass_fields__)
        unknown = set(params) - known
        if unknown:
            raise DeviceConfigError(f"unknown keyboard parameters {sorted(unknown)}; known: {sorted(known)}")
        return cls(**{k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in params.items()})

    def key_actions(self) -> dict[str, np.ndarray]:
        table = {}
        for entry in self.motion_keys:
            try:
                key, spec = entry.rsplit(":", 1)
                sign, name = spec[0], spec[1:]
                if sign not in "+-" or name not in ACTION_NAMES:
                    raise ValueError
            except ValueError:
                raise DeviceConfigError(
                    f"keyboard.motion_keys entry {entry!r}: use 'key:+name' or 'key:-name' with name in "
                    f"{list(ACTION_NAMES)}") from None
            action = np.zeros(ACTION_DIM, np.float32)
            action[ACTION_NAMES.index(name)] = (1 if sign == "+" else -1) * (
                self.grip_step if name == "grip" else self.step)
            table[KEY_NAMES.get(key, key)] = action
        return table


class KeyboardMapper:
    """Key presses (characters) -> DeviceCommand; ``state(now)`` gives the command at time now."""

    def __init__(self, config: KeyboardConfig):
        self.config = config
        self.actions = config.key_actions()
        self.takeover = KEY_NAMES.get(config.takeover_key, config.takeover_key)
        self.episode_keys = {KEY_NAMES.get(k, k): name for name, k in (
            ("START", config.start_key), ("SUCCESS", config.success_key),
            ("FAILURE", config.failure_key), ("ABORT", config.abort_key))}
        self.active = False
        self._action = np.zeros(ACTION_DIM, np.float32)
        self._until = 0.0

    def key(self, char: str, now: float) -> DeviceCommand:
        """One key press at time ``now`` (seconds, monotonic)."""
        events, released = [], False
        if char == self.takeover:
            released = self.active
            self.active = not self.active
        elif char in self.episode_keys:
            events.append(self.episode_keys[char])
        elif char in self.actions:
            self._action = self.actions[char].copy()
            self._until = now + self.config.hold_s
        command = self.state(now)
        command.released, command.events = released, events
        return command

    def state(self, now: float) -> DeviceCommand:
        if not self.active or now > self._until:
            return DeviceCommand(self.active, np.zeros(ACTION_DIM, np.float32))
        return DeviceCommand(True, self._action.copy())


# ---------------------------------------------------------------------------------------------
# SpaceMouse: 6 axes in [-1, 1] + buttons, mapped by the same JoyMapper (its own defaults).
# ---------------------------------------------------------------------------------------------

def spacemouse_default_config() -> JoyConfig:
    # pyspacemouse state order used below: [x, y, z, roll, pitch, yaw]; button 0 = deadman,
    # button 1 = close the gripper while held. Rotation is passed through with scale 0 by default
    # (the sim ignores it); set scales[3:6] for a robot that uses it.
    return JoyConfig(axes=[1, 0, 2, 3, 4, 5, -1], scales=[0.03, -0.03, 0.03, 0.0, 0.0, 0.0, 0.0],
                     deadband=0.05, deadman_button=0, grip_close_button=1, grip_open_button=-1,
                     start_button=-1, success_button=-1, failure_button=-1, abort_button=-1)


class SpaceMouseAdapter:
    """Reads a 3Dconnexion SpaceMouse through ``pyspacemouse`` (optional dependency)."""

    def __init__(self, config: JoyConfig | None = None):
        try:
            import pyspacemouse  # noqa: PLC0415 - optional, only where installed
        except ImportError as exc:
            raise DeviceUnavailable(
                "SpaceMouse support needs the optional 'pyspacemouse' package (pip install pyspacemouse, "
                "plus libhidapi and read access to the device's /dev/hidraw*); use device 'joy' or "
                f"'keyboard' meanwhile ({exc})") from exc
        self._lib = pyspacemouse
        if not pyspacemouse.open():
            raise DeviceUnavailable("pyspacemouse found no SpaceMouse: is it plugged in, and is its "
                                    "/dev/hidraw* readable by this user (udev rule)?")
        self.mapper = JoyMapper(config or spacemouse_default_config())

    def read(self) -> DeviceCommand:
        s = self._lib.read()
        return self.mapper.update([s.x, s.y, s.z, s.roll, s.pitch, s.yaw], list(s.buttons))

    def close(self) -> None:
        try:
            self._lib.close()
        except Exception:  # closing a vanished HID device must not crash shutdown
            pass
