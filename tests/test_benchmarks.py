"""The benchmark scripts run and write what the README shows (functional only: nothing here is timed).

`python -m benchmarks.cpu --quick` runs every CPU figure at its smallest size in one process (plus one
peak-memory subprocess); `benchmarks/gpu.py --smoke` runs the GPU script's code path on the CPU with
AnyDoor.tiny. Both are called in this process to share its imports.
"""
import json, math

import pytest

from benchmarks import cpu, gpu


def test_cpu_quick(tmp_path):
    res = cpu.main(["--out", str(tmp_path), "--quick"])
    data = json.loads((tmp_path / "cpu.json").read_text())
    assert data["mode"] == "quick" and data["machine"]["cores"] >= 1 and len(data["machine"]["loadavg_start"]) == 3
    for n in ("1", "2", "3", "4", "5"):
        f = data["figures"][n]
        assert "error" not in f, f
        assert math.isfinite(f["value"]) and f["value"] > 0 and isinstance(f["met"], bool) and f["target"]
    assert set(data["figures"]["1"]["parts"]["anydoor"]["share"]) >= {"ID encoder", "detail branch", "UNet encoder",
                                                                      "UNet decoder", "backward", "optimizer (clip + AdamW)"}
    assert data["figures"]["4"]["max_abs_difference"] < 1e-6                  # same recipe as OpenCV
    assert data["figures"]["4"]["steps"]["max_abs_difference"] == 0               # fast path == readable steps
    pk = data["figures"]["4"]["peak"]["torch_batched"]                          # the one peak-memory subprocess
    assert pk["peak_rss_mb"] > 0 and pk["hwm_reset"] in (True, False)
    for key in ("image_size", "batch", "sampling_steps"):
        assert math.isfinite(data["figures"]["6"][key]["time_exponent"])
    md = (tmp_path / "cpu.md").read_text()
    assert md.startswith("# CPU benchmarks") and "| # | comparison |" in md and "load average" in md
    assert md.count("\n| ") >= 6 and res["figures"].keys() == data["figures"].keys()


def test_gpu_smoke(tmp_path):
    res = gpu.main([str(tmp_path / "bench"), "--smoke"])
    data = json.loads((tmp_path / "bench" / "gpu.json").read_text())
    assert data["done"] and data["smoke"] and res["device"].startswith("cpu")
    for k in ("inference", "training", "ratios_1_2", "ratio_5_pipeline"):
        assert "error" not in data[k] and "skipped" not in data[k], (k, data[k])
    assert data["inference"]["seconds_per_insertion"] > 0
    rows = data["training"]["rows"]
    assert {(r["batch"], r["checkpointing"]) for r in rows} == {(1, False), (1, True), (2, False), (2, True)}
    assert all(r["model_tflop_per_step"] > 0 and r["mfu"] > 0 for r in rows)
    assert data["ratios_1_2"]["ratio_1_vs_controlnet"] > 0 and data["ratios_1_2"]["ratio_2_vs_naive"] > 0
    f5 = data["ratio_5_pipeline"]
    assert f5["ratio_5"] > 0 and f5["sd21_twin"]["ratio"] > 0                  # both comparison paths ran


def test_gpu_smoke_rejects_bad_args(tmp_path):
    with pytest.raises(SystemExit):
        gpu.main([])                                                           # the output folder is required


def _script(name, *args, timeout=600):
    "Run benchmarks/<name> with bash, this interpreter as its PYTHON."
    import os, subprocess, sys
    from pathlib import Path
    script = Path(__file__).resolve().parents[1] / "benchmarks" / name
    return subprocess.run(["bash", str(script), *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, PYTHON=sys.executable))


def _gpu_sweep(*args): return _script("gpu_sweep.sh", *args)


def test_gpu_sweep_smoke(tmp_path):
    "The GPU sweep's commands at seconds' scale: every run, its W&B offline images, the table and the plot."
    out = tmp_path / "sweep"
    res = _gpu_sweep(str(out), "--smoke")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    runs = sorted(p.parent for p in out.rglob("summary.json"))
    # one folder per job: <job number>_<experiment>_seed<seed> (each seed is its own multirun, so job numbers repeat)
    assert sorted(r.name for r in runs) == sorted(f"{j}_{e}_seed{s}" for j, e in enumerate(("abl_full", "abl_id_none"))
                                                  for s in (0, 1))
    for r in runs:
        s = json.loads((r / "summary.json").read_text())
        assert s["step"] == 2 and math.isfinite(s["loss"]) and 0 <= s["identity_top1"] <= 1
        assert list(r.glob("wandb/offline-run-*/files/media/images/eval/*.png")), r
    table = (out / "table.md").read_text()
    assert "| abl_full |" in table and "| abl_id_none |" in table and "Paired by seed against abl_full" in table
    assert (out / "ablation.png").stat().st_size > 0 and (out / "time.txt").read_text().startswith("sweep: ")


def test_gpu_sweep_usage():
    res = _gpu_sweep()
    assert res.returncode != 0 and "usage: gpu_sweep.sh OUT" in res.stderr


def test_base_scale_smoke(tmp_path):
    "The latent-scale GPU check's commands at seconds' scale: both arms pretrain from scratch, fine-tune, evaluate, tabulate."
    import os, subprocess, sys
    from pathlib import Path
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "base_scale.sh"
    out = tmp_path / "scale"
    res = subprocess.run(["bash", str(script), str(out), "--smoke"], capture_output=True, text=True, timeout=600,
                         env=dict(os.environ, PYTHON=sys.executable))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    for scale in ("1.0", "2.29"):
        vae = json.loads((out / f"base-{scale}" / "toy-sd" / "vae" / "config.json").read_text())
        assert vae["scaling_factor"] == float(scale)
        log = json.loads((out / f"base-{scale}" / "pretrain_log.json").read_text())
        assert log["config"]["latent_scale"] == float(scale) and log["base"]["steps"] == 2
        assert f"--latent-scale {scale}" in log["reproduce"]
        s = json.loads((out / f"main-{scale}" / "seed0" / "summary.json").read_text())
        assert s["step"] == 2 and math.isfinite(s["loss"]) and "before_identity_top1" in s
        cfg = (out / f"main-{scale}" / "seed0" / ".hydra" / "config.yaml").read_text()
        assert str(out / f"base-{scale}") in cfg, cfg
    rows = [l for l in (out / "table.md").read_text().splitlines() if l.startswith(("| 1.0 (2 base steps) |", "| 2.29 (2 base steps) |"))]
    assert len(rows) == 2 and all(" (1) |" in l for l in rows), rows
    usage = subprocess.run(["bash", str(script)], capture_output=True, text=True)
    assert usage.returncode != 0 and "usage: base_scale.sh OUT" in usage.stderr


def test_toy64_smoke(tmp_path):
    "The prepared 64-px GPU run at seconds' scale: a toy VAE foundation, a 64-px fine-tune, the judge's evaluation."
    out = tmp_path / "toy64"
    res = _script("toy64.sh", out, "--smoke", timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    vae = json.loads((out / "foundation" / "toy-sd" / "vae" / "config.json").read_text())
    assert vae["_class_name"] == "AutoencoderKL"
    s = json.loads((out / "main" / "summary.json").read_text())
    assert s["step"] == 2 and 0 <= s["judge_identity"] <= 1 and "before_judge_shape" in s
    assert (out / "time.txt").read_text().startswith("toy64: ")
