"""Memorise 16 training samples (the main recipe, one fixed batch) as an ε- or v-predictor, then sample them back.

    python memorise_probe.py 600 epsilon > memorise_epsilon.txt
    python memorise_probe.py 600 v_prediction > memorise_v_prediction.txt
    python memorise_probe.py 600 v_prediction zsnr > memorise_v_zsnr.txt     # + zero terminal SNR, trailing DDIM

Prints the loss every 100 steps (step, loss, seconds), then PSNR of the background and of the box against the
memorised targets for DDIM (20 steps) from noise and from the hint, guidance 1 and 3. Without `zsnr` the DDIM
scheduler built here equals anydoor.sampling.ddim_scheduler (leading spacing, steps offset 1). Measured 2026-12-07
on the 2-core CPU, one torch thread per process, the first two side by side (and beside a third process)."""
import sys, time, torch
from diffusers import DDPMScheduler
from anydoor.config import compose
from anydoor.train import build_model, build_dataset, param_groups
from anydoor.data import collate
from anydoor.evaluate import masked_psnr, _fixed_noise_predictions
from anydoor.sampling import generate
torch.set_num_threads(1)
steps, kind = int(sys.argv[1]), sys.argv[2]; zsnr = len(sys.argv) > 3 and sys.argv[3] == "zsnr"; over = sys.argv[3 + zsnr:]
cfg = compose(["experiment=main", "logger=none"] + over)
torch.manual_seed(0)
model = build_model(cfg); model.train()
model.noise_scheduler = DDPMScheduler.from_config(model.noise_scheduler.config, prediction_type=kind, rescale_betas_zero_snr=zsnr)
from diffusers import DDIMScheduler
mk = lambda: DDIMScheduler.from_config(model.noise_scheduler.config, clip_sample=False, set_alpha_to_one=False, timestep_spacing="trailing" if zsnr else "leading", steps_offset=0 if zsnr else 1)
ds = build_dataset(cfg, model)
batch = collate([ds[i] for i in range(16)])
opt = torch.optim.AdamW(param_groups(model, cfg), lr=cfg.trainer.lr, weight_decay=cfg.trainer.weight_decay)
g = torch.Generator().manual_seed(0)
t0 = time.time()
for s in range(steps):
    b = {k: batch[k] for k in ("reference", "hint", "target", "data_kind")}
    loss = model.loss(b, generator=g)
    loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
    if s % 100 == 0: print(s, round(loss.item(), 4), round(time.time() - t0), flush=True)
model.eval()
box = batch["box_mask"].float()
P = lambda x: "bg %.2f box %.2f" % (masked_psnr(x, batch["target"], 1 - box).mean(), masked_psnr(x, batch["target"], box).mean())
with torch.no_grad():
    for start in ("noise", "hint"):
        for gs in (1.0, 3.0):
            x = generate(model, batch["reference"], batch["hint"], num_inference_steps=20, guidance_scale=gs,
                         generator=torch.Generator().manual_seed(0), sample_start=start, scheduler=mk())
            print(kind, "zsnr" if zsnr else "", "start", start, "guidance", gs, P(x), flush=True)
