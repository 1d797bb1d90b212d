"""The frozen-encoder critic (CPU-sized runs): fixed features computed once give the same
targets and Q values as encoding every batch, and only the Q heads learn."""

import numpy as np
import torch

from aloe_critic.critic import CriticConfig, PolicySampleBank, critic_for_policy
from aloe_critic.dataset import TransitionDataset
from aloe_data.ingestion import IngestionConfig, ingest_bags
from aloe_critic.values import LambdaReturns, fit_critic, next_value, value_target


def _setup(root):
    from aloe_policy.model import FlowMatchingPolicy

    policy = FlowMatchingPolicy.from_pretrained(root / "iter0")
    report = ingest_bags([root / "bags"], IngestionConfig(cache_dir=str(root / "cache"),
                                                          image_size=policy.config.image_size))
    dataset = TransitionDataset(report.episodes, policy.config.chunk_horizon, 0.99)
    config = CriticConfig(ensemble_size=3, critic_hidden_dim=32, critic_steps=5, critic_batch_size=8,
                          num_policy_samples=2, freeze_encoder=True)
    critic = critic_for_policy(policy, config)
    bank = PolicySampleBank(policy, dataset, n=2, seed=0)
    return policy, dataset, critic, bank


def test_frozen_encoder_keeps_the_policy_features_and_trains_only_the_heads(initial_checkpoint):
    policy, dataset, critic, bank = _setup(initial_checkpoint)
    assert critic.encoder_frozen
    for a, b in zip(critic.encoder.state_dict().values(), policy.encoder.state_dict().values()):
        torch.testing.assert_close(a, b)
    encoder_before = {k: v.clone() for k, v in critic.encoder.state_dict().items()}
    heads_before = {k: v.clone() for k, v in critic.q.state_dict().items()}
    fit_critic(critic, dataset, "aloe", bank, seed=0)
    for k, v in critic.encoder.state_dict().items():
        assert torch.equal(v, encoder_before[k]), f"frozen encoder weight {k} changed"
    assert any(not torch.equal(v, heads_before[k]) for k, v in critic.q.state_dict().items())


def test_feature_table_gives_the_same_targets_and_q_as_encoding_each_batch(initial_checkpoint):
    _, dataset, critic, bank = _setup(initial_checkpoint)
    critic.eval()
    table = critic.feature_table(dataset)
    batch = dataset.batch(dataset.indices[:6])
    with torch.no_grad():
        for method in ("aloe", "td1"):
            y_batch = value_target(method, critic, batch, 0.99, bank, torch.Generator().manual_seed(3))
            y_table = value_target(method, critic, batch, 0.99, bank, torch.Generator().manual_seed(3),
                                   next_features=table[batch.next_tick])
            torch.testing.assert_close(y_table, y_batch)
        q_batch = critic.q_values(batch.obs, batch.chunks)
        q_table = critic.q_values(None, batch.chunks, features=table[batch.obs_tick])
    torch.testing.assert_close(q_table, q_batch)
    assert np.isfinite(q_table.numpy()).all()
    tables = []
    for features in (table, None):  # td_lambda's returns from the feature table and from the images alike
        lam = LambdaReturns(dataset, 0.5, batch_size=16)
        lam.refresh(lambda b, nf, g: next_value("aloe", critic, b, bank, g, nf), features,
                    torch.Generator().manual_seed(5))
        tables.append(lam.table)
    torch.testing.assert_close(tables[0], tables[1])
    assert torch.isfinite(tables[0]).all() and tables[0].abs().sum() > 0
