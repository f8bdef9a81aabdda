"""anydoor-insert end to end on real photos (a subprocess, as a user runs it) and every bad argument (in-process)."""
import contextlib
import io
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from anydoor.cli import build_parser, load_pipeline, main, parse_box, shipped_model
from anydoor.core import sample_object, sample_scene
from anydoor.model import AnyDoor
from anydoor.pipeline import AnyDoorPipeline

BOX = "120,40,220,140"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    AnyDoorPipeline.from_model(AnyDoor.tiny()).save_pretrained(d / "model")
    gift, mask = sample_object("gift")
    rgba = gift.copy()
    rgba.putalpha(mask)
    rgba.save(d / "gift.png")
    gift.save(d / "gift.jpg")
    mask.save(d / "gift_mask.png")
    logo, logo_mask = sample_object("logo")
    logo.save(d / "logo.png")
    logo_mask.save(d / "logo_mask.png")
    sample_scene("coffee").resize((300, 200)).save(d / "coffee.jpg")
    sm = np.zeros((200, 300), np.uint8)
    sm[40:140, 120:220] = 255
    Image.fromarray(sm).save(d / "scene_mask.png")
    (d / "notes.txt").write_text("not an image")
    (d / "bomb.png").write_bytes(bomb_png())
    (d / "outdir.png").mkdir()
    return d


def bomb_png(side: int = 100_000) -> bytes:
    "A valid PNG header claiming side x side pixels (a decompression bomb as PIL sees it), with no real data."
    import struct, zlib
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def run_cli(*args):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main([str(a) for a in args])
        except SystemExit as e:
            code = e.code
    return code, err.getvalue()


def test_end_to_end_subprocess(files):
    exe = os.path.join(os.path.dirname(sys.executable), "anydoor-insert")
    cmd = [exe] if os.path.exists(exe) else [sys.executable, "-m", "anydoor.cli"]
    out = files / "out.png"
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    r = subprocess.run(cmd + ["--reference", str(files / "gift.jpg"), "--reference-mask", str(files / "gift_mask.png"),
                              "--scene", str(files / "coffee.jpg"), "--box", BOX, "--model", str(files / "model"),
                              "--steps", "2", "--seed", "3", "--blend", "4", "--out", str(out)],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "wrote" in r.stdout
    img, scene = np.asarray(Image.open(out)), np.asarray(Image.open(files / "coffee.jpg"))
    assert img.shape == scene.shape
    assert (img[:, :40] == scene[:, :40]).all() or (img[:, -40:] == scene[:, -40:]).all()   # far background kept


def test_in_process_variants(files):
    common = ["--scene", files / "coffee.jpg", "--model", files / "model", "--steps", 1]
    # RGBA reference without a mask; scene mask instead of a box; shape control
    assert run_cli("--reference", files / "gift.png", "--scene-mask", files / "scene_mask.png", "--shape-control",
                   *common, "--out", files / "a.png")[0] == 0
    # two objects, one call
    code, err = run_cli("--reference", files / "gift.jpg", "--reference-mask", files / "gift_mask.png", "--box", BOX,
                        "--reference", files / "logo.png", "--reference-mask", files / "logo_mask.png",
                        "--box", "10,10,80,80", *common, "--out", files / "b.png")
    assert code == 0, err
    assert Image.open(files / "b.png").size == (300, 200)
    # the untrained tiny preset, without any folder
    assert run_cli("--reference", files / "gift.png", "--box", BOX, "--scene", files / "coffee.jpg", "--tiny-random",
                   "--steps", 1, "--out", files / "c.png")[0] == 0


def test_seed_makes_it_reproducible(files):
    args = ["--reference", files / "gift.png", "--box", BOX, "--scene", files / "coffee.jpg", "--model", files / "model",
            "--steps", 1]
    for name, seed in (("s1.png", 1), ("s1b.png", 1), ("s2.png", 2)):
        assert run_cli(*args, "--seed", seed, "--out", files / name)[0] == 0
    a, b, c = (np.asarray(Image.open(files / n)) for n in ("s1.png", "s1b.png", "s2.png"))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_no_model_and_no_shipped_model(files, monkeypatch):
    monkeypatch.setattr("anydoor.cli.shipped_model", lambda: None)
    code, err = run_cli("--reference", files / "gift.png", "--box", BOX, "--scene", files / "coffee.jpg",
                        "--out", files / "x.png")
    assert code == 2 and "ships no trained weights" in err and "--tiny-random" in err


def test_shipped_model_is_found(tmp_path, monkeypatch):
    import anydoor
    fake = tmp_path / "anydoor"
    (fake / "weights" / "anydoor-tiny").mkdir(parents=True)
    monkeypatch.setattr(anydoor, "__file__", str(fake / "__init__.py"))
    assert shipped_model() is None
    AnyDoor.tiny().save_pretrained(fake / "weights" / "anydoor-tiny")
    assert shipped_model() == fake / "weights" / "anydoor-tiny"
    assert type(load_pipeline(None)).__name__ == "AnyDoorPipeline"


BAD = [
    (["--reference", "{d}/nope.png", "--scene", "{d}/coffee.jpg", "--box", BOX], "--reference: no such file"),
    (["--reference", "{d}/gift.png", "--scene", "{d}/nope.jpg", "--box", BOX], "--scene: no such file"),
    (["--reference", "{d}/gift.jpg", "--reference-mask", "{d}/nope.png", "--scene", "{d}/coffee.jpg", "--box", BOX],
     "--reference-mask: no such file"),
    (["--reference", "{d}/gift.png", "--scene", "{d}/coffee.jpg", "--scene-mask", "{d}/nope.png"], "--scene-mask: no such"),
    (["--reference", "{d}/gift.png", "--scene", "{d}/coffee.jpg", "--box", "1,2,3"], "must be four integers"),
    (["--reference", "{d}/gift.png", "--scene", "{d}/coffee.jpg", "--box", "a,b,c,d"], "must be four integers"),
    (["--reference", "{d}/gift.png", "--scene", "{d}/coffee.jpg", "--box", "9,9,3,20"], "must satisfy 0 <= x0 < x1"),
    (["--reference", "{d}/gift.png", "--scene", "{d}/coffee.jpg", "--box=-1,0,3,20"], "must satisfy 0 <= x0 < x1"),
    (["--reference", "{d}/gift.png", "--scene", "{d}/coffee.jpg"], "give --box"),
    (["--reference", "{d}/gift.png", "--scene", "{d}/coffee.jpg", "--box", BOX, "--box", BOX], "--box given 2 times"),
    (["--reference", "{d}/gift.png", "--scene", "{d}/coffee.jpg", "--box", BOX, "--shape-control"], "needs --scene-mask"),
    (["--reference", "{d}/gift.png", "--scene", "{d}/coffee.jpg", "--box", BOX, "--steps", "0"], "--steps: must be a positive"),
    (["--reference", "{d}/gift.png", "--scene", "{d}/coffee.jpg", "--box", BOX, "--steps", "x"], "--steps: must be a positive"),
    (["--reference", "{d}/gift.png", "--scene", "{d}/coffee.jpg", "--box", BOX, "--guidance", "-2"], "--guidance: must be"),
    (["--reference", "{d}/gift.png", "--scene", "{d}/coffee.jpg", "--box", BOX, "--blend", "-1"], "--blend: must be"),
    (["--reference", "{d}/gift.png", "--scene", "{d}/coffee.jpg", "--box", BOX, "--seed", "x"], "--seed: must be an integer in [0, 2**64)"),
    (["--reference", "{d}/gift.png", "--scene", "{d}/coffee.jpg", "--box", BOX, "--seed", str(2**70)],
     "--seed: must be an integer in [0, 2**64)"),
    (["--reference", "{d}/gift.png", "--scene", "{d}/coffee.jpg", "--box", BOX, "--device", "gpu0"], "--device: not a device name"),
    (["--reference", "{d}/gift.png", "--scene", "{d}/bomb.png", "--box", BOX, "--tiny-random"],
     "--scene: '{d}/bomb.png' claims a size beyond PIL's decompression-bomb limit"),
    (["--reference", "{d}/gift.png", "--scene", "{d}/coffee.jpg", "--box", BOX, "--model", "/no/such/anydoor"],
     "--model: no such folder '/no/such/anydoor'"),
    (["--reference", "{d}/gift.png", "--scene", "{d}/coffee.jpg", "--box", BOX, "OUT:{d}/outdir.png"], "--out names a folder"),
    (["--reference", "{d}/gift.png", "--scene", "{d}/coffee.jpg", "--box", BOX, "--dtype", "int8"], "--dtype: invalid choice"),
    (["--reference", "{d}/gift.png", "--scene", "{d}/coffee.jpg", "--box", BOX, "--tiny-random", "--model", "{d}/model"],
     "not both"),
    (["--reference", "{d}/gift.png", "--scene", "{d}/coffee.jpg", "--box", BOX, "OUT:{d}/out.txt"], "--out must end in"),
    (["--reference", "{d}/gift.png", "--scene", "{d}/coffee.jpg", "--box", BOX, "OUT:{d}/no/out.png"], "--out: the folder"),
    (["--reference", "{d}/gift.png", "--scene", "{d}/coffee.jpg", "--box", "250,150,400,260", "--tiny-random"],
     "lies outside the image"),
    (["--reference", "{d}/notes.txt", "--scene", "{d}/coffee.jpg", "--box", BOX, "--tiny-random"],
     "--reference: cannot read"),
    (["--reference", "{d}/gift.jpg", "--scene", "{d}/coffee.jpg", "--box", BOX, "--tiny-random"], "has no alpha channel"),
    (["--reference", "{d}/gift.png", "--scene", "{d}/coffee.jpg", "--box", BOX, "--model", "{d}/gift_mask.png"],
     "Cannot load the AnyDoor pipeline"),
    (["--reference", "{d}/gift.png", "--scene", "{d}/coffee.jpg", "--box", BOX, "--model", "no-org/no-model"],
     "Cannot load the AnyDoor pipeline"),
    (["--reference", "{d}/gift.png", "--scene", "{d}/coffee.jpg", "--box", BOX, "--model", "{d}"],
     "neither model_index.json"),
]


@pytest.mark.parametrize("args,msg", BAD, ids=[m for _, m in BAD])
def test_bad_arguments(files, args, msg, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = [a.split(":", 1)[1] for a in args if a.startswith("OUT:")]
    args = [a for a in args if not a.startswith("OUT:")] + ["--out", out[0] if out else "{d}/x.png"]
    code, err = run_cli(*[a.format(d=files) for a in args])
    assert code == 2, err
    assert msg.format(d=files) in err, err[-500:]


def test_a_device_this_machine_lacks_is_a_clear_error(files):
    import torch
    if torch.cuda.is_available(): pytest.skip("this machine has CUDA")
    code, err = run_cli("--reference", files / "gift.png", "--scene", files / "coffee.jpg", "--box", BOX, "--tiny-random",
                        "--device", "cuda", "--out", files / "x.png")
    assert code == 2 and "--device cuda: this torch build or machine has no CUDA GPU" in err, err


def test_missing_required_arguments():
    assert run_cli("--scene", "x.jpg", "--box", BOX, "--out", "o.png")[0] == 2
    assert "required" in run_cli("--reference", "r.png", "--box", BOX)[1]


def test_parse_box_and_help():
    assert parse_box(" 1, 2 ,3,4") == (1, 2, 3, 4)
    assert "anydoor-insert" in build_parser().format_help()


def test_shipped_trained_weights_are_the_default(files):
    "With no --model, anydoor-insert uses the trained tiny AnyDoor that ships with the package."
    import json
    import anydoor
    from pathlib import Path
    shipped = shipped_model()
    assert shipped is not None and (shipped / "model_index.json").is_file()
    record = json.loads((Path(anydoor.__file__).parent / "weights" / "anydoor-tiny.json").read_text())
    # its training record: the command, the machine and its held-out evaluation (64 identities, 3 seeds)
    # the shipped recipe is experiment=tiny, trained as long as its config says
    from anydoor.config import compose
    assert record["command"] == "python -m anydoor.train experiment=tiny"
    assert record["step"] == compose(["experiment=tiny"]).trainer.max_steps
    assert record["num_identities"] == 64 and "CPU" in record["machine"]
    assert record["judge_identity"] >= 0.4 and record["identity_top1"] >= 0.4   # learned and colour identity among 64
    pipe_cfg = json.loads((shipped / "model_index.json").read_text())
    assert pipe_cfg["collage"] == "raw" and pipe_cfg["sample_start"] == "hint"
    code, err = run_cli("--reference", files / "gift.png", "--box", BOX, "--scene", files / "coffee.jpg",
                        "--steps", 2, "--seed", 0, "--out", files / "shipped.png")
    assert code == 0, err
    a = np.asarray(Image.open(files / "shipped.png"))
    assert run_cli("--reference", files / "gift.png", "--box", BOX, "--scene", files / "coffee.jpg", "--model",
                   shipped, "--steps", 2, "--seed", 0, "--out", files / "shipped_explicit.png")[0] == 0
    assert np.array_equal(a, np.asarray(Image.open(files / "shipped_explicit.png")))   # the same weights


def test_output_alias_num_images_paste_region_scheduler_and_version(files, capsys):
    base = ["--reference", files / "gift.png", "--scene", files / "coffee.jpg", "--box", BOX, "--model", files / "model",
            "--steps", 2]
    code, err = run_cli(*base, "-o", files / "many.png", "--num-images", 3, "--paste-region", "box", "--scheduler", "dpm")
    assert code == 0, err
    outs = [Image.open(files / f"many_{i}.png") for i in range(3)]
    assert len({o.tobytes() for o in outs}) == 3 and not (files / "many.png").exists()
    scene = np.asarray(Image.open(files / "coffee.jpg")).astype(int)
    x0, y0, x1, y1 = (int(v) for v in BOX.split(","))
    far = np.ones(scene.shape[:2], bool); far[max(0, y0 - 20):y1 + 20, max(0, x0 - 20):x1 + 20] = False
    assert np.array_equal(np.asarray(outs[0]).astype(int)[far], scene[far])   # --paste-region box: only near the box
    code, err = run_cli(*base, "--output", files / "one.png", "--scheduler", "euler")
    assert code == 0 and (files / "one.png").exists(), err
    code, err = run_cli(*base, "--out", files / "x.png", "--scheduler", "plms")
    assert code == 2 and "--scheduler: invalid choice" in err
    with pytest.raises(SystemExit) as e:
        with contextlib.redirect_stdout(io.StringIO()) as out:
            main(["--version"])
    assert e.value.code == 0 and out.getvalue().startswith("anydoor-insert ")


def test_dtype_is_applied_without_cast_warnings(files, recwarn):
    import logging, torch
    records = []
    handler = logging.Handler(); handler.emit = records.append
    logging.getLogger("diffusers").addHandler(handler)
    try: pipe = load_pipeline(str(files / "model"), dtype="bfloat16", device="cpu")
    finally: logging.getLogger("diffusers").removeHandler(handler)
    assert pipe.unet.dtype == torch.bfloat16 and pipe.id_extractor.projector.weight.dtype == torch.bfloat16
    assert not [r for r in records if "Casting directly" in r.getMessage()]


def write_csv(path, rows):
    import csv
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


def test_batch_rows_equal_single_calls(files, tmp_path):
    out = tmp_path / "out"; out.mkdir()
    jobs = write_csv(files / "jobs.csv", [
        ["reference", "reference_mask", "scene", "box", "scene_mask", "output"],
        ["gift.jpg", "gift_mask.png", "coffee.jpg", BOX, "", str(out / "a.png")],
        ["logo.png", "logo_mask.png", "coffee.jpg", "", "scene_mask.png", str(out / "b.png")]])
    common = ["--model", files / "model", "--steps", 2, "--seed", 3]
    assert run_cli("--batch", jobs, *common)[0] == 0
    for name, row in (("a", ["--reference", files / "gift.jpg", "--reference-mask", files / "gift_mask.png", "--box", BOX]),
                      ("b", ["--reference", files / "logo.png", "--reference-mask", files / "logo_mask.png",
                             "--scene-mask", files / "scene_mask.png"])):
        assert run_cli(*row, "--scene", files / "coffee.jpg", *common, "-o", tmp_path / f"{name}.png")[0] == 0
        assert np.array_equal(np.asarray(Image.open(out / f"{name}.png")), np.asarray(Image.open(tmp_path / f"{name}.png")))


def test_batch_row_the_pipeline_rejects_is_skipped_and_reported(files, tmp_path):
    jobs = write_csv(files / "jobs_outside.csv", [
        ["reference", "scene", "box", "output"],
        ["gift.png", "coffee.jpg", "900,900,990,990", str(tmp_path / "bad.png")],
        ["gift.png", "coffee.jpg", BOX, str(tmp_path / "good.png")]])
    code, err = run_cli("--batch", jobs, "--model", files / "model", "--steps", 2)
    assert code == 2 and "line 2:" in err and "outside" in err
    assert (tmp_path / "good.png").is_file() and not (tmp_path / "bad.png").exists()


@pytest.mark.parametrize("rows, extra, msg", [
    ([["reference", "scene", "box"], ["gift.png", "coffee.jpg", BOX]], [], "missing column(s) ['output']"),
    ([["reference", "scene", "where", "output"], ["gift.png", "coffee.jpg", BOX, "o.png"]], [], "unknown column(s) ['where']"),
    ([["reference", "scene", "box", "output"]], [], "no rows"),
    ([["reference", "scene", "box", "output"], ["gift.png", "coffee.jpg", BOX, "o.png"], ["gift.png", "coffee.jpg", "1,2,3", "p.png"]],
     [], "line 3: column 'box' must be four integers"),
    ([["reference", "scene", "box", "output"], ["nope.png", "coffee.jpg", BOX, "o.png"]], [], "line 2: --reference: no such file"),
    ([["reference", "scene", "box", "output"], ["gift.png", "", BOX, "o.png"]], [], "line 2: column 'scene' is empty"),
    ([["reference", "scene", "output"], ["gift.png", "coffee.jpg", "o.png"]], [], "line 2: give --box"),
    ([["reference", "scene", "box", "output"], ["gift.png", "coffee.jpg", BOX, "o.png"], ["gift.png", "coffee.jpg", BOX, "o.png"]],
     [], "line 3: column 'output' 'o.png' is also line 2's output"),
    ([["reference", "scene", "output"], ["gift.png", "coffee.jpg", "1", "2", "3", "4", "o.png"]], [], "more fields than the header"),
    ([["reference", "scene", "box", "output"], ["gift.png", "coffee.jpg", BOX, "o.txt"]], [], "--out must end in one of"),
    ([["reference", "scene", "box", "output"], ["gift.png", "coffee.jpg", BOX, "o.png"]], ["--scene", "coffee.jpg"],
     "--batch takes each row's images, box and output from the CSV: drop --scene"),
])
def test_batch_bad_csv_exits_2_naming_line_and_column(files, rows, extra, msg):
    jobs = write_csv(files / "bad_jobs.csv", rows)
    code, err = run_cli("--batch", jobs, "--model", files / "model", *[files / x if x.endswith(".jpg") else x for x in extra])
    assert code == 2 and msg in err, err


def test_batch_missing_file_and_no_arguments(files):
    assert "--batch: no such file" in run_cli("--batch", "/no/jobs.csv", "--tiny-random")[1]
    jobs = write_csv(files / "one_job.csv", [["reference", "scene", "box", "output"], ["gift.png", "coffee.jpg", BOX, "o.png"]])
    code, err = run_cli("--batch", jobs, "--model", files / "no_such_model")      # shared flags: checked once, no row named
    assert code == 2 and "--model: no such folder" in err and "line 2" not in err
    code, err = run_cli("--tiny-random")
    assert code == 2 and "required: --reference, --scene, -o/--output (or --batch JOBS.csv)" in err


def test_tiny_weights_default_to_their_evaluation_sampler(files, monkeypatch):
    "With no --steps/--guidance: 20 DDIM steps at guidance 3.0 for tiny weights (how they are judged); flags override."
    seen = []
    orig = AnyDoorPipeline.__call__
    def spy(self, *a, **k):
        seen.append((k["num_inference_steps"], k["guidance_scale"])); return orig(self, *a, **k)
    monkeypatch.setattr(AnyDoorPipeline, "__call__", spy)
    base = ["--reference", files / "gift.png", "--scene", files / "coffee.jpg", "--box", BOX, "--model", files / "model",
            "--out", files / "sampler.png"]
    assert run_cli(*base)[0] == 0 and run_cli(*base, "--steps", 2, "--guidance", 5)[0] == 0
    assert seen == [(20, 3.0), (2, 5.0)]
