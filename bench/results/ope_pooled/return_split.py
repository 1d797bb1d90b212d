"""Session 20 (issue 14): where does ALOE's Q beat Monte-Carlo returns on the OPE benchmark? Splits the states of
OPE buffers 2-4 by how far the recorded return-to-go of the state's own episode (what progress regresses on) is from
Q^pi, and scores the committed default aloe and progress critics on each part. Needs the buffers' caches (not
committed: python bench/ope_accuracy.py --seed S --cache DIR rebuilds one; on another machine the buffer differs).
Usage: python return_split.py <cache of seed 2> <cache of seed 3> <cache of seed 4>
   or: python return_split.py [--critic LABEL] RUN.json=CACHE ...   (any buffers: each committed run with its
       buffer's cache, session 21; LABEL: a variant scored as "aloe", e.g. aloe[lam3], session 22)"""
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT.parent))
from ope_accuracy import headline_critics as headline, run_buffer  # noqa: E402


RUNS = {2: ROOT / "ope_H10_edac_s2.json", 3: ROOT / "ope_value_data/ope_H10_vcur_s3.json",
        4: ROOT / "ope_value_data/ope_H10_vcur_s4.json"}
args = sys.argv[1:]
critic = "aloe"
if args[:1] == ["--critic"]:
    critic, args = args[1], args[2:]
PAIRS = ([(Path(a.partition("=")[0]), a.partition("=")[2]) for a in args] if "=" in "".join(args)
         else list(zip(RUNS.values(), args[:3])))
er, ea, ep, qs, left, ev = [], [], [], [], [], []
for path, cache in PAIRS:
    run = json.loads(path.read_text())
    data, ds, ids = run_buffer(run, cache)
    head = headline(run)
    q = np.array([r["q_true"] for r in run["rows"]])
    er.append(ds.mc_returns[ids] - q)
    ea.append(np.array(head[critic]["estimates"]["q"]) - q)
    ep.append(np.array(head["progress"]["estimates"]["q"]) - q)
    qs.append(q)
    ev.append(np.array(head[critic]["estimates"]["v"]) - np.array([r["v_true"] for r in run["rows"]]))
    left.append(np.array([len(data["episodes"][r["episode"]]) - r["tick"] for r in run["rows"]]))
er, ea, ep, qs, left, ev = map(np.concatenate, (er, ea, ep, qs, left, ev))
rms = lambda e: float(np.sqrt(np.mean(e ** 2)))  # noqa: E731
print(f"{len(er)} states: recorded return {rms(er):.3f}, progress {rms(ep):.3f}, aloe {rms(ea):.3f} (Q RMSE); "
      f"corr(|progress error|, |return error|) {np.corrcoef(np.abs(ep), np.abs(er))[0, 1]:.2f}")
for cut in (0.05, 0.1, 0.2):
    far = np.abs(er) > cut
    print(f"recorded return off Q^pi by > {cut}: {far.sum()} states, progress {rms(ep[far]):.3f}, aloe {rms(ea[far]):.3f}"
          f" | the other {(~far).sum()}: progress {rms(ep[~far]):.3f}, aloe {rms(ea[~far]):.3f}")

# ALOE's own error where the recorded return is right (within 0.1) and the state can still succeed (Q^pi >= 0.02),
# by the ticks left in the recorded episode: how many chunk bootstraps lie between the state and its outcome.
floor = (np.abs(er) <= 0.1) & (qs >= 0.02)
for lo, hi in ((0, 10), (11, 20), (21, 60)):
    k = floor & (left >= lo) & (left <= hi)
    print(f"return right, Q^pi > 0, {lo}-{hi} ticks left: {k.sum()} states, aloe {rms(ea[k]):.3f} (bias {ea[k].mean():+.3f}),"
          f" progress {rms(ep[k]):.3f}")
print(f"  corr(|aloe error|, ticks left) there {np.corrcoef(np.abs(ea[floor]), left[floor])[0, 1]:.2f}")
print(f"  all {floor.sum()} such states: aloe bias {ea[floor].mean():+.3f}; the {((np.abs(er) <= 0.1) & (qs < 0.02)).sum()} "
      f"with Q^pi < 0.02: aloe {rms(ea[(np.abs(er) <= 0.1) & (qs < 0.02)]):.3f}, its largest errors "
      f"{np.round(np.sort(np.abs(ea[(np.abs(er) <= 0.1) & (qs < 0.02)]))[-2:], 2).tolist()}")
later = (left >= 11) & (qs >= 0.02)
print(f"aloe's V bias at the {later.sum()} ground-truth states with success possible and 11-60 ticks left: "
      f"{ev[later].mean():+.3f} (11-20: {ev[later & (left <= 20)].mean():+.3f}, 21-60: {ev[later & (left > 20)].mean():+.3f})")

# A convex mix of the two critics' Q estimates, w aloe + (1 - w) progress, over the five committed buffers (no cache
# needed): how far combining them goes.
FIVE = [ROOT / "ope_H10_edac_s0.json", ROOT / "ope_H10_edac_s1.json", RUNS[2], RUNS[3], RUNS[4]]
ma, mp = [], []
for path in FIVE:
    run = json.loads(path.read_text())
    head = headline(run)
    q = np.array([r["q_true"] for r in run["rows"]])
    ma.append(np.array(head["aloe"]["estimates"]["q"]) - q)
    mp.append(np.array(head["progress"]["estimates"]["q"]) - q)
ma, mp = np.concatenate(ma), np.concatenate(mp)
print(f"five buffers, {len(ma)} states: corr(aloe error, progress error) {np.corrcoef(ma, mp)[0, 1]:.2f}; Q RMSE of "
      + ", ".join(f"w={w}: {rms(w * ma + (1 - w) * mp):.3f}" for w in (0, 0.25, 0.5, 0.75, 1)))
