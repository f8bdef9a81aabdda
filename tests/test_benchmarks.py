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
    assert data["figures"]["4"]["proposed"]["max_abs_difference_vs_current"] < 1e-6
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
