"""Where a toy AnyDoor's samples lose the scene: one-step x̂₀ against sampling, and what the sampler starts from.

    python nbs/sweeps/cpu-2026-12-06-erosion/start_probe.py MODEL_FOLDER OUT.json

On 32 held-out pairs (the evaluation's first 32 identities, fixed noise, seed 0), PSNR in dB of the background
(outside the box) and inside the box:
- `x0`: the one-step estimate x̂₀ from the true target noised to t, conditioned on the pair's hint, on another
  pair's hint (`other_hint`), and on a blank white reference (`white_reference`);
- `sampled`: DDIM from pure noise at 20/50 steps and guidance 1/3;
- `start`: DDIM 20 steps, guidance 3, started at its first timestep from pure noise, from the noised target
  (an oracle: it uses the answer) and from the noised collage (what the hint holds: the scene outside the box).
"""
import json, sys, time
import torch
from anydoor.evaluate import load_for_evaluation, heldout_batch, masked_psnr, mean_fill, _fixed_noise_predictions
from anydoor.sampling import generate, ddim_scheduler

torch.set_num_threads(1)
path, out = sys.argv[1], sys.argv[2]
t_start = time.time()
m = load_for_evaluation(path)
batch, _ = heldout_batch(m, 32, collage=m.settings.collage)
box = batch["box_mask"].float()
psnr = lambda x: dict(background=round(masked_psnr(x, batch["target"], 1 - box).mean().item(), 2),
                      box=round(masked_psnr(x, batch["target"], box).mean().item(), 2))
rec = dict(model=path, collage=m.settings.collage, num_pairs=32, x0={}, sampled={}, start={},
           box_mean_fill=psnr(mean_fill(batch["target"], box))["box"])
abar = m.noise_scheduler.alphas_cumprod
with torch.no_grad():
    conds = dict(hint=batch, other_hint=dict(batch, hint=batch["hint"].roll(1, 0)),
                 white_reference=dict(batch, reference=torch.ones_like(batch["reference"])))
    for name, b in conds.items():
        rec["x0"][name] = {}
        for t, z0, noise, x_t, eps in _fixed_noise_predictions(m, b, (50, 200, 400, 600, 800, 950)):
            x0 = (x_t - (1 - abar[t]).sqrt() * eps) / abar[t].sqrt()
            rec["x0"][name][t] = psnr(m.decode(x0).clamp(-1, 1))
    gen = lambda steps, g, lat=None: generate(m, batch["reference"], batch["hint"], num_inference_steps=steps,
                                              guidance_scale=g, latents=lat, generator=torch.Generator().manual_seed(0),
                                              sample_start="noise")
    for steps, g in [(20, 3.0), (20, 1.0), (50, 3.0)]:
        rec["sampled"][f"{steps} steps, guidance {g}"] = psnr(gen(steps, g))
    sch = ddim_scheduler(m.noise_scheduler); sch.set_timesteps(20); t0 = int(sch.timesteps[0])
    a = abar[t0]
    noise = torch.randn(32, m.latent_channels, m.latent_size, m.latent_size, generator=torch.Generator().manual_seed(0))
    starts = dict(noise=noise, noised_target=a.sqrt() * m.encode(batch["target"]) + (1 - a).sqrt() * noise,
                  noised_collage=a.sqrt() * m.encode(batch["hint"][:, :3]) + (1 - a).sqrt() * noise)
    rec["start_timestep"] = t0
    for k, lat in starts.items():
        rec["start"][k] = psnr(gen(20, 3.0, lat))
rec["seconds"] = round(time.time() - t_start, 1)
json.dump(rec, open(out, "w"), indent=1)
print(json.dumps(rec, indent=1))
