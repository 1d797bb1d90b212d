"""Policy improvement: advantage-weighted flow matching on the recorded chunks.

    w_i = clip(exp(A_i / beta), 0, w_max) / mean_batch(clip(exp(A / beta), 0, w_max))     (mode "exp")
    w_i = 1[A_i > 0] / mean_batch(1[A > 0])                                                  (mode "binary")
    L   = mean_batch policy.loss(o_i, A_i, w_i)

Sampling (``sampling``): ``uniform`` draws each batch uniformly from the imitated chunks and weights
the loss (above); ``weighted`` draws chunk i with probability w_i / sum_j w_j (the unnormalised weights)
and imitates every drawn chunk with weight 1: the same objective in expectation,
    E_uniform[w l] / E_uniform[w] = E_{i ~ w}[l],
but a full batch of the chunks that carry the weight. With uniform draws a batch holds ESS x B chunks
that count (the weights' effective sample size: 2-35 % of the chunks in the studies), so a fixed number of
steps learns from a few chunks per step while Dagger's and bc's batches count whole.

Temperature by effective sample size (``target_ess`` > 0): beta is chosen once per iteration,
over the imitated chunks' advantages, as the smallest beta whose weights exp(A / beta) keep
    ESS(w) / n = (sum w)^2 / (n sum w^2) >= target_ess       (before the w_max clip),
so the weighting may concentrate the update but never on fewer than that share of the data (the
role of the KL bound that sets the temperature in REPS / MPO; with little data, discarding it
costs more than a noisy advantage gains).

Segment pooling (``advantage_pooling="segment"``): the weight of a chunk uses the mean advantage of
its segment, the run of consecutive chunks of one episode driven by one source (one operator
correction; one stretch of the policy's driving):
    A_seg(i) = mean_{j in segment(i)} A_j.
Consecutive chunks share H-1 of their H actions, so their true advantages hardly differ while the
critic's errors on them are partly independent; a correction is judged as a whole, and the
per-chunk noise that would concentrate the weights on a few chunks averages out.

Option pooling (``advantage_pooling="option"``): the segment treated as one temporally extended
action, its advantage bootstrapped by the critic at both ends,
    A_opt = sum_{k<L} gamma^k r_{t0+k} + gamma^L V(o_{t0+L}) - V(o_{t0})     (V = 0 after a terminal end),
so a stretch of driving that ends in a stuck state or a takeover is judged by where it led, not
diluted by its length: the mean of its per-chunk advantages is about A_opt / L, and in a state from
which nothing succeeds every chunk has A ~ 0 (a failed 100-tick rollout gets weight ~1 under mean
pooling). A correction is judged by whether the state it hands back is better than the one it took.

Critic-ranked extraction (``extraction="ranked"``): the chunk imitated at o_i is the best under the
pessimistic critic among the recorded one and N samples of pi at o_i,
    A*_i = argmax_{A in {A_i} + {A_j ~ pi(.|o_i)}} Agg_k Q_k(o_i, A),     L = mean_batch policy.loss(o_i, A*_i, 1)
("implicit" policy extraction by selection; values.chunk_values picks them: ``best_chunk``).

Advantage-conditioned extraction (``extraction="conditioned"``; RECAP in pi*0.6, CFGRL): every chunk
is imitated with weight 1, and the policy is told which side of the threshold its advantage lies on,
    c_i = positive if A_i > condition_threshold else negative   (unknown with prob. condition_dropout),
    L   = mean_batch || v_theta(x_t, t, o_i, c_i) - u_i ||^2,
then samples conditioned on positive (guidance ``condition_guidance``: modeling.py). Unlike weights,
this keeps all the data (a bad correction's approach still teaches the approach) and leaves the
critic to say what "good" looks like.

Intervention chunks are ordinary data here: they are weighted by the same advantage
(``imitate="operator"``: only they and the demonstrations are imitated, weighted), unless
``trust_operator``: the operator's chunks (demonstrations, corrections) keep weight 1, as Dagger imitates
them, and the advantage weights only the policy's own chunks,
    w_i = 1 (operator chunk),   clip(exp(A_i / beta), 0, w_max) or 1[A_i > 0] (the policy's chunk),
with ``w_max = 1`` a soft filter: the policy's chunks at most as heavy as a correction, the ones the
critic scores below the policy's average faded out. The critic is used where it ranks well (the
policy's own states; BENCHMARKS "ALOE vs its rivals", part 1) and not where it is nearly blind
(pi's unexecuted chunks at the states where the operator took over).

Operator share of the draws (``operator_share`` s > 0, weighted sampling): the two sources are drawn
in a fixed proportion, each in proportion to its own weights,
    p_i = s w_i / sum_{j in operator} w_j  (operator chunk),   (1 - s) w_i / sum_{j in policy} w_j  (the policy's),
as RLPD draws half of each batch from prior data and half from online data (Ball et al. 2023). By weight
alone the policy's own chunks, many more every iteration, take most of the draws (83-86 % by the fourth
iteration with the skilled operator) and the corrections Dagger imitates whole are diluted (BENCHMARKS
"ALOE vs its rivals", part 15). A source with no weight
gives its share to the other.

The share set by the critic (``operator_share_rule="critic"``): per iteration,
    s = clip(P(A_op > A_pol) + P(A_op = A_pol) / 2, 0.05, 0.95),
the probability that a correction's chunk has a higher advantage than one of the policy's own chunks
over all such pairs of the imitated chunks (the Mann-Whitney statistic U / (n_op n_pol); per-chunk
advantages Q(o, A) - V(o), not the pooled ones, whose size grows with a segment's length): 0.5 when the
critic cannot tell the two apart (RLPD's even split), toward 1 (Dagger's set) when the operator's
chunks are clearly better, below 0.5 when the policy's own are. One number from thousands of
advantages: per chunk the advantages are too noisy to weight by (A > 0 at chance on the policy's own
chunks), but the groups' order is stable (the skilled operator's chunks A > 0 in 74-93 % of cases, the
imperfect one's in 40-60 %, BENCHMARKS "ALOE vs its rivals", part 18). Each source keeps 5 % of the
draws, in case the critic's verdict is wrong. The ``bc``
baseline is the same loop with w = 1 on all data, interventions included (HG-DAgger); ``dagger``
w = 1 on the operator's chunks only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from aloe_data.progress import progress_bar
from aloe_data.schema import SOURCE_HUMAN
from aloe_policy.model import ADVANTAGE_NEGATIVE, ADVANTAGE_POSITIVE, ADVANTAGE_UNKNOWN

from .dataset import observation_rows
from .distributed import DEFAULT_BATCH_BLOCKS, block_rng, global_batch_mean, global_batches, sum_gradients

WEIGHT_MODES = ("exp", "binary")
POOLINGS = ("chunk", "segment", "option")
EXTRACTIONS = ("weighted", "ranked", "conditioned")
SAMPLINGS = ("uniform", "weighted")
SHARE_RULES = ("fixed", "critic")
CRITIC_SHARE_BOUNDS = (0.05, 0.95)  # operator_share_rule "critic": each source keeps at least 5 % of the draws
IMITATED = ("all", "operator")


@dataclass
class ImprovementConfig:
    """Advantage-weighted flow matching (and bc) hyper-parameters."""

    beta: float = 0.1            # advantage temperature (units of the value: sparse success -> [0, 1])
    advantage_pooling: str = "segment"  # segment: the mean advantage over a chunk's run of consecutive chunks
                                        # of one source in one episode (segment_advantages); chunk: its own;
                                        # option: the segment's advantage as one option (option_advantages)
                                        # One step on the same data, segment vs chunk: 0.375 vs 0.175 and 0.225
                                        # vs 0.025 (tuning seed), 0.53 vs 0.25 and 0.47 vs 0.38 (fresh seed 9),
                                        # skilled / imperfect operator (BENCHMARKS "ALOE vs its rivals", 5)
    target_ess: float = 0.0      # > 0: beta chosen per iteration so the weights' ESS is this share of the
                                 # imitated chunks (ess_temperature); 0 = the fixed beta above
    w_max: float = 20.0          # weight clip before per-batch normalisation
    weight_mode: str = "exp"     # exp | binary (extraction "weighted")
    extraction: str = "weighted"  # weighted: recorded chunks x advantage weights; ranked: imitate the critic's best
                                  # of {recorded chunk, num_value_samples chunks of pi} at each observation, weight 1;
                                  # conditioned: every chunk, weight 1, with the indicator A > condition_threshold
    condition_threshold: float = 0.0  # conditioned: a chunk is "positive" when its (pooled) advantage exceeds this
    condition_dropout: float = 0.3    # conditioned: share of chunks trained with the indicator "unknown"
    condition_guidance: float = 0.0   # conditioned: classifier-free guidance when sampling (0 = conditional only)
    policy_lr: float = 1e-4      # AdamW learning rate
    policy_steps: int = 2000     # gradient steps per iteration
    policy_batch_size: int = 64  # recorded chunks per policy step
    policy_grad_clip: float = 1.0  # max global gradient norm
    imitate: str = "all"         # all: every imitable chunk, weighted; operator: only the chunks the operator
                                 # executed (demonstrations, interventions; Dagger's set), weighted: the critic,
                                 # fit on everything, decides how far each correction is trusted
    sampling: str = "uniform"    # uniform: batches drawn uniformly, the loss weighted; weighted: chunks drawn in
                                 # proportion to their weight, each imitated with weight 1 (aloe_critic.improvement)
    trust_operator: bool = False  # weighted extraction: the operator's chunks keep weight 1 (Dagger's), the
                                  # advantage weights the policy's own chunks only (aloe_critic.improvement)
    operator_share: float = 0.0  # weighted sampling: the share of the draws that goes to the operator's chunks
                                 # (each source drawn by its own weights); 0 = by weight alone (improvement.py)
    operator_share_rule: str = "fixed"  # fixed: operator_share as set; critic: set per iteration to how often the
                                        # critic prefers a correction to the policy's own chunk (critic_operator_share)
    ema_decay: float = 0.0       # > 0: the policy ends with the exponential moving average of its weights
                                 # over the steps (as diffusion/flow policies are usually deployed); 0 = last step

    def __post_init__(self):
        if self.weight_mode not in WEIGHT_MODES:
            raise ValueError(f"weight_mode must be one of {WEIGHT_MODES}, got {self.weight_mode!r}")
        if self.advantage_pooling not in POOLINGS:
            raise ValueError(f"advantage_pooling must be one of {POOLINGS}, got {self.advantage_pooling!r}")
        if self.imitate not in IMITATED:
            raise ValueError(f"imitate must be one of {IMITATED}, got {self.imitate!r}")
        if self.extraction not in EXTRACTIONS:
            raise ValueError(f"extraction must be one of {EXTRACTIONS}, got {self.extraction!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if not 0.0 <= self.condition_dropout < 1.0 or self.condition_guidance < 0:
            raise ValueError(f"condition_dropout must be in [0, 1) and condition_guidance >= 0, got "
                             f"{self.condition_dropout}, {self.condition_guidance}")
        if not 0.0 <= self.target_ess <= 1.0:
            raise ValueError(f"target_ess must be in [0, 1], got {self.target_ess}")
        if self.target_ess > 0 and (self.weight_mode != "exp" or self.extraction != "weighted"):
            raise ValueError("target_ess sets the temperature of exp weights; binary weights, ranked and "
                             "conditioned extraction have none")
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {SAMPLINGS}, got {self.sampling!r}")
        if self.sampling == "weighted" and self.extraction != "weighted":
            raise ValueError("sampling 'weighted' draws chunks by their advantage weights; ranked and conditioned "
                             "extraction imitate with weight 1 (use sampling 'uniform')")
        if self.trust_operator and (self.extraction != "weighted" or self.target_ess > 0):
            raise ValueError("trust_operator fixes the operator chunks' weights at 1 in weighted extraction with a "
                             "fixed beta; ranked and conditioned extraction and target_ess have no weights to fix")
        if not 0.0 <= self.operator_share <= 1.0:
            raise ValueError(f"operator_share must be in [0, 1] (0 = draws by weight alone), got {self.operator_share}")
        if self.operator_share > 0 and self.sampling != "weighted":
            raise ValueError("operator_share sets how the weighted draws are split between the operator's and the "
                             "policy's chunks: it needs sampling 'weighted'")
        if self.operator_share_rule not in SHARE_RULES:
            raise ValueError(f"operator_share_rule must be one of {SHARE_RULES}, got {self.operator_share_rule!r}")
        if self.operator_share_rule == "critic" and self.sampling != "weighted":
            raise ValueError("operator_share_rule 'critic' sets how the weighted draws are split between the operator's "
                             "and the policy's chunks: it needs sampling 'weighted'")
        if self.beta <= 0 or self.w_max <= 0:
            raise ValueError(f"beta and w_max must be > 0, got beta={self.beta} w_max={self.w_max}")


def unnormalised_weights(adv: torch.Tensor, beta: float, w_max: float, mode: str = "exp",
                         trusted=None) -> torch.Tensor:
    """Per-chunk weights (B,) before the per-batch normalisation: exp: clip(exp(A / beta), 0, w_max)
    (computed as exp(min(A / beta, log w_max)): no overflow); binary: 1[A > 0]; 1 where ``trusted``
    (B,) bool is set (``trust_operator``). What an external trainer consumes (aloe-evaluate's weight column)."""
    adv = torch.as_tensor(adv, dtype=torch.float32)
    if mode == "exp":
        w = torch.exp(torch.clamp(adv / beta, max=math.log(w_max)))
    elif mode == "binary":
        w = (adv > 0).float()
    else:
        raise ValueError(f"unknown weight mode {mode!r}; use one of {WEIGHT_MODES}")
    if trusted is not None:
        w = torch.where(torch.as_tensor(trusted, dtype=torch.bool), torch.ones_like(w), w)
    return w


def operator_chunks(dataset) -> np.ndarray:
    """(len(dataset),) bool: the chunks the operator mostly executed (demonstrations and
    interventions: Dagger's set), in the dataset view's order."""
    return dataset.source_fraction[dataset.indices][:, SOURCE_HUMAN] >= 0.5


def draw_probabilities(w: np.ndarray, operator: np.ndarray, operator_share: float = 0.0) -> np.ndarray:
    """Weighted sampling's draw probabilities (N,) from the unnormalised weights ``w`` (N,): w / sum(w),
    or with ``operator_share`` s > 0 the ``operator`` (N,) bool chunks hold s of the mass and the others
    1 - s, each group in proportion to its weights; a group with no weight gives its share to the other."""
    w = np.asarray(w, np.float64)
    if not w.sum() > 0:
        raise ValueError("sampling 'weighted': no chunk has a positive weight, nothing to imitate")
    if operator_share <= 0:
        return w / w.sum()
    operator = np.asarray(operator, bool)
    mass = (w[operator].sum(), w[~operator].sum())
    if not (mass[0] > 0 and mass[1] > 0):
        return w / w.sum()
    return np.where(operator, operator_share * w / mass[0], (1.0 - operator_share) * w / mass[1])


def operator_preference(adv, operator) -> float:
    """P(A_op > A_pol) + P(A_op = A_pol) / 2 over every pair of an ``operator`` chunk and one of the policy's
    (``adv``, ``operator``: (N,)): the Mann-Whitney U statistic over n_op n_pol; 0.5 when a side is empty."""
    adv, operator = np.asarray(adv, np.float64), np.asarray(operator, bool)
    ours, theirs = np.sort(adv[~operator]), adv[operator]
    if len(ours) == 0 or len(theirs) == 0:
        return 0.5
    below, not_above = np.searchsorted(ours, theirs, "left"), np.searchsorted(ours, theirs, "right")
    return float((below + 0.5 * (not_above - below)).sum() / (len(theirs) * len(ours)))


def critic_operator_share(adv, operator) -> float:
    """``operator_share_rule="critic"``: operator_preference kept within CRITIC_SHARE_BOUNDS (module docstring)."""
    return float(np.clip(operator_preference(adv, operator), *CRITIC_SHARE_BOUNDS))


def segment_advantages(adv, episode, tick, source) -> np.ndarray:
    """Per chunk, the mean advantage of its segment: a maximal run of chunks with consecutive ticks
    of one episode and one dominant source. All arrays (N,) in one order, ticks ascending within
    an episode (a TransitionDataset view's order)."""
    adv, episode, tick, source = (np.asarray(x) for x in (adv, episode, tick, source))
    if len(adv) == 0:
        return np.asarray(adv, np.float32)
    seg = np.cumsum(segment_starts(episode, tick, source)) - 1
    means = np.bincount(seg, weights=adv.astype(np.float64)) / np.bincount(seg)
    return means[seg].astype(np.float32)


def segment_starts(episode, tick, source) -> np.ndarray:
    """(N,) bool: where a segment begins (a new episode, a gap in the ticks, or a change of source)."""
    new = np.ones(len(episode), bool)
    new[1:] = (episode[1:] != episode[:-1]) | (tick[1:] != tick[:-1] + 1) | (source[1:] != source[:-1])
    return new


def option_advantages(v, mc_return, episode, tick, source, episode_end, terminal, gamma: float) -> np.ndarray:
    """Per chunk, the advantage of its segment as one option (module docstring):
    sum of the segment's discounted rewards + gamma^L V(first tick after it) - V(its first tick).
    ``v`` (N,) the critic's V(o) per chunk, ``mc_return`` (N,) the discounted return-to-go of its
    tick, ``episode_end`` (N,) whether its tick is its episode's last, ``terminal`` (N,) whether its
    episode ended terminally; all in one order, ticks ascending within an episode. A segment that
    ends a terminal episode bootstraps 0; one whose successor is unknown (a truncated end, a gap in a
    filtered view) is an option that ends at its own last observation:
    sum of its rewards before that tick + gamma^(L-1) V(last) - V(first)."""
    v, g, episode, tick, source, episode_end, terminal = (np.asarray(x) for x in (
        v, mc_return, episode, tick, source, episode_end, terminal))
    n = len(v)
    if n == 0:
        return np.zeros(0, np.float32)
    v, g = v.astype(np.float64), g.astype(np.float64)
    start = segment_starts(episode, tick, source)
    seg = np.cumsum(start) - 1
    first = np.flatnonzero(start)
    last = np.append(first[1:] - 1, n - 1)
    nxt = np.minimum(last + 1, n - 1)
    follows = (last + 1 < n) & (episode[nxt] == episode[last]) & (tick[nxt] == tick[last] + 1)
    ends = ~follows & episode_end[last].astype(bool) & terminal[last].astype(bool)
    length = (tick[last] + 1 - tick[first]).astype(np.float64)
    full, short = np.power(float(gamma), length), np.power(float(gamma), length - 1)
    adv = np.where(follows, g[first] - full * g[nxt] + full * v[nxt],              # the next segment's start
                   np.where(ends, g[first],                                          # terminal: nothing after
                            g[first] - short * g[last] + short * v[last])) - v[first]  # successor unknown
    return adv[seg].astype(np.float32)


def ess_fraction(weights) -> float:
    """Effective sample size of weights as a share of their number: (sum w)^2 / (n sum w^2); 1 = uniform."""
    w = np.asarray(weights, np.float64)
    total = (w ** 2).sum()
    return float(w.sum() ** 2 / total / len(w)) if total > 0 else 0.0


def ess_temperature(adv, target: float, lo: float = 1e-4, hi: float = 1e4) -> float:
    """The smallest beta in [lo, hi] whose weights exp(A / beta) over ``adv`` keep ess_fraction >=
    ``target`` (bisection on log beta). The search ignores the w_max clip: with it the ESS is not
    monotone in beta (a tiny beta clips every positive advantage to w_max: binary weights, whose
    ESS is the share of positive advantages), and the target is about the softness of the
    weighting, not about where the clip cuts. ``lo`` when even it keeps that much."""
    adv = np.asarray(adv, np.float64)
    if adv.size == 0:
        return lo

    def ess(beta: float) -> float:
        return ess_fraction(np.exp((adv - adv.max()) / beta))  # shifted: the same ESS, no overflow

    if ess(lo) >= target:
        return lo
    a, b = math.log(lo), math.log(hi)
    for _ in range(60):
        mid = 0.5 * (a + b)
        a, b = (a, mid) if ess(math.exp(mid)) >= target else (mid, b)
    return math.exp(b)


def advantage_indicator(adv, threshold: float, dropout: float, rng: np.random.Generator) -> torch.Tensor:
    """Per-chunk indicator (B,) int64 for advantage-conditioned extraction: positive where
    A > threshold, else negative; each replaced by unknown with probability ``dropout``."""
    adv = np.asarray(adv)
    label = np.where(adv > threshold, ADVANTAGE_POSITIVE, ADVANTAGE_NEGATIVE)
    label[rng.random(len(adv)) < dropout] = ADVANTAGE_UNKNOWN
    return torch.from_numpy(label.astype(np.int64))


def advantage_weights(adv: torch.Tensor, beta: float, w_max: float, mode: str = "exp",
                      trusted=None) -> torch.Tensor:
    """Per-sample weights (B,) from advantages (B,), normalised to mean 1 over the batch (``trusted``:
    unnormalised_weights). A batch with no positive weight gets all zeros (no update from it)."""
    w = unnormalised_weights(adv, beta, w_max, mode, trusted)
    mean = w.mean()
    return w / mean if mean > 0 else torch.zeros_like(w)


def improve_policy(policy, dataset, advantages: np.ndarray | None, config: ImprovementConfig | None = None,
                   seed: int = 0, device: str | torch.device = "cpu", progress: bool = False,
                   log_every: int = 50, batch_blocks: int = DEFAULT_BATCH_BLOCKS,
                   targets: np.ndarray | None = None) -> list[dict]:
    """Train ``policy`` in place on ``dataset``'s recorded chunks (or on ``targets``).

    advantages: (len(dataset),) in the dataset view's order, or None for behaviour cloning
    (weights 1 everywhere). With ``config.extraction == "conditioned"`` they set each chunk's
    indicator (advantage_indicator) and every weight is 1; the policy must be advantage-conditioned.
    targets: (len(dataset), H, A) chunks to imitate instead of the
    recorded ones (critic-ranked extraction), same order. Returns the curve (rows: step,
    policy_loss, weight_max, weight_ess).
    batch_blocks: noise blocks per global batch (distributed.py): under torchrun each rank
    trains on its blocks and the result equals the one-process run.
    """
    config = config or ImprovementConfig()
    if advantages is not None:
        advantages = np.asarray(advantages, np.float32)
        if advantages.shape != (len(dataset),):
            raise ValueError(f"advantages must be ({len(dataset)},), got {advantages.shape}")
    if targets is not None:
        targets = torch.as_tensor(np.asarray(targets, np.float32))
        if targets.shape != (len(dataset),) + tuple(dataset.chunks.shape[1:]):
            raise ValueError(f"targets must be ({len(dataset)}, H, A), got {tuple(targets.shape)}")
    conditioned = advantages is not None and config.extraction == "conditioned"
    trusted = operator_chunks(dataset) if advantages is not None and config.trust_operator else None
    probabilities = None
    if advantages is not None and not conditioned and config.sampling == "weighted":
        w = unnormalised_weights(advantages, config.beta, config.w_max, config.weight_mode, trusted).numpy()
        probabilities = draw_probabilities(w, operator_chunks(dataset) if trusted is None else trusted,
                                           config.operator_share)
    if conditioned and not getattr(policy.config, "advantage_conditioning", False):
        raise ValueError("extraction 'conditioned' trains an advantage-conditioned policy: pass "
                         "aloe_policy.model.with_advantage_conditioning(policy)")
    params = [p for p in policy.parameters() if p.requires_grad]
    B = config.policy_batch_size
    opt = torch.optim.AdamW(params, lr=config.policy_lr)
    ema = [p.detach().clone() for p in params] if config.ema_decay > 0 else None
    policy.train()
    curve = []
    shards = progress_bar(global_batches(len(dataset), B, config.policy_steps, seed, batch_blocks, probabilities),
                          total=config.policy_steps, unit="step", disable=not progress,
                          desc="policy (" + ("bc" if advantages is None else "advantage-conditioned" if conditioned
                                             else "advantage-weighted") + ")")
    for shard in shards:
        batch = dataset.batch(dataset.indices[shard.my_positions])  # this process's rows of the global batch
        chunks = batch.chunks if targets is None else targets[shard.my_positions]
        # w_i = clip(exp(A_i / beta), w_max) / mean over the global batch (1 for bc)
        indicator = None
        if advantages is None or conditioned or probabilities is not None:
            weights = torch.ones(B)
            if conditioned:  # drawn over the global batch: the same labels whatever the number of ranks
                indicator = advantage_indicator(advantages[shard.positions], config.condition_threshold,
                                                config.condition_dropout, np.random.default_rng([seed, shard.step]))
        else:
            weights = advantage_weights(torch.from_numpy(advantages[shard.positions]), config.beta, config.w_max,
                                        config.weight_mode, None if trusted is None else trusted[shard.positions])
        opt.zero_grad(set_to_none=True)
        loss_sum = 0.0
        for block in shard.blocks:  # L = (1/B) sum_i w_i ||v_theta(x_t, t | o_i) - (A_i - x0)||^2
            with block_rng(seed, shard.step, block.index, device) as gen:
                extra = {} if indicator is None else {"advantage": indicator[block.batch_rows]}
                per_sample = policy.loss(observation_rows(batch.obs, block.rows), chunks[block.rows].to(device),
                                         weights[block.batch_rows].to(device), generator=gen, **extra)
            (per_sample.sum() / B).backward()
            loss_sum += float(per_sample.detach().sum())
        sum_gradients(params)  # the gradient of the global-batch mean, on every rank
        torch.nn.utils.clip_grad_norm_(params, config.policy_grad_clip)
        opt.step()
        if ema is not None:
            with torch.no_grad():
                torch._foreach_lerp_(ema, [p.detach() for p in params], 1.0 - config.ema_decay)
        if shard.step % log_every == 0 or shard.step == config.policy_steps - 1:
            curve.append({"step": shard.step, "policy_loss": global_batch_mean(loss_sum, B),
                          "weight_max": float(weights.max()), "weight_ess": ess_fraction(weights.numpy())})
            shards.set_postfix(loss=f"{curve[-1]['policy_loss']:.4g}")
    if ema is not None:
        with torch.no_grad():
            for p, e in zip(params, ema):
                p.copy_(e)
    policy.eval()
    return curve

