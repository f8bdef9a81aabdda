"""Sampler settings of a saved AnyDoor on validation pairs: pair 1 of each held-out identity (the record uses pair 0).
    SEEDS=0,1 python sampler_validation.py MODEL_DIR 3x20 2x20 ... (guidance x DDIM steps)"""
import sys, json, time, torch
from anydoor.evaluate import load_for_evaluation, heldout_batch, evaluate_batch
torch.set_num_threads(1)
path = sys.argv[1]
model = load_for_evaluation(path)
batch, gallery = heldout_batch(model, 64, model.settings.collage, pairs_per_identity=2)
val = {k: (v[64:] if hasattr(v, "__len__") and not isinstance(v, (str, dict)) and len(v) == 128 else v) for k, v in batch.items()}
for spec in sys.argv[2:]:
    g, n = spec.split("x"); g, n = float(g), int(n)
    t0 = time.time()
    m, _ = evaluate_batch(model, val, gallery, seeds=[int(s) for s in __import__("os").environ.get("SEEDS", "0").split(",")], num_inference_steps=n, guidance_scale=g)
    print(json.dumps(dict(path=path, guidance=g, steps=n, s=round(time.time() - t0),
          **{k: round(m[k], 3) for k in ["judge_shape", "judge_texture", "judge_emblem", "judge_identity", "identity_top1",
                                          "psnr_box", "psnr_box_mean_fill", "psnr_background", "ssim_box"]})), flush=True)
