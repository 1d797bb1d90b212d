#!/usr/bin/env python3
"""Issue 14, session 23: stage 3, two more report seeds (21, 22), queued behind stage 2's verdict runs.

Written 2026-12-02 01:25 UTC, before any result of seeds 18-20 was compared (PLAN_stage3.md says what was seen).
The issue asks for >= 5 seeds; stage 2 reports on three fresh seeds (18-20). Stage 3 runs the issue's methods on
seeds 21 and 22, both operators, with stage 2's settings, worktrees and folder: the ALOE variant stage 2 picks
(S, unless T replaces it by part 18's rule; named in `stage3_pick.txt` once the verdict is in; its runs wait for
that file), Dagger, AWR (`progress:sampling=weighted`) and bc. Order: stage 2's verdict runs, then bc on 18-20 (a
method the issue names), then seeds 21-22, then the grid's W2 on 18-20 (part 15's "beside it"). Nothing of stage 2's
rule changes; this replaces queue_stage2b.py as the queue (same jobs plus stage 3's, reordered behind the verdict).
Rerun: `setsid nohup python3 queue_stage3.py >> queue_stage3.out 2>&1 < /dev/null &` (in /work/study/grid).
"""

import json
import subprocess
import sys
import time
from pathlib import Path

GRID = Path("/work/study/grid")
WT = ("/work/wt5", "/work/study/env_wt5.sh")
S = "aloe:advantage_pooling=option,trust_operator=true,w_max=1,sampling=weighted,operator_share=0.5"
W2 = "aloe:advantage_pooling=option,trust_operator=true,w_max=1,sampling=weighted"
T = "aloe:advantage_pooling=option,trust_operator=true,w_max=1,sampling=weighted,operator_share_rule=critic"
VERDICT = [S, "dagger", "progress:sampling=weighted", T]
PICK = "stage3_pick"  # stands for the method named in GRID/stage3_pick.txt
WORKTREE = {T: ("/work/wt6", "/work/study/env_wt6.sh")}  # every other method: wt5
OPERATORS = ("skilled", "imperfect")
SLOTS = 2
JOBS = ([(s, m, op) for s in (18, 19, 20) for m in VERDICT for op in OPERATORS]
        + [(s, "bc", op) for s in (18, 19, 20) for op in OPERATORS]
        + [(s, m, op) for s in (21, 22) for m in (PICK, "dagger", "progress:sampling=weighted", "bc")
           for op in OPERATORS]
        + [(s, W2, op) for s in (18, 19, 20) for op in OPERATORS])


def pick() -> str:
    """The ALOE variant stage 2's verdict picked ('' until stage3_pick.txt is written)."""
    try:
        name = (GRID / "stage3_pick.txt").read_text().strip()
    except OSError:
        return ""
    if name not in (S, T):
        raise SystemExit(f"stage3_pick.txt names {name!r}; it must be S or T of stage 2")
    return name


def jobs() -> list[tuple[int, str, str]]:
    """JOBS with the pick resolved; the pick's runs left out while it is unknown."""
    chosen = pick()
    return [(s, chosen if m == PICK else m, op) for s, m, op in JOBS if m != PICK or chosen]


def run_name(op: str, method: str, seed: int) -> str:  # = bench/aloe_vs_baselines.py run_name
    spec = method.replace(':', '__').replace('=', '-').replace(',', '_').replace('+', '__')
    return f"{op}__{spec}__s{seed}"


def complete(name: str) -> bool:
    try:
        return len(json.loads((GRID / f"{name}.json").read_text())["rows"]) >= 6
    except (OSError, ValueError, KeyError):
        return False


def running() -> list[str]:
    """Command lines of the offline_loop runs going on in this folder (any parent)."""
    out = subprocess.run(["pgrep", "-af", "offline_loop.py"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if f"{GRID}/" in line]


def busy(seed: int, op: str, name: str, lines: list[str]) -> str:
    """Why this run cannot start now ('' if it can)."""
    if any(f"--state {GRID}/{name}.state " in ln or f"/{name}.json" in ln for ln in lines):
        return "running"
    same_seed = [ln for ln in lines if f"--seed {seed} " in ln]
    if same_seed and not (GRID / f"init_s{seed}" / "config.json").is_file():
        return "init"  # its initial policy is being made: wait for it rather than open the next seed
    if any(f"--operator {op} " in ln for ln in same_seed):
        return "operator"  # its first phase may be being collected
    return ""


def main() -> int:
    manifest = GRID / "study.json"  # the labels of the summary, written once here so runs started together don't race
    known = json.loads(manifest.read_text())
    for s, m, op in [(s, m, op) for s, m, op in JOBS if m != PICK] + [(s, c, op) for s, m, op in JOBS
                                                                     if m == PICK for c in (S, T)]:
        known[run_name(op, m, s)] = {"operator": op, "method": m, "seed": s}
    manifest.write_text(json.dumps(known, indent=1))
    procs: dict[str, subprocess.Popen] = {}
    failures: dict[str, int] = {}
    while True:
        for name, p in list(procs.items()):
            if p.poll() is not None:
                del procs[name]
                if p.returncode != 0:
                    failures[name] = failures.get(name, 0) + 1
                    print(f"[{time.strftime('%H:%M:%S')}] {name} failed (exit {p.returncode}, "
                          f"{failures[name]} times; see its log)", flush=True)
        todo = [(s, m, op) for s, m, op in jobs()
                if not complete(run_name(op, m, s)) and failures.get(run_name(op, m, s), 0) < 2]
        if not todo and not procs and pick():
            print(f"[{time.strftime('%H:%M:%S')}] stage 2 done; failed twice: {sorted(failures) or 'none'}", flush=True)
            return 0
        lines = running()
        if len(lines) < SLOTS and len(procs) < SLOTS:
            for s, m, op in todo:
                name = run_name(op, m, s)
                why = busy(s, op, name, lines)
                if why == "init":
                    break
                if why:
                    continue
                print(f"[{time.strftime('%H:%M:%S')}] start {name}", flush=True)
                tree, env = WORKTREE.get(m, WT)
                procs[name] = subprocess.Popen(
                    f"source {env} && exec python bench/aloe_vs_baselines.py run --dir {GRID} --seeds {s} "
                    f"--operators {op} --iterations 5 --jobs 1 --methods {m} --extra --eval 40 --rollouts 40",
                    shell=True, executable="/bin/bash", cwd=tree)
                time.sleep(60)  # let it show up in pgrep before the next pick
                break
        time.sleep(30)


if __name__ == "__main__":
    sys.exit(main())
