#!/usr/bin/env bash
# A short ablation sweep at a larger toy scale (64 px), bf16, on one GPU (issue 5; sized for
# ~10 minutes on one H100): W&B offline runs, summaries, the ablation table and plot in OUT.
#   bash benchmarks/gpu_sweep.sh OUT            # on a GPU machine with the project installed
#   bash benchmarks/gpu_sweep.sh OUT --smoke    # the same commands for seconds on a CPU
# Sync afterwards with: wandb sync OUT/*/*/wandb/offline-run-*
set -euo pipefail
OUT=${1:?usage: gpu_sweep.sh OUT [--smoke]}
PY=${PYTHON:-python}
export WANDB_MODE=${WANDB_MODE:-offline} WANDB_SILENT=true HF_HUB_OFFLINE=1
if [ "${2:-}" = "--smoke" ]; then
  SCALE="model.image_size=32 model.reference_size=32 trainer.batch_size=2 trainer.max_steps=2 trainer.mixed_precision=no
         trainer.checkpoint_every=2 trainer.sample_every=1 data.num_workers=0 eval.num_identities=4 eval.seeds=[0]
         eval.num_inference_steps=2"
  EXPERIMENTS=abl_full,abl_id_none; SEEDS=0
else
  SCALE="model.image_size=64 model.reference_size=64 trainer.batch_size=64 trainer.max_steps=400 trainer.lr=2e-4
         trainer.mixed_precision=bf16 trainer.checkpoint_every=200 trainer.sample_every=200 data.num_workers=12
         eval.num_identities=32 eval.num_inference_steps=20 trainer.num_threads=0"
  EXPERIMENTS=abl_full,abl_id_global,abl_id_none,abl_detail_none,abl_timesteps_uniform; SEEDS=0,1
fi
# shellcheck disable=SC2086
$PY -m anydoor.train -m experiment=$EXPERIMENTS seed=$SEEDS model.pretrained=random logger=wandb \
    id.reference_dropout=0.1 $SCALE hydra.sweep.dir="$OUT"
$PY -m anydoor.ablation "$OUT" --out "$OUT/table.md" --plot "$OUT/ablation.png"
