#!/usr/bin/env bash
# Issue 14, session 21, step 1 of PLAN.md: the head options on the seen OPE buffers 2-4, from /work/wt11 (tag study-heads).
set -u
source /work/study/env_wt11.sh
cd /work/wt11
for s in 2 3 4; do
  c=/work/study/vpi/cache_s$s; [ $s = 2 ] && c=/work/study/ope/cache_s2
  [ -f /work/study/heads/done_s$s ] && continue
  nice -n 10 python bench/ope_accuracy.py --horizon 10 --skip-grid --critic-seeds 1 --seed $s --cache $c \
    --baselines progress --variant ln=critic_norm=layer --variant hl=value_loss=hl_gauss \
    --variant lnhl=critic_norm=layer,value_loss=hl_gauss --variant ln=method=progress,critic_norm=layer \
    --variant hl=method=progress,value_loss=hl_gauss \
    --out /work/study/heads/ope_H10_heads_s$s.json > /work/study/heads/heads_s$s.log 2>&1 && touch /work/study/heads/done_s$s
  echo "[$(date -u +%H:%M)] seed $s exit $?"
done
