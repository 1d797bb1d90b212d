#!/usr/bin/env bash
# Issue 14, session 22, step 1 of PLAN.md: critic steps and tau on the seen OPE buffers 2-4, from /work/wt11 (tag study-heads).
set -u
source /work/study/env_wt11.sh
cd /work/wt11
for s in 2 3 4; do
  c=/work/study/vpi/cache_s$s; [ $s = 2 ] && c=/work/study/ope/cache_s2
  [ -f /work/study/steps/done_s$s ] && continue
  nice -n 10 python bench/ope_accuracy.py --horizon 10 --skip-grid --critic-seeds 1 --seed $s --cache $c \
    --baselines progress --variant steps3=critic_steps=4500 --variant tau3=tau=0.015 \
    --variant steps3=method=progress,critic_steps=4500 \
    --out /work/study/steps/ope_H10_steps_s$s.json > /work/study/steps/steps_s$s.log 2>&1 && touch /work/study/steps/done_s$s
  echo "[$(date -u +%H:%M)] seed $s exit $?"
done
