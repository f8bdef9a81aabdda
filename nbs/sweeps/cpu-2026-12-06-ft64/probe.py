"""Background and in-box PSNR of fine-tune checkpoints on 16 held-out toy pairs (DDIM 20 steps, guidance 3, seed 0).

    python nbs/sweeps/cpu-2026-12-06-ft64/probe.py OUT.json RUN_DIR:STEP [RUN_DIR:STEP ...]

The same pairs, noise and sampler for every checkpoint, so the rows compare side by side. Checkpoints written
before 2026-12-06 16:00 hold numpy random states as pickles: they are our own files, loaded with trust_pickle.
"""
import json, sys, time
import torch
from omegaconf import OmegaConf
from anydoor.train import build_model, load_checkpoint
from anydoor.evaluate import heldout_batch, masked_psnr
from anydoor.sampling import generate

torch.set_num_threads(1)
out, rows, models = sys.argv[1], [], {}
for spec in sys.argv[2:]:
    run, step = spec.rsplit(":", 1)
    cfg = OmegaConf.load(f"{run}/config.yaml")
    model = build_model(cfg)
    load_checkpoint(f"{run}/checkpoints/step_{int(step):06d}", model, trust_pickle=True)
    model.eval()
    batch, _ = heldout_batch(model, 16, collage=cfg.detail.collage)
    box = batch["box_mask"].float()
    t0 = time.time()
    with torch.no_grad():
        x = generate(model, batch["reference"], batch["hint"], num_inference_steps=20, guidance_scale=3.0,
                     generator=torch.Generator().manual_seed(0))
    rows.append(dict(run=run.rstrip("/").split("/")[-1], step=int(step), image_size=cfg.model.image_size,
                     hint_concat=bool(cfg.model.hint_concat), lr=float(cfg.trainer.lr),
                     detail_lr=float(cfg.trainer.lr * cfg.detail.lr_multiplier),
                     psnr_background=round(masked_psnr(x, batch["target"], 1 - box).mean().item(), 2),
                     psnr_box=round(masked_psnr(x, batch["target"], box).mean().item(), 2),
                     seconds=round(time.time() - t0, 1)))
    print(rows[-1], flush=True)
json.dump(dict(command=" ".join(sys.argv), rows=rows), open(out, "w"), indent=1)
