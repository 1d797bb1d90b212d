"""Device mappings (ROS-free): Joy axes/buttons, keyboard, SpaceMouse availability, episode labelling."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import yaml

from aloe_teleop.devices import (
    ACTION_NAMES,
    DeviceConfigError,
    DeviceUnavailable,
    JoyConfig,
    JoyMapper,
    KeyboardConfig,
    KeyboardMapper,
    SpaceMouseAdapter,
    apply_deadband,
)
from aloe_teleop.episodes import EpisodeLabeller

CONFIG = Path(__file__).resolve().parents[1] / "config" / "teleop.yaml"


def shipped_params() -> dict:
    return yaml.safe_load(CONFIG.read_text())["teleop_node"]["ros__parameters"]


def pad(axes=None, pressed=()):
    """An 8-axis, 11-button Xbox-style Joy reading."""
    a = [0.0] * 8
    for i, v in (axes or {}).items():
        a[i] = v
    b = [0] * 11
    for i in pressed:
        b[i] = 1
    return a, b


def test_shipped_config_maps_sticks_to_metre_steps_while_deadman_held():
    mapper = JoyMapper(JoyConfig.from_params(shipped_params()["joy"]))
    cmd = mapper.update(*pad({1: 1.0, 0: -0.5, 4: 1.0}, pressed=[4]))
    assert cmd.active and not cmd.released
    expected_dy = 0.03 * -(0.5 - 0.1) / 0.9  # deadband rescaled
    np.testing.assert_allclose(cmd.action, [0.03, expected_dy, 0.03, 0, 0, 0, 0], atol=1e-7)
    assert cmd.action.dtype == np.float32 and cmd.action.shape == (len(ACTION_NAMES),)


def test_no_command_without_deadman_and_release_is_reported_once():
    mapper = JoyMapper(JoyConfig.from_params(shipped_params()["joy"]))
    idle = mapper.update(*pad({1: 1.0}))
    assert not idle.active and not idle.released and not idle.action.any()
    assert mapper.update(*pad({1: 1.0}, pressed=[4])).active
    released = mapper.update(*pad({1: 1.0}))
    assert released.released and not released.active and not released.action.any()
    assert not mapper.update(*pad({1: 1.0})).released


def test_nan_and_missing_axes_are_read_as_centred_and_reported():
    mapper = JoyMapper(JoyConfig.from_params(shipped_params()["joy"]))
    axes, buttons = pad({1: float("nan"), 0: 0.5}, pressed=[4])
    cmd = mapper.update(axes[:4], buttons)  # axis 4 (dz) missing, axis 1 (dx) NaN
    assert cmd.active and np.isfinite(cmd.action).all()
    assert cmd.action[0] == 0.0 and cmd.action[2] == 0.0 and cmd.action[1] > 0.0
    assert cmd.problems == ["axis 1 (dx) is nan", "axis 4 (dz) missing: the device reports 4 axes"]
    assert mapper.update(*pad({1: 1.0}, pressed=[4])).problems == []


def test_deadband_zeroes_small_deflections_and_keeps_full_range():
    assert apply_deadband(0.05, 0.1) == 0.0
    assert apply_deadband(-0.1, 0.1) == 0.0
    assert apply_deadband(1.0, 0.1) == pytest.approx(1.0)
    assert apply_deadband(-1.0, 0.1) == pytest.approx(-1.0)
    assert apply_deadband(0.55, 0.1) == pytest.approx(0.5)


def test_grip_button_and_action_limit():
    cfg = JoyConfig(scales=[2.0, 0.03, 0.03, 0, 0, 0, 1.0], action_limit=1.0)
    cmd = JoyMapper(cfg).update(*pad({1: 1.0}, pressed=[4, 5]))
    assert cmd.action[0] == pytest.approx(1.0)  # clipped to the action bound
    assert cmd.action[6] == pytest.approx(1.0)  # close gripper while RB held


def test_episode_buttons_fire_on_press_edge_only():
    mapper = JoyMapper(JoyConfig.from_params(shipped_params()["joy"]))
    assert mapper.update(*pad(pressed=[7])).events == ["START"]
    assert mapper.update(*pad(pressed=[7])).events == []  # still held: no repeat
    mapper.update(*pad())
    assert mapper.update(*pad(pressed=[0])).events == ["SUCCESS"]
    assert mapper.update(*pad(pressed=[0, 1, 6])).events == ["FAILURE", "ABORT"]


def test_bad_joy_config_is_refused_with_the_reason():
    with pytest.raises(DeviceConfigError, match="7 entries"):
        JoyConfig(axes=[0, 1], scales=[0.1, 0.1])
    with pytest.raises(DeviceConfigError, match="unknown joystick parameters"):
        JoyConfig.from_params({"axis": [0]})
    with pytest.raises(DeviceConfigError, match="deadman"):
        JoyConfig(deadman_button=-1)


def test_keyboard_takeover_toggle_and_key_hold():
    kb = KeyboardMapper(KeyboardConfig.from_params(shipped_params()["keyboard"]))
    assert not kb.key("w", 0.0).active  # motion without takeover does nothing
    on = kb.key(" ", 1.0)
    assert on.active and not on.released
    cmd = kb.key("w", 1.1)
    np.testing.assert_allclose(cmd.action, [0.03, 0, 0, 0, 0, 0, 0])
    assert kb.state(1.1 + 0.5).action[0] == pytest.approx(0.03)
    assert not kb.state(1.1 + 0.7).action.any() and kb.state(1.8).active  # held still, still in control
    np.testing.assert_allclose(kb.key("c", 2.0).action, [0, 0, 0, 0, 0, 0, 1.0])
    off = kb.key(" ", 2.1)
    assert off.released and not off.active
    assert kb.key("n", 3.0).events == ["START"] and kb.key("y", 3.1).events == ["SUCCESS"]


def test_bad_keyboard_entry_is_refused():
    with pytest.raises(DeviceConfigError, match="motion_keys"):
        KeyboardConfig(motion_keys=["w:dx"]).key_actions()


@pytest.mark.skipif(importlib.util.find_spec("pyspacemouse") is not None, reason="pyspacemouse is installed")
def test_spacemouse_without_its_library_says_what_to_install():
    with pytest.raises(DeviceUnavailable, match="pip install pyspacemouse"):
        SpaceMouseAdapter()


def test_episode_labeller_pairs_start_and_end_and_refuses_the_rest():
    labeller = EpisodeLabeller("sim-")
    ok, msg, _ = labeller.request("SUCCESS", "t")
    assert not ok and "no episode" in msg
    ok, _, start = labeller.request("START", "pick")
    assert ok and start.event == 0 and start.episode_id.startswith("sim-") and start.task == "pick"
    ok, msg, _ = labeller.request("START", "pick")
    assert not ok and start.episode_id in msg
    ok, _, end = labeller.request("SUCCESS", "pick")
    assert ok and end.event == 1 and end.reward == 1.0 and end.episode_id == start.episode_id
    _, _, nxt = labeller.request("START", "pick")
    assert nxt.episode_id != start.episode_id
    _, _, abort = labeller.request("ABORT", "pick")
    assert abort.event == 3 and abort.reward == 0.0
