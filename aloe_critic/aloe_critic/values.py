"""Value signals for the chunk critic, and the loop that fits it.

Same network (``ChunkCritic``), same data, only the regression target differs:

* ``aloe``     y = R_t^H + gamma^H (1 - done) Agg_k[ mean_j Qbar_k(o_{t+H}, A'_j) ],  A'_j ~ pi  (current policy)
* ``td1``      y = R_t^H + gamma^H (1 - done) Agg_k[ Qbar_k(o_{t+H}, A_{t+H}) ]   (recorded next chunk:
               one-step SARSA-style TD, i.e. the value of the *behaviour* that collected the data)
* ``progress`` y = G_t = sum_i gamma^i r_{t+i}  (Monte-Carlo return-to-go of the behaviour, the
               RECAP-like progress signal; no bootstrapping)

``td_lambda`` > 0 (aloe, td1; ``LambdaReturns``): chunk-level lambda-returns along the recorded trajectory
(Peng's Q(lambda), uncorrected), y_t = R_t^H + gamma^H (1 - done) [(1 - lambda) V(o_{t+H}) + lambda y_{t+H}],
V the bootstrap value above; lambda = 0 is the one-chunk target, lambda -> 1 the behaviour's return (progress).

Every member k fits only its bootstrap share of the transitions (``bootstrap_masks``):
    L = sum_k (1/B) sum_i m_k,i (Q_k(o_i, A_i) - y_i)^2

``value_data: current`` (``fit_current_value``): V(o) of the advantages from a second critic of the same
config fitted only on the evaluated policy's own chunks; Q stays the all-data critic's. Where the data has one
chunk per state, an all-data critic's mean over pi's chunks copies the outcome of the recorded one (an operator's
correction's success becomes pi's value there, and the correction's advantage vanishes); pi's own chunks
cannot teach it that. Measured (BENCHMARKS.md, issue 14, part 19): better on the buffer it was designed on, worse
on two fresh ones (a V fitted on pi's few episodes extrapolates badly to the states they do not cover): off by
default.
"""

from __future__ import annotations

import numpy as np
import torch

from aloe_data.progress import progress_bar

from .critic import ChunkCritic, CriticConfig, PolicySampleBank, gradient_similarity
from .dataset import observation_rows
from .distributed import (DEFAULT_BATCH_BLOCKS, Block, all_gather_objects, block_rng, global_batch_mean,
                          global_batches, rank_world, sum_gradients)

VALUE_METHODS = ("aloe", "td1", "progress")
BOOTSTRAP_METHODS = ("aloe", "td1")  # the methods whose target bootstraps on a value after the chunk


def chunked_td_target(returns: torch.Tensor, done: torch.Tensor, next_value: torch.Tensor, gamma: float,
                      chunk_horizon: int) -> torch.Tensor:
    """y = R_t^H + gamma^H (1 - done) * next_value; all (B,)."""
    return returns + gamma ** chunk_horizon * (1.0 - done) * next_value


@torch.no_grad()
def aloe_next_value(critic: ChunkCritic, batch, next_policy_chunks: torch.Tensor, generator: torch.Generator | None = None,
                    next_features: torch.Tensor | None = None) -> torch.Tensor:
    """(B,) Agg_k mean_j Qbar_k(o_{t+H}, A'_j): the current policy's value after the chunk."""
    q_next = critic.q_values(batch.next_obs, next_policy_chunks, target=True, features=next_features)  # (K, B, n)
    return critic.aggregate(q_next.mean(-1), generator)                             # Agg_k mean_j


@torch.no_grad()
def aloe_target(critic: ChunkCritic, batch, next_policy_chunks: torch.Tensor, gamma: float,
                generator: torch.Generator | None = None, next_features: torch.Tensor | None = None) -> torch.Tensor:
    """ALOE target for the current policy; next_policy_chunks: (B, n, H, A) ~ pi(.|o_{t+H});
    next_features: target-encoder features of o_{t+H} when already computed."""
    v_next = aloe_next_value(critic, batch, next_policy_chunks, generator, next_features)
    return chunked_td_target(batch.returns, batch.done, v_next, gamma, critic.chunk_horizon)


@torch.no_grad()
def td1_next_value(critic: ChunkCritic, batch, generator: torch.Generator | None = None,
                   next_features: torch.Tensor | None = None) -> torch.Tensor:
    """(B,) Agg_k Qbar_k(o_{t+H}, A_{t+H}): the recorded next chunk's value."""
    q_next = critic.q_values(batch.next_obs, batch.next_chunks, target=True, features=next_features)  # (K, B)
    return critic.aggregate(q_next, generator)


@torch.no_grad()
def td1_target(critic: ChunkCritic, batch, gamma: float, generator: torch.Generator | None = None,
               next_features: torch.Tensor | None = None) -> torch.Tensor:
    """One-step (one-chunk) TD of the behaviour: bootstrap on the recorded next chunk A_{t+H}."""
    return chunked_td_target(batch.returns, batch.done, td1_next_value(critic, batch, generator, next_features),
                             gamma, critic.chunk_horizon)


def progress_target(batch) -> torch.Tensor:
    """Monte-Carlo return-to-go of the behaviour (no bootstrap)."""
    return batch.mc_returns


def bootstrap_masks(num_transitions: int, ensemble_size: int, fraction: float, seed: int) -> torch.Tensor:
    """(K, N) float32 0/1: member k fits transition i where 1. Drawn once per fit from the seed
    (so every rank of a torchrun group draws the same masks); all ones at fraction 1."""
    if fraction >= 1.0:
        return torch.ones(ensemble_size, num_transitions)
    rng = np.random.default_rng([int(seed), 0xB007])
    return torch.from_numpy((rng.random((ensemble_size, num_transitions)) < fraction).astype(np.float32))


def next_value(method: str, critic: ChunkCritic, batch, bank: PolicySampleBank | None = None,
               generator: torch.Generator | None = None, next_features: torch.Tensor | None = None) -> torch.Tensor:
    """(B,) the value after the chunk that ``method``'s one-chunk target bootstraps on (aloe, td1)."""
    if method == "aloe":
        if bank is None:
            raise ValueError("the aloe target needs samples of the current policy (a PolicySampleBank)")
        n = critic.config.num_policy_samples
        return aloe_next_value(critic, batch, bank.chunks(batch.next_tick.cpu().numpy(), n).to(batch.returns.device),
                               generator, next_features)
    if method == "td1":
        return td1_next_value(critic, batch, generator, next_features)
    raise ValueError(f"{method!r} does not bootstrap; next_value is for {BOOTSTRAP_METHODS}")


def value_target(method: str, critic: ChunkCritic, batch, gamma: float, bank: PolicySampleBank | None = None,
                 generator: torch.Generator | None = None, next_features: torch.Tensor | None = None) -> torch.Tensor:
    if method in BOOTSTRAP_METHODS:
        return chunked_td_target(batch.returns, batch.done, next_value(method, critic, batch, bank, generator,
                                                                       next_features), gamma, critic.chunk_horizon)
    if method == "progress":
        return progress_target(batch)
    raise ValueError(f"unknown value method {method!r}; use one of {VALUE_METHODS}")


class LambdaReturns:
    """Chunk-level lambda-returns over a dataset view (``td_lambda`` > 0), recomputed from the target networks
    every ``lambda_refresh`` critic steps (``refresh``) and looked up per batch (``targets``):

        y_t = R_t^H + gamma^H (1 - done_t) [(1 - lambda) V(o_{t+H}) + lambda y_{t+H}]

    where the transition at t+H is in the view (the chunk ends inside the episode); else y_t is the one-chunk
    target R_t^H + gamma^H (1 - done_t) V(o_{t+H}). V is ``next_value`` of the method (aloe: pi's value after the
    chunk). Uncorrected (Peng's Q(lambda)): the recorded continuation stands in for pi's with weight lambda, so
    it leans towards the behaviour's value where the two differ; lambda = 0 gives the one-chunk target.
    The table depends only on the target networks, the bank and (seed, step): every torchrun rank computes
    the same one."""

    def __init__(self, dataset, lam: float, batch_size: int = 1024):
        if not 0.0 < lam < 1.0:
            raise ValueError(f"td_lambda must be in (0, 1) for lambda-returns, got {lam}")
        self.dataset, self.lam, self.batch_size = dataset, float(lam), int(batch_size)
        self.rows = np.sort(dataset.indices)
        H = dataset.chunk_horizon
        in_view = np.zeros(len(dataset.done), bool)
        in_view[self.rows] = True
        nxt = dataset.next_transition[self.rows]
        follows = (nxt == self.rows + H) & in_view[nxt]            # the chunk's successor is a transition of the view
        depth = np.zeros(len(dataset.done), np.int64)                # links to the end of its chain in the view
        for i, f in zip(self.rows[::-1], follows[::-1]):
            if f:
                depth[i] = depth[i + H] + 1
        d = depth[self.rows]
        self.levels = [self.rows[d == k] for k in range(int(d.max()) + 1)] if len(d) else []
        self.table = torch.zeros(len(dataset.done))
        self.discount = dataset.gamma ** H

    @torch.no_grad()
    def refresh(self, value_of, features: torch.Tensor | None, generator: torch.Generator,
                device: str | torch.device = "cpu") -> None:
        """``value_of(batch, next_features, generator)`` -> (B,) V(o_{t+H}) of a batch of the view's rows (on
        ``device``, the critic's); the table itself stays on the CPU."""
        v = torch.zeros(len(self.dataset.done))
        for s in range(0, len(self.rows), self.batch_size):
            rows = self.rows[s:s + self.batch_size]
            batch = self.dataset.batch(rows, observations=features is None).to(device)
            v[torch.from_numpy(rows)] = value_of(batch, None if features is None else features[batch.next_tick],
                                                 generator).float().cpu()
        R = torch.from_numpy(self.dataset.returns).float()
        cont = torch.from_numpy(1.0 - self.dataset.done).float() * self.discount
        y = torch.zeros_like(v)
        for k, rows in enumerate(self.levels):                       # chain ends first: y_{t+H} is known
            r = torch.from_numpy(rows)
            after = v[r] if k == 0 else (1.0 - self.lam) * v[r] + self.lam * y[r + self.dataset.chunk_horizon]
            y[r] = R[r] + cont[r] * after
        self.table = y

    def targets(self, index: torch.Tensor) -> torch.Tensor:
        return self.table[index.cpu()].to(index.device)


def fit_critic(critic: ChunkCritic, dataset, method: str, bank: PolicySampleBank | None = None,
               config: CriticConfig | None = None, seed: int = 0, device: str | torch.device = "cpu",
               progress: bool = False, log_every: int = 50, batch_blocks: int = DEFAULT_BATCH_BLOCKS) -> list[dict]:
    """Fit ``critic`` on ``dataset`` with the value signal ``method``; returns the training curve
    (rows: step, critic_loss, q_mean, target_mean).

    loss = sum_k mean_batch (Q_k(o_t, A_t) - y)^2 (``value_loss`` "hl_gauss": the cross-entropy of each
    member's value histogram to HL-Gauss(y) instead), Adam, Polyak-averaged targets after each step;
    with ``diversity_eta`` > 0, + eta mean_batch gradient_similarity (EDAC; the curve then has
    ``gradient_similarity``). With ``td_lambda`` > 0 (aloe, td1) y is the lambda-return (``LambdaReturns``),
    recomputed from the target networks every ``lambda_refresh`` steps.
    batch_blocks: dropout blocks per global batch (distributed.py): under torchrun each rank
    fits on its blocks and the result equals the one-process run.
    """
    config = config or critic.config
    if method not in VALUE_METHODS:
        raise ValueError(f"unknown value method {method!r}; use one of {VALUE_METHODS}")
    gamma = dataset.gamma
    if dataset.chunk_horizon != critic.chunk_horizon:
        raise ValueError(f"dataset chunk_horizon {dataset.chunk_horizon} != critic's {critic.chunk_horizon}")
    gen = torch.Generator().manual_seed(seed)
    critic.to(device).train()
    opt = torch.optim.Adam(critic.trainable_parameters(), lr=config.critic_lr)
    curve = []
    B, K = config.critic_batch_size, critic.config.ensemble_size
    # A frozen encoder's features (online = target) are computed once, not per step; nothing
    # random happens in the forward then, so this process's rows run as one block.
    table = critic.feature_table(dataset, device=device) if critic.encoder_frozen else None
    masks = bootstrap_masks(len(dataset.done), K, config.bootstrap_fraction, seed).to(device)   # (K, ticks)
    diverse = config.diversity_eta > 0 and K > 1
    lam = LambdaReturns(dataset, config.td_lambda) if config.td_lambda > 0 and method in BOOTSTRAP_METHODS else None
    shards = progress_bar(global_batches(len(dataset), B, config.critic_steps, seed, batch_blocks),
                          total=config.critic_steps, desc=f"critic ({method})", unit="step", disable=not progress)
    for shard in shards:
        batch = dataset.batch(dataset.indices[shard.my_positions], observations=table is None).to(device)
        feats = next_feats = None
        if table is not None:
            feats, next_feats = table[batch.obs_tick], table[batch.next_tick]
        if lam is None:
            y = value_target(method, critic, batch, gamma, bank, gen, next_feats)       # (b,) no dropout
        else:
            if shard.step % config.lambda_refresh == 0:  # the same table on every rank: seeded by (seed, step)
                lam.refresh(lambda b, nf, g: next_value(method, critic, b, bank, g, nf), table,
                            torch.Generator().manual_seed(int(seed) * 1_000_003 + shard.step), device)
            y = lam.targets(batch.index).to(device)
        opt.zero_grad(set_to_none=True)
        loss_sum, q_sum, sim_sum = 0.0, 0.0, 0.0
        blocks = shard.blocks if table is None else [Block(shard.blocks[0].index, slice(None), shard.mine)]
        for block in blocks:  # L = sum_k (1/B) sum_i m_ki l(Q_k(o_i, A_i), y_i)
            with block_rng(seed, shard.step, block.index, device):  # the online encoder's dropout masks
                per, q, grads = critic.member_losses(observation_rows(batch.obs, block.rows), batch.chunks[block.rows],
                                                     y[block.rows], features=None if feats is None else feats[block.rows],
                                                     chunk_grad=diverse)                  # (K, b) each
            m = masks[:, batch.index[block.rows]]                                         # (K, b) bootstrap
            block_loss = (m * per).sum()
            total = block_loss
            if diverse:  # + eta * sum_i (mean pairwise cosine of the members' chunk gradients at row i)
                similarity = gradient_similarity(grads).sum()
                total = total + config.diversity_eta * similarity
                sim_sum += float(similarity.detach())
            (total / B).backward()
            loss_sum, q_sum = loss_sum + float(block_loss.detach()), q_sum + float(q.detach().sum())
        sum_gradients(critic.trainable_parameters())  # the gradient of the global-batch loss, on every rank
        torch.nn.utils.clip_grad_norm_(critic.trainable_parameters(), config.critic_grad_clip)
        opt.step()
        if method != "progress":  # progress regresses fixed returns; no target network involved
            critic.polyak_update(config.tau)
        if shard.step % log_every == 0 or shard.step == config.critic_steps - 1:
            curve.append({"step": shard.step, "critic_loss": global_batch_mean(loss_sum, B) / K,
                          "q_mean": global_batch_mean(q_sum, B) / K, "target_mean": global_batch_mean(float(y.sum()), B)})
            if diverse:
                curve[-1]["gradient_similarity"] = global_batch_mean(sim_sum, B)
            shards.set_postfix(loss=f"{curve[-1]['critic_loss']:.4g}")
    if method == "progress":
        critic.polyak_update(1.0)
    return curve


VALUE_KEYS = ("q", "v", "advantage", "q_std", "v_se", "v_std_pi", "best_q", "best_index", "best_chunk")


@torch.no_grad()
def chunk_values(critic: ChunkCritic, dataset, policy, n: int | None = None, batch_size: int = 256,
                 device: str | torch.device = "cpu", seed: int = 0) -> dict[str, np.ndarray]:
    """Per recorded chunk of ``dataset`` (its view order): Q, V, advantage, ensemble std of Q,
    ``v_se`` (standard error of V from its samples), ``v_std_pi`` (spread of pi's chunks' values),
    and the critic-ranked choice among {recorded chunk} + the samples of pi at o_t: ``best_index``
    (-1: the recorded chunk, j: sample j), its pessimistic value ``best_q`` and the chunk itself
    ``best_chunk`` (N, H, A) (critic-ranked extraction imitates it).

    V(o_t) averages ``n`` (default ``num_value_samples``) chunks of ``policy`` drawn here, per batch
    (generator seeded by the batch's position: the same on every rank), and dropped after use: memory
    is one batch's samples, not n per tick of the dataset. Under torchrun the batches are shared out
    over the ranks and every rank gets all values."""
    critic.to(device).eval()
    n = int(n or critic.config.num_value_samples)
    rank, world = rank_world()
    view = dataset.indices
    starts = list(range(0, len(view), batch_size))
    table = critic.feature_table(dataset, device=device) if critic.encoder_frozen else None
    mine = {}
    for s in starts[rank::world]:
        batch = dataset.batch(view[s:s + batch_size]).to(device)
        feats = critic.features(batch.obs) if table is None else table[batch.obs_tick]
        gen = torch.Generator(device="cpu").manual_seed(int(seed) * 1_000_003 + 7 + s)
        pol = policy.sample(batch.obs, n, generator=gen).float().to(device)                 # (b, n, H, A)
        res = critic.evaluate(batch.obs, batch.chunks, pol, features=feats)  # one ensemble pass over pol
        best_q, best = res["sampled_q"].max(-1)                                           # (b,) of (b, n)
        keep = res["q"] >= best_q                                                         # the recorded chunk wins ties
        res["best_q"] = torch.where(keep, res["q"], best_q)
        res["best_index"] = torch.where(keep, torch.full_like(best, -1), best)
        res["best_chunk"] = torch.where(keep[:, None, None], batch.chunks.to(pol.device),
                                        pol[torch.arange(len(best)), best])
        mine[s] = {k: res[k].cpu().numpy() for k in VALUE_KEYS}
    if world > 1:
        for part in all_gather_objects(mine):
            mine.update(part)
    critic.train()
    empty = {"best_chunk": np.zeros((0, dataset.chunk_horizon, dataset.action_dim), np.float32)}
    return {k: np.concatenate([mine[s][k] for s in starts]) if starts else empty.get(k, np.zeros(0, np.float32))
            for k in VALUE_KEYS}


MIN_CURRENT_EPISODES = 2  # value_data "current" needs at least this many episodes the evaluated policy drove


def current_policy_view(dataset, policy_id: str):
    """The transitions whose whole chunk is ``policy_id``'s own driving (its rollouts, and its stretches before
    an operator takes over): the data of V under ``value_data: current``."""
    return dataset.filter(policy_id=policy_id, min_policy_fraction=1.0)


def fit_current_value(make_critic, dataset, policy, method: str, bank: PolicySampleBank | None, config: CriticConfig,
                      seed: int = 0, device: str | torch.device = "cpu", progress: bool = False,
                      batch_blocks: int = DEFAULT_BATCH_BLOCKS):
    """``value_data: current``: a critic from ``make_critic()`` fitted (``method``, ``bank``: as the Q critic's)
    on ``current_policy_view(dataset, policy.policy_id)`` -> (critic, curve, stats); (None, [], stats) when the
    evaluated policy drove fewer than ``MIN_CURRENT_EPISODES`` episodes of the data (V then stays the Q critic's;
    stats says why)."""
    view = current_policy_view(dataset, policy.policy_id)
    episodes = len(np.unique(view.episode[view.indices]))
    stats = {"value_data": "current", "transitions": int(len(view)), "episodes": int(episodes)}
    if episodes < MIN_CURRENT_EPISODES:
        stats.update(value_data="all", reason=f"policy {policy.policy_id} drove {episodes} episode(s) of the data, "
                                              f"fewer than {MIN_CURRENT_EPISODES}: V from the all-data critic")
        return None, [], stats
    critic = make_critic()
    curve = fit_critic(critic, view, method, bank, config, seed=seed, device=device, progress=progress,
                       batch_blocks=batch_blocks)
    return critic, curve, stats


def with_value_of(values: dict[str, np.ndarray], v_values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``values`` (``chunk_values`` of the Q critic) with V, its standard error and pi's spread from ``v_values``
    (``chunk_values`` of the V critic on the same view): advantage = Q - V. The Q critic's own V is kept as
    ``v_all``."""
    out = dict(values)
    out["v_all"] = values["v"]
    for key in ("v", "v_se", "v_std_pi"):
        out[key] = v_values[key]
    out["advantage"] = (values["q"] - v_values["v"]).astype(values["q"].dtype)
    return out
