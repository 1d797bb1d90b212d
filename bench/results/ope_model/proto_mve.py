"""Prototype (session 20, issue 14): does a learned chunk model make Q depend on the chunk where the data has one
chunk per state?  Model-based value expansion of the default ALOE critic, on an OPE cache (seen buffers: tuning).

A small ensemble of chunk models f_m(o, A) -> (o_{t+H} - o_t, R_t^H, done) is fitted on every transition of the
buffer (the state-only sim's proprio is the state: joints, gripper, the cube's position, the episode's time). Then
    Q_k(o, A) = R^(o, A) + gamma^H (1 - d^) W_{k-1}(o^'),   W_0 = V_aloe,   W_j(o) = Q_j(o, A' ~ pi(o))
(one stochastic rollout of pi in the model per sample; a rollout past the time limit is worth 0), and
V_k(o) = mean over n chunks of pi of Q_k(o, A_j). k = 0 is the ALOE critic itself. The advantage is scored in two
forms: model form Q_k(o, A_rec) - V_k(o), and TD form R_t^H + gamma^H (1 - done) V_aloe(o_{t+H}) - V_k(o) (the
recorded chunk's real outcome, V only from the model). Usage: python proto_mve.py <ope seed>[:<critic seed>] <cache>
"""
import sys
import time

import numpy as np
import torch

SEEDSPEC, CACHE = sys.argv[1], sys.argv[2]
KS = (0, 1, 2, 3, 6)
sys.argv = ["ope_accuracy.py", "--horizon", "10", "--skip-grid", "--critic-seeds", "1", "--seed", SEEDSPEC.split(":")[0],
            "--cache", CACHE, "--out", "/dev/null"]
sys.path.insert(0, "/work/main/bench")
import ope_accuracy as oa  # noqa: E402
from aloe_critic.critic import CriticConfig, PolicySampleBank, critic_for_policy  # noqa: E402
from aloe_critic.dataset import TransitionDataset  # noqa: E402
from aloe_critic.values import chunk_values, fit_critic  # noqa: E402

args = oa.parse_args(sys.argv[1:])
if "SMOKE" in __import__("os").environ:  # a quick run of every line, numbers meaningless
    args.critic_steps, KS = 20, (0, 1, 2)
CSEED = int(SEEDSPEC.split(":")[1]) if ":" in SEEDSPEC else args.seed
torch.set_num_threads(1)
T0 = time.time()
log = lambda m: print(f"[{time.time() - T0:5.0f} s] {m}", flush=True)  # noqa: E731
episodes, groups, pi, *_, rows, gt_s = oa.load_cache(args, log)
ds = TransitionDataset(episodes, args.horizon, args.gamma)
H, G = ds.chunk_horizon, ds.gamma
ids = np.array([ds.tick_offset[r["episode"]] + r["tick"] for r in rows])
TASK = episodes[0].task
IMG = {cam: torch.from_numpy(np.asarray(episodes[0].images[cam][:1])) for cam in ds.cameras}
assert all(np.all(np.asarray(e.images[c]) == np.asarray(IMG[c][0])) for e in episodes for c in ds.cameras), "not blank"
TIME_DIM, STEP = ds.proprio.shape[1] - 1, 1.0 / args.max_steps


def obs_of(p: torch.Tensor) -> dict:
    return {"images": {c: im.expand(len(p), *im.shape[1:]) for c, im in IMG.items()}, "proprio": p.float(),
            "task": [TASK] * len(p)}


# ---- the ALOE critic (default configuration, as bench/ope_accuracy.py fits it) ----
bank = PolicySampleBank(pi, ds, args.policy_samples, seed=args.seed)
config = CriticConfig(ensemble_size=args.main_k, critic_steps=args.critic_steps, critic_batch_size=args.critic_batch,
                      num_policy_samples=args.policy_samples, num_value_samples=args.value_samples,
                      aggregate="subset_min", subset_size=2)
torch.manual_seed(CSEED)
critic = critic_for_policy(pi, config)
fit_critic(critic, ds, "aloe", bank, config, seed=CSEED)
critic.eval()
log("aloe critic fitted")
view = ds.filter(mask=np.isin(np.arange(len(ds.done)), ids))
vals = chunk_values(critic, view, pi, seed=CSEED)
order = {int(t): i for i, t in enumerate(view.indices)}
pos = np.array([order[int(i)] for i in ids])
base = {k: vals[k][pos] for k in ("q", "v")}


@torch.no_grad()
def v_aloe(p: torch.Tensor, n: int = 16, seed: int = 0) -> torch.Tensor:
    out = []
    for s in range(0, len(p), 256):
        o = obs_of(p[s:s + 256])
        gen = torch.Generator().manual_seed(seed * 7919 + s)
        chunks = pi.sample(o, n, generator=gen).float()
        out.append(critic.aggregate(critic.q_values(o, chunks).mean(-1)))
    return torch.cat(out)


# ---- the chunk model: an ensemble of MLPs on (proprio, chunk) ----
P = torch.from_numpy(ds.proprio)
idx = ds.indices
p0 = P[ds.obs_tick[idx]]
p1 = P[ds.next_tick[idx]]
A = torch.from_numpy(ds.chunks[idx]).flatten(1)
R = torch.from_numpy(ds.returns[idx]).float()
D = torch.from_numpy(ds.done[idx]).float()
local = ds.tick_in_episode[ds.obs_tick[idx]]
length = np.array([len(e) for e in episodes])[ds.episode[idx]]
full = torch.from_numpy(local + H <= length - 1)          # the chunk ends inside the episode: o_{t+H} is real
usable = full | (D > 0)                                   # or it ends the episode (success / terminal): R, done real
mp, sp = p0.mean(0), p0.std(0) + 1e-3
ma, sa = A.mean(0), A.std(0) + 1e-3
delta = (p1 - p0)[full]
sd = delta.std(0) + 1e-4
M, HID = 5, 256


class ChunkModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(P.shape[1] + A.shape[1], HID), torch.nn.SiLU(),
                                       torch.nn.Linear(HID, HID), torch.nn.SiLU(), torch.nn.Linear(HID, P.shape[1] + 2))

    def forward(self, p, a):
        y = self.net(torch.cat([(p - mp) / sp, (a - ma) / sa], -1))
        return p + y[:, :-2] * sd, y[:, -2].clamp(0, 1), torch.sigmoid(y[:, -1])


def fit_models(seed: int, steps: int = 50 if args.critic_steps == 20 else 3000, holdout=None):
    g = torch.Generator().manual_seed(seed)
    models = []
    ok = usable.clone()
    if holdout is not None:
        ok &= ~torch.from_numpy(holdout)
    for m in range(M):
        torch.manual_seed(seed * 100 + m)
        net = ChunkModel()
        opt = torch.optim.AdamW(net.parameters(), 1e-3, weight_decay=1e-4)
        boot = ok & (torch.rand(len(ok), generator=g) < 0.8)
        rows_m = torch.nonzero(boot).squeeze(1)
        for _ in range(steps):
            b = rows_m[torch.randint(len(rows_m), (256,), generator=g)]
            y = net.net(torch.cat([(p0[b] - mp) / sp, (A[b] - ma) / sa], -1))
            dl = (((y[:, :-2] - (p1[b] - p0[b]) / sd) ** 2).mean(-1) * full[b]).sum() / full[b].sum().clamp(min=1)
            loss = dl + 10 * ((y[:, -2] - R[b]) ** 2).mean() + \
                torch.nn.functional.binary_cross_entropy_with_logits(y[:, -1], D[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
        models.append(net.eval())
    return models


# model quality on held-out episodes (one fold of a quarter of the episodes), then the models on everything
rng = np.random.default_rng(CSEED)
held = rng.random(len(episodes)) < 0.25
hold_t = held[ds.episode[idx]]
probe = fit_models(CSEED + 99, holdout=hold_t)
with torch.no_grad():
    te = torch.from_numpy(hold_t) & full
    pr = torch.stack([m(p0[te], A[te])[0] for m in probe]).mean(0)
    r2 = 1 - ((pr - p1[te]) ** 2).sum(0) / ((p1[te] - p1[te].mean(0)) ** 2).sum(0).clamp(min=1e-9)
    r2d = 1 - ((pr - p1[te]) ** 2).sum(0) / ((p1[te] - p0[te]) ** 2).sum(0).clamp(min=1e-9)
    tr = torch.from_numpy(hold_t) & usable
    rr = torch.stack([m(p0[tr], A[tr])[1] for m in probe]).mean(0)
    dd = torch.stack([m(p0[tr], A[tr])[2] for m in probe]).mean(0)
log(f"held-out episodes {held.sum()}: next-state R^2 per dim (min/median) {r2.min():.2f}/{r2.median():.2f}; "
    f"of the change (1 - err/|change|) min/median {r2d.min():.2f}/{r2d.median():.2f}; chunk return RMSE "
    f"{((rr - R[tr]) ** 2).mean().sqrt():.3f} (std {R[tr].std():.3f}); done acc {((dd > 0.5).float() == D[tr]).float().mean():.3f}")
models = fit_models(CSEED)
log("chunk models fitted")


@torch.no_grad()
def q_model(p, a, k: int, member=None, seed: int = 0):
    """Q_k(p, a) per row; member None: a random member per row per step (each rollout its own draws)."""
    gen = torch.Generator().manual_seed(seed)
    n = len(p)
    pick = (torch.randint(M, (n,), generator=gen) if member is None else torch.full((n,), member))
    nxt, r, d = (torch.stack(x) for x in zip(*(m(p, a) for m in models)))
    ar = torch.arange(n)
    nxt, r, d = nxt[pick, ar], r[pick, ar], d[pick, ar]
    alive = (nxt[:, TIME_DIM] < 1.0 - 0.5 * STEP).float()
    if k == 1:
        leaf = v_aloe(nxt, seed=seed + 1)
    else:
        a2 = pi.sample(obs_of(nxt), 1, generator=torch.Generator().manual_seed(seed + 2)).float()[:, 0].flatten(1)
        leaf = q_model(nxt, a2, k - 1, member, seed + 3)
    return r + G ** H * (1 - d) * alive * leaf


@torch.no_grad()
def v_model(p, k: int, n: int = 32, seed: int = 0):
    chunks = pi.sample(obs_of(p), n, generator=torch.Generator().manual_seed(seed)).float()  # (B, n, H, A)
    B = len(p)
    q = q_model(p.repeat_interleave(n, 0), chunks.flatten(2).flatten(0, 1), k, seed=seed + 5)
    return q.view(B, n).mean(1)


q_true = np.array([r["q_true"] for r in rows])
v_true = np.array([r["v_true"] for r in rows])
qpi_true = np.array([r["q_pi_true"] for r in rows])
grp = np.array([r["group"] for r in rows])
a_true = q_true - v_true
p_rows = P[ds.obs_tick[ids]]
a_rows = torch.from_numpy(ds.chunks[ids]).flatten(1)
api_rows = torch.tensor(np.array([r["pi_chunk"] for r in rows]), dtype=torch.float32).flatten(1)
p_next = P[ds.next_tick[ids]]
v_next_aloe = v_aloe(p_next, n=64, seed=11).numpy()
R_rows, D_rows = ds.returns[ids], ds.done[ids]


def rmse(x, y):
    return float(np.sqrt(np.mean((x - y) ** 2)))


def spearman(x, y):
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    return float(np.corrcoef(rx, ry)[0, 1])


def report(name, q, v, qpi=None, qpi_std=None):
    a_m, a_td = q - v, R_rows + G ** H * (1 - D_rows) * v_next_aloe - v
    line = (f"{name:10s} Q {rmse(q, q_true):.3f} V {rmse(v, v_true):.3f} Vbias_pi {np.mean((v - v_true)[grp == 'pi']):+.3f}"
            f" A {rmse(a_m, a_true):.3f} sl {np.polyfit(a_true, a_m, 1)[0]:.2f} A_td {rmse(a_td, a_true):.3f}"
            f" sl {np.polyfit(a_true, a_td, 1)[0]:.2f}")
    if qpi is not None:
        line += f" Qpi {rmse(qpi, qpi_true):.3f}"
    if qpi_std is not None:
        line += f" spread~|err| {spearman(qpi_std, np.abs(qpi - qpi_true)):.2f}"
    for g in oa.GROUPS:
        m = grp == g
        line += (f" | {g[:6]} A {rmse(a_m[m], a_true[m]):.3f} sl {np.polyfit(a_true[m], a_m[m], 1)[0]:+.2f}"
                 f" Atd {rmse(a_td[m], a_true[m]):.3f} sl {np.polyfit(a_true[m], a_td[m], 1)[0]:+.2f}")
    print(line, flush=True)


with torch.no_grad():
    qk = critic.q_values(obs_of(p_rows), api_rows.view(-1, H, ds.action_dim))
    report("k=0 aloe", base["q"], base["v"], critic.aggregate(qk).numpy(), qk.std(0).numpy())
for k in KS[1:]:
    q = np.mean([q_model(p_rows, a_rows, k, seed=100 * s).numpy() for s in range(8)], 0)
    v = v_model(p_rows, k, seed=k).numpy()
    per = np.stack([np.mean([q_model(p_rows, api_rows, k, member=m, seed=200 * s + m).numpy() for s in range(4)], 0)
                    for m in range(M)])
    report(f"k={k}", q, v, per.mean(0), per.std(0))
    log(f"k={k} done")
