#!/usr/bin/env bash
# One ablation row on the shipped recipe: experiment=tiny with one group overridden, 1,500 steps, no EMA (as the
# `aligned` run that is the full row), then judged on 64 held-out identities x 3 sampling seeds.
#   bash run_row.sh NAME [hydra overrides...]      e.g.  bash run_row.sh id_none id=none
set -euo pipefail
cd "$(dirname "$0")"
name=$1; shift
export MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=68719476736 MALLOC_TOP_PAD_=1073741824
export WANDB_MODE=offline HF_HUB_OFFLINE=1
py=../../../.venv/bin/python
run=runs/$name
start=$(date +%s)
$py -m anydoor.train experiment=tiny "$@" trainer.max_steps=1500 trainer.ema_decay=0 trainer.checkpoint_every=500 \
    trainer.sample_every=0 eval.enabled=false eval.before=false logger=none name=$name hydra.run.dir=$run \
    > ${name}_train.log 2>&1
trained=$(date +%s)
$py -m anydoor.evaluate $run/model --seeds 0 1 2 --out ${name}1500_judged.json > ${name}_judge.log 2>&1
echo "$name: train $((trained - start)) s, judge $(( $(date +%s) - trained )) s ($(date -u -d @$start +%H:%M:%S)-$(date -u +%H:%M:%S))" >> times.txt
cp $run/.hydra/config.yaml ${name}_config.yaml 2>/dev/null || cp $run/config.yaml ${name}_config.yaml 2>/dev/null || true
cp $run/metrics.jsonl ${name}_metrics.jsonl 2>/dev/null || true
tail -5 ${name}_train.log > ${name}_train_tail.log
