#!/usr/bin/env bash
# Prove the dependency floors that pyproject.toml declares: install exactly those versions in a fresh
# virtual environment and run the shipped model through the CLI and the pipeline.
#   bash benchmarks/floors.sh OUT [DIFFUSERS TRANSFORMERS ACCELERATE]   (defaults: the declared floors)
# Writes OUT/floors.log and OUT/result.txt (the versions installed and whether the shipped model ran).
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: floors.sh OUT [DIFFUSERS TRANSFORMERS ACCELERATE]" >&2; exit 2; }
OUT=$(realpath -m "$1"); ROOT=$(cd "$(dirname "$0")/.." && pwd)
floor() { grep -oE "\"$1>=[0-9.]+\"" "$ROOT/pyproject.toml" | head -1 | sed -E 's/.*>=([0-9.]+)"/\1/'; }
D=${2:-$(floor diffusers)}; T=${3:-$(floor transformers)}; A=${4:-$(floor accelerate)}
mkdir -p "$OUT"; rm -rf "$OUT/venv"
PY=${PYTHON:-python3}
"$PY" -m venv "$OUT/venv"
V="$OUT/venv/bin/python"
{
  "$V" -m pip install -q --upgrade pip
  "$V" -m pip install -q "torch==2.13.0"
  "$V" -m pip install -q "$ROOT" "diffusers==$D" "transformers==$T" "accelerate==$A" "safetensors==$(floor safetensors)"
  "$V" -m pip list 2>/dev/null | grep -iE "^(torch|diffusers|transformers|accelerate|safetensors|huggingface.hub) "
  cd "$OUT"
  "$V" - <<'PY'
import sys
from anydoor.core import sample_object, sample_scene
from anydoor.pipeline import AnyDoorPipeline
from anydoor.cli import shipped_weights
assert "hydra" not in sys.modules and "matplotlib" not in sys.modules, "inference imported training or plotting packages"
gift, mask = sample_object("gift"); sample_scene("coffee").save("coffee.png"); gift.save("gift.png"); mask.save("gift_mask.png")
pipe = AnyDoorPipeline.from_pretrained(shipped_weights()); pipe.set_progress_bar_config(disable=True)
img = pipe(gift, mask, sample_scene("coffee"), box=(120, 40, 220, 140), num_inference_steps=2).images[0]
print("pipeline ok", img.size)
PY
  "$OUT/venv/bin/anydoor-insert" --reference gift.png --reference-mask gift_mask.png --scene coffee.png \
      --box 120,40,220,140 --steps 2 --out "$OUT/insert.png"
} > "$OUT/floors.log" 2>&1 && status=ran || status=FAILED
echo "diffusers==$D transformers==$T accelerate==$A: shipped model $status ($(date -u +%F))" | tee "$OUT/result.txt"
[ "$status" = ran ]
