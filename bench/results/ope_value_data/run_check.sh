#!/usr/bin/env bash
# Issue 14, session 19: value_data current, mechanism check on fresh OPE buffers 3 and 4 (rule: RULE.md, written
# 11:38 UTC before either buffer existed). From /work/wt9 (main f500eae, tag study-vcur-ope).
set -u
source /work/study/env_wt9.sh
cd /work/wt9
for s in 3 4; do
  while [ ! -f /work/study/vpi/cache_s$s/buffer.pkl ] || pgrep -f "ope_accuracy.py.*--seed $s --cache" > /dev/null; do sleep 20; done
  nice -n 5 python bench/ope_accuracy.py --horizon 10 --skip-grid --critic-seeds 2 --seed $s \
    --cache /work/study/vpi/cache_s$s --variant vcur=value_data=current \
    --out /work/study/vpi/ope_vcur_s$s.json > /work/study/vpi/ope_vcur_s$s.log 2>&1 &
done
wait
echo done
