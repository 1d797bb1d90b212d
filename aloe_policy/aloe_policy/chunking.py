"""ROS-free action-chunk execution core: validation, time alignment, blending, limits.

The executor node is wiring around this module. Times are integer nanoseconds on the
executor's clock (system or sim time), so alignment is exact in lock-step simulation.

Alignment: action k of a chunk is meant for ``observation_stamp + k * control_period``;
at tick time t the executor uses ``k = round((t - observation_stamp) / control_period)``,
the action whose target time is nearest to now. The first actions of a chunk whose time
has passed while the policy was inferring are therefore skipped, never replayed late
(real-time chunking's inference-delay compensation on the execution side).

Blending of overlapping chunks (``BlendMode``):
- ``newest``: the newest chunk that covers now wins.
- ``linear``: cross-fade from the previous chunk to the newest over ``blend_steps`` ticks:
  on the n-th tick (n = 0, 1, ...) that the newest chunk is used,
  ``w = min(1, (n + 1) / (blend_steps + 1))`` and ``a = (1 - w) * a_prev + w * a_new``,
  where ``a_prev`` is the previous chunk's own action for now (w = 1 when it does not cover now).
- ``temporal_ensemble``: ACT's temporal ensembling: every retained chunk that covers now
  contributes, oldest first with weight ``exp(-ensemble_decay * i)`` (i = 0 is the oldest),
  normalised; ``ensemble_decay > 0`` favours older predictions as in ACT (Zhao et al. 2023).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

NS_PER_S = 1_000_000_000


class BlendMode(str, Enum):
    NEWEST = "newest"
    LINEAR = "linear"
    TEMPORAL_ENSEMBLE = "temporal_ensemble"

    @classmethod
    def parse(cls, text: str) -> "BlendMode":
        try:
            return cls(text)
        except ValueError:
            raise ValueError(f"unknown blending mode {text!r}; use one of {[m.value for m in cls]}") from None


@dataclass
class Chunk:
    """One validated policy chunk. ``actions``: (H, D) float64, units of the action space."""

    chunk_id: int
    policy_id: str
    observation_stamp_ns: int
    control_period_ns: int
    actions: np.ndarray

    @property
    def horizon(self) -> int:
        return int(self.actions.shape[0])

    def index_at(self, t_ns: int) -> int:
        """Index k of the action meant for time ``t_ns`` (nearest target time; may be <0 or >=H)."""
        return int(math.floor((t_ns - self.observation_stamp_ns) / self.control_period_ns + 0.5))


@dataclass
class ChunkSpec:
    """What the executor accepts. ``horizon`` 0 accepts any horizon; empty ``action_names``
    skip the name check; ``allowed_policy_ids`` empty accepts any non-empty id."""

    action_dim: int
    horizon: int = 0
    action_names: tuple[str, ...] = ()
    allowed_policy_ids: frozenset[str] = frozenset()
    blocked_policy_ids: frozenset[str] = frozenset()


def chunk_problems(spec: ChunkSpec, *, policy_id: str, control_period_ns: int, horizon: int, action_dim: int,
                   action_names, actions) -> list[str]:
    """Every reason this chunk must not be executed ([] when it is good).

    ``actions`` is the flat row-major float array of the message (H * D values).
    """
    problems = []
    if not policy_id:
        problems.append("empty policy_id (unknown policy)")
    elif policy_id in spec.blocked_policy_ids:
        problems.append(f"policy_id {policy_id} is blocked (parameter blocked_policy_ids)")
    elif spec.allowed_policy_ids and policy_id not in spec.allowed_policy_ids:
        problems.append(f"policy_id {policy_id} is unknown (not in parameter allowed_policy_ids)")
    if action_dim != spec.action_dim:
        problems.append(f"action_dim {action_dim} != executor action_dim {spec.action_dim}")
    if horizon <= 0:
        problems.append(f"horizon {horizon} (must be > 0)")
    elif spec.horizon and horizon != spec.horizon:
        problems.append(f"horizon {horizon} != expected chunk_horizon {spec.horizon}")
    n = len(actions)
    if n != horizon * action_dim:
        problems.append(f"wrong size: {n} action values for horizon {horizon} x action_dim {action_dim} "
                        f"= {horizon * action_dim}")
    if control_period_ns <= 0:
        problems.append(f"control_period {control_period_ns * 1e-9:g} s (must be > 0)")
    names = tuple(action_names)
    if names and spec.action_names and names != tuple(spec.action_names):
        problems.append(f"action_names {list(names)} != executor action_names {list(spec.action_names)}")
    values = np.asarray(actions, dtype=np.float64)
    bad = int(np.count_nonzero(~np.isfinite(values)))
    if bad:
        problems.append(f"{bad} NaN/inf action values")
    return problems


def make_chunk(spec: ChunkSpec, *, chunk_id: int, policy_id: str, observation_stamp_ns: int,
               control_period_ns: int, horizon: int, action_dim: int, action_names=(), actions=()
               ) -> tuple[Chunk | None, list[str]]:
    """Validate message fields and build a ``Chunk``; (None, reasons) when it must be rejected."""
    problems = chunk_problems(spec, policy_id=policy_id, control_period_ns=control_period_ns, horizon=horizon,
                              action_dim=action_dim, action_names=action_names, actions=actions)
    if problems:
        return None, problems
    values = np.asarray(actions, dtype=np.float64).reshape(horizon, action_dim).copy()
    return Chunk(int(chunk_id), policy_id, int(observation_stamp_ns), int(control_period_ns), values), []


@dataclass
class BlendedAction:
    """The action for one tick: (D,) float64 and the newest chunk it came from."""

    action: np.ndarray
    chunk_id: int
    index_in_chunk: int
    policy_id: str


class ChunkBlender:
    """Holds recent valid chunks and answers "which action now?" once per control tick."""

    def __init__(self, mode: BlendMode = BlendMode.NEWEST, blend_steps: int = 3, ensemble_decay: float = 0.01,
                 max_chunks: int = 8):
        if blend_steps < 0:
            raise ValueError(f"blend_steps must be >= 0, got {blend_steps}")
        self.mode = BlendMode(mode)
        self.blend_steps = int(blend_steps)
        self.ensemble_decay = float(ensemble_decay)
        self.max_chunks = max(2, int(max_chunks))
        self.chunks: list[Chunk] = []  # oldest first, by observation stamp
        self._fade_chunk: Chunk | None = None  # chunk the cross-fade currently fades into
        self._fade_ticks = 0

    @property
    def newest(self) -> Chunk | None:
        return self.chunks[-1] if self.chunks else None

    def add(self, chunk: Chunk) -> bool:
        """Keep ``chunk``; False (ignored) when it is not newer than the newest one held."""
        if self.chunks:
            last = self.chunks[-1]
            if chunk.observation_stamp_ns < last.observation_stamp_ns or \
                    (chunk.chunk_id, chunk.policy_id) == (last.chunk_id, last.policy_id):
                return False
        self.chunks.append(chunk)
        del self.chunks[:-self.max_chunks]
        return True

    def clear(self) -> None:
        self.chunks.clear()
        self._fade_chunk = None

    def stale_reason(self, t_ns: int, chunk_timeout_ns: int) -> str:
        """Why no held chunk can give an action for ``t_ns`` ('' when one can)."""
        chunk = self.newest
        if chunk is None:
            return "no chunk received"
        age = t_ns - chunk.observation_stamp_ns
        if chunk_timeout_ns > 0 and age > chunk_timeout_ns:
            return (f"newest chunk {chunk.chunk_id} is {age * 1e-9:.3f} s old "
                    f"(> chunk_timeout_s {chunk_timeout_ns * 1e-9:g})")
        if self._covering(t_ns):
            return ""
        k = chunk.index_at(t_ns)
        if k >= chunk.horizon:
            return f"newest chunk {chunk.chunk_id} exhausted (index {k} >= horizon {chunk.horizon})"
        return (f"newest chunk {chunk.chunk_id} starts {-age * 1e-9:.3f} s in the future "
                "(observation stamp ahead of this clock: clock skew?)")

    def _covering(self, t_ns: int) -> list[tuple[Chunk, int]]:
        out = []
        for chunk in self.chunks:
            k = chunk.index_at(t_ns)
            if 0 <= k < chunk.horizon:
                out.append((chunk, k))
        return out

    def action_at(self, t_ns: int) -> BlendedAction | None:
        """The blended action for tick time ``t_ns``; None when no chunk covers it.

        Call once per control tick (the linear cross-fade counts ticks).
        """
        covering = self._covering(t_ns)
        if not covering:
            return None
        chunk, k = covering[-1]
        action = chunk.actions[k]
        if self.mode is BlendMode.LINEAR:
            if self._fade_chunk is not chunk:
                self._fade_chunk, self._fade_ticks = chunk, 0
            w = min(1.0, (self._fade_ticks + 1) / (self.blend_steps + 1))
            self._fade_ticks += 1
            if w < 1.0 and len(covering) > 1:
                prev, kp = covering[-2]
                action = (1.0 - w) * prev.actions[kp] + w * action
        elif self.mode is BlendMode.TEMPORAL_ENSEMBLE and len(covering) > 1:
            weights = np.exp(-self.ensemble_decay * np.arange(len(covering)))
            stacked = np.stack([c.actions[i] for c, i in covering])
            action = (weights[:, None] * stacked).sum(axis=0) / weights.sum()
        return BlendedAction(np.array(action, dtype=np.float64), chunk.chunk_id, k, chunk.policy_id)


@dataclass
class ActionLimits:
    """Per-dimension bounds and rate limits applied to every commanded action.

    ``lower``/``upper``: (D,) bounds in action units (None: unbounded).
    ``max_rate``: (D,) max change per second in action units/s (<= 0 or inf: unlimited);
    the per-tick limit is ``max_rate * dt``.
    """

    lower: np.ndarray | None = None
    upper: np.ndarray | None = None
    max_rate: np.ndarray | None = None
    limited_dims: list[int] = field(default_factory=list)  # dims changed by the last apply()

    def apply(self, action: np.ndarray, previous: np.ndarray | None, dt_s: float) -> np.ndarray:
        out = np.asarray(action, dtype=np.float64).copy()
        if self.max_rate is not None and previous is not None and dt_s > 0:
            step = np.where(self.max_rate > 0, self.max_rate * dt_s, np.inf)
            out = np.clip(out, previous - step, previous + step)
        out = self.clip(out)
        self.limited_dims = [int(i) for i in np.flatnonzero(out != np.asarray(action, dtype=np.float64))]
        return out

    def clip(self, action: np.ndarray) -> np.ndarray:
        out = np.asarray(action, dtype=np.float64)
        if self.lower is not None:
            out = np.maximum(out, self.lower)
        if self.upper is not None:
            out = np.minimum(out, self.upper)
        return out


def limits_from_lists(action_dim: int, lower, upper, max_rate) -> ActionLimits:
    """Build limits from parameter lists (each empty or of length ``action_dim``)."""
    def vec(name, values):
        values = list(values or [])
        if not values:
            return None
        if len(values) != action_dim:
            raise ValueError(f"{name} has {len(values)} entries, expected action_dim={action_dim} (or empty)")
        return np.asarray(values, dtype=np.float64)

    lo, hi, rate = vec("action_lower", lower), vec("action_upper", upper), vec("max_rate", max_rate)
    if lo is not None and hi is not None and np.any(lo > hi):
        raise ValueError(f"action_lower {lo.tolist()} exceeds action_upper {hi.tolist()}")
    return ActionLimits(lo, hi, rate)


def actions_left(now_ns: int, observation_stamp_ns: int, control_period_ns: int, horizon: int) -> int:
    """Actions of a chunk not yet due at ``now_ns`` (H minus the index the executor uses now)."""
    used = int(math.floor((now_ns - observation_stamp_ns) / control_period_ns + 0.5))
    return horizon - used


def inference_due(actions_remaining: int, execution_horizon: int, inference_delay_s: float,
                  control_period_ns: int) -> bool:
    """Start the next inference now? (real-time-chunking style trigger of policy_node)

    True when fewer than ``execution_horizon`` actions would be left once an inference that
    takes ``inference_delay_s`` has finished, so the next chunk lands before this one runs out.
    ``execution_horizon`` 1 with delay 0 is synchronous inference: infer once the chunk is used up.
    """
    delay_ticks = math.ceil(max(0.0, inference_delay_s) * NS_PER_S / control_period_ns)
    return actions_remaining < execution_horizon + delay_ticks


def action_problems(action, action_dim: int) -> list[str]:
    """Reasons an operator action (Intervention.action) must not be sent ([] when good)."""
    values = np.asarray(action, dtype=np.float64)
    problems = []
    if values.size != action_dim:
        problems.append(f"wrong size: {values.size} values, expected action_dim {action_dim}")
    bad = int(np.count_nonzero(~np.isfinite(values)))
    if bad:
        problems.append(f"{bad} NaN/inf values")
    return problems
