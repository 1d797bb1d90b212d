"""The ensemble's independence (bootstrap masks, random priors), V's standard error, critic-ranked
extraction, and loading critics saved before these existed (issue 14)."""

import numpy as np
import pytest
import torch
import torch.nn as nn

from aloe_critic.critic import ChunkCritic, CriticConfig, gradient_similarity, load_critic_state, save_critic
from aloe_critic.dataset import TransitionDataset
from aloe_data.ingestion import Episode
from aloe_critic.values import bootstrap_masks, chunk_values, fit_critic


class ProprioFeatures(nn.Module):
    def forward(self, obs):
        return obs["proprio"]


def one_hot_dataset(n=60, seed=0):
    """n one-tick episodes, each its own one-hot state, with a random terminal reward in [0, 1]
    (progress targets that no other transition predicts)."""
    rng = np.random.default_rng(seed)
    eps = [Episode.from_arrays([[0.0]], [np.eye(n, dtype=np.float32)[i]], [float(rng.random())], outcome="SUCCESS")
           for i in range(n)]
    return TransitionDataset(eps, chunk_horizon=1, gamma=0.9)


def test_bootstrap_masks_are_per_member_fixed_by_the_seed_and_of_the_asked_share():
    m = bootstrap_masks(10_000, 5, 0.8, seed=3)
    assert m.shape == (5, 10_000) and set(np.unique(m.numpy())) == {0.0, 1.0}
    assert np.allclose(m.mean(1).numpy(), 0.8, atol=0.02)
    assert not torch.equal(m[0], m[1]), "members draw their own masks"
    assert torch.equal(m, bootstrap_masks(10_000, 5, 0.8, seed=3))
    assert not torch.equal(m, bootstrap_masks(10_000, 5, 0.8, seed=4))
    assert bootstrap_masks(7, 3, 1.0, seed=0).eq(1).all()


def test_each_member_fits_only_its_bootstrap_share_of_the_transitions():
    d = one_hot_dataset()
    torch.manual_seed(0)
    config = CriticConfig(ensemble_size=4, critic_hidden_dim=64, critic_layers=1, critic_lr=3e-3, critic_steps=800,
                          critic_batch_size=64, bootstrap_fraction=0.5, prior_scale=0.0)
    critic = ChunkCritic(ProprioFeatures(), 60, 1, 1, config)
    fit_critic(critic, d, "progress", config=config, seed=0)
    batch = d.batch(d.indices)
    with torch.no_grad():
        q = critic.q_values(batch.obs, batch.chunks).numpy()              # (K, N)
    err = np.abs(q - d.mc_returns[None, :])
    masks = bootstrap_masks(len(d.done), 4, 0.5, seed=0).numpy().astype(bool)
    seen, unseen = err[masks].mean(), err[~masks].mean()
    assert seen < 0.05 and unseen > 3 * seen, (seen, unseen)


def test_random_priors_are_fixed_the_same_in_the_target_and_differ_between_members(tmp_path):
    config = CriticConfig(ensemble_size=3, critic_hidden_dim=8, critic_layers=1, prior_scale=0.5)
    critic = ChunkCritic(ProprioFeatures(), 2, 2, 1, config)
    prior = list(critic.q.prior.parameters())
    assert prior and not any(p.requires_grad for p in prior)
    assert not any(p is q for p in prior for q in critic.trainable_parameters())
    for p, tp in zip(critic.q.prior.parameters(), critic.target_q.prior.parameters()):
        assert torch.equal(p, tp)
    x = torch.randn(5, 2 + 2)
    outs = critic.q._mlp(list(critic.q.prior), x.unsqueeze(0).expand(3, -1, -1))
    assert not torch.allclose(outs[0], outs[1])
    save_critic(critic, tmp_path)
    other = ChunkCritic(ProprioFeatures(), 2, 2, 1, config)
    load_critic_state(other, tmp_path)
    for p, q in zip(critic.q.prior.parameters(), other.q.prior.parameters()):
        assert torch.equal(p, q), "the prior is saved with the critic"


def test_a_critic_saved_before_priors_existed_loads_with_its_old_behaviour(tmp_path):
    old = {"ensemble_size": 2, "critic_hidden_dim": 4, "critic_layers": 1, "num_policy_samples": 4,
           "aggregate": "subset_min", "subset_size": 2, "kappa": 1.0, "freeze_encoder": False}
    config = CriticConfig.from_saved(old)
    assert config.prior_scale == 0.0 and config.bootstrap_fraction == 1.0 and config.num_value_samples == 4
    critic = ChunkCritic(ProprioFeatures(), 1, 2, 1, config)
    assert critic.q.prior is None
    save_critic(critic, tmp_path)
    load_critic_state(ChunkCritic(ProprioFeatures(), 1, 2, 1, CriticConfig.from_saved(old)), tmp_path)


class SpreadPolicy:
    """pi(.|o) over scalar H=1 chunks: N(0, 1) samples, ignoring o."""

    def sample(self, obs, n=1, generator=None):
        B = obs["proprio"].shape[0]
        return torch.randn(B, n, 1, 1, generator=generator)


class LinearQ(nn.Module):
    """Every member: Q_k(o, A) = A + k * 0.01 (a critic whose values are known by hand)."""

    def __init__(self, K):
        super().__init__()
        self.ensemble_size = K

    def forward(self, feats, chunks):
        return chunks[:, 0].unsqueeze(0) + 0.01 * torch.arange(self.ensemble_size, dtype=torch.float32)[:, None]


def hand_critic(K=2):
    config = CriticConfig(ensemble_size=K, critic_hidden_dim=4, critic_layers=1, prior_scale=0.0,
                          aggregate="mean_std", kappa=0.0, num_value_samples=64)
    critic = ChunkCritic(ProprioFeatures(), 1, 1, 1, config)
    critic.q = LinearQ(K)
    return critic


class RecordingPolicy(SpreadPolicy):
    """SpreadPolicy that keeps what it sampled (to recompute V by hand)."""

    def __init__(self):
        self.drawn = []

    def sample(self, obs, n=1, generator=None):
        out = super().sample(obs, n, generator)
        self.drawn.append(out)
        return out


def test_v_standard_error_shrinks_as_one_over_sqrt_n_and_matches_the_sample_spread():
    d = TransitionDataset([Episode.from_arrays([[0.5]] * 40, [[0.0]] * 40, [0.0] * 40, outcome="FAILURE")], 1, 0.9)
    se = {}
    for n in (16, 256):
        policy = RecordingPolicy()
        values = chunk_values(hand_critic(), d, policy, n, seed=1)
        samples = torch.cat(policy.drawn)[:, :, 0, 0].numpy()
        # mean over members of A + 0.01 k = mean_j A_j + 0.005: V by hand, with kappa 0
        np.testing.assert_allclose(values["v"], samples.mean(1) + 0.005, atol=1e-5)
        se[n] = float(np.mean(values["v_se"]))
        assert 0.5 / np.sqrt(n) < se[n] < 2.0 / np.sqrt(n), (n, se[n])
    assert se[256] < se[16] / 2.5


def test_ranked_extraction_picks_the_highest_valued_chunk_among_the_recorded_and_pis_samples():
    d = TransitionDataset([Episode.from_arrays([[0.5], [3.0], [-0.2]], [[0.0]] * 3, [0.0] * 3, outcome="FAILURE")],
                          1, 0.9)
    policy = RecordingPolicy()
    values = chunk_values(hand_critic(), d, policy, 8, seed=0)
    samples = torch.cat(policy.drawn)[:, :, 0, 0].numpy()
    chosen = values["best_chunk"][:, 0, 0]
    recorded = np.array([0.5, 3.0, -0.2])
    expected = np.where(recorded >= samples.max(1), recorded, samples.max(1))  # Q increases with A
    np.testing.assert_allclose(chosen, expected, atol=1e-6)
    assert values["best_index"][1] == -1, "the recorded 3.0 beats every N(0, 1) sample"
    np.testing.assert_allclose(values["best_q"], expected + 0.005, atol=1e-5)
    again = chunk_values(hand_critic(), d, RecordingPolicy(), 8, seed=0)
    np.testing.assert_array_equal(again["best_chunk"], values["best_chunk"])  # seeded: reproducible


def test_chunk_values_pass_pis_samples_through_the_ensemble_once_and_evaluate_scores_them_as_pessimistic_q():
    d = TransitionDataset([Episode.from_arrays([[0.5], [3.0], [-0.2]], [[0.0]] * 3, [0.0] * 3, outcome="FAILURE")],
                          1, 0.9)
    critic = hand_critic()
    rows = []
    critic.q.register_forward_hook(lambda m, i, o: rows.append(i[1].shape[0]))
    chunk_values(critic, d, RecordingPolicy(), 8, seed=0)
    assert rows == [3, 3 * 8]  # the recorded chunks, then pi's 8 samples per observation: one pass each
    obs = d.batch(d.indices).obs
    pol = torch.randn(3, 8, 1, 1)
    assert torch.equal(critic.evaluate(obs, d.batch(d.indices).chunks, pol)["sampled_q"], critic.pessimistic_q(obs, pol))


def test_critic_config_rejects_bad_independence_settings():
    with pytest.raises(ValueError, match="bootstrap_fraction"):
        CriticConfig(bootstrap_fraction=0.0)
    with pytest.raises(ValueError, match="prior_scale"):
        CriticConfig(prior_scale=-1.0)
    with pytest.raises(ValueError, match="diversity_eta"):
        CriticConfig(diversity_eta=-0.1)
    with pytest.raises(ValueError, match="diversity_eta"):
        CriticConfig(diversity_eta=float("nan"))


def test_gradient_similarity_is_the_mean_pairwise_cosine_of_the_members_gradients():
    g = torch.randn(4, 6, 5)
    brute = torch.stack([torch.nn.functional.cosine_similarity(g[k], g[m], dim=-1)
                         for k in range(4) for m in range(4) if k != m]).mean(0)
    torch.testing.assert_close(gradient_similarity(g), brute)
    same = torch.randn(1, 3, 5).expand(4, -1, -1)
    torch.testing.assert_close(gradient_similarity(same), torch.ones(3))
    assert gradient_similarity(torch.randn(1, 3, 5)).eq(0).all(), "one member: nothing to compare"


def test_chunk_grad_is_each_members_own_gradient_with_respect_to_the_scaled_chunk():
    config = CriticConfig(ensemble_size=3, critic_hidden_dim=8, critic_layers=2, prior_scale=0.5)
    critic = ChunkCritic(ProprioFeatures(), 2, 2, 1, config)
    obs, chunks = {"proprio": torch.randn(4, 2)}, torch.randn(4, 2, 1)
    q, grads = critic.q_values(obs, chunks, chunk_grad=True)
    assert grads.shape == (3, 4, 2) and grads.requires_grad, "kept in the graph, so a loss on it trains the heads"
    torch.testing.assert_close(q, critic.q_values(obs, chunks))
    scaled = critic.action_scaler(chunks).reshape(4, -1)
    for k in range(3):
        x = scaled.clone().requires_grad_(True)
        (own,) = torch.autograd.grad(critic.q(obs["proprio"], x)[k].sum(), x)
        torch.testing.assert_close(grads[k], own)
    with pytest.raises(ValueError, match="one chunk per observation"):
        critic.q_values(obs, torch.randn(4, 3, 2, 1), chunk_grad=True)


def test_the_diversity_term_makes_members_disagree_off_the_data_and_still_fit_it():
    """One recorded chunk per state (A = 0), progress targets: EDAC's term (diversity_eta)
    lowers the members' gradient similarity and widens their spread at chunks the data never
    executed, while the recorded chunks' values stay fitted."""
    n = 40
    rng = np.random.default_rng(0)
    eps = [Episode.from_arrays([[0.0, 0.0]], [np.eye(n, dtype=np.float32)[i]], [float(rng.random())],
                               outcome="SUCCESS") for i in range(n)]
    d = TransitionDataset(eps, chunk_horizon=1, gamma=0.9)
    batch = d.batch(d.indices)
    far = torch.tensor(rng.normal(0, 1.0, (n, 1, 2)), dtype=torch.float32)
    result = {}
    for eta in (0.0, 0.1):
        torch.manual_seed(0)
        config = CriticConfig(ensemble_size=5, critic_hidden_dim=64, critic_layers=2, critic_lr=3e-3,
                              critic_steps=400, critic_batch_size=40, bootstrap_fraction=1.0, prior_scale=0.0,
                              diversity_eta=eta)
        critic = ChunkCritic(ProprioFeatures(), n, 1, 2, config)
        curve = fit_critic(critic, d, "progress", config=config, seed=0, log_every=100)
        with torch.no_grad():
            fit_err = float((critic.q_values(batch.obs, batch.chunks) - d.mc_returns[None]).abs().mean())
            spread = float(critic.q_values(batch.obs, far).std(0).mean())
        _, grads = critic.q_values(batch.obs, batch.chunks, chunk_grad=True)
        result[eta] = (fit_err, spread, float(gradient_similarity(grads.detach()).mean()))
        assert ("gradient_similarity" in curve[-1]) == (eta > 0)
    (err0, spread0, sim0), (err1, spread1, sim1) = result[0.0], result[0.1]
    assert err1 < 0.05 and err0 < 0.05, result
    assert sim1 < sim0 - 0.2, result
    assert spread1 > 1.5 * spread0, result
