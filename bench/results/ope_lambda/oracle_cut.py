"""Session 22 (issue 14): how far could a lambda-return go if it knew where to trust the recorded continuation?
Per state, the lambda critic's Q where the recorded return-to-go is within CUT of Q^pi (the continuation is as good
as pi's), the one-chunk critic's elsewhere: an oracle trace cut (it uses the ground truth). It estimates what a rule
that cuts the trace where the behaviour leaves pi (Retrace-style) could reach; not a strict bound, since such a rule
would change the fit itself, which is not rerun here. Then the same choice made by a signal a critic has, its own
|advantage| of the recorded chunk (cut where it exceeds d: the continuation looks unlike pi's). Needs the caches.
Usage: python oracle_cut.py LABEL RUN.json=CACHE ...   (LABEL: the lambda critic, e.g. aloe[lam7])"""
import json
import sys
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from ope_accuracy import headline_critics, run_buffer  # noqa: E402

label, pairs = sys.argv[1], sys.argv[2:]
er, e0, el, ep, adv = [], [], [], [], []
for arg in pairs:
    path, _, cache = arg.partition("=")
    run = json.loads(Path(path).read_text())
    _, ds, ids = run_buffer(run, cache)
    q = np.array([r["q_true"] for r in run["rows"]])
    head = headline_critics(run)
    er.append(ds.mc_returns[ids] - q)
    e0.append(np.array(head["aloe"]["estimates"]["q"]) - q)
    el.append(np.array(head[label]["estimates"]["q"]) - q)
    ep.append(np.array(head["progress"]["estimates"]["q"]) - q)
    adv.append(np.abs(np.array(head["aloe"]["estimates"]["advantage"])))
er, e0, el, ep, adv = map(np.concatenate, (er, e0, el, ep, adv))
rms = lambda e: float(np.sqrt(np.mean(e ** 2)))  # noqa: E731
print(f"{len(er)} states; Q RMSE progress {rms(ep):.3f}, aloe {rms(e0):.3f} ({rms(e0) / rms(ep):.2f}x), "
      f"{label} {rms(el):.3f} ({rms(el) / rms(ep):.2f}x)")
for cut in (0.05, 0.1, 0.2):
    right = np.abs(er) <= cut
    mix = np.where(right, el, e0)
    print(f"oracle cut at |return - Q^pi| <= {cut} ({right.sum()} states): {label} there, aloe elsewhere: "
          f"{rms(mix):.3f} ({rms(mix) / rms(ep):.2f}x progress); progress there too: "
          f"{rms(np.where(right, ep, e0)) / rms(ep):.2f}x")
off = np.abs(er) > 0.1
print(f"the critic's |advantage| as the signal: Spearman with |return - Q^pi| {spearmanr(adv, np.abs(er))[0]:.2f}")
for d in (0.05, 0.1, 0.2):
    cut = adv > d
    mix = np.where(cut, e0, el)
    print(f"cut where |A| > {d}: {cut.sum()} states cut, {(cut & off).sum()} of the {off.sum()} where the return is off "
          f"> 0.1; Q RMSE {rms(mix):.3f} ({rms(mix) / rms(ep):.2f}x progress)")
