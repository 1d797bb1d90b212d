#!/usr/bin/env python3
"""Improvement: success and intervention rate per loop iteration, ALOE vs bc vs progress (vs td1).

Evidence item 2 of DESIGN.md, on the ROS-free offline path (``aloe_sim.offline.run_episodes`` +
the library's ``aloe_critic.train.run_iteration``; nothing here runs over ROS, the main job
``aloe-loop`` covers that path). State-only sim with the privileged observation of
bench/sim_study.py (cube position and episode time in proprio, blank 8x8 camera).

Per seed: ``--demos`` scripted demonstrations from operators of mixed skill (``--demo-noise``,
``--demo-delay``, one pair per equal share of the demos: by default half from a good operator,
half from a poor one whose attempts mostly fail: heterogeneous data), one initial policy behaviour-cloned
on them (shared by all methods: iteration 0 is identical). Then per method, ``--iterations``
times: run ``--episodes`` episodes of the current policy with the scripted operator supervising
(``correct`` mode: takes over when the policy goes wrong) -> add them to the data (same budget for
every method) -> ``run_iteration`` (critic for the current policy + advantage-weighted flow
matching; ``bc`` = weights 1, HG-DAgger) -> the next policy. A last evaluation phase measures the
final policy. Reported per iteration, pooled over seeds: autonomous success (success with no
takeover, as ``aloe-loop`` reports it) with a 95 % Wilson interval, intervention rate (operator
ticks / ticks) with a 95 % bootstrap interval over episodes, success with the operator's help,
and wall-clock seconds per iteration (rollouts, training).

Example (the run in BENCHMARKS.md, section "Evidence"):
    nice python bench/improvement.py --seeds 0 1 2 --out bench/results/improvement.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from aloe_bringup.report import wilson_interval  # noqa: E402
from sim_study import behaviour_clone, clone_policy, make_policy, make_sim, provenance  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--methods", nargs="+", default=["aloe", "bc", "progress"], choices=["aloe", "bc", "progress", "td1"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--iterations", type=int, default=3, help="improvement iterations after the initial policy")
    p.add_argument("--episodes", type=int, default=10, help="supervised policy episodes per iteration")
    p.add_argument("--demos", type=int, default=12, help="initial scripted demonstrations")
    p.add_argument("--demo-noise", type=float, nargs="+", default=[0.3, 0.7],
                   help="operator noise (fraction of its 3 cm step), one per equal share of the demos")
    p.add_argument("--demo-delay", type=int, nargs="+", default=[0, 1],
                   help="operator reaction delay (ticks), one per --demo-noise entry")
    p.add_argument("--horizon", type=int, default=10, help="chunk length H")
    p.add_argument("--replan-every", type=int, default=5, help="ticks a chunk runs open-loop before re-planning")
    p.add_argument("--max-steps", type=int, default=60, help="episode length limit (ticks of 0.1 s)")
    p.add_argument("--init-steps", type=int, default=1000, help="BC steps of the initial policy")
    p.add_argument("--policy-steps", type=int, default=500, help="policy gradient steps per iteration")
    p.add_argument("--critic-steps", type=int, default=600, help="critic gradient steps per iteration")
    p.add_argument("--ensemble-size", type=int, default=5)
    p.add_argument("--beta", type=float, default=0.1, help="advantage temperature")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--out", default="runs/bench/improvement.json",
                   help="JSON results; a PNG is written beside it (the tracked copy: --out bench/results/improvement.json)")
    p.add_argument("--report", metavar="JSON", help="only print the markdown table of an earlier run's JSON")
    return p.parse_args(argv)


def train_config(args, method: str, seed: int):
    from aloe_critic.train import TrainConfig, apply_overrides

    config = TrainConfig()
    apply_overrides(config, {"method": method, "seed": seed, "progress": False, "chunk_horizon": args.horizon,
                             "critic_steps": args.critic_steps, "critic_batch_size": 128,
                             "ensemble_size": args.ensemble_size, "num_policy_samples": 4,
                             "policy_steps": args.policy_steps, "policy_batch_size": 64, "policy_lr": 3e-4,
                             "beta": args.beta})
    return config


def phase_row(summary) -> dict:
    st = summary.stats
    return {"episodes": len(st), "success": [bool(s.success) for s in st],
            "autonomous": [bool(s.success and s.takeovers == 0) for s in st],
            "human_ticks": [int(s.human_ticks) for s in st], "steps": [int(s.steps) for s in st],
            "takeovers": [int(s.takeovers) for s in st]}


def run_seed(args, seed: int, log) -> dict:
    from aloe_critic.dataset import TransitionDataset
    from aloe_critic.train import run_iteration, seed_everything
    from aloe_sim.offline import run_episodes
    from aloe_sim.scripted import OperatorSupervisor, ScriptedConfig, SupervisorConfig

    sim = make_sim(max_steps=args.max_steps, seed=seed)
    demos = []
    share = int(np.ceil(args.demos / len(args.demo_noise)))
    for j, (noise, delay) in enumerate(zip(args.demo_noise, args.demo_delay, strict=True)):
        sup = OperatorSupervisor(SupervisorConfig(mode="demo", max_steps=args.max_steps, controller=ScriptedConfig(
            noise=noise, delay_ticks=delay, seed=seed * 10 + j)))
        base = 100_000 * seed + 1000 * j
        n = min(share, args.demos - len(demos))
        demos += run_episodes(sim, range(base, base + n), supervisor=sup, desc=f"demo{j}").episodes
    demo_success = float(np.mean([e.outcome == "SUCCESS" for e in demos]))
    seed_everything(seed)
    initial = make_policy(args.horizon, seed)
    init_s = behaviour_clone(initial, demos, args.init_steps, seed=seed)
    log(f"seed {seed}: {len(demos)} demos (success {demo_success:.2f}), initial BC {init_s:.0f} s")
    out = {"demo_success": demo_success, "init_bc_s": init_s, "methods": {}}
    for method in args.methods:
        policy = clone_policy(initial)
        data = list(demos)
        operator = OperatorSupervisor(SupervisorConfig(mode="correct", max_steps=args.max_steps,
                                                       controller=ScriptedConfig(noise=0.0, seed=seed)))
        rows = []
        for it in range(args.iterations + 1):
            t0 = time.perf_counter()
            base = 100_000 * seed + 10_000 + 100 * it  # same cube positions for every method
            phase = run_episodes(sim, range(base, base + args.episodes), policy=policy, supervisor=operator,
                                 replan_every=args.replan_every, desc=f"{method}-it{it}")
            rollout_s = time.perf_counter() - t0
            row = {"iteration": it, "policy_id": policy.policy_id, "rollout_s": rollout_s, **phase_row(phase)}
            train_s = 0.0
            if it < args.iterations:
                data += phase.episodes
                seed_everything(seed * 1000 + it)
                t1 = time.perf_counter()
                dataset = TransitionDataset(data, args.horizon, 0.99)
                result = run_iteration(train_config(args, method, seed * 1000 + it), dataset, policy)
                train_s = time.perf_counter() - t1
                row["transitions"] = len(dataset)
                row["advantage_stats"] = result.advantage_stats
            row["train_s"] = train_s
            rows.append(row)
            log(f"seed {seed} {method:8s} it {it}: autonomous {np.mean(row['autonomous']):.2f} "
                f"success {np.mean(row['success']):.2f} intervention "
                f"{sum(row['human_ticks']) / max(1, sum(row['steps'])):.2f} | rollouts {rollout_s:.0f} s train {train_s:.0f} s")
        out["methods"][method] = rows
    return out


def summarise(result: dict, methods, iterations: int) -> dict:
    rng = np.random.default_rng(0)
    table = {}
    for m in methods:
        table[m] = []
        for it in range(iterations + 1):
            rows = [s["methods"][m][it] for s in result["seeds"].values() if m in s["methods"]
                    and len(s["methods"][m]) > it]
            if not rows:
                continue
            auto = sum((r["autonomous"] for r in rows), [])
            succ = sum((r["success"] for r in rows), [])
            human = np.array(sum((r["human_ticks"] for r in rows), []), float)
            steps = np.array(sum((r["steps"] for r in rows), []), float)
            ratio = lambda idx: human[idx].sum() / max(1.0, steps[idx].sum())  # noqa: E731
            boot = [ratio(rng.integers(0, len(steps), len(steps))) for _ in range(2000)]
            table[m].append({
                "iteration": it, "episodes": len(auto), "seeds": len(rows),
                "autonomous_success": float(np.mean(auto)), "autonomous_ci": wilson_interval(sum(auto), len(auto)),
                "success": float(np.mean(succ)), "success_ci": wilson_interval(sum(succ), len(succ)),
                "intervention_rate": float(ratio(np.arange(len(steps)))),
                "intervention_ci": (float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))),
                "autonomous_per_seed": [float(np.mean(r["autonomous"])) for r in rows],
                "rollout_s": float(np.mean([r["rollout_s"] for r in rows])),
                "train_s": float(np.mean([r["train_s"] for r in rows])),
            })
    return table


def plot(table: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (("autonomous_success", "autonomous_ci", "autonomous success"),
              ("intervention_rate", "intervention_ci", "intervention rate (operator ticks)"),
              ("success", "success_ci", "success with operator"))
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
    for ax, (key, ci, title) in zip(axes, panels):
        for j, (m, rows) in enumerate(table.items()):
            x = np.array([r["iteration"] for r in rows]) + (j - 1) * 0.05
            y = np.array([r[key] for r in rows])
            lo = np.array([r[ci][0] for r in rows])
            hi = np.array([r[ci][1] for r in rows])
            ax.errorbar(x, y, yerr=[y - lo, hi - y], marker="o", capsize=3, label=m)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("iteration (0 = initial BC policy)", fontsize=8)
        ax.set_ylim(-0.02, 1.02)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=70)
    plt.close(fig)


def markdown(result: dict) -> str:
    """One row per method x iteration, pooled over seeds."""
    lines = ["| method | iter | episodes | autonomous success [95 % CI] | per seed | intervention rate [95 % CI] "
             "| success with operator [95 % CI] | rollouts s | train s |", "|---|---|---|---|---|---|---|---|---|"]
    for m, rows in result["table"].items():
        for r in rows:
            ci = lambda k: f"[{r[k][0]:.2f}, {r[k][1]:.2f}]"  # noqa: E731
            lines.append(f"| {m} | {r['iteration']} | {r['episodes']} | {r['autonomous_success']:.2f} {ci('autonomous_ci')} "
                         f"| {' '.join(f'{x:.1f}' for x in r['autonomous_per_seed'])} "
                         f"| {r['intervention_rate']:.3f} {ci('intervention_ci')} | {r['success']:.2f} {ci('success_ci')} "
                         f"| {r['rollout_s']:.0f} | {r['train_s']:.0f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.report:
        print(markdown(json.loads(Path(args.report).read_text())))
        return 0
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    log = lambda msg: print(f"[{time.perf_counter() - start:6.0f} s] {msg}", flush=True)  # noqa: E731
    log(f"config: {vars(args)}")
    import aloe_critic.train  # noqa: F401  (the library is imported once, at start)
    import aloe_sim.offline  # noqa: F401
    result = {"args": vars(args), "code": provenance(), "seeds": {}}
    log(f"code: {result['code']}")
    for seed in args.seeds:
        result["seeds"][str(seed)] = run_seed(args, seed, log)
        result["table"] = summarise(result, args.methods, args.iterations)
        out.write_text(json.dumps(result, indent=1))  # partial results survive a kill
        plot(result["table"], out.with_suffix(".png"))
    result["total_s"] = time.perf_counter() - start
    out.write_text(json.dumps(result, indent=1))
    log(f"wrote {out}")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
