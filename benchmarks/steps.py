"""The training steps the benchmarks compare, on CPU (tiny preset) or a GPU (SD 2.1 sizes).

Every step is `forward()` -> loss, then backward, gradient clipping (max norm 1.0, as
anydoor.train and diffusers' train_controlnet.py do) and AdamW. Three kinds share one AnyDoor's
modules, so their sizes are identical by construction:

- `anydoor`: `AnyDoor.loss` — the frozen UNet encoder and middle block run without autograd
  (`settings.detach_encoder_context=True`), trainable: detail extractor, UNet decoder, ID projector.
- `controlnet` (the peer of figure 1): diffusers' `examples/controlnet/train_controlnet.py` step —
  a standard `ControlNetModel.from_unet(unet)` (sees the noisy latent, 4-channel hint, same hint
  embedding widths) is the only trainable module; the UNet and the condition encoder (here the same
  DINOv2-style ID extractor standing in for CLIP's text encoder) are frozen; the UNet is called as
  `unet(x_t, t, encoder_hidden_states=..., down_block_additional_residuals=...,
  mid_block_additional_residual=...)`.
- `naive` (the peer of figure 2): what a straightforward diffusers port of AnyDoor does — the same
  trainable set and `requires_grad` flags as `anydoor` (frozen modules `requires_grad_(False)`, as
  train_controlnet.py does), but the UNet is called through its own `forward` with the detail
  residuals. Because the ID tokens that every cross-attention reads come out of the trainable
  projector, autograd records the frozen encoder and middle block and the backward pass runs
  through them (input gradients only). Mathematically this is `detach_encoder_context=False`.
- `naive_allgrad`: a cruder port that freezes only by leaving parameters out of the optimizer:
  `requires_grad` stays on for the UNet encoder/middle block/time embedding and the DINOv2
  encoder, so their weight gradients are also computed (and thrown away).
"""
from __future__ import annotations
import time
from contextlib import contextmanager, nullcontext

import torch
import torch.nn.functional as F


def make_batch(model, batch_size: int, seed: int = 0, device=None) -> dict:
    "A random training batch with the model's sizes (values in the documented ranges)."
    g = torch.Generator().manual_seed(seed)
    S, R, B = model.image_size, model.reference_size, batch_size
    b = dict(reference=torch.rand(B, 3, R, R, generator=g), hint=torch.rand(B, 4, S, S, generator=g) * 2 - 1,
             target=torch.rand(B, 3, S, S, generator=g) * 2 - 1, data_kind=torch.arange(B) % 3)
    dev = device if device is not None else model.device
    return {k: v.to(dev) for k, v in b.items()}


@contextmanager
def requires_grad(params, flag: bool):
    "Temporarily set `requires_grad` on `params`."
    params = [p for p in params if p.requires_grad != flag]
    for p in params: p.requires_grad_(flag)
    try: yield
    finally:
        for p in params: p.requires_grad_(not flag)


def _sync(device):
    if torch.device(device).type == "cuda": torch.cuda.synchronize()


def clock(device):
    "A timer for work on `device`: CPU seconds of this process on the CPU, synchronised wall seconds on a GPU."
    if torch.device(device).type == "cpu": return time.process_time
    return lambda: (_sync(device), time.perf_counter())[1]


class TrainStep:
    "One optimisation step: `forward()` -> loss, backward, clip, AdamW; `parts` name module groups for timing."
    def __init__(self, name, forward, params, optimizer, device, autocast_dtype=None, grad_context=nullcontext,
                 zero_all=None, parts=None):
        self.name, self.forward, self.params, self.optimizer = name, forward, list(params), optimizer
        self.device, self.autocast_dtype, self.grad_context = torch.device(device), autocast_dtype, grad_context
        self.zero_all, self.parts = zero_all, parts or {}

    def _autocast(self):
        if self.autocast_dtype is None: return nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def __call__(self, timer: dict | None = None):
        "Run one step; with `timer` (a dict), add the seconds of forward / backward / optimizer to it."
        now = clock(self.device) if timer is not None else (lambda: 0.0)
        with self.grad_context():
            t0 = now()
            with self._autocast():
                loss = self.forward()
            t1 = now()
            loss.backward()
            t2 = now()
            torch.nn.utils.clip_grad_norm_(self.params, 1.0)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            if self.zero_all is not None: self.zero_all.zero_grad(set_to_none=True)
            t3 = now()
        if timer is not None:
            for k, v in (("forward", t1 - t0), ("backward", t2 - t1), ("optimizer", t3 - t2)):
                timer[k] = timer.get(k, 0.0) + v
        return loss


def unet_parts(unet) -> dict:
    "The UNet's modules as 'UNet encoder' (time embedding, conv_in, down blocks, mid) and 'UNet decoder'."
    enc = [unet.conv_in, unet.time_embedding, *unet.down_blocks] + ([unet.mid_block] if unet.mid_block is not None else [])
    dec = [*unet.up_blocks, unet.conv_out] + ([unet.conv_norm_out] if unet.conv_norm_out is not None else [])
    return {"UNet encoder": enc, "UNet decoder": dec}


def anydoor_step(model, batch, optimizer, autocast_dtype=None) -> TrainStep:
    "AnyDoor's own training step: `model.loss` (SPEC §6 freezing, encoder without autograd)."
    parts = {"ID encoder": [model.id_extractor], "detail branch": [model.detail], **unet_parts(model.unet)}
    return TrainStep("anydoor", lambda: model.loss(batch), model.trainable_parameters(), optimizer,
                     model.device, autocast_dtype, parts=parts)


def _noisy(model, batch):
    "The noise, timesteps and noisy latents of a training step (as `AnyDoor.loss` draws them)."
    with torch.no_grad():
        z0 = model.encode(batch["target"]).to(model.dtype)
    t = model.sample_timesteps(batch["data_kind"].cpu()).to(model.device)
    noise = torch.randn_like(z0)
    return model.noise_scheduler.add_noise(z0, noise, t), t, noise


def naive_step(model, batch, optimizer, autocast_dtype=None, allgrad: bool = False) -> TrainStep:
    "A straightforward diffusers port of AnyDoor's step (see the module docstring)."
    def forward():
        x_t, t, noise = _noisy(model, batch)
        id_tokens = model.id_extractor(batch["reference"])                          # (B, T, D)
        down, mid = model.detail(x_t, t, id_tokens, batch["hint"])
        pred = model.unet(x_t, t, encoder_hidden_states=id_tokens, down_block_additional_residuals=down,
                          mid_block_additional_residual=mid, return_dict=False)[0]
        return F.mse_loss(pred.float(), noise.float())
    frozen = [p for m in (model.unet, model.id_extractor) for p in m.parameters() if not p.requires_grad]
    ctx = (lambda: requires_grad(frozen, True)) if allgrad else nullcontext
    parts = {"ID encoder": [model.id_extractor], "detail branch": [model.detail], **unet_parts(model.unet)}
    return TrainStep("naive_allgrad" if allgrad else "naive", forward, model.trainable_parameters(), optimizer,
                     model.device, autocast_dtype, grad_context=ctx, zero_all=model if allgrad else None, parts=parts)


def controlnet_peer(model, conditioning_embedding_out_channels=None):
    "A standard diffusers ControlNetModel copied from `model.unet`, 4-channel hint, AnyDoor's hint-embedding widths."
    from diffusers import ControlNetModel
    widths = conditioning_embedding_out_channels or tuple(model.detail.config.conditioning_embedding_out_channels)
    with torch.device(model.device):                       # initialise on the model's device (fast on a GPU)
        cn = ControlNetModel.from_unet(model.unet, conditioning_channels=4, conditioning_embedding_out_channels=widths)
    return cn.to(model.device, model.dtype).train().requires_grad_(True)


def controlnet_step(model, batch, controlnet, optimizer, autocast_dtype=None) -> TrainStep:
    "diffusers' train_controlnet.py step on AnyDoor's UNet and condition encoder, both frozen."
    unet, encoder = model.unet, model.id_extractor
    trainable_here = [p for m in (unet, encoder) for p in m.parameters() if p.requires_grad]
    def forward():
        x_t, t, noise = _noisy(model, batch)
        ehs = encoder(batch["reference"])          # frozen condition encoder (train_controlnet: text_encoder)
        down, mid = controlnet(x_t, t, encoder_hidden_states=ehs, controlnet_cond=batch["hint"], return_dict=False)
        pred = unet(x_t, t, encoder_hidden_states=ehs, down_block_additional_residuals=list(down),
                    mid_block_additional_residual=mid, return_dict=False)[0]
        return F.mse_loss(pred.float(), noise.float())
    parts = {"ID encoder": [encoder], "detail branch": [controlnet], **unet_parts(unet)}
    return TrainStep("controlnet", forward, controlnet.parameters(), optimizer, model.device, autocast_dtype,
                     grad_context=lambda: requires_grad(trainable_here, False), parts=parts)


@contextmanager
def part_timer(parts: dict, device, acc: dict):
    "Add the forward seconds of each named module group to `acc` (hooks; groups must not nest)."
    handles, start, now = [], {}, clock(device)
    def pre(mod, *_):
        start[id(mod)] = now()
    def post(name):
        def hook(mod, *_):
            acc[name] = acc.get(name, 0.0) + now() - start.pop(id(mod))
        return hook
    for name, mods in parts.items():
        for m in mods:
            if m is None: continue
            handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post(name))]
    try: yield acc
    finally:
        for h in handles: h.remove()


def part_shares(step: TrainStep, repeats: int = 3) -> dict:
    "Seconds per step (CPU seconds on the CPU) of each part: module forwards, backward, optimizer, the rest; and shares."
    acc, phases = {}, {}
    with part_timer(step.parts, step.device, acc):
        for _ in range(repeats): step(timer=phases)
    acc = {k: v / repeats for k, v in acc.items()}
    phases = {k: v / repeats for k, v in phases.items()}
    rows = dict(acc)
    rows["other forward (noise, checks, loss)"] = max(phases["forward"] - sum(acc.values()), 0.0)
    rows["backward"], rows["optimizer (clip + AdamW)"] = phases["backward"], phases["optimizer"]
    total = sum(rows.values())
    return dict(seconds={k: round(v, 5) for k, v in rows.items()},
                share={k: round(v / total, 4) for k, v in rows.items()}, total_s=round(total, 5))


def trainable_count(params) -> int: return sum(p.numel() for p in params)


def step_flops(step: TrainStep) -> int:
    """FLOPs of one step (matmuls, convolutions, attention; forward + backward) by torch's FlopCounterMode.
    On the CPU attention runs through SDPA's math path here: FlopCounterMode has no formula for the CPU flash kernel
    and would count its attention as zero (the CUDA kernels are known to it)."""
    from torch.utils.flop_counter import FlopCounterMode
    from torch.nn.attention import sdpa_kernel, SDPBackend
    ctx = sdpa_kernel(SDPBackend.MATH) if step.device.type == "cpu" else nullcontext()
    with ctx, FlopCounterMode(display=False) as fc:
        step()
    return int(fc.get_total_flops())
