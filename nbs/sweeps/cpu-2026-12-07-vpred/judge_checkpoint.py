"""Judge a run checkpoint: python judge_checkpoint.py CKPT_DIR KIND ZSNR(0|1) START GUIDANCE... (64 held-out identities,\none pair each, sampling seed 0, DDIM 20 steps) -> checkpoints_judged.jsonl."""
import sys, json, time, torch
from pathlib import Path
from omegaconf import OmegaConf
from diffusers import DDPMScheduler
from anydoor.train import build_model, load_checkpoint
from anydoor.evaluate import heldout_batch, evaluate_batch
from dataclasses import replace
torch.set_num_threads(1)
ck, kind, zsnr, start = Path(sys.argv[1]), sys.argv[2], sys.argv[3] == "1", sys.argv[4]
cfg = OmegaConf.load(ck / "config.yaml")
model = build_model(cfg)
model.noise_scheduler = DDPMScheduler.from_config(model.noise_scheduler.config, prediction_type=kind, rescale_betas_zero_snr=zsnr)
load_checkpoint(ck, model)
model.settings = replace(model.settings, sample_start=start)
model.eval()
batch, gallery = heldout_batch(model, 64, cfg.detail.collage)
for g in map(float, sys.argv[5:]):
    t0 = time.time()
    m, _ = evaluate_batch(model, batch, gallery, seeds=[0], num_inference_steps=20, guidance_scale=g)
    print(json.dumps(dict(ckpt=str(ck), kind=kind, zsnr=zsnr, start=start, guidance=g, s=round(time.time() - t0),
          **{k: round(m[k], 3) for k in ["judge_shape", "judge_texture", "judge_emblem", "judge_identity", "identity_top1",
                                          "psnr_box", "psnr_box_mean_fill", "psnr_background"]})), flush=True)
