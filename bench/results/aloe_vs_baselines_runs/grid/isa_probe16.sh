#!/usr/bin/env bash
# Seeds 16-17's initial policies under the AVX2 pin (-> 40ac4ac3a8860231, d2d036c78435ca2e; seed 16 unpinned, the
# three settings unset: 03ff0354f1834ea6): the grid's machine made 03ff0354f1834ea6, session 16's 40ac4ac3a8860231.
source /work/study/env_wt5.sh
cd /work/wt5
for seed in 16 17; do
  log=/work/study/isa/pin_s$seed.log
  nice -n 19 python bench/offline_loop.py --method aloe --operator skilled --iterations 0 --episodes 10 \
    --eval 40 --rollouts 40 --seed $seed --save-init /tmp/pin_s$seed --out /tmp/pin_s$seed.json > $log 2>&1 &
  pid=$!
  while kill -0 $pid 2>/dev/null && ! grep -q "initial policy" $log; do sleep 5; done
  kill $pid 2>/dev/null; wait $pid 2>/dev/null
  echo "seed $seed pinned -> $(grep -ao 'initial policy [0-9a-f]*' $log)"
done
