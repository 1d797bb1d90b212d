"""ROS-free scripted operator for the pick-cube sim: a pick controller and a takeover supervisor.

``ScriptedPickController`` picks the cube from its privileged position (approach above it,
descend, close, lift) with metre-delta actions of at most ``step`` (~3 cm) per tick. Its
quality is configurable, so it can stand in for operators or old policies of different skill:
Gaussian noise scaled to the step, a reaction delay (it acts on an observation that many
ticks old) and an aiming bias.

``OperatorSupervisor`` is the supervising human of HG-DAgger-style data collection: it
watches the task state and the executed actions, takes over when the policy goes wrong
(no progress towards the cube for ``patience`` ticks, cube knocked away, gripper closed on
nothing, moving away from the cube, time running out) after a reaction delay, corrects
with the scripted controller until a sub-goal is reached or ``correction_ticks`` pass, then
hands back. Modes: ``off`` (never), ``correct`` (takeovers), ``demo`` (the whole episode).
"""

from __future__ import annotations

import collections
import dataclasses
from dataclasses import dataclass, field

import numpy as np

from aloe_sim.env import ACTION_DIM, CONTROL_PERIOD_S, TaskState

GRIP_CLOSE = 1.0  # gripper delta: +1 closes fully in one tick
GRIP_OPEN = -1.0


@dataclass
class ScriptedConfig:
    """step: max xyz move per tick (m); noise: Gaussian std as a fraction of ``step``;
    delay_ticks: act on a cube position this many ticks old; bias: (3,) aiming offset (m) added to
    the cube position; hover: approach height above the cube centre (m); lift: lift height
    (m); grasp_ticks: ticks to wait with the gripper closed before lifting; gain: fraction of
    the remaining distance moved per tick (< 1 keeps the arm from overshooting when its
    commands arrive a tick or two late, as they do through the executor); lead: ticks of the
    arm's velocity added to its position before aiming (damping, same reason); tol: position
    tolerance (m) of the approach and descent; seed: noise seed."""

    step: float = 0.03
    noise: float = 0.0
    delay_ticks: int = 0
    bias: tuple[float, float, float] = (0.0, 0.0, 0.0)
    hover: float = 0.06
    lift: float = 0.15
    grasp_ticks: int = 2
    gain: float = 0.5
    lead: float = 1.5
    tol: float = 0.01
    seed: int = 0


class ScriptedPickController:
    """Approach above the cube, descend, close, lift. ``act(state) -> (7,)`` float64 action.

    Mostly reactive (the phase follows from the state), so it can take over mid-episode:
    the only memory is how long the gripper has been closed on the cube, the lift height and
    the delay buffer of cube positions.
    """

    def __init__(self, config: ScriptedConfig | None = None, **overrides):
        self.config = dataclasses.replace(config or ScriptedConfig(), **overrides)
        if self.config.step <= 0:
            raise ValueError(f"step must be > 0 metres, got {self.config.step}")
        self._rng = np.random.default_rng(self.config.seed)
        self.reset()

    def reset(self) -> None:
        self._history: collections.deque[TaskState] = collections.deque(maxlen=max(1, self.config.delay_ticks + 1))
        self._closed_ticks = 0
        self._lift_z: float | None = None
        self._prev_tcp: np.ndarray | None = None
        self.phase = "approach"

    def act(self, state: TaskState) -> np.ndarray:
        """Action for the newest ``state`` (acting on the delayed one when delay_ticks > 0)."""
        self._history.append(state)
        # The delay applies to where the cube is believed to be (the aim); the operator's own
        # arm, gripper and whether the cube is in the hand are known now, as a human feels
        # them. (Delaying those too makes a proportional controller oscillate instead of just
        # react late.)
        # Lead compensation: aim from where the arm will be once the moves already on their
        # way have happened (velocity x lead ticks); a damping term against overshoot.
        tcp = np.asarray(state.tcp, dtype=np.float64)
        velocity = tcp - self._prev_tcp if self._prev_tcp is not None else np.zeros(3)
        self._prev_tcp = tcp
        seen = dataclasses.replace(state, tcp=tcp + self.config.lead * velocity)
        action = self._plan(seen, aim=np.asarray(self._history[0].cube, dtype=np.float64), tcp_now=tcp)
        if self.config.noise > 0:
            action[:3] += self._rng.normal(0.0, self.config.noise * self.config.step, 3)
        return np.clip(action, -1.0, 1.0)

    def _plan(self, s: TaskState, aim: np.ndarray, tcp_now: np.ndarray) -> np.ndarray:
        cfg = self.config
        cube = aim + np.asarray(cfg.bias, dtype=np.float64)
        tcp = np.asarray(s.tcp, dtype=np.float64)
        # Gripper: "open" until just above grasp height (the gripper is open anyway; an explicit
        # -1 gives a policy learning from these demonstrations a clear, noise-tolerant target
        # instead of 0, where small errors accumulate into a closed gripper), 0 at grasp height
        # (an "open" there would cancel a "close" still on its way when commands arrive a tick
        # late), "close" to grasp and while holding.
        grip = 0.0
        holding = s.gripper > 0.5 and np.linalg.norm(tcp_now - np.asarray(s.cube)) < 0.03
        xy_err = np.linalg.norm(cube[:2] - tcp[:2])
        if holding:
            self._closed_ticks += 1
            grip = GRIP_CLOSE
            if self._closed_ticks <= cfg.grasp_ticks:
                self.phase, target = "grasp", tcp.copy()
            else:
                if self._lift_z is None:
                    self._lift_z = float(tcp[2]) + cfg.lift
                self.phase, target = "lift", np.array([tcp[0], tcp[1], self._lift_z])
        else:
            self._closed_ticks, self._lift_z = 0, None
            above = np.array([cube[0], cube[1], cube[2] + cfg.hover])
            if s.gripper > 0.05:
                # Closed on nothing or lost the cube: open and go back above it.
                self.phase, target, grip = "release", above, GRIP_OPEN
            elif xy_err > (2.0 if self.phase == "descend" else 1.0) * cfg.tol:  # hysteresis against noise
                self.phase, target = "approach", above
                if tcp[2] < cube[2] + 0.5 * cfg.hover and xy_err > 2 * cfg.tol:
                    target = np.array([tcp[0], tcp[1], above[2]])  # rise before moving sideways
                    target[:2] += _clip_norm(above[:2] - tcp[:2], 0.5 * cfg.step)
            else:
                self.phase, target = "descend", cube
                target[:2] = cube[:2]
                if abs(tcp[2] - cube[2]) < cfg.tol and xy_err < 1.5 * cfg.tol:
                    grip = GRIP_CLOSE
            if self.phase in ("approach", "descend") and abs(tcp[2] - cube[2]) > 2 * cfg.tol:
                grip = GRIP_OPEN  # well above grasp height: no close can be on its way
        action = np.zeros(ACTION_DIM)
        action[:3] = _clip_norm(cfg.gain * (target - tcp), cfg.step)
        action[6] = grip
        return action


def _clip_norm(v: np.ndarray, max_norm: float) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v * (max_norm / n) if n > max_norm else v


MODES = ("off", "correct", "demo")


@dataclass
class SupervisorConfig:
    """mode: off / correct / demo; reaction_delay_ticks: ticks between noticing a problem and
    taking over; patience: ticks without ``min_progress`` (m) of progress before a takeover;
    correction_ticks: most ticks of one correction; max_handbacks: after this many
    corrections in an episode the operator keeps control to the end; knock_distance: cube displacement (m,
    while not held) that counts as knocked away; time_margin_ticks: take over when fewer
    ticks are left than the controller needs plus the reaction delay plus this margin; max_steps: episode length in
    ticks; controller: the operator's own skill; bad_correction_prob: the share of corrections made
    badly, drawn per takeover (a human's corrections vary in quality: a bad one aims ``bad_aim`` (m)
    off the cube, so its grasp misses or knocks it); seed of that draw: the controller's."""

    mode: str = "correct"
    reaction_delay_ticks: int = 2
    patience: int = 8
    min_progress: float = 0.01
    correction_ticks: int = 15
    max_handbacks: int = 2
    knock_distance: float = 0.025
    time_margin_ticks: int = 5
    max_steps: int = 100
    control_period: float = CONTROL_PERIOD_S
    controller: ScriptedConfig = field(default_factory=ScriptedConfig)
    bad_correction_prob: float = 0.0
    bad_aim: tuple[float, float, float] = (0.04, 0.0, 0.0)


class OperatorSupervisor:
    """``decide(state, last_executed_action, t) -> (active, action)`` once per control tick.

    ``active`` is the takeover flag of aloe_msgs/Intervention; ``action`` (7,) is the
    operator's command (meaningful when active). ``reason`` says why the last takeover
    happened; ``takeovers`` counts them in the episode. Call ``reset()`` at every episode
    START (a tick index that goes backwards also resets).
    """

    def __init__(self, config: SupervisorConfig | None = None, **overrides):
        self.config = dataclasses.replace(config or SupervisorConfig(), **overrides)
        if self.config.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.config.mode!r}")
        if not 0.0 <= self.config.bad_correction_prob <= 1.0:
            raise ValueError(f"bad_correction_prob must be in [0, 1], got {self.config.bad_correction_prob}")
        self.good = self.controller = ScriptedPickController(self.config.controller)
        aim = tuple(b + a for b, a in zip(self.config.controller.bias, self.config.bad_aim))
        self.bad = ScriptedPickController(dataclasses.replace(self.config.controller, bias=aim))
        self._quality_rng = np.random.default_rng(self.config.controller.seed + 7_919)
        self.correction_bad: list[bool] = []  # per takeover of the episode, in order: was it a bad one
        self.reset()

    def reset(self) -> None:
        self.controller = self.good
        self.controller.reset()
        self.correction_bad = []
        self.active = self.config.mode == "demo"
        self.reason = "demo" if self.active else ""
        self.takeovers = 0
        self._last_t = -1
        self._pending_since: int | None = None  # tick a problem was noticed
        self._active_since: int | None = 0 if self.active else None
        self._watch_from: TaskState | None = None
        self._best_progress = -np.inf
        self._best_t = 0
        self._closed_empty = 0
        self._moving_away = 0
        self._held_at_takeover = False

    @property
    def bad_corrections(self) -> int:
        """Bad corrections in the episode so far."""
        return sum(self.correction_bad)

    def decide(self, state: TaskState, last_executed_action=None, t: int | None = None) -> tuple[bool, np.ndarray]:
        t = state.tick(self.config.control_period) if t is None else int(t)
        if t < self._last_t:
            self.reset()
        self._last_t = t
        action = self.controller.act(state)
        mode = self.config.mode
        if mode == "off":
            return False, action
        if mode == "demo":
            return True, action
        if self._watch_from is None:
            self._start_watching(state, t)

        if self.active:
            if self._correction_done(state, t):
                self.active, self._active_since = False, None
                self._start_watching(state, t)
            return self.active, action

        if self._pending_since is None:
            problem = self._problem(state, last_executed_action, t)
            if problem:
                self._pending_since, self.reason = t, problem
        if self._pending_since is not None and t - self._pending_since >= self.config.reaction_delay_ticks:
            self.active, self._active_since, self._pending_since = True, t, None
            self.takeovers += 1
            self._held_at_takeover = self._holding(state)
            bad = self.config.bad_correction_prob > 0 and self._quality_rng.random() < self.config.bad_correction_prob
            self.controller = self.bad if bad else self.good
            self.correction_bad.append(bool(bad))
            self.controller.reset()
            action = self.controller.act(state)
        return self.active, action

    # -- what counts as going wrong ------------------------------------------------------------
    def _progress(self, s: TaskState) -> float:
        """Higher is better: closer to the cube, then the cube higher than at the start."""
        lift = max(0.0, float(s.cube[2] - self._watch_from.cube[2]))
        return -float(np.linalg.norm(np.asarray(s.tcp) - np.asarray(s.cube))) + 2.0 * lift

    @staticmethod
    def _holding(s: TaskState) -> bool:
        return s.gripper > 0.5 and float(np.linalg.norm(np.asarray(s.tcp) - np.asarray(s.cube))) < 0.03

    def _start_watching(self, s: TaskState, t: int) -> None:
        self._watch_from = s
        self._best_progress, self._best_t = -np.inf, t
        self._best_progress = self._progress(s)
        self._closed_empty = 0
        self._moving_away = 0

    def _ticks_needed(self, s: TaskState) -> int:
        """Rough number of ticks the scripted controller needs to finish from ``s``."""
        c = self.controller.config
        if self._holding(s):
            return c.grasp_ticks + int(np.ceil(c.lift / c.step)) + 1
        travel = c.hover + float(np.linalg.norm(np.asarray(s.tcp) - np.asarray(s.cube))) + c.hover
        # x1.3 and +4: the arm lags its target by about a tick in each phase.
        return int(np.ceil(1.3 * travel / c.step)) + c.grasp_ticks + int(np.ceil(c.lift / c.step)) + 4

    def _problem(self, s: TaskState, executed, t: int) -> str:
        cfg = self.config
        p = self._progress(s)
        if p > self._best_progress + cfg.min_progress:
            self._best_progress, self._best_t = p, t
        holding = self._holding(s)
        if not holding and s.gripper < 0.5:
            moved = float(np.linalg.norm(np.asarray(s.cube[:2]) - np.asarray(self._watch_from.cube[:2])))
            if moved > cfg.knock_distance:
                return "cube_knocked"
        dist = float(np.linalg.norm(np.asarray(s.tcp) - np.asarray(s.cube)))
        self._closed_empty = self._closed_empty + 1 if (s.gripper > 0.5 and dist > 0.03) else 0
        if self._closed_empty >= 2:
            return "gripper_closed_on_nothing"
        if executed is not None and not holding:
            a = np.asarray(executed, dtype=np.float64).reshape(-1)[:3]
            away = np.dot(a, np.asarray(s.cube) - np.asarray(s.tcp)) < 0 and np.linalg.norm(a) > 0.005
            self._moving_away = self._moving_away + 1 if away else 0
            if self._moving_away >= max(2, cfg.patience // 2):
                return "moving_away"
        if t - self._best_t >= cfg.patience:
            return "no_progress"
        if cfg.max_steps - t <= self._ticks_needed(s) + cfg.reaction_delay_ticks + cfg.time_margin_ticks \
                and not holding:
            return "time_running_out"
        return ""

    def _correction_done(self, s: TaskState, t: int) -> bool:
        if self.reason == "time_running_out" or self.takeovers > self.config.max_handbacks:
            return False  # finish the episode: no time left, or the policy keeps failing
        ran = t - self._active_since
        if ran >= self.config.correction_ticks:
            return True
        if ran < 2:
            return False
        if self._held_at_takeover or self.reason in ("gripper_closed_on_nothing",):
            # Sub-goal: cube held and lifted a few centimetres.
            return self._holding(s) and float(s.cube[2] - self._watch_from.cube[2]) > 0.03
        # Sub-goal: aligned above the cube, ready to descend.
        c = self.controller.config
        xy = float(np.linalg.norm(np.asarray(s.tcp[:2]) - np.asarray(s.cube[:2])))
        return xy < c.tol and s.tcp[2] - s.cube[2] < c.hover + c.tol and s.gripper < 0.05
