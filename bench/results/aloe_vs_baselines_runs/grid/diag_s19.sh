#!/usr/bin/env bash
# Which settings make S skilled seed 19's iteration-1 policy the old machine's (b65b4d0fc050daac)?
# Each: the run to iteration 1 from the grid's cached first phase, under the AVX2 pin plus what the tag adds.
source /work/study/env_wt5.sh
cd /work/wt5
try() {
  local tag=$1; shift
  env "$@" nice -n 5 python bench/offline_loop.py --seed 19 --operator skilled --load-init /work/study/grid/init_s19 \
    --first-phase-cache /work/study/diag/first_phase --out /work/study/diag/s_$tag.json --method aloe \
    --train advantage_pooling=option --train trust_operator=true --train w_max=1 --train sampling=weighted \
    --train operator_share=0.5 --demos 5 --eval-critic-only --iterations 1 --eval 40 --rollouts 40 > /work/study/diag/s_$tag.log 2>&1
  local id; id=$(python3 -c "import json; print(json.load(open('/work/study/diag/s_$tag.json'))['rows'][1]['policy_id'])")
  echo "$tag: iteration-1 policy $id"
  [[ $id == b65b4d0fc050daac ]] && exit 0
}
try pin
try pin_numpy NPY_DISABLE_CPU_FEATURES="X86_V4 AVX512_ICL AVX512_SPR"
# (not run: stopped for the MKL try) try pin_numpy_lp NPY_DISABLE_CPU_FEATURES="X86_V4 AVX512_ICL AVX512_SPR" LP_NATIVE_VECTOR_WIDTH=256
try pin_cbwr MKL_CBWR=AVX2
# results (session 24): pin, pin_numpy, pin_cbwr -> ca2544160433d451 each; none is the old machine's
