"""``aloe-train``: one ALOE iteration, bags + current policy -> improved policy checkpoint.

    1. ingest bags (decoded once into the columnar cache; unusable bags are reported and skipped)
    2. load the current policy pi (``--policy-in``), or make a fresh one: fit its normalisation on
       the data and behaviour-clone it on all chunks (``--init-only`` stops here)
    3. fit the critic for pi with the value signal ``--method`` (aloe | td1 | progress)
    4. advantages A(o_t, A_t) = Q(o_t, A_t) - V(o_t) for every recorded chunk
    5. improve pi by advantage-weighted flow matching (``bc``: weights 1 on all data)
    6. write the checkpoint (save_pretrained) + critic (safetensors) + train_config.json +
       data_manifest.json + curves.csv/png into a temporary sibling, then rename it into place:
       a kill mid-iteration leaves every existing checkpoint valid.

A backend without an in-process loss (``--backend openpi_remote --policy-in ws://host:port``: a
pi0 served over openpi) stops after step 4: the critic (with an encoder of its own, the backend
exposes no features) and ``values.csv`` (advantage and weight per recorded chunk, keyed by bag
and stamp) are written for the trainer where that model lives; no policy checkpoint.

The whole iteration is ``train_iteration(config, bags, policy_in, out_dir)`` so a loop driver can
call it in-process; ``main`` only parses arguments. Under ``torchrun --nproc_per_node N
aloe-train ...`` the batches are split over N data-parallel ranks (``distributed.py``). Every knob is a field of ``TrainConfig``:
defaults < ``--config`` YAML < command-line flags.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import fnmatch
import json
import logging
import os
import random
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml

from aloe_data.atomic import install_dir
from aloe_data.config_cli import add_config_arguments, apply_overrides, overrides_from_args  # noqa: F401 (re-exported)
from aloe_data.ingestion import IngestionConfig, SkippedBagWarning, find_bags, ingest_bags, no_usable_bags
from aloe_data.schema import SOURCE_HUMAN, SOURCE_POLICY
from aloe_policy.model import with_advantage_conditioning

from .critic import (AGGREGATION_RULES, CHUNK_SCORER, VALUE_CRITIC_DIR, VALUE_DATA, CriticConfig, PolicySampleBank,
                     critic_for_policy, export_chunk_scorer, save_critic)
from .dataset import TransitionDataset, check_camera_contract
from .distributed import barrier, is_main, rank_world, setup, teardown
from .improvement import (EXTRACTIONS, IMITATED, POOLINGS, SAMPLINGS, SHARE_RULES, WEIGHT_MODES, ImprovementConfig,
                          critic_operator_share, draw_probabilities, ess_fraction, ess_temperature, improve_policy,
                          operator_chunks, operator_preference, option_advantages, segment_advantages,
                          unnormalised_weights)
from .values import VALUE_METHODS, chunk_values, fit_critic, fit_current_value, with_value_of

log = logging.getLogger("aloe_critic.train")

METHODS = ("aloe", "bc", "dagger", "progress", "td1")
IMITATION_METHODS = ("bc", "dagger")  # weight 1, no critic; dagger: operator chunks only (demos + interventions)


@dataclass
class TrainConfig:
    """Every hyper-parameter of one training iteration (saved as train_config.json)."""

    method: str = "aloe"              # aloe | bc (all imitable chunks) | dagger (operator chunks) | progress | td1
    seed: int = 0                     # seeds python, numpy and torch (data order, init, policy samples)
    device: str = "cpu"               # cpu | cuda | cuda:N
    gamma: float = 0.99               # discount per control tick
    chunk_horizon: int = 10           # H for a fresh policy; a loaded policy's own H always wins
    init_only: bool = False           # make the initial policy by BC on all data, no critic
    policy_config_file: str | None = None   # JSON PolicyConfig fields for a fresh policy (else defaults + data shapes)
    critic_init_from_policy: bool = True    # critic encoder starts from the policy's encoder weights
    backend: str = "flow_matching"    # policy backend of --policy-in (entry points aloe_policy.backends):
                                      # flow_matching (a checkpoint dir) | openpi_remote (ws://host:port: critic
                                      # and values.csv only, the served model is trained where it lives)
    remote_contract: str = ""         # openpi_remote: PolicyConfig JSON of the served policy when its server
                                      # sends none (cameras, image size, proprio, actions, horizon, period)
    eval_batch_size: int = 256        # batch size for sampling pi and scoring chunks
    batch_blocks: int = 0             # seeded noise blocks per batch (0 = one per process); a run on W processes
                                      # equals the one-process run with batch_blocks = W (or any multiple)
    overwrite: bool = False           # replace an existing out_dir
    progress: bool = True             # tqdm progress bars
    value_plots: bool = False         # also write values/<phase>/values_<episode>.png (Q and V along every episode)
    critic_only_bags: list = field(default_factory=list)  # fnmatch patterns of bag paths whose chunks train the
                                      # critic but are not imitated (every method), e.g. ["*/eval_*/*"]: rollouts
                                      # without an operator show the critic where the policy fails; imitating
                                      # them re-teaches the failure (their stuck ticks outnumber the rest)
    ingestion: IngestionConfig = field(default_factory=IngestionConfig)
    critic: CriticConfig = field(default_factory=CriticConfig)
    improvement: ImprovementConfig = field(default_factory=ImprovementConfig)

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if not 0.0 < self.gamma <= 1.0:
            raise ValueError(f"gamma must be in (0, 1], got {self.gamma}")
        if self.batch_blocks < 0:
            raise ValueError(f"batch_blocks must be >= 0 (0 = one block per process), got {self.batch_blocks}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        """Nested ({"critic": {...}}) or flat ({"ensemble_size": 5}) keys; unknown keys are an error."""
        config = cls()
        apply_overrides(config, data)
        return config


@dataclass
class TrainResult:
    checkpoint_dir: Path
    policy_id: str
    policy_in_id: str | None
    method: str
    num_transitions: int
    bags_used: int
    bags_skipped: list
    curves: dict
    advantage_stats: dict | None
    seconds: float


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _fresh_policy(config: TrainConfig, dataset: TransitionDataset):
    from aloe_data.observation import image_kind
    from aloe_policy.model import FlowMatchingPolicy, PolicyConfig

    overrides = {}
    if config.policy_config_file:
        overrides = json.loads(Path(config.policy_config_file).read_text())
    A = dataset.action_dim
    names = config.ingestion.proprio_spec.names
    formats = tuple(dataset.camera_formats.get(c, "") for c in dataset.cameras)
    depth = any(image_kind(f.partition(" ")[0]) == "depth" for f in formats if f)
    base = dict(camera_names=tuple(dataset.cameras), image_size=config.ingestion.image_size,
                camera_formats=formats if all(formats) else (),
                depth_range_m=config.ingestion.depth_range_m if depth else 0.0,
                proprio_dim=int(dataset.proprio.shape[1]), action_dim=A, chunk_horizon=config.chunk_horizon,
                proprio_names=tuple(names) if len(names) == dataset.proprio.shape[1] else ())
    if A != 7:
        base.update(action_names=tuple(f"a{i}" for i in range(A)), action_low=(-1.0,) * A, action_high=(1.0,) * A)
    base.update(overrides)
    return FlowMatchingPolicy(PolicyConfig.from_dict({**PolicyConfig().to_dict(), **base}))


def _manifest(report, dataset: TransitionDataset, policy_in_id, policy_id, config: TrainConfig) -> dict:
    bags = []
    for e in report.episodes:
        bags.append({"bag": e.bag, "sha256": e.bag_hash, "episode_id": e.episode_id, "ticks": len(e),
                     "outcome": e.outcome, "task": e.task, "policy_ids": list(e.policy_ids)})
    sf = dataset.source_fraction[dataset.indices]
    return {"bags": bags, "skipped": [{"bag": b, "reason": r} for b, r in report.skipped],
            "counts": {"bags": len(bags), "transitions": len(dataset),
                       "intervention_transitions": int(dataset.is_intervention[dataset.indices].sum()),
                       "ticks_policy": float(sf[:, 0].sum()), "ticks_human": float(sf[:, 1].sum()),
                       "ticks_hold": float(sf[:, 2].sum()),
                       "outcomes": {o: int(sum(1 for e in report.episodes if e.outcome == o))
                                    for o in sorted({e.outcome for e in report.episodes})}},
            "decoded_this_run": report.decoded, "from_cache": report.cached,
            "policy_in": policy_in_id, "policy_out": policy_id, "method": config.method}


def write_curves(curves: dict[str, list[dict]], directory: Path) -> None:
    """curves.csv (phase, step, metric, value) and curves.png (one panel per phase x metric)."""
    rows = [(phase, r["step"], k, v) for phase, rs in curves.items() for r in rs for k, v in r.items() if k != "step"]
    with open(directory / "curves.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["phase", "step", "metric", "value"])
        w.writerows(rows)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(p, m) for p, _, m, _ in rows})
    fig, axes = plt.subplots(max(len(panels), 1), 1, figsize=(7, 2.2 * max(len(panels), 1)), squeeze=False)
    for ax, (phase, metric) in zip(axes[:, 0], panels):
        pts = [(s, v) for p, s, m, v in rows if p == phase and m == metric]
        ax.plot([s for s, _ in pts], [v for _, v in pts])
        ax.set_title(f"{phase}: {metric}", fontsize=9)
        ax.set_xlabel("step", fontsize=8)
    fig.tight_layout()
    fig.savefig(directory / "curves.png", dpi=80)
    plt.close(fig)


@dataclass
class IterationOutput:
    """What one iteration produced in memory (``run_iteration``)."""

    policy: object                       # the improved policy (trained in place)
    critic: object | None                # ChunkCritic fit for the policy as it was before improvement
    evaluated_policy_id: str | None      # policy_id the critic evaluates
    values: dict | None                  # q, v, advantage, q_std per transition of the dataset view
    curves: dict
    advantage_stats: dict | None
    value_critic: object | None = None   # value_data "current": the critic of V (fit on the policy's own chunks)


def run_iteration(config: TrainConfig, dataset: TransitionDataset, policy, fresh: bool = False) -> IterationOutput:
    """The learning part of an iteration, in memory (no bags, no files): usable directly on
    ``Episode`` lists (sim studies) via ``TransitionDataset(episodes, H, gamma)``.

    fresh: ``policy`` is untrained: behaviour-clone it on all chunks first (its normalisation
    must already be fitted). Then, unless ``config.init_only``: critic for ``policy`` with the
    value signal ``config.method``, advantages, advantage-weighted improvement (``bc``: w = 1).
    """
    device = torch.device(config.device)
    curves: dict[str, list[dict]] = {}
    if fresh:  # the initial policy: behaviour cloning on all data
        log.info("fresh policy: behaviour cloning on all %d chunks", len(dataset))
        curves["policy_init_bc"] = improve_policy(policy, dataset, None, config.improvement, seed=config.seed,
                                                  device=device, progress=config.progress,
                                                  batch_blocks=config.batch_blocks)
    if config.init_only:
        return IterationOutput(policy, None, None, None, curves, None)
    critic, values, stats, evaluated_id, advantages, targets = None, None, None, None, None, None
    value_critic, value_stats = None, None
    if config.method in VALUE_METHODS:
        evaluated_id = policy.policy_id
        critic = critic_for_policy(policy, config.critic, config.critic_init_from_policy, dataset=dataset)
        # pi's chunks for the TD target, drawn once per fit (num_policy_samples per tick); V and the
        # ranked extraction draw num_value_samples per observation batch in chunk_values (V's error << beta)
        t0 = time.monotonic()
        bank = PolicySampleBank(policy, dataset, config.critic.num_policy_samples, batch_size=config.eval_batch_size,
                                seed=config.seed, device=device, progress=config.progress)
        bank_s = time.monotonic() - t0
        log.info("fitting the %s critic for policy %s", config.method, evaluated_id)
        curves["critic"] = fit_critic(critic, dataset, config.method, bank, config.critic, seed=config.seed,
                                      device=device, progress=config.progress, batch_blocks=config.batch_blocks)
        t0 = time.monotonic()
        values = chunk_values(critic, dataset, policy, config.critic.num_value_samples, config.eval_batch_size, device,
                              seed=config.seed)
        values_s = time.monotonic() - t0
        if config.critic.value_data == "current":
            t0 = time.monotonic()
            value_critic, curve, value_stats = fit_current_value(
                lambda: critic_for_policy(policy, config.critic, config.critic_init_from_policy, dataset=dataset),
                dataset, policy, config.method, bank, config.critic, seed=config.seed, device=device,
                progress=config.progress, batch_blocks=config.batch_blocks)
            if value_critic is None:
                log.info("value_data current: %s", value_stats["reason"])
            else:
                curves["critic_value"] = curve
                values = with_value_of(values, chunk_values(value_critic, dataset, policy,
                                                            config.critic.num_value_samples, config.eval_batch_size,
                                                            device, seed=config.seed))
                log.info("V of the advantages from a critic fitted on policy %s's own %d chunks (%d episodes)",
                         evaluated_id, value_stats["transitions"], value_stats["episodes"])
            value_stats["seconds"] = time.monotonic() - t0
        advantages = values["advantage"]
        rows = dataset.indices  # pooled A weights the policy; the raw per-chunk A stays in values and the stats
        segments = (dataset.episode[rows], dataset.tick_in_episode[rows], dataset.source_fraction[rows].argmax(1))
        if config.improvement.advantage_pooling == "segment":
            advantages = segment_advantages(advantages, *segments)
        elif config.improvement.advantage_pooling == "option":
            episode = segments[0]
            end = segments[1] == np.diff(dataset.tick_offset)[episode] - 1
            terminal = np.array([e.terminal for e in dataset.episodes], bool)[episode]
            advantages = option_advantages(values["v"], dataset.mc_returns[rows], *segments, end, terminal,
                                           dataset.gamma)
        stats = {k: {"mean": float(np.mean(v)), "std": float(np.std(v)), "min": float(np.min(v)),
                     "max": float(np.max(v))} for k, v in values.items() if k not in ("best_index", "best_chunk")}
        stats["fraction_positive_advantage"] = float((values["advantage"] > 0).mean())
        stats["fraction_positive_by_group"] = advantage_breakdown(dataset, values["advantage"])
        stats["value_samples"] = {"n": config.critic.num_value_samples, "bank_seconds": bank_s,
                                  "values_seconds": values_s, "v_se_mean": float(np.nanmean(values["v_se"])),
                                  "v_se_over_beta": float(np.nanmean(values["v_se"]) / config.improvement.beta)}
        stats["ranked_replaced_fraction"] = float((values["best_index"] >= 0).mean())
        if value_stats is not None:
            stats["value_data"] = value_stats
        if config.improvement.extraction == "ranked":
            targets = values["best_chunk"]
    if not hasattr(policy, "loss"):  # trained where it lives, from the exported advantages (values.csv)
        log.info("backend of policy %s has no loss here: advantages exported, no improvement", evaluated_id)
    elif not (config.method in IMITATION_METHODS and fresh):  # a fresh policy's BC above is the bc iteration
        imitated, keep = imitation_set(dataset, config.critic_only_bags,
                                       operator_only=config.method == "dagger"
                                       or config.improvement.imitate == "operator")
        imitated_adv = None if advantages is None else np.asarray(advantages)[keep]
        imitated_targets = None if targets is None else targets[keep]
        if imitated_targets is not None:
            imitated_adv = None  # ranked extraction distils the chosen chunks with weight 1
        log.info("improving the policy (%s) on %d of %d chunks", config.method, len(imitated), len(dataset))
        improvement = config.improvement
        if imitated_adv is not None and improvement.target_ess > 0:
            improvement = dataclasses.replace(improvement, beta=ess_temperature(imitated_adv, improvement.target_ess))
            log.info("beta %.4g: the weights keep an ESS of %.2f of the %d imitated chunks", improvement.beta,
                     improvement.target_ess, len(imitated))
        preference = None
        if imitated_adv is not None and improvement.operator_share_rule == "critic":
            # per-chunk advantages, not the pooled ones: one chunk against one chunk, whatever its segment's length
            operator, chunk_adv = operator_chunks(imitated), np.asarray(values["advantage"])[keep]
            preference = operator_preference(chunk_adv, operator)
            improvement = dataclasses.replace(improvement, operator_share=critic_operator_share(chunk_adv, operator))
            if operator.all() or not operator.any():
                log.info("operator share: one source only (%d of the operator's chunks, %d of the policy's), "
                         "nothing to compare", operator.sum(), (~operator).sum())
            else:
                log.info("operator share %.2f: the critic prefers a correction to the policy's own chunk in %.0f %% "
                         "of the %d x %d pairs", improvement.operator_share, 100 * preference, operator.sum(),
                         (~operator).sum())
        conditioned = imitated_adv is not None and improvement.extraction == "conditioned"
        if stats is not None:
            stats["imitated_chunks"] = len(imitated)
            if conditioned:
                # which chunks the policy is told are "positive", per provenance group
                stats["conditioned"] = {
                    "threshold": improvement.condition_threshold,
                    "positive_fraction": float((imitated_adv > improvement.condition_threshold).mean()),
                    "by_group": advantage_breakdown(imitated, imitated_adv - improvement.condition_threshold)}
            elif imitated_adv is not None:
                stats["weights"] = {"beta": improvement.beta, **weight_breakdown(imitated, imitated_adv, improvement)}
                if improvement.sampling == "weighted":
                    stats["weights"]["operator_share"] = improvement.operator_share
                if preference is not None:
                    stats["weights"]["operator_preference"] = preference
                stats["value_samples"]["v_se_over_beta"] = stats["value_samples"]["v_se_mean"] / improvement.beta
        if conditioned:
            # the same weights plus a zero-initialised indicator embedding: it samples as before until trained
            policy = with_advantage_conditioning(policy, improvement.condition_guidance)
        phase = "policy_bc" if config.method in IMITATION_METHODS else "policy_improvement"
        curves[phase] = improve_policy(policy, imitated, imitated_adv, improvement, seed=config.seed,
                                       device=device, progress=config.progress, batch_blocks=config.batch_blocks,
                                       targets=imitated_targets)
    return IterationOutput(policy, critic, evaluated_id, values, curves, stats, value_critic)


def imitation_set(dataset, critic_only_bags, operator_only: bool = False) -> tuple:
    """The chunks the improvement may imitate: all but those of bags matching ``critic_only_bags``
    (fnmatch patterns on the bag path); with ``operator_only`` (the dagger baseline) only chunks
    the operator mostly executed (demonstrations and interventions). Returns (dataset view,
    keep: (len(dataset),) bool over the input view's order)."""
    imitable = np.ones(len(dataset.done), bool)  # per transition row (one per tick)
    if critic_only_bags:
        excluded = np.array([any(fnmatch.fnmatch(str(b), p) for p in critic_only_bags) for b in dataset.bags], bool)
        imitable &= ~excluded[dataset.tick_episode]
    if operator_only:
        imitable &= dataset.source_fraction[:, SOURCE_HUMAN] >= 0.5
    keep = imitable[dataset.indices]
    if not keep.any():
        raise ValueError(f"nothing is left to imitate (critic_only_bags {list(critic_only_bags)}"
                         + (", operator chunks only" if operator_only else "") + ")")
    if keep.all():
        return dataset, keep
    return dataset.filter(mask=imitable), keep


def provenance_groups(dataset) -> dict[str, np.ndarray]:
    """Boolean masks over the view's chunks: operator chunks (mostly the operator's: demonstrations
    and interventions), and the policy's own chunks in episodes that succeeded / failed."""
    rows = dataset.indices
    policy = dataset.source_fraction[rows][:, SOURCE_POLICY] >= 0.5
    success = dataset.outcome[rows] == "SUCCESS"
    return {"operator": operator_chunks(dataset), "policy_in_success": policy & success,
            "policy_in_failure": policy & ~success}


def advantage_breakdown(dataset, advantages: np.ndarray) -> dict:
    """Fraction of chunks with A > 0 per provenance group (the chunks binary weighting imitates).
    A useful critic keeps policy_in_failure well below the others. Groups with no chunk are left out."""
    positive = np.asarray(advantages) > 0
    return {name: {"fraction_positive": float(positive[m].mean()), "chunks": int(m.sum())}
            for name, m in provenance_groups(dataset).items() if m.any()}


def weight_breakdown(dataset, advantages: np.ndarray, config: ImprovementConfig) -> dict:
    """Where the advantage-weighted loss puts its gradient, over the imitated chunks: per provenance
    group its share of the summed weight (bc's share is its share of the chunks) and its mean
    weight (1 = average), and the weights' effective sample size as a fraction of the chunks
    (1 = uniform; small = a few chunks carry the update). With weighted sampling and an operator share,
    the shares are those of the draws (improvement.draw_probabilities)."""
    operator = operator_chunks(dataset)
    w = unnormalised_weights(torch.as_tensor(np.asarray(advantages, np.float32)), config.beta, config.w_max,
                             config.weight_mode, operator if config.trust_operator else None
                             ).numpy().astype(np.float64)
    total = w.sum()
    if total <= 0:
        return {"ess_fraction": 0.0, "groups": {}}
    if config.sampling == "weighted" and config.operator_share > 0:  # the draws' split, not the weights'
        w = draw_probabilities(w, operator, config.operator_share)
        total = 1.0
    groups = {name: {"weight_share": float(w[m].sum() / total), "mean_weight": float(w[m].mean() / w.mean()),
                     "chunks": int(m.sum())} for name, m in provenance_groups(dataset).items() if m.any()}
    return {"ess_fraction": ess_fraction(w), "groups": groups}


def _ingest_sharded(bags, config: TrainConfig):
    """ingest_bags, with the decoding of new bags shared out over torchrun ranks (rank r decodes
    every W-th bag into the cache), then every rank reads all episodes from the cache. Skipped
    bags are reported once, by rank 0."""
    rank, world = rank_world()
    if world > 1:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SkippedBagWarning)
            ingest_bags(find_bags(bags)[rank::world], config.ingestion)
        barrier()
    with warnings.catch_warnings():
        if rank != 0:
            warnings.simplefilter("ignore", SkippedBagWarning)
        return ingest_bags(bags, config.ingestion, progress=config.progress and rank == 0)


def train_iteration(config: TrainConfig, bags, policy_in: str | os.PathLike | None,
                    out_dir: str | os.PathLike) -> TrainResult:
    """One iteration (module docstring). ``bags``: bag dirs / dirs of bags; ``policy_in``: the
    current policy checkpoint, or None for a fresh policy; ``out_dir``: the new checkpoint."""
    t_start = time.monotonic()
    seed_everything(config.seed)
    out_dir = Path(out_dir).expanduser()
    if out_dir.exists() and not config.overwrite:
        raise FileExistsError(f"{out_dir} exists; pass --overwrite or choose a new --out")
    device = torch.device(config.device)
    report = _ingest_sharded(bags, config)
    log.info("ingested %d bags (%d decoded, %d from cache, %d skipped)", len(report.episodes),
             len(report.decoded), len(report.cached), len(report.skipped))
    if not report.episodes:
        raise RuntimeError(no_usable_bags(bags, report))

    from aloe_policy.backends import DEFAULT_BACKEND, load_backend

    if policy_in is None and config.backend != DEFAULT_BACKEND:
        raise ValueError(f"backend {config.backend} needs --policy-in (its address or checkpoint); a fresh policy "
                         f"is always the built-in {DEFAULT_BACKEND}")
    if policy_in is not None:  # the built-in model's checkpoint, or a served / plugged-in model
        options = {"contract": config.remote_contract} if config.remote_contract else {}
        policy = load_backend(config.backend, str(policy_in), str(device), **options)
        policy_in_id = policy.policy_id
        if not hasattr(policy, "loss") and config.method not in VALUE_METHODS:
            raise ValueError(f"backend {config.backend} has no loss here: --method {config.method} would train it; "
                             f"use a value method ({', '.join(VALUE_METHODS)}) to export its advantages")
        dataset = TransitionDataset(report.episodes, policy.config.chunk_horizon, config.gamma)
        check_camera_contract(policy.config, dataset, policy_in, config.ingestion.depth_range_m)
    else:
        dataset = TransitionDataset(report.episodes, config.chunk_horizon, config.gamma)
        policy = _fresh_policy(config, dataset).to(device)
        policy.fit_normalization(*dataset.behaviour_arrays())
        policy_in_id = None
    log.info("%d transitions (H=%d, gamma=%g)", len(dataset), dataset.chunk_horizon, dataset.gamma)

    out = run_iteration(config, dataset, policy, fresh=policy_in is None)
    critic, curves, stats, evaluated_id = out.critic, out.curves, out.advantage_stats, out.evaluated_policy_id

    if not is_main():  # every rank holds the same policy and critic; rank 0 writes them
        barrier()
        return TrainResult(checkpoint_dir=out_dir, policy_id=policy.policy_id, policy_in_id=policy_in_id,
                           method=config.method, num_transitions=len(dataset), bags_used=len(report.episodes),
                           bags_skipped=report.skipped, curves=curves, advantage_stats=stats,
                           seconds=time.monotonic() - t_start)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    leftovers = [p for pattern in (".{}.tmp-*", ".{}.old-*") for p in out_dir.parent.glob(pattern.format(out_dir.name))]
    for left in leftovers:
        log.warning("removing %s, left by a run killed while writing %s", left, out_dir)
        shutil.rmtree(left, ignore_errors=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    builtin = config.backend == DEFAULT_BACKEND
    try:
        # a backend trained elsewhere gets no checkpoint here: its critic and values.csv are the output
        policy_id = policy.save_pretrained(stage) if hasattr(policy, "loss") else policy_in_id
        if critic is not None:
            meta = {"method": config.method, "gamma": dataset.gamma, "evaluated_policy_id": evaluated_id,
                    "evaluated_backend": config.backend, "remote_contract": config.remote_contract,
                    "evaluated_policy_dir": (None if policy_in is None else str(Path(policy_in).resolve()) if builtin
                                             else str(policy_in)),
                    "ingestion": asdict(config.ingestion)}
            save_critic(critic, stage / "critic", extra=meta)
            if out.value_critic is not None:  # aloe-evaluate takes V from it, as this iteration did
                save_critic(out.value_critic, stage / "critic" / VALUE_CRITIC_DIR, extra=meta)
            if builtin:  # the critic as TorchScript: policy_node's value-guided selection loads it with torch alone
                export_chunk_scorer(critic, policy, stage / CHUNK_SCORER, dataset.observations(dataset.obs_tick[:2]))
        if not hasattr(policy, "loss") and out.values is not None:
            from .evaluate import value_rows, with_weights, write_values_csv

            imp = config.improvement
            write_values_csv(with_weights(value_rows(dataset, out.values, config.method, evaluated_id), imp.beta,
                                          imp.w_max, imp.weight_mode, imp.trust_operator, imp.operator_share,
                                          imp.operator_share_rule),
                             stage / "values.csv")
        (stage / "train_config.json").write_text(json.dumps(config.to_dict(), indent=1, sort_keys=True))
        if config.value_plots and out.values is not None:
            from .evaluate import plot_episode_values, value_rows

            plot_episode_values(dataset, value_rows(dataset, out.values, config.method, evaluated_id), stage / "values")
        manifest = _manifest(report, dataset, policy_in_id, policy_id, config)
        manifest["advantage_stats"] = stats
        (stage / "data_manifest.json").write_text(json.dumps(manifest, indent=1))
        write_curves(curves, stage)
        install_dir(stage, out_dir, config.overwrite)
        log.info("wrote %s %s (policy_id %s)", "checkpoint" if hasattr(policy, "loss") else
                 "critic and values.csv (advantage, weight per chunk) of the served policy in", out_dir, policy_id)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    barrier()
    return TrainResult(checkpoint_dir=out_dir, policy_id=policy_id, policy_in_id=policy_in_id, method=config.method,
                       num_transitions=len(dataset), bags_used=len(report.episodes), bags_skipped=report.skipped,
                       curves=curves, advantage_stats=stats, seconds=time.monotonic() - t_start)


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------

CHOICES = {"method": METHODS, "aggregate": AGGREGATION_RULES, "weight_mode": WEIGHT_MODES,
           "extraction": EXTRACTIONS, "advantage_pooling": POOLINGS, "sampling": SAMPLINGS, "imitate": IMITATED,
           "operator_share_rule": SHARE_RULES, "value_data": VALUE_DATA}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="aloe-train", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="One ALOE iteration: ingest bags, fit the critic for the current policy "
                    "(chunked TD + conservative ensemble aggregation), compute advantages, improve the "
                    "policy by advantage-weighted flow matching, write the new checkpoint.",
        epilog="Examples:\n"
               "  aloe-train --bags data/demos --init-only --out ckpt/iter0\n"
               "  aloe-train --bags data/ --policy-in ckpt/iter0 --out ckpt/iter1 --method aloe\n"
               "  aloe-train --bags data/ --policy-in ckpt/iter0 --out ckpt/iter1 --config train.yaml --beta 0.05\n"
               "  aloe-train --bags data/ --backend openpi_remote --policy-in ws://gpu:8000 --out ckpt/pi0_it1\n"
               "      (a served model: its critic and values.csv of advantages and weights, no checkpoint)\n"
               "\nPrecedence: defaults < --config YAML (nested sections ingestion/critic/improvement or flat\n"
               "keys) < flags. The full config is printed at start and saved as train_config.json.")
    p.add_argument("--bags", nargs="+", required=True, help="bag directories or directories of bags")
    p.add_argument("--policy-in", default=None, help="current policy: checkpoint directory, or ws://host:port with "
                                                     "--backend openpi_remote (omit: fresh policy, BC-initialised)")
    p.add_argument("--out", required=True, help="directory of the new checkpoint (written atomically)")
    p.add_argument("--config", default=None, help="YAML file with TrainConfig fields")
    p.add_argument("--log-level", default="INFO", help="logging level (DEBUG, INFO, WARNING)")
    add_config_arguments(p, TrainConfig(), CHOICES)
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    config = TrainConfig()
    if args.config:
        apply_overrides(config, yaml.safe_load(Path(args.config).read_text()) or {})
    apply_overrides(config, overrides_from_args(args, config))
    return config


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="[%(levelname)s] %(name)s: %(message)s")
    try:
        config = config_from_args(args)
    except (ValueError, OSError) as exc:
        print(f"aloe-train: bad configuration: {exc}", file=sys.stderr)
        return 2
    config.device = setup(config.device)  # joins the torchrun group when started by torchrun
    if is_main():
        print("TrainConfig:\n" + yaml.safe_dump(config.to_dict(), sort_keys=False), flush=True)
    if config.init_only and args.policy_in:
        print("aloe-train: --init-only makes a fresh policy; drop --policy-in", file=sys.stderr)
        return 2
    try:
        result = train_iteration(config, args.bags, args.policy_in, args.out)
    except (ValueError, FileExistsError, FileNotFoundError, RuntimeError) as exc:  # the message says what to do
        print(f"aloe-train: {exc}", file=sys.stderr)
        return 1
    finally:
        main_rank = is_main()
        teardown()
    if not main_rank:
        return 0
    what = "init-only: behaviour cloning" if config.init_only else result.method
    print(f"wrote {result.checkpoint_dir} policy_id={result.policy_id} ({what}, "
          f"{result.num_transitions} transitions from {result.bags_used} bags, {len(result.bags_skipped)} skipped, "
          f"{result.seconds:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
