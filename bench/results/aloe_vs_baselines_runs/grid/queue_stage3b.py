#!/usr/bin/env python3
"""Issue 14, session 24: stage 3 on a new machine (PLAN_stage3.md, amendment 2): seeds 21 and 22 only.

Written 2026-12-02 05:10 UTC; busy() amended 05:16 UTC (a run was started twice, see there). This machine did not reproduce the old one's start of seed 19 (policy_id
1a7aae5db1251a81, not e1f9a66504c4d4f8; its iteration-0 episodes all equal), so by amendment 1's rule nothing new can
be paired with the runs of seeds 18-20 made there: the rerun of Dagger skilled seed 19, bc on 19-20 and the grid's W2
on 18-20 are dropped. What is left of stage 3 is seeds 21-22 with the pick (S), Dagger, AWR and bc, both operators,
with queue_stage3.py's settings, worktree (/work/wt5, rebuilt by rebuild.sh), slots and order (a seed at a time).
Rerun: `setsid nohup python3 queue_stage3b.py >> queue_stage3.out 2>&1 < /dev/null &` (in /work/study/grid).
"""

import subprocess
import sys

import queue_stage3 as q

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
