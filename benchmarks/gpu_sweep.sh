#!/usr/bin/env bash
# The ablation sweep at GPU toy scale, bf16, on one GPU (issue 5; sized for under 10 minutes on one
# H100): the toy fine-tune recipe (experiment=abl_full, on the shipped toy foundation models) with
# twice the CPU sweep's batch and 2.7x its steps (10.7x its training samples per run), five
# ablation rows x three seeds. The three seeds run as three processes side by side on the one GPU
# (4 data workers each), so that start-up and evaluation of one overlap training of the others;
# they kept an H200 90-98% busy while training (nvidia-smi), and the whole sweep took 300 s there
# (nbs/sweeps/gpu-2026-11-26). Writes W&B offline runs, summaries, the ablation table and plot into OUT.
#   bash benchmarks/gpu_sweep.sh OUT            # on a GPU machine with the project installed
#   bash benchmarks/gpu_sweep.sh OUT --smoke    # the same commands for seconds on a CPU
# Sync afterwards with: wandb sync OUT/*/*/wandb/offline-run-*
set -euo pipefail
OUT=${1:?usage: gpu_sweep.sh OUT [--smoke]}
PY=${PYTHON:-python}
export WANDB_MODE=${WANDB_MODE:-offline} WANDB_SILENT=true HF_HUB_OFFLINE=1
EXPERIMENTS=abl_full,abl_id_global,abl_id_none,abl_detail_none,abl_timesteps_uniform
if [ "${2:-}" = "--smoke" ]; then
  SCALE="trainer.batch_size=2 trainer.max_steps=2 trainer.mixed_precision=no trainer.checkpoint_every=2
         trainer.sample_every=1 data.num_workers=0 eval.num_identities=4 eval.seeds=[0] eval.num_inference_steps=2"
  EXPERIMENTS=abl_full,abl_id_none; SEEDS="0 1"
else
  SCALE="trainer.batch_size=32 trainer.max_steps=400 trainer.mixed_precision=bf16 trainer.checkpoint_every=400
         trainer.sample_every=200 data.num_workers=4 trainer.num_threads=0 eval.pairs_per_identity=2"
  SEEDS="0 1 2"
fi
mkdir -p "$OUT"
start=$(date +%s); pids=()
for seed in $SEEDS; do
  # shellcheck disable=SC2086
  $PY -m anydoor.train -m experiment=$EXPERIMENTS seed=$seed $SCALE hydra.sweep.dir="$OUT" \
      > "$OUT/seed$seed.log" 2>&1 &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
echo "sweep: $(( $(date +%s) - start )) s for experiments $EXPERIMENTS x seeds $SEEDS" | tee "$OUT/time.txt"
if [ $status -ne 0 ]; then tail -n 30 "$OUT"/seed*.log; echo "a sweep process failed (logs: $OUT/seed*.log)"; exit 1; fi
$PY -m anydoor.ablation "$OUT" --reference abl_full --out "$OUT/table.md" --plot "$OUT/ablation.png"
