"""Judge a checkpoint of a lever run: python judge.py CKPT_DIR LEVER [GUIDANCE...] (64 held-out ids, seed 0, DDIM 20)."""
import sys, json, time, torch
from pathlib import Path
from omegaconf import OmegaConf
from anydoor.train import build_model, load_checkpoint
from anydoor.evaluate import heldout_batch, evaluate_batch, insertion_grid
torch.set_num_threads(1)
ck, lever = Path(sys.argv[1]), sys.argv[2]
cfg = OmegaConf.load(ck / "config.yaml")
model = build_model(cfg)
if lever == "unfreeze_encoder":
    model.unet.requires_grad_(True)
    model._trainable_names |= {f"unet.{n}" for n, _ in model.unet.named_parameters()}
load_checkpoint(ck, model)
model.eval()
batch, gallery = heldout_batch(model, 64, cfg.detail.collage)
for g in map(float, sys.argv[3:] or ["3"]):
    t0 = time.time()
    m, crops = evaluate_batch(model, batch, gallery, seeds=[0], num_inference_steps=20, guidance_scale=g)
    insertion_grid(batch, crops, n=8).save(f"/tmp/s14/{ck.parent.parent.name}_{ck.name}_g{g}.png")
    print(json.dumps(dict(ckpt=str(ck), lever=lever, start=model.settings.sample_start, guidance=g, s=round(time.time() - t0),
          **{k: round(m[k], 3) for k in ["judge_shape", "judge_texture", "judge_emblem", "judge_identity", "identity_top1",
                                          "psnr_box", "psnr_box_mean_fill", "psnr_background"]})), flush=True)
