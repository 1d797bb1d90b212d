#!/usr/bin/env python3
"""Issue 14, session 24: stage 3 on a new machine (PLAN_stage3.md, amendment 2): seeds 21 and 22 only.

Written 2026-12-02 05:10 UTC. This machine did not reproduce the old one's start of seed 19 (policy_id
1a7aae5db1251a81, not e1f9a66504c4d4f8; its iteration-0 episodes all equal), so by amendment 1's rule nothing new can
be paired with the runs of seeds 18-20 made there: the rerun of Dagger skilled seed 19, bc on 19-20 and the grid's W2
on 18-20 are dropped. What is left of stage 3 is seeds 21-22 with the pick (S), Dagger, AWR and bc, both operators,
with queue_stage3.py's settings, worktree (/work/wt5, rebuilt by rebuild.sh), slots and order (a seed at a time).
Rerun: `setsid nohup python3 queue_stage3b.py >> queue_stage3.out 2>&1 < /dev/null &` (in /work/study/grid).
"""

import sys

import queue_stage3 as q

q.JOBS = [(s, m, op) for s in (21, 22) for m in (q.PICK, "dagger", "progress:sampling=weighted", "bc")
          for op in q.OPERATORS]

if __name__ == "__main__":
    sys.exit(q.main())
