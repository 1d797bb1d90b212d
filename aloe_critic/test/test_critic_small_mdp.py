"""The critic evaluates the *current* policy from other behaviours' data (small exact MDP).

Chain of 6 states: 0 = failure (terminal, r=0), 5 = goal (terminal, r=1 on entering), start
uniform in 1..4, primitive actions -1 / +1, chunks of H=2, gamma=0.9. Data: per-tick mixture of
three biased random walks (p(right) 0.2 / 0.5 / 0.8, equally likely: a stationary behaviour
with p = 0.5). The current policy pi picks chunks with state-independent probabilities that
favour right-right. Q^pi (chunk level) and Q^beta are computed exactly by dynamic programming.
"""

import itertools

import numpy as np
import pytest
import torch
import torch.nn as nn

from aloe_critic.critic import ChunkCritic, CriticConfig, PolicySampleBank
from aloe_critic.dataset import TransitionDataset
from aloe_data.ingestion import Episode
from aloe_critic.values import fit_critic

N_STATES, GOAL, FAIL, H, GAMMA = 6, 5, 0, 2, 0.9
CHUNKS = np.array(list(itertools.product([-1.0, 1.0], repeat=H)), np.float32)  # (4, H): LL, LR, RL, RR
PI = np.array([0.05, 0.1, 0.15, 0.7])                                           # pi over CHUNKS
# A chunk whose first action ends the episode is recorded padded (repeat of that action), so
# (1, LR) and (4, RL) never occur in data; pi avoids them (their value is the padded chunk's).
UNSEEN = {(1, 1), (4, 2)}


def pi_probs(s):
    p = PI.copy()
    for (us, c) in UNSEEN:
        if s == us:
            p[c] = 0.0
    return p / p.sum()
BEHAVIOUR_P_RIGHT = (0.2, 0.5, 0.8)


def step(s, a):
    s2 = int(s + a)
    return s2, float(s2 == GOAL), s2 in (GOAL, FAIL)


def exact_q_pi(iters=500):
    """Chunk-level Q^pi(s, A) for s in 1..4 by value iteration."""
    V = np.zeros(N_STATES)
    for _ in range(iters):
        Q = chunk_q(lambda s: V[s])
        V[1:GOAL] = [Q[s] @ pi_probs(s) for s in range(1, GOAL)]
    return chunk_q(lambda s: V[s])


def exact_q_behaviour(p=0.5, iters=500):
    """Q^beta(s, A): the chunk, then the stationary per-tick behaviour."""
    V = np.zeros(N_STATES)
    for _ in range(iters):
        new = V.copy()
        for s in range(1, GOAL):
            new[s] = sum(pa * (r + GAMMA * (0 if d else V[s2])) for a, pa in ((1, p), (-1, 1 - p))
                         for s2, r, d in [step(s, a)])
        V = new
    return chunk_q(lambda s: V[s])


def chunk_q(value):
    Q = np.zeros((N_STATES, len(CHUNKS)))
    for s in range(1, GOAL):
        for c, chunk in enumerate(CHUNKS):
            x, ret, disc = s, 0.0, 1.0
            for a in chunk:
                x, r, d = step(x, a)
                ret += disc * r
                disc *= GAMMA
                if d:
                    break
            else:
                ret += disc * value(x)
            Q[s, c] = ret
    return Q


def seen(q):
    """Entries of a (4, 4) table for states 1..4 that the data can support."""
    mask = np.ones((GOAL - 1, len(CHUNKS)), bool)
    for s, c in UNSEEN:
        mask[s - 1, c] = False
    return q[mask]


def one_hot(s):
    v = np.zeros(N_STATES, np.float32)
    v[s] = 1
    return v


def behaviour_episodes(n, rng):
    episodes = []
    for _ in range(n):
        s, obs, acts, rews = int(rng.integers(1, GOAL)), [], [], []
        while True:
            p = BEHAVIOUR_P_RIGHT[rng.integers(len(BEHAVIOUR_P_RIGHT))]
            a = 1.0 if rng.random() < p else -1.0
            obs.append(one_hot(s))
            acts.append([a])
            s, r, d = step(s, a)
            rews.append(r)
            if d:
                break
        episodes.append(Episode.from_arrays(acts, obs, rews, outcome="SUCCESS" if s == GOAL else "FAILURE"))
    return episodes


class OneHotFeatures(nn.Module):
    def forward(self, obs):
        return obs["proprio"]


class ChainPolicy:
    """pi(A|s) = pi_probs(s) over the four chunks -> (B, n, H, 1)."""

    def sample(self, obs, n=1, generator=None):
        B = obs["proprio"].shape[0]
        states = obs["proprio"].argmax(1).numpy()
        probs = torch.tensor(np.stack([pi_probs(s) for s in states]), dtype=torch.float32)
        idx = torch.multinomial(probs.repeat_interleave(n, 0), 1, generator=generator)
        return torch.from_numpy(CHUNKS)[idx.squeeze(1)].reshape(B, n, H, 1)


def fitted_q(method, dataset, bank, steps=600, **head):
    torch.manual_seed(0)
    config = CriticConfig(ensemble_size=5, critic_hidden_dim=64, critic_layers=2, critic_lr=1e-3,
                          critic_steps=steps, critic_batch_size=256, tau=0.05,
                          num_policy_samples=bank.n if bank is not None else 16, **head)
    critic = ChunkCritic(OneHotFeatures(), N_STATES, H, 1, config)
    fit_critic(critic, dataset, method, bank=bank, seed=0)
    states = np.repeat(np.arange(1, GOAL), len(CHUNKS))
    obs = {"images": {}, "proprio": torch.from_numpy(np.stack([one_hot(s) for s in states])), "task": [""] * len(states)}
    chunks = torch.from_numpy(np.tile(CHUNKS, (GOAL - 1, 1))).reshape(-1, H, 1)
    with torch.no_grad():
        q = critic.aggregate(critic.q_values(obs, chunks)).numpy()
    return q.reshape(GOAL - 1, len(CHUNKS))


@pytest.fixture(scope="module")
def chain_data():
    rng = np.random.default_rng(0)
    dataset = TransitionDataset(behaviour_episodes(800, rng), chunk_horizon=H, gamma=GAMMA)
    bank = PolicySampleBank(ChainPolicy(), dataset, n=16, seed=0)
    return dataset, bank


def test_exact_values_differ_between_policy_and_behaviour():
    q_pi, q_beta = exact_q_pi()[1:GOAL], exact_q_behaviour()[1:GOAL]
    assert np.abs(q_pi - q_beta).max() > 0.2  # otherwise the test below could not tell them apart


@pytest.mark.parametrize("head", [{}, {"critic_norm": "layer"}, {"value_loss": "hl_gauss"}],
                         ids=["mse", "layer_norm", "hl_gauss"])
def test_aloe_critic_converges_to_current_policy_q_not_behaviour(chain_data, head):
    dataset, bank = chain_data
    q_pi, q_beta = exact_q_pi()[1:GOAL], exact_q_behaviour()[1:GOAL]
    q_aloe = fitted_q("aloe", dataset, bank, **head)
    assert np.abs(seen(q_aloe - q_pi)).max() < 0.06, (q_aloe, q_pi)
    assert np.abs(seen(q_aloe - q_beta)).max() > 0.15


def test_progress_baseline_converges_to_behaviour_value_not_policy(chain_data):
    dataset, bank = chain_data
    q_pi, q_beta = exact_q_pi()[1:GOAL], exact_q_behaviour()[1:GOAL]
    q_prog = fitted_q("progress", dataset, None)
    assert np.abs(seen(q_prog - q_beta)).max() < 0.06, (q_prog, q_beta)
    assert np.abs(seen(q_prog - q_pi)).max() > 0.15


def test_td1_baseline_converges_to_behaviour_value(chain_data):
    dataset, bank = chain_data
    q_pi, q_beta = exact_q_pi()[1:GOAL], exact_q_behaviour()[1:GOAL]
    q_td1 = fitted_q("td1", dataset, None)
    assert np.abs(seen(q_td1 - q_beta)).max() < 0.06, (q_td1, q_beta)
    assert np.abs(seen(q_td1 - q_pi)).max() > 0.15


def test_sarsa_lambda_still_learns_the_behaviours_value(chain_data):
    """td1's lambda-returns follow the behaviour on both sides: still Q^beta."""
    dataset, _ = chain_data
    q = fitted_q("td1", dataset, None, td_lambda=0.5, lambda_refresh=10)
    assert np.abs(seen(q - exact_q_behaviour()[1:GOAL])).max() < 0.06


def test_aloe_lambda_returns_lean_towards_the_behaviour_as_documented(chain_data):
    """Uncorrected (Peng's Q(lambda)): the recorded continuation stands in for pi's with weight lambda, so with a
    large lambda ALOE's Q leaves Q^pi (which lambda = 0 recovers, above) for Q^beta: the price of the shorter
    bootstrap chain, here where behaviour and pi differ everywhere."""
    dataset, bank = chain_data
    q = fitted_q("aloe", dataset, bank, td_lambda=0.8, lambda_refresh=10)
    off_pi = np.abs(seen(q - exact_q_pi()[1:GOAL])).mean()
    off_beta = np.abs(seen(q - exact_q_behaviour()[1:GOAL])).mean()
    assert off_pi > 0.1 and off_beta < off_pi, (off_pi, off_beta)
