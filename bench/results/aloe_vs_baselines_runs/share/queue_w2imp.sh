#!/usr/bin/env bash
# Issue 14, session 16. RULE amendment (written 2026-12-01 03:10 UTC, when the S imperfect runs had printed only
# iteration 0; no S imperfect result of iterations 1-5 seen):
# This session's machine is new and the study folders were lost. The initial policies the runs rebuilt are not the
# grid's bit for bit (policy ids 40ac4ac3a8860231 / d2d036c78435ca2e here vs 03ff0354f1834ea6 / 287ba6732bf856f0:
# another CPU, other rounding; the same policy-alone success 0.33 / 0.55), and the imperfect first phases differ
# (seed 16: supervised success 1.00 vs 0.80 in the grid's). So S imperfect is no longer W2's grid run with only
# the split changed. To keep the gate's pairing "same initial policy, same first phase, only the split differs",
# W2 imperfect is rerun here, in this folder (same worktree deff1c9, same settings), and the gate's imperfect half
# pairs S with these reruns; the skilled half stays as measured (S and W2 there both from the grid's caches).
# S2 (queue_s2.sh) is deferred: its gate needs W2 and S on the same caches in all four conditions (six more runs
# here), more than this session has. Runs after the S runner of the same seed.
set -u
seed=$1
source /work/study/env_wt4.sh
cd /work/wt4
while pgrep -f -- "--dir /work/study/share --seeds $seed " > /dev/null; do sleep 60; done
python bench/aloe_vs_baselines.py run --dir /work/study/share --seeds $seed --operators imperfect \
  --iterations 5 --jobs 1 \
  --methods aloe:advantage_pooling=option,trust_operator=true,w_max=1,sampling=weighted \
  --extra --eval 40 --rollouts 40
