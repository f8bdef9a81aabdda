"""CPU benchmarks of issue 7: figures 1-6, each a ratio against its peer measured side by side.

    .venv/bin/python -m benchmarks.cpu --out benchmarks/results          # the table (~10 min, 2 cores)
    .venv/bin/python -m benchmarks.cpu --out /tmp/b --quick              # smallest configuration (tests)
    .venv/bin/python -m benchmarks.cpu --out /tmp/b --only 1,4           # some figures

Writes `<out>/cpu.json` (every number, the machine, the load) and `<out>/cpu.md` (the table).
How time and memory are measured: see benchmarks/common.py. What each peer is: benchmarks/steps.py
and the docstrings of the figure functions below.
"""
from __future__ import annotations
import argparse, json, os, sys, tempfile, time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np
import torch

from benchmarks.common import (interleaved, summarize, ratio, measure_peak, peak_in_subprocess, machine,
                               fit_exponent, write_json)

MODULE = "benchmarks.cpu"

# Sizes per mode. "full" is the table; "quick" runs the same code paths in seconds (tests).
MODES = {
    "full": dict(S=32, B=8, warmup=1, repeats=6, parts_repeats=2,
                 loop_steps=16, loop_log=4, loop_runs=2, loop_batch=8,
                 hf_n=64, hf_size=224, hf_repeats=7,
                 pipe_steps=20, pipe_repeats=3,
                 sizes=(32, 64, 128), size_batch=1, batches=(2, 4, 8), sample_steps=(10, 20, 40),
                 growth_repeats=3, peak_runs=2, peaks=True),
    "quick": dict(S=16, B=2, warmup=1, repeats=2, parts_repeats=1,
                  loop_steps=4, loop_log=2, loop_runs=1, loop_batch=2,
                  hf_n=4, hf_size=64, hf_repeats=2,
                  pipe_steps=2, pipe_repeats=1,
                  sizes=(8, 12, 16), size_batch=1, batches=(1, 2, 4), sample_steps=(2, 4, 8),
                  growth_repeats=1, peak_runs=1, peaks=("4",), peak_limit=1),
}

TARGETS = {1: ("<=", 1.2), 2: ("<=", 0.8), 3: (">=", 0.9), 4: (">=", 1.0), 5: ("<=", 1.05)}


def _met(fig, value):
    if value is None or not np.isfinite(value): return None
    op, t = TARGETS[fig]
    return bool(value <= t) if op == "<=" else bool(value >= t)


# =============================================================================================
# Builders: (figure, config, params) -> a zero-argument callable that runs one unit of work.
# The same builders serve the in-process timing and the peak-memory subprocesses.
# =============================================================================================
def _tiny(S, **kw):
    from anydoor.model import AnyDoor
    return AnyDoor.tiny(image_size=S, **kw).train()


def training_steps(S: int, B: int, which=("anydoor", "controlnet", "naive", "naive_allgrad", "exact"),
                   lone: bool = False) -> dict:
    "The training steps on one tiny AnyDoor (shared modules). `lone`: drop modules the one step doesn't use."
    from benchmarks import steps as st
    model = _tiny(S)
    batch = st.make_batch(model, B)
    out = {}
    ours = [w for w in which if w != "controlnet"]
    opt = torch.optim.AdamW(list(model.trainable_parameters()), lr=1e-4) if ours else None
    if "controlnet" in which:
        cn = st.controlnet_peer(model)
        if lone: model.detail = None                       # the peer does not use AnyDoor's detail extractor
        out["controlnet"] = st.controlnet_step(model, batch, cn, torch.optim.AdamW(cn.parameters(), lr=1e-4))
    if "anydoor" in which: out["anydoor"] = st.anydoor_step(model, batch, opt)
    if "naive" in which: out["naive"] = st.naive_step(model, batch, opt)
    if "naive_allgrad" in which: out["naive_allgrad"] = st.naive_step(model, batch, opt, allgrad=True)
    if "exact" in which:
        from contextlib import contextmanager
        @contextmanager
        def exact():
            model.settings.detach_encoder_context = False
            try: yield
            finally: model.settings.detach_encoder_context = True
        s = st.anydoor_step(model, batch, opt)
        s.name, s.grad_context = "exact", exact
        out["exact"] = s
    out["_model"] = model
    return out


def hifreq_inputs(n: int, size: int, seed: int = 0):
    "n smooth random RGB images in [0,1] and ellipse object masks, like prepared 224² references."
    g = torch.Generator().manual_seed(seed)
    img = torch.rand(n, 3, size // 8, size // 8, generator=g)
    img = torch.nn.functional.interpolate(img, size=(size, size), mode="bilinear", align_corners=False)
    img = (img + 0.15 * torch.rand(n, 3, size, size, generator=g)).clamp(0, 1)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    r = 0.5 + 0.4 * torch.rand(n, 1, 1, generator=g)
    mask = ((xx / r) ** 2 + (yy / (1.2 * r)) ** 2 < 1).float()[:, None]        # (n, 1, size, size)
    img = torch.where(mask.bool(), img, torch.ones_like(img))                  # white background
    return img, mask


def hifreq_opencv_loop(image: torch.Tensor, mask: torch.Tensor, thresh: int = 50) -> torch.Tensor:
    """The released recipe (SPEC §3) image by image with OpenCV, at native resolution, same inputs and output
    as `high_frequency_map`: float (B,3,H,W) in [0,1] and (B,1,H,W) masks in, float (B,3,H,W) out."""
    import cv2
    kernel = np.ones((5, 5), np.uint8)
    x = image.permute(0, 2, 3, 1).contiguous().numpy()                         # (B, H, W, 3) float
    levels = np.clip(np.round(x * 255), 0, 255).astype(np.uint8)
    m = (mask[:, 0].numpy() > 0.5).astype(np.uint8)                            # (B, H, W)
    out = np.empty_like(x)
    for i in range(len(x)):
        er = cv2.erode(m[i], kernel, iterations=2)
        gx = cv2.convertScaleAbs(cv2.Sobel(levels[i], cv2.CV_64F, 1, 0, ksize=3))
        gy = cv2.convertScaleAbs(cv2.Sobel(levels[i], cv2.CV_64F, 0, 1, ksize=3))
        edge = cv2.addWeighted(gx, 0.5, gy, 0.5, 0).max(-1) * er               # (H, W) uint8
        edge[edge < thresh] = 0
        out[i] = (edge.astype(np.float32) / 255)[..., None] * x[i]
    return torch.from_numpy(out).permute(0, 3, 1, 2)


def build(figure: str, config: str, p: dict):
    "A callable for one configuration of one figure (used for peak memory in a fresh process)."
    if figure in ("1", "2", "6train"):
        steps = training_steps(p["S"], p["B"], which=(config,), lone=True)
        return steps[config]
    if figure == "4":
        from anydoor.hifreq import high_frequency_map, high_frequency_steps
        img, mask = hifreq_inputs(p["n"], p["size"])
        return dict(torch_batched=lambda: high_frequency_map(img, mask), opencv_loop=lambda: hifreq_opencv_loop(img, mask),
                    torch_steps=lambda: high_frequency_steps(img, mask)["output"])[config]
    if figure == "3":
        batches = preload_batches(p)[0] if config == "preloaded" else None
        return lambda: run_train(p, preloaded=(config == "preloaded"), batches=batches)
    if figure == "6sample":
        return sampler(p["S"], p["steps"])
    if figure == "5":
        return pipeline_runners(p, which=(config,))[config]
    raise ValueError(f"unknown figure {figure!r}")


def peak_main(figure: str, config: str, params: str) -> None:
    "`--peak`: build one configuration, run it `runs` times, print its peak RSS as JSON."
    torch.manual_seed(0)
    p = json.loads(params)
    res = measure_peak(lambda: build(figure, config, p), lambda fn: [fn() for _ in range(p.get("runs", 1))])
    print(json.dumps(res))


def peaks(figure: str, configs, params: dict, mode: dict) -> dict:
    "Peak RSS of each configuration, each in a fresh subprocess (`mode['peaks']`: True, False or the figures to do)."
    want = mode["peaks"]
    if not want or (want is not True and figure not in want): return {c: None for c in configs}
    out = {c: None for c in configs}
    for c in configs[:mode.get("peak_limit") or len(configs)]:
        out[c] = peak_in_subprocess(MODULE, figure, c, dict(params, runs=params.get("runs", mode["peak_runs"])))
        print(f"    peak {figure}/{c}: {out[c]}", flush=True)
    return out


# =============================================================================================
# Figures
# =============================================================================================
def figure1(m):
    """AnyDoor's step vs diffusers' train_controlnet step on the same UNet and condition encoder (steps.py)."""
    from benchmarks import steps as st
    s = training_steps(m["S"], m["B"], which=("anydoor", "controlnet"))
    model = s.pop("_model")
    t = interleaved({k: s[k] for k in ("anydoor", "controlnet")}, m["repeats"], m["warmup"])
    parts = {k: st.part_shares(s[k], m["parts_repeats"]) for k in ("anydoor", "controlnet")}
    flops = {k: st.step_flops(s[k]) for k in ("anydoor", "controlnet")}
    r = ratio(t, "anydoor", "controlnet")
    cn = s["controlnet"].params
    return dict(
        what="training step, tiny preset: AnyDoor (detail extractor + UNet decoder + ID projector train, encoder "
             "without autograd) vs diffusers train_controlnet.py (standard ControlNet trains; UNet and condition "
             "encoder frozen); same UNet, same DINOv2-style encoder, same batch, AdamW + clip in both",
        sizes=dict(image_size=m["S"], batch=m["B"], trainable_anydoor=st.trainable_count(model.trainable_parameters()),
                   trainable_controlnet=st.trainable_count(cn), detail_extractor=st.trainable_count(model.detail.parameters())),
        timing=summarize(t), ratio=r, value=r["paired_median"], target="<= 1.2", met=_met(1, r["paired_median"]),
        flops_per_step=flops, flop_ratio=flops["anydoor"] / flops["controlnet"],
        parts=parts, peak=peaks("1", ["anydoor", "controlnet"], dict(S=m["S"], B=m["B"]), m))


def figure2(m):
    """AnyDoor's step vs a naive port whose frozen encoder still tracks gradients (steps.py)."""
    from benchmarks import steps as st
    names = ("anydoor", "naive", "naive_allgrad", "exact")
    s = training_steps(m["S"], m["B"], which=names)
    model = s.pop("_model")
    t = interleaved({k: s[k] for k in names}, m["repeats"], m["warmup"])
    r = ratio(t, "anydoor", "naive")
    parts = {k: st.part_shares(s[k], m["parts_repeats"]) for k in ("anydoor", "naive")}
    flops = {k: st.step_flops(s[k]) for k in names}
    return dict(
        what="training step, tiny preset: AnyDoor (encoder + middle block without autograd) vs `naive` = a "
             "straightforward diffusers port: same modules, same requires_grad flags (frozen parts "
             "requires_grad_(False)), UNet called through its own forward with the detail residuals, so the "
             "backward pass runs through the frozen encoder to reach the trainable ID projector. Extra rows: "
             "`naive_allgrad` (frozen only by leaving params out of the optimizer: encoder and DINOv2 weight "
             "grads computed too) and `exact` (AnyDoor's own detach_encoder_context=False switch)",
        sizes=dict(image_size=m["S"], batch=m["B"]),
        timing=summarize(t), ratio=r, value=r["paired_median"], target="<= 0.8", met=_met(2, r["paired_median"]),
        ratio_vs_naive_allgrad=ratio(t, "anydoor", "naive_allgrad"), ratio_exact_vs_naive=ratio(t, "exact", "naive"),
        parts=parts, flops_per_step=flops, flop_ratio=flops["anydoor"] / flops["naive"],
        flop_ratio_vs_naive_allgrad=flops["anydoor"] / flops["naive_allgrad"],
        peak=peaks("2", ["anydoor", "naive", "naive_allgrad"], dict(S=m["S"], B=m["B"]), m))


class _Preloaded:
    "A stand-in for the DataLoader: yields the same collated batches from memory, endlessly."
    def __init__(self, batches): self.batches = batches
    def __iter__(self):
        while True: yield from self.batches


def _train_cfg(p, run_dir):
    from anydoor.config import compose
    return compose(["logger=none", "eval.enabled=false", "trainer.sample_every=0", "model.pretrained=random",
                    f"trainer.max_steps={p['steps_per_run']}", f"trainer.log_every={p['log_every']}",
                    f"trainer.batch_size={p['batch']}", "trainer.checkpoint_every=1000000", f"trainer.num_threads={torch.get_num_threads()}",
                    f"run_dir={run_dir}"])


def preload_batches(p):
    "The batches train() would draw, collated once in this process (same dataset, sampler and order)."
    from anydoor import train as T
    from anydoor.data import make_loader
    with tempfile.TemporaryDirectory() as d:
        cfg = _train_cfg(p, d)
        model = T.build_model(cfg)
        ds = T.build_dataset(cfg, model, "train")
        loader = make_loader(ds, batch_size=cfg.trainer.batch_size, num_workers=0,
                             sampler=T.ResumableSampler(len(ds), seed=cfg.seed))
        it = iter(loader)
        c0 = time.process_time()
        batches = [next(it) for _ in range(cfg.trainer.max_steps)]
        p["data_cpu_s_per_batch"] = (time.process_time() - c0) / len(batches)   # what a worker spends on one batch
        p["image_size"] = int(cfg.model.image_size)
        return batches, int(cfg.data.num_workers)


def run_train(p, preloaded=False, batches=None) -> dict:
    "One train() run; with `preloaded`, anydoor.data.make_loader is replaced by in-memory batches."
    import anydoor.data as D
    from anydoor import train as T
    if preloaded and batches is None: batches, _ = preload_batches(p)
    orig = D.make_loader
    with tempfile.TemporaryDirectory() as d:
        cfg = _train_cfg(p, d)
        if preloaded: D.make_loader = lambda *a, **k: _Preloaded(batches)
        try:
            t0 = time.perf_counter(); T.train(cfg); wall = time.perf_counter() - t0
        finally: D.make_loader = orig
        rows = [json.loads(l) for l in open(Path(d) / "metrics.jsonl")]
    return dict(wall_s=wall, samples_per_s=[r["samples_per_s"] for r in rows], steps=[r["step"] for r in rows])


def figure3(m):
    """samples/s of anydoor.train.train with its DataLoader (default workers) vs the same run on pre-loaded batches."""
    p = dict(steps_per_run=m["loop_steps"], log_every=m["loop_log"], batch=m["loop_batch"])
    batches, workers = preload_batches(p)
    runs = {"loader": [], "preloaded": []}
    for r in range(m["loop_runs"]):
        for k in (("loader", "preloaded") if r % 2 == 0 else ("preloaded", "loader")):
            runs[k].append(run_train(p, preloaded=(k == "preloaded"), batches=batches))
            print(f"    {k}: {runs[k][-1]['samples_per_s']}", flush=True)
    # the first logging window holds worker start-up and the first (slow) step: steady state is the rest
    steady = {k: [x for run in v for x in (run["samples_per_s"][1:] or run["samples_per_s"])] for k, v in runs.items()}
    paired = [a / b for ra, rb in zip(runs["loader"], runs["preloaded"])
              for a, b in zip(ra["samples_per_s"][1:] or ra["samples_per_s"], rb["samples_per_s"][1:] or rb["samples_per_s"])]
    wall = {k: float(np.median([x["wall_s"] for x in v])) for k, v in runs.items()}
    value = float(np.median(paired))
    step = training_steps(p["image_size"], p["batch"], which=("anydoor",))["anydoor"]
    step_cpu = float(np.median(interleaved({"s": step}, 2, 1)["cpu"]["s"]))
    data_cpu = p["data_cpu_s_per_batch"]
    return dict(
        what=f"anydoor.train.train (tiny preset, batch {p['batch']}, data.num_workers={workers} = the default, "
             f"{p['steps_per_run']} steps, logging every {p['log_every']}) with its DataLoader vs the same train() "
             "with make_loader replaced by the same batches pre-collated in memory; samples/s from train()'s "
             "metrics.jsonl, first window (worker start-up, first step) dropped",
        sizes=dict(batch=p["batch"], num_workers=workers, steps=p["steps_per_run"]),
        samples_per_s={k: dict(median=float(np.median(v)), windows=[round(x, 2) for x in v]) for k, v in steady.items()},
        wall_s_per_run=wall,
        cost=dict(data_cpu_s_per_batch=data_cpu, train_step_cpu_s=step_cpu, data_share=data_cpu / (data_cpu + step_cpu),
                  note="workers overlap data with training while a core is free (ratio -> 1); when every core is busy "
                       "(a loaded machine) their CPU comes out of the training process's: ratio -> step / (step + data)",
                  saturated_bound=step_cpu / (step_cpu + data_cpu)),
        ratio=dict(paired_median=value, of_medians=float(np.median(steady["loader"]) / np.median(steady["preloaded"])),
                   paired_min=float(min(paired)), paired_max=float(max(paired))),
        value=value, target=">= 0.9", met=_met(3, value),
        peak=peaks("3", ["loader", "preloaded"], dict(p, runs=1), m))


def figure4(m):
    """high_frequency_map (the library's fast path) on a batch vs the released recipe image by image with OpenCV,
    and vs the notebook's readable `high_frequency_steps` (the library's function until 2026-11-26)."""
    from anydoor.hifreq import high_frequency_map, high_frequency_steps
    img, mask = hifreq_inputs(m["hf_n"], m["hf_size"])
    ours, ref = high_frequency_map(img, mask), hifreq_opencv_loop(img, mask)
    diff = float((ours - ref).abs().max())
    steps_diff = float((high_frequency_steps(img, mask)["output"] - ours).abs().max())
    t = interleaved({"torch_batched": lambda: high_frequency_map(img, mask),
                     "opencv_loop": lambda: hifreq_opencv_loop(img, mask),
                     "torch_steps": lambda: high_frequency_steps(img, mask)["output"]}, m["hf_repeats"], 1)
    r = ratio(t, "opencv_loop", "torch_batched")        # speed-up of ours
    prof = profile_top(lambda: high_frequency_map(img, mask))
    return dict(
        what=f"high_frequency_map (torch, one batched call) vs a per-image OpenCV loop of the same recipe at native "
             f"resolution (uint8 levels, erode 5x5 x2, Sobel CV_64F + convertScaleAbs, 0.5/0.5 blend, channel max, "
             f"threshold 50, times the float image); both take float tensors in and give float tensors out",
        sizes=dict(images=m["hf_n"], size=m["hf_size"], torch_threads=torch.get_num_threads()),
        max_abs_difference=diff, timing=summarize(t), ratio=r, value=r["paired_median"],
        steps=dict(what="high_frequency_steps (nbs/01_hifreq): the readable path, every intermediate kept",
                   speedup_of_ours=ratio(t, "torch_steps", "torch_batched"), max_abs_difference=steps_diff),
        value_is="speed-up of ours = opencv seconds / torch seconds", target=">= 1.0", met=_met(4, r["paired_median"]),
        profile_torch=prof, profile_parts=hifreq_parts(img, mask),
        peak=peaks("4", ["torch_batched", "opencv_loop", "torch_steps"], dict(n=m["hf_n"], size=m["hf_size"]), m))


def hifreq_parts(img, mask, repeats: int = 3, chunk: int = 2) -> dict:
    "CPU ms of the stages of high_frequency_map's fast path on these inputs, chunk by chunk as it runs them."
    from anydoor import hifreq as H
    xs, ms = img.split(chunk), [(m > 0.5).float() for m in mask.split(chunk)]
    lvs = [(x * 255).round() for x in xs]
    axy = [H._sobel_magnitudes(lv) for lv in lvs]
    es = [(ax + ay).mul_(0.5).round_().amax(1, keepdim=True) for ax, ay in axy]
    ers = [H._erode_square(m) for m in ms]
    stages = {"8-bit levels": lambda: [(x * 255).round() for x in xs],
              "erosion (9x9 integral image)": lambda: [H._erode_square(m) for m in ms],
              "Sobel (shifted slices)": lambda: [H._sobel_magnitudes(lv) for lv in lvs],
              "edge map (average, channel max)": lambda: [(ax + ay).mul_(0.5).round_().amax(1, keepdim=True)
                                                          for ax, ay in axy],
              "mask, threshold, times image": lambda: [torch.where(e * er < 50, 0.0, e * er) / 255 * x
                                                       for e, er, x in zip(es, ers, xs)]}
    t = interleaved(stages, repeats, 1)
    return {k: round(float(np.median(v)) * 1e3, 1) for k, v in t["cpu"].items()}


def profile_top(fn, n: int = 8) -> list:
    "The `n` ops with the most self CPU time in one call of `fn` (torch.profiler)."
    from torch.profiler import profile
    fn()
    with profile() as prof: fn()
    rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:n]
    total = sum(e.self_cpu_time_total for e in prof.key_averages()) or 1
    return [dict(op=e.key, calls=e.count, self_ms=round(e.self_cpu_time_total / 1e3, 2),
                 share=round(e.self_cpu_time_total / total, 3)) for e in rows]


# -- figure 5: the pipeline ------------------------------------------------------------------
PIPE_BOX = (230, 120, 370, 260)


def pipeline_runners(p, which=("anydoor", "controlnet")):
    """One insertion with AnyDoorPipeline and with its diffusers twin (anydoor.benchmark.controlnet_twin), on the
    inputs anydoor.benchmark.compare_with_controlnet_pipeline uses (for the peak-memory subprocesses)."""
    from anydoor import pipeline as P
    from anydoor.benchmark import controlnet_twin
    from anydoor.collage import prepare_reference, prepare_target
    from anydoor.core import sample_scene, sample_object
    from anydoor.model import AnyDoor
    model = AnyDoor.tiny().eval()
    scene, (reference, mask) = sample_scene("coffee"), sample_object("gift")
    n, S, out = p["steps"], model.image_size, {}
    if "anydoor" in which:
        pipe = P.AnyDoorPipeline.from_model(model); pipe.set_progress_bar_config(disable=True)
        out["anydoor"] = lambda: pipe(reference, mask, scene, PIPE_BOX, num_inference_steps=n, guidance_scale=5.0,
                                      generator=torch.Generator().manual_seed(0))
    if "controlnet" in which:
        twin = controlnet_twin(model); twin.set_progress_bar_config(disable=True)
        r, rm = prepare_reference(reference, mask, model.reference_size)
        hint = prepare_target(scene, PIPE_BOX, reference=r, reference_mask=rm, size=S,
                              rng=np.random.default_rng(0)).hint[None]
        out["controlnet"] = lambda: twin(prompt="", image=hint, height=S, width=S, num_inference_steps=n,
                                         guidance_scale=5.0, generator=torch.Generator().manual_seed(0))
    return out


def figure5(m):
    """AnyDoorPipeline per insertion vs diffusers' StableDiffusionControlNetPipeline of the same sizes:
    anydoor.benchmark.compare_with_controlnet_pipeline (the library's comparison), reused as is."""
    from anydoor.benchmark import compare_with_controlnet_pipeline
    r = compare_with_controlnet_pipeline(num_inference_steps=m["pipe_steps"], guidance_scale=5.0,
                                         repeats=m["pipe_repeats"], box=PIPE_BOX)
    times = dict(cpu=r["cpu"], wall=r["wall"])
    rr = ratio(times, "anydoor", "controlnet")
    return dict(what=f"anydoor.benchmark.compare_with_controlnet_pipeline: one insertion into the coffee photo, "
                     f"AnyDoor.tiny and its StableDiffusionControlNetPipeline twin (same UNet, ControlNet = the detail "
                     f"weights, random CLIP text encoder of the ID encoder's size), {m['pipe_steps']} DDIM steps, "
                     f"guidance 5.0, alternating calls after one warm-up each",
                sizes=dict(steps=m["pipe_steps"], repeats=m["pipe_repeats"]),
                timing=summarize(times), ratio=rr, value=rr["paired_median"], target="<= 1.05",
                met=_met(5, rr["paired_median"]), compare_with_controlnet_pipeline=r,
                peak=peaks("5", ["anydoor", "controlnet"], dict(steps=m["pipe_steps"]), m))


# -- figure 6: growth --------------------------------------------------------------------------
def sampler(S: int, steps: int):
    "One DDIM + CFG generation of one crop (anydoor.sampling.generate) on a tiny AnyDoor."
    from anydoor.sampling import generate
    model = _tiny(S).eval()
    g = torch.Generator().manual_seed(0)
    ref = torch.rand(1, 3, model.reference_size, model.reference_size, generator=g)
    hint = torch.rand(1, 4, S, S, generator=g) * 2 - 1
    return lambda: generate(model, ref, hint, num_inference_steps=steps, guidance_scale=5.0,
                            generator=torch.Generator().manual_seed(0))


def figure6(m):
    """Training-step time and peak memory against image size and batch; sampling time against steps."""
    from benchmarks import steps as st
    out = dict(what="tiny preset, AnyDoor training step (AdamW) and generate() (DDIM, guidance 5.0, batch 1); "
                    "exponent k of a least-squares fit time ~ x^k on log-log axes")
    def sweep(label, xs, make, peak_fig, peak_params):
        fns = {str(x): make(x) for x in xs}
        t = interleaved(fns, m["growth_repeats"], 1)
        med = [float(np.median(t["cpu"][str(x)])) for x in xs]
        pk = {str(x): (peaks(peak_fig, ["anydoor" if peak_fig == "6train" else "generate"],
                             peak_params(x), m).popitem()[1]) for x in xs}
        row = dict(x=list(xs), median_s=med, time_exponent=fit_exponent(xs, med), timing=summarize(t), peak=pk)
        mem = [pk[str(x)]["step_rss_mb"] for x in xs if pk[str(x)] and pk[str(x)].get("step_rss_mb")]
        if len(mem) == len(xs) and min(mem) > 0: row["memory_exponent"] = fit_exponent(xs, mem)
        out[label] = row
        print(f"    {label}: {med}", flush=True)
    sweep("image_size", m["sizes"], lambda S: training_steps(S, m["size_batch"], which=("anydoor",))["anydoor"],
          "6train", lambda S: dict(S=S, B=m["size_batch"]))
    out["image_size"]["batch"] = m["size_batch"]
    sweep("batch", m["batches"], lambda B: training_steps(m["S"], B, which=("anydoor",))["anydoor"],
          "6train", lambda B: dict(S=m["S"], B=B))
    out["batch"]["image_size"] = m["S"]
    sweep("sampling_steps", m["sample_steps"], lambda n: sampler(m["S"], n), "6sample", lambda n: dict(S=m["S"], steps=n))
    out["sampling_steps"]["image_size"] = m["S"]
    return out


FIGURES = {1: figure1, 2: figure2, 3: figure3, 4: figure4, 5: figure5, 6: figure6}


# =============================================================================================
# Report
# =============================================================================================
def _fmt_peak(pk):
    if not pk: return "–"
    if "error" in pk: return "error"
    return f"{pk['peak_rss_mb']:.0f} (+{pk['step_rss_mb']:.0f})" if pk.get("step_rss_mb") is not None \
        else f"{pk['peak_rss_mb']:.0f}"


def markdown(res: dict) -> str:
    mach, figs = res["machine"], res["figures"]
    loaded = max(mach["loadavg_start"][0], res["loadavg_end"][0]) > 0.8 * mach["cores"]
    L = ["# CPU benchmarks", "",
         f"- date: {mach['date']}; machine: {mach['cpu']}, {mach['cores']} cores, torch {mach['torch']} "
         f"({mach['torch_threads']} thread{'s' if mach['torch_threads'] > 1 else ''} per process), "
         f"Python {mach['python']}, commit {mach['git_commit']}",
         f"- command: `{res['command']}` (mode `{res['mode']}`, {res['total_s']:.0f} s)",
         f"- load average (1/5/15 min) at start {mach['loadavg_start']}, at end {res['loadavg_end']}"
         + ("  — **shared machine: other processes ran; wall times are noisy, CPU-time ratios less so**"
            if loaded else ""), "",
         "Each comparison runs in its own process, alternating the two sides after warm-up. Ratio = median over "
         "rounds of ours / peer in CPU seconds of the process (wall-clock ratio beside it); figure 3 compares "
         "samples/s (wall), figure 4 is a speed-up (peer / ours). Peak RSS in MB, each configuration in a fresh "
         "process: the whole process (+ what the measured steps add over the built configuration).", "",
         "| # | comparison | ours | peer | ratio | ratio (wall) | target | met | peak RSS ours | peak RSS peer |",
         "|---|---|---|---|---|---|---|---|---|---|"]
    def row(n, name, a, b):
        f = figs.get(str(n)) or {}
        if not f or "skipped" in f or "error" in f or "value" not in f:
            why = (f.get("skipped") or f.get("error") or "not run") if f else "not run"
            L.append(f"| {n} | {name} | – | – | – | – | {TARGETS[n][0]} {TARGETS[n][1]} | – | – | – |")
            notes.append(f"Figure {n}: {why}")
            return
        if n == 3:
            sa, sb = (f"{f['samples_per_s'][k]['median']:.1f}/s" for k in (a, b))
            wall = "(same)"
        else:
            sa, sb = (f"{f['timing'][k]['median_s'] * 1e3:.1f} ms" for k in (a, b))
            wall = f"{f['ratio']['wall']['paired_median']:.2f}×"
        met = {True: "yes", False: "**no**", None: "–"}[f.get("met")]
        pk = f.get("peak") or {}
        L.append(f"| {n} | {name} | {sa} | {sb} | {f['value']:.2f}× | {wall} | {f['target']} | {met} | "
                 f"{_fmt_peak(pk.get(a))} | {_fmt_peak(pk.get(b))} |")
    notes = []
    row(1, "train step vs diffusers train_controlnet step", "anydoor", "controlnet")
    row(2, "train step vs naive port (backward through frozen encoder)", "anydoor", "naive")
    row(3, "train() samples/s, DataLoader vs pre-loaded batches", "loader", "preloaded")
    row(4, "high_frequency_map, 1 batched call vs per-image OpenCV (speed-up)", "torch_batched", "opencv_loop")
    row(5, "pipeline per insertion vs StableDiffusionControlNetPipeline", "anydoor", "controlnet")
    fl = [f"figure {n}: {figs[str(n)]['flop_ratio']:.2f}×" for n in (1, 2) if "flop_ratio" in (figs.get(str(n)) or {})]
    if fl:
        L += ["", "Work ratio (ours / peer, FLOPs of one step counted by torch's FlopCounterMode: matmuls, convolutions, "
                  "attention), which load does not blur: " + "; ".join(fl)
              + (f"; figure 2 vs `naive_allgrad`: {figs['2']['flop_ratio_vs_naive_allgrad']:.2f}×" if "2" in figs and
                 "flop_ratio_vs_naive_allgrad" in figs["2"] else "") + "."]
    f3 = figs.get("3")
    if f3 and "cost" in f3:
        c = f3["cost"]
        L += ["", f"Figure 3: one batch costs a data worker {c['data_cpu_s_per_batch'] * 1e3:.0f} ms CPU, a training step "
                  f"{c['train_step_cpu_s'] * 1e3:.0f} ms CPU (data = {c['data_share'] * 100:.0f}%). With a free core the "
                  f"workers overlap (ratio -> 1); with every core busy their CPU is taken from training: ratio -> "
                  f"{c['saturated_bound']:.2f}."]
    f2 = figs.get("2")
    if f2 and "timing" in f2:
        L += ["", f"Figure 2, other rows: naive port with `requires_grad` left on the frozen parts "
                  f"{f2['timing']['naive_allgrad']['median_s'] * 1e3:.1f} ms (ours / it = "
                  f"{f2['ratio_vs_naive_allgrad']['paired_median']:.2f}×, peak "
                  f"{_fmt_peak((f2.get('peak') or {}).get('naive_allgrad'))}); AnyDoor's own exact-gradient switch "
                  f"(detach_encoder_context=False) {f2['timing']['exact']['median_s'] * 1e3:.1f} ms "
                  f"({f2['ratio_exact_vs_naive']['paired_median']:.2f}× the naive port)."]
        if "parts" in f2:
            P = f2["parts"]
            L += ["", "Figure 2, where the time goes (ms per step, CPU): " + "; ".join(
                f"{k} {P['anydoor']['seconds'].get(k, 0) * 1e3:.0f} vs {P['naive']['seconds'].get(k, 0) * 1e3:.0f}"
                for k in P["anydoor"]["seconds"]) + " (AnyDoor vs naive)."]
    f1 = figs.get("1")
    if f1 and "parts" in f1:
        names = list(dict.fromkeys(list(f1["parts"]["anydoor"]["share"]) + list(f1["parts"]["controlnet"]["share"])))
        L += ["", "Figure 1, where a step's CPU time goes (module forwards by hooks; backward and optimizer as a "
                  "whole), share (ms per step):", "", "| part | AnyDoor | train_controlnet |", "|---|---|---|"]
        for k in names:
            cells = []
            for side in ("anydoor", "controlnet"):
                P = f1["parts"][side]
                cells.append(f"{P['share'].get(k, 0) * 100:.0f}% ({P['seconds'].get(k, 0) * 1e3:.1f})")
            L.append(f"| {k} | {cells[0]} | {cells[1]} |")
        z = f1.get("sizes", {})
        L += ["", f"Trainable parameters: AnyDoor {z.get('trainable_anydoor', 0):,} (detail extractor "
                  f"{z.get('detail_extractor', 0):,} + UNet decoder + projector), train_controlnet "
                  f"{z.get('trainable_controlnet', 0):,}."]
    f6 = figs.get("6")
    if f6 and "image_size" in f6:
        L += ["", "Figure 6, growth (exponent k of time ~ x^k, CPU seconds; memory exponent on what the steps add):", "",
              "| sweep | x | median s | peak RSS MB (+steps) | time exponent | memory exponent |",
              "|---|---|---|---|---|---|"]
        for key, label in (("image_size", f"train step vs image size (batch {f6['image_size'].get('batch')})"),
                           ("batch", f"train step vs batch (size {f6['batch'].get('image_size')})"),
                           ("sampling_steps", f"generate() vs DDIM steps (size {f6['sampling_steps'].get('image_size')}, CFG)")):
            r = f6[key]
            me = f"{r['memory_exponent']:.2f}" if "memory_exponent" in r else "–"
            L.append(f"| {label} | {', '.join(map(str, r['x']))} | {', '.join(f'{v:.3f}' for v in r['median_s'])} | "
                     f"{', '.join(_fmt_peak(r['peak'][str(x)]) for x in r['x'])} | {r['time_exponent']:.2f} | {me} |")
    elif f6 and "error" in f6: notes.append(f"Figure 6: {f6['error']}")
    f4 = figs.get("4")
    if f4 and "profile_torch" in f4:
        st = f4.get("steps", {})
        L += ["", f"Figure 4: outputs agree to {f4['max_abs_difference']:.1e} (max abs). CPU ms per stage of the torch "
              f"call: " + "; ".join(f"{k} {v}" for k, v in f4.get("profile_parts", {}).items()) + ". Top ops: "
              + "; ".join(f"{r['op']} {r['share'] * 100:.0f}%" for r in f4["profile_torch"][:4]) + "."]
        if st:
            L += ["", f"Figure 4, the readable `high_frequency_steps` (the library's function before the fast path; "
                  f"max abs difference {st['max_abs_difference']:.1e}): "
                  f"{f4['timing']['torch_steps']['median_s'] * 1e3:.1f} ms; the fast path is "
                  f"{st['speedup_of_ours']['paired_median']:.2f}× faster."]
    if notes: L += [""] + [f"- {x}" for x in notes]
    return "\n".join(L) + "\n"


def set_threads(n: int) -> None:
    "Use `n` torch threads here and in every subprocess this process starts."
    torch.set_num_threads(n)
    import cv2; cv2.setNumThreads(n)
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(n)
    os.environ["ANYDOOR_BENCH_THREADS"] = str(n)


def figure_worker(n: int, mode_name: str, mode: dict, json_out: str) -> None:
    "`--figure`: run one figure in this (fresh) process and write its result as JSON."
    t0, load0 = time.perf_counter(), os.getloadavg()
    torch.manual_seed(0)
    try:
        r = FIGURES[n](mode)
    except Exception as e:                     # a broken figure must not lose the others
        import traceback; traceback.print_exc()
        r = dict(error=f"{type(e).__name__}: {e}")
    r["seconds"] = round(time.perf_counter() - t0, 1)
    r["loadavg"] = dict(start=[round(x, 2) for x in load0], end=[round(x, 2) for x in os.getloadavg()])
    write_json(Path(json_out), r)


def run_figure(n: int, a, timeout: float) -> dict:
    "Run figure `n` in a fresh subprocess (one process per comparison); its stdout streams through."
    import subprocess
    with tempfile.TemporaryDirectory() as d:
        js = Path(d) / "fig.json"
        cmd = [sys.executable, "-m", MODULE, "--figure", str(n), "--json", str(js), "--threads", str(a.threads)]
        cmd += ["--quick"] * a.quick + ["--no-peaks"] * a.no_peaks
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(Path(__file__).resolve().parent.parent)] + [x for x in [os.environ.get("PYTHONPATH")] if x]))
        try:
            p = subprocess.run(cmd, env=env, timeout=timeout)
        except subprocess.TimeoutExpired:
            return dict(error=f"timed out after {timeout:.0f} s")
        if js.exists(): return json.loads(js.read_text())
        return dict(error=f"figure process exited with {p.returncode} and wrote nothing")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/results", help="folder for cpu.json and cpu.md")
    ap.add_argument("--quick", action="store_true", help="smallest configuration (seconds; for tests)")
    ap.add_argument("--only", default="1,2,3,4,5,6", help="comma-separated figure numbers")
    ap.add_argument("--no-peaks", action="store_true", help="skip the peak-memory subprocesses")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("ANYDOOR_BENCH_THREADS", 1)),
                    help="torch threads per process (default 1: stable on a shared machine; see README)")
    ap.add_argument("--timeout", type=float, default=900, help="seconds allowed per figure")
    ap.add_argument("--peak", nargs=3, metavar=("FIGURE", "CONFIG", "PARAMS"), help=argparse.SUPPRESS)
    ap.add_argument("--figure", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--json", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    set_threads(a.threads)
    if a.peak: return peak_main(*a.peak)
    mode_name = "quick" if a.quick else "full"
    mode = dict(MODES[mode_name])
    if a.no_peaks: mode["peaks"] = False
    if a.figure: return figure_worker(a.figure, mode_name, mode, a.json)
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    figs = [int(x) for x in a.only.split(",") if x.strip()]
    res = dict(command="python -m benchmarks.cpu " + " ".join(argv if argv is not None else sys.argv[1:]),
               mode=mode_name, settings=mode, machine=machine(), figures={})
    t_all = time.perf_counter()
    for n in figs:
        print(f"figure {n} ...", flush=True)
        if a.quick:                                  # a smoke check: all figures in this process, one import
            with tempfile.TemporaryDirectory() as d:
                figure_worker(n, mode_name, mode, str(Path(d) / "f.json"))
                r = json.loads((Path(d) / "f.json").read_text())
        else:
            r = run_figure(n, a, a.timeout)
        res["figures"][str(n)] = r
        res["total_s"], res["loadavg_end"] = time.perf_counter() - t_all, [round(x, 2) for x in os.getloadavg()]
        write_json(out / "cpu.json", res)
        (out / "cpu.md").write_text(markdown(res))
        print(f"figure {n}: value={r.get('value')} met={r.get('met')} ({r.get('seconds')} s) {r.get('error', '')}",
              flush=True)
    print((out / "cpu.md").read_text())
    return res


if __name__ == "__main__":
    main()
