"""Shared helpers for the benchmarks: interleaved timing, peak memory, machine facts, reports.

Timing: every configuration of a figure runs in the same process, alternating (ABAB..., the order
reversed every other round so neither side always runs first), after warm-up; we report the median
and the median of the per-round ratios (robust to slow drifts in machine load).

Peak memory: a process's peak RSS (`VmHWM`) only grows, so configurations measured one after the
other in one process cannot be told apart. Each configuration's peak is therefore taken in a fresh
subprocess (`python -m benchmarks.cpu --peak ...`): it builds the configuration, records its RSS,
resets the kernel's high-water mark (`echo 5 > /proc/self/clear_refs`, Linux >= 4.0), runs the
same steps and reads `VmHWM` again. `peak_rss_mb` is the whole process (Python, torch, the model);
`step_rss_mb` is what the steps add over the built configuration (activations, gradients,
optimizer state, allocator slack).
"""
from __future__ import annotations
import json, os, platform, subprocess, sys, time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np


# -- timing -----------------------------------------------------------------------------------
# Each call is timed twice: wall seconds (perf_counter) and CPU seconds of this process
# (process_time, all its threads). With one torch thread on an idle machine the two agree; on a
# shared machine wall time also counts the time slices other processes take, so the headline
# ratios use CPU seconds and the wall ratios are reported beside them.
def interleaved(fns: dict, repeats: int = 5, warmup: int = 1, inner: int = 1) -> dict:
    "Time each callable in `fns` (name -> fn) alternately: `warmup` untimed rounds, then `repeats` rounds."
    for _ in range(warmup):
        for f in fns.values(): f()
    wall, cpu = {k: [] for k in fns}, {k: [] for k in fns}
    names = list(fns)
    for r in range(repeats):
        for k in (names if r % 2 == 0 else names[::-1]):
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(inner): fns[k]()
            wall[k].append((time.perf_counter() - t0) / inner); cpu[k].append((time.process_time() - c0) / inner)
    return dict(wall=wall, cpu=cpu)


def summarize(times: dict) -> dict:
    "Median CPU and wall seconds of each configuration, with the raw values."
    out = {}
    for k in times["cpu"]:
        c, w = times["cpu"][k], times["wall"][k]
        out[k] = dict(median_s=float(np.median(c)), median_wall_s=float(np.median(w)),
                      cpu_s=[round(float(x), 5) for x in c], wall_s=[round(float(x), 5) for x in w])
    return out


def _ratio(pa, pb) -> dict:
    pa, pb = np.asarray(pa), np.asarray(pb)
    per = pa / pb
    return dict(paired_median=float(np.median(per)), of_medians=float(np.median(pa) / np.median(pb)),
                paired_min=float(per.min()), paired_max=float(per.max()))


def ratio(times: dict, a: str, b: str) -> dict:
    "a / b in CPU seconds (median of the per-round ratios, ratio of medians, spread), and the same in wall seconds."
    out = _ratio(times["cpu"][a], times["cpu"][b])
    out["wall"] = _ratio(times["wall"][a], times["wall"][b])
    return out


# -- memory -----------------------------------------------------------------------------------
def _status_kb(key: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"): return int(line.split()[1])
    return -1


def rss_mb() -> float: return _status_kb("VmRSS") / 1024
def hwm_mb() -> float: return _status_kb("VmHWM") / 1024


def reset_peak() -> bool:
    "Reset this process's peak RSS to its current RSS (Linux clear_refs); False where not allowed."
    try:
        with open("/proc/self/clear_refs", "w") as f: f.write("5")
        return True
    except OSError:
        return False


def measure_peak(setup, run) -> dict:
    "Peak RSS of `run(state)` after `state = setup()`, in this (fresh) process."
    import resource
    state = setup()
    base = rss_mb()
    ok = reset_peak()
    run(state)
    peak = hwm_mb()
    out = dict(peak_rss_mb=round(peak, 1), setup_rss_mb=round(base, 1),
               step_rss_mb=round(peak - base, 1) if ok else None, hwm_reset=ok)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if kids > 0: out["largest_child_peak_rss_mb"] = round(kids, 1)
    return out


def peak_in_subprocess(module: str, figure: str, config: str, params: dict, timeout: float = 300) -> dict:
    "Run `python -m <module> --peak <figure> <config> <json params>` and parse its last stdout line."
    cmd = [sys.executable, "-m", module, "--peak", figure, config, json.dumps(params)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parent.parent),
                                                       os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return dict(error=f"timed out after {timeout}s")
    if p.returncode != 0:
        return dict(error=(p.stderr or p.stdout).strip().splitlines()[-1:] or ["failed"])
    return json.loads(p.stdout.strip().splitlines()[-1])


# -- facts about the run ------------------------------------------------------------------------
def machine() -> dict:
    "Where and when this ran: CPU, cores, load, versions, git commit."
    import torch
    cpu = platform.processor()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"): cpu = line.split(":", 1)[1].strip(); break
    except OSError: pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent).stdout.strip()
    except OSError: commit = ""
    return dict(date=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), cpu=cpu, cores=os.cpu_count(),
                torch_threads=torch.get_num_threads(), python=platform.python_version(), torch=torch.__version__,
                platform=platform.platform(), git_commit=commit, loadavg_start=[round(x, 2) for x in os.getloadavg()])


def fit_exponent(xs, ys) -> float:
    "Slope of log(y) against log(x): y ~ x^k."
    k, _ = np.polyfit(np.log(np.asarray(xs, float)), np.log(np.asarray(ys, float)), 1)
    return float(k)


def write_json(path: Path, obj) -> None:
    path = Path(path); path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str))
    os.replace(tmp, path)
