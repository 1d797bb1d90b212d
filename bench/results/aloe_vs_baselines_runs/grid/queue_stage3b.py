#!/usr/bin/env python3
"""Issue 14, session 24: stage 3's queue on a new machine (PLAN_stage3.md, amendments 1-3).

queue_stage3.py's jobs, order, settings and slots, run from /work/wt5 (rebuilt by rebuild.sh) under torch's AVX2
paths (env_wt5.sh, amendment 3: the old machine's initial policies bit for bit), with one fix: a run's own launcher
counts as running (below). Amendment 2's scope (seeds 21-22 only, 05:10 UTC) was withdrawn at 05:16 UTC by
amendment 3; if Dagger skilled seed 19 (first in the order) does not reproduce the lost run, set
SEEDS_21_22_ONLY = True (amendment 2's scope again, still under the pin).
Rerun: `setsid nohup python3 queue_stage3b.py >> queue_stage3.out 2>&1 < /dev/null &` (in /work/study/grid).
"""

import subprocess
import sys

import queue_stage3 as q

SEEDS_21_22_ONLY = False
if SEEDS_21_22_ONLY:
    q.JOBS = [(s, m, op) for s in (21, 22) for m in (q.PICK, "dagger", "progress:sampling=weighted", "bc")
              for op in q.OPERATORS]


def launched() -> set[str]:
    """Runs whose `aloe_vs_baselines.py run` process is alive (one run per process, as the queue starts them)."""
    out = subprocess.run(["pgrep", "-af", "aloe_vs_baselines.py run"], capture_output=True, text=True).stdout
    names = set()
    for line in out.splitlines():
        w = line.split()
        if f"{q.GRID}" not in w:
            continue
        try:
            names.add(q.run_name(w[w.index("--operators") + 1], w[w.index("--methods") + 1],
                                 int(w[w.index("--seeds") + 1])))
        except (ValueError, IndexError):
            continue
    return names


_busy = q.busy


def busy(seed: int, op: str, name: str, lines: list[str]) -> str:
    """queue_stage3's busy, and also 'running' while the run's own launcher is alive: queue_stage3 sees only
    offline_loop processes, so a launcher still waiting for its seed's initial policy (its offline_loop not yet
    started) went unseen and the run was started twice (05:09 and 05:11 UTC, seed 21; the first stopped at 05:14)."""
    return "running" if name in launched() else _busy(seed, op, name, lines)


q.busy = busy

if __name__ == "__main__":
    sys.exit(q.main())
