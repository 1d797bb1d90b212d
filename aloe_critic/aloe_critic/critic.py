"""The ALOE critic: an ensemble of K chunk-level Q networks for the **current** policy.

Read top to bottom (DESIGN.md, "The learning algorithm"; arXiv 2602.12691):

    Q_k(o_t, A_t)        k = 1..K, one value per H-step action chunk A_t
    y   = R_t^H + gamma^H (1 - done) * Agg_k[ mean_j Qbar_k(o_{t+H}, A'_j) ],   A'_j ~ pi(.|o_{t+H})
    L   = sum_k mean_batch (Q_k(o_t, A_t) - y)^2
    Qbar <- tau Q + (1 - tau) Qbar                                             (Polyak)
    V(o) = Agg_k[ mean_j Q_k(o, A_j) ],  A_j ~ pi(.|o)
    A(o_t, A_t) = Agg_k Q_k(o_t, A_t) - V(o_t)

with, for the members to be independent enough that their spread means something,
    Q_k = f_k + prior_scale * p_k        p_k: a fixed random network (random prior function)
    L   = sum_k sum_batch m_k,i (Q_k(o_i, A_i) - y_i)^2 / sum_batch m_k,i
                                         m_k,i ~ Bernoulli(bootstrap_fraction), fixed per fit

The value *signal* (how y is built) lives in ``values.py``: ``aloe`` (above), and the
baselines ``td1`` and ``progress`` trained with this same network on the same data.

Design choices (documented here because they change numbers):

* The K heads share one observation encoder (the image CNN is the expensive part); each head
  is an independent MLP over [features, flattened chunk], initialised independently. The
  encoder is trained by the sum of the heads' losses and has its own Polyak target copy.
* Independence of the members (issue 14): with one shared encoder, the same batch and the same
  target, K heads agree almost everywhere (measured spread 0.006-0.019 against a V bias of
  0.1-0.2), so conservative aggregation corrects nothing. Two standard remedies: each member
  sees its own fixed bootstrap subset of the transitions (``bootstrap_fraction``; Osband et
  al. 2016), and each member may carry a random prior
  function, an untrained network added to its output (``prior_scale``; Osband et al. 2018):
  where data pins Q down the trained part cancels the prior, away from the data the priors
  (different per member) remain and the members disagree. Measured (bench/ope_accuracy.py,
  BENCHMARKS.md "ALOE vs its rivals"): on that benchmark neither changed the spread's rank
  correlation with the error (0.55-0.58 at full coverage) nor its size (a quarter of the error).
  The masks cost nothing and stay; the priors doubled the heads' arithmetic (a critic fit 1.9x
  slower) for identical accuracy on two buffers (part 14), so ``prior_scale`` is 0 by default.
  A third, off by default (``diversity_eta``; EDAC, An et al. 2021): the loss also penalises
  the mean pairwise cosine similarity of the members' gradients with respect to the chunk, so
  members that fit the same recorded chunk slope differently around it and disagree at chunks
  the data never executed (pi's samples at an intervention's states, where the critic was
  measured to value pi like the operator). Measured (part 14): on the tuning buffer it doubled
  the spread relative to the error and removed V's bias with few failures in the data; on a
  fresh buffer the picked weight (10) made every figure worse (V biased -0.08), so it stays off.
* Two head options from value learning with function approximation, off by default (issue 14,
  BENCHMARKS part 21): ``critic_norm: layer`` normalises each hidden layer of every head (RLPD,
  Ball et al. 2023: LayerNorm bounds the values a head extrapolates to at inputs far from the
  data, here pi's unexecuted chunks), and ``value_loss: hl_gauss`` makes each head a
  classifier over value bins trained by cross-entropy to a Gaussian around y (Farebrother et
  al. 2024, "Stop regressing"), its Q the histogram's mean. Measured (part 21, OPE buffers 2-4
  pooled): both made Q at the recorded chunks worse (RMSE 0.119 and 0.126 against 0.108,
  paired CIs above 0); HL-Gauss shrinks less toward the mean and its spread tracks the error
  better, at a higher error. Both stay off.
* V for the advantages (issue 14): from ``num_value_samples`` chunks of pi per observation
  (64 by default), not the target's n: with 8 samples the sampling error of V alone was about
  one unit of beta. ``evaluate`` also returns ``v_se``, the standard error of V by batch means.
* pi is fixed while the critic is fit, so A'_j ~ pi(.|o) is drawn once per observation per
  iteration (``PolicySampleBank``, n samples per observation). The target's expectation is
  the same as drawing fresh samples every batch, at a fraction of the cost of running the
  flow policy inside every critic step.
* ``conservative_aggregate`` default: ``subset_min`` with subset_size 2 (REDQ-style): the
  minimum over a random pair of ensemble members. Bootstrapping on actions of pi that the data
  may never contain over-estimates (the maximisation-like bias the paper guards against); a
  min over a small subset gives a pessimism that does not grow with K (the min over all K
  does) and needs no scale calibration (``mean_std``'s kappa is in units of the ensemble's
  spread, which changes with K, data size and training time). In the TD targets one random
  subset is drawn per gradient step (as REDQ); for reported values (Q, V, advantages, replay)
  the exact *expectation* over subsets is used, so evaluation is deterministic.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from aloe_policy.selection import CHUNK_SCORER  # noqa: F401 - the file name policy_node loads (one place)

from .distributed import all_gather_objects, rank_world

AGGREGATION_RULES = ("subset_min", "mean_std")
HEAD_NORMS = ("none", "layer")        # what each head does to a hidden layer's pre-activation
VALUE_LOSSES = ("mse", "hl_gauss")    # how a head's output is fitted to the TD target y
VALUE_DATA = ("all", "current")  # where V of the advantages is fitted: the whole buffer, or the evaluated policy's own chunks


@dataclass
class CriticConfig:
    """Critic network and fitting hyper-parameters (the value method is ``TrainConfig.method``)."""

    ensemble_size: int = 10          # K Q-networks
    critic_hidden_dim: int = 256     # width of each Q head MLP
    critic_layers: int = 2           # hidden layers per Q head
    critic_lr: float = 3e-4          # Adam learning rate of encoder + heads
    critic_steps: int = 2000         # gradient steps per iteration
    critic_batch_size: int = 256     # transitions per critic step
    critic_grad_clip: float = 10.0   # max global gradient norm
    tau: float = 0.005               # Polyak rate of the target networks Qbar
    num_policy_samples: int = 8      # n: A'_j ~ pi per observation in the TD target (mean_j)
    num_value_samples: int = 64      # A_j ~ pi per observation for V(o_t) in the advantages (its error << beta);
                                     # drawn per batch, never stored for the whole dataset
    bootstrap_fraction: float = 0.8  # each member fits its own fixed random share of the transitions (1 = all)
    prior_scale: float = 0.0         # each member adds this times a fixed random network (random prior); 0 = none
                                     # (off since session 14: same accuracy, half the ensemble's arithmetic)
    diversity_eta: float = 0.0       # weight of the members' chunk-gradient similarity in the loss (EDAC); 0 = off
    aggregate: str = "subset_min"    # conservative aggregation rule over the ensemble
    subset_size: int = 2             # subset_min: members per subset
    kappa: float = 1.0               # mean_std: mean - kappa * std
    freeze_encoder: bool = False     # Q heads on the policy's frozen observation features, computed once
                                     # per fit (CPU-sized runs: ~50x faster steps; the heads still see o_t)
    value_data: str = "all"          # V(o) of the advantages from this critic ("all") or from a second one of
                                     # this config fitted only on the evaluated policy's own chunks ("current":
                                     # V stops copying the outcome of the one recorded chunk; Q stays this one's)
    critic_norm: str = "none"        # "layer": LayerNorm (each member its own gain and bias) before every hidden
                                     # activation of the heads (RLPD, Ball et al. 2023: bounds Q at chunks far
                                     # from the data)
    value_loss: str = "mse"          # "hl_gauss": each head outputs a histogram over value_bins bins on
                                     # [value_min, value_max], fitted by cross-entropy to a Gaussian of width
                                     # 0.75 bin around y (HL-Gauss, Farebrother et al. 2024); Q = its mean
    value_bins: int = 51             # hl_gauss: bins of the value histogram
    value_min: float = -0.2          # hl_gauss: the support's ends; targets outside are clipped to them
    value_max: float = 1.2           # (the sparse 0/1 reward keeps Q in [0, 1])
    td_lambda: float = 0.0           # > 0: lambda-returns along the recorded trajectory (values.LambdaReturns,
                                     # Peng's Q(lambda) over chunks); 0 = the one-chunk TD target
    lambda_refresh: int = 25         # td_lambda: critic steps between recomputing the returns from the targets

    def __post_init__(self):
        if self.aggregate not in AGGREGATION_RULES:
            raise ValueError(f"aggregate must be one of {AGGREGATION_RULES}, got {self.aggregate!r}")
        if not 1 <= self.subset_size <= self.ensemble_size:
            raise ValueError(f"subset_size must be in 1..ensemble_size={self.ensemble_size}, got {self.subset_size}")
        if not 0.0 < self.bootstrap_fraction <= 1.0:
            raise ValueError(f"bootstrap_fraction must be in (0, 1], got {self.bootstrap_fraction}")
        if self.prior_scale < 0:
            raise ValueError(f"prior_scale must be >= 0, got {self.prior_scale}")
        if not (self.diversity_eta >= 0 and math.isfinite(self.diversity_eta)):
            raise ValueError(f"diversity_eta must be a finite number >= 0, got {self.diversity_eta}")
        if self.num_policy_samples < 1 or self.num_value_samples < 1:
            raise ValueError("num_policy_samples and num_value_samples must be >= 1")
        if self.value_data not in VALUE_DATA:
            raise ValueError(f"value_data must be one of {VALUE_DATA}, got {self.value_data!r}")
        if self.critic_norm not in HEAD_NORMS:
            raise ValueError(f"critic_norm must be one of {HEAD_NORMS}, got {self.critic_norm!r}")
        if self.value_loss not in VALUE_LOSSES:
            raise ValueError(f"value_loss must be one of {VALUE_LOSSES}, got {self.value_loss!r}")
        if not 0.0 <= self.td_lambda < 1.0:
            raise ValueError(f"td_lambda must be in [0, 1) (1 would be the behaviour's return: method progress), "
                             f"got {self.td_lambda}")
        if self.lambda_refresh < 1:
            raise ValueError(f"lambda_refresh must be >= 1 critic step, got {self.lambda_refresh}")
        if self.value_loss == "hl_gauss":
            if self.value_bins < 2 or not self.value_min < self.value_max:
                raise ValueError(f"hl_gauss needs value_bins >= 2 and value_min < value_max, got {self.value_bins} "
                                 f"bins on [{self.value_min}, {self.value_max}]")
            if self.diversity_eta > 0:
                raise ValueError("diversity_eta (EDAC) is implemented for value_loss 'mse' only")

    # Fields added after critics were first saved, with the value that reproduces those critics.
    LEGACY = {"bootstrap_fraction": 1.0, "prior_scale": 0.0, "diversity_eta": 0.0, "value_data": "all",
              "critic_norm": "none", "value_loss": "mse"}

    @classmethod
    def from_saved(cls, saved: dict) -> "CriticConfig":
        """The config of a saved critic (critic_config.json's "critic"): unknown keys are
        ignored, fields it predates take their legacy value (so its weights load)."""
        known = {f.name for f in dataclasses.fields(cls)}
        values = {**cls.LEGACY, "num_value_samples": saved.get("num_policy_samples", cls.num_value_samples)}
        values.update({k: v for k, v in saved.items() if k in known})
        return cls(**values)


def conservative_aggregate(values: torch.Tensor, rule: str = "subset_min", subset_size: int = 2,
                           kappa: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """Aggregate ensemble values (K, ...) -> (...), never above the ensemble mean.

    ``subset_min``: min over a random subset of ``subset_size`` members. With a generator one
    subset is drawn (shared by the whole batch, as REDQ does); without, the exact expectation
    over all subsets: E[min] = sum_i v_(i) C(K-i, m-1) / C(K, m), v_(1) <= ... <= v_(K).
    ``mean_std``: mean_k - kappa * std_k (population std).
    """
    K = values.shape[0]
    if rule == "mean_std":
        return values.mean(0) - kappa * values.std(0, unbiased=False)
    if rule != "subset_min":
        raise ValueError(f"unknown aggregation rule {rule!r}; use one of {AGGREGATION_RULES}")
    m = int(subset_size)
    if not 1 <= m <= K:
        raise ValueError(f"subset_size {m} must be in 1..{K}")
    if generator is not None:
        idx = torch.randperm(K, generator=generator)[:m].to(values.device)
        return values.index_select(0, idx).min(0).values
    ordered = values.sort(0).values
    w = torch.tensor([math.comb(K - i, m - 1) for i in range(1, K + 1)], dtype=values.dtype,
                     device=values.device) / math.comb(K, m)
    return torch.tensordot(w, ordered, dims=([0], [0]))


class EnsembleLinear(nn.Module):
    """K independent linear layers applied in one batched matmul: (K, N, i) -> (K, N, o)."""

    def __init__(self, ensemble_size: int, in_features: int, out_features: int):
        super().__init__()
        bound = 1.0 / math.sqrt(in_features)
        self.weight = nn.Parameter(torch.empty(ensemble_size, in_features, out_features).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(ensemble_size, 1, out_features).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class EnsembleLayerNorm(nn.Module):
    """LayerNorm over the last dimension of (K, N, d), each member with its own gain and bias."""

    def __init__(self, ensemble_size: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ensemble_size, 1, dim))
        self.bias = nn.Parameter(torch.zeros(ensemble_size, 1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.layer_norm(x, x.shape[-1:]) * self.weight + self.bias


class QEnsemble(nn.Module):
    """K chunk-level Q heads: (features (N, F), chunks (N, H*A)) -> (K, N).

    With ``prior_scale > 0`` each head is f_k + prior_scale * p_k, p_k an untrained random MLP of
    the same shape (frozen parameters: saved, never optimised, identical in the target copy).
    With ``norm`` each hidden layer is normalised (EnsembleLayerNorm) before its ReLU. With
    ``bins > 1`` a head's output is the logits of a histogram over ``bins`` equal bins of
    ``support`` and its value the histogram's mean (``logits`` gives the histogram itself).
    """

    def __init__(self, ensemble_size: int, feature_dim: int, chunk_dim: int, hidden_dim: int, layers: int,
                 prior_scale: float = 0.0, norm: bool = False, bins: int = 1, support: tuple = (0.0, 1.0)):
        super().__init__()
        dims = [feature_dim + chunk_dim] + [hidden_dim] * layers
        self.layers = nn.ModuleList(EnsembleLinear(ensemble_size, i, o) for i, o in zip(dims[:-1], dims[1:]))
        self.norms = nn.ModuleList(EnsembleLayerNorm(ensemble_size, o) for o in dims[1:]) if norm else None
        self.out = EnsembleLinear(ensemble_size, dims[-1], bins)
        self.ensemble_size = ensemble_size
        self.bins = int(bins)
        # Bin edges (bins + 1) and centres: derived from the config, so not saved with the weights.
        self.register_buffer("edges", torch.linspace(float(support[0]), float(support[1]), self.bins + 1),
                             persistent=False)
        self.register_buffer("centers", (self.edges[1:] + self.edges[:-1]) / 2, persistent=False)
        self.prior_scale = float(prior_scale)
        self.prior = None
        if self.prior_scale > 0:
            self.prior = nn.ModuleList(EnsembleLinear(ensemble_size, i, o) for i, o in zip(dims, dims[1:] + [bins]))
            for p in self.prior.parameters():
                p.requires_grad_(False)

    @staticmethod
    def _mlp(layers, x: torch.Tensor, norms=None) -> torch.Tensor:
        for i, layer in enumerate(layers[:-1]):
            x = layer(x)
            x = torch.relu(x if norms is None else norms[i](x))
        return layers[-1](x)

    def _outputs(self, x: torch.Tensor) -> torch.Tensor:
        """(K, N, i) inputs -> (K, N, bins): each member's raw outputs (its value, or its histogram's logits)."""
        out = self._mlp(list(self.layers) + [self.out], x, self.norms)
        if self.prior is not None:
            out = out + self.prior_scale * self._mlp(list(self.prior), x)
        return out

    def value_of(self, out: torch.Tensor) -> torch.Tensor:
        """(K, N, bins) raw outputs -> (K, N) values."""
        return out.squeeze(-1) if self.bins == 1 else torch.softmax(out, -1) @ self.centers

    def logits(self, features: torch.Tensor, chunks: torch.Tensor) -> torch.Tensor:
        """(K, N, bins): each member's histogram logits (bins > 1) or value (bins = 1, last dim 1)."""
        return self._outputs(torch.cat([features, chunks], -1).unsqueeze(0).expand(self.ensemble_size, -1, -1))

    def forward(self, features: torch.Tensor, chunks: torch.Tensor, chunk_grad: bool = False):
        """(K, N) values; with ``chunk_grad`` also (K, N, C): each member's gradient of its value
        with respect to the chunk, kept in the graph (create_graph) so a loss on it trains the heads."""
        K = self.ensemble_size
        if chunk_grad:  # a per-member copy of the (data) chunk, so member k's gradient is its own
            c = chunks.unsqueeze(0).expand(K, -1, -1).detach().clone().requires_grad_(True)
            x = torch.cat([features.unsqueeze(0).expand(K, -1, -1), c], -1)
        else:  # one concatenation, viewed K times (no per-member copy on the common path)
            x = torch.cat([features, chunks], -1).unsqueeze(0).expand(K, -1, -1)
        q = self.value_of(self._outputs(x))
        if not chunk_grad:
            return q
        (grad,) = torch.autograd.grad(q.sum(), c, create_graph=True)
        return q, grad


def hl_gauss_target(y: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """HL-Gauss (Farebrother et al. 2024): (N,) scalar targets -> (N, bins) probabilities, the mass of a
    Gaussian N(y, sigma^2), sigma = 0.75 bin, in each bin of ``edges`` (bins + 1), renormalised to the
    support; y outside the support is clipped to its ends first."""
    sigma = 0.75 * (edges[1] - edges[0])
    y = y.clamp(float(edges[0]), float(edges[-1])).unsqueeze(-1)
    cdf = torch.special.ndtr((edges - y) / sigma)                                  # (N, bins + 1)
    mass = cdf[:, 1:] - cdf[:, :-1]
    return mass / (cdf[:, -1:] - cdf[:, :1])


def gradient_similarity(grads: torch.Tensor) -> torch.Tensor:
    """Mean pairwise cosine similarity of the members' chunk gradients, (K, N, C) -> (N,):
    (1 / (K (K - 1))) sum_{k != l} cos(g_k, g_l), from ||sum_k u_k||^2 = K + sum_{k != l} u_k . u_l
    for unit vectors u_k. EDAC (An et al. 2021) minimises it: members that agree on the data
    but slope differently in the action around it disagree off it, where the data has no chunk."""
    K = grads.shape[0]
    if K < 2:
        return grads.new_zeros(grads.shape[1])
    u = torch.nn.functional.normalize(grads, dim=-1, eps=1e-8)
    return (u.sum(0).pow(2).sum(-1) - (u * u).sum((0, 2))) / (K * (K - 1))


class ActionScaler(nn.Module):
    """Chunks in action units -> per-dimension standardised, clipped to +-clip (buffers, saved
    with the critic). The sim's EE deltas are ~0.03 m: fed raw, the Q heads would barely see
    the action next to O(1) observation features, and every advantage would be ~0."""

    def __init__(self, action_dim: int, mean=None, std=None, clip: float = 10.0):
        super().__init__()
        self.register_buffer("mean", torch.zeros(action_dim) if mean is None else torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.ones(action_dim) if std is None else torch.as_tensor(std, dtype=torch.float32))
        self.clip = clip

    def forward(self, chunks: torch.Tensor) -> torch.Tensor:
        return ((chunks - self.mean) / self.std).clamp(-self.clip, self.clip)


class ChunkCritic(nn.Module):
    """Ensemble of K chunk-level Q networks Q_k(o_t, A_t) with Polyak target copies Qbar_k.

    ``encoder``: any module mapping an observation batch to (B, feature_dim) features; the
    default in the trainer is ``aloe_policy.model.ObservationEncoder`` (see ``critic_for_policy``),
    small-MDP tests pass a one-hot MLP. Chunks are standardised by ``action_scaler`` (identity
    by default; the policy's action statistics in ``critic_for_policy``) before the heads. ``prepare`` (optional) turns the raw observation dict
    into the encoder's input first (``policy.prepare``: normalised proprio, image tensors, text
    embedding); it is shared by the online and target encoders. Chunks are (B, H, A) or
    (B, n, H, A), action units.
    """

    def __init__(self, encoder: nn.Module, feature_dim: int, chunk_horizon: int, action_dim: int,
                 config: CriticConfig | None = None, prepare=None):
        super().__init__()
        self.config = config or CriticConfig()
        self.prepare = prepare
        self.action_scaler = ActionScaler(action_dim)
        self.chunk_horizon, self.action_dim, self.feature_dim = int(chunk_horizon), int(action_dim), int(feature_dim)
        self.encoder = encoder
        c = self.config
        self.q = QEnsemble(c.ensemble_size, feature_dim, chunk_horizon * action_dim, c.critic_hidden_dim,
                           c.critic_layers, c.prior_scale, norm=c.critic_norm == "layer",
                           bins=c.value_bins if c.value_loss == "hl_gauss" else 1, support=(c.value_min, c.value_max))
        self.target_encoder = copy.deepcopy(encoder)
        self.target_q = copy.deepcopy(self.q)
        for p in list(self.target_encoder.parameters()) + list(self.target_q.parameters()):
            p.requires_grad_(False)
        self.train()

    def _head_inputs(self, obs, chunks: torch.Tensor, target: bool, features: torch.Tensor | None):
        """What the heads see: (features of obs, or the given ones; the chunks standardised on their device)."""
        feats = self.features(obs, target) if features is None else features
        return feats, self.action_scaler(chunks.to(feats.device))

    def q_values(self, obs, chunks: torch.Tensor, target: bool = False, features: torch.Tensor | None = None,
                 chunk_grad: bool = False):
        """Q_k(o, A) for every member: chunks (B, H, A) -> (K, B); (B, n, H, A) -> (K, B, n).
        ``chunk_grad`` (chunks (B, H, A) only): also each member's gradient with respect to the
        scaled chunk, (K, B, H * A) (QEnsemble.forward)."""
        heads = self.target_q if target else self.q
        feats, chunks = self._head_inputs(obs, chunks, target, features)
        B = feats.shape[0]
        if chunks.dim() == 3:
            flat = chunks.reshape(B, -1)
            return heads(feats, flat, chunk_grad=True) if chunk_grad else heads(feats, flat)
        if chunk_grad:
            raise ValueError("chunk_grad needs one chunk per observation, (B, H, A)")
        n = chunks.shape[1]
        q = heads(feats.repeat_interleave(n, 0), chunks.reshape(B * n, -1))
        return q.reshape(-1, B, n)

    def member_losses(self, obs, chunks: torch.Tensor, y: torch.Tensor, features: torch.Tensor | None = None,
                      chunk_grad: bool = False):
        """Each member's loss against the TD targets, chunks (B, H, A), y (B,) -> (loss (K, B), Q (K, B),
        chunk gradients (K, B, H * A) or None): (Q_k - y)^2 under ``value_loss`` "mse"; under "hl_gauss"
        the cross-entropy of member k's histogram to hl_gauss_target(y)."""
        if self.config.value_loss == "mse":
            out = self.q_values(obs, chunks, features=features, chunk_grad=chunk_grad)
            q, grads = out if chunk_grad else (out, None)
            return (q - y.unsqueeze(0)) ** 2, q, grads
        if chunk_grad:
            raise ValueError("chunk gradients (diversity_eta) need value_loss 'mse'")
        feats, scaled = self._head_inputs(obs, chunks, False, features)
        logits = self.q.logits(feats, scaled.reshape(feats.shape[0], -1))               # (K, B, bins)
        target = hl_gauss_target(y, self.q.edges)                                        # (B, bins)
        loss = -(torch.log_softmax(logits, -1) * target.unsqueeze(0)).sum(-1)
        return loss, self.q.value_of(logits), None

    def train(self, mode: bool = True) -> "ChunkCritic":
        """Online networks follow ``mode``; the targets (and a frozen encoder) stay in eval mode
        (no dropout noise in y or in fixed features)."""
        super().train(mode)
        self.target_encoder.eval()
        self.target_q.eval()
        if self.encoder_frozen:
            self.encoder.eval()
        return self

    @property
    def encoder_frozen(self) -> bool:
        return not any(p.requires_grad for p in self.encoder.parameters())

    def freeze_encoder(self) -> "ChunkCritic":
        """Fix the encoder (and make its target copy identical): features become a function of
        the observation alone and can be computed once (``feature_table``)."""
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        self.target_encoder.load_state_dict(self.encoder.state_dict())
        return self.train(self.training)

    @torch.no_grad()
    def feature_table(self, dataset, batch_size: int = 256, device: str | torch.device = "cpu") -> torch.Tensor:
        """(dataset.num_ticks, feature_dim) features of every observation tick the view uses
        (o_t and o_{t+H}); rows of unused ticks are zero. Only for a frozen encoder."""
        if not self.encoder_frozen:
            raise RuntimeError("feature_table needs a frozen encoder: its features would go stale while training")
        ticks = np.unique(np.concatenate([dataset.obs_tick[dataset.indices], dataset.next_tick[dataset.indices]]))
        table = torch.zeros(dataset.num_ticks, self.feature_dim, device=device)
        for s in range(0, len(ticks), batch_size):
            part = ticks[s:s + batch_size]
            table[torch.from_numpy(part)] = self.features(dataset.observations(part)).to(device)
        return table

    def features(self, obs, target: bool = False) -> torch.Tensor:
        """Observation features (B, feature_dim) from the online (or target) encoder."""
        batch = self.prepare(obs) if self.prepare is not None else obs
        return (self.target_encoder if target else self.encoder)(batch)

    def trainable_parameters(self):
        return [p for p in list(self.encoder.parameters()) + list(self.q.parameters()) if p.requires_grad]

    @torch.no_grad()
    def polyak_update(self, tau: float) -> None:
        """Qbar <- tau Q + (1 - tau) Qbar (encoder and heads)."""
        for online, target in ((self.encoder, self.target_encoder), (self.q, self.target_q)):
            for p, tp in zip(online.parameters(), target.parameters()):
                tp.lerp_(p, tau)
            for b, tb in zip(online.buffers(), target.buffers()):
                tb.copy_(b)

    def aggregate(self, values: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        c = self.config
        return conservative_aggregate(values, c.aggregate, c.subset_size, c.kappa, generator)

    @torch.no_grad()
    def evaluate(self, obs, chunks: torch.Tensor, policy_chunks: torch.Tensor, features: torch.Tensor | None = None,
                 groups: int = 8) -> dict[str, torch.Tensor]:
        """Q, V, advantage, ensemble std of Q for recorded chunks (B, H, A) given pi's samples
        (B, n, H, A) at the same observations. Deterministic (expected subset-min).

        ``v_se`` (B,): standard error of V from the n samples, by batch means: the n samples are
        cut into ``groups`` groups, V computed per group, SE = std_g(V_g) / sqrt(G) (valid for the
        non-linear aggregation too). ``v_std_pi`` (B,): spread of the aggregated Q over pi's
        samples, how much pi's own chunks differ in value at o. ``sampled_q`` (B, n): the aggregated
        (pessimistic) Q of each of pi's samples, ``pessimistic_q(obs, policy_chunks)`` without a second
        pass through the ensemble.
        """
        feats = self.features(obs) if features is None else features
        q_k = self.q_values(obs, chunks, features=feats)                    # (K, B)
        q_kj = self.q_values(obs, policy_chunks, features=feats)            # (K, B, n)
        q, v = self.aggregate(q_k), self.aggregate(q_kj.mean(-1))           # Agg_k mean_j
        n = q_kj.shape[-1]
        G = max(1, min(int(groups), n // 2))
        if G >= 2:
            per_group = torch.stack([self.aggregate(g.mean(-1)) for g in q_kj[..., :n // G * G].chunk(G, -1)])
            v_se = per_group.std(0, unbiased=True) / math.sqrt(G)
        else:
            v_se = torch.full_like(v, float("nan"))
        sampled_q = self.aggregate(q_kj)                                     # (B, n)
        return {"q": q, "v": v, "advantage": q - v, "q_std": q_k.std(0, unbiased=False), "v_se": v_se,
                "v_std_pi": sampled_q.std(-1, unbiased=False), "sampled_q": sampled_q}

    @torch.no_grad()
    def pessimistic_q(self, obs, chunks: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        """Agg_k Q_k(o, A) for chunks (B, H, A) -> (B,) or (B, n, H, A) -> (B, n) (deterministic)."""
        return self.aggregate(self.q_values(obs, chunks, features=features))


def critic_for_policy(policy, config: CriticConfig, init_from_policy: bool = True, dataset=None,
                      saved: dict | None = None) -> ChunkCritic:
    """The critic of a policy backend.

    A FlowMatchingPolicy (any backend with ``encoder`` and ``prepare``): its own ObservationEncoder
    (same architecture, initialised from the policy's encoder when ``init_from_policy``: the
    features already know the task), the policy's observation preparation (normalisation, text
    embedding). Any other backend (a remote pi0 served over openpi, ...) exposes no features: the
    critic gets an encoder of its own (critic_with_own_encoder), its normalisation fitted on
    ``dataset`` or restored from ``saved`` (the critic_config.json of a saved one).
    """
    if not (hasattr(policy, "encoder") and hasattr(policy, "prepare")):
        return critic_with_own_encoder(policy.config, config, dataset, saved, getattr(policy, "device", "cpu"))
    from aloe_policy.model import ObservationEncoder

    encoder = ObservationEncoder(policy.config)
    if init_from_policy:
        encoder.load_state_dict(policy.encoder.state_dict())
    c = policy.config
    critic = ChunkCritic(encoder, encoder.feature_dim, c.chunk_horizon, c.action_dim, config, prepare=policy.prepare)
    critic.action_scaler = ActionScaler(c.action_dim, policy.normalizer.action_mean, policy.normalizer.action_std)
    if critic.config.freeze_encoder:
        critic.freeze_encoder()
    return critic.to(policy.device)


def critic_with_own_encoder(contract, config: CriticConfig, dataset=None, saved: dict | None = None,
                            device: str | torch.device = "cpu") -> ChunkCritic:
    """A critic for a backend that exposes no observation features: a fresh ObservationEncoder
    built from the backend's robot contract (``contract``: its PolicyConfig: cameras, image size,
    proprio, actions, horizon), trained with the heads (a random encoder frozen would be useless,
    so ``freeze_encoder`` is ignored), MiniLM for the task text, and proprio / action
    normalisation fitted on ``dataset``'s behaviour (or restored from ``saved["own_encoder"]``).
    save_critic stores that normalisation and the text cache beside the weights."""
    from aloe_policy.model import ObservationEncoder
    from aloe_policy.model.processing import Normalizer, ObservationProcessor
    from aloe_policy.model.text_encoder import TextEncoder

    contract = contract.replace(text_embed_dim=OWN_TEXT_EMBED_DIM)  # the critic's text encoder, not the backend's
    normalizer, text = Normalizer(contract), TextEncoder(device=str(device), embed_dim=OWN_TEXT_EMBED_DIM)
    if saved is not None:
        own = saved.get("own_encoder") or {}
        if "normalization" not in own:
            raise ValueError("this critic was saved without its own encoder's normalisation (own_encoder in "
                             "critic_config.json): it belongs to a policy with features; load it with that policy")
        normalizer.load_dict(own["normalization"])
        text.load_cache(own.get("text_cache") or {})
    elif dataset is None:
        raise ValueError("a critic with its own encoder fits its normalisation on the data: pass dataset")
    else:
        normalizer.fit(*dataset.behaviour_arrays())
    processor = ObservationProcessor(contract, normalizer, text)
    encoder = ObservationEncoder(contract)
    critic = ChunkCritic(encoder, encoder.feature_dim, contract.chunk_horizon, contract.action_dim,
                         dataclasses.replace(config, freeze_encoder=False),
                         prepare=lambda obs: processor(obs, device))
    critic.action_scaler = ActionScaler(contract.action_dim, normalizer.action_mean, normalizer.action_std)
    critic.own_inputs = (normalizer, text)  # what save_critic writes so the critic loads without its data
    return critic.to(device)


OWN_TEXT_EMBED_DIM = 384  # all-MiniLM-L6-v2, the built-in text encoder


class PolicySampleBank:
    """n chunks A_j ~ pi(.|o) per observation tick, drawn once per critic fit (pi is fixed then).

    ``chunks(ticks)`` -> (B, n, H, A) float32 for global tick ids of a TransitionDataset.
    """

    def __init__(self, policy, dataset, n: int, ticks=None, batch_size: int = 64, seed: int = 0,
                 device: str | torch.device = "cpu", progress: bool = False):
        ticks = np.unique(np.concatenate([dataset.obs_tick[dataset.indices], dataset.next_tick[dataset.indices]])
                          if ticks is None else np.asarray(ticks))
        self.row = np.full(dataset.num_ticks, -1, np.int64)
        self.row[ticks] = np.arange(len(ticks))
        # One generator per observation batch, seeded by its position: the bank is the same
        # whether one process draws every batch or torchrun ranks share them out.
        rank, world = rank_world()
        starts = list(range(0, len(ticks), batch_size))
        mine = starts[rank::world]
        if progress:
            from aloe_data.progress import progress_bar
            mine = progress_bar(mine, desc="sample pi(.|o)", unit="batch")
        drawn = {}
        with torch.no_grad():
            for s in mine:
                gen = torch.Generator(device="cpu").manual_seed(seed * 1_000_003 + s)
                obs = dataset.observations(ticks[s:s + batch_size])
                drawn[s] = policy.sample(obs, n, generator=gen).float().cpu()
        if world > 1:
            for part in all_gather_objects(drawn):
                drawn.update(part)
        self.samples = (torch.cat([drawn[s] for s in starts]) if starts
                        else torch.zeros(0, n, dataset.chunk_horizon, dataset.action_dim))
        self.n = n

    def chunks(self, ticks, n: int | None = None) -> torch.Tensor:
        """(B, n, H, A): the first ``n`` samples (all when None) at each of the tick ids."""
        rows = self.row[np.asarray(ticks, np.int64)]
        if (rows < 0).any():
            raise KeyError("observation ticks not in the policy sample bank; build it over these ticks")
        if n is not None and n > self.n:
            raise ValueError(f"{n} samples asked of a bank holding {self.n} per observation")
        out = self.samples[torch.from_numpy(rows)]
        return out if n is None or n == self.n else out[:, :n]


# ---------------------------------------------------------------------------------------------
# The critic as a self-contained chunk scorer for value-guided selection at deployment
# ---------------------------------------------------------------------------------------------

class _ChunkScorer(nn.Module):
    """(prepared images per camera in camera order, proprio (B, P), text (B, E), chunks (B, n, H, A))
    -> (B, n) pessimistic Q = expected subset-min over the ensemble (deterministic)."""

    def __init__(self, critic: ChunkCritic, cameras: list[str]):
        super().__init__()
        self.critic = critic
        self.cameras = list(cameras)

    def forward(self, images: list[torch.Tensor], proprio: torch.Tensor, text: torch.Tensor,
                chunks: torch.Tensor) -> torch.Tensor:
        batch = {"images": dict(zip(self.cameras, images)), "proprio": proprio, "text": text}
        feats = self.critic.encoder(batch)
        return self.critic.aggregate(self.critic.q_values(None, chunks, features=feats))


def export_chunk_scorer(critic: ChunkCritic, policy, path: str | Path, example_obs) -> Path:
    """Write the critic as a TorchScript module (``torch.jit.trace``) that policy_node loads with
    torch alone (the policy package never imports aloe_critic): it scores n sampled chunks per
    observation with the pessimistic Q, from the policy's prepared observation (``policy.prepare``).
    ``example_obs``: one observation batch of the dataset, to trace with."""
    cameras = list(policy.config.camera_names)
    scorer = _ChunkScorer(copy.deepcopy(critic).cpu().eval(), cameras).eval()
    prepared = policy.prepare(example_obs)
    images = [prepared["images"][c].cpu()[:2] for c in cameras]
    B = images[0].shape[0]
    chunks = torch.zeros(B, 3, critic.chunk_horizon, critic.action_dim)
    import warnings

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the ensemble's subset weights are constants
        traced = torch.jit.trace(scorer, (images, prepared["proprio"].cpu()[:2], prepared["text"].cpu()[:2], chunks),
                                 check_trace=False)
    path = Path(path)
    traced.save(str(path))
    return path


# ---------------------------------------------------------------------------------------------
# Saving / loading (safetensors + JSON), so evaluation and replay can load a critic
# ---------------------------------------------------------------------------------------------

CRITIC_WEIGHTS = "critic.safetensors"
CRITIC_CONFIG = "critic_config.json"
VALUE_CRITIC_DIR = "value"  # <critic dir>/value/: the critic of V under value_data "current" (same files)


def save_critic(critic: ChunkCritic, directory: str | Path, extra: dict | None = None) -> None:
    """Write critic.safetensors (online + target weights) and critic_config.json."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in critic.state_dict().items()}
    save_file(state, str(directory / CRITIC_WEIGHTS))
    meta = {"critic": asdict(critic.config), "chunk_horizon": critic.chunk_horizon,
            "action_dim": critic.action_dim, "feature_dim": critic.feature_dim}
    if getattr(critic, "own_inputs", None) is not None:  # critic_with_own_encoder: its inputs' statistics
        normalizer, text = critic.own_inputs
        meta["own_encoder"] = {"normalization": normalizer.to_dict(), "text_cache": text.cache_to_dict()}
    meta.update(extra or {})
    (directory / CRITIC_CONFIG).write_text(json.dumps(meta, indent=1, sort_keys=True))


def load_critic_state(critic: ChunkCritic, directory: str | Path) -> dict:
    """Load weights saved by save_critic into a critic of the same shape; returns the JSON meta."""
    from safetensors.torch import load_file

    directory = Path(directory)
    missing = [f for f in (CRITIC_WEIGHTS, CRITIC_CONFIG) if not (directory / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{directory}: no critic ({', '.join(missing)} missing); train one with "
                                "aloe-train --method aloe|td1|progress")
    critic.load_state_dict(load_file(str(directory / CRITIC_WEIGHTS)))
    return json.loads((directory / CRITIC_CONFIG).read_text())


def read_critic_meta(directory: str | Path) -> dict:
    return json.loads((Path(directory) / CRITIC_CONFIG).read_text())
