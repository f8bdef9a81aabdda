"""GPU benchmarks of issue 7 at full size (random weights in the real SD 2.1-base + DINOv2-giant architectures).

    PYTHONPATH=/tmp/site:. python3 benchmarks/gpu.py OUT_DIR            # one H100, about 2-3 minutes
    PYTHONPATH=. .venv/bin/python benchmarks/gpu.py OUT_DIR --smoke     # same code path, CPU, AnyDoor.tiny, seconds

Writes OUT_DIR/gpu.json after every measurement (a timeout keeps what was measured). Sections, in order
of importance, each skipped (and said so) when the time budget (`--budget`, seconds) would be exceeded:

1. inference: AnyDoor at 512², bf16 weights, DDIM 50 steps, guidance 5.0 (`anydoor.sampling.generate`:
   ID tokens, 50 x (UNet + detail extractor) on a CFG batch of 2, VAE decode): s per insertion, peak memory.
2. training: 512², bf16 mixed precision (fp32 master weights, autocast bf16 — anydoor.train's
   `mixed_precision=bf16`), AdamW over the SPEC §6 trainable set, batch 8 and 16, with and without
   gradient checkpointing: samples/s, peak memory, MFU = model FLOPs of one step (FlopCounterMode,
   forward + backward, recomputation not counted) / step time / the card's dense bf16 peak.
3. ratios 1 and 2 at full size (batch 8, no checkpointing): AnyDoor's step vs diffusers' train_controlnet
   step and vs the naive port (benchmarks/steps.py says what each is).
4. ratio 5 at full size: AnyDoorPipeline per insertion vs diffusers' StableDiffusionControlNetPipeline of
   the same sizes (`anydoor.benchmark.compare_with_controlnet_pipeline` when it handles SD sizes; otherwise
   the same comparison with a random CLIP text encoder of SD 2.1's size, see `sd21_twin`).
"""
from __future__ import annotations
import argparse, json, os, platform, sys, time, traceback, types
from contextlib import nullcontext
from pathlib import Path

T_START = time.perf_counter()
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
try:
    import matplotlib  # noqa: F401  (anydoor.core imports pyplot; stub it where matplotlib is absent)
except ImportError:
    mpl = types.ModuleType("matplotlib"); mpl.pyplot = types.ModuleType("matplotlib.pyplot")
    sys.modules.update({"matplotlib": mpl, "matplotlib.pyplot": mpl.pyplot})

def scipy_or_stub() -> bool:
    "Import scipy.ndimage, or stub it (True) where scipy is absent: anydoor.collage imports it at the top but only its "
    "training-time mask perturbation calls it. Call after diffusers/transformers have probed the installed packages."
    try:
        import scipy.ndimage  # noqa: F401
        return False
    except ImportError:
        import importlib.machinery
        def _no_scipy(name):
            if name.startswith("__"): raise AttributeError(name)
            def f(*a, **k): raise ImportError(f"scipy is not installed here: scipy.ndimage.{name} is unavailable")
            return f
        nd = types.ModuleType("scipy.ndimage"); nd.__getattr__ = _no_scipy
        sp = types.ModuleType("scipy"); sp.ndimage = nd
        for m in (sp, nd): m.__spec__ = importlib.machinery.ModuleSpec(m.__name__, None)
        sys.modules.update({"scipy": sp, "scipy.ndimage": nd})
        return True


import numpy as np
import torch

# Dense bf16 peak (TFLOP/s) by card name; H100 SXM is the default the issue names.
BF16_PEAK_TFLOPS = [("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0), ("H200", 989.0), ("A100", 312.0)]

# FLOPs of one AnyDoor training step per sample at 512² (SD 2.1 + DINOv2-giant), counted with FlopCounterMode on
# the meta device on a CPU machine (input checks bypassed; SDPA through its math path): a cross-check for the count
# taken on the GPU, where an attention kernel that FlopCounterMode does not know would be missed.
META_TFLOP_PER_SAMPLE = 4.517

RESULT: dict = {}
OUT: Path | None = None


def save():
    RESULT["elapsed_s"] = round(time.perf_counter() - T_START, 1)
    tmp = OUT / "gpu.json.tmp"
    tmp.write_text(json.dumps(RESULT, indent=1, default=str))
    os.replace(tmp, OUT / "gpu.json")


def elapsed(): return time.perf_counter() - T_START


def sync(dev):
    if dev.type == "cuda": torch.cuda.synchronize()


def gib(x): return round(x / 2**30, 3)


def reset_peak(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(); torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats()


def peak(dev) -> dict:
    if dev.type != "cuda": return dict(peak_allocated_gib=None)
    torch.cuda.synchronize()
    return dict(peak_allocated_gib=gib(torch.cuda.max_memory_allocated()),
                peak_reserved_gib=gib(torch.cuda.max_memory_reserved()))


def timed(fn, dev, repeats: int, warmup: int = 1) -> list:
    for _ in range(warmup): fn()
    out = []
    for _ in range(repeats):
        sync(dev); t0 = time.perf_counter(); fn(); sync(dev); out.append(time.perf_counter() - t0)
    return out


def interleaved(fns: dict, dev, repeats: int, warmup: int = 1) -> dict:
    "Alternate the callables (order reversed every other round) after warm-up; seconds per call."
    for _ in range(warmup):
        for f in fns.values(): f()
    t = {k: [] for k in fns}
    names = list(fns)
    for r in range(repeats):
        for k in (names if r % 2 == 0 else names[::-1]):
            sync(dev); t0 = time.perf_counter(); fns[k](); sync(dev); t[k].append(time.perf_counter() - t0)
    return t


def med(v): return float(np.median(v))


def section(name: str, est_s: float, budget: float):
    "Decorator: run the section if `est_s` more seconds fit in the budget; record errors and timing."
    def deco(fn):
        def run(*a, **k):
            if elapsed() + est_s > budget:
                RESULT[name] = dict(skipped=f"budget: {elapsed():.0f} s used, section needs ~{est_s:.0f} s of {budget:.0f}")
                save(); print(f"[{elapsed():6.1f}s] skip {name}", flush=True); return None
            print(f"[{elapsed():6.1f}s] {name} ...", flush=True)
            t0 = time.perf_counter()
            try:
                out = fn(*a, **k)
            except Exception as e:
                traceback.print_exc()
                out = dict(error=f"{type(e).__name__}: {e}"[:2000])
            out = out or {}
            out["section_s"] = round(time.perf_counter() - t0, 1)
            RESULT[name] = out; save()
            print(f"[{elapsed():6.1f}s] {name}: {json.dumps(out, default=str)[:600]}", flush=True)
            return out
        return run
    return deco


def count_params(m): return sum(p.numel() for p in m.parameters()) if m is not None else 0


def main(argv=None):
    global OUT, T_START
    T_START = time.perf_counter()
    RESULT.clear()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", help="output folder (gpu.json)")
    ap.add_argument("--smoke", action="store_true", help="CPU, AnyDoor.tiny, seconds: checks the code path")
    ap.add_argument("--budget", type=float, default=None, help="seconds for the whole script (default 195; smoke 120)")
    ap.add_argument("--steps", type=int, default=50, help="DDIM steps for inference and figure 5")
    a = ap.parse_args(argv)
    OUT = Path(a.out); OUT.mkdir(parents=True, exist_ok=True)
    smoke = a.smoke
    budget = a.budget or (120.0 if smoke else 195.0)
    dev = torch.device("cpu" if smoke or not torch.cuda.is_available() else "cuda")
    if dev.type == "cpu": torch.set_num_threads(1)      # a shared CPU: several threads only add waiting
    import diffusers, transformers
    from anydoor.model import AnyDoor
    from anydoor.sampling import generate
    from benchmarks import steps as st
    RESULT.update(command="python3 benchmarks/gpu.py " + " ".join(sys.argv[1:] if argv is None else argv), smoke=smoke,
                  device=torch.cuda.get_device_name() if dev.type == "cuda" else f"cpu ({platform.processor() or 'x86'})",
                  torch=torch.__version__, cuda=torch.version.cuda, diffusers=diffusers.__version__,
                  transformers=transformers.__version__, python=platform.python_version(), budget_s=budget,
                  date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    name = RESULT["device"]
    peak_tflops = next((v for k, v in BF16_PEAK_TFLOPS if k in name), 989.0)
    RESULT["bf16_peak_tflops"] = peak_tflops
    save()
    S = 32 if smoke else 512
    n_steps = 2 if smoke else a.steps
    train_batches = (1, 2) if smoke else (8, 16)
    ratio_batch = 1 if smoke else 8

    # 0. Build: random weights in the real architectures (tiny in smoke mode), bf16 for inference
    t0 = time.perf_counter()
    torch.manual_seed(0)
    infer_dtype = torch.float32 if smoke else torch.bfloat16
    model = AnyDoor.tiny() if smoke else AnyDoor.sd21_architecture(device=dev, dtype=infer_dtype)
    model.to(dev, infer_dtype).eval()
    sync(dev)
    RESULT["build"] = dict(seconds=round(time.perf_counter() - t0, 1), image_size=model.image_size,
                           reference_size=model.reference_size,
                           params={k: count_params(getattr(model, k)) for k in ("codec", "unet", "detail", "id_extractor")},
                           trainable=st.trainable_count(model.trainable_parameters()))
    save(); print(f"[{elapsed():6.1f}s] built: {RESULT['build']}", flush=True)
    R = model.reference_size
    g = torch.Generator().manual_seed(0)
    reference = torch.rand(1, 3, R, R, generator=g).to(dev, infer_dtype)
    hint = (torch.rand(1, 4, S, S, generator=g) * 2 - 1).to(dev, infer_dtype)

    # 1. Inference
    @section("inference", est_s=25, budget=budget)
    def inference():
        run = lambda n, pre=True: generate(model, reference, hint, num_inference_steps=n, guidance_scale=5.0,
                                           generator=torch.Generator().manual_seed(0), precompute_detail=pre)
        with torch.inference_mode():
            run(3); run(3, False)                                     # warm-up (kernels, allocator)
            reset_peak(dev)
            t = interleaved({"precomputed": lambda: run(n_steps), "per_step": lambda: run(n_steps, False)}, dev,
                            repeats=2, warmup=0)
            pk = peak(dev)
            diff = (run(n_steps).float() - run(n_steps, False).float()).abs().max().item()
        weights = sum(p.numel() * p.element_size() for p in model.parameters())
        best = med(t["precomputed"])
        return dict(what=f"generate(): {S}² crop, DDIM {n_steps} steps, guidance 5.0 (CFG batch 2), "
                         f"{str(infer_dtype).split('.')[-1]} weights, ID tokens + denoising + VAE decode; no preprocessing; "
                         f"the detail residuals computed ahead in batched chunks of steps (precomputed) against the per-step "
                         f"call (per_step), alternating in one run",
                    seconds_per_insertion=best, seconds=t["precomputed"], per_step_seconds=t["per_step"],
                    speedup_vs_per_step=med(t["per_step"]) / best, max_abs_difference_vs_per_step=diff,
                    steps=n_steps, weights_gib=gib(weights), **pk,
                    target="<= 1.0 s and <= 6 GB on an H100 (the original: ~18 GB); outputs equal to the per-step path "
                           "within bf16 tolerance (max |difference| <= 0.05 on [-1, 1])",
                    met=(best <= 1.0 and pk["peak_allocated_gib"] is not None and pk["peak_allocated_gib"] <= 6
                         and diff <= 0.05) if dev.type == "cuda" else None)
    inference()

    # 2. Training: fp32 master weights, bf16 autocast
    model.float().train()
    amp = None if smoke else torch.bfloat16
    opt = torch.optim.AdamW(list(model.trainable_parameters()), lr=1e-5)
    batches = {B: st.make_batch(model, B, device=dev) for B in train_batches}

    def set_ckpt(on: bool):
        for m in (model.unet, model.detail):
            if on: m.enable_gradient_checkpointing()
            else: m.disable_gradient_checkpointing()

    @section("training", est_s=10 if smoke else 60, budget=budget)
    def training():
        from torch.utils.flop_counter import FlopCounterMode
        rows, flops, by_module = [], {}, {}
        for B in train_batches:
            step = st.anydoor_step(model, batches[B], opt, autocast_dtype=amp)
            set_ckpt(False)
            step()                                                     # creates optimizer state, warms kernels
            from torch.nn.attention import sdpa_kernel, SDPBackend   # CPU (smoke): count attention via the math path
            with (sdpa_kernel(SDPBackend.MATH) if dev.type == "cpu" else nullcontext()), FlopCounterMode(display=False) as fc:
                step()
            flops[B] = fc.get_total_flops()
            by_module[B] = {k: round(sum(v.values()) / 1e12, 3) for k, v in fc.get_flop_counts().items()
                            if "." not in k and k != "Global" and sum(v.values()) > 0}
            for ckpt in (False, True):
                if elapsed() > budget - 5: rows.append(dict(batch=B, checkpointing=ckpt, skipped="budget")); continue
                set_ckpt(ckpt)
                step()                                                 # warm-up in this mode
                reset_peak(dev)
                t = timed(step, dev, repeats=2 if smoke else 3, warmup=0)
                pk = peak(dev)
                s = med(t)
                rows.append(dict(batch=B, checkpointing=ckpt, step_s=s, seconds=t, samples_per_s=B / s,
                                 model_tflop_per_step=flops[B] / 1e12, mfu=flops[B] / s / (peak_tflops * 1e12),
                                 mfu_meta_count=None if smoke else META_TFLOP_PER_SAMPLE * B / s / peak_tflops, **pk))
                RESULT["training_partial"] = rows; save()
                print(f"    {rows[-1]}", flush=True)
            set_ckpt(False)
        RESULT.pop("training_partial", None)
        best16 = [r for r in rows if r.get("batch") == train_batches[-1] and "mfu" in r]
        # the frozen preprocessing inside a step: VAE encoding of the target and the DINOv2 forward
        b = batches[train_batches[-1]]
        with torch.no_grad(), (torch.autocast(dev.type, dtype=amp) if amp else torch.no_grad()):
            pre = dict(vae_encode_s=med(timed(lambda: model.encode(b["target"]), dev, repeats=3)),
                       id_encoder_s=med(timed(lambda: model.id_extractor(b["reference"]), dev, repeats=3)))
        return dict(what=f"AnyDoor training step at {S}², {'bf16 autocast, fp32 master weights' if amp else 'fp32 (smoke)'}, "
                         "AdamW over detail extractor + UNet decoder + ID projector, grad clip 1.0; MFU against "
                         f"{peak_tflops:.0f} TFLOP/s dense bf16; FLOPs counted without checkpointing (model FLOPs)",
                    rows=rows, flops_per_step={str(k): v for k, v in flops.items()},
                    tflop_per_step_by_module={str(k): v for k, v in by_module.items()},
                    frozen_preprocessing_at_batch=dict(batch=train_batches[-1], **pre),
                    target=f"MFU >= 35% at batch {train_batches[-1]}",
                    met=(max(r["mfu"] for r in best16) >= 0.35) if best16 and dev.type == "cuda" else None)
    training()

    # 3. Ratios 1 and 2 at full size
    @section("ratios_1_2", est_s=10 if smoke else 45, budget=budget)
    def ratios():
        b = batches[ratio_batch] if ratio_batch in batches else st.make_batch(model, ratio_batch, device=dev)
        cn = st.controlnet_peer(model)
        cn_opt = torch.optim.AdamW(cn.parameters(), lr=1e-5)
        steps_ = dict(anydoor=st.anydoor_step(model, b, opt, autocast_dtype=amp),
                      controlnet=st.controlnet_step(model, b, cn, cn_opt, autocast_dtype=amp),
                      naive=st.naive_step(model, b, opt, autocast_dtype=amp))
        t = interleaved(steps_, dev, repeats=2 if smoke else 3, warmup=1)
        peaks = {}
        for k, s in steps_.items():
            reset_peak(dev); s(); peaks[k] = peak(dev)
        r = lambda a_, b_: float(np.median(np.asarray(t[a_]) / np.asarray(t[b_])))
        out = dict(what=f"batch {ratio_batch}, {S}², no checkpointing; peers as in benchmarks/steps.py",
                   median_s={k: med(v) for k, v in t.items()}, seconds=t, peaks=peaks,
                   ratio_1_vs_controlnet=r("anydoor", "controlnet"), target_1="<= 1.2",
                   ratio_2_vs_naive=r("anydoor", "naive"), target_2="<= 0.8",
                   trainable=dict(anydoor=st.trainable_count(model.trainable_parameters()), controlnet=count_params(cn)))
        del cn, cn_opt, steps_
        return out
    ratios()

    # 4. Ratio 5: pipelines, bf16
    del opt, batches
    model.zero_grad(set_to_none=True)
    model.to(infer_dtype).eval()
    if dev.type == "cuda": torch.cuda.empty_cache()

    @section("ratio_5_pipeline", est_s=12 if smoke else 40, budget=budget)
    def pipeline():
        return figure5(model, dev, n_steps, smoke, budget)
    pipeline()
    RESULT["done"] = True
    save()
    print(f"[{elapsed():6.1f}s] done: {OUT / 'gpu.json'}", flush=True)
    return RESULT


# -- figure 5 -----------------------------------------------------------------------------------
SD21_TEXT_ENCODER = dict(vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
                         num_attention_heads=16, max_position_embeddings=77, hidden_act="gelu", projection_dim=512)


def sd21_twin(model, text_config: dict):
    """diffusers' StableDiffusionControlNetPipeline on `model`'s UNet and VAE, a ControlNetModel holding the detail
    extractor's weights (conv_in from the UNet, as anydoor.benchmark.controlnet_twin does), and a random CLIP text
    encoder of `text_config` (SD 2.1's by default). Returns (pipe, encode) where encode() runs the text encoder on an
    empty prompt's 77 ids (no tokenizer files are needed)."""
    import inspect
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline
    from transformers import CLIPTextConfig, CLIPTextModel
    from anydoor.sampling import ddim_scheduler
    keys = set(inspect.signature(ControlNetModel.__init__).parameters)
    with torch.device(model.device):
        cn = ControlNetModel(**{k: v for k, v in model.detail.config.items() if k in keys})
        cn.load_state_dict(model.detail.state_dict(), strict=False)
        cn.conv_in.load_state_dict(model.unet.conv_in.state_dict())
        torch.manual_seed(0)
        te = CLIPTextModel(CLIPTextConfig(**text_config)).eval()
    vae = model.codec
    from anydoor.model import PixelCodec
    if isinstance(vae, PixelCodec):
        from anydoor.benchmark import IdentityVAE
        vae = IdentityVAE(model.latent_channels, (model.latent_channels,))
    pipe = StableDiffusionControlNetPipeline(vae=vae, text_encoder=te, tokenizer=None, unet=model.unet, controlnet=cn,
                                             scheduler=ddim_scheduler(model.noise_scheduler), safety_checker=None,
                                             feature_extractor=None, requires_safety_checker=False)
    pipe = pipe.to(model.device, model.dtype)
    pipe.set_progress_bar_config(disable=True)
    L = text_config["max_position_embeddings"]
    ids = torch.full((1, L), 2, dtype=torch.long, device=model.device); ids[0, 0], ids[0, 1] = 0, 1
    ids = ids.clamp(max=text_config["vocab_size"] - 1)
    def encode():
        with torch.no_grad(): return te(ids)[0]
    return pipe, encode


def synthetic_inputs(seed: int = 0):
    "A 384x576 scene, a 200x200 reference object with its mask, and a box (no sample-data packages needed)."
    from PIL import Image
    rng = np.random.default_rng(seed)
    scene = (rng.random((48, 72, 3)) * 255).astype(np.uint8)
    scene = Image.fromarray(scene).resize((576, 384), Image.BILINEAR)
    yy, xx = np.mgrid[:200, :200]
    mask = ((xx - 100) ** 2 / 80 ** 2 + (yy - 100) ** 2 / 60 ** 2 < 1)
    obj = (rng.random((200, 200, 3)) * 255).astype(np.uint8)
    obj[~mask] = 255
    return Image.fromarray(obj), Image.fromarray(mask.astype(np.uint8) * 255), scene, (230, 120, 370, 260)


def figure5(model, dev, n_steps, smoke, budget):
    out = dict(scipy_stubbed=scipy_or_stub())
    from anydoor import pipeline as P
    from anydoor.benchmark import compare_with_controlnet_pipeline
    # a. the library's comparison function, as is (controlnet_twin builds at SD size: heads that divide 1024)
    try:
        ref, mask, scene, box = synthetic_inputs()
        r = compare_with_controlnet_pipeline(model, num_inference_steps=n_steps, guidance_scale=5.0,
                                             repeats=1 if smoke else 2, scene=scene, box=box)
        out["compare_with_controlnet_pipeline"] = {k: v for k, v in r.items()}
        out["ratio_5"] = r["wall_ratio"]
    except Exception as e:
        traceback.print_exc()
        out["compare_with_controlnet_pipeline"] = dict(error=f"{type(e).__name__}: {e}"[:1000])
    # b. where it could not build SD-sized peers (or in smoke mode, to test this path): SD 2.1 CLIP text encoder
    if "ratio_5" not in out or smoke:
        if elapsed() + (5 if smoke else 25) > budget:
            out["sd21_twin"] = dict(skipped="budget"); return out
        from anydoor.collage import prepare_reference, prepare_target
        ref, mask, scene, box = synthetic_inputs()
        text_config = dict(SD21_TEXT_ENCODER) if not smoke else dict(SD21_TEXT_ENCODER, hidden_size=model.unet.config.cross_attention_dim,
                                                                       intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)
        twin, encode = sd21_twin(model, text_config)
        anydoor = P.AnyDoorPipeline.from_model(model); anydoor.set_progress_bar_config(disable=True)
        r_img, r_mask = prepare_reference(ref, mask, model.reference_size)
        S = model.image_size
        hint = prepare_target(scene, box, reference=r_img, reference_mask=r_mask, size=S,
                              rng=np.random.default_rng(0)).hint[None].to(dev, model.dtype)
        def run_twin():
            e = encode()
            return twin(prompt_embeds=e, negative_prompt_embeds=e, image=hint, height=S, width=S,
                        num_inference_steps=n_steps, guidance_scale=5.0, generator=torch.Generator().manual_seed(0))
        fns = dict(anydoor=lambda: anydoor(ref, mask, scene, box, num_inference_steps=n_steps, guidance_scale=5.0,
                                           generator=torch.Generator().manual_seed(0)),
                   controlnet=run_twin)
        t = interleaved(fns, dev, repeats=1 if smoke else 2, warmup=1)
        ratio = float(np.median(np.asarray(t["anydoor"]) / np.asarray(t["controlnet"])))
        out["sd21_twin"] = dict(what="AnyDoorPipeline (prepare reference + target, generate, paste back) vs "
                                     "StableDiffusionControlNetPipeline (text encoder on 77 ids, same UNet/VAE, ControlNet "
                                     f"with the detail weights), {S}², {n_steps} DDIM steps, guidance 5.0",
                                median_s={k: med(v) for k, v in t.items()}, seconds=t, ratio=ratio,
                                text_encoder_params=count_params(twin.text_encoder))
        out.setdefault("ratio_5", ratio)
        del twin, anydoor
    out["target"] = "<= 1.05"
    return out


if __name__ == "__main__":
    main()
