#!/usr/bin/env bash
# Issue 14, session 20 (exploratory ablation, not a candidate): the ensemble's pessimism in ALOE's TD target and values
# (subset-min of 2, the default) against the plain ensemble mean (mean_std with kappa 0), OPE buffers 2-4.
set -u
source /work/study/env_wt10.sh
cd /work/wt10
for s in 2 3 4; do
  c=/work/study/vpi/cache_s$s; [ $s = 2 ] && c=/work/study/ope/cache_s2
  [ -f /work/study/pess/done_s$s ] && continue
  nice -n 10 python bench/ope_accuracy.py --horizon 10 --skip-grid --critic-seeds 1 --seed $s --cache $c \
    --baselines progress --variant mean=aggregate=mean_std,kappa=0 --out /work/study/pess/ope_H10_mean_s$s.json \
    > /work/study/pess/mean_s$s.log 2>&1 && touch /work/study/pess/done_s$s
  echo "[$(date -u +%H:%M)] seed $s exit $?"
done
