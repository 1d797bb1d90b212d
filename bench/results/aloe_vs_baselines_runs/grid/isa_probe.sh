#!/usr/bin/env bash
# Which numeric settings make this machine's seed-19 initial policy the old machine's (e1f9a66504c4d4f8)?
# Each probe: offline_loop's init of seed 19 until it prints its policy id, then stopped.
source /work/study/env_wt5.sh
cd /work/wt5
probe() {
  local tag=$1; shift
  rm -rf /tmp/probe_$tag; 
  env "$@" nice -n 19 python bench/offline_loop.py --method aloe --operator skilled --iterations 0 --episodes 10 \
    --eval 40 --rollouts 40 --seed 19 --save-init /tmp/probe_$tag --out /tmp/probe_$tag.json > /work/study/isa/$tag.log 2>&1 &
  local pid=$!
  while kill -0 $pid 2>/dev/null && ! grep -q "initial policy" /work/study/isa/$tag.log; do sleep 5; done
  kill $pid 2>/dev/null; wait $pid 2>/dev/null
  echo "$tag $* -> $(grep -o 'initial policy [0-9a-f]*' /work/study/isa/$tag.log)"
}
probe avx2 ATEN_CPU_CAPABILITY=avx2
probe avx2all ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2




