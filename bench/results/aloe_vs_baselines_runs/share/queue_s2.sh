#!/usr/bin/env bash
# Issue 14, session 15. RULE amendment (written 2026-12-01 ~01:50 UTC, after seeing only S's iterations 0-2 on
# seed 16 skilled and iteration 0-1 on seed 17 skilled; no S run had reached iteration 3):
# Second candidate S2 = S with the policy's own chunks weighted by exp(A / beta) up to w_max 20 instead of 1
# (the operator's chunks stay at 1, half the draws): within the policy's half, the critic then ranks successes
# (a fast one over a slow one: A = gamma^T - V(o_0)) instead of only filtering failures, the part where
# part 12 found it adds nothing over the episode's outcome with w_max 1.
# Stage 1 for S2 exactly as for S (seeds 16-17, both operators, 5 iterations, gate: more successes than W2 at
# iteration 5 over the 160 paired episodes). If both S and S2 pass, only the one with more successes there
# (tie: higher mean throughput) goes to stage 2 (seeds 18-20).
# Runs after the S runners of the same seed (waits for them), so S keeps its place in the queue.
set -u
seed=$1
source /work/study/env_wt4.sh
cd /work/wt4
while pgrep -f -- "--dir /work/study/share --seeds $seed " > /dev/null; do sleep 60; done
python bench/aloe_vs_baselines.py run --dir /work/study/share --seeds $seed --operators skilled imperfect \
  --iterations 5 --jobs 1 \
  --methods aloe:advantage_pooling=option,trust_operator=true,w_max=20,sampling=weighted,operator_share=0.5 \
  --extra --eval 40 --rollouts 40
