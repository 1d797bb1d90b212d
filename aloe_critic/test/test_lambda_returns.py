"""Chunk-level lambda-returns (``td_lambda``): the table against a hand computation, chains cut by a view, and
what they converge to on the small exact MDP is in test_critic_small_mdp."""

import numpy as np
import pytest
import torch

from aloe_critic.critic import CriticConfig
from aloe_critic.dataset import TransitionDataset
from aloe_critic.values import LambdaReturns
from aloe_data.ingestion import Episode

GAMMA, H, LAM = 0.5, 3, 0.25


@pytest.fixture
def seven_ticks():
    # T = 7, H = 3: chains 0 -> 3 -> 6, 1 -> 4, 2 -> 5 (3 -> 6 within 0's); the episode is truncated (not
    # terminal), so the last chunks bootstrap too. Rewards 0 everywhere but 1 at tick 5.
    ep = Episode.from_arrays(actions=[[float(a)] for a in range(7)], proprio=[[0.0]] * 7,
                             rewards=[0, 0, 0, 0, 0, 1.0, 0], outcome="TIMEOUT")
    return TransitionDataset([ep], chunk_horizon=H, gamma=GAMMA)


def table(dataset, v):
    lam = LambdaReturns(dataset, LAM)
    lam.refresh(lambda batch, features, generator: torch.as_tensor(v, dtype=torch.float32)[batch.index], None,
                torch.Generator())
    return lam.table.numpy()


def test_the_table_is_the_lambda_return_by_hand(seven_ticks):
    d = seven_ticks
    assert not d.done.any()                                         # truncated: every chunk bootstraps
    v = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7])                # V(o_{t+H}) per row, as the critic gives it
    R, g = d.returns, GAMMA ** H
    y = np.zeros(7)
    for t in (6, 5, 4):                                             # t + H >= T: the one-chunk target
        y[t] = R[t] + g * v[t]
    for t in (3, 2, 1, 0):                                          # the chunk at t + H exists: lambda-mix
        y[t] = R[t] + g * ((1 - LAM) * v[t] + LAM * y[t + H])
    np.testing.assert_allclose(table(d, v), y, rtol=1e-6)
    one_chunk = R + g * v
    assert not np.allclose(y[:4], one_chunk[:4]) and np.allclose(y[4:], one_chunk[4:])


def test_a_view_without_the_successor_ends_the_chain_there(seven_ticks):
    d = seven_ticks.filter(mask=np.arange(7) != 3)                  # row 3 left out: 0's chain stops at 0
    v = np.linspace(0.1, 0.7, 7)
    y = table(d, v)
    R, g = d.returns, GAMMA ** H
    assert y[0] == pytest.approx(R[0] + g * v[0])
    assert y[1] == pytest.approx(R[1] + g * ((1 - LAM) * v[1] + LAM * (R[4] + g * v[4])))


def test_config_refuses_lambda_outside_0_1_and_a_zero_refresh():
    for bad in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match="td_lambda"):
            CriticConfig(td_lambda=bad)
    with pytest.raises(ValueError, match="lambda_refresh"):
        CriticConfig(td_lambda=0.5, lambda_refresh=0)
    with pytest.raises(ValueError, match="td_lambda"):
        LambdaReturns(None, 0.0)
