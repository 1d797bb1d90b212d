#!/usr/bin/env python3
"""The paper's comparison, offline mirror: ALOE vs Dagger vs AWR/progress vs bc (issue 14).

Every (operator, method, seed) is one ``bench/offline_loop.py`` run. Runs of one seed share the
initial policy (made once per seed from 5 skilled demonstrations, ``--save-init``) and evaluate
the same cube positions, so methods are compared *paired*, episode by episode, at the last
iteration:

* success (policy alone): the exact sign test on the discordant episode pairs (McNemar exact);
* throughput (successes per robot-hour = successes / summed episode time, policy alone): a paired
  permutation test, swapping the two methods' episodes within each pair (10,000 draws).

    python bench/aloe_vs_baselines.py run --dir /tmp/avb --seeds 0 1 2 3 4 --jobs 2          # CPU-hours
    python bench/aloe_vs_baselines.py status --dir /tmp/avb [more folders]  # progress only: iterations done, running or not
    python bench/aloe_vs_baselines.py archive --dir /tmp/avb --to bench/results/aloe_vs_baselines_runs/x  # keep them
    python bench/aloe_vs_baselines.py summary --dir /tmp/avb --out bench/results/aloe_vs_baselines.json

A method is a name of offline_loop.py's ``--method`` with optional TrainConfig overrides after a
colon: ``aloe``, ``aloe:extraction=ranked``, ``dagger``, ``progress``, ``bc``; a suffix ``+vgN``
deploys it with value-guided selection (best of N samples under the iteration's critic,
offline_loop.py ``--value-guided N``): its success is that of the guided evaluation episodes, the
policy trained exactly as without the suffix. ``run`` skips runs whose JSON already holds every
iteration, and a run stopped part-way resumes after its last finished iteration (offline_loop.py
``--state``, in ``<dir>/<run>.state`` until the run finishes), so an interrupted study loses at most one
iteration per run in flight.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from offline_loop import OPERATORS  # noqa: E402  (the operator conditions, defined once)
from offline_loop_summary import sign_test  # noqa: E402  (one exact sign test for the bench summaries)
BASELINES = ("dagger", "progress", "bc", "oracle", "filtered")  # oracle: the ceiling of judging corrections;
# filtered: the episode outcome instead of a critic (offline_loop)
METRICS = ("success", "throughput_per_hour")


def run_name(operator: str, method: str, seed: int) -> str:
    spec = method.replace(':', '__').replace('=', '-').replace(',', '_').replace('+', '__')
    return f"{operator}__{spec}__s{seed}"


def value_guided(method: str) -> int:
    """N of a ``+vgN`` suffix (value-guided selection at deployment), 0 without one."""
    _, _, n = method.partition("+vg")
    return int(n) if n else 0


def offline_loop_args(method: str) -> list[str]:
    """``aloe:extraction=ranked,beta=0.2+vg8`` -> ['--method', 'aloe', '--train', 'extraction=ranked', ...,
    '--value-guided', '8']."""
    spec, _, n = method.partition("+vg")
    name, _, overrides = spec.partition(":")
    args = ["--method", name]
    for item in filter(None, overrides.split(",")):
        args += ["--train", item]
    return args + (["--value-guided", n] if n else [])


def complete(path: Path, iterations: int) -> bool:
    try:
        return len(json.loads(path.read_text())["rows"]) >= iterations + 1
    except (OSError, ValueError, KeyError):
        return False


def status(root: Path, iterations: int, seeds=None) -> str:
    """Where a study folder stands, without its results (so a study can be watched without being read early):
    per run of its study.json, the iterations finished, and whether it is done, running (an offline_loop process
    on its state), resumable (a .state left by a cut run) or not started."""
    import psutil

    manifest = json.loads((root / "study.json").read_text())
    live = {" ".join(p.info["cmdline"] or []) for p in psutil.process_iter(["cmdline"])}
    lines = ["| seed | operator | method | iterations | state |", "|---|---|---|---|---|"]
    for name, lab in sorted(manifest.items(), key=lambda kv: (kv[1]["seed"], kv[1]["method"], kv[1]["operator"])):
        if seeds is not None and lab["seed"] not in seeds:
            continue
        try:
            done = len(json.loads((root / f"{name}.json").read_text())["rows"]) - 1
        except (OSError, ValueError, KeyError):
            done = -1
        state = ("done" if done >= iterations else
                 "running" if any(f"--state {root / name}.state " in c for c in live) else
                 "resumable" if (root / f"{name}.state" / "state.json").is_file() else
                 "cut before its first iteration" if done >= 0 else "not started")
        lines.append(f"| {lab['seed']} | {lab['operator']} | {lab['method']} | {max(done, 0)} / {iterations} | {state} |")
    return "\n".join(lines) + "\n"


def run_study(a) -> int:
    root = Path(a.dir)
    root.mkdir(parents=True, exist_ok=True)
    common = ["--demos", str(a.demos), "--eval-critic-only", "--iterations", str(a.iterations)] + a.extra

    def call(args: list[str], log: Path) -> int:
        t0 = time.monotonic()
        with open(log, "a") as fh:  # a resumed run's log goes on after the interrupted one's
            rc = subprocess.call(["nice", "-n", str(a.nice), sys.executable, str(HERE / "offline_loop.py"), *args],
                                 stdout=fh, stderr=subprocess.STDOUT)
        print(f"[{time.strftime('%H:%M:%S')}] {log.stem}: exit {rc} after {time.monotonic() - t0:.0f} s", flush=True)
        return rc

    def seed_jobs(seed: int) -> int:
        init = root / f"init_s{seed}"
        if not (init / "config.json").is_file():
            rc = call(["--seed", str(seed), "--save-init", str(init), "--out", str(root / f"init_s{seed}.json"),
                       *common, "--iterations", "0"], root / f"init_s{seed}.log")
            if rc != 0:
                return rc
        return 0

    # Seed by seed (a partial grid has whole seeds); within a seed the operators alternate, so runs started
    # together collect different first phases and the later methods of an operator read its cached one.
    jobs = [(op, m, s) for s in a.seeds for m in a.methods for op in a.operators]
    manifest = root / "study.json"  # run file -> (operator, method spec, seed): the labels of the summary
    known = json.loads(manifest.read_text()) if manifest.is_file() else {}
    known.update({run_name(*j): {"operator": j[0], "method": j[1], "seed": j[2]} for j in jobs})
    manifest.write_text(json.dumps(known, indent=1))
    with ThreadPoolExecutor(max_workers=a.jobs) as pool:
        if any(list(pool.map(seed_jobs, a.seeds))):
            print("an initial policy failed; see init_s*.log", file=sys.stderr)
            return 1

        def one(job) -> int:
            op, method, seed = job
            name = run_name(op, method, seed)
            out = root / f"{name}.json"
            if complete(out, a.iterations):
                return 0
            return call(["--seed", str(seed), "--operator", op, "--load-init", str(root / f"init_s{seed}"),
                         "--first-phase-cache", str(root / "first_phase"), "--state", str(root / f"{name}.state"),
                         "--out", str(out), *offline_loop_args(method), *common], root / f"{name}.log")

        codes = list(pool.map(one, jobs))
    failed = [run_name(*j) for j, c in zip(jobs, codes) if c]
    if failed:
        print(f"{len(failed)} runs failed: {', '.join(failed)} (logs in {root})", file=sys.stderr)
    return 1 if failed else 0


# ---------------------------------------------------------------------------------------------
# summary
# ---------------------------------------------------------------------------------------------

def throughput(success: np.ndarray, steps: np.ndarray, period_s: float = 0.1) -> float:
    """Successes per robot-hour over a set of episodes."""
    hours = steps.sum() * period_s / 3600.0
    return float(success.sum() / hours) if hours > 0 else 0.0


def paired_throughput_test(sa, ta, sb, tb, draws: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """(difference a - b in throughput, two-sided permutation p) for paired episodes: under the
    null the two methods' episodes of a pair are exchangeable, so each pair is swapped at random."""
    sa, ta, sb, tb = (np.asarray(x, float) for x in (sa, ta, sb, tb))
    observed = throughput(sa, ta) - throughput(sb, tb)
    rng = np.random.default_rng(seed)
    swap = rng.random((draws, len(sa))) < 0.5
    s1, t1 = np.where(swap, sb, sa), np.where(swap, tb, ta)
    s2, t2 = np.where(swap, sa, sb), np.where(swap, ta, tb)
    null = np.array([throughput(a, b) - throughput(c, d) for a, b, c, d in zip(s1, t1, s2, t2)])
    p = (1 + np.sum(np.abs(null) >= abs(observed) - 1e-9)) / (draws + 1)
    return observed, float(p)


def load(root: Path) -> dict:
    """{(operator, method spec, seed): rows} of every finished or partial run in ``root`` (labels
    from the study's manifest; runs without one are labelled by their own arguments)."""
    manifest = root / "study.json"
    known = json.loads(manifest.read_text()) if manifest.is_file() else {}
    runs = {}
    for path in sorted(root.glob("*__s*.json")):
        data = json.loads(path.read_text())
        a = data["args"]
        if path.stem in known:
            k = known[path.stem]
            key = (k["operator"], k["method"], int(k["seed"]))
        else:
            key = (a.get("operator", "skilled"), a["method"] + (":" + ",".join(a["train"]) if a.get("train") else "")
                   + (f"+vg{a['value_guided']}" if a.get("value_guided") else ""), int(a["seed"]))
        rows = data["rows"]
        if rows and "numerics" in data:  # offline_loop's record of the kernels that rounded the run
            rows = [{**rows[0], "numerics": data["numerics"]}, *rows[1:]]
        if value_guided(key[1]):  # the guided evaluation is the method's (iteration 0: the shared initial policy)
            rows = [{**r, "success_rate": r["vg_success_rate"], "eval_success": r["vg_eval_success"],
                     "eval_steps": r["vg_eval_steps"], "eval_throughput_per_hour": r["vg_eval_throughput_per_hour"]}
                    if "vg_success_rate" in r else r for r in rows]
        runs[key] = rows
    return runs


def inconsistent_starts(runs: dict) -> list[dict]:
    """Runs of one seed that do not share their start: iteration 0 must hold the same initial policy and
    the same policy-alone episodes whatever the method or operator (a grid that spans sessions rebuilds
    the initial policies and first phases, so this is checked, not assumed). Returns the disagreements."""
    problems = []
    for seed in sorted({s for _, _, s in runs}):
        starts = {(op, m): rows[0] for (op, m, s), rows in runs.items() if s == seed and rows}
        if not starts:
            continue
        (ref_key, ref), *rest = sorted(starts.items())
        for key, row in rest:
            differs = [f for f in ("policy_id", "eval_success", "eval_steps") if row.get(f) != ref.get(f)]
            if differs:
                problems.append({"seed": seed, "run": list(key), "reference": list(ref_key), "fields": differs})
    return problems


def mixed_numerics(runs: dict) -> list[dict]:
    """Seeds whose runs were made under other numerics (offline_loop's ``numerics``: torch's version, the
    instruction set of its kernels): they may share their start and still round differently after it, so their
    pairs carry the machines' difference as well as the methods' (BENCHMARKS "ALOE vs its rivals", part 24).
    Runs that did not record their numerics are left out."""
    mixed = []
    for seed in sorted({s for _, _, s in runs}):
        kinds = {}
        for (op, m, s), rows in sorted(runs.items()):
            if s == seed and rows and "numerics" in rows[0]:
                kinds.setdefault(json.dumps(rows[0]["numerics"], sort_keys=True), []).append([op, m])
        if len(kinds) > 1:
            mixed.append({"seed": seed, "numerics": [{"numerics": json.loads(k), "runs": v} for k, v in kinds.items()]})
    return mixed


def summarise(runs: dict, iteration: int | None = None, references: tuple = ()) -> dict:
    """Records of every iteration and paired tests of each ALOE variant against each baseline: at
    ``iteration`` over the seeds whose runs of both reached it (a grid still running: the seeds not yet
    there are left out, not compared at an earlier iteration), or by default at the last iteration every
    seed of the pair reached. ``references``: method specs (ALOE variants too) every other ALOE variant
    is also paired with, e.g. a candidate against the variant it changes."""
    records = []
    for (op, method, seed), rows in sorted(runs.items()):
        for r in rows:
            records.append({"method": method, "operator": op, "seed": seed, "iteration": r["iteration"],
                            "success": r["success_rate"],
                            "throughput_per_hour": r.get("eval_throughput_per_hour"),
                            "intervention_rate": r["intervention_rate"],
                            "assisted_success": r.get("assisted_success_rate"),
                            "assisted_throughput_per_hour": r.get("assisted_throughput_per_hour")})
    paired = []
    methods = sorted({m for _, m, _ in runs})
    for op in sorted({o for o, _, _ in runs}):
        for m in [m for m in methods if m.startswith("aloe")]:
            for b in [b for b in methods if b.split(":")[0] in BASELINES or (b in references and b != m)]:
                seeds = sorted(s for o, mm, s in runs if o == op and mm == m and (op, b, s) in runs
                               and (iteration is None or min(len(runs[(op, x, s)]) for x in (m, b)) > iteration))
                if not seeds:
                    continue
                last = (min(len(runs[(op, x, s)]) for x in (m, b) for s in seeds) - 1 if iteration is None
                        else iteration)
                ra = [runs[(op, m, s)][last] for s in seeds]
                rb = [runs[(op, b, s)][last] for s in seeds]
                sa = np.concatenate([r["eval_success"] for r in ra]).astype(bool)
                sb = np.concatenate([r["eval_success"] for r in rb]).astype(bool)
                wins, losses = int(np.sum(sa & ~sb)), int(np.sum(sb & ~sa))
                paired.append({"method": m, "baseline": b, "operator": op, "metric": "success", "iteration": last,
                               "seeds": seeds, "wins": wins, "losses": losses, "p_value": sign_test(wins, losses),
                               "method_value": float(sa.mean()), "baseline_value": float(sb.mean())})
                if all("eval_steps" in r for r in ra + rb):
                    ta = np.concatenate([r["eval_steps"] for r in ra])
                    tb = np.concatenate([r["eval_steps"] for r in rb])
                    diff, p = paired_throughput_test(sa, ta, sb, tb)
                    faster = int(np.sum(sa & sb & (ta < tb))) + wins
                    slower = int(np.sum(sa & sb & (ta > tb))) + losses
                    paired.append({"method": m, "baseline": b, "operator": op, "metric": "throughput_per_hour",
                                   "iteration": last, "seeds": seeds, "wins": faster, "losses": slower, "p_value": p,
                                   "method_value": throughput(sa, ta), "baseline_value": throughput(sb, tb),
                                   "difference": diff})
    return {"records": records, "paired": paired, "target": target_verdict(paired),
            "inconsistent_starts": inconsistent_starts(runs), "mixed_numerics": mixed_numerics(runs)}


RIVALS = ("dagger", "progress")  # the target names Dagger and AWR/progress (bc and the references are context)


def target_verdict(paired: list[dict], alpha: float = 0.05) -> list[dict]:
    """Issue 14's target, read off the paired tests of each ALOE variant: ahead of every rival (Dagger,
    AWR/progress: each rival spec present) in success or throughput with p < alpha in at least one
    operator condition (``met``: the same condition for every rival; ``met_per_rival``: a condition of
    its own for each), and significantly behind none of them in any condition and metric."""
    def significant(t: dict, ahead: bool) -> bool:
        return t["p_value"] < alpha and (t["wins"] > t["losses"] if ahead else t["losses"] > t["wins"])

    verdicts = []
    for m in sorted({t["method"] for t in paired}):
        tests = [t for t in paired if t["method"] == m and t["baseline"].split(":")[0] in RIVALS]
        rivals = sorted({t["baseline"] for t in tests})
        if not {r.split(":")[0] for r in rivals} >= set(RIVALS):
            continue  # a study without both rivals says nothing about the target
        operators = sorted({t["operator"] for t in tests})
        ahead = {(r, op): any(significant(t, True) for t in tests if t["baseline"] == r and t["operator"] == op)
                 for r in rivals for op in operators}
        behind = [{k: t[k] for k in ("baseline", "operator", "metric", "wins", "losses", "p_value")}
                  for t in tests if significant(t, False)]
        ahead_in = sorted(op for op in operators if all(ahead[(r, op)] for r in rivals))
        per_rival = {r: sorted(op for op in operators if ahead[(r, op)]) for r in rivals}
        verdicts.append({"method": m, "rivals": rivals, "iteration": sorted({t["iteration"] for t in tests}),
                         "ahead_of_every_rival_in": ahead_in, "ahead_per_rival": per_rival,
                         "significantly_behind": behind,
                         "met": bool(ahead_in) and not behind,
                         "met_per_rival": all(per_rival.values()) and not behind})
    return verdicts


def markdown(summary: dict) -> str:
    recs = summary["records"]
    lines = ["| operator | method | seeds | success per iteration (mean) | throughput/h per iteration (mean) "
             "| intervention rate (mean) |", "|---|---|---|---|---|---|"]
    keys = sorted({(r["operator"], r["method"]) for r in recs})
    for op, m in keys:
        sel = [r for r in recs if r["operator"] == op and r["method"] == m]
        its = sorted({r["iteration"] for r in sel})
        seeds = sorted({r["seed"] for r in sel})
        cell = lambda k: ", ".join(f"{np.mean([r[k] for r in sel if r['iteration'] == i and r[k] is not None]):.2f}"  # noqa: E731
                                   if k != "throughput_per_hour" else
                                   f"{np.mean([r[k] for r in sel if r['iteration'] == i and r[k] is not None]):.0f}"
                                   for i in its)
        lines.append(f"| {op} | {m} | {len(seeds)} | {cell('success')} | {cell('throughput_per_hour')} | "
                     f"{cell('intervention_rate')} |")
    lines += ["", "| operator | method vs baseline | metric | iteration | seeds | better | worse | p |",
              "|---|---|---|---|---|---|---|---|"]
    for t in summary["paired"]:
        lines.append(f"| {t['operator']} | {t['method']} vs {t['baseline']} | {t['metric']} "
                     f"({t['method_value']:.2f} vs {t['baseline_value']:.2f}) | {t['iteration']} | "
                     f"{','.join(map(str, t['seeds']))} | {t['wins']} | {t['losses']} | {t['p_value']:.3f} |")
    for v in summary.get("target", []):
        behind = "; ".join(f"{b['baseline']} ({b['operator']}, {b['metric']}: {b['wins']} / {b['losses']}, "
                           f"p = {b['p_value']:.3f})" for b in v["significantly_behind"]) or "none"
        ahead = ", ".join(f"{r}: {', '.join(ops) or 'no condition'}" for r, ops in v["ahead_per_rival"].items())
        lines += ["", f"Target (issue 14) for {v['method']} at iteration {', '.join(map(str, v['iteration']))}: "
                  f"**{'met' if v['met'] else 'not met'}**. Ahead (p < 0.05, success or throughput) of {ahead}; "
                  f"significantly behind: {behind}."]
    return "\n".join(lines) + "\n"


def plot(summary: dict, path: Path, names: dict | None = None) -> list[str]:
    """Success and throughput per iteration, one panel per operator: the seeds' mean as a line, their range
    shaded. ``names``: {method spec: legend label} for specs too long to read. Returns the legend's labels."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = summary["records"]
    ops = sorted({r["operator"] for r in recs})
    methods = sorted({r["method"] for r in recs})
    fig, axes = plt.subplots(2, len(ops), figsize=(max(5.5 * len(ops), 8.0), 7), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for j, op in enumerate(ops):
        for row, (key, label) in enumerate((("success", "success, policy alone"),
                                            ("throughput_per_hour", "successes per robot-hour, policy alone"))):
            ax = axes[row, j]
            for i, m in enumerate(methods):
                sel = [r for r in recs if r["operator"] == op and r["method"] == m and r[key] is not None]
                if not sel:
                    continue
                its = sorted({r["iteration"] for r in sel})
                per_it = [[r[key] for r in sel if r["iteration"] == it] for it in its]
                n = len({r["seed"] for r in sel})
                colour = colours[i % len(colours)]
                ax.plot(its, [np.mean(v) for v in per_it], marker="o", color=colour,
                        label=f"{(names or {}).get(m, m)} ({n} seed{'s' if n > 1 else ''})")
                if n > 1:
                    ax.fill_between(its, [min(v) for v in per_it], [max(v) for v in per_it], color=colour,
                                    alpha=0.12, linewidth=0)
            ax.set_title(f"{op} operator", fontsize=10)
            ax.set_xticks(sorted({r["iteration"] for r in recs}))
            ax.set_xlabel("iteration (0 = initial policy)")
            ax.set_ylabel(label)
            ax.set_ylim(bottom=0)
            ax.grid(alpha=0.3)
    # one legend under the panels: method specs are long, and every panel has the same colours
    labels = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            labels.setdefault(label.rsplit(" (", 1)[0], (handle, label))
    ncol = 2 if len(ops) > 1 else 1  # one panel wide: a column of labels, or the long specs run off the page
    fig.legend([h for h, _ in labels.values()], [lab for _, lab in labels.values()], loc="lower center",
               ncol=ncol, fontsize=8, frameon=False, title="line: mean over seeds; shade: their range",
               title_fontsize=8)
    fig.tight_layout(rect=(0, 0.06 + 0.035 * -(-len(labels) // ncol), 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return [lab for _, lab in labels.values()]


def archive(root: Path, to: Path, iterations: int) -> tuple[list[str], list[str]]:
    """Copy every finished run of ``root`` (its JSON holds all ``iterations``; its log beside it) and the study's
    manifest into ``to``, the folder kept in git, so that finished runs outlive the machine (their states and the
    seeds' initial policies and first phases do not go into git). A run whose archived copy differs is left as it
    is and reported, never overwritten. Returns (files copied, runs whose copies differ)."""
    to.mkdir(parents=True, exist_ok=True)
    copied, differing = [], []
    manifest = json.loads((root / "study.json").read_text())
    for name in sorted(manifest):
        if not complete(root / f"{name}.json", iterations):
            continue
        for f in (root / f"{name}.json", root / f"{name}.log"):
            dest = to / f.name
            if not f.is_file():
                continue
            if not dest.is_file():
                dest.write_bytes(f.read_bytes())
                copied.append(f.name)
            elif dest.read_bytes() != f.read_bytes() and f.suffix == ".json":
                differing.append(name)
    kept = json.loads((to / "study.json").read_text()) if (to / "study.json").is_file() else {}
    if {**kept, **manifest} != kept:
        (to / "study.json").write_text(json.dumps({**kept, **manifest}, indent=1))
        copied.append("study.json")
    return copied, differing


def absent_specs(specs, runs: dict) -> list[str]:
    """The method specs of ``specs`` that no run of ``runs`` ({(operator, spec, seed): rows}) has."""
    return sorted(set(specs) - {m for _, m, _ in runs})


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run the study (resumable)")
    r.add_argument("--dir", required=True, help="folder of the runs' JSONs, logs and initial policies")
    r.add_argument("--methods", nargs="+", default=["aloe", "dagger", "progress", "bc"])
    r.add_argument("--operators", nargs="+", default=["skilled", "imperfect"], choices=tuple(OPERATORS))
    r.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    r.add_argument("--iterations", type=int, default=5)
    r.add_argument("--demos", type=int, default=5)
    r.add_argument("--jobs", type=int, default=2, help="runs at a time (one torch thread each)")
    r.add_argument("--nice", type=int, default=10)
    r.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="further offline_loop.py arguments")
    s = sub.add_parser("summary", help="records, paired tests, table and plot of a study's runs")
    s.add_argument("--dir", required=True, nargs="+", help="study folder(s)")
    s.add_argument("--out", default="", help="JSON to write (e.g. bench/results/aloe_vs_baselines.json); "
                                             "a PNG is written beside it")
    s.add_argument("--iteration", type=int, default=None,
                   help="pair the methods at this iteration, over the seeds whose runs reached it (default: the "
                        "last iteration every seed of the pair reached)")
    s.add_argument("--seeds", nargs="+", type=int, default=None,
                   help="only these seeds' runs (e.g. the report seeds of a study whose tuning seeds share its folder)")
    s.add_argument("--reference", nargs="+", default=[], metavar="SPEC",
                   help="method specs every ALOE variant is also paired with (e.g. the variant a candidate changes)")
    s.add_argument("--methods", nargs="+", default=None, metavar="SPEC",
                   help="only these methods' runs (e.g. a verdict's methods while other runs of the folder go on)")
    s.add_argument("--name", nargs="+", default=[], metavar="SPEC=LABEL",
                   help="a short legend label for a method spec in the plot (kept in the JSON's 'names'), e.g. "
                        "'aloe:operator_share=0.5=ALOE (S)': the label follows the last '='")
    t = sub.add_parser("status", help="each run's progress (iterations finished, running or not), not its results")
    t.add_argument("--dir", required=True, nargs="+", help="study folder(s): a table each")
    t.add_argument("--iterations", type=int, default=5)
    t.add_argument("--seeds", nargs="+", type=int, default=None)
    c = sub.add_parser("archive", help="copy the finished runs (JSON, log) and the manifest into a folder kept in git")
    c.add_argument("--dir", required=True, help="study folder")
    c.add_argument("--to", required=True, help="archive folder (e.g. bench/results/aloe_vs_baselines_runs/grid)")
    c.add_argument("--iterations", type=int, default=5, help="a run is finished when its JSON holds these")
    a = p.parse_args(argv)
    if a.command == "archive":
        copied, differing = archive(Path(a.dir), Path(a.to), a.iterations)
        print(f"archived {len(copied)} files into {a.to}" + (f": {', '.join(copied)}" if copied else ""))
        for name in differing:
            print(f"WARNING: {name}: the archived JSON differs from the folder's; left as archived", file=sys.stderr)
        return 1 if differing else 0
    if a.command == "run":
        return run_study(a)
    if a.command == "status":
        print("\n".join((f"{d}\n\n" if len(a.dir) > 1 else "") + status(Path(d), a.iterations, a.seeds)
                        for d in a.dir), end="")
        return 0
    runs = {}
    for d in a.dir:
        runs.update(load(Path(d)))
    if a.seeds is not None:
        runs = {k: v for k, v in runs.items() if k[2] in a.seeds}
    if a.methods is not None:
        if missing := absent_specs(a.methods, runs):
            print(f"--methods: no runs of {', '.join(missing)} in {a.dir}", file=sys.stderr)
            return 2
        runs = {k: v for k, v in runs.items() if k[1] in a.methods}
    if not runs:
        print(f"no runs in {a.dir}" + (f" of seeds {a.seeds}" if a.seeds is not None else ""), file=sys.stderr)
        return 2
    if missing := absent_specs(a.reference, runs):
        print(f"--reference: no runs of {', '.join(missing)} in {a.dir}", file=sys.stderr)
        return 2
    names = dict(n.rsplit("=", 1) for n in a.name if "=" in n)
    if (missing := absent_specs(names, runs)) or len(names) != len(a.name):
        print(f"--name: give SPEC=LABEL for a method spec of these runs ({', '.join(missing) or a.name})",
              file=sys.stderr)
        return 2
    summary = summarise(runs, a.iteration, tuple(a.reference))
    print(markdown(summary), end="")
    for bad in summary["inconsistent_starts"]:
        print(f"WARNING: seed {bad['seed']}: run {'/'.join(bad['run'])} does not start where "
              f"{'/'.join(bad['reference'])} does ({', '.join(bad['fields'])} differ at iteration 0): its pairs "
              "are not paired episodes", file=sys.stderr)
    for mix in summary["mixed_numerics"]:
        kinds = "; ".join(f"torch {k['numerics'].get('torch')} {k['numerics'].get('cpu_capability')}"
                          f"{' (pinned)' if k['numerics'].get('ATEN_CPU_CAPABILITY') else ''}: "
                          + ", ".join("/".join(r) for r in k["runs"]) for k in mix["numerics"])
        print(f"NOTE: seed {mix['seed']}: runs under {len(mix['numerics'])} kinds of numerics ({kinds}); they round "
              "differently after their start", file=sys.stderr)
    if a.out:
        out = Path(a.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({**summary, "names": names} if names else summary, indent=1))
        plot(summary, out.with_suffix(".png"), names)
        print(f"wrote {out} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
