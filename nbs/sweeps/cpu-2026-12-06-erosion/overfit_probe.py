"""Memorise 16 training samples (the main recipe, one fixed batch, 300 AdamW steps), then sample them back.

    python nbs/sweeps/cpu-2026-12-06-erosion/overfit_probe.py 300 > overfit_probe.txt
    python nbs/sweeps/cpu-2026-12-06-erosion/overfit_probe.py 300 1000 > overfit_probe_weighted_1000.txt

If sampling reproduced what training fitted, the background of these very samples would come back far above
the held-out ~15 dB. It does not: one-step x̂₀ from the noised target is 25-33 dB at t = 800-400, but DDIM from pure
noise gives 15.5 dB and even from the noised target (an oracle start) only 21 dB. With a second argument WMAX > 0
each sample's ε-MSE is weighted by min(1/ᾱ_t, WMAX): ε-prediction with v-prediction's weighting, which counts the
error of x̂₀ at high t about 200x more than plain ε-MSE; WMAX = 0 (the default) is plain ε-MSE, the same draws.
Measured 2026-12-06, 2-core CPU, one torch thread, beside a training run."""
import sys, time, torch
from anydoor.config import compose
from anydoor.train import build_model, build_dataset, param_groups
from anydoor.data import collate
from anydoor.evaluate import masked_psnr
from anydoor.sampling import generate
torch.set_num_threads(1)
steps = int(sys.argv[1]); WMAX = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0; over = sys.argv[3:]
cfg = compose(["experiment=main", "logger=none"] + over)
torch.manual_seed(0)
model = build_model(cfg); model.train()
ds = build_dataset(cfg, model)
batch = collate([ds[i] for i in range(16)])
opt = torch.optim.AdamW(param_groups(model, cfg), lr=cfg.trainer.lr, weight_decay=cfg.trainer.weight_decay)
g = torch.Generator().manual_seed(0)
t0 = time.time()
for s in range(steps):
    b = {k: batch[k] for k in ("reference", "hint", "target", "data_kind")}
    b["timesteps"] = model.sample_timesteps(b["data_kind"], generator=g)
    per = model.loss(b, reduction="none", generator=g)
    ab = model.noise_scheduler.alphas_cumprod[b["timesteps"]]
    w = (1 / ab).clamp(max=WMAX) if WMAX > 0 else torch.ones_like(ab)
    loss = (w * per).sum() / w.sum()
    loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
    if s % 50 == 0: print(s, round(loss.item(), 4), round(time.time() - t0), flush=True)
model.eval()
box = batch["box_mask"].float()
with torch.no_grad():
    for gs in (1.0, 3.0):
        x = generate(model, batch["reference"], batch["hint"], num_inference_steps=20, guidance_scale=gs, generator=torch.Generator().manual_seed(0), sample_start="noise")
        print("guidance", gs, "bg %.2f box %.2f" % (masked_psnr(x, batch["target"], 1 - box).mean(), masked_psnr(x, batch["target"], box).mean()), flush=True)
from anydoor.sampling import ddim_scheduler
from anydoor.evaluate import _fixed_noise_predictions
abar = model.noise_scheduler.alphas_cumprod
P = lambda x: "bg %.2f box %.2f" % (masked_psnr(x, batch["target"], 1 - box).mean(), masked_psnr(x, batch["target"], box).mean())
with torch.no_grad():
    for t, z0, noise, x_t, eps in _fixed_noise_predictions(model, batch, (950, 800, 600, 400)):
        x0 = (x_t - (1 - abar[t]).sqrt() * eps) / abar[t].sqrt()
        print("x0 one-step t", t, P(model.decode(x0).clamp(-1, 1)))
    z = model.encode(batch["target"]); zc = model.encode(batch["hint"][:, :3])
    noise = torch.randn(z.shape, generator=torch.Generator().manual_seed(0))
    for steps in (20, 50):
        sch = ddim_scheduler(model.noise_scheduler); sch.set_timesteps(steps); t0_ = int(sch.timesteps[0]); a = abar[t0_]
        for gs in (1.0, 3.0):
            for name, lat in (("oracle", a.sqrt() * z + (1 - a).sqrt() * noise), ("collage", a.sqrt() * zc + (1 - a).sqrt() * noise)):
                x = generate(model, batch["reference"], batch["hint"], num_inference_steps=steps, guidance_scale=gs, latents=lat, sample_start="noise")
                print(steps, "steps g", gs, name, "start:", P(x), flush=True)
