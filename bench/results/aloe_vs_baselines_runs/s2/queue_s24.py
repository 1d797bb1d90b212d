#!/usr/bin/env python3
"""Issue 14, session 24: one queue for stage 3 (grid/PLAN_stage3.md, amendments 1-3) and candidate S2
(s2/PLAN_S2.md), written 2026-12-02 05:27 UTC; replaces grid/queue_stage3b.py (stage 3's jobs and settings
unchanged; S2's gate inserted after stage 3's first job).

Two runs at a time, one `aloe_vs_baselines.py run` per run, from /work/wt5 (the stage-2 pin, rebuilt by
rebuild.sh) with the numerics each folder's caches were made with: the grid and S2's imperfect gate under torch's
AVX2 paths (env_wt5.sh), S2's skilled gate unpinned (env_wt5_native.sh). A run does not start while another run of
its folder and seed is making the seed's initial policy, or collecting its (seed, operator)'s first phase.
S2's runs on seeds 21-23 and seed 23's wait for the gate's verdict in s2/gate.txt ('passed' or 'failed').
Rerun: `setsid nohup python3 queue_s24.py >> queue_s24.out 2>&1 < /dev/null &` (in /work/study).
"""

import json
import re
import subprocess
import sys
import time
from pathlib import Path

STUDY = Path("/work/study")
GRID = STUDY / "grid"
PINNED, NATIVE = STUDY / "env_wt5.sh", STUDY / "env_wt5_native.sh"
S = "aloe:advantage_pooling=option,trust_operator=true,w_max=1,sampling=weighted,operator_share=0.5"
S2 = "aloe:advantage_pooling=option,trust_operator=true,w_max=20,sampling=weighted,operator_share=0.5"
W2 = "aloe:advantage_pooling=option,trust_operator=true,w_max=1,sampling=weighted"
AWR = "progress:sampling=weighted"
OPS = ("skilled", "imperfect")
GATE = STUDY / "s2" / "gate.txt"
SLOTS = 2
# Amendment 3's check failed (05:48 UTC): the rerun of Dagger skilled seed 19 starts where the lost run did (policy
# e1f9a665, every iteration-0 episode) and then differs (iteration 1: policy 904b4afb, success 0.525 vs 0.55), so
# nothing new is paired with the old machine's runs of seeds 18-20: amendment 2's scope (PLAN_stage3.md, amendment 4)
REPRODUCED = False


def gate() -> str:
    try:
        return GATE.read_text().strip()
    except OSError:
        return ""


def jobs() -> list[tuple[Path, Path, int, str, str]]:
    """(folder, environment, seed, method, operator) in the order of PLAN_S2.md; S2's stage-2 runs once it passed."""
    passed = gate() == "passed"
    out = [(GRID, PINNED, 19, "dagger", "skilled")] if REPRODUCED else []
    out += [(STUDY / "s2_skilled", NATIVE, s, S2, "skilled") for s in (16, 17)]
    out += [(STUDY / "s2_imperfect", PINNED, s, S2, "imperfect") for s in (16, 17)]
    out += [(STUDY / "s2_imperfect", PINNED, s, S, "imperfect") for s in (16, 17)]  # PLAN_S2.md amendment 1
    out += [(GRID, PINNED, s, "bc", op) for s in (19, 20) for op in OPS if REPRODUCED]
    # amendment 5 (PLAN_stage3.md, 08:09 UTC): the target's methods on 21-22 first, S2 there, then bc
    out += [(GRID, PINNED, s, m, op) for s in (21, 22) for m in (S, "dagger", AWR) for op in OPS]
    # amendment 6 (PLAN_stage3.md, 15:48 UTC, session 27): seed 23's Dagger runs before S2 on 21-22, so seed 23's
    # start is made early and kept in git (grid/starts/)
    out += [(GRID, PINNED, 23, "dagger", op) for op in OPS if passed]
    out += [(GRID, PINNED, s, S2, op) for s in (21, 22) for op in OPS if passed]
    # amendment 2 (PLAN_S2.md, 10:20 UTC): S2 passed its gate; seed 23 before bc, so S2's verdict is not behind bc
    out += [(GRID, PINNED, 23, m, op) for m in (S2, S, AWR) for op in OPS if passed]
    out += [(GRID, PINNED, s, "bc", op) for s in (21, 22) for op in OPS]
    out += [(GRID, PINNED, s, W2, op) for s in (18, 19, 20) for op in OPS if REPRODUCED]
    return out


def run_name(op: str, method: str, seed: int) -> str:  # = bench/aloe_vs_baselines.py run_name
    spec = method.replace(':', '__').replace('=', '-').replace(',', '_').replace('+', '__')
    return f"{op}__{spec}__s{seed}"


def complete(folder: Path, name: str) -> bool:
    try:
        return len(json.loads((folder / f"{name}.json").read_text())["rows"]) >= 6
    except (OSError, ValueError, KeyError):
        return False


def processes(pattern: str) -> list[str]:
    return subprocess.run(["pgrep", "-af", pattern], capture_output=True, text=True).stdout.splitlines()


def launched(folder: Path) -> dict[str, tuple[int, str]]:
    """{run: (seed, operator)} of this folder's runs whose launcher (`aloe_vs_baselines.py run`, one run each) is
    alive: a launcher making its seed's initial policy has no offline_loop of its run yet."""
    runs = {}
    for line in processes("aloe_vs_baselines.py run"):
        w = line.split()
        if str(folder) in w:
            try:
                seed, op = int(w[w.index("--seeds") + 1]), w[w.index("--operators") + 1]
                runs[run_name(op, w[w.index("--methods") + 1], seed)] = (seed, op)
            except (ValueError, IndexError):
                pass
    return runs


def first_phase_cached(folder: Path, seed: int, op: str) -> bool:
    """Whether the (seed, operator)'s first phase is in the folder's cache, under the seed's initial policy id as
    its runs' logs name it (amendment 6: the operator's lock is held only until then)."""
    ids = set()
    for log in folder.glob(f"*__s{seed}.log"):
        ids.update(re.findall(r"initial policy ([0-9a-f]{16})", log.read_text(errors="replace")))
    return any((folder / "first_phase" / f"{pid}_{op}_e40_n10_m100_r2_o40.pkl").is_file() for pid in ids)


def busy(folder: Path, seed: int, op: str, name: str) -> str:
    """Why this run cannot start now ('' if it can)."""
    mine = launched(folder)
    if name in mine:
        return "running"
    lines = [ln for ln in processes("offline_loop.py") if f"{folder}/" in ln]
    same_seed = [ln for ln in lines if f"--seed {seed} " in ln]
    if same_seed and not (folder / f"init_s{seed}" / "config.json").is_file():
        return "init"
    if (any(f"--operator {op} " in ln for ln in same_seed) or (seed, op) in mine.values()) \
            and not first_phase_cached(folder, seed, op):
        return "operator"  # one run per (folder, seed, operator) at a time: its first phase may be being collected
    return ""


def main() -> int:
    for folder in {f for f, *_ in jobs()} | {GRID}:
        manifest = folder / "study.json"
        known = json.loads(manifest.read_text()) if manifest.is_file() else {}
        labels = [(f, s, m, op) for f, _, s, m, op in jobs()] + [(GRID, s, m, op) for s in (21, 22, 23)
                                                                   for m in (S2, S, "dagger", AWR) for op in OPS]
        known.update({run_name(op, m, s): {"operator": op, "method": m, "seed": s}
                      for f, s, m, op in labels if f == folder})
        manifest.write_text(json.dumps(known, indent=1))
    procs: dict[str, subprocess.Popen] = {}
    failures: dict[str, int] = {}
    while True:
        for key, p in list(procs.items()):
            if p.poll() is not None:
                del procs[key]
                if p.returncode != 0:
                    failures[key] = failures.get(key, 0) + 1
                    print(f"[{time.strftime('%H:%M:%S')}] {key} failed (exit {p.returncode}, "
                          f"{failures[key]} times; see its log)", flush=True)
        todo = [j for j in jobs() if not complete(j[0], run_name(j[4], j[3], j[2]))
                and failures.get(f"{j[0].name}/{run_name(j[4], j[3], j[2])}", 0) < 2]
        if not todo and not procs and gate():
            print(f"[{time.strftime('%H:%M:%S')}] all done; failed twice: {sorted(failures) or 'none'}", flush=True)
            return 0
        running = [ln for ln in processes("aloe_vs_baselines.py run") if str(STUDY) in ln]
        if len(running) < SLOTS:
            blocked_seeds = set()
            for folder, env, s, m, op in todo:
                name = run_name(op, m, s)
                if (folder, s) in blocked_seeds:
                    continue
                why = busy(folder, s, op, name)
                if why == "init":
                    blocked_seeds.add((folder, s))
                    continue
                if why:
                    continue
                key = f"{folder.name}/{name}"
                print(f"[{time.strftime('%H:%M:%S')}] start {key}", flush=True)
                procs[key] = subprocess.Popen(
                    f"source {env} && exec python bench/aloe_vs_baselines.py run --dir {folder} --seeds {s} "
                    f"--operators {op} --iterations 5 --jobs 1 --methods {m} --extra --eval 40 --rollouts 40",
                    shell=True, executable="/bin/bash", cwd="/work/wt5")
                time.sleep(60)  # let its processes show up before the next pick
                break
        time.sleep(30)


if __name__ == "__main__":
    sys.exit(main())
