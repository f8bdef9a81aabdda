"""Average the trainable weights of several checkpoints of one run (a crude stand-in for an EMA) and judge it.
python avg_judge.py OUT_TAG CKPT_DIR... (64 held-out ids, seed 0, DDIM 20, guidance 3)"""
import sys, json, time, torch
from pathlib import Path
from omegaconf import OmegaConf
from safetensors.torch import load_file
from anydoor.train import build_model, load_checkpoint
from anydoor.evaluate import heldout_batch, evaluate_batch, insertion_grid
torch.set_num_threads(1)
tag, cks = sys.argv[1], [Path(p) for p in sys.argv[2:]]
cfg = OmegaConf.load(cks[-1] / "config.yaml")
if "prediction_type" not in cfg.model: cfg.model.prediction_type = "v_prediction"   # runs from before the setting (train_param.py)
model = build_model(cfg)
load_checkpoint(cks[-1], model)
sds = [load_file(str(c / "trainable.safetensors")) for c in cks]
avg = {k: sum(sd[k].float() for sd in sds) / len(sds) for k in sds[0]}
params = dict(model.named_parameters())
with torch.no_grad():
    for k, v in avg.items(): params[k].copy_(v)
model.eval()
batch, gallery = heldout_batch(model, 64, cfg.detail.collage)
t0 = time.time()
m, crops = evaluate_batch(model, batch, gallery, seeds=[0], num_inference_steps=20, guidance_scale=3.0)
insertion_grid(batch, crops, n=8).save(f"/tmp/s14/{tag}.png")
print(json.dumps(dict(tag=tag, ckpts=[str(c) for c in cks], s=round(time.time() - t0),
      **{k: round(m[k], 3) for k in ["judge_shape", "judge_texture", "judge_emblem", "judge_identity", "identity_top1",
                                      "psnr_box", "psnr_box_mean_fill", "psnr_background"]})), flush=True)
