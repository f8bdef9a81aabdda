"""anydoor.benchmark: the paper's evaluation protocol (SPEC §10) on a tiny benchmark folder with tiny models saved
locally: layout checks, CLIP-I/DINO-I, background PSNR, FID/KID with a custom feature network, resume, fail-fast;
and the ControlNet twin used for timing."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from anydoor.benchmark import (BENCHMARK_FILE, TinyFeatures, background_psnr, coco_scenes, controlnet_twin,
                               evaluate_benchmark, fid_kid, inception_features, load_benchmark, results_markdown,
                               save_tiny_evaluators, write_benchmark, ImageEncoder)
from anydoor.core import sample_object, sample_scene
from anydoor.id_extractor import ModelNotAvailableError
from anydoor.model import AnyDoor
from anydoor.pipeline import AnyDoorPipeline


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    gift, gmask = sample_object("gift")
    rgba = gift.copy()
    rgba.putalpha(gmask)
    logo = sample_object("logo")
    scenes = {"coffee": (sample_scene("coffee").resize((150, 100)), (60, 20, 100, 60)),
              "cat": (sample_scene("chelsea").resize((120, 80)), (10, 30, 50, 70))}
    return write_benchmark(root / "b", {"gift": (rgba, None), "logo": logo}, scenes, name="tiny")


@pytest.fixture(scope="module")
def evaluators(tmp_path_factory):
    return save_tiny_evaluators(tmp_path_factory.mktemp("ev"))


@pytest.fixture(scope="module")
def pipe():
    p = AnyDoorPipeline.from_model(AnyDoor.tiny())
    p.set_progress_bar_config(disable=True)
    return p


def run(pipe, bench, out, evaluators, **kw):
    kw = dict(dict(clip=evaluators["clip"], dino=evaluators["dino"], fid_feature=TinyFeatures(), num_inference_steps=2,
                   batch_size=3, model_name="tiny"), **kw)
    return evaluate_benchmark(pipe, bench, out, **kw)


# ---------------------------------------------------------------- the folder
def test_layout_round_trip(bench):
    b = load_benchmark(bench.root)
    assert b.name == "tiny" and set(b.subjects) == {"gift", "logo"} and len(b.pairs) == 4
    assert b.subjects["gift"]["mask"] is None and b.subjects["logo"]["mask"] is not None
    img, mask = b.subject("gift")
    assert img.mode == "RGB" and mask.mode == "L" and np.asarray(mask).max() == 255
    assert b.scenes["cat"]["box"] == (10, 30, 50, 70)


def bad_folder(bench, tmp_path, **change):
    spec = json.loads((bench.root / BENCHMARK_FILE).read_text()) | change
    for sub in ("subjects", "scenes"):
        (tmp_path / sub).symlink_to(bench.root / sub)
    (tmp_path / BENCHMARK_FILE).write_text(json.dumps(spec))
    return tmp_path


@pytest.mark.parametrize("change,msg", [
    (dict(subjects={}), "`subjects` must be a non-empty object"),
    (dict(subjects={"x": "subjects/gift.png"}), "subjects['x'] must be an object"),
    (dict(subjects={"x": {"image": "subjects/none.png"}}), "subjects['x'].image: no such file"),
    (dict(subjects={"x": {"image": "subjects/logo.png"}}), "no alpha channel"),
    (dict(subjects={"x": {"image": "subjects/logo.png", "mask": 3}}), "subjects['x'].mask must be a path"),
    (dict(scenes={"c": {"image": "scenes/coffee.png", "box": [0, 0, 500, 10]}}), "scenes['c'].box"),
    (dict(scenes={"c": {"image": "scenes/coffee.png"}}), "scenes['c'].box"),
    (dict(pairs=[["gift", "moon"]]), "pairs[0]"),
    (dict(pairs="some"), "`pairs` must be"),
])
def test_bad_folders(bench, tmp_path, change, msg):
    with pytest.raises((ValueError, FileNotFoundError, TypeError)) as e:
        load_benchmark(bad_folder(bench, tmp_path, **change))
    assert msg in str(e.value), str(e.value)


def test_missing_and_broken_manifest(tmp_path):
    with pytest.raises(FileNotFoundError, match="has no benchmark.json"):
        load_benchmark(tmp_path)
    (tmp_path / BENCHMARK_FILE).write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_benchmark(tmp_path)


def test_coco_scenes(tmp_path):
    coco = dict(images=[dict(id=139, file_name="000000000139.jpg", width=640, height=426)],
                annotations=[dict(id=7, image_id=139, bbox=[412.8, 157.6, 53.1, 138.3])])
    (tmp_path / "inst.json").write_text(json.dumps(coco))
    assert coco_scenes(tmp_path / "inst.json", [7]) == {
        "000000000139_7": dict(file_name="000000000139.jpg", box=[412, 157, 466, 296])}
    with pytest.raises(ValueError, match="`annotation_ids`: 8"):
        coco_scenes(tmp_path / "inst.json", [8])


# ---------------------------------------------------------------- metrics
def test_background_psnr():
    scene = Image.fromarray(np.full((20, 30, 3), 100, np.uint8))
    gen = np.asarray(scene).copy()
    gen[5:10, 5:10] = 0           # inside the box
    gen[2, 2] = 110               # in the crop, outside the box
    r = background_psnr(Image.fromarray(gen), scene, (5, 5, 10, 10), (0, 0, 15, 15))
    assert np.isfinite(r["bg_psnr"]) and r["crop_bg_psnr"] < r["bg_psnr"]
    same = background_psnr(scene, scene, (5, 5, 10, 10), (0, 0, 15, 15))
    assert same["bg_psnr"] == float("inf")


def test_fid_kid_custom_feature():
    rng = np.random.default_rng(0)
    real = [Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)) for _ in range(6)]
    fake = [Image.fromarray(np.full((16, 16, 3), (200 + 9 * i, 20 + 3 * i, 10), np.uint8)) for i in range(6)]
    near = fid_kid(real, real, TinyFeatures(), image_size=16)
    far = fid_kid(real, fake, TinyFeatures(), image_size=16)
    assert abs(near["fid"]) < 1e-3 and far["fid"] > near["fid"] and far["kid_mean"] > near["kid_mean"]
    with pytest.raises(ValueError, match="at least 2 images"):
        fid_kid(real[:1], fake, TinyFeatures())


def test_encoders(evaluators, bench):
    img, _ = bench.subject("gift")
    for family in ("clip", "dino"):
        enc = ImageEncoder(evaluators[family], family)
        e = enc([img, img.rotate(90), bench.scene("cat")])
        assert e.shape[0] == 3 and torch.allclose(e.norm(dim=1), torch.ones(3))
    with pytest.raises(ValueError, match="`family` must be"):
        ImageEncoder(evaluators["clip"], "lpips")


# ---------------------------------------------------------------- the protocol
def test_protocol_end_to_end_and_resume(pipe, bench, evaluators, tmp_path):
    res = run(pipe, bench, tmp_path / "run", evaluators)
    s = res["summary"]
    assert s["num_pairs"] == 4 and len(res["pairs"]) == 4
    for k in ("clip_i", "dino_i", "bg_psnr", "crop_bg_psnr", "fid", "kid_mean", "kid_std"):
        assert s[k] is not None and np.isfinite(s[k]), k
    for r in res["pairs"]:
        assert (tmp_path / "run" / r["image"]).is_file() and -100 <= r["clip_i"] <= 100
        assert Image.open(tmp_path / "run" / r["image"]).size == bench.scene(r["scene"]).size
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["summary"] == pytest.approx(s) and saved["config"]["num_inference_steps"] == 2
    md = (tmp_path / "run" / "results.md").read_text()
    assert md.startswith("| model | CLIP-I") and "| tiny |" in md
    # resume: nothing is generated again, the scores are the same
    again = run(pipe, bench, tmp_path / "run", evaluators)
    assert again["config"]["seconds_per_insertion"] is None
    assert again["summary"]["clip_i"] == pytest.approx(s["clip_i"], abs=1e-4)
    # a comparison table from results files
    table = results_markdown({"a": tmp_path / "run" / "results.json", "b": again})
    assert table.count("\n") == 4


def test_seeds_are_per_pair(pipe, bench, evaluators, tmp_path):
    a = run(pipe, bench, tmp_path / "a", evaluators, clip=None, dino=None, fid_feature=None, batch_size=1)
    b = run(pipe, bench, tmp_path / "b", evaluators, clip=None, dino=None, fid_feature=None, batch_size=4)
    for ra, rb in zip(a["pairs"], b["pairs"]):
        ia = np.asarray(Image.open(tmp_path / "a" / ra["image"]), np.float32)
        ib = np.asarray(Image.open(tmp_path / "b" / rb["image"]), np.float32)
        assert ra["seed"] == rb["seed"] and np.abs(ia - ib).max() <= 2     # batching changes only rounding


def test_fail_fast_before_generating(pipe, bench, evaluators, tmp_path):
    from torchmetrics.utilities.imports import _TORCH_FIDELITY_AVAILABLE
    if not _TORCH_FIDELITY_AVAILABLE:
        with pytest.raises(ModelNotAvailableError, match="torch-fidelity"):
            run(pipe, bench, tmp_path / "r", evaluators, fid_feature="inception")
    else:
        with pytest.raises(FileNotFoundError, match="`inception_weights`"):
            inception_features(tmp_path / "none.pth")
    with pytest.raises(OSError, match="Cannot load the CLIP image encoder"):
        run(pipe, bench, tmp_path / "r", evaluators, clip=str(tmp_path / "no-clip"))
    with pytest.raises(OSError, match="Cannot load the DINO image encoder"):
        run(pipe, bench, tmp_path / "r", evaluators, dino="no-org/no-dino")
    with pytest.raises(TypeError, match="`fid_feature` must be"):
        run(pipe, bench, tmp_path / "r", evaluators, fid_feature=3)
    assert not (tmp_path / "r" / "generated.jsonl").exists()


def test_command_line(pipe, bench, evaluators, tmp_path, capsys):
    from anydoor.benchmark import main
    assert main(["--model", "x", "--benchmark", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 2
    assert "has no benchmark.json" in capsys.readouterr().err
    pipe.save_pretrained(tmp_path / "p")
    assert main(["--model", str(tmp_path / "p"), "--benchmark", str(bench.root), "--out", str(tmp_path / "o"),
                 "--clip", evaluators["clip"], "--dino", evaluators["dino"], "--no-fid", "--steps", "1",
                 "--limit", "2"]) == 0
    assert "| CLIP-I" in capsys.readouterr().out


def test_fid_feeds_native_uint8_sizes_by_default():
    "Standard FID: no resize before the Inception (it resizes like TensorFlow 1.x itself); images batched by size."
    seen = []
    class Recorder(TinyFeatures):
        def forward(self, x):
            seen.append((x.dtype, tuple(x.shape[-2:]))); return super().forward(x)
    rng = np.random.default_rng(1)
    real = [Image.fromarray(rng.integers(0, 255, (16 + 8 * (i % 2), 20, 3), dtype=np.uint8)) for i in range(4)]
    fid_kid(real, real, Recorder())
    assert {s for _, s in seen} == {(16, 20), (24, 20)} and {d for d, _ in seen} == {torch.uint8}
    seen.clear(); fid_kid(real, real, Recorder(), image_size=32)
    assert {s for _, s in seen} == {(32, 32)}


# ---------------------------------------------------------------- the ControlNet twin (timing)
def test_controlnet_twin_is_the_same_work():
    m = AnyDoor.tiny()
    twin = controlnet_twin(m)
    assert twin.unet is m.unet
    cn = twin.controlnet.state_dict()
    det = m.detail.state_dict()
    assert all(torch.equal(cn[k], det[k]) for k in det)
    assert twin.text_encoder.config.hidden_size == m.unet.config.cross_attention_dim
    assert twin.tokenizer.model_max_length == m.id_extractor.num_tokens
    twin.set_progress_bar_config(disable=True)
    out = twin(prompt="", image=torch.zeros(1, 4, 32, 32), height=32, width=32, num_inference_steps=1,
               output_type="np").images
    assert out.shape == (1, 32, 32, 3)


def test_controlnet_twin_builds_at_sd_size():
    "The benchmark's diffusers twin at SD 2.1 + DINOv2-giant sizes (shapes only, on the meta device): 24 heads do not divide 1024."
    sd = AnyDoor.sd21_architecture(device="meta")
    twin = controlnet_twin(sd)
    assert twin.text_encoder.config.hidden_size == 1024 and 1024 % twin.text_encoder.config.num_attention_heads == 0
    extra = sum(p.numel() for p in twin.controlnet.parameters()) - sum(p.numel() for p in sd.detail.parameters())
    assert extra == sum(p.numel() for p in twin.controlnet.conv_in.parameters())   # the released branch has no conv_in
