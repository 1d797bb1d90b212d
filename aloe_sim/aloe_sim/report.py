"""Report of a loop run: metrics.png (success / interventions / critic loss per iteration) and
report.html (the table, the plots, each checkpoint's training curves)."""

from __future__ import annotations

import html
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLUMNS = ("iteration", "policy_id", "success_rate", "eval_episodes", "episodes", "assisted_success_rate",
           "no_takeover_success_rate", "intervention_rate", "takeovers_per_episode", "mean_episode_length",
           "critic_loss", "adv_pos_success", "adv_pos_failure", "adv_pos_operator", "train_s", "wall_s")


def wilson_interval(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a success rate from n episodes ((nan, nan) for n = 0)."""
    if n <= 0:
        return float("nan"), float("nan")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / (1 + z * z / n)
    return centre - half, centre + half


def plot_metrics(rows: list[dict], path: Path) -> Path:
    its = [r["iteration"] for r in rows]
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.6))
    ax = axes[0]
    rate = [r.get("success_rate", float("nan")) for r in rows]
    bounds = [wilson_interval(p * r.get("eval_episodes", 0), r.get("eval_episodes", 0)) for p, r in zip(rate, rows)]
    ax.errorbar(its, rate, yerr=[[max(0.0, p - lo) for p, (lo, _) in zip(rate, bounds)],
                                 [max(0.0, hi - p) for p, (_, hi) in zip(rate, bounds)]],
                fmt="o-", capsize=3, label="policy alone (operator off), 95 % CI")
    ax.plot(its, [r.get("assisted_success_rate", float("nan")) for r in rows], "s-", label="with the operator")
    ax.plot(its, [r.get("no_takeover_success_rate", float("nan")) for r in rows], "^-", label="with operator, no takeover")
    ax.set(xlabel="iteration (policy)", ylabel="rate", ylim=(-0.05, 1.05), title="success")
    ax.legend(fontsize=8)
    ax = axes[1]
    ax.plot(its, [r.get("intervention_rate", float("nan")) for r in rows], "o-", color="tab:red")
    ax.set(xlabel="iteration (policy)", ylabel="operator ticks / ticks", title="intervention rate")
    ax = axes[2]
    ax.plot(its, [r.get("critic_loss", float("nan")) for r in rows], "o-", color="tab:green")
    ax.set(xlabel="iteration (critic fit)", ylabel="TD loss", title="critic loss (last step)")
    ax = axes[3]
    for key, label in (("adv_pos_success", "policy chunks, successful episodes"),
                       ("adv_pos_failure", "policy chunks, failed episodes"), ("adv_pos_operator", "operator chunks")):
        ax.plot(its, [r.get(key, float("nan")) for r in rows], "o-", label=label)
    ax.set(xlabel="iteration (critic fit)", ylabel="fraction with A > 0", ylim=(-0.05, 1.05),
           title="recorded chunks with A > 0 (all data)")
    ax.legend(fontsize=8)
    for a in axes:
        a.grid(alpha=0.3)
        a.set_xticks(its)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(run_dir: Path, rows: list[dict], config: dict, wall_s: float) -> Path:
    run_dir = Path(run_dir)
    plot = plot_metrics(rows, run_dir / "metrics.png") if rows else None

    def cell(v):
        if isinstance(v, float):
            return f"{v:.3f}"
        return html.escape(str(v)) if v is not None else "-"

    table = "<tr>" + "".join(f"<th>{c}</th>" for c in COLUMNS) + "</tr>\n"
    for r in rows:
        table += "<tr>" + "".join(f"<td>{cell(r.get(c))}</td>" for c in COLUMNS) + "</tr>\n"
    curves = "".join(
        f'<h3>{p.parent.name}</h3><img src="{p.relative_to(run_dir)}" style="max-width:100%">\n'
        for p in sorted((run_dir / "checkpoints").glob("iter_*/curves.png")))
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>ALOE loop {html.escape(run_dir.name)}</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}</style></head><body>
<h1>ALOE human-in-the-loop run</h1>
<p>Run directory <code>{html.escape(str(run_dir))}</code>, {wall_s / 60:.1f} minutes. Iteration k is the policy
after k improvement steps (0 = behaviour cloning on demonstrations). success_rate: the policy alone
(operator off); the other columns: the episodes it ran with the scripted operator supervising
(episodes = their number).</p>
<table>{table}</table>
{f'<img src="{plot.name}" style="max-width:100%">' if plot else ''}
<h2>Training curves</h2>{curves}
<h2>Configuration</h2><pre>{html.escape(json.dumps(config, indent=1))}</pre>
</body></html>"""
    out = run_dir / "report.html"
    out.write_text(page)
    return out
