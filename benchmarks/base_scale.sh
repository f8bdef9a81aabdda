#!/usr/bin/env bash
# The toy base model at latent scale 1.0 and 2.29, trained side by side, then fine-tuned (issue 5;
# about 6 minutes on one H200). Both arms run the command in anydoor/weights/pretrain_log.json (the
# shipped run's settings, its step counts fixed) with only `--latent-scale` changed, 6 render workers
# each and a wall-clock cap of CAP seconds on the base (default 250); as soon as an arm's base is
# saved, the README's main job (experiment=main) fine-tunes it with two seeds, evaluated on 32
# held-out pairs x 3 sampling seeds. Prints and writes OUT/table.md; the bases are OUT/base-*.
# These commands ran on a lent H200 on 2026-11-26 (from a probe script, 3,000 base steps): their 2.29
# arm is the shipped toy-sd, their results nbs/sweeps/gpu-2026-11-26-base/.
#   bash benchmarks/base_scale.sh OUT            # on a GPU machine with the project installed
#   bash benchmarks/base_scale.sh OUT --smoke    # the same commands for seconds on a CPU
set -euo pipefail
OUT=${1:?usage: base_scale.sh OUT [--smoke]}
PY=${PYTHON:-python}
CAP=${CAP:-250}
export WANDB_MODE=${WANDB_MODE:-offline} WANDB_SILENT=true HF_HUB_OFFLINE=1
if [ "${2:-}" = "--smoke" ]; then
  SMOKE=1; SEEDS="0"
  FT="trainer.batch_size=2 trainer.max_steps=2 trainer.checkpoint_every=2 trainer.sample_every=0
      data.num_workers=0 eval.num_identities=4 eval.seeds=[0] eval.num_inference_steps=2"
else
  # two base trainings and four fine-tunes share the GPU and 16 cores: 2 threads and 2 data workers each
  SMOKE=0; SEEDS="0 1"
  FT="trainer.num_threads=2 data.num_workers=2 eval.pairs_per_identity=2"
fi
mkdir -p "$OUT"
start=$(date +%s)
arm() {  # SCALE: pretrain a base at this latent scale, then fine-tune it with each seed
  local scale=$1 pre pids=() seed
  # the shipped run's command with the scale, the output folder, the workers, the cap and the label changed
  mapfile -d '' pre < <($PY - "$OUT/base-$scale" "$scale" "$CAP" "$SMOKE" <<'PYEOF'
import json, sys
from pathlib import Path
from dataclasses import replace
from anydoor.pretrain import PretrainConfig, config_to_argv, toy_foundation_paths
out, scale, cap, smoke = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4] == "1"
log = json.loads((Path(toy_foundation_paths(None)[0]).parent / "pretrain_log.json").read_text())
cfg = replace(PretrainConfig(**log["config"]), out=out, latent_scale=scale, workers=6,
              encoder_steps=log["encoder"]["steps"], base_steps=log["base"]["steps"], encoder_max_s=0, base_max_s=cap,
              label=f"base_scale.sh arm {scale}: the shipped command at latent scale {scale}")
if smoke:
    cfg = replace(cfg, device="cpu", precision="fp32", encoder_steps=2, base_steps=2, identities=16, views=2,
                  pool_size=16, val_size=8, queries=1, sample_steps=2, batch_size=4, encoder_batch_size=8, workers=0)
sys.stdout.write("\0".join(config_to_argv(cfg)) + "\0")
PYEOF
  )
  $PY -m anydoor.pretrain "${pre[@]}" > "$OUT/pretrain-$scale.log" 2>&1 || { tail -n 30 "$OUT/pretrain-$scale.log"; return 1; }
  echo "base $scale ready after $(( $(date +%s) - start )) s" | tee -a "$OUT/time.txt"
  for seed in $SEEDS; do
    # shellcheck disable=SC2086
    $PY -m anydoor.train experiment=main logger=none model.pretrained="$OUT/base-$scale" seed="$seed" \
        hydra.run.dir="$OUT/main-$scale/seed$seed" $FT > "$OUT/main-$scale-seed$seed.log" 2>&1 &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid" || { tail -n 30 "$OUT"/main-"$scale"-seed*.log; return 1; }; done
}
arm 1.0 & a=$!
arm 2.29 & b=$!
status=0; wait $a || status=1; wait $b || status=1
echo "base_scale: $(( $(date +%s) - start )) s in all" | tee -a "$OUT/time.txt"
if [ $status -ne 0 ]; then echo "an arm failed (logs: $OUT/*.log)"; exit 1; fi
# one row per arm, mean ± 95% interval over its fine-tune seeds (anydoor.ablation's table)
$PY - "$OUT" <<'PYEOF' | tee "$OUT/table.md"
import json, sys
from pathlib import Path
from anydoor.ablation import ablation_table, collect
out = Path(sys.argv[1])
rows = collect(out)                                   # OUT/main-<scale>/seed<n>/summary.json
for r in rows:
    scale = Path(r["path"]).parent.name[len("main-"):]
    steps = json.loads((out / f"base-{scale}" / "pretrain_log.json").read_text())["base"]["steps"]
    r["arm"] = f"{scale} ({steps} base steps)"
print(ablation_table(rows, ("identity_top1", "before_identity_top1", "psnr_box", "before_psnr_box", "psnr_background",
                            "id_gap"), by="arm"))
r = rows[0]
print(f"\nchance {r['identity_chance']:.4f}; {r['num_pairs']} held-out pairs x {r['num_seeds']} sampling seeds")
PYEOF
