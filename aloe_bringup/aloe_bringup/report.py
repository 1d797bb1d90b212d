"""Report of a loop run: metrics.png (success / interventions / critic loss per iteration) and
report.html (a table that fits a laptop screen with a legend of every column, the plots, each
checkpoint's training curves, links to each policy's bag folders)."""

from __future__ import annotations

import html
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# The table of a loop run: (header, unit or note, how to read it). One row per policy.
LEGEND = (
    ("Policy", "iteration k", "the policy after k improvement iterations (0 = behaviour cloning on the "
     "demonstrations); its episodes are the bag folders eval_{k+1} (alone) and iter_{k+1} (supervised)"),
    ("Success alone", "rate [95 % CI] (episodes)", "episodes of the policy with the operator off: the loop's "
     "measure of the policy; Wilson interval"),
    ("Baseline alone", "rate [95 % CI] (episodes)", "the compare_with method's policy (Dagger by default: "
     "imitating the demonstrations and the operator's corrections, no critic), trained every iteration on the "
     "same bags from its own previous policy and run on the same episodes with the operator off (bag folders "
     "<method>_eval_k); its rollouts train nothing. Same initial policy: the same measurement at iteration 0"),
    ("Success supervised", "rate", "episodes with the scripted operator taking over when it goes wrong"),
    ("No takeover", "rate", "supervised episodes that succeeded without any takeover"),
    ("Intervention", "operator ticks / ticks (takeovers per episode)", "share of the supervised episodes' control "
     "ticks the operator drove, and in brackets the operator's takeovers per supervised episode"),
    ("Length", "ticks of 0.1 s", "mean supervised episode length"),
    ("Critic TD loss", "last step", "the critic's squared TD error when its fit ended; it grows with the data "
     "(more non-zero returns to fit), so a rise is not a worse critic"),
    ("Chunks with A > 0", "policy in success / policy in failure / operator", "a critic diagnostic: the share of "
     "each group's recorded chunks the critic scores above the policy's own average (advantage > 0); a useful "
     "critic scores failures' chunks lower than the rest"),
    ("Train", "s", "wall time of the iteration's training (critic + improvement)"),
)


def _fmt_rate(v) -> str:
    return "-" if v is None or v != v else f"{v:.2f}"


def table_cells(r: dict) -> list[str]:
    """One report row (HTML-escaped strings), in LEGEND order."""
    k = int(r.get("iteration", 0))

    def with_interval(rate, n) -> str:
        n = int(n or 0)
        if rate is not None and rate == rate and n:
            lo, hi = wilson_interval(rate * n, n)
            return f"{rate:.2f} [{lo:.2f}, {hi:.2f}] ({n})"
        return _fmt_rate(rate)

    alone = with_interval(r.get("success_rate"), r.get("eval_episodes"))
    baseline = with_interval(r.get("baseline_success_rate"), r.get("baseline_eval_episodes"))
    loss = r.get("critic_loss")
    adv = [r.get(key) for key in ("adv_pos_success", "adv_pos_failure", "adv_pos_operator")]
    bags = f'<a href="bags/eval_{k + 1:02d}/">eval_{k + 1:02d}</a>, <a href="bags/iter_{k + 1:02d}/">iter_{k + 1:02d}</a>'
    pid = html.escape(str(r.get("policy_id", "")))
    return [f'{k} <small title="policy_id {pid}">{pid[:8]}</small><br><small>{bags}</small>', alone, baseline,
            _fmt_rate(r.get("assisted_success_rate")), _fmt_rate(r.get("no_takeover_success_rate")),
            _fmt_rate(r.get("intervention_rate")) + ("" if r.get("takeovers_per_episode") is None
                                                    else f" ({r['takeovers_per_episode']:.1f})"),
            "-" if r.get("mean_episode_length") is None else f"{r['mean_episode_length']:.1f}",
            "-" if loss is None or loss != loss else f"{loss:.2g}",
            " / ".join(_fmt_rate(a) for a in adv) if any(a is not None for a in adv) else "-",
            "-" if r.get("train_s") is None else f"{r['train_s']:.0f}"]


def wilson_interval(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a success rate from n episodes ((nan, nan) for n = 0)."""
    if n <= 0:
        return float("nan"), float("nan")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)  # exactly 0 / 1 at the extremes (rounding)


def plot_metrics(rows: list[dict], path: Path) -> Path:
    its = [r["iteration"] for r in rows]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    axes = axes.ravel()
    ax = axes[0]
    rate = [r.get("success_rate", float("nan")) for r in rows]
    bounds = [wilson_interval(p * r.get("eval_episodes", 0), r.get("eval_episodes", 0)) for p, r in zip(rate, rows)]
    ax.errorbar(its, rate, yerr=[[max(0.0, p - lo) for p, (lo, _) in zip(rate, bounds)],
                                 [max(0.0, hi - p) for p, (_, hi) in zip(rate, bounds)]],
                fmt="o-", capsize=3, label="policy alone (operator off), 95 % CI")
    if any("baseline_success_rate" in r for r in rows):
        ax.plot(its, [r.get("baseline_success_rate", float("nan")) for r in rows], "D--", color="tab:gray",
                label="baseline alone, same bags (compare_with)")
    ax.plot(its, [r.get("assisted_success_rate", float("nan")) for r in rows], "s-", label="with the operator")
    ax.plot(its, [r.get("no_takeover_success_rate", float("nan")) for r in rows], "^-", label="with operator, no takeover")
    ax.set(xlabel="iteration (policy)", ylabel="rate", ylim=(0, 1.05), title="success")
    ax.legend(fontsize=7, loc="lower right")
    ax = axes[1]
    ax.plot(its, [r.get("intervention_rate", float("nan")) for r in rows], "o-", color="tab:red")
    ax.set(xlabel="iteration (policy)", ylabel="operator ticks / ticks", title="intervention rate", ylim=(0, 1))
    ax = axes[2]
    ax.plot(its, [r.get("critic_loss", float("nan")) for r in rows], "o-", color="tab:green")
    ax.set(xlabel="iteration (critic fit)", ylabel="squared TD error", title="critic TD loss (grows with the data)")
    ax.set_ylim(bottom=0)
    ax = axes[3]
    for key, label in (("adv_pos_success", "policy chunks, successful episodes"),
                       ("adv_pos_failure", "policy chunks, failed episodes"), ("adv_pos_operator", "operator chunks")):
        ax.plot(its, [r.get(key, float("nan")) for r in rows], "o-", label=label)
    ax.set(xlabel="iteration (critic fit)", ylabel="fraction with A > 0", ylim=(0, 1.05),
           title="critic diagnostic: chunks with A > 0")
    ax.legend(fontsize=7, loc="lower right")
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

    head = "".join(f"<th>{html.escape(h)}<br><small>{html.escape(u)}</small></th>" for h, u, _ in LEGEND)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in table_cells(r)) + "</tr>\n" for r in rows)
    legend = "".join(f"<dt>{html.escape(h)}</dt><dd>{html.escape(t)}</dd>" for h, _, t in LEGEND)
    curves = "".join(
        f'<h3>{p.parent.name}</h3><img src="{p.relative_to(run_dir)}" alt="training curves {p.parent.name}" '
        'style="max-width:100%">\n' for p in sorted((run_dir / "checkpoints").glob("iter_*/curves.png")))
    value_links = ""
    for values in sorted((run_dir / "checkpoints").glob("iter_*/values")):
        phases = ", ".join(f'<a href="{d.relative_to(run_dir)}/">{html.escape(d.name)}</a>'
                           for d in sorted(p for p in values.iterdir() if p.is_dir()))
        k = int(values.parent.name.split("_")[-1])
        value_links += (f"<li>critic of {values.parent.name} (the value of policy {k - 1} along every episode so far, "
                        f"operator takeovers shaded): {phases}</li>\n")
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>ALOE loop {html.escape(run_dir.name)}</title>
<style>body{{font-family:sans-serif;margin:1.5em;max-width:1400px}} table{{border-collapse:collapse;font-size:14px}}
td,th{{border:1px solid #ccc;padding:4px 6px;text-align:right;vertical-align:top}} th{{background:#f4f4f4}}
dt{{font-weight:bold;margin-top:.4em}} dd{{margin-left:1.5em}}</style></head><body>
<h1>ALOE human-in-the-loop run</h1>
<p>Run directory <code>{html.escape(str(run_dir))}</code>, {wall_s / 60:.1f} minutes, method
<b>{html.escape(str(config.get("method", "")))}</b>, baseline <b>{html.escape(str(config.get("compare_with") or "none"))}</b>
trained on the same bags. One row per policy; every rate is over that policy's episodes.</p>
<table><tr>{head}</tr>
{body}</table>
<details open><summary>What each column means</summary><dl>{legend}</dl></details>
{f'<img src="{plot.name}" alt="success, interventions, critic loss and diagnostic per iteration" style="max-width:100%">' if plot else ''}
<h2>Value along each episode</h2><ul>{value_links or "<li>none written</li>"}</ul>
<h2>Training curves</h2>{curves}
<h2>Configuration</h2><pre>{html.escape(json.dumps(config, indent=1))}</pre>
</body></html>"""
    out = run_dir / "report.html"
    out.write_text(page)
    return out
