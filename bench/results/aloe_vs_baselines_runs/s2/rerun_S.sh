#!/bin/bash
# PLAN_S2.md amendment 1 (09:02 UTC): S imperfect seeds 16-17 rerun beside S2 in s2_imperfect, as queue_s24.py
# starts a run; the seed-21 runs (their PIDs as arguments) are paused meanwhile and continued afterwards.
PAUSED="$*"
kill -STOP $PAUSED
echo "[$(date -u +%T)] paused $PAUSED"
S="aloe:advantage_pooling=option,trust_operator=true,w_max=1,sampling=weighted,operator_share=0.5"
cd /work/wt5
for s in 16 17; do
  bash -c "source /work/study/env_wt5.sh && exec python bench/aloe_vs_baselines.py run --dir /work/study/s2_imperfect \
    --seeds $s --operators imperfect --iterations 5 --jobs 1 --methods $S --extra --eval 40 --rollouts 40" &
  sleep 5
done
wait
echo "[$(date -u +%T)] reruns exited; continuing $PAUSED"
kill -CONT $PAUSED
