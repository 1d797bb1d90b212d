"""Advantage-weighted flow matching moves the policy toward the higher-advantage chunk; bc does not."""

import numpy as np
import pytest
import torch
import torch.nn as nn

from aloe_critic.dataset import TransitionDataset
from aloe_data.ingestion import Episode
from aloe_data.schema import SOURCE_HUMAN, SOURCE_POLICY
from aloe_critic.improvement import ImprovementConfig, advantage_weights, improve_policy

H = 2
HIGH, LOW = 0.8, -0.8


class TinyFlowPolicy(nn.Module):
    """Minimal conditional flow-matching policy with the aloe_policy.model API (sample / loss)."""

    def __init__(self, obs_dim=1, horizon=H, action_dim=1, hidden=64, flow_steps=10):
        super().__init__()
        self.h, self.a, self.steps = horizon, action_dim, flow_steps
        d = horizon * action_dim
        self.net = nn.Sequential(nn.Linear(d + 1 + obs_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                 nn.Linear(hidden, d))

    def velocity(self, x, t, obs):
        return self.net(torch.cat([x, t, obs["proprio"].float()], -1))

    def loss(self, obs, chunks, weights=None, *, generator=None):
        x1 = chunks.reshape(chunks.shape[0], -1)
        x0 = torch.randn(x1.shape, generator=generator)
        t = torch.rand(x1.shape[0], 1, generator=generator)
        per = ((self.velocity((1 - t) * x0 + t * x1, t, obs) - (x1 - x0)) ** 2).mean(-1)
        return per if weights is None else per * weights

    @torch.no_grad()
    def sample(self, obs, n=1, generator=None):
        B = obs["proprio"].shape[0]
        rep = {"proprio": obs["proprio"].repeat_interleave(n, 0)}
        x = torch.randn(B * n, self.h * self.a, generator=generator)
        for k in range(self.steps):
            t = torch.full((B * n, 1), k / self.steps)
            x = x + self.velocity(x, t, rep) / self.steps
        return x.reshape(B, n, self.h, self.a)


def tiny_flow_policy():
    """The real FlowMatchingPolicy, small enough to train in a test (one 8x8 camera, 1-d action)."""
    from aloe_policy.testing import tiny_policy

    return tiny_policy(dict(camera_names=("front",), image_size=8, proprio_dim=1, action_dim=1, action_names=("a",),
                            action_low=(-1.0,), action_high=(1.0,), chunk_horizon=H, cnn_channels=(4,),
                            cnn_pool_size=1, hidden_dim=16, head_hidden_dim=64, head_layers=1, time_embed_dim=8,
                            flow_steps=8, dropout=0.0))


def two_chunk_dataset():
    """Same observation, two recorded chunks: HIGH (advantage +0.5) and LOW (advantage -0.5)."""
    eps = [Episode.from_arrays([[HIGH]] * H, [[1.0]] * H, [0.0] * H, outcome="ABORT"),
           Episode.from_arrays([[LOW]] * H, [[1.0]] * H, [0.0] * H, outcome="ABORT")]
    d = TransitionDataset(eps, chunk_horizon=H, gamma=0.9)
    adv = np.where(d.chunks[d.indices, 0, 0] > 0, 0.5, -0.5).astype(np.float32)
    return d, adv


def test_advantage_weights_exp_clip_and_normalisation():
    adv = torch.tensor([-1.0, 0.0, 0.1, 10.0])
    w = advantage_weights(adv, beta=0.1, w_max=5.0)
    raw = torch.tensor([np.exp(-10), 1.0, np.exp(1), 5.0], dtype=torch.float32)
    torch.testing.assert_close(w, raw / raw.mean())
    assert float(w.mean()) == pytest.approx(1.0)
    torch.testing.assert_close(advantage_weights(adv, 1.0, 10.0, "binary"), torch.tensor([0, 0, 2.0, 2.0]))
    assert torch.all(advantage_weights(torch.tensor([-1.0, -2.0]), 1.0, 10.0, "binary") == 0)


def sample_mean_and_high_fraction(policy):
    obs = {"proprio": torch.ones(1, 1), "images": {}, "task": [""]}
    s = policy.sample(obs, 400, generator=torch.Generator().manual_seed(1))[0, :, :, 0].mean(-1)
    return float(s.mean()), float((s > 0).float().mean())


@pytest.mark.parametrize("mode,sampling", [("exp", "uniform"), ("binary", "uniform"), ("exp", "weighted")])
def test_advantage_weighted_flow_matching_prefers_high_advantage_chunk(mode, sampling):
    d, adv = two_chunk_dataset()
    config = ImprovementConfig(beta=0.1, w_max=20.0, weight_mode=mode, sampling=sampling, policy_lr=3e-3,
                               policy_steps=400, policy_batch_size=64)
    torch.manual_seed(0)
    aw = TinyFlowPolicy()
    improve_policy(aw, d, adv, config, seed=0)
    torch.manual_seed(0)
    bc = TinyFlowPolicy()
    improve_policy(bc, d, None, config, seed=0)
    aw_mean, aw_high = sample_mean_and_high_fraction(aw)
    bc_mean, bc_high = sample_mean_and_high_fraction(bc)
    assert abs(aw_mean - HIGH) < 0.25 and aw_high > 0.9, (aw_mean, aw_high)
    assert LOW + 0.4 < bc_mean < HIGH - 0.4 and 0.2 < bc_high < 0.8, (bc_mean, bc_high)


def test_advantage_weighting_moves_the_real_flow_matching_policy_toward_high_advantage_chunk():
    d, adv = two_chunk_dataset()
    for e in d.episodes:  # one camera, same image for both chunks
        e.images["front"] = np.zeros((len(e), 8, 8, 3), np.uint8)
    d.cameras = ["front"]
    config = ImprovementConfig(beta=0.1, w_max=20.0, policy_lr=3e-3, policy_steps=300, policy_batch_size=32)
    results = {}
    for name, a in (("aw", adv), ("bc", None)):
        policy = tiny_flow_policy()
        policy.fit_normalization(*d.behaviour_arrays())
        improve_policy(policy, d, a, config, seed=0)
        obs = {"images": {"front": torch.zeros(1, 8, 8, 3, dtype=torch.uint8)}, "proprio": torch.ones(1, 1),
               "task": [""]}
        s = policy.sample(obs, 200, generator=torch.Generator().manual_seed(1))[0, :, :, 0].mean(-1)
        results[name] = (float(s.mean()), float((s > 0).float().mean()))
    assert results["aw"][1] > 0.85 and abs(results["aw"][0] - HIGH) < 0.3, results
    assert 0.15 < results["bc"][1] < 0.85 and LOW + 0.3 < results["bc"][0] < HIGH - 0.3, results


def test_ema_decay_ends_with_the_moving_average_of_the_weights():
    """ema_decay=0: the last step's weights; ema_decay=d: p_ema <- d p_ema + (1 - d) p after every
    step, checked against the same average kept by hand over the recorded weight trajectory."""
    d, adv = two_chunk_dataset()
    config = ImprovementConfig(policy_lr=3e-3, policy_steps=5, policy_batch_size=16)
    torch.manual_seed(0)
    plain = TinyFlowPolicy()
    start = [p.detach().clone() for p in plain.parameters()]
    trajectory = []
    original_step = torch.optim.AdamW.step

    def recording_step(self, *args, **kwargs):
        out = original_step(self, *args, **kwargs)
        trajectory.append([p.detach().clone() for g in self.param_groups for p in g["params"]])
        return out

    torch.optim.AdamW.step = recording_step
    try:
        improve_policy(plain, d, adv, config, seed=0)
    finally:
        torch.optim.AdamW.step = original_step
    assert len(trajectory) == 5
    for p, last in zip(plain.parameters(), trajectory[-1]):
        torch.testing.assert_close(p.detach(), last)  # no EMA: the last step

    torch.manual_seed(0)
    averaged = TinyFlowPolicy()
    improve_policy(averaged, d, adv, ImprovementConfig(**{**config.__dict__, "ema_decay": 0.9}), seed=0)
    expected = start
    for weights in trajectory:
        expected = [0.9 * e + 0.1 * w for e, w in zip(expected, weights)]
    for p, e in zip(averaged.parameters(), expected):
        torch.testing.assert_close(p.detach(), e, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="ema_decay"):
        ImprovementConfig(ema_decay=1.0)


def test_advantage_breakdown_counts_positive_chunks_per_provenance_group():
    from aloe_data.schema import SOURCE_HUMAN, SOURCE_POLICY
    from aloe_critic.train import advantage_breakdown

    ok = Episode.from_arrays([[0.1]] * 4, [[0.0]] * 4, [0, 0, 0, 1], sources=[SOURCE_POLICY] * 4, outcome="SUCCESS")
    bad = Episode.from_arrays([[0.2]] * 4, [[0.0]] * 4, [0] * 4, sources=[SOURCE_POLICY] * 4, outcome="FAILURE")
    demo = Episode.from_arrays([[0.3]] * 4, [[0.0]] * 4, [0, 0, 0, 1], sources=[SOURCE_HUMAN] * 4)
    d = TransitionDataset([ok, bad, demo], chunk_horizon=2, gamma=0.9)
    adv = np.array([1, 1, 1, -1,  -1, -1, -1, 1,  1, 1, 1, 1], np.float32)
    got = advantage_breakdown(d, adv)
    assert got == {"operator": {"fraction_positive": 1.0, "chunks": 4},
                   "policy_in_success": {"fraction_positive": 0.75, "chunks": 4},
                   "policy_in_failure": {"fraction_positive": 0.25, "chunks": 4}}
    only_policy = d.filter(is_intervention=False)
    assert set(advantage_breakdown(only_policy, adv[:8])) == {"policy_in_success", "policy_in_failure"}


def test_weight_breakdown_gives_each_group_its_share_of_the_summed_weight_and_the_ess():
    from aloe_data.schema import SOURCE_HUMAN, SOURCE_POLICY
    from aloe_critic.improvement import ImprovementConfig
    from aloe_critic.train import weight_breakdown

    ok = Episode.from_arrays([[0.1]] * 2, [[0.0]] * 2, [0, 1], sources=[SOURCE_POLICY] * 2, outcome="SUCCESS")
    demo = Episode.from_arrays([[0.3]] * 2, [[0.0]] * 2, [0, 1], sources=[SOURCE_HUMAN] * 2)
    d = TransitionDataset([ok, demo], chunk_horizon=1, gamma=0.9)
    beta = 0.1
    adv = np.array([0.0, 0.0, beta * np.log(3.0), beta * np.log(3.0)], np.float32)  # weights 1, 1, 3, 3
    got = weight_breakdown(d, adv, ImprovementConfig(beta=beta, w_max=20.0))
    assert got["groups"]["operator"]["weight_share"] == pytest.approx(6 / 8, rel=1e-5)
    assert got["groups"]["policy_in_success"]["mean_weight"] == pytest.approx(1 / 2, rel=1e-5)
    assert got["ess_fraction"] == pytest.approx(8 ** 2 / 20 / 4, rel=1e-5)  # (sum w)^2 / sum w^2 / n
    uniform = weight_breakdown(d, np.zeros(4, np.float32), ImprovementConfig())
    assert uniform["ess_fraction"] == pytest.approx(1.0) and uniform["groups"]["operator"]["weight_share"] == 0.5


def test_critic_only_bags_are_left_out_of_the_imitation_set_only():
    from aloe_critic.train import TrainConfig, imitation_set

    eps = [Episode.from_arrays([[0.1]] * 3, [[0.0]] * 3, [0, 0, 1], bag="run/bags/iter_01/ep0"),
           Episode.from_arrays([[0.2]] * 4, [[0.0]] * 4, [0] * 4, bag="run/bags/eval_01/ep0"),
           Episode.from_arrays([[0.3]] * 2, [[0.0]] * 2, [0, 1], bag="run/bags/demos/ep0")]
    d = TransitionDataset(eps, chunk_horizon=2, gamma=0.9)
    view, keep = imitation_set(d, ["*/eval_*/*"])
    assert list(view.indices) == [0, 1, 2, 7, 8] and list(np.flatnonzero(keep)) == [0, 1, 2, 7, 8]
    assert np.allclose(view.chunks[view.indices, 0, 0], [0.1, 0.1, 0.1, 0.3, 0.3])
    same, same_keep = imitation_set(d, [])
    assert same is d and same_keep.all()
    with pytest.raises(ValueError, match="nothing is left"):
        imitation_set(d, ["run/*"])
    config = TrainConfig.from_dict({"critic_only_bags": "*/eval_*/*,*/old/*"})  # CLI / YAML string form
    assert config.critic_only_bags == ["*/eval_*/*", "*/old/*"]


def test_dagger_imitates_only_chunks_the_operator_mostly_executed():
    from aloe_critic.train import imitation_set

    # ticks: policy, policy, human, human, human, policy (H=2: a chunk is human-majority when
    # at least one of its two ticks is the operator's)
    mixed = Episode.from_arrays([[0.1]] * 6, [[0.0]] * 6, [0] * 5 + [1],
                                sources=[SOURCE_POLICY, SOURCE_POLICY, SOURCE_HUMAN, SOURCE_HUMAN, SOURCE_HUMAN,
                                         SOURCE_POLICY], bag="run/bags/iter_00/ep0")
    d = TransitionDataset([mixed], chunk_horizon=2, gamma=0.9)
    view, keep = imitation_set(d, [], operator_only=True)
    assert list(np.flatnonzero(keep)) == [1, 2, 3, 4]
    assert list(view.indices) == [1, 2, 3, 4]




def test_weighted_sampling_draws_chunks_by_weight_and_imitates_each_with_weight_one():
    from aloe_critic.distributed import global_batches
    from aloe_critic.improvement import unnormalised_weights

    p = np.array([0.0, 0.1, 0.6, 0.3])
    drawn = np.concatenate([s.positions for s in global_batches(4, 64, 200, seed=0, probabilities=p)])
    assert not (drawn == 0).any(), "a zero-weight chunk is never drawn"
    np.testing.assert_allclose(np.bincount(drawn, minlength=4) / len(drawn), p, atol=0.01)
    uniform = [s.positions for s in global_batches(4, 8, 3, seed=0)]
    assert all(((u >= 0) & (u < 4)).all() for u in uniform)

    # binary weights that keep only the HIGH chunk: with weighted sampling every batch is HIGH chunks,
    # each weight 1 (the curve's weights are uniform), and the policy imitates HIGH only
    d, adv = two_chunk_dataset()
    config = ImprovementConfig(weight_mode="binary", sampling="weighted", policy_lr=3e-3, policy_steps=300,
                               policy_batch_size=32)
    torch.manual_seed(0)
    policy = TinyFlowPolicy()
    curve = improve_policy(policy, d, adv, config, seed=0)
    assert all(row["weight_ess"] == 1.0 and row["weight_max"] == 1.0 for row in curve)
    mean, high = sample_mean_and_high_fraction(policy)
    assert high > 0.95 and abs(mean - HIGH) < 0.2, (mean, high)
    assert unnormalised_weights(adv, 0.1, 20.0, "binary").sum() == (adv > 0).sum()
    with pytest.raises(ValueError, match="no chunk has a positive weight"):
        improve_policy(TinyFlowPolicy(), d, np.full(len(d), -1.0, np.float32), config)
    for refused in ({"extraction": "ranked"}, {"extraction": "conditioned"}, {"sampling": "stratified"}):
        with pytest.raises(ValueError, match="sampling"):
            ImprovementConfig(**{"sampling": "weighted", **refused})


def test_trust_operator_keeps_the_operators_chunks_at_weight_one_and_weights_the_policys():
    from aloe_critic.improvement import operator_chunks, unnormalised_weights
    from aloe_critic.train import weight_breakdown

    # one observation, the policy's chunk HIGH and the operator's LOW, both scored below pi's average
    eps = [Episode.from_arrays([[HIGH]] * H, [[1.0]] * H, [0.0] * H, sources=[SOURCE_POLICY] * H, outcome="ABORT"),
           Episode.from_arrays([[LOW]] * H, [[1.0]] * H, [0.0] * H, sources=[SOURCE_HUMAN] * H, outcome="ABORT")]
    d = TransitionDataset(eps, chunk_horizon=H, gamma=0.9)
    trusted = operator_chunks(d)
    assert trusted.tolist() == (d.chunks[d.indices, 0, 0] < 0).tolist() and trusted.any() and not trusted.all()
    adv = np.full(len(d), -0.5, np.float32)
    torch.testing.assert_close(unnormalised_weights(adv, 0.1, 1.0, "exp", trusted),
                               torch.as_tensor(np.where(trusted, 1.0, np.exp(-5.0)), dtype=torch.float32))
    torch.testing.assert_close(unnormalised_weights(adv, 0.1, 1.0, "binary", trusted),
                               torch.as_tensor(trusted, dtype=torch.float32))
    config = ImprovementConfig(beta=0.1, w_max=1.0, trust_operator=True, policy_lr=3e-3, policy_steps=400,
                               policy_batch_size=64)
    share = weight_breakdown(d, adv, config)["groups"]["operator"]["weight_share"]
    assert share == pytest.approx(1 / (1 + np.exp(-5.0)), rel=1e-5)
    results = {}
    for trust in (True, False):
        torch.manual_seed(0)
        policy = TinyFlowPolicy()
        improve_policy(policy, d, adv, ImprovementConfig(**{**config.__dict__, "trust_operator": trust}), seed=0)
        results[trust] = sample_mean_and_high_fraction(policy)
    assert results[True][1] < 0.1 and abs(results[True][0] - LOW) < 0.25, results  # the correction, in full
    assert 0.2 < results[False][1] < 0.8, results  # equal advantages: equal weights, both chunks
    for refused in ({"extraction": "ranked"}, {"extraction": "conditioned"}, {"target_ess": 0.5}):
        with pytest.raises(ValueError, match="trust_operator"):
            ImprovementConfig(trust_operator=True, **refused)


def test_operator_share_splits_the_draws_between_the_sources_whatever_their_sizes():
    from aloe_critic.improvement import draw_probabilities, operator_chunks
    from aloe_critic.train import weight_breakdown

    w = np.array([1.0, 3.0, 2.0, 2.0, 0.0])
    op = np.array([True, True, False, False, False])
    np.testing.assert_allclose(draw_probabilities(w, op), w / 8)  # by weight alone
    np.testing.assert_allclose(draw_probabilities(w, op, 0.5), [0.125, 0.375, 0.25, 0.25, 0.0])
    np.testing.assert_allclose(draw_probabilities(w, op, 0.9)[op].sum(), 0.9)
    # a source with no weight gives its share to the other
    np.testing.assert_allclose(draw_probabilities(w, np.zeros(5, bool), 0.5), w / 8)
    np.testing.assert_allclose(draw_probabilities(np.array([0.0, 0.0, 1.0, 1.0, 0.0]), op, 0.5), [0, 0, 0.5, 0.5, 0])
    with pytest.raises(ValueError, match="no chunk has a positive weight"):
        draw_probabilities(np.zeros(3), np.ones(3, bool), 0.5)

    # one observation: four of the policy's episodes execute HIGH, one correction LOW, every weight 1.
    # By weight the correction is a fifth of the draws; with operator_share 0.5, half; with 0.9, nearly all.
    eps = [Episode.from_arrays([[HIGH]] * H, [[1.0]] * H, [0.0] * H, sources=[SOURCE_POLICY] * H, outcome="SUCCESS")
           for _ in range(4)]
    eps.append(Episode.from_arrays([[LOW]] * H, [[1.0]] * H, [0.0] * H, sources=[SOURCE_HUMAN] * H, outcome="SUCCESS"))
    d = TransitionDataset(eps, chunk_horizon=H, gamma=0.9)
    assert operator_chunks(d).mean() == pytest.approx(0.2)
    adv = np.zeros(len(d), np.float32)
    config = ImprovementConfig(beta=0.1, w_max=1.0, trust_operator=True, sampling="weighted", policy_lr=3e-3,
                               policy_steps=400, policy_batch_size=64)
    high = {}
    for share in (0.0, 0.5, 0.9):
        shared = ImprovementConfig(**{**config.__dict__, "operator_share": share})
        operator_weight = weight_breakdown(d, adv, shared)["groups"]["operator"]["weight_share"]
        assert operator_weight == pytest.approx(share or 0.2), (share, operator_weight)
        torch.manual_seed(0)
        policy = TinyFlowPolicy()
        improve_policy(policy, d, adv, shared, seed=0)
        high[share] = sample_mean_and_high_fraction(policy)[1]
    assert high[0.0] > 0.65 and 0.25 < high[0.5] < 0.75 and high[0.9] < 0.25, high
    for refused in ({"operator_share": 0.5}, {"operator_share": 0.5, "sampling": "uniform"},
                    {"operator_share": -0.1, "sampling": "weighted"}, {"operator_share": 1.5, "sampling": "weighted"}):
        with pytest.raises(ValueError, match="operator_share"):
            ImprovementConfig(**refused)


def test_critic_operator_share_is_the_share_of_pairs_in_which_the_correction_has_the_higher_advantage():
    from aloe_critic.improvement import CRITIC_SHARE_BOUNDS, critic_operator_share, operator_preference

    adv = np.array([0.3, 0.1, 0.1, 0.0, -0.2])
    op = np.array([True, True, False, False, False])
    # 0.3 beats all three of the policy's chunks; 0.1 beats two and ties one: (3 + 2.5) / 6
    assert operator_preference(adv, op) == pytest.approx(5.5 / 6)
    assert operator_preference(adv, ~op) == pytest.approx(0.5 / 6)
    assert operator_preference(adv, np.zeros(5, bool)) == 0.5 and operator_preference(adv, np.ones(5, bool)) == 0.5
    assert operator_preference(np.zeros(5), op) == 0.5  # indistinguishable: RLPD's even split
    # clearly better corrections take nearly all the draws but the policy's chunks keep their floor, and back
    assert critic_operator_share([1.0, 1.0, 0.0, 0.0], [True, True, False, False]) == CRITIC_SHARE_BOUNDS[1]
    assert critic_operator_share([0.0, 0.0, 1.0, 1.0], [True, True, False, False]) == CRITIC_SHARE_BOUNDS[0]
    rng = np.random.default_rng(0)  # against the definition, pair by pair, with ties
    a, o = np.round(rng.normal(size=300), 1), rng.random(300) < 0.2
    pairs = a[o][:, None] - a[~o][None, :]
    assert operator_preference(a, o) == pytest.approx(((pairs > 0) + 0.5 * (pairs == 0)).mean())
    for refused in ({"sampling": "uniform"}, {"operator_share_rule": "mean"}):
        with pytest.raises(ValueError, match="operator_share_rule"):
            ImprovementConfig(**{"operator_share_rule": "critic", **refused})


def test_run_iteration_lets_the_critic_set_the_operator_share_and_records_it(initial_checkpoint):
    from aloe_data.ingestion import ingest_bags
    from aloe_critic.evaluate import with_weights
    from aloe_critic.improvement import critic_operator_share, operator_chunks, operator_preference
    from aloe_critic.train import run_iteration
    from aloe_policy.model import FlowMatchingPolicy
    from critic_test_data import small_config

    root = initial_checkpoint
    config = small_config(root, method="aloe")
    imp = config.improvement
    imp.trust_operator, imp.w_max, imp.sampling, imp.operator_share_rule = True, 1.0, "weighted", "critic"
    imp.advantage_pooling = "option"  # the weights from pooled advantages, the share from the per-chunk ones
    dataset = TransitionDataset(ingest_bags([root / "bags"], config.ingestion).episodes, 4, 0.99)
    out = run_iteration(config, dataset, FlowMatchingPolicy.from_pretrained(root / "iter0"))
    weights = out.advantage_stats["weights"]
    operator = operator_chunks(dataset)
    assert 0 < operator.mean() < 1
    share = critic_operator_share(out.values["advantage"], operator)
    assert weights["operator_share"] == pytest.approx(share)
    assert share == pytest.approx(np.clip(weights["operator_preference"], 0.05, 0.95))
    assert weights["operator_preference"] == pytest.approx(operator_preference(out.values["advantage"], operator))
    assert weights["groups"]["operator"]["weight_share"] == pytest.approx(share)  # the draws follow it
    # aloe-evaluate's exported draw weights give the operator's chunks the same share
    rows = [{"human_fraction": float(h), "advantage": float(a)} for h, a in zip(operator, out.values["advantage"])]
    exported = np.array([r["weight"] for r in with_weights(rows, imp.beta, imp.w_max, trust_operator=True,
                                                           operator_share_rule="critic")])
    assert exported[operator].sum() / exported.sum() == pytest.approx(share)


def test_run_iteration_with_trust_operator_weights_no_chunk_above_a_correction(initial_checkpoint):
    """Through the library's iteration (option pooling, as the study runs it); what the weights do
    to the policy is the test above."""
    from aloe_data.ingestion import ingest_bags
    from aloe_critic.train import run_iteration
    from aloe_policy.model import FlowMatchingPolicy
    from critic_test_data import small_config

    root = initial_checkpoint
    config = small_config(root, method="aloe")
    config.improvement.trust_operator, config.improvement.w_max = True, 1.0
    config.improvement.advantage_pooling = "option"
    dataset = TransitionDataset(ingest_bags([root / "bags"], config.ingestion).episodes, 4, 0.99)
    out = run_iteration(config, dataset, FlowMatchingPolicy.from_pretrained(root / "iter0"))
    groups = out.advantage_stats["weights"]["groups"]
    assert "operator" in groups and len(groups) > 1
    top = groups["operator"]["mean_weight"]  # weight 1 = the largest any chunk gets with w_max 1
    assert all(g["mean_weight"] <= top + 1e-6 for g in groups.values()), groups
    assert out.advantage_stats["imitated_chunks"] == len(dataset)


def test_ess_temperature_is_the_smallest_beta_that_keeps_the_target_share_of_the_data():
    from aloe_critic.improvement import ess_fraction, ess_temperature

    adv = np.random.default_rng(0).normal(0.0, 0.1, 2000)
    beta = ess_temperature(adv, 0.5)
    assert ess_fraction(np.exp(adv / beta)) >= 0.5 > ess_fraction(np.exp(adv / (beta * 0.98)))
    # Gaussian advantages: ESS of exp(A / beta) = exp(-(sigma / beta)^2) -> beta = sigma / sqrt(ln 2)
    assert beta == pytest.approx(0.1 / np.sqrt(np.log(2.0)), rel=0.1)
    # the clip does not steer it: a tiny beta would clip every positive A to w_max (binary weights,
    # ESS = the positive share, here 0.5) and satisfy the target by that alone
    assert beta > 0.05
    assert ess_fraction(np.ones(7)) == 1.0 and ess_fraction([1.0, 0.0, 0.0, 0.0]) == 0.25
    assert ess_temperature(np.zeros(10), 0.9) == 1e-4, "uniform already: the smallest beta"
    for refused in ({"weight_mode": "binary"}, {"extraction": "conditioned"}, {"extraction": "ranked"}):
        with pytest.raises(ValueError, match="conditioned extraction have none"):
            ImprovementConfig(target_ess=0.5, **refused)


def test_run_iteration_sets_beta_by_ess_and_records_it(initial_checkpoint):
    from aloe_data.ingestion import ingest_bags
    from aloe_critic.train import run_iteration
    from aloe_policy.model import FlowMatchingPolicy
    from critic_test_data import small_config

    root = initial_checkpoint
    config = small_config(root, method="aloe")
    config.improvement.target_ess = 0.6
    config.improvement.advantage_pooling = "chunk"  # the temperature of the per-chunk advantages below
    policy = FlowMatchingPolicy.from_pretrained(root / "iter0")
    dataset = TransitionDataset(ingest_bags([root / "bags"], config.ingestion).episodes, 4, 0.99)
    out = run_iteration(config, dataset, policy)
    weights = out.advantage_stats["weights"]
    from aloe_critic.improvement import ess_fraction, ess_temperature
    imitated = out.values["advantage"]  # no critic-only bags here: every chunk is imitated
    assert weights["beta"] == pytest.approx(ess_temperature(imitated, 0.6), rel=1e-6)
    assert ess_fraction(np.exp((imitated - imitated.max()) / weights["beta"])) == pytest.approx(0.6, abs=0.01)
    assert weights["beta"] != config.improvement.beta and config.improvement.beta == 0.1, "the config is not mutated"


def test_segment_advantages_average_over_each_run_of_one_source_in_one_episode():
    from aloe_critic.improvement import segment_advantages

    adv = np.array([1.0, 3.0, 10.0, 20.0, 5.0, 7.0, 100.0], np.float32)
    episode = np.array([0, 0, 0, 0, 0, 1, 1])
    tick = np.array([0, 1, 2, 3, 5, 0, 1])        # tick 4 missing (filtered out): a new segment after it
    source = np.array([0, 0, 1, 1, 1, 0, 0])      # policy, policy, operator x3, then episode 1
    np.testing.assert_allclose(segment_advantages(adv, episode, tick, source),
                               [2.0, 2.0, 15.0, 15.0, 5.0, 53.5, 53.5])
    with pytest.raises(ValueError, match="advantage_pooling"):
        ImprovementConfig(advantage_pooling="episode")


def test_option_advantages_judge_a_segment_by_where_it_led():
    from aloe_critic.improvement import option_advantages

    g = 0.9
    # episode 0 (terminal success at tick 4): policy ticks 0-1, operator ticks 2-4, reward 1 at tick 4
    # episode 1 (terminal failure, 3 ticks of the policy): no reward
    # episode 2 (truncated): the policy for 2 ticks
    episode = np.array([0, 0, 0, 0, 0, 1, 1, 1, 2, 2])
    tick = np.array([0, 1, 2, 3, 4, 0, 1, 2, 0, 1])
    source = np.array([0, 0, 1, 1, 1, 0, 0, 0, 0, 0])
    rewards = {0: [0, 0, 0, 0, 1.0], 1: [0, 0, 0], 2: [0, 0]}
    mc = np.concatenate([[sum(g ** k * r for k, r in enumerate(rw[t:])) for t in range(len(rw))]
                         for rw in rewards.values()])
    v = np.array([0.5, 0.4, 0.2, 0.6, 0.9, 0.3, 0.1, 0.0, 0.4, 0.35])
    terminal = np.array([True] * 8 + [False] * 2)
    end = np.array([0, 0, 0, 0, 1, 0, 0, 1, 0, 1], bool)
    adv = option_advantages(v, mc, episode, tick, source, end, terminal, g)
    takeover = g ** 2 * v[2] - v[0]            # the policy's stretch handed over a worse state
    correction = g ** 2 * 1.0 - v[2]           # the correction's reward, then the end: nothing to bootstrap
    failure = 0.0 - v[5]                       # a failed terminal rollout: all it was expected to earn, lost
    truncated = g * v[9] - v[8]                # a truncated one ends at its own last observation
    np.testing.assert_allclose(adv, [takeover] * 2 + [correction] * 3 + [failure] * 3 + [truncated] * 2, rtol=1e-6)
    assert takeover < 0 < correction and failure < 0
    # a gap in the ticks (a filtered view) ends the segment before it at its own last observation
    gap = option_advantages(v[:3], mc[:3], np.zeros(3), np.array([0, 1, 3]), np.zeros(3), np.zeros(3, bool),
                            np.ones(3, bool), g)
    np.testing.assert_allclose(gap, [mc[0] - g * mc[1] + g * v[1] - v[0]] * 2 + [0.0], rtol=1e-6, atol=1e-7)
    assert ImprovementConfig(advantage_pooling="option").advantage_pooling == "option"


def test_run_iteration_pools_advantages_by_segment_for_the_weights_only(initial_checkpoint):
    from aloe_data.ingestion import ingest_bags
    from aloe_critic.train import run_iteration
    from aloe_policy.model import FlowMatchingPolicy
    from critic_test_data import small_config

    root = initial_checkpoint
    config = small_config(root, method="aloe")
    config.improvement.advantage_pooling = "segment"
    dataset = TransitionDataset(ingest_bags([root / "bags"], config.ingestion).episodes, 4, 0.99)
    out = run_iteration(config, dataset, FlowMatchingPolicy.from_pretrained(root / "iter0"))
    raw = out.values["advantage"]
    ep0 = dataset.episode[dataset.indices] == 0  # one source (policy) throughout: one segment
    assert raw[ep0].std() > 0, "the values keep the per-chunk advantages"
    assert out.advantage_stats["fraction_positive_advantage"] == pytest.approx(float((raw > 0).mean()))
    from aloe_critic.improvement import ess_fraction, option_advantages, segment_advantages, unnormalised_weights
    rows = dataset.indices
    pooled = segment_advantages(raw, dataset.episode[rows], dataset.tick_in_episode[rows],
                                dataset.source_fraction[rows].argmax(1))
    imp = config.improvement
    expected = ess_fraction(unnormalised_weights(torch.from_numpy(pooled), imp.beta, imp.w_max).numpy())
    assert out.advantage_stats["weights"]["ess_fraction"] == pytest.approx(expected, rel=1e-5)
    assert expected != pytest.approx(ess_fraction(unnormalised_weights(torch.from_numpy(raw), imp.beta,
                                                                       imp.w_max).numpy()), rel=1e-3)

    config.improvement.advantage_pooling = "option"  # the same critic and values, the segment as one option
    option = run_iteration(config, dataset, FlowMatchingPolicy.from_pretrained(root / "iter0"))
    episode = dataset.episode[rows]
    terminal = np.array([e.terminal for e in dataset.episodes])[episode]
    end = dataset.tick_in_episode[rows] == np.array([len(e) for e in dataset.episodes])[episode] - 1
    expected_adv = option_advantages(option.values["v"], dataset.mc_returns[rows], episode,
                                     dataset.tick_in_episode[rows], dataset.source_fraction[rows].argmax(1),
                                     end, terminal, dataset.gamma)
    expected = ess_fraction(unnormalised_weights(torch.from_numpy(expected_adv), imp.beta, imp.w_max).numpy())
    assert option.advantage_stats["weights"]["ess_fraction"] == pytest.approx(expected, rel=1e-5)


def test_aloe_can_weight_dagger_set_only_the_critic_still_fit_on_everything(initial_checkpoint):
    from aloe_data.ingestion import ingest_bags
    from aloe_critic.train import imitation_set, run_iteration
    from aloe_policy.model import FlowMatchingPolicy
    from critic_test_data import small_config

    root = initial_checkpoint
    config = small_config(root, method="aloe")
    config.improvement.imitate = "operator"
    dataset = TransitionDataset(ingest_bags([root / "bags"], config.ingestion).episodes, 4, 0.99)
    out = run_iteration(config, dataset, FlowMatchingPolicy.from_pretrained(root / "iter0"))
    operator_view, _ = imitation_set(dataset, [], operator_only=True)
    assert len(out.values["advantage"]) == len(dataset), "the critic scores every chunk"
    assert out.advantage_stats["imitated_chunks"] == len(operator_view) < len(dataset)
    groups = out.advantage_stats["weights"]["groups"]
    assert groups["operator"]["weight_share"] == pytest.approx(1.0), "(half-and-half chunks count in both groups)"
    assert 0 < out.advantage_stats["weights"]["ess_fraction"] < 1, "weighted, not Dagger's uniform imitation"
    with pytest.raises(ValueError, match="imitate"):
        ImprovementConfig(imitate="policy")


@pytest.mark.parametrize("guidance", [0.0, 1.0])
def test_advantage_conditioning_learns_both_chunks_and_samples_the_positive_one(guidance):
    from aloe_policy.model import ADVANTAGE_NEGATIVE, ADVANTAGE_UNKNOWN, with_advantage_conditioning

    d, adv = two_chunk_dataset()
    for e in d.episodes:
        e.images["front"] = np.zeros((len(e), 8, 8, 3), np.uint8)
    d.cameras = ["front"]
    plain = tiny_flow_policy()
    plain.fit_normalization(*d.behaviour_arrays())
    config = ImprovementConfig(extraction="conditioned", condition_guidance=guidance, policy_lr=3e-3,
                               policy_steps=400, policy_batch_size=32)
    with pytest.raises(ValueError, match="advantage-conditioned policy"):
        improve_policy(plain, d, adv, config, seed=0)
    policy = with_advantage_conditioning(plain, guidance)
    improve_policy(policy, d, adv, config, seed=0)
    obs = {"images": {"front": torch.zeros(1, 8, 8, 3, dtype=torch.uint8)}, "proprio": torch.ones(1, 1), "task": [""]}

    def high_share(advantage=None):
        s = policy.sample(obs, 200, generator=torch.Generator().manual_seed(1), advantage=advantage)
        return float((s[0, :, :, 0].mean(-1) > 0).float().mean())

    assert high_share() > 0.9, "deployed (positive): the high-advantage chunk"
    assert high_share(ADVANTAGE_NEGATIVE) < 0.1, "the low-advantage chunk was learnt too, under its label"
    assert 0.15 < high_share(ADVANTAGE_UNKNOWN) < 0.85, "unlabelled (dropout): both chunks, as bc"


def test_run_iteration_conditioned_extraction_returns_a_conditioned_policy_that_round_trips(initial_checkpoint,
                                                                                             tmp_path):
    from aloe_data.ingestion import ingest_bags
    from aloe_critic.improvement import segment_advantages
    from aloe_critic.train import run_iteration
    from aloe_policy.model import FlowMatchingPolicy, load_checkpoint
    from critic_test_data import small_config

    root = initial_checkpoint
    config = small_config(root, method="aloe")
    config.improvement.extraction = "conditioned"
    config.improvement.condition_guidance = 0.5
    dataset = TransitionDataset(ingest_bags([root / "bags"], config.ingestion).episodes, 4, 0.99)
    before = FlowMatchingPolicy.from_pretrained(root / "iter0")
    out = run_iteration(config, dataset, before)
    assert out.policy is not before and out.policy.config.advantage_conditioning
    assert out.policy.config.advantage_guidance == 0.5
    assert not before.config.advantage_conditioning, "the critic evaluated the policy as it was"
    rows = dataset.indices
    pooled = segment_advantages(out.values["advantage"], dataset.episode[rows], dataset.tick_in_episode[rows],
                                dataset.source_fraction[rows].argmax(1))
    cond = out.advantage_stats["conditioned"]
    assert cond["positive_fraction"] == pytest.approx(float((pooled > 0).mean()))
    assert "weights" not in out.advantage_stats, "no weights are used"
    policy_id = out.policy.save_pretrained(tmp_path / "policy")
    loaded = load_checkpoint(tmp_path / "policy")
    assert loaded.policy_id == policy_id and loaded.config == out.policy.config
