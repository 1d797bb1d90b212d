#!/usr/bin/env python3
"""OPE accuracy: how well do ALOE, td1 and progress critics know the *current* policy's values?

Evidence item 1 of DESIGN.md. In the state-only sim (see bench/sim_study.py: the policy's proprio
carries the privileged cube position and the episode time; a blank 8x8 camera), on the ROS-free
offline path (``aloe_sim.offline.run_episodes``; nothing here runs over ROS):

1. a mixed buffer: scripted demonstrations (operator noise ``--demo-noise``), two old policies
   (FlowMatchingPolicy behaviour-cloned on the demos for ``--old-steps`` gradient steps: fewer
   steps = worse), online rollouts of the current policy pi (BC for ``--pi-steps`` steps), and
   operator interventions (the better old policy supervised by ``OperatorSupervisor`` in
   ``correct`` mode). While collecting, exact sim snapshots are saved at random ticks.
2. ground truth at ``--states`` recorded states s_t (stratified over the data sources):
   Q^pi(s_t, A_t) = mean discounted return of: restore s_t, execute the recorded chunk A_t, then
   follow pi (chunks re-planned every H ticks, the semantics the chunk critic learns);
   V^pi(s_t) = the same without the recorded chunk; ``--rollouts`` rollouts each, 95 % CI
   (normal approximation) reported.
3. critics for pi fitted on the whole buffer with ``aloe_critic.values.fit_critic`` for aloe,
   td1, progress (same network, same data), evaluated with ``chunk_values``: RMSE, bias and
   Spearman rank correlation of Q and V, advantage-sign accuracy. Ablation grid for aloe over
   ensemble size K and the aggregation rule; chunk length H is a separate run (``--horizon``),
   because pi and the ground truth change with H.
4. the ensemble (issue 14): the ground truth also holds Q^pi(s, A_pi) for one chunk A_pi sampled
   from pi at s (never executed in the data); per critic, the rank correlation of the ensemble's
   std there with its |Q error| there ("does the spread grow where the critic is wrong?"), and V's
   bias at pi's own states. ``--variant NAME=field=value,...`` adds aloe critics with CriticConfig
   overrides (e.g. the ensemble's independence: bootstrap_fraction, prior_scale; ``value_data=current``: V of
   the advantages from a second critic fitted only on pi's own chunks; the heads: critic_norm, value_loss),
   labelled ``aloe[NAME]``; a ``method=progress`` (or td1) field makes it that value method's critic instead;
   ``--low-coverage N`` fits every critic a second time on the buffer with at most N failed
   episodes (the states keep their ground truth: the critic must extrapolate to failures).
   ``--pi-coverage N ...`` likewise with only N of pi's own episodes per N (how much the critics need pi's data).
   ``--cache`` keeps the buffer, pi and the ground truth (the expensive part) for later variants.
5. where the advantage's error comes from (``advantage_error``): RMSE(A)^2 = RMSE(Q)^2 + RMSE(V)^2
   - 2 mean(e_Q e_V), the error over the true advantages' spread, and the advantage in TD form
   (R_t^H + gamma^H V(o_{t+H}) - V(o_t), V at both ends of the recorded chunk) scored beside Q - V.
6. ``--pool JSON ...``: the headline aloe and progress critics of runs on several buffers (one per OPE seed)
   against the issue's OPE targets, per buffer and over all their states (``--pool-view``: a refit's critics;
   ``--pool-against``: the paired bootstrap of the pooled Q RMSE ratio's difference between two refits).

Example (the run in BENCHMARKS.md, section "Evidence"):
    nice python bench/ope_accuracy.py --horizon 10 --out bench/results/ope_H10.json
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

from sim_study import behaviour_clone, make_policy, make_sim, policy_returns, provenance  # noqa: E402

BASELINES = ("progress", "td1")  # the value methods critics are compared against
GROUPS = ("demo", "old_weak", "old_mid+interventions", "pi")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--horizon", type=int, default=10, help="chunk length H of pi and the critics")
    p.add_argument("--seed", type=int, default=0, help="seeds episodes, policies, critics")
    p.add_argument("--max-steps", type=int, default=60, help="episode length limit (ticks of 0.1 s)")
    p.add_argument("--gamma", type=float, default=0.99)
    p.add_argument("--demos", type=int, default=30, help="scripted demonstration episodes")
    p.add_argument("--demo-noise", type=float, default=0.3, help="operator noise, fraction of its 3 cm step")
    p.add_argument("--old-steps", type=int, nargs=2, default=[200, 700], help="BC steps of the weak / mid old policy")
    p.add_argument("--pi-steps", type=int, default=3000, help="BC steps of the current policy pi")
    p.add_argument("--episodes", type=int, nargs=3, default=[15, 15, 15],
                   help="episodes of: old weak (no operator), old mid (operator in correct mode), pi (no operator)")
    p.add_argument("--states", type=int, default=48, help="recorded states with ground truth (split over sources)")
    p.add_argument("--rollouts", type=int, default=12, help="rollouts per ground-truth value (Q and V each)")
    p.add_argument("--critic-steps", type=int, default=1500)
    p.add_argument("--critic-batch", type=int, default=128)
    p.add_argument("--policy-samples", type=int, default=8, help="n: A'_j ~ pi per observation in the TD target")
    p.add_argument("--value-samples", type=int, default=64, help="A_j ~ pi per observation for V (num_value_samples)")
    p.add_argument("--ensembles", type=int, nargs="+", default=[2, 5, 10], help="K grid for aloe")
    p.add_argument("--aggregates", nargs="+", default=["subset_min", "mean_std"], help="aggregation grid for aloe")
    p.add_argument("--main-k", type=int, default=10, help="K of the td1/progress critics and the headline aloe")
    p.add_argument("--critic-seeds", type=int, default=2, help="critic fits per configuration (seed, seed+1, ...)")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--variant", action="append", default=[], metavar="NAME=FIELD=VALUE,...",
                   help="an extra aloe critic (K=--main-k, subset_min) with CriticConfig overrides, repeatable; "
                        "a field method=progress|td1 makes it that method's critic (label 'progress[NAME]')")
    p.add_argument("--low-coverage", type=int, default=-1, metavar="N",
                   help="also fit every critic on the buffer with at most N failed episodes (-1: off)")
    p.add_argument("--pi-coverage", type=int, nargs="+", default=[], metavar="N",
                   help="also fit every critic on the buffer with only N (random) of pi's own episodes, per N "
                        "(the states keep their ground truth: how much the critics need pi's coverage)")
    p.add_argument("--baselines", nargs="*", default=list(BASELINES), choices=BASELINES,
                   help="the baseline critics fitted beside aloe")
    p.add_argument("--skip-grid", action="store_true", help="only progress, td1, the headline aloe and the variants")
    p.add_argument("--cache", default="", help="directory keeping the buffer, pi and the ground truth; reused when "
                                               "it exists (same --seed/--horizon)")
    p.add_argument("--out", default="runs/bench/ope_H10.json",
                   help="JSON results; a PNG is written beside it (the tracked copy: --out bench/results/ope_H10.json)")
    p.add_argument("--report", metavar="JSON", help="only print the markdown tables of an earlier run's JSON")
    p.add_argument("--pool", nargs="+", metavar="JSON",
                   help="only score the headline aloe and progress critics of earlier runs on different buffers (one "
                        "JSON per OPE --seed) against the issue's OPE targets, per buffer and pooled over all their "
                        "states (bootstrap: each buffer's states resampled within it)")
    p.add_argument("--pool-view", default="", metavar="SUFFIX",
                   help="with --pool: score the critics of this refit instead of the whole buffer's, e.g. ' (pi 0)'")
    p.add_argument("--pool-against", default=None, metavar="SUFFIX",
                   help="with --pool: also the paired bootstrap of the pooled ratio's difference from this refit's "
                        "('' : the whole buffer)")
    p.add_argument("--pool-critic", default="aloe", metavar="LABEL",
                   help="with --pool: the critic scored against progress (a variant's label, e.g. 'aloe[mean]')")
    p.add_argument("--pool-against-critic", default=None, metavar="LABEL",
                   help="with --pool-against: the other side's critic (default: --pool-critic)")
    p.add_argument("--pool-baseline", default="progress", metavar="LABEL",
                   help="with --pool: the critic the Q RMSE ratio divides by (a variant's label, e.g. "
                        "'progress[steps3]', when a setting changes both sides)")
    p.add_argument("--pool-against-baseline", default=None, metavar="LABEL",
                   help="with --pool-against: the other side's baseline (default: --pool-baseline)")
    p.add_argument("--plot", action="store_true", help="with --report: also redraw the scatter plot beside the JSON "
                                                       "(<JSON>.png, overwritten)")
    return p.parse_args(argv)


def spearman(a, b) -> float:
    """Spearman rank correlation (nan when one side is constant)."""
    import warnings

    from scipy.stats import spearmanr
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(spearmanr(a, b).statistic)


def collect(args, sim, log):
    """The mixed buffer: returns (episodes, group per episode, policies, phase stats, seconds)."""
    from aloe_sim.offline import run_episodes
    from aloe_sim.scripted import OperatorSupervisor, ScriptedConfig, SupervisorConfig

    H, seed = args.horizon, args.seed
    t0 = time.perf_counter()
    sup = lambda mode, noise, s: OperatorSupervisor(SupervisorConfig(  # noqa: E731
        mode=mode, max_steps=args.max_steps, controller=ScriptedConfig(noise=noise, seed=s)))
    episodes, groups, stats = [], [], {}

    def add(name, summary):
        episodes.extend(summary.episodes)
        groups.extend([name] * len(summary.episodes))
        stats[name] = {"episodes": len(summary.stats), "success_rate": summary.success_rate,
                       "intervention_rate": summary.intervention_rate, "mean_length": summary.mean_length,
                       "ticks": int(sum(s.steps for s in summary.stats))}
        log(f"  {name}: {stats[name]}")

    add("demo", run_episodes(sim, range(10_000 * seed, 10_000 * seed + args.demos),
                             supervisor=sup("demo", args.demo_noise, seed), desc="demo"))
    demos = list(episodes)
    # Old policies and pi: the same network behaviour-cloned for more and more steps on the demos.
    policy = make_policy(H, seed)
    done, snapshots = 0, {}
    for name, steps in (("old_weak", args.old_steps[0]), ("old_mid", args.old_steps[1]), ("pi", args.pi_steps)):
        behaviour_clone(policy, demos, steps - done, seed=seed + steps, gamma=args.gamma, fit_normalization=done == 0)
        done = steps
        snapshots[name] = make_policy(H, seed, text_encoder=policy.text_encoder)
        snapshots[name].load_state_dict(policy.state_dict())
        snapshots[name].normalizer.load_dict(policy.normalizer.to_dict())
        snapshots[name].eval()
    base = 10_000 * seed + 1000
    add("old_weak", run_episodes(sim, range(base, base + args.episodes[0]), policy=snapshots["old_weak"],
                                 replan_every=H, desc="old_weak"))
    add("old_mid+interventions", run_episodes(sim, range(base + 100, base + 100 + args.episodes[1]),
                                              policy=snapshots["old_mid"], supervisor=sup("correct", 0.0, seed + 1),
                                              replan_every=H, desc="old_mid"))
    add("pi", run_episodes(sim, range(base + 200, base + 200 + args.episodes[2]), policy=snapshots["pi"],
                           replan_every=H, desc="pi"))
    return episodes, groups, snapshots, stats, time.perf_counter() - t0


def ground_truth(args, sim, episodes, groups, pi, log):
    """Stratified recorded states with true Q^pi(s, A_recorded) and V^pi(s) (means, CI half-widths)."""
    rng = np.random.default_rng(args.seed + 7)
    by_group = {g: [s for s in sim.snapshots if groups[s[0]] == g] for g in GROUPS}
    per = args.states // len(GROUPS)
    chosen = []
    for g in GROUPS:
        pool = by_group[g]
        pick = rng.choice(len(pool), size=min(per, len(pool)), replace=False) if pool else []
        chosen += [pool[i] for i in sorted(pick)]
    H, n = args.horizon, args.rollouts
    rows = []
    t0 = time.perf_counter()
    for k, (ep, tick, state) in enumerate(chosen):
        e = episodes[ep]
        chunk = np.asarray(e.actions[tick:tick + H], np.float64)
        q = policy_returns(sim, state, pi, n, args.gamma, H, seed=2 * k, prefix=chunk)
        v = policy_returns(sim, state, pi, n, args.gamma, H, seed=2 * k + 1)
        obs = {"images": {c: np.asarray(e.images[c][tick]) for c in e.images}, "proprio": np.asarray(e.proprio[tick]),
               "task": e.task}
        pi_chunk = pi.predict_chunk(obs, generator=torch.Generator().manual_seed(7919 * k + 1)).astype(np.float64)
        q_pi = policy_returns(sim, state, pi, n, args.gamma, H, seed=2 * k + 500_000, prefix=pi_chunk)
        half = lambda x: 1.96 * x.std(ddof=1) / np.sqrt(len(x)) if np.ptp(x) > 0 else 0.0  # noqa: E731
        rows.append({"episode": ep, "tick": tick, "group": groups[ep],
                     "human_in_chunk": bool((np.asarray(e.sources[tick:tick + H]) == 1).any()),
                     "q_true": float(q.mean()), "q_ci": float(half(q)), "v_true": float(v.mean()),
                     "v_ci": float(half(v)), "q_success": float((q > 0).mean()), "v_success": float((v > 0).mean()),
                     "pi_chunk": pi_chunk.tolist(), "q_pi_true": float(q_pi.mean()), "q_pi_ci": float(half(q_pi))})
        if k % 8 == 0:
            log(f"  ground truth {k + 1}/{len(chosen)} ({time.perf_counter() - t0:.0f} s)")
    return rows, time.perf_counter() - t0


def fit_and_score(dataset, bank, pi, method, K, aggregate, seed, args, ids, rows, overrides=None, fit_view=None):
    """Fit a critic (on ``fit_view`` of the dataset, default all of it) and score the ground-truth
    states: Q, V, advantage, q_std at the recorded chunks, and Q / ensemble std at pi's sampled chunk."""
    from aloe_critic.critic import CriticConfig, critic_for_policy
    from aloe_critic.values import chunk_values, fit_critic, fit_current_value, with_value_of

    config = CriticConfig(**{"ensemble_size": K, "critic_steps": args.critic_steps,
                             "critic_batch_size": args.critic_batch, "num_policy_samples": args.policy_samples,
                             "num_value_samples": args.value_samples, "aggregate": aggregate, "subset_size": min(2, K),
                             **(overrides or {})})
    torch.manual_seed(seed)
    critic = critic_for_policy(pi, config)
    t0 = time.perf_counter()
    curve = fit_critic(critic, dataset if fit_view is None else fit_view, method, bank, config, seed=seed)
    value_critic = None
    if config.value_data == "current":  # V from a second critic on pi's own chunks (of the data this fit saw)
        value_critic, _, stats = fit_current_value(lambda: critic_for_policy(pi, config),
                                                   dataset if fit_view is None else fit_view, pi, method, bank, config,
                                                   seed=seed)
        if value_critic is None:
            raise SystemExit(f"value_data current: {stats['reason']}")
    fit_s = time.perf_counter() - t0
    view = dataset.filter(mask=np.isin(np.arange(len(dataset.done)), ids))
    values = chunk_values(critic, view, pi, seed=seed)  # num_value_samples of the (variant) config
    if value_critic is not None:
        values = with_value_of(values, chunk_values(value_critic, view, pi, seed=seed))
    order = {int(t): i for i, t in enumerate(view.indices)}
    pos = np.array([order[int(i)] for i in ids])
    est = {k: values[k][pos] for k in ("q", "v", "advantage", "q_std", "v_se")}
    # The advantage in TD form, V at both ends of the recorded chunk (option pooling's form for a one-chunk
    # option): R_t^H + gamma^H (1 - done) V(o_{t+H}) - V(o_t); the sim is deterministic given the chunk, so
    # its error is gamma^H e_V(o_{t+H}) - e_V(o_t) and cancels where V is wrong alike along the trajectory.
    nxt = dataset.next_transition[ids]
    after = dataset.filter(mask=np.isin(np.arange(len(dataset.done)), nxt))
    v_after = chunk_values(value_critic or critic, after, pi, seed=seed + 1)["v"]
    at = {int(t): i for i, t in enumerate(after.indices)}
    v_next = v_after[np.array([at[int(i)] for i in nxt])]
    est["advantage_td"] = (dataset.returns[ids] + dataset.gamma ** dataset.chunk_horizon * (1.0 - dataset.done[ids])
                           * v_next - est["v"]).astype(np.float32)
    obs = dataset.observations(dataset.obs_tick[ids])
    pi_chunks = torch.tensor(np.array([r["pi_chunk"] for r in rows]), dtype=torch.float32)
    with torch.no_grad():
        critic.eval()
        q_k = critic.q_values(obs, pi_chunks)                                   # (K, B)
        est["q_pi"] = critic.aggregate(q_k).numpy()
        est["q_pi_std"] = q_k.std(0, unbiased=False).numpy()
    return est, fit_s, curve[-1]


def is_headline(run: dict, args: dict) -> bool:
    """The run of the first critic seed with the headline K and subset-min: the one the tables and the
    plot show per method."""
    return run["critic_seed"] == args["seed"] and run["K"] == args["main_k"] and run["aggregate"] == "subset_min"


def headline_critics(result: dict) -> dict:
    """A run's headline critics (``is_headline``) by label: {method: run record}."""
    return {r["method"]: r for r in result["runs"] if is_headline(r, result["args"])}


def metrics(est, rows) -> dict:
    q = np.array([r["q_true"] for r in rows])
    v = np.array([r["v_true"] for r in rows])
    a = q - v
    noise = np.sqrt(np.array([r["q_ci"] for r in rows]) ** 2 + np.array([r["v_ci"] for r in rows]) ** 2)
    clear = np.abs(a) > noise  # advantage sign resolved by the ground truth's own CI
    sign_ok = np.sign(est["advantage"]) == np.sign(a)

    def scored(prefix: str, estimate) -> dict:  # RMSE, rank correlation, sign accuracy on resolved states
        ok = np.sign(estimate) == np.sign(a)
        return {f"{prefix}_rmse": float(np.sqrt(np.mean((estimate - a) ** 2))),
                f"{prefix}_spearman": spearman(estimate, a),
                f"{prefix}_sign_acc_resolved": float(ok[clear].mean()) if clear.any() else float("nan")}

    q_pi = np.array([r["q_pi_true"] for r in rows])
    err_pi = np.abs(est["q_pi"] - q_pi)
    own = np.array([r["group"] == "pi" for r in rows])
    return {
        "q_pi_rmse": float(np.sqrt(np.mean(err_pi ** 2))),
        "spread_vs_error_spearman": spearman(est["q_pi_std"], err_pi),
        "spread_over_error": float(np.mean(est["q_pi_std"]) / max(1e-9, float(np.mean(err_pi)))),
        "v_bias_pi_states": float(np.mean(est["v"][own] - v[own])) if own.any() else float("nan"),
        "v_se_mean": float(np.nanmean(est["v_se"])),
        "q_rmse": float(np.sqrt(np.mean((est["q"] - q) ** 2))), "q_bias": float(np.mean(est["q"] - q)),
        "q_spearman": spearman(est["q"], q),
        "v_rmse": float(np.sqrt(np.mean((est["v"] - v) ** 2))), "v_bias": float(np.mean(est["v"] - v)),
        "v_spearman": spearman(est["v"], v),
        **scored("adv", est["advantage"]),
        "resolved_states": int(clear.sum()),
        "adv_sign_acc_all": float(sign_ok.mean()),
        **(scored("adv_td", est["advantage_td"]) if "advantage_td" in est else {}),
    }


def advantage_error(est, rows, key: str = "advantage") -> dict:
    """Where a critic's advantage error comes from. A - A_true = (Q - Q_true) - (V - V_true), so
        RMSE(A)^2 = RMSE(Q)^2 + RMSE(V)^2 - 2 mean(e_Q e_V):
    Q's and V's errors cancel only as far as they are correlated at the same state. ``over_true_std``
    is RMSE(A) / std(A_true): 1 means the advantages carry no more than their mean (R^2 = 1 - it^2).
    ``key``: the estimate scored ("advantage": Q - V; "advantage_td": R + gamma^H V(o') - V(o))."""
    q = np.array([r["q_true"] for r in rows])
    v = np.array([r["v_true"] for r in rows])
    eq, ev = np.asarray(est["q"]) - q, np.asarray(est["v"]) - v
    ea = np.asarray(est[key]) - (q - v)
    rms = lambda e: float(np.sqrt(np.mean(e ** 2)))  # noqa: E731
    corr = float(np.corrcoef(eq, ev)[0, 1]) if eq.std() > 0 and ev.std() > 0 else float("nan")
    return {"adv_rmse": rms(ea), "q_error_rms": rms(eq), "v_error_rms": rms(ev), "q_v_error_corr": corr,
            "over_true_std": rms(ea) / float((q - v).std()) if (q - v).std() > 0 else float("nan")}


OPE_TARGETS = {"q_rmse_ratio": 0.5, "v_bias": 0.05, "spread_spearman": 0.5}  # issue 14: Q RMSE <= 0.5x progress's
# with the CI's upper end below 1.0, |V bias| at pi's own states <= 0.05, spread-vs-|Q error| rank correlation >= 0.5


def pool(results: list[dict], resamples: int = 2000, seed: int = 0, view: str = "", against: str | None = None,
         critic: str = "aloe", against_critic: str | None = None, baseline: str = "progress",
         against_baseline: str | None = None) -> dict:
    """The headline aloe and progress critics of runs on different buffers (``results``: one JSON per OPE
    seed) scored against the issue's OPE targets, per buffer and pooled. Q RMSE over the recorded chunks
    (pooled: over every state of every buffer) / progress's, with a 95 % stratified bootstrap (each buffer's
    states resampled within it, ``resamples`` times); aloe's V bias at pi's own states (pooled: their mean);
    the rank correlation of aloe's ensemble std with its |Q error| at pi's sampled chunks (pooled: the mean
    over buffers, each buffer's own ranks). ``view``: the critics of a refit (their labels' suffix, e.g.
    " (pi 0)"); ``against``: another refit's suffix, for the paired bootstrap (the same resampled states) of
    the pooled ratio's difference, this view's minus that one's. ``critic``: the label of the critic scored
    (default the headline aloe; e.g. a variant "aloe[mean]"), ``against_critic``: the other side's (default
    ``critic``), so that two critics of the same runs can be paired too. ``baseline``: the label of the critic the
    ratio divides by (default the headline progress; e.g. "progress[steps3]" when both sides change a setting),
    ``against_baseline``: the other side's (default ``baseline``)."""
    seeds = [res["args"]["seed"] for res in results]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"runs of OPE seeds {seeds}: pool one run per buffer")
    rng = np.random.default_rng(seed)
    draws = []
    for res in results:
        n, n_pi = len(res["rows"]), sum(r["group"] == "pi" for r in res["rows"])
        draws.append((rng.integers(0, n, (resamples, n)), rng.integers(0, n_pi, (resamples, n_pi))))

    def parts(critic: str, suffix: str, baseline: str) -> list[dict]:
        out = []
        for s, res, (boot, boot_pi) in zip(seeds, results, draws):
            head = headline_critics(res)
            need = {critic + suffix, baseline + suffix}
            if not need <= set(head):
                raise ValueError(f"the run of OPE seed {s} has no headline {sorted(need - set(head))} critic")
            rows = res["rows"]
            q = np.array([r["q_true"] for r in rows])
            v = np.array([r["v_true"] for r in rows])
            own = np.array([r["group"] == "pi" for r in rows])
            est = {k: np.asarray(x, float) for k, x in head[critic + suffix]["estimates"].items()}
            e_pi = np.abs(est["q_pi"] - np.array([r["q_pi_true"] for r in rows]))
            out.append({"seed": s, "ea": est["q"] - q, "group": np.array([r["group"] for r in rows]),
                        "ep": np.asarray(head[baseline + suffix]["estimates"]["q"], float) - q,
                        "ev_pi": (est["v"] - v)[own], "spread_spearman": spearman(est["q_pi_std"], e_pi),
                        "boot": boot, "boot_pi": boot_pi})
        return out

    ci = lambda x: [float(np.percentile(x, 2.5)), float(np.percentile(x, 97.5))]  # noqa: E731

    def ratio(ps, boot: bool):
        sq = lambda p, k: (p[k][p["boot"]] ** 2).sum(-1) if boot else (p[k] ** 2).sum()  # noqa: E731
        return np.sqrt(sum(sq(p, "ea") for p in ps) / sum(sq(p, "ep") for p in ps))

    def bias(ps, boot: bool):
        n = sum(len(p["ev_pi"]) for p in ps)
        return sum((p["ev_pi"][p["boot_pi"]] if boot else p["ev_pi"]).sum(-1) for p in ps) / n

    def scored(ps) -> dict:
        out = {"q_rmse_aloe": float(np.sqrt(np.mean(np.concatenate([p["ea"] for p in ps]) ** 2))),
               "q_rmse_progress": float(np.sqrt(np.mean(np.concatenate([p["ep"] for p in ps]) ** 2))),
               "q_rmse_ratio": float(ratio(ps, False)), "q_rmse_ratio_ci": ci(ratio(ps, True)),
               "v_bias_pi_states": float(bias(ps, False)), "v_bias_pi_states_ci": ci(bias(ps, True)),
               "spread_spearman": float(np.nanmean([p["spread_spearman"] for p in ps]))}
        groups = np.concatenate([p["group"] for p in ps])
        out["q_rmse_by_group"] = {g: {k: float(np.sqrt(np.mean(np.concatenate([p[e] for p in ps])[groups == g] ** 2)))
                                      for k, e in (("aloe", "ea"), ("progress", "ep"))}
                                  for g in GROUPS if (groups == g).any()}
        t = OPE_TARGETS
        out["met"] = {"q_rmse_ratio": out["q_rmse_ratio"] <= t["q_rmse_ratio"] and out["q_rmse_ratio_ci"][1] < 1.0,
                      "v_bias": abs(out["v_bias_pi_states"]) <= t["v_bias"],
                      "spread_spearman": out["spread_spearman"] >= t["spread_spearman"]}
        return out

    mine = parts(critic, view, baseline)
    result = {"view": view, "critic": critic, "baseline": baseline, "buffers": [{"seed": p["seed"], **scored([p])} for p in mine], "pooled": scored(mine),
              "targets": OPE_TARGETS}
    if against is not None:
        other = parts(against_critic or critic, against, against_baseline or baseline)
        diff = ratio(mine, True) - ratio(other, True)
        result["difference"] = {"against": against, "against_critic": against_critic or critic,
                                "against_baseline": against_baseline or baseline, "q_rmse_ratio": float(ratio(mine, False) - ratio(other, False)),
                                "q_rmse_ratio_ci": ci(diff)}
    return result


def pool_markdown(pooled: dict) -> str:
    lines = ["| OPE seed | Q RMSE aloe / progress | ratio [95 % CI] | V bias at pi's states [95 % CI] "
             "| spread-vs-\\|Q error\\| Spearman | targets met |", "|---|---|---|---|---|---|"]
    for label, b in [(str(b["seed"]), b) for b in pooled["buffers"]] + [("pooled", pooled["pooled"])]:
        met = ", ".join(k for k, ok in b["met"].items() if ok) or "none"
        lines.append(f"| {label} | {b['q_rmse_aloe']:.3f} / {b['q_rmse_progress']:.3f} | {b['q_rmse_ratio']:.2f} "
                     f"[{b['q_rmse_ratio_ci'][0]:.2f}, {b['q_rmse_ratio_ci'][1]:.2f}] | {b['v_bias_pi_states']:+.3f} "
                     f"[{b['v_bias_pi_states_ci'][0]:+.3f}, {b['v_bias_pi_states_ci'][1]:+.3f}] | "
                     f"{b['spread_spearman']:.2f} | {met} |")
    t = pooled["targets"]
    by = pooled["pooled"]["q_rmse_by_group"]
    lines += ["", "Pooled Q RMSE by the data source of the state, aloe / progress: "
              + ", ".join(f"{g} {x['aloe']:.3f} / {x['progress']:.3f}" for g, x in by.items())]
    baseline = pooled.get("baseline", "progress")
    if pooled.get("view") or pooled.get("critic", "aloe") != "aloe" or baseline != "progress":
        lines.insert(0, f"Critic {pooled.get('critic', 'aloe')}{pooled['view']} (as 'aloe' below) against "
                        f"{baseline}{pooled['view']} (as 'progress'):\n")
    if "difference" in pooled:
        d = pooled["difference"]
        lines += ["", f"Pooled ratio minus that of {d['against_critic']}{d['against'] or ' (the whole buffer)'}"
                  f" / {d.get('against_baseline', 'progress')}: "
                  f"{d['q_rmse_ratio']:+.3f} "
                  f"(paired bootstrap 95 % CI [{d['q_rmse_ratio_ci'][0]:+.3f}, {d['q_rmse_ratio_ci'][1]:+.3f}])"]
    lines += ["", f"Targets: Q RMSE <= {t['q_rmse_ratio']}x progress's with the CI's upper end below 1.0 "
              f"(q_rmse_ratio), |V bias| <= {t['v_bias']} (v_bias), Spearman >= {t['spread_spearman']} "
              "(spread_spearman). Pooled: every state of every buffer; the spread's correlation is the buffers' mean."]
    return "\n".join(lines)


def per_group(est, rows) -> dict:
    out = {}
    for g in GROUPS:
        m = np.array([r["group"] == g for r in rows])
        if m.sum() >= 3:
            q = np.array([r["q_true"] for r in rows])[m]
            v = np.array([r["v_true"] for r in rows])[m]
            a, a_est = q - v, est["advantage"][m]
            out[g] = {"q_bias": float(np.mean(est["q"][m] - q)), "q_rmse": float(np.sqrt(np.mean((est["q"][m] - q) ** 2))),
                      "v_bias": float(np.mean(est["v"][m] - v)), "v_rmse": float(np.sqrt(np.mean((est["v"][m] - v) ** 2))),
                      "adv_rmse": float(np.sqrt(np.mean((a_est - a) ** 2))), "adv_slope": slope(a, a_est)}
    return out


def slope(truth, estimate) -> float:
    """Least-squares slope of the estimate on the truth: 1 = the true advantages' scale, 0 = blind to them."""
    truth, estimate = np.asarray(truth, float), np.asarray(estimate, float)
    return float(np.polyfit(truth, estimate, 1)[0]) if truth.std() > 0 else float("nan")


def plot(rows, estimates, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    q = np.array([r["q_true"] for r in rows])
    v = np.array([r["v_true"] for r in rows])
    colours = {g: c for g, c in zip(GROUPS, ("tab:green", "tab:red", "tab:orange", "tab:blue"))}
    col = [colours[r["group"]] for r in rows]
    methods = list(estimates)
    panels = [("q", q, "Q", "Q"), ("v", v, "V", "V"), ("advantage", q - v, "A", "A = Q - V")]
    fig, axes = plt.subplots(len(panels), len(methods), figsize=(3.2 * len(methods), 9.3), squeeze=False)
    for j, m in enumerate(methods):
        for i, (key, truth, symbol, name) in enumerate(panels):
            ax = axes[i, j]
            ax.scatter(truth, estimates[m][key], c=col, s=12)
            lo, hi = (-1, 1) if key == "advantage" else (0, 1)
            ax.plot([lo, hi], [lo, hi], "k:", lw=0.8)
            if key == "advantage" and "advantage_td" in estimates[m]:  # the TD form, hollow
                ax.scatter(truth, estimates[m]["advantage_td"], facecolors="none", edgecolors=col, s=14, lw=0.7)
                name += " (hollow: TD form)"
            ax.set_title(f"{m}: {name}", fontsize=9)
            ax.set_xlabel(f"true {symbol}^pi (rollouts)", fontsize=8)
            ax.set_ylabel("critic", fontsize=8)
    handles = [plt.Line2D([], [], marker="o", ls="", color=c, label=g) for g, c in colours.items()]
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=8)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=70)
    plt.close(fig)


KEYS = ("q_rmse", "q_bias", "q_spearman", "v_rmse", "v_bias", "v_spearman", "adv_spearman", "adv_sign_acc_resolved")


def markdown(result: dict) -> str:
    """Tables of a run: headline methods, the aloe K x aggregation grid, bias per data source."""
    runs, rows, a = result["runs"], result["rows"], result["args"]
    mean = lambda sel, k: float(np.mean([r[k] for r in sel]))  # noqa: E731
    spread = lambda sel, k: (min(r[k] for r in sel), max(r[k] for r in sel))  # noqa: E731
    lines = [f"H={a['horizon']}, {len(rows)} states, {a['rollouts']} rollouts per true value; mean 95 % CI "
             f"half-width of the true values: Q {np.mean([r['q_ci'] for r in rows]):.3f}, "
             f"V {np.mean([r['v_ci'] for r in rows]):.3f}; true Q mean {np.mean([r['q_true'] for r in rows]):.3f}, "
             f"true V mean {np.mean([r['v_true'] for r in rows]):.3f}", "",
             "| method (K, aggregation) | Q RMSE | Q bias | Q Spearman | V RMSE | V bias | V Spearman | A Spearman "
             "| A-sign acc. (resolved) |", "|---|---|---|---|---|---|---|---|---|"]
    configs = []
    for r in runs:
        c = (r["method"], r["K"], r["aggregate"])
        if c not in configs:
            configs.append(c)
    for c in configs:
        sel = [r for r in runs if (r["method"], r["K"], r["aggregate"]) == c]
        cells = []
        for k in KEYS:
            lo, hi = spread(sel, k)
            cells.append(f"{mean(sel, k):.3f}" + (f" ({lo:.2f}..{hi:.2f})" if len(sel) > 1 and k.endswith(("rmse", "spearman")) else ""))
        lines.append(f"| {c[0]} (K={c[1]}, {c[2]}) | " + " | ".join(cells) + " |")
    lines.append(f"\n(n critic seeds per row: {a['critic_seeds']}; mean, (min..max) over seeds; "
                 f"A-sign accuracy over the {runs[0]['resolved_states']} states whose true |Q-V| exceeds its CI)")
    lines += ["", "Bias of Q / V by the data source of the state (first critic seed, headline K):", "",
              "| method | " + " | ".join(GROUPS) + " |", "|---|" + "---|" * len(GROUPS)]
    for r in runs:
        if is_headline(r, a):
            g = r["by_group"]
            lines.append(f"| {r['method']} | " + " | ".join(
                f"{g[x]['q_bias']:+.2f} / {g[x]['v_bias']:+.2f}" if x in g else "-" for x in GROUPS) + " |")
    if any("spread_vs_error_spearman" in r for r in runs):
        lines += ["", "The ensemble: at one chunk of pi per state, never executed in the data (mean over critic seeds):",
                  "", "| critic | Q RMSE at pi's chunk | spread-vs-error Spearman | mean spread / mean error "
                  "| V bias at pi's states | V standard error |", "|---|---|---|---|---|---|"]
        labels = []
        for r in runs:
            if r["method"] not in labels and (r["K"] == a["main_k"] and r["aggregate"] == "subset_min"):
                labels.append(r["method"])
        for lab in labels:
            sel = [r for r in runs if r["method"] == lab and r["K"] == a["main_k"] and r["aggregate"] == "subset_min"]
            lines.append(f"| {lab} | {mean(sel, 'q_pi_rmse'):.3f} | {mean(sel, 'spread_vs_error_spearman'):.2f} | "
                         f"{mean(sel, 'spread_over_error'):.2f} | {mean(sel, 'v_bias_pi_states'):+.3f} | "
                         f"{mean(sel, 'v_se_mean'):.4f} |")
    with_slopes = [r for r in runs if r["K"] == a["main_k"] and r["aggregate"] == "subset_min"
                   and all("adv_slope" in g for g in r["by_group"].values())]
    if with_slopes:  # how much of the true advantage each critic sees, where
        lines += ["", "The advantage by the data source of the state: RMSE / least-squares slope on the true advantage "
                  "(1: its scale, 0: blind to it), mean over critic seeds:", "",
                  "| critic | " + " | ".join(GROUPS) + " |", "|---|" + "---|" * len(GROUPS)]
        for lab in dict.fromkeys(r["method"] for r in with_slopes):
            sel = [r["by_group"] for r in with_slopes if r["method"] == lab]
            lines.append(f"| {lab} | " + " | ".join(
                f"{np.mean([g[x]['adv_rmse'] for g in sel]):.3f} / {np.mean([g[x]['adv_slope'] for g in sel]):.2f}"
                if all(x in g for g in sel) else "-" for x in GROUPS) + " |")
    lines += ["", "Where the advantage's error comes from (first critic seed, headline K; RMSE(A)^2 = RMSE(Q)^2 "
              "+ RMSE(V)^2 - 2 mean(e_Q e_V), advantage_error):", "",
              "| critic | A RMSE | A RMSE / std of true A | Q error (RMS) | V error (RMS) | corr(Q error, V error) "
              "| TD-form A RMSE (/ std of true A) |", "|---|---|---|---|---|---|---|"]
    for r in runs:
        if is_headline(r, a):
            e = advantage_error(r["estimates"], rows)
            td = advantage_error(r["estimates"], rows, "advantage_td") if "advantage_td" in r["estimates"] else None
            lines.append(f"| {r['method']} | {e['adv_rmse']:.3f} | {e['over_true_std']:.2f} | {e['q_error_rms']:.3f} | "
                         f"{e['v_error_rms']:.3f} | {e['q_v_error_corr']:+.2f} | "
                         + (f"{td['adv_rmse']:.3f} ({td['over_true_std']:.2f}) |" if td else "- |"))
    lines += ["", "Headline critics (first seed), 95 % bootstrap intervals over the states (2000 resamples):", "",
              "| method | Q RMSE | Q Spearman | V RMSE | V Spearman | Q RMSE / progress's | V RMSE / progress's "
              "| Q / V Spearman, non-trivial states |", "|---|---|---|---|---|---|---|---|"]
    head = headline_critics(result)
    q = np.array([r["q_true"] for r in rows])
    v = np.array([r["v_true"] for r in rows])
    rng = np.random.default_rng(0)
    boot = rng.integers(0, len(rows), size=(2000, len(rows)))
    rmse = lambda e, t, i: np.sqrt(np.mean((e[i] - t[i]) ** 2, axis=-1))  # noqa: E731
    rho = lambda e, t, i: np.array([spearman(e[j], t[j]) for j in i])  # noqa: E731
    ci = lambda x: f"[{np.nanpercentile(x, 2.5):.2f}, {np.nanpercentile(x, 97.5):.2f}]"  # noqa: E731
    for m, r in head.items():
        eq, ev = np.array(r["estimates"]["q"]), np.array(r["estimates"]["v"])
        cells = [f"{r['q_rmse']:.3f} {ci(rmse(eq, q, boot))}", f"{r['q_spearman']:.2f} {ci(rho(eq, q, boot))}",
                 f"{r['v_rmse']:.3f} {ci(rmse(ev, v, boot))}", f"{r['v_spearman']:.2f} {ci(rho(ev, v, boot))}"]
        if "progress" in head:
            pq, pv = np.array(head["progress"]["estimates"]["q"]), np.array(head["progress"]["estimates"]["v"])
            rq, rv = rmse(eq, q, boot) / rmse(pq, q, boot), rmse(ev, v, boot) / rmse(pv, v, boot)
            cells += [f"{r['q_rmse'] / head['progress']['q_rmse']:.2f} {ci(rq)}",
                      f"{r['v_rmse'] / head['progress']['v_rmse']:.2f} {ci(rv)}"]
        nt = (q > 0.01) | (v > 0.01)  # states where pi (or the chunk) can still succeed: no trivial zero ties
        cells.append(f"{spearman(eq[nt], q[nt]):.2f} / {spearman(ev[nt], v[nt]):.2f} (n={int(nt.sum())})")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_overrides(text: str) -> dict:
    """'bootstrap_fraction=0.5,prior_scale=0.3' -> {'bootstrap_fraction': 0.5, 'prior_scale': 0.3}."""
    import yaml

    out = {}
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        out[key.strip()] = yaml.safe_load(value)
    return out


def parse_variant(item: str) -> tuple[str, str, dict]:
    """'ln=critic_norm=layer' -> ('aloe', 'ln', {'critic_norm': 'layer'}); a field method=progress|td1 makes
    the variant that value method's critic: 'ln=method=progress,critic_norm=layer' -> ('progress', 'ln', ...)."""
    name, _, fields = item.partition("=")
    overrides = parse_overrides(fields)
    method = overrides.pop("method", "aloe")
    if method not in ("aloe", *BASELINES):
        raise SystemExit(f"--variant {item}: method must be aloe or one of {BASELINES}, got {method!r}")
    return method, name, overrides


def _keep_some(dataset, episodes_of_kind: list[int], keep: int, seed: int):
    """(the dataset without all but ``keep`` random episodes of ``episodes_of_kind``, how many were kept)."""
    kept = set(np.random.default_rng(seed).choice(episodes_of_kind, size=min(keep, len(episodes_of_kind)),
                                                  replace=False).tolist()) if episodes_of_kind else set()
    drop = np.zeros(dataset.tick_offset.size - 1, bool)
    drop[sorted(set(episodes_of_kind) - kept)] = True
    return dataset.filter(mask=~drop[dataset.tick_episode]), len(kept)


def pi_coverage_view(dataset, groups, keep: int, seed: int, log):
    """The dataset with only ``keep`` (random) of pi's own episodes."""
    own = [i for i, g in enumerate(groups) if g == "pi"]
    view, kept = _keep_some(dataset, own, keep, seed + 13)
    log(f"pi coverage: {kept} of pi's {len(own)} episodes kept in the critic's data")
    return view


def low_coverage_view(dataset, episodes, max_failures: int, seed: int, log):
    """The dataset without all but ``max_failures`` (random) of its failed episodes."""
    failed = [i for i, e in enumerate(episodes) if e.outcome != "SUCCESS"]
    view, kept = _keep_some(dataset, failed, max_failures, seed + 11)
    log(f"low coverage: {len(failed) - kept} of {len(failed)} failed episodes left out of the critic's data")
    return view


CACHE_KEYS = ("seed", "horizon", "max_steps", "gamma", "demos", "demo_noise", "old_steps", "pi_steps", "episodes",
              "states", "rollouts")


def save_cache(args, episodes, groups, pi, phase_stats, collect_s, rows, gt_s) -> None:
    import pickle

    d = Path(args.cache)
    d.mkdir(parents=True, exist_ok=True)
    pi.save_pretrained(d / "pi")
    with open(d / "buffer.pkl", "wb") as fh:
        pickle.dump({"key": {k: getattr(args, k) for k in CACHE_KEYS}, "episodes": episodes, "groups": groups,
                     "phase_stats": phase_stats, "collect_s": collect_s, "rows": rows, "gt_s": gt_s}, fh)


def load_cache(args, log):
    """(episodes, groups, pi, phase_stats, collect_s, rows, gt_s) from --cache, or None if absent."""
    import pickle

    from aloe_policy.model import FlowMatchingPolicy

    d = Path(args.cache)
    if not (d / "buffer.pkl").is_file():
        return None
    with open(d / "buffer.pkl", "rb") as fh:
        data = pickle.load(fh)
    key = {k: getattr(args, k) for k in CACHE_KEYS}
    if data["key"] != key:
        raise SystemExit(f"--cache {d} was made with {data['key']}, not {key}: use another --cache")
    pi = FlowMatchingPolicy.from_pretrained(d / "pi")
    pi.eval()
    log(f"buffer, pi and ground truth from {d}")
    return data["episodes"], data["groups"], pi, data["phase_stats"], data["collect_s"], data["rows"], data["gt_s"]


def run_buffer(run: dict, cache) -> tuple:
    """A finished run's buffer from its ``--cache`` directory, for the analyses of committed runs (no policy
    loaded): (the cached data, its TransitionDataset at the run's horizon and gamma, the transition ids of the
    run's ground-truth rows). Refuses the cache of another buffer (its ground-truth rows differ)."""
    import pickle

    from aloe_critic.dataset import TransitionDataset

    with open(Path(cache) / "buffer.pkl", "rb") as fh:
        data = pickle.load(fh)
    if [(r["episode"], r["tick"]) for r in run["rows"]] != [(r["episode"], r["tick"]) for r in data["rows"]]:
        raise SystemExit(f"{cache} is not the buffer of the run of OPE seed {run['args']['seed']}")
    dataset = TransitionDataset(data["episodes"], run["args"]["horizon"], run["args"]["gamma"])
    return data, dataset, np.array([dataset.tick_offset[r["episode"]] + r["tick"] for r in run["rows"]])


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.pool:
        print(pool_markdown(pool([json.loads(Path(f).read_text()) for f in args.pool], view=args.pool_view,
                                 against=args.pool_against, critic=args.pool_critic,
                                 against_critic=args.pool_against_critic, baseline=args.pool_baseline,
                                 against_baseline=args.pool_against_baseline)))
        return 0
    if args.report:  # tables (and with --plot the scatter plot, from the headline critics present) of an earlier run
        result = json.loads(Path(args.report).read_text())
        print(markdown(result))
        headline = {m: {k: np.array(v) for k, v in r["estimates"].items()} for m, r in headline_critics(result).items()}
        if args.plot and headline:
            plot(result["rows"], headline, Path(args.report).with_suffix(".png"))
        return 0
    torch.set_num_threads(args.threads)
    # Import every library module now: a file edited by someone else mid-run must not be picked up
    # half-way (a lazy import once broke a run here).
    import aloe_critic.critic  # noqa: F401
    import aloe_critic.values  # noqa: F401
    from aloe_critic.critic import PolicySampleBank
    from aloe_critic.dataset import TransitionDataset

    start = time.perf_counter()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    log = lambda msg: print(f"[{time.perf_counter() - start:6.0f} s] {msg}", flush=True)  # noqa: E731
    log(f"config: {vars(args)}")
    code = provenance()
    log(f"code: {code}")
    cached = load_cache(args, log) if args.cache else None
    if cached is not None:
        episodes, groups, pi, phase_stats, collect_s, rows, gt_s = cached
    else:
        sim = make_sim(max_steps=args.max_steps, seed=args.seed, snapshot_prob=0.2)
        episodes, groups, policies, phase_stats, collect_s = collect(args, sim, log)
        pi = policies["pi"]
        log(f"collected {len(episodes)} episodes, {sum(len(e) for e in episodes)} ticks, "
            f"{len(sim.snapshots)} snapshots in {collect_s:.0f} s")
        sim.snapshot_prob = 0.0
        rows, gt_s = ground_truth(args, sim, episodes, groups, pi, log)
        if args.cache:
            save_cache(args, episodes, groups, pi, phase_stats, collect_s, rows, gt_s)
    log(f"ground truth for {len(rows)} states ({gt_s:.0f} s); mean CI half-width Q {np.mean([r['q_ci'] for r in rows]):.3f}"
        f" V {np.mean([r['v_ci'] for r in rows]):.3f}")
    result = {"args": vars(args), "code": code, "phases": phase_stats, "collect_s": collect_s,
              "ground_truth_s": gt_s, "rows": rows, "runs": []}
    out.write_text(json.dumps(result, indent=1))  # the expensive part is kept even if a fit fails

    dataset = TransitionDataset(episodes, args.horizon, args.gamma)
    ids = np.array([dataset.tick_offset[r["episode"]] + r["tick"] for r in rows])
    bank = PolicySampleBank(pi, dataset, args.policy_samples, seed=args.seed)
    configs = [(b, args.main_k, "subset_min", None) for b in args.baselines]
    if args.skip_grid:
        configs += [("aloe", args.main_k, "subset_min", None)]
    else:
        configs += [("aloe", k, agg, None) for agg in args.aggregates for k in args.ensembles]
    for item in args.variant:
        variant_method, name, overrides = parse_variant(item)
        configs.append((variant_method, args.main_k, "subset_min", (name, overrides)))
    views = [("", None)]
    if args.low_coverage >= 0:
        views.append((" (low coverage)", low_coverage_view(dataset, episodes, args.low_coverage, args.seed, log)))
    for n in args.pi_coverage:
        views.append((f" (pi {n})", pi_coverage_view(dataset, groups, n, args.seed, log)))
    headline = {}
    for suffix, fit_view in views:
        for method, K, agg, variant in configs:
            label = (method if variant is None else f"{method}[{variant[0]}]") + suffix
            for s in range(args.critic_seeds):
                est, fit_s, last = fit_and_score(dataset, bank, pi, method, K, agg, args.seed + s, args, ids, rows,
                                                 overrides=None if variant is None else variant[1], fit_view=fit_view)
                m = metrics(est, rows)
                run = {"method": label, "K": K, "aggregate": agg, "critic_seed": args.seed + s, "fit_s": fit_s,
                       "overrides": None if variant is None else variant[1],
                       "last_curve": last, **m, "by_group": per_group(est, rows),
                       "estimates": {k: v.tolist() for k, v in est.items()}}
                result["runs"].append(run)
                log(f"{label:8s} K={K:2d} {agg:10s} seed={args.seed + s}: Q rmse {m['q_rmse']:.3f} rho "
                    f"{m['q_spearman']:.2f} | V rmse {m['v_rmse']:.3f} rho {m['v_spearman']:.2f} | sign acc "
                    f"{m['adv_sign_acc_resolved']:.2f} ({m['resolved_states']} resolved), TD form {m['adv_td_sign_acc_resolved']:.2f} | "
                    f"A rmse {m['adv_rmse']:.3f}, TD form {m['adv_td_rmse']:.3f} | spread~|err| rho "
                    f"{m['spread_vs_error_spearman']:.2f}, spread/err {m['spread_over_error']:.2f}, V bias at pi's "
                    f"states {m['v_bias_pi_states']:+.3f} | fit {fit_s:.0f} s")
                if s == 0 and K == args.main_k and agg == "subset_min" and variant is None and not suffix:
                    headline[method] = est
                out.write_text(json.dumps(result, indent=1))  # partial results survive a kill
    if headline:
        plot(rows, headline, out.with_suffix(".png"))
    result["total_s"] = time.perf_counter() - start
    out.write_text(json.dumps(result, indent=1))
    log(f"wrote {out}")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
