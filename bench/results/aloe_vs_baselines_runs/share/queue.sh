#!/usr/bin/env bash
# Issue 14, session 15. RULE (written 2026-12-01 ~01:18 UTC, before any run of the candidate):
# Why: in the grid's W2 runs (seeds 16-17, committed) the policy's own successful chunks take 69-86 % of the
# weighted draws and the operator's corrections 11-34 %, falling every iteration, while Dagger draws only the
# corrections and climbs to 1.00 with the skilled operator (W2 0.62-0.85).
# Candidate S = W2 + operator_share=0.5 (RLPD's symmetric sampling; the one value from the literature, nothing tuned).
# Worktree /work/wt4 = 4920851 (the grid's pin) + the operator_share commit cherry-picked (deff1c9): W2's code path
# is unchanged, so S differs from the grid's W2 only in the split of the draws.
# Stage 1 (gate, seeds 16 and 17, where the idea was formed): S, skilled and imperfect, 5 iterations, the grid's
# settings and cached initial policies / first phases. S goes to stage 2 only if at iteration 5 it has more
# successes than W2 over the 160 paired episodes (2 seeds x 2 operators x 40), no p-value asked.
# Stage 2 (report): S on seeds 18, 19, 20 (no run of any method had been looked at there when this was written)
# in the grid folder, as a fifth method; judged by the target against Dagger and AWR on 18-20 only,
# paired at iteration 5, and S vs W2 reported beside it. A failed gate is reported in BENCHMARKS as measured.
# Restarted 01:38 UTC with --seeds 16 only (seed 17 has its own runner, queue17.sh); resumes from .state.
set -u
source /work/study/env_wt4.sh
cd /work/wt4
python bench/aloe_vs_baselines.py run --dir /work/study/share --seeds 16 --operators skilled imperfect \
  --iterations 5 --jobs 1 \
  --methods aloe:advantage_pooling=option,trust_operator=true,w_max=1,sampling=weighted,operator_share=0.5 \
  --extra --eval 40 --rollouts 40
