#!/usr/bin/env bash
# Issue 14, session 24: rebuild the study's worktree and folder on a new machine (PLAN_stage3.md, amendment 1).
# /work/wt5 = the stage-2 pin: the grid's pin 4920851 + a763971 (operator_share) + d6dbed2 (chunk_values once),
# the recipe of e46a172 (tag study-stage2-pin, lost with the machine of session 23). Its own colcon build on main's
# venv. The folder /work/study/grid gets the finished runs from git; the archived init_s*.json go aside so the
# rebuilt starts can be compared with them; the same for S2's folders (s2/). Idempotent.
set -euo pipefail
MAIN=/work/main
GRID=/work/study/grid
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [[ ! -d /work/wt5 ]]; then
  git -C "$MAIN" worktree add --detach /work/wt5 4920851
  git -C /work/wt5 -c user.name=study -c user.email=study@localhost cherry-pick a763971 d6dbed2
fi
(cd /work/wt5 && ALOE_VENV="$MAIN/.venv" bash scripts/setup.sh)
mkdir -p /work/study
cat > /work/study/env_wt5.sh <<ENV
export ALOE_VENV=$MAIN/.venv
source /work/wt5/scripts/env.sh
# torch's AVX2 paths, on any x86 machine with AVX2: the initial policies and first phases of the machine that ran
# seeds 18-20 (PLAN_stage3.md, amendment 3), the same on every machine from now on
export ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2
ENV
cat > /work/study/env_wt5_native.sh <<ENV
export ALOE_VENV=$MAIN/.venv
source /work/wt5/scripts/env.sh
# torch's own choice of paths (AVX-512 here): the caches of the grid's first machine (sessions 12-13), which S's
# skilled gate runs used (s2/PLAN_S2.md)
ENV
mkdir -p "$GRID" /work/study/archived_inits
for f in "$HERE"/*__s*.json "$HERE"/*__s*.log "$HERE"/study.json "$HERE"/stage3_pick.txt; do
  [[ -e "$GRID/$(basename "$f")" ]] || cp "$f" "$GRID/"
done
cp -n "$HERE"/init_s*.json "$HERE"/init_s*.log /work/study/archived_inits/
# the starts of the seeds still being run (sessions 26-27: seeds 21-23): each seed's initial policy and its first phases (iteration 0's
# episodes, zstd), so a new machine's runs of these seeds start where this machine's did and pair with them
(cd "$HERE/starts" && sha256sum --quiet -c SHA256SUMS)
mkdir -p "$GRID/first_phase"
for d in "$HERE"/starts/init_s*/; do
  [[ -e "$GRID/$(basename "$d")/config.json" ]] || cp -r "$d" "$GRID/"
done
for f in "$HERE"/starts/*.pkl.zst; do
  out="$GRID/first_phase/$(basename "$f" .zst)"
  [[ -e "$out" ]] || zstd -q -d --long=27 "$f" -o "$out"
done
# S2 (s2/PLAN_S2.md): its finished runs (archived in s2/skilled, s2/imperfect), the gate's verdict, the queue
S2="$HERE/../s2"
for op in skilled imperfect; do
  mkdir -p "/work/study/s2_$op"
  for f in "$S2/$op"/*__s*.json "$S2/$op"/*__s*.log "$S2/$op"/study.json; do
    [[ -e "$f" && ! -e "/work/study/s2_$op/$(basename "$f")" ]] && cp "$f" "/work/study/s2_$op/"
  done
done
mkdir -p /work/study/s2
[[ -e "$S2/gate.txt" && ! -e /work/study/s2/gate.txt ]] && cp "$S2/gate.txt" /work/study/s2/
cp "$S2/queue_s24.py" /work/study/
echo "rebuilt: /work/wt5 ($(git -C /work/wt5 log --oneline -1)), $GRID ($(ls "$GRID" | wc -l) files)"
