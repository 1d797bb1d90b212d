"""Session 21 (issue 14): V at the state after the recorded chunk, o_{t+H}, measured instead of inferred (part 20
inferred it under-valued near success). The sim is deterministic given the chunk and the ground truth's Q rollouts
execute the recorded chunk once, then pi (bench/sim_study.py policy_returns), so for a chunk that does not end the
episode V^pi(o_{t+H}) = (Q^pi(s, A_rec) - R_t^H) / gamma^H exactly, and a critic's V there is recovered from its
TD-form advantage: V(o_{t+H}) = (A_td + V(o_t) - R_t^H) / gamma^H (ope_accuracy.fit_and_score). Needs the buffers'
caches. Usage: python next_values.py [--critic LABEL] RUN.json=CACHE ...   (LABEL: a variant scored as "aloe", e.g.
aloe[mean])"""
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from ope_accuracy import headline_critics, run_buffer  # noqa: E402

args = sys.argv[1:]
critic = "aloe"
if args[:1] == ["--critic"]:
    critic, args = args[1], args[2:]
rows_out = {m: {"err": [], "true": [], "left": [], "q_err": [], "ret_right": []} for m in ("aloe", "progress")}
check = []
horizon_gamma = None
for arg in args:
    path, _, cache = arg.partition("=")
    run = json.loads(Path(path).read_text())
    a = run["args"]
    if horizon_gamma is not None and (a["horizon"], a["gamma"]) != horizon_gamma:
        raise SystemExit("pool runs of one horizon and gamma")
    horizon_gamma = (a["horizon"], a["gamma"])
    data, ds, ids = run_buffer(run, cache)
    g = ds.gamma ** ds.chunk_horizon
    R, done = ds.returns[ids], ds.done[ids]
    q = np.array([r["q_true"] for r in run["rows"]])
    left = np.array([len(data["episodes"][r["episode"]]) - r["tick"] for r in run["rows"]])
    check.append(np.abs(q[done > 0] - R[done > 0]))  # chunks that end the episode: Q^pi must equal R exactly
    keep = (done == 0) & (left > a["horizon"])
    v_true = (q - R) / g
    head = headline_critics(run)
    for m in rows_out:
        est = {k: np.asarray(v, float) for k, v in head[critic if m == "aloe" else m]["estimates"].items()}
        v_next = (est["advantage_td"] + est["v"] - R) / g
        rows_out[m]["err"].append((v_next - v_true)[keep])
        rows_out[m]["true"].append(v_true[keep])
        rows_out[m]["left"].append(left[keep] - a["horizon"])
        rows_out[m]["q_err"].append((est["q"] - q)[keep])
        rows_out[m]["ret_right"].append((np.abs(ds.mc_returns[ids] - q) <= 0.1)[keep])
check = np.concatenate(check)
g = horizon_gamma[1] ** horizon_gamma[0]  # gamma^H, one for every run (checked in the loop)
print(f"check: {len(check)} chunks that end the episode, max |Q^pi - R| {check.max():.2e} (0 if the identity holds)")
for m, d in rows_out.items():
    err, true, left, q_err, right = (np.concatenate(d[k]) for k in ("err", "true", "left", "q_err", "ret_right"))
    rms = lambda e: float(np.sqrt(np.mean(e ** 2)))  # noqa: E731
    print(f"{m}: V at o_(t+H), {len(err)} states: RMSE {rms(err):.3f}, bias {err.mean():+.3f}, slope on the truth "
          f"{np.polyfit(true, true + err, 1)[0]:.2f}")
    for lo, hi in ((1, 10), (11, 50)):
        k = (left >= lo) & (left <= hi) & (true >= 0.02)
        print(f"  success possible, {lo}-{hi} ticks left after the chunk: {k.sum()} states, RMSE {rms(err[k]):.3f}, "
              f"bias {err[k].mean():+.3f}")
    # Part 20's floor states: the recorded return within 0.1 of Q^pi, success possible, one bootstrap (1-10 ticks left
    # after the chunk). Q at the recorded chunk is fitted to R + gamma^H V(o_(t+H)); is its error V's there, or its own?
    k = right & (true >= 0.02) & (left <= 10)
    print(f"  part 20's floor states (return right, success possible, 1-10 ticks left after): {k.sum()}: Q error "
          f"RMSE {rms(q_err[k]):.3f} bias {q_err[k].mean():+.3f}; gamma^H x V(o_(t+H)) error RMSE {rms(g * err[k]):.3f} "
          f"bias {(g * err[k]).mean():+.3f}; their correlation {np.corrcoef(q_err[k], err[k])[0, 1]:.2f}")
    z = true < 0.02
    print(f"  V^pi ~ 0 there: {z.sum()} states, RMSE {rms(err[z]):.3f}, bias {err[z].mean():+.3f}")
