"""``aloe-evaluate``: Q, V and advantage of every recorded chunk of some bags, for a policy + critic.

    aloe-evaluate BAG_OR_DIR... --critic CKPT [--policy CKPT] --out DIR

writes ``values.csv`` (one row per control tick t: the chunk A_t executed from there) and one
``values_<episode>.png`` per bag: Q(o_t, A_t) and V(o_t) along the episode, operator takeover spans
(HUMAN ticks) shaded, holds hatched. ``evaluate_bags`` is the library entry point (the replay
node uses it too).

The critic (``<checkpoint>/critic``, written by aloe-train) was fit for one policy: the policy
whose checkpoint aloe-train started from. V samples that policy by default (its path is in the
critic's metadata); ``--policy`` picks another, with a warning, since Q is not its Q.
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
import warnings
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch

from aloe_data.ingestion import IngestionConfig, ingest_bags, no_usable_bags
from aloe_data.schema import SOURCE_HOLD, SOURCE_HUMAN, SOURCE_NAMES

from .critic import (CRITIC_CONFIG, VALUE_CRITIC_DIR, CriticConfig, critic_for_policy, load_critic_state,
                     read_critic_meta)
from .dataset import TransitionDataset, check_camera_contract
from .improvement import (SHARE_RULES, ImprovementConfig, critic_operator_share, draw_probabilities,
                          unnormalised_weights)
from .values import chunk_values, with_value_of

log = logging.getLogger("aloe_critic.evaluate")

CSV_FIELDS = ("bag", "episode_id", "tick", "stamp_s", "chunk_id", "source", "policy_fraction", "human_fraction",
              "is_intervention", "outcome", "q", "v", "advantage", "q_std", "v_se", "weight", "method", "policy_id")


def resolve_critic_dir(path: str | Path) -> Path:
    """A checkpoint directory (holding critic/) or the critic directory itself."""
    path = Path(path).expanduser()
    for cand in (path / "critic", path):
        if (cand / CRITIC_CONFIG).is_file():
            return cand
    raise FileNotFoundError(f"{path}: no critic ({CRITIC_CONFIG}) here or in {path / 'critic'}; "
                            "checkpoints from aloe-train --method aloe|td1|progress have one")


def load_critic(critic_path: str | Path, policy_path: str | Path | None = None, device: str = "cpu"):
    """-> (critic, policy, meta). The policy defaults to the one the critic was fit for (a
    checkpoint, or the server of a remote backend, which must be reachable: V samples it)."""
    from aloe_policy.backends import DEFAULT_BACKEND, load_backend

    critic_dir = resolve_critic_dir(critic_path)
    meta = read_critic_meta(critic_dir)
    policy_path = policy_path or meta.get("evaluated_policy_dir")
    if not policy_path:
        raise ValueError(f"{critic_dir}: the critic's policy is unknown (fresh policy); pass --policy CKPT")
    backend = meta.get("evaluated_backend") or DEFAULT_BACKEND
    options = {"contract": meta["remote_contract"]} if meta.get("remote_contract") else {}
    policy = load_backend(backend, str(policy_path), device, **options)
    if meta.get("evaluated_policy_id") and policy.policy_id != meta["evaluated_policy_id"]:
        warnings.warn(f"critic {critic_dir} was fit for policy {meta['evaluated_policy_id']}, evaluating with "
                      f"{policy.policy_id} from {policy_path}: V uses this policy's samples, Q is the other's",
                      stacklevel=2)
    return _saved_critic(critic_dir, meta, policy), policy, meta


def _saved_critic(directory: Path, meta: dict, policy):
    """The critic saved in ``directory`` (its meta already read), for ``policy``, in eval mode."""
    critic = critic_for_policy(policy, CriticConfig.from_saved(meta["critic"]), init_from_policy=False, saved=meta)
    load_critic_state(critic, directory)
    return critic.eval()


def load_value_critic(critic_path: str | Path, policy):
    """The critic of V saved beside the Q critic by an iteration with ``value_data: current``
    (``<critic>/value/``), or None (V is then the Q critic's own, as in that iteration)."""
    directory = resolve_critic_dir(critic_path) / VALUE_CRITIC_DIR
    if not (directory / CRITIC_CONFIG).is_file():
        return None
    return _saved_critic(directory, read_critic_meta(directory), policy)


def evaluate_bags(bags, critic_path, policy_path=None, cache_dir: str | None = None,
                  num_policy_samples: int | None = None, device: str = "cpu", seed: int = 0,
                  progress: bool = False) -> tuple[list[dict], TransitionDataset]:
    """Score every chunk of every usable bag -> (rows with CSV_FIELDS, dataset)."""
    torch.manual_seed(seed)
    critic, policy, meta = load_critic(critic_path, policy_path, device)
    ingestion = IngestionConfig(**{k: v for k, v in (meta.get("ingestion") or {}).items()
                                   if k in {f.name for f in fields(IngestionConfig)}})
    if cache_dir:
        ingestion.cache_dir = cache_dir
    report = ingest_bags(bags, ingestion, progress=progress)
    if not report.episodes:
        raise RuntimeError(no_usable_bags(bags, report))
    dataset = TransitionDataset(report.episodes, critic.chunk_horizon, float(meta.get("gamma", 0.99)))
    check_camera_contract(policy.config, dataset, policy_path, ingestion.depth_range_m)
    values = chunk_values(critic, dataset, policy, num_policy_samples, device=device, seed=seed)
    value_critic = load_value_critic(critic_path, policy)
    if value_critic is not None:  # value_data "current": V from the critic of the policy's own chunks
        values = with_value_of(values, chunk_values(value_critic, dataset, policy, num_policy_samples, device=device,
                                                    seed=seed))
    return value_rows(dataset, values, meta.get("method", "aloe"), policy.policy_id), dataset


def value_rows(dataset: TransitionDataset, values: dict, method: str, policy_id: str) -> list[dict]:
    """Rows of values.csv (CSV_FIELDS but the weight) for every chunk of ``dataset``'s view."""
    rows = []
    for k, (i, prov) in enumerate(zip(dataset.indices, dataset.provenance(dataset.indices))):
        ep = dataset.episodes[dataset.episode[i]]
        t = prov["tick"]
        rows.append({"bag": prov["bag"], "episode_id": prov["episode_id"], "tick": t,
                     "stamp_s": int(ep.stamps[t]) * 1e-9, "chunk_id": int(ep.chunk_ids[t]),
                     "source": SOURCE_NAMES[int(ep.sources[t])], "policy_fraction": prov["policy_fraction"],
                     "human_fraction": prov["human_fraction"], "is_intervention": prov["is_intervention"],
                     "outcome": prov["outcome"], "q": float(values["q"][k]), "v": float(values["v"][k]),
                     "advantage": float(values["advantage"][k]), "q_std": float(values["q_std"][k]),
                     "v_se": float(values["v_se"][k]), "method": method, "policy_id": policy_id})
    return rows


def with_weights(rows: list[dict], beta: float, w_max: float, mode: str = "exp",
                 trust_operator: bool = False, operator_share: float = 0.0,
                 operator_share_rule: str = "fixed") -> list[dict]:
    """``rows`` with their ``weight``: the advantage weight a trainer outside this suite consumes (a
    VLA without an in-process loss), per chunk, before any per-batch normalisation; with
    ``trust_operator`` 1 on the chunks the operator mostly executed (ImprovementConfig.trust_operator).
    A trainer that draws its batches in proportion to this column (``sampling: weighted``) imitates
    every drawn chunk with weight 1. With ``operator_share`` s > 0 the column is the draw probability
    of aloe-train's weighted sampling with that share (improvement.draw_probabilities) times the
    number of chunks (mean 1): drawing in proportion to it gives the operator's chunks s of the draws.
    ``operator_share_rule`` "critic": s is set from the rows' advantages (improvement.critic_operator_share)."""
    if not 0.0 <= operator_share <= 1.0:
        raise ValueError(f"operator_share must be in [0, 1] (0 = by weight alone), got {operator_share}")
    if operator_share_rule not in SHARE_RULES:
        raise ValueError(f"operator_share_rule must be one of {SHARE_RULES}, got {operator_share_rule!r}")
    operator = np.array([r["human_fraction"] >= 0.5 for r in rows], bool)
    advantages = np.array([r["advantage"] for r in rows], np.float32)
    if operator_share_rule == "critic":
        operator_share = critic_operator_share(advantages, operator)
    weights = unnormalised_weights(torch.from_numpy(advantages), beta, w_max, mode,
                                   operator if trust_operator else None)
    if operator_share > 0 and rows:
        weights = draw_probabilities(weights.numpy(), operator, operator_share) * len(rows)
    for r, w in zip(rows, weights.tolist()):
        r["weight"] = w
    return rows


def write_values_csv(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
        w.writeheader()
        w.writerows(rows)


def _spans(mask: np.ndarray):
    """Contiguous True runs of a boolean array -> [(start, end_exclusive)]."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)))


def plot_episode_values(dataset: TransitionDataset, rows: list[dict], out_dir: Path) -> list[Path]:
    """One PNG per episode: Q and V along the episode; takeover (HUMAN) spans shaded, HOLD hatched."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import os

    paths = []
    common = Path(os.path.commonpath([str(Path(e.bag).parent) for e in dataset.episodes if e.bag] or ["."]))
    for ei, ep in enumerate(dataset.episodes):
        ep_rows = [r for r in rows if r["bag"] == ep.bag and r["episode_id"] == ep.episode_id]
        if not ep_rows:
            continue
        period = float(np.median(np.diff(ep.stamps))) * 1e-9 if len(ep) > 1 else 0.1
        t0 = int(ep.stamps[0]) * 1e-9
        x = np.array([r["stamp_s"] - t0 for r in ep_rows])
        fig, ax = plt.subplots(figsize=(8, 3))
        ax.plot(x, [r["q"] for r in ep_rows], label="Q(o_t, A_t) recorded chunk")
        ax.plot(x, [r["v"] for r in ep_rows], label="V(o_t) current policy")
        src = np.asarray(ep.sources)
        for k, (a, b) in enumerate(_spans(src == SOURCE_HUMAN)):
            ax.axvspan((ep.stamps[a] * 1e-9 - t0), (ep.stamps[b - 1] * 1e-9 - t0) + period, color="tab:red",
                       alpha=0.2, label="operator takeover" if k == 0 else None)
        for k, (a, b) in enumerate(_spans(src == SOURCE_HOLD)):
            ax.axvspan((ep.stamps[a] * 1e-9 - t0), (ep.stamps[b - 1] * 1e-9 - t0) + period, fill=False, hatch="//",
                       edgecolor="grey", label="hold" if k == 0 else None)
        ax.set_xlabel("time in episode [s]")
        ax.set_ylabel("value")
        # the bag's place under the folders given (the loop's <phase>/<episode>): in the title and the path
        rel = Path(os.path.relpath(ep.bag, common)) if ep.bag else Path(f"episode{ei}")
        ax.set_title(f"{rel} ({ep.outcome}) - {ep_rows[0]['method']} critic, V of policy "
                     f"{ep_rows[0]['policy_id'][:8]}", fontsize=9)
        ax.legend(fontsize=7, loc="best")
        fig.tight_layout()
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in rel.name)
        path = out_dir / rel.parent / f"values_{safe}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=80)
        plt.close(fig)
        paths.append(path)
    return paths


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="aloe-evaluate", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Score every recorded action chunk of some bags with a trained critic: Q(o_t, A_t), "
                    "V(o_t) of the current policy, advantage, ensemble std. Writes values.csv and one PNG per "
                    "episode (value along the episode, operator takeovers shaded).",
        epilog="Example: aloe-evaluate data/ --critic ckpt/iter1 --out eval/iter1")
    p.add_argument("bags", nargs="+", help="bag directories or directories of bags")
    p.add_argument("--critic", required=True, help="checkpoint directory from aloe-train (or its critic/ subdirectory)")
    p.add_argument("--policy", default=None, help="policy checkpoint for V (default: the policy the critic was fit for)")
    p.add_argument("--out", required=True, help="output directory for values.csv and the PNGs")
    p.add_argument("--cache-dir", default=None, help="ingestion cache (default: the one used in training)")
    p.add_argument("--num-policy-samples", type=int, default=None, help="A_j ~ pi per observation for V")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-plots", action="store_true", help="only write values.csv")
    p.add_argument("--beta", type=float, default=ImprovementConfig.beta,
                   help="temperature of the exported weight column: clip(exp(A / beta), 0, w_max)")
    p.add_argument("--w-max", type=float, default=ImprovementConfig.w_max, help="clip of the exported weight")
    p.add_argument("--trust-operator", action="store_true",
                   help="weight 1 on the chunks the operator mostly executed (demonstrations, corrections); the "
                        "advantage weights the policy's own chunks only (aloe-train's trust_operator)")
    p.add_argument("--operator-share", type=float, default=ImprovementConfig.operator_share,
                   help="export draw weights that give the operator's chunks this share of the draws and the "
                        "policy's the rest, each in proportion to its advantage weights (aloe-train's "
                        "operator_share with weighted sampling; 0 = in proportion to the weights alone)")
    p.add_argument("--operator-share-rule", choices=SHARE_RULES, default=ImprovementConfig.operator_share_rule,
                   help="critic: the share is how often the critic prefers an operator's chunk to one of the "
                        "policy's (over all pairs), within [0.05, 0.95], instead of --operator-share")
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 0.0 <= args.operator_share <= 1.0:  # before the scoring, which takes a while
        parser.error(f"--operator-share must be in [0, 1], got {args.operator_share}")
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] %(name)s: %(message)s")
    try:
        rows, dataset = evaluate_bags(args.bags, args.critic, args.policy, args.cache_dir, args.num_policy_samples,
                                      args.device, args.seed, progress=True)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:  # BackendError is a RuntimeError
        print(f"aloe-evaluate: {exc}", file=sys.stderr)
        return 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_values_csv(with_weights(rows, args.beta, args.w_max, trust_operator=args.trust_operator,
                                  operator_share=args.operator_share, operator_share_rule=args.operator_share_rule),
                     out / "values.csv")
    pngs = [] if args.no_plots else plot_episode_values(dataset, rows, out)
    adv = np.array([r["advantage"] for r in rows])
    if not args.policy:
        print(f"V is the value of policy {rows[0]['policy_id'] if rows else '?'}, the one this critic was fit for "
              "(the checkpoint's input, not the improved policy saved beside the critic); --policy <ckpt> "
              "evaluates another")
    print(f"scored {len(rows)} chunks of {len(dataset.episodes)} episodes: mean Q "
          f"{np.mean([r['q'] for r in rows]):.4f}, mean V {np.mean([r['v'] for r in rows]):.4f}, "
          f"advantage > 0 on {100 * (adv > 0).mean():.1f}%; wrote {out / 'values.csv'} and {len(pngs)} plots")
    return 0


if __name__ == "__main__":
    sys.exit(main())
