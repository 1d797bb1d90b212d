#!/usr/bin/env bash
# Issue 14, session 17. Stage 2 of candidate S (rule of session 15, share/queue.sh: S on seeds 18, 19, 20 in the
# grid folder as a fifth method, judged by the issue's target against Dagger and AWR on 18-20 only, paired at
# iteration 5, S vs W2 reported beside it). Written 2026-12-01 05:55 UTC, before the gate's last two runs (the W2
# imperfect reruns of share/queue_w2imp.sh) had finished; starts only if the gate passes (checked below, the rule's
# count: S more successes than W2 at iteration 5 over the 160 episodes of /work/study/gate).
# Order only (nothing in the rule changes): a seed at a time, so that a seed's runs share its initial policy and first
# phases on one machine (BENCHMARKS part 16); within a seed S, Dagger and AWR first (stage 2's verdict), then the
# grid's W2 and bc. All from worktree /work/wt4 (deff1c9 = the grid's pin 4920851 + the operator_share commit; every
# other method's code path is the pin's: operator_share defaults to 0 and acts only when > 0).
# Amended 06:25 UTC, before the script had started any run (it was waiting for the gate): worktree /work/wt5 =
# deff1c9 + e46a172 (main d6dbed2: chunk_values passes pi's samples through the Q ensemble once, flow sampling
# projects the observation once per call). Speed only: chunk_values' values and the policy's sampled chunks were
# checked bit for bit equal to deff1c9's on this study's data (init_s16, its first phase, n = 64); 0.86x the time.
# Resumable: rerun this script; finished runs are skipped, a cut run resumes from its .state.
set -u
source /work/study/env_wt5.sh
cd /work/wt5
while pgrep -f -- "--dir /work/study/share " > /dev/null; do sleep 60; done
python3 - <<'EOF' || { echo "gate not passed (or incomplete): stage 2 not started"; exit 1; }
import json, sys
W2 = "aloe__advantage_pooling-option_trust_operator-true_w_max-1_sampling-weighted"
tot = {}
for name, m in (("S", W2 + "_operator_share-0.5"), ("W2", W2)):
    tot[name] = 0
    for op in ("skilled", "imperfect"):
        for seed in (16, 17):
            rows = json.load(open(f"/work/study/gate/{op}__{m}__s{seed}.json"))["rows"]
            (r,) = [x for x in rows if x["iteration"] == 5]
            tot[name] += sum(r["eval_success"])
print("gate (successes at iteration 5, 160 episodes):", tot)
sys.exit(0 if tot["S"] > tot["W2"] else 1)
EOF
for seed in 18 19 20; do
  python bench/aloe_vs_baselines.py run --dir /work/study/grid --seeds $seed --operators skilled imperfect \
    --iterations 5 --jobs 2 \
    --methods aloe:advantage_pooling=option,trust_operator=true,w_max=1,sampling=weighted,operator_share=0.5 \
      dagger progress:sampling=weighted aloe:advantage_pooling=option,trust_operator=true,w_max=1,sampling=weighted bc \
    --extra --eval 40 --rollouts 40
done
