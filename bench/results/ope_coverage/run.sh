#!/usr/bin/env bash
# Issue 14, session 20: the pi-coverage check (bench/results/ope_coverage/PREDICTION.md), from /work/wt10 (tag study-picov).
set -u
source /work/study/env_wt10.sh
cd /work/wt10
for s in 2 3 4; do
  c=/work/study/vpi/cache_s$s; [ $s = 2 ] && c=/work/study/ope/cache_s2
  out=/work/study/picov/ope_H10_cov_s$s.json
  [ -f /work/study/picov/done_s$s ] && continue
  nice -n 10 python bench/ope_accuracy.py --horizon 10 --skip-grid --critic-seeds 1 --seed $s --cache $c \
    --baselines progress --pi-coverage 5 0 --out $out > /work/study/picov/cov_s$s.log 2>&1 && touch /work/study/picov/done_s$s
  echo "[$(date -u +%H:%M)] seed $s exit $?"
done
