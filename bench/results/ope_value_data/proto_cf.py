"""Prototype (session 19): cross-fitted V. Q from the all-data critic; V(o) from a critic fitted on the other half of
the episodes (2 folds by episode), so V never saw the outcome recorded at o. Seen buffers only (tuning)."""
import sys, time
SEEDSPEC = sys.argv[1]
import numpy as np, torch
sys.argv = ["ope_accuracy.py", "--horizon", "10", "--skip-grid", "--critic-seeds", "1", "--seed", SEEDSPEC.split(":")[0],
            "--cache", sys.argv[2], "--out", "/dev/null"]
sys.path.insert(0, "/work/main/bench")
import ope_accuracy as oa
from aloe_critic.critic import PolicySampleBank, CriticConfig, critic_for_policy
from aloe_critic.dataset import TransitionDataset
from aloe_critic.values import chunk_values, fit_critic
args = oa.parse_args(sys.argv[1:])
CSEED = int(SEEDSPEC.split(":")[1]) if ":" in SEEDSPEC else args.seed
torch.set_num_threads(1)
log = lambda m: print(f"[{time.strftime('%H:%M:%S')}] {m}", flush=True)
episodes, groups, pi, *_, rows, gt_s = oa.load_cache(args, log)
ds = TransitionDataset(episodes, args.horizon, args.gamma)
ids = np.array([ds.tick_offset[r["episode"]] + r["tick"] for r in rows])
bank = PolicySampleBank(pi, ds, args.policy_samples, seed=args.seed)
base, _, _ = oa.fit_and_score(ds, bank, pi, "aloe", args.main_k, "subset_min", CSEED, args, ids, rows)
log("all-data critic done")
fold = np.random.default_rng(CSEED + 99).permutation(len(episodes)) % 2  # episode -> fold
v_cf = np.zeros(len(rows))
for k in (0, 1):
    config = CriticConfig(ensemble_size=args.main_k, critic_steps=args.critic_steps, critic_batch_size=args.critic_batch,
                          num_policy_samples=args.policy_samples, num_value_samples=args.value_samples,
                          aggregate="subset_min", subset_size=2)
    torch.manual_seed(CSEED + k)
    critic = critic_for_policy(pi, config)
    fit_critic(critic, ds.filter(mask=fold[ds.tick_episode] != k), "aloe", bank, config, seed=CSEED + k)
    mine = np.array([fold[r["episode"]] == k for r in rows])
    view = ds.filter(mask=np.isin(np.arange(len(ds.done)), ids[mine]))
    vals = chunk_values(critic, view, pi, seed=CSEED)
    order = {int(t): i for i, t in enumerate(view.indices)}
    v_cf[mine] = vals["v"][[order[int(i)] for i in ids[mine]]]
    log(f"fold {k} done")
q = np.array([r["q_true"] for r in rows]); v = np.array([r["v_true"] for r in rows]); g = np.array([r["group"] for r in rows])
a = q - v
def report(name, qe, ve):
    ae = qe - ve
    line = f"{name:22s} A rmse {np.sqrt(np.mean((ae-a)**2)):.3f} V rmse {np.sqrt(np.mean((ve-v)**2)):.3f} V bias pi {np.mean((ve-v)[g=='pi']):+.3f} A slope {oa.slope(a, ae):.2f}"
    for grp in oa.GROUPS:
        m = g == grp
        line += f" | {grp[:8]} A {np.sqrt(np.mean((ae-a)[m]**2)):.3f} sl {oa.slope(a[m], ae[m]):.2f}"
    print(line, flush=True)
report("aloe (Q, V all data)", base["q"], base["v"])
report("aloe Q, V cross-fit", base["q"], v_cf)
report("aloe Q, V mean(all,cf)", base["q"], 0.5 * (base["v"] + v_cf))
