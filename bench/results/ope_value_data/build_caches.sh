#!/usr/bin/env bash
# Issue 14, session 19: fresh OPE buffers seeds 3 and 4 (never built before), caches only (buffer, pi, ground truth);
# the script stops each run once its cache is written, before any critic is fitted. From /work/wt8 (main 72ef985).
set -u
source /work/study/env_wt8.sh
cd /work/wt8
for s in 3 4; do
  c=/work/study/vpi/cache_s$s
  [ -f $c/buffer.pkl ] && continue
  nice -n 5 python bench/ope_accuracy.py --horizon 10 --skip-grid --critic-seeds 1 --seed $s --cache $c \
    --out /work/study/vpi/cache_s$s.json > /work/study/vpi/cache_s$s.log 2>&1 &
  pid=$!
  while kill -0 $pid 2>/dev/null; do
    grep -q "ground truth for" /work/study/vpi/cache_s$s.log && sleep 5 && [ -f $c/buffer.pkl ] && kill $pid && break
    sleep 10
  done
  wait $pid 2>/dev/null
  echo "seed $s cache: $(ls $c)"
done
