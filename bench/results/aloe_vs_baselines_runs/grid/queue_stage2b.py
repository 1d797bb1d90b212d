#!/usr/bin/env python3
"""Issue 14, session 18: stage 2's queue, reordered so that its verdict arrives first.

Written 2026-12-01 08:33 UTC, while seed 18's S imperfect (iteration 5) and Dagger skilled (iteration 1) ran and
before any other stage-2 run had a result. Order only; nothing of the rule (BENCHMARKS part 15, queue_stage2.sh)
changes: the same runs, the same worktree (/work/wt5 = e46a172), the same arguments, the same folder. What changes:
queue_stage2.sh finished all ten runs of a seed before the next seed; stage 2's verdict needs only S, Dagger and AWR
on seeds 18-20, so this queue runs those nine pairs first and the grid's W2 and bc (seeds 18-20) after them:
about six hours of this machine sooner to the verdict. A seed's runs still share its initial policy and first
phases (the caches in the folder); if the folder is lost between sessions, a seed's unfinished runs start on new
caches, as before.

Amended 08:38 UTC (session 18), before this queue had started any run: candidate T joins stage 2 as a sixth
method, from worktree /work/wt6 (= /work/wt5 + main d406f3a, the run path of `operator_share_rule: critic`; with
the rule 'fixed' everything computes as in wt5). T = W2's extraction with the operator's share of the weighted
draws set per iteration by the critic: how often a correction's chunk has a higher advantage than one of the
policy's own chunks over all pairs (0.5 = RLPD's even split, as S; toward 1 = Dagger's set), within 0.05-0.95.
(Amended 08:39 UTC, before any T run: per-chunk advantages, the statistic observed, not the pooled ones;
worktree /work/wt6 rebuilt at main 4eb23ad.) It has no
tuned parameter, so it skips stage 1 and is judged on 18-20 directly. Rule, written before any T run:
  - verdict: the issue's target for T (ahead of Dagger or AWR/progress at iteration 5 in success or throughput,
    paired p < 0.05, in at least one operator condition, significantly behind neither in any), as for S;
  - T vs S paired per operator beside it; T replaces S as the main job's default only if T meets the target
    and S does not, or if T is ahead of S in one operator condition (p < 0.05, success or throughput) and
    behind it in neither.
  Disclosure: T was designed after session 17, from the per-group share of positive advantages in the gate's S
  and W2 runs (seeds 16-17) and in seed 18's two S runs; no Dagger, AWR, W2 or bc result of seeds 18-20 had
  been read. Within a seed T runs after S, Dagger and AWR, before the grid's W2 and bc (S's verdict first).

It keeps at most two offline_loop runs going (runs started by queue_stage2.sh, left running when it was stopped,
count), one `aloe_vs_baselines.py run` per run, and never starts a run of a seed whose initial policy is being made
or of a (seed, operator) another run is in: their caches would be built twice at once. Resumable like the old queue:
finished runs are skipped, a cut run resumes from its .state. Rerun: `setsid nohup python3 queue_stage2b.py >>
queue_stage2b.out 2>&1 < /dev/null &` (in /work/study/grid).
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
WORKTREE = {T: ("/work/wt6", "/work/study/env_wt6.sh")}  # every other method: wt5
OPERATORS = ("skilled", "imperfect")
SLOTS = 2
JOBS = ([(s, m, op) for s in (18, 19, 20) for m in VERDICT for op in OPERATORS]
        + [(s, m, op) for s in (18, 19, 20) for m in (W2, "bc") for op in OPERATORS])


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
    known.update({run_name(op, m, s): {"operator": op, "method": m, "seed": s} for s, m, op in JOBS})
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
        todo = [(s, m, op) for s, m, op in JOBS
                if not complete(run_name(op, m, s)) and failures.get(run_name(op, m, s), 0) < 2]
        if not todo and not procs:
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
