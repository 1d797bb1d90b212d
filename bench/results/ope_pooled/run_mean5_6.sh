#!/usr/bin/env bash
# Issue 14, session 21: PREDICTION_mean5_6.md's runs, from /work/wt11 (tag study-heads).
set -u
source /work/study/env_wt11.sh
cd /work/wt11
for s in 5 6; do
  [ -f /work/study/fresh/mean/done_s$s ] && continue
  nice -n 10 python bench/ope_accuracy.py --horizon 10 --skip-grid --critic-seeds 1 --seed $s --cache /work/study/fresh/cache_s$s \
    --baselines progress --variant mean=aggregate=mean_std,kappa=0 --out /work/study/fresh/mean/ope_H10_mean_s$s.json \
    > /work/study/fresh/mean/mean_s$s.log 2>&1 && touch /work/study/fresh/mean/done_s$s
  echo "[$(date -u +%H:%M)] seed $s exit $?"
done
