"""Session 21 (issue 14): the head options' calibration, pooled over OPE buffers 2-4 (PLAN.md's motivation: every
critic's Q at pi's unexecuted chunks regresses to the mean). Per critic: RMSE and slope (estimate on truth) of Q at pi's
sampled chunk, of V, and the advantage's RMSE. Usage: python slopes.py (reads the JSONs beside it)."""
import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
runs = [json.loads((HERE / f"ope_H10_heads_s{s}.json").read_text()) for s in (2, 3, 4)]
labels = [r["method"] for r in runs[0]["runs"]]
print("| critic | Q at pi's chunk: RMSE (slope) | V: RMSE (slope) | advantage RMSE |\n|---|---|---|---|")
for label in labels:
    t = {k: [] for k in ("q_pi", "v", "a")}
    e = {k: [] for k in ("q_pi", "v", "a")}
    for run in runs:
        est = next(r for r in run["runs"] if r["method"] == label)["estimates"]
        for row, qp, v, a in zip(run["rows"], est["q_pi"], est["v"], est["advantage"]):
            t["q_pi"].append(row["q_pi_true"]); e["q_pi"].append(qp)
            t["v"].append(row["v_true"]); e["v"].append(v)
            t["a"].append(row["q_true"] - row["v_true"]); e["a"].append(a)
    rmse = {k: float(np.sqrt(np.mean((np.array(e[k]) - np.array(t[k])) ** 2))) for k in t}
    slope = {k: float(np.polyfit(t[k], e[k], 1)[0]) for k in t}
    print(f"| {label} | {rmse['q_pi']:.3f} ({slope['q_pi']:.2f}) | {rmse['v']:.3f} ({slope['v']:.2f}) | {rmse['a']:.3f} |")
