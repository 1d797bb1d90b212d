"""Tests of the evidence benchmarks' helpers (run: ``pytest bench/test_sim_study.py``)."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from aloe_bringup.report import wilson_interval  # noqa: E402
from sim_study import PROPRIO_DIM, make_sim, policy_returns  # noqa: E402


def test_wilson_interval_contains_the_proportion_and_stays_in_0_1():
    lo, hi = wilson_interval(3, 10)
    assert 0.0 < lo < 0.3 < hi < 1.0
    assert wilson_interval(0, 10)[0] == 0.0
    assert wilson_interval(10, 10)[1] == 1.0
    assert wilson_interval(50, 100)[1] - wilson_interval(50, 100)[0] < wilson_interval(5, 10)[1] - wilson_interval(5, 10)[0]


@pytest.fixture(scope="module")
def sim():
    return make_sim(max_steps=40, seed=3, snapshot_prob=1.0)


def test_privileged_proprio_carries_cube_and_episode_time(sim):
    from aloe_sim.scripted import ScriptedPickController

    obs = sim.reset(7)
    ctl = ScriptedPickController()
    for _ in range(3):
        obs, *_ = sim.step(ctl.act(obs.task_state()))
    p = obs.proprio()
    assert p.shape == (PROPRIO_DIM,)
    np.testing.assert_allclose(p[18:21], obs.cube, rtol=1e-6)
    assert p[21] == pytest.approx(3 / 40)
    assert set(obs.images) == {"blank"}


def test_replaying_the_recorded_actions_from_a_snapshot_gives_the_recorded_return(sim):
    """Ground truth relies on it: a recorded chunk executed from its saved state reproduces the episode."""
    from aloe_sim.env import rollout
    from aloe_sim.scripted import ScriptedPickController

    sim.snapshots.clear()
    sim.reset(11)
    ctl = ScriptedPickController(noise=0.2, seed=1)
    result = rollout(sim, lambda o: ctl.act(o.task_state()))
    assert result.success
    ep, tick, state = sim.snapshots[5]
    assert tick == 5
    gamma = 0.97
    expected = float(np.sum(result.rewards[5:] * gamma ** np.arange(len(result.rewards) - 5)))
    got = policy_returns(sim, state, None, n=3, gamma=gamma, replan_every=10, seed=0, prefix=result.actions[5:])
    np.testing.assert_array_equal(got, np.full(3, expected))
