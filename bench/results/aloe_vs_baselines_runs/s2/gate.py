#!/usr/bin/env python3
"""S2's gate (s2/PLAN_S2.md), written 2026-12-02 06:30 UTC, before any S2 run had finished its third iteration; nothing of them read.

S2 vs S on the tuning seeds 16-17, both operators, iteration 5, the 160 paired episodes: S2 passes if its
throughput over them is higher than S's and its success is not significantly below S's (exact sign test, p < 0.05
with S ahead fails it). A pair counts only if the two runs share their start (iteration-0 policy id and the
policy-alone episodes' outcomes and lengths); the gate is not computed otherwise (the plan then reruns S beside S2).
Beside it, not deciding: S2 vs W2 (session 15's gate: more successes) and S2 vs Dagger where they share a start.

    source scripts/env.sh && python bench/results/aloe_vs_baselines_runs/s2/gate.py [--write]

--write puts the verdict ('passed' / 'failed') in s2/gate.txt here and in /work/study/s2/gate.txt (the queue's).
"""

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))  # bench/

import numpy as np  # noqa: E402

from aloe_vs_baselines import paired_throughput_test, throughput  # noqa: E402
from offline_loop_summary import sign_test  # noqa: E402

RUNS = HERE.parent
STUDY = Path("/work/study")
S2 = "aloe__advantage_pooling-option_trust_operator-true_w_max-20_sampling-weighted_operator_share-0.5"
S = "aloe__advantage_pooling-option_trust_operator-true_w_max-1_sampling-weighted_operator_share-0.5"
W2 = "aloe__advantage_pooling-option_trust_operator-true_w_max-1_sampling-weighted"
SEEDS, OPS, ITERATION = (16, 17), ("skilled", "imperfect"), 5
# where each comparison run of the tuning seeds lies (part 16: the imperfect S and W2 runs on session 16's caches)
# amendment 1 (PLAN_S2.md, 09:02 UTC): the imperfect starts differ from share/'s, so S is rerun beside S2
WHERE = {("S", "skilled"): RUNS / "share", ("S", "imperfect"): STUDY / "s2_imperfect",
         ("W2", "skilled"): RUNS / "grid", ("W2", "imperfect"): RUNS / "share",
         ("Dagger", "skilled"): RUNS / "grid", ("Dagger", "imperfect"): RUNS / "grid"}
SPEC = {"S": S, "W2": W2, "Dagger": "dagger"}


def rows(folder: Path, op: str, spec: str, seed: int) -> list[dict]:
    return json.loads((folder / f"{op}__{spec}__s{seed}.json").read_text())["rows"]


def start(r: list[dict]) -> tuple:
    return r[0]["policy_id"], r[0]["eval_success"], r[0]["eval_steps"]


def compare(other: str, ops=OPS) -> dict | None:
    """S2 against ``other`` over the seeds and operators where both runs exist and share their start."""
    sa, ta, sb, tb, pairs, unpaired = [], [], [], [], [], []
    for op in ops:
        for seed in SEEDS:
            a = rows(STUDY / f"s2_{op}", op, S2, seed)
            b = rows(WHERE[(other, op)], op, SPEC[other], seed)
            if start(a) != start(b):
                unpaired.append(f"{op} s{seed}")
                continue
            pairs.append(f"{op} s{seed}")
            sa += a[ITERATION]["eval_success"]
            ta += a[ITERATION]["eval_steps"]
            sb += b[ITERATION]["eval_success"]
            tb += b[ITERATION]["eval_steps"]
    if not pairs:
        return None
    sa, sb = np.array(sa, bool), np.array(sb, bool)
    wins, losses = int(np.sum(sa & ~sb)), int(np.sum(sb & ~sa))
    diff, p_thr = paired_throughput_test(sa, np.array(ta), sb, np.array(tb))
    return {"other": other, "pairs": pairs, "unpaired": unpaired, "episodes": len(sa),
            "successes": (int(sa.sum()), int(sb.sum())), "wins": wins, "losses": losses,
            "p_success": sign_test(wins, losses),
            "throughput": (throughput(sa, np.array(ta)), throughput(sb, np.array(tb))), "p_throughput": p_thr}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--write", action="store_true", help="write the verdict for the queue")
    a = p.parse_args()
    for op in OPS:
        for seed in SEEDS:
            r = rows(STUDY / f"s2_{op}", op, S2, seed)
            if len(r) <= ITERATION:
                print(f"S2 {op} seed {seed}: {len(r) - 1} of {ITERATION} iterations; the gate waits", file=sys.stderr)
                return 2
    gate = compare("S")
    if gate is None or gate["unpaired"]:
        print(f"S2 does not share its start with S on {gate['unpaired'] if gate else 'any run'}: rerun S beside it "
              "(PLAN_S2.md)", file=sys.stderr)
        return 2
    for c in [gate, compare("W2"), compare("Dagger")]:
        if c is None:
            continue
        print(f"S2 vs {c['other']} ({', '.join(c['pairs'])}; not paired: {', '.join(c['unpaired']) or 'none'}), "
              f"{c['episodes']} episodes: successes {c['successes'][0]} vs {c['successes'][1]} "
              f"({c['wins']} / {c['losses']}, p = {c['p_success']:.3f}); throughput {c['throughput'][0]:.0f} vs "
              f"{c['throughput'][1]:.0f}/h (p = {c['p_throughput']:.3f})")
    behind = gate["losses"] > gate["wins"] and gate["p_success"] < 0.05
    passed = gate["throughput"][0] > gate["throughput"][1] and not behind
    verdict = "passed" if passed else "failed"
    print(f"gate: {verdict} (throughput {'higher' if gate['throughput'][0] > gate['throughput'][1] else 'not higher'}"
          f" than S's; success {'significantly below' if behind else 'not significantly below'} S's)")
    if a.write:
        for path in (HERE / "gate.txt", STUDY / "s2" / "gate.txt"):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(verdict + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
