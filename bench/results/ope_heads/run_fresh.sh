#!/usr/bin/env bash
# Issue 14, session 21: the default aloe and progress critics on the fresh OPE buffers 5 and 6 (caches built this session,
# never fitted on before), to pool the OPE targets over seven buffers. From /work/wt11 (tag study-heads; default heads).
set -u
source /work/study/env_wt11.sh
cd /work/wt11
for s in 5 6; do
  [ -f /work/study/fresh/done_s$s ] && continue
  nice -n 10 python bench/ope_accuracy.py --horizon 10 --skip-grid --critic-seeds 1 --seed $s --cache /work/study/fresh/cache_s$s \
    --baselines progress --out /work/study/fresh/ope_H10_s$s.json > /work/study/fresh/ope_s$s.log 2>&1 && touch /work/study/fresh/done_s$s
  echo "[$(date -u +%H:%M)] seed $s exit $?"
done
