"""Prototype (session 19): V from the current policy's own rollouts only, Q from all data.
Does it remove the outcome leakage of V at intervention states? On cache_s2 (a seen buffer: tuning)."""
import json, sys, time
SEEDSPEC = sys.argv[1]
import numpy as np, torch
sys.argv = ["ope_accuracy.py", "--horizon", "10", "--skip-grid", "--critic-seeds", "1", "--seed", SEEDSPEC.split(":")[0],
            "--cache", sys.argv[2], "--out", "/dev/null"]
sys.path.insert(0, "/work/main/bench")
import ope_accuracy as oa
from aloe_critic.critic import PolicySampleBank
from aloe_critic.dataset import TransitionDataset
args = oa.parse_args(sys.argv[1:])
CSEED = int(SEEDSPEC.split(":")[1]) if ":" in SEEDSPEC else args.seed
torch.set_num_threads(1)
log = lambda m: print(f"[{time.strftime('%H:%M:%S')}] {m}", flush=True)
episodes, groups, pi, *_ , rows, gt_s = oa.load_cache(args, log)
ds = TransitionDataset(episodes, args.horizon, args.gamma)
ids = np.array([ds.tick_offset[r["episode"]] + r["tick"] for r in rows])
bank = PolicySampleBank(pi, ds, args.policy_samples, seed=args.seed)
on = np.array([groups[e] == "pi" for e in range(len(episodes))])
pi_view = ds.filter(mask=on[ds.tick_episode])
log(f"pi's own episodes: {on.sum()} of {len(episodes)}, {len(pi_view)} transitions")
res = {}
for label, method, view in [("aloe", "aloe", None), ("aloe_on_pi", "aloe", pi_view), ("progress_on_pi", "progress", pi_view)]:
    est, fit_s, _ = oa.fit_and_score(ds, bank, pi, method, args.main_k, "subset_min", CSEED, args, ids, rows, fit_view=view)
    res[label] = est
    log(f"{label}: fit {fit_s:.0f} s")
q = np.array([r["q_true"] for r in rows]); v = np.array([r["v_true"] for r in rows]); g = np.array([r["group"] for r in rows])
a = q - v
def report(name, qe, ve):
    ae = qe - ve
    line = f"{name:24s} A rmse {np.sqrt(np.mean((ae-a)**2)):.3f} V rmse {np.sqrt(np.mean((ve-v)**2)):.3f} V bias pi {np.mean((ve-v)[g=='pi']):+.3f} A slope {np.polyfit(a, ae, 1)[0]:.2f}"
    for grp in oa.GROUPS:
        m = g == grp
        line += f" | {grp[:8]} A {np.sqrt(np.mean((ae-a)[m]**2)):.3f} V {np.sqrt(np.mean((ve-v)[m]**2)):.3f} sl {np.polyfit(a[m], ae[m], 1)[0]:.2f}"
    print(line, flush=True)
base = res["aloe"]
report("aloe (Q, V all data)", base["q"], base["v"])
report("aloe Q, V aloe-on-pi", base["q"], res["aloe_on_pi"]["v"])
report("aloe Q, V progress-on-pi", base["q"], res["progress_on_pi"]["v"])
