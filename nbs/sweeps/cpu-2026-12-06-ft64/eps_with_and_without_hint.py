"""ε-MSE at t = 100/500/900 on 32 held-out pairs with the hint, without the detail branch, and with another pair's hint.

    python nbs/sweeps/cpu-2026-12-06-ft64/eps_with_and_without_hint.py RUN_DIR CHECKPOINT_DIR
"""
import sys, torch
from omegaconf import OmegaConf
from anydoor.train import build_model, load_checkpoint
from anydoor.evaluate import heldout_batch
torch.set_num_threads(1)
run = sys.argv[1]; ckpt = sys.argv[2] if len(sys.argv) > 2 else None
cfg = OmegaConf.load(f"{run}/config.yaml")
model = build_model(cfg)
if ckpt: load_checkpoint(ckpt, model, trust_pickle=True)
model.eval()
b, _ = heldout_batch(model, 32, collage=cfg.detail.collage)
b = {k: v for k, v in b.items()}
g = torch.Generator().manual_seed(0)
with torch.no_grad():
    z0 = model.encode(b["target"], generator=g)
    tok = model.id_extractor(b["reference"])
    for t in [100, 500, 900]:
        tt = torch.full((z0.shape[0],), t)
        n = torch.randn(z0.shape, generator=g)
        xt = model.noise_scheduler.add_noise(z0, n, tt)
        out = {}
        for name, hint, cs in [("hint", b["hint"], 1.0), ("no-detail", b["hint"], 0.0), ("shuffled", b["hint"].roll(1, 0), 1.0)]:
            p = model.predict_noise(xt, tt, tok, hint, control_scale=cs)
            out[name] = ((p - n) ** 2).mean().item()
        print(t, {k: round(v, 4) for k, v in out.items()})
