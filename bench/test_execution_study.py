"""bench/execution_study.py executes chunks as policy_node + executor do (run: ``pytest bench/test_execution_study.py``)."""

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from execution_study import parse_setting, run_episode  # noqa: E402


class TickPolicy:
    """predict_chunk from the observation of tick t -> chunk whose action k is (10 t + k) / 1000."""

    policy_id = "tick"

    def predict_chunk(self, obs, generator=None):
        t = obs["proprio"][0]
        return np.array([[(10 * t + k) / 1000.0] * 7 for k in range(10)], np.float32)


class RecordingSim:
    """Five ticks; the observation carries its tick; records the executed actions."""

    def __init__(self, steps=5):
        self.steps, self.executed = steps, []

    def _obs(self, t):
        return SimpleNamespace(step=t, images={}, proprio=lambda: np.array([t], np.float32))

    def reset(self, seed):
        self.t, self.executed = 0, []
        return self._obs(0)

    @property
    def done(self):
        return self.t >= self.steps

    def step(self, action):
        self.executed.append(round(float(action[0]) * 1000))
        self.t += 1
        return self._obs(self.t), 0.0, False, False, {"succeed": False}


@pytest.mark.parametrize("setting, expected", [
    ("1:0:newest", [0, 10, 20, 30, 40]),      # a fresh chunk every tick, its index 0
    ("2:0:newest", [0, 1, 20, 21, 40]),       # re-plan every 2 ticks: indices 0, 1
    ("1:1:newest", [0, 1, 11, 21, 31]),       # one tick late: hold at tick 0, then index 1 of the previous tick's chunk
    ("3:1:newest", [0, 1, 2, 3, 31]),         # one tick late, every 3 ticks: indices 1-3 (the old sim setting)
])
def test_chunks_are_executed_at_the_index_their_latency_leaves(setting, expected):
    sim = RecordingSim()
    replan, lag, mode = parse_setting(setting)
    assert run_episode(sim, TickPolicy(), 0, replan, lag, mode, 3, None) is False
    assert sim.executed == expected


def test_linear_blending_mixes_the_old_and_the_new_chunk():
    sim = RecordingSim()
    run_episode(sim, TickPolicy(), 0, 2, 0, "linear", 3, None)
    newest = [0, 1, 20, 21, 40]
    assert sim.executed[:2] == newest[:2] and sim.executed[2] != 20  # tick 2 fades from chunk 0 into chunk 2
    assert min(2, 20) < sim.executed[2] < max(2, 20)


def test_bad_settings_are_refused_with_the_expected_form():
    for bad in ("2-0-newest", "0:0:newest", "2:-1:linear"):
        with pytest.raises(ValueError, match="REPLAN"):
            parse_setting(bad)
