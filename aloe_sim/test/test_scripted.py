"""Scripted pick controller and the takeover supervisor, on the state-only sim (no images)."""

import numpy as np
import pytest

from aloe_sim.env import PickCubeSim, rollout
from aloe_sim.scripted import OperatorSupervisor, ScriptedPickController


@pytest.fixture(scope="module")
def sim():
    s = PickCubeSim(cameras=(), max_steps=100)
    yield s
    s.close()


def test_scripted_controller_succeeds_on_at_least_9_of_10_seeded_episodes(sim):
    successes = 0
    for seed in range(10):
        controller = ScriptedPickController(seed=seed)
        successes += rollout(sim, lambda o: controller.act(o.task_state()), reset=True, seed=seed).success
    assert successes >= 9


def test_noise_and_bias_degrade_the_controller(sim):
    clean = ScriptedPickController()
    biased = ScriptedPickController(bias=(0.03, 0.03, 0.0), noise=0.3, seed=1)
    seeds = range(3)
    clean_steps = [rollout(sim, lambda o: clean.act(o.task_state()), reset=True, seed=s) for s in seeds]
    bad = [rollout(sim, lambda o: biased.act(o.task_state()), reset=True, seed=s) for s in seeds]
    assert sum(r.success for r in bad) < sum(r.success for r in clean_steps) or \
        sum(r.steps for r in bad) > sum(r.steps for r in clean_steps)


def run_supervised(sim, policy, seed, **kwargs):
    """Episode where the supervisor's action replaces the policy's while active (what the executor does)."""
    supervisor = OperatorSupervisor(**kwargs)
    obs, last, active_ticks = sim.reset(seed), None, []
    while not sim.done:
        active, op_action = supervisor.decide(obs.task_state(), last, obs.step)
        action = op_action if active else policy(obs)
        if active:
            active_ticks.append(obs.step)
        obs, *_ = sim.step(action)
        last = action
    return obs.success, supervisor, active_ticks


def test_supervisor_stays_out_while_the_scripted_controller_drives(sim):
    for seed in range(3):
        controller = ScriptedPickController(seed=seed)
        success, supervisor, active = run_supervised(sim, lambda o: controller.act(o.task_state()), seed)
        assert success and supervisor.takeovers == 0 and active == []


@pytest.mark.parametrize("name", ["drift_away", "random"])
def test_supervisor_takes_over_a_bad_policy_after_the_reaction_delay_and_hands_back(sim, name):
    rng = np.random.default_rng(0)
    policies = {
        "drift_away": lambda o: np.array([0.0, 0.02, 0.01, 0, 0, 0, -1.0]),
        "random": lambda o: np.r_[rng.uniform(-0.03, 0.03, 3), 0, 0, 0, rng.uniform(-1, 1)],
    }
    success, supervisor, active = run_supervised(sim, policies[name], seed=4, reaction_delay_ticks=3,
                                                 correction_ticks=10)
    assert supervisor.takeovers >= 1 and active
    assert active[0] >= 3, "takeover must wait for the reaction delay"
    assert len(active) < sim.observation.step, "operator must hand back control between corrections"
    assert success, "corrections must rescue the episode"


def test_supervisor_modes_off_and_demo(sim):
    success, supervisor, active = run_supervised(sim, lambda o: np.zeros(7), seed=0, mode="off")
    assert not success and active == []
    success, supervisor, active = run_supervised(sim, lambda o: np.zeros(7), seed=0, mode="demo")
    assert success and active == list(range(len(active))) and active[0] == 0
    with pytest.raises(ValueError, match="mode"):
        OperatorSupervisor(mode="sometimes")


def test_corrections_vary_in_quality_drawn_per_takeover_and_bad_ones_fail_more(sim):
    drift = lambda o: np.array([0.0, 0.02, 0.01, 0, 0, 0, -1.0])  # noqa: E731
    outcomes = {}
    for prob in (0.0, 1.0):
        results = [run_supervised(sim, drift, seed=s, bad_correction_prob=prob) for s in range(4)]
        outcomes[prob] = [ok for ok, _, _ in results]
        assert all(sup.bad_corrections == (sup.takeovers if prob == 1.0 else 0) for _, sup, _ in results)
    assert sum(outcomes[0.0]) == 4 and sum(outcomes[1.0]) <= 1, outcomes
    # half of the corrections, drawn per takeover from the operator's own seed: the same draws every run
    draws = [[run_supervised(sim, drift, seed=s, bad_correction_prob=0.5)[1].bad_corrections for s in range(6)]
             for _ in range(2)]
    assert draws[0] == draws[1] and 0 < sum(draws[0])
    with pytest.raises(ValueError, match="bad_correction_prob"):
        OperatorSupervisor(bad_correction_prob=1.5)
