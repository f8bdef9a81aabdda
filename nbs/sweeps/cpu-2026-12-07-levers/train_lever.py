"""`python -m anydoor.train` with one recipe lever switched on from outside the library (a probe):
    python train_lever.py LEVER VALUE [hydra overrides...]
LEVER: unfreeze_encoder (VALUE 1: the UNet encoder, mid block and time embedding train too)
       box_weight (VALUE k: per-pixel loss weight k inside the target box, 1 outside)
       no_flip (VALUE ignored: no reference augmentation in training (mirror, brightness), so an image pair's box matches its target)
       none"""
import sys, torch
import anydoor.train as T
lever, value = sys.argv[1], float(sys.argv[2])
sys.argv = [sys.argv[0]] + sys.argv[3:]
if lever == "unfreeze_encoder":
    _orig = T.build_model
    def build_model(cfg):
        m = _orig(cfg)
        m.unet.requires_grad_(True)
        m._trainable_names |= {f"unet.{n}" for n, _ in m.unet.named_parameters()}
        print("trainable:", sum(p.numel() for p in m.trainable_parameters()), flush=True)
        return m
    T.build_model = build_model
elif lever == "box_weight":
    _orig_losses = T.training_losses
    def training_losses(model, batch, cfg, generator):
        w = 1.0 + (value - 1.0) * batch["box_mask"].float()
        return _orig_losses(model, dict(batch, loss_weight=w), cfg, generator)
    T.training_losses = training_losses
elif lever == "no_flip":
    import anydoor.collage as C
    _orig_ref = C.prepare_reference
    def prepare_reference(*a, **k):
        if k.get("augment"):                      # no augmentation: neither the mirror nor the brightness jitter
            k["augment"] = False
        return _orig_ref(*a, **k)
    C.prepare_reference = prepare_reference
elif lever != "none": raise SystemExit(f"unknown lever {lever}")
T.main()
