#!/usr/bin/env bash
# Issue 14, session 21: the low-coverage variant (at most 2 failed episodes in the critics' data) on the fresh OPE
# buffers 5 and 6, default aloe and progress critics, from /work/wt11 (tag study-heads). The full-buffer fits repeat
# run_fresh.sh's (a check that they reproduce).
set -u
source /work/study/env_wt11.sh
cd /work/wt11
for s in 5 6; do
  [ -f /work/study/fresh/done_low_s$s ] && continue
  nice -n 10 python bench/ope_accuracy.py --horizon 10 --skip-grid --critic-seeds 1 --seed $s --cache /work/study/fresh/cache_s$s \
    --baselines progress --low-coverage 2 --out /work/study/fresh/ope_H10_low_s$s.json > /work/study/fresh/ope_low_s$s.log 2>&1 \
    && touch /work/study/fresh/done_low_s$s
  echo "[$(date -u +%H:%M)] seed $s exit $?"
done
