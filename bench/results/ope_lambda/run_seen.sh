#!/usr/bin/env bash
# Issue 14, session 22, step 1 of PLAN.md: lambda-returns on the seen OPE buffers 2-4, from /work/wt12 (tag study-lambda).
set -u
source /work/study/env_wt12.sh
cd /work/wt12
for s in 2 3 4; do
  c=/work/study/vpi/cache_s$s; [ $s = 2 ] && c=/work/study/ope/cache_s2
  [ -f /work/study/lambda/done_s$s ] && continue
  nice -n 10 python bench/ope_accuracy.py --horizon 10 --skip-grid --critic-seeds 1 --seed $s --cache $c \
    --baselines progress --variant lam3=td_lambda=0.3 --variant lam7=td_lambda=0.7 \
    --out /work/study/lambda/ope_H10_lambda_s$s.json > /work/study/lambda/lambda_s$s.log 2>&1 && touch /work/study/lambda/done_s$s
  echo "[$(date -u +%H:%M)] seed $s exit $?"
done
