"""Chunked TD target and conservative aggregation, checked against hand computations."""

import itertools

import numpy as np
import pytest
import torch
import torch.nn as nn

from aloe_critic.critic import ChunkCritic, CriticConfig, conservative_aggregate
from aloe_critic.dataset import TransitionDataset
from aloe_data.ingestion import Episode
from aloe_critic.values import aloe_target, chunked_td_target, td1_target


class ProprioFeatures(nn.Module):
    def forward(self, obs):
        return obs["proprio"]


def constant_critic(member_values, rule="subset_min", subset_size=2, kappa=1.0):
    """A critic whose target heads output member_values[k] for every input."""
    K = len(member_values)
    config = CriticConfig(ensemble_size=K, critic_hidden_dim=4, critic_layers=1, aggregate=rule, prior_scale=0.0,
                          subset_size=subset_size, kappa=kappa)
    critic = ChunkCritic(ProprioFeatures(), 1, 3, 1, config)
    with torch.no_grad():
        critic.target_q.out.weight.zero_()
        critic.target_q.out.bias.copy_(torch.tensor(member_values, dtype=torch.float32).view(K, 1, 1))
    return critic


@pytest.fixture
def tiny_dataset():
    # T = 4 ticks, H = 3, gamma = 0.5, rewards 0, 0.5, 0, 1 and a SUCCESS (terminal) end.
    ep = Episode.from_arrays(actions=[[1.0], [2.0], [3.0], [4.0]], proprio=[[0.0]] * 4,
                             rewards=[0.0, 0.5, 0.0, 1.0], outcome="SUCCESS")
    return TransitionDataset([ep], chunk_horizon=3, gamma=0.5)


def test_chunk_return_done_and_padding_match_hand_computation(tiny_dataset):
    d = tiny_dataset
    # R_t^H = sum_{i<3} 0.5^i r_{t+i}
    np.testing.assert_allclose(d.returns, [0 + 0.5 * 0.5 + 0.25 * 0, 0.5 + 0.5 * 0 + 0.25 * 1, 0 + 0.5 * 1, 1.0])
    np.testing.assert_array_equal(d.done, [0, 1, 1, 1])         # t + H >= T of a terminal episode
    np.testing.assert_array_equal(d.next_tick, [3, 3, 3, 3])
    np.testing.assert_array_equal(d.chunks[2, :, 0], [3, 4, 4])  # padded by repeating the last action
    np.testing.assert_allclose(d.mc_returns, [0.5 * 0.5 + 0.125, 0.5 + 0.25, 0.5, 1.0])


def test_aloe_target_equals_hand_computation(tiny_dataset):
    d = tiny_dataset
    batch = d.batch([0, 1])
    # members 1, 2, 6: expected min over a random pair = (1 + 1 + 2) / 3
    critic = constant_critic([1.0, 2.0, 6.0], "subset_min", 2)
    pol = torch.zeros(2, 4, 3, 1)
    y = aloe_target(critic, batch, pol, gamma=0.5)
    agg = 4.0 / 3.0
    np.testing.assert_allclose(y.numpy(), [0.25 + 0.5 ** 3 * agg, 0.75], rtol=1e-6)
    # mean - kappa * std with population std
    critic = constant_critic([1.0, 2.0, 6.0], "mean_std", kappa=0.5)
    y = aloe_target(critic, batch, pol, gamma=0.5)
    agg = 3.0 - 0.5 * np.sqrt(((1 - 3) ** 2 + (2 - 3) ** 2 + (6 - 3) ** 2) / 3)
    np.testing.assert_allclose(y.numpy(), [0.25 + 0.125 * agg, 0.75], rtol=1e-6)
    # td1 bootstraps the same way from the recorded next chunk
    y = td1_target(constant_critic([1.0, 2.0, 6.0]), batch, gamma=0.5)
    np.testing.assert_allclose(y.numpy(), [0.25 + 0.125 * 4 / 3, 0.75], rtol=1e-6)


def test_chunked_td_target_masks_bootstrap_when_done():
    y = chunked_td_target(torch.tensor([1.0, 1.0]), torch.tensor([0.0, 1.0]), torch.tensor([10.0, 10.0]), 0.9, 2)
    np.testing.assert_allclose(y.numpy(), [1 + 0.81 * 10, 1.0], rtol=1e-6)


@pytest.mark.parametrize("rule,kw", [("subset_min", {"subset_size": 2}), ("subset_min", {"subset_size": 4}),
                                     ("mean_std", {"kappa": 1.0}), ("mean_std", {"kappa": 0.1})])
def test_conservative_aggregate_never_exceeds_mean(rule, kw):
    g = torch.Generator().manual_seed(0)
    values = torch.randn(10, 256, generator=g) * 3 + 1
    agg = conservative_aggregate(values, rule, **kw)
    assert agg.shape == (256,)
    assert torch.all(agg <= values.mean(0) + 1e-6)
    if rule == "subset_min":  # never below the ensemble min; a drawn subset too
        assert torch.all(agg >= values.min(0).values - 1e-6)
        drawn = conservative_aggregate(values, rule, generator=g, **kw)
        assert torch.all(drawn <= values.max(0).values) and torch.all(drawn >= values.min(0).values)


def test_expected_subset_min_equals_average_over_all_subsets():
    values = torch.tensor([[3.0], [1.0], [7.0], [2.0], [5.0]])
    for m in range(1, 6):
        brute = np.mean([min(values[list(s), 0].tolist()) for s in itertools.combinations(range(5), m)])
        assert float(conservative_aggregate(values, "subset_min", subset_size=m)[0]) == pytest.approx(brute)
    assert float(conservative_aggregate(values, "mean_std", kappa=0.0)[0]) == pytest.approx(3.6)


def test_target_networks_stay_in_eval_mode_and_follow_polyak():
    encoder = nn.Sequential(nn.Linear(1, 4), nn.Dropout(0.5))
    critic = ChunkCritic(encoder, 4, 3, 1, CriticConfig(ensemble_size=2, critic_hidden_dim=4, critic_layers=1))
    critic.train()
    assert critic.encoder.training and not critic.target_encoder.training and not critic.target_q.training
    with torch.no_grad():
        for p in critic.q.parameters():
            p.fill_(1.0)
        for p in critic.target_q.parameters():
            p.fill_(0.0)
    critic.polyak_update(0.25)
    assert all(torch.allclose(p, torch.full_like(p, 0.25)) for p in critic.target_q.parameters())


def test_critic_standardises_actions_and_saves_the_statistics(tmp_path):
    from aloe_critic.critic import ActionScaler, load_critic_state, save_critic

    def make():
        c = ChunkCritic(ProprioFeatures(), 1, 2, 2, CriticConfig(ensemble_size=2, critic_hidden_dim=4, critic_layers=1))
        c.action_scaler = ActionScaler(2, mean=[0.0, 1.0], std=[0.01, 2.0])
        return c

    critic = make()
    raw = torch.tensor([[[0.01, 3.0], [0.0, 1.0]]])
    np.testing.assert_allclose(critic.action_scaler(raw).numpy(), [[[1.0, 1.0], [0.0, 0.0]]])
    assert float(critic.action_scaler(torch.tensor([[[5.0, 1.0]]])).max()) == 10.0   # clipped
    save_critic(critic, tmp_path)
    other = ChunkCritic(ProprioFeatures(), 1, 2, 2, CriticConfig(ensemble_size=2, critic_hidden_dim=4, critic_layers=1))
    load_critic_state(other, tmp_path)
    torch.testing.assert_close(other.action_scaler.std, torch.tensor([0.01, 2.0]))
