"""Several seeds of ``bench/offline_loop.py``, side by side: a table, a paired test and a plot.

Each JSON written by ``offline_loop.py --out`` is one (method, seed) run. Runs of the same seed
share the initial policy (``--load-init``) and every run evaluates the same cube positions
(seeds 500..), so two methods are compared *paired*: at the last iteration both reached, episode
i of seed s under method M against episode i of seed s under the reference. Only the discordant pairs carry
information (M succeeds where the reference fails, or the reverse); under "no difference" they
split 50/50, and the two-sided exact sign test (McNemar's exact test) gives the p-value.

    python bench/offline_loop_summary.py /tmp/bo/*.json --reference bc \\
        --plot bench/results/offline_loop_seeds.png --markdown /tmp/bo/summary.md
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from pathlib import Path


def label(args: dict) -> str:
    """The method, its advantage weighting (critic methods), its other ``--train`` overrides, and a
    mark where the policy-alone episodes were imitated too."""
    train = list(args.get("train") or [])
    weight_mode = args.get("weight_mode")  # recorded by offline_loop.py; a --train override wins
    for item in [t for t in train if t.startswith("weight_mode=")]:
        weight_mode = item.partition("=")[2]
        train.remove(item)
    name = args["method"]
    if weight_mode and name not in ("bc", "filtered", "random"):
        name += f" ({weight_mode})"
    if train:
        name += f" [{', '.join(train)}]"
    if args.get("no_eval_data"):
        return f"{name} (no eval data)"
    return name if args.get("eval_critic_only") else f"{name} (all data)"


def load_runs(paths: list[Path]) -> dict[str, dict[int, list[dict]]]:
    """{label: {seed: rows}}; a file that is not an offline_loop result is an error."""
    runs: dict[str, dict[int, list[dict]]] = defaultdict(dict)
    for path in paths:
        try:
            data = json.loads(Path(path).read_text())
            args, rows = data["args"], data["rows"]
            key, seed = label(args), int(args["seed"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: not an offline_loop.py result ({exc})") from exc
        if seed in runs[key]:
            raise ValueError(f"{path}: a second {key!r} run for seed {seed}")
        runs[key][seed] = rows
    return dict(runs)


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact binomial (sign / McNemar exact) p-value of wins vs losses at p = 1/2."""
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(0, min(wins, losses) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def paired(rows_a: list[dict], rows_b: list[dict], iteration: int) -> tuple[int, int]:
    """(a succeeded and b failed, b succeeded and a failed) over one iteration's episodes."""
    a, b = rows_a[iteration]["eval_success"], rows_b[iteration]["eval_success"]
    if len(a) != len(b):
        raise ValueError(f"the runs evaluated {len(a)} and {len(b)} episodes: not paired")
    return sum(x and not y for x, y in zip(a, b)), sum(y and not x for x, y in zip(a, b))


def summarise(runs: dict[str, dict[int, list[dict]]], reference: str | None = None) -> dict:
    """Per method: success per iteration per seed, the mean over seeds, the gain (last - first);
    and, against ``reference``, the paired comparison over the seeds both ran, at the last
    iteration every one of those runs reached (a run still going has fewer rows)."""
    out = {}
    for key, by_seed in sorted(runs.items()):
        curves = {seed: [r["success_rate"] for r in rows] for seed, rows in sorted(by_seed.items())}
        length = min(len(c) for c in curves.values())
        mean = [sum(c[i] for c in curves.values()) / len(curves) for i in range(length)]
        gains = {seed: c[length - 1] - c[0] for seed, c in curves.items()}
        entry = {"seeds": sorted(curves), "success": curves, "mean": mean,
                 "mean_gain": sum(gains.values()) / len(gains), "gains": gains}
        if reference and key != reference and reference in runs:
            common = sorted(set(by_seed) & set(runs[reference]))
            if common:
                last = min(len(rows[seed]) for rows in (by_seed, runs[reference]) for seed in common) - 1
                wins = losses = 0
                for seed in common:
                    w, l_ = paired(by_seed[seed], runs[reference][seed], last)
                    wins, losses = wins + w, losses + l_
                entry["vs_reference"] = {"reference": reference, "seeds": common, "iteration": last, "wins": wins,
                                         "losses": losses, "p_value": sign_test(wins, losses)}
        out[key] = entry
    return out


def markdown(summary: dict) -> str:
    lines = ["| method | seed | success per iteration | gain |", "|---|---|---|---|"]
    for key, entry in summary.items():
        for seed in entry["seeds"]:
            curve = ", ".join(f"{v:.2f}" for v in entry["success"][seed])
            lines.append(f"| {key} | {seed} | {curve} | {entry['gains'][seed]:+.2f} |")
        lines.append(f"| **{key}** | mean of {len(entry['seeds'])} | "
                     + ", ".join(f"{v:.2f}" for v in entry["mean"]) + f" | **{entry['mean_gain']:+.2f}** |")
    tests = [(k, e["vs_reference"]) for k, e in summary.items() if "vs_reference" in e]
    if tests:
        lines += ["", "| method vs reference, paired episodes | iteration | better | worse | exact sign-test p |",
                  "|---|---|---|---|---|"]
        for key, t in tests:
            lines.append(f"| {key} vs {t['reference']} (seeds {', '.join(map(str, t['seeds']))}) | {t['iteration']} | "
                         f"{t['wins']} | {t['losses']} | {t['p_value']:.3f} |")
    return "\n".join(lines) + "\n"


def plot(summary: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (key, entry) in enumerate(summary.items()):
        colour = colours[i % len(colours)]
        for seed in entry["seeds"]:
            ax.plot(range(len(entry["success"][seed])), entry["success"][seed], color=colour, alpha=0.3, lw=1)
        ax.plot(range(len(entry["mean"])), entry["mean"], color=colour, lw=2.5, marker="o",
                label=f"{key} (mean of {len(entry['seeds'])} seeds)")
    ax.set_xticks(range(max(len(e["mean"]) for e in summary.values())))
    ax.set_xlabel("iteration (0 = initial policy)")
    ax.set_ylabel("success, policy alone")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("offline mirror of the main job: thin lines = seeds")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", nargs="+", type=Path, help="offline_loop.py --out JSON files (one per method and seed)")
    p.add_argument("--reference", default="bc", help="the method every other is compared with (paired)")
    p.add_argument("--plot", type=Path, help="write the success-per-iteration plot (PNG) here")
    p.add_argument("--markdown", type=Path, help="write the tables here (also printed)")
    p.add_argument("--json", type=Path, help="write the summary as JSON here")
    a = p.parse_args(argv)
    try:
        summary = summarise(load_runs(a.results), a.reference)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = markdown(summary)
    print(text, end="")
    if a.markdown:
        a.markdown.write_text(text)
    if a.json:
        a.json.write_text(json.dumps(summary, indent=1))
    if a.plot:
        print(f"plot: {plot(summary, a.plot)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
