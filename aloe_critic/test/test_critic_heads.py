"""The heads' options (issue 14): LayerNorm in every hidden layer, and values as histograms fitted by
HL-Gauss cross-entropy; their targets, their saving, and their refusals."""

import math

import pytest
import torch
import torch.nn as nn

from aloe_critic.critic import ChunkCritic, CriticConfig, hl_gauss_target, load_critic_state, save_critic


class ProprioFeatures(nn.Module):
    def forward(self, obs):
        return obs["proprio"]


def test_hl_gauss_target_is_a_distribution_centred_on_y_and_clipped_to_the_support():
    edges = torch.linspace(-0.2, 1.2, 52)                                  # 51 bins of 1.4 / 51
    centers = (edges[1:] + edges[:-1]) / 2
    y = torch.tensor([0.0, 0.37, 0.9, 1.0, 5.0, -3.0])
    p = hl_gauss_target(y, edges)
    assert p.shape == (6, 51) and torch.all(p >= 0)
    assert torch.allclose(p.sum(1), torch.ones(6), atol=1e-6)
    mean = p @ centers
    assert torch.allclose(mean[:4], y[:4], atol=2e-3), mean                # interior targets: the mean is y
    assert mean[4] > 1.15 and mean[5] < -0.15                               # outside: at the support's ends
    # The mass of one bin by hand: Phi((e_i+1 - y) / s) - Phi((e_i - y) / s), s = 0.75 bin, renormalised.
    s, i = 0.75 * 1.4 / 51, 20
    phi = lambda x: 0.5 * (1 + math.erf(x / math.sqrt(2)))  # noqa: E731
    raw = phi((float(edges[i + 1]) - 0.37) / s) - phi((float(edges[i]) - 0.37) / s)
    norm = phi((1.2 - 0.37) / s) - phi((-0.2 - 0.37) / s)
    assert float(p[1, i]) == pytest.approx(raw / norm, abs=1e-6)


def test_an_hl_gauss_head_outputs_its_histograms_mean_and_its_loss_is_the_cross_entropy():
    config = CriticConfig(ensemble_size=3, critic_hidden_dim=8, critic_layers=1, value_loss="hl_gauss", value_bins=11,
                          value_min=0.0, value_max=1.0)
    critic = ChunkCritic(ProprioFeatures(), 2, 2, 1, config)
    obs = {"proprio": torch.randn(4, 2)}
    chunks = torch.randn(4, 2, 1)
    y = torch.tensor([0.1, 0.5, 0.9, 0.3])
    loss, q, grads = critic.member_losses(obs, chunks, y)
    logits = critic.q.logits(obs["proprio"], chunks.reshape(4, -1))         # (K, B, bins)
    assert logits.shape == (3, 4, 11) and grads is None
    centers = (torch.arange(11) + 0.5) / 11                                  # 11 bins of 1/11 on [0, 1]
    assert torch.allclose(q, torch.softmax(logits, -1) @ centers, atol=1e-6)
    assert torch.allclose(critic.q_values(obs, chunks), q, atol=1e-6)
    target = hl_gauss_target(y, torch.linspace(0, 1, 12))
    assert torch.allclose(loss, -(torch.log_softmax(logits, -1) * target).sum(-1), atol=1e-6)
    assert torch.all((q > 0) & (q < 1)), "a histogram's mean stays inside the support"


def test_layer_norm_normalises_each_hidden_layer_with_each_members_own_gain_and_is_saved(tmp_path):
    config = CriticConfig(ensemble_size=3, critic_hidden_dim=16, critic_layers=2, critic_norm="layer")
    critic = ChunkCritic(ProprioFeatures(), 2, 2, 1, config)
    assert len(critic.q.norms) == 2 and critic.q.norms[0].weight.shape == (3, 1, 16)
    x = 100 * torch.randn(3, 5, 4)                                          # a far-off input: the layer is rescaled
    h = critic.q.norms[0](critic.q.layers[0](x))
    assert torch.allclose(h.mean(-1), torch.zeros(3, 5), atol=1e-4)
    assert torch.allclose(h.std(-1, unbiased=False), torch.ones(3, 5), atol=1e-3)
    with torch.no_grad():
        critic.q.norms[0].weight[1].mul_(2.0)                              # member 1's gain only
    h = critic.q.norms[0](critic.q.layers[0](x))
    assert torch.allclose(h[1].std(-1, unbiased=False), 2 * torch.ones(5), atol=2e-3)
    assert torch.allclose(h[0].std(-1, unbiased=False), torch.ones(5), atol=1e-3)
    save_critic(critic, tmp_path)
    other = ChunkCritic(ProprioFeatures(), 2, 2, 1, config)
    load_critic_state(other, tmp_path)
    obs, chunks = {"proprio": torch.randn(4, 2)}, torch.randn(4, 2, 1)
    assert torch.equal(other.q_values(obs, chunks), critic.q_values(obs, chunks))


def test_a_critic_saved_before_the_head_options_loads_as_a_plain_mse_head():
    old = {"ensemble_size": 2, "critic_hidden_dim": 4, "critic_layers": 1, "num_policy_samples": 4}
    config = CriticConfig.from_saved(old)
    assert config.critic_norm == "none" and config.value_loss == "mse"
    critic = ChunkCritic(ProprioFeatures(), 1, 2, 1, config)
    assert critic.q.norms is None and critic.q.bins == 1


@pytest.mark.parametrize("fields, message", [
    ({"critic_norm": "batch"}, "critic_norm"),
    ({"value_loss": "huber"}, "value_loss"),
    ({"value_loss": "hl_gauss", "value_bins": 1}, "value_bins"),
    ({"value_loss": "hl_gauss", "value_min": 1.0, "value_max": 0.0}, "value_min"),
    ({"value_loss": "hl_gauss", "diversity_eta": 1.0}, "diversity_eta"),
])
def test_critic_config_refuses_head_options_it_cannot_fit(fields, message):
    with pytest.raises(ValueError, match=message):
        CriticConfig(**fields)


def test_the_exported_chunk_scorer_of_a_layernorm_hl_gauss_critic_scores_as_the_critic(initial_checkpoint, tmp_path):
    """What value-guided selection loads (TorchScript, no aloe_critic import) gives the critic's own
    pessimistic Q with either head option."""
    from aloe_critic.critic import critic_for_policy, export_chunk_scorer
    from aloe_policy.model import FlowMatchingPolicy

    policy = FlowMatchingPolicy.from_pretrained(initial_checkpoint / "iter0")
    config = CriticConfig(ensemble_size=3, critic_hidden_dim=8, freeze_encoder=True, critic_norm="layer",
                          value_loss="hl_gauss", value_bins=21)
    torch.manual_seed(0)
    critic = critic_for_policy(policy, config).eval()
    cams = list(policy.config.camera_names)
    size = policy.config.image_size
    obs = {"images": {c: torch.randint(0, 255, (2, size, size, 3), dtype=torch.uint8) for c in cams},
           "proprio": torch.randn(2, policy.config.proprio_dim), "task": ["pick the cube"] * 2}
    path = export_chunk_scorer(critic, policy, tmp_path / "chunk_scorer.pt", obs)
    chunks = torch.randn(2, 5, critic.chunk_horizon, critic.action_dim)
    prepared = policy.prepare(obs)
    scorer = torch.jit.load(str(path))
    with torch.no_grad():
        scored = scorer([prepared["images"][c] for c in cams], prepared["proprio"], prepared["text"], chunks)
        expected = critic.aggregate(critic.q_values(obs, chunks))
    assert scored.shape == (2, 5)
    assert torch.allclose(scored, expected, atol=1e-5)
