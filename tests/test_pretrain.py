"""The toy foundation models (anydoor.pretrain): the shipped folders are what the command
writes (file names, formats, configs), they load through the tiny preset offline in seconds, and
the command and the path helper fail clearly on bad input."""
import json, os, subprocess, sys, time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from anydoor.id_extractor import ModelNotAvailableError
from anydoor.pretrain import (LOG_FILE, SAMPLES_FILE, PretrainConfig, base_unet, encoder_config, main, pretrain,
                              resolve_config)
from anydoor.shipped import BASE_FOLDER, ENCODER_FOLDER, shipped_weights_dir, toy_foundation_paths

REPO = Path(__file__).resolve().parents[1]
TINY = dict(encoder_steps=2, base_steps=2, identities=16, views=2, pool_size=16, val_size=8, queries=1,
            sample_steps=2, batch_size=4, encoder_batch_size=8, workers=0)
SHIPPED = shipped_weights_dir()
VERSION_KEYS = {"_diffusers_version", "transformers_version", "_name_or_path"}


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    "A few-step run of the command into a fresh folder (in-process: the same `pretrain` the CLI calls)."
    out = tmp_path_factory.mktemp("pretrain")
    log = pretrain(PretrainConfig(out=str(out), label="test", **TINY), echo=False)
    return out, log


def _files(root: Path) -> list:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _config(path: Path) -> dict:
    return {k: v for k, v in json.loads(path.read_text()).items() if k not in VERSION_KEYS}


def _tensors(path: Path) -> dict:
    with safe_open(str(path), "pt") as f:
        return {k: (tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype()) for k in f.keys()}


def test_shipped_files_are_what_the_command_writes(fresh):
    out, _ = fresh
    assert (SHIPPED / LOG_FILE).is_file() and (SHIPPED / SAMPLES_FILE).is_file()
    for sub in (BASE_FOLDER, ENCODER_FOLDER):
        assert _files(SHIPPED / sub) == _files(out / sub), sub
        for rel in _files(out / sub):
            a, b = SHIPPED / sub / rel, out / sub / rel
            if rel.endswith(".json"): assert _config(a) == _config(b), rel
            elif rel.endswith(".safetensors"): assert _tensors(a) == _tensors(b), rel
    # the UNet is stored in half precision, the rest in float32
    assert {d for _, d in _tensors(SHIPPED / BASE_FOLDER / "unet/diffusion_pytorch_model.safetensors").values()} == {"F16"}
    assert {d for _, d in _tensors(SHIPPED / ENCODER_FOLDER / "model.safetensors").values()} == {"F32"}


def test_shipped_log_has_the_fresh_runs_structure(fresh):
    _, log = fresh
    shipped = json.loads((SHIPPED / LOG_FILE).read_text())
    assert shipped["errors"] == [] and log["errors"] == []
    for key in ("command", "config", "environment", "encoder", "base", "pools", "timings"):
        assert key in shipped, key
    for part in ("encoder", "base"):
        assert set(log[part]) <= set(shipped[part]), part
    r = shipped["encoder"]["retrieval"]
    assert r["chance"] == pytest.approx(1 / 64) and set(r["white"]) == {"trained", "untrained", "pixels", "queries"}
    v = shipped["base"]["validation"]
    assert v["trained_ema"] < v["untrained"], "the shipped base model must beat the untrained one on held-out crops"
    assert shipped["command"].startswith("python -m anydoor.pretrain ")
    for part in ("encoder", "base"):
        assert shipped[part]["curve"]["step"][-1] == shipped[part]["steps"], part


def test_shipped_models_load_through_the_tiny_preset_offline_in_seconds(monkeypatch):
    from anydoor.model import AnyDoor
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    model = AnyDoor.from_foundation(*toy_foundation_paths(), image_size=32, reference_size=32, seed=0)
    assert time.perf_counter() - t0 < 15
    tiny = AnyDoor.tiny()
    arch = lambda c: json.loads(json.dumps({k: v for k, v in dict(c).items() if not k.startswith("_")}))
    assert arch(model.unet.config) == arch(tiny.unet.config) == arch(base_unet().config)
    assert arch(model.noise_scheduler.config) == arch(tiny.noise_scheduler.config)
    assert model.noise_scheduler.config.prediction_type == "epsilon"
    enc = model.id_extractor.encoder.config
    assert (enc.hidden_size, enc.num_hidden_layers, enc.patch_size) == (64, 4, 4) == (
        encoder_config().hidden_size, encoder_config().num_hidden_layers, encoder_config().patch_size)
    assert model.dtype == torch.float32 and type(model.codec).__name__ == "PixelCodec"
    g = torch.Generator().manual_seed(0)
    batch = dict(reference=torch.rand(2, 3, 32, 32, generator=g), hint=torch.rand(2, 4, 32, 32, generator=g) * 2 - 1,
                 target=torch.rand(2, 3, 32, 32, generator=g) * 2 - 1, data_kind=torch.tensor([0, 2]))
    assert torch.isfinite(model.loss(batch, generator=g))


def test_trainer_builds_on_shipped_and_on_a_folder(fresh):
    from anydoor.config import compose
    from anydoor.model import AnyDoor
    from anydoor.train import build_model
    out, _ = fresh
    for pretrained in ("shipped", str(out)):
        model = build_model(compose([f"model.pretrained={pretrained}"]))
        assert isinstance(model, AnyDoor) and model.image_size == 32 and model.reference_size == 32


def test_fresh_run_loads_and_writes_its_figures(fresh):
    from anydoor.model import AnyDoor
    out, log = fresh
    assert (out / SAMPLES_FILE).stat().st_size > 0
    assert log["encoder"]["steps"] == 2 and log["base"]["steps"] == 2
    assert json.loads((out / LOG_FILE).read_text())["config"]["base_steps"] == 2
    AnyDoor.from_foundation(*toy_foundation_paths(out), image_size=32, reference_size=32)


def test_missing_or_incomplete_folder_says_how_to_recreate(tmp_path):
    with pytest.raises(ModelNotAvailableError, match="python -m anydoor.pretrain --out"):
        toy_foundation_paths(tmp_path)
    (tmp_path / BASE_FOLDER / "unet").mkdir(parents=True)
    (tmp_path / BASE_FOLDER / "unet" / "config.json").write_text("{}")
    with pytest.raises(ModelNotAvailableError, match="vae/config.json"):
        toy_foundation_paths(tmp_path)
    with pytest.raises(TypeError, match="`folder` must be None or a folder path"):
        toy_foundation_paths(42)


def test_pretrain_still_exports_the_shipped_names():
    import anydoor.pretrain, anydoor.shipped       # the names moved to anydoor.shipped; old imports keep working
    for name in ("BASE_FOLDER", "ENCODER_FOLDER", "BASE_FILES", "ENCODER_FILES", "RECREATE_COMMAND",
                 "shipped_weights_dir", "toy_foundation_paths"):
        assert getattr(anydoor.pretrain, name) is getattr(anydoor.shipped, name), name


@pytest.mark.parametrize("argv, message", [
    (["--base-steps", "3"], "--out"),
    (["--out", "x", "--device", "tpu"], "`device` must be"),
    (["--out", "x", "--precision", "fp16"], "`precision` must be"),
    (["--out", "x", "--encoder-steps", "0"], "`encoder_steps` must be"),
    (["--out", "x", "--batch-size", "many"], "--batch-size"),
    (["--out", "x", "--encoder-batch-size", "1"], "`encoder_batch_size` must be"),
    (["--out", "x", "--caption-dropout", "1.5"], "`caption_dropout` must be"),
])
def test_bad_arguments_exit_2_naming_the_flag(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_bad_config_values_raise():
    with pytest.raises(TypeError, match="`cfg` must be a PretrainConfig"):
        resolve_config(dict(out="x"))
    with pytest.raises(ValueError, match="`views` must be"):
        resolve_config(PretrainConfig(out="x", views=1))
    with pytest.raises(ValueError, match="`base_max_s` must be None or a number of seconds >= 0"):
        resolve_config(PretrainConfig(out="x", base_max_s=-1))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_config(PretrainConfig(out="x", device="cuda"))


def test_module_entry_point_runs_as_the_lead_runs_it(tmp_path):
    "`python -m anydoor.pretrain` from the repo root, without wandb/hydra imports: a bad flag exits 2 quickly."
    code = ("import sys, runpy; sys.argv=['anydoor.pretrain','--out','x','--device','tpu'];"
            "\ntry: runpy.run_module('anydoor.pretrain', run_name='__main__')"
            "\nexcept SystemExit as e: print('exit', e.code, 'hydra' in sys.modules, 'wandb' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO)))
    assert "exit 2 False False" in r.stdout, r.stdout + r.stderr
    assert "`device` must be" in r.stderr


def test_pools_do_not_depend_on_worker_count():
    from anydoor.pretrain import PoolRenderer
    cfg = resolve_config(PretrainConfig(out="x", **dict(TINY, identities=4, encoder_batch_size=4, views=2, pool_size=8, val_size=4)))
    pools = [PoolRenderer(cfg, workers=w) for w in (0, 2)]
    for pool in ("views", "queries", "val", "base"):
        a, b = (p.get(pool) for p in pools)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), pool
    with pytest.raises(ValueError, match="`pool` must be one of"):
        pools[0].get("crops")


@pytest.mark.slow
def test_command_end_to_end_in_a_subprocess(tmp_path):
    "`python -m anydoor.pretrain` as the lead runs it (render workers included), then loaded by the tiny preset."
    from anydoor.model import AnyDoor
    argv = [a for k, v in dict(TINY, workers=2).items() for a in ("--" + k.replace("_", "-"), str(v))]
    r = subprocess.run([sys.executable, "-m", "anydoor.pretrain", "--out", str(tmp_path), *argv], cwd=REPO,
                       capture_output=True, text=True, timeout=600, env=dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO)))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    log = json.loads((tmp_path / LOG_FILE).read_text())
    assert log["errors"] == [] and log["pools"]["workers"] == 2
    assert _files(tmp_path / BASE_FOLDER) == _files(SHIPPED / BASE_FOLDER)
    AnyDoor.from_foundation(*toy_foundation_paths(tmp_path), image_size=32, reference_size=32)


def test_bf16_autocast_and_time_cap_paths():
    "The GPU run's switches, on CPU: bf16 autocast in both loops, and a time cap that stops a long plan early."
    from anydoor.pretrain import caption_table, train_base, train_encoder
    cfg = resolve_config(PretrainConfig(out="x", precision="bf16", encoder_steps=2, base_steps=2, batch_size=4,
                                        encoder_batch_size=4))
    views = torch.randint(0, 255, (8, 2, 3, 32, 32), dtype=torch.uint8)
    pool = dict(images=torch.randint(0, 255, (8, 3, 32, 32), dtype=torch.uint8), identity=torch.randint(64, 72, (8,)))
    encoder, rep = train_encoder(views, cfg, log=lambda m: None)
    assert rep["steps"] == 2 and all(map(torch.isfinite, torch.tensor(rep["curve"]["loss"])))
    unet, *_, rep = train_base(pool, caption_table(72), cfg, log=lambda m: None)
    assert rep["steps"] == 2 and unet.dtype == torch.float32
    capped = resolve_config(PretrainConfig(out="x", encoder_steps=10_000, encoder_batch_size=4, encoder_max_s=0.01))
    _, rep = train_encoder(views, capped, log=lambda m: None)
    assert rep["capped_by_time"] and rep["steps"] < 10_000


def test_latent_scale_is_the_codecs_scaling_factor(tmp_path):
    "`--latent-scale` trains on scaled pixels and writes the scale where AnyDoor's encode/decode read it."
    from anydoor.model import AnyDoor
    log = pretrain(PretrainConfig(out=str(tmp_path), label="scale", latent_scale=2.5, **TINY), echo=False)
    assert log["errors"] == [] and log["config"]["latent_scale"] == 2.5
    assert json.loads((tmp_path / BASE_FOLDER / "vae" / "config.json").read_text())["scaling_factor"] == 2.5
    model = AnyDoor.from_foundation(*toy_foundation_paths(tmp_path), image_size=32, reference_size=32)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.allclose(model.encode(x), 2.5 * x) and torch.allclose(model.decode(model.encode(x)), x)
    assert "--latent-scale 2.5" in log["reproduce"]


# -- the toy latent space (codec vae) -------------------------------------------------------------
TINY_VAE = dict(TINY, codec="vae", image_size=64, reference_size=64, vae_steps=2, vae_batch_size=4)


@pytest.fixture(scope="module")
def fresh_vae(tmp_path_factory):
    "A few-step run with the toy VAE at 64 px (latents 4 x 32 x 32, reference 64 with patch 8)."
    out = tmp_path_factory.mktemp("pretrain_vae")
    log = pretrain(PretrainConfig(out=str(out), label="test vae", **TINY_VAE), echo=False)
    return out, log


def test_vae_run_writes_an_sd_layout_with_an_autoencoderkl(fresh_vae):
    out, log = fresh_vae
    assert log["errors"] == [] and log["vae"]["steps"] == 2 and log["base"]["steps"] == 2
    assert _files(out / BASE_FOLDER) == _files(SHIPPED / BASE_FOLDER)      # same files as the pixel layout
    toy_foundation_paths(out)                                              # BASE_FILES pass
    vae_cfg = json.loads((out / BASE_FOLDER / "vae" / "config.json").read_text())
    assert vae_cfg["_class_name"] == "AutoencoderKL" and vae_cfg["latent_channels"] == 4
    assert len(vae_cfg["block_out_channels"]) == 2                         # factor 2
    assert vae_cfg["scaling_factor"] == pytest.approx(log["vae"]["scaling_factor"]) and vae_cfg["scaling_factor"] > 0
    unet_cfg = json.loads((out / BASE_FOLDER / "unet" / "config.json").read_text())
    assert (unet_cfg["sample_size"], unet_cfg["in_channels"], unet_cfg["out_channels"]) == (32, 4, 4)
    assert json.loads((out / ENCODER_FOLDER / "config.json").read_text())["patch_size"] == 8
    r = log["vae"]["reconstruction"]
    assert {"vae", "flat", "half_resolution", "posterior_std_ratio", "flip_error"} <= set(r) and r["images"] == 8
    assert "--codec vae" in log["reproduce"] and "--vae-steps 2" in log["reproduce"]
    assert (out / SAMPLES_FILE).stat().st_size > 0


def test_vae_run_loads_through_from_foundation_and_round_trips(fresh_vae, monkeypatch):
    from diffusers import AutoencoderKL
    from anydoor.model import AnyDoor
    out, log = fresh_vae
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = AnyDoor.from_foundation(*toy_foundation_paths(out), image_size=64, reference_size=64, seed=0)
    assert isinstance(model.codec, AutoencoderKL)
    assert (model.downsample_factor, model.latent_channels, model.latent_size) == (2, 4, 32)
    assert model.codec.config.scaling_factor == pytest.approx(log["vae"]["scaling_factor"])
    assert model.detail.hint_downsample == 2 and model.id_extractor.num_tokens == 65
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 64, 64, generator=g) * 2 - 1
    z = model.encode(x, generator=g)
    assert z.shape == (3, 4, 32, 32) and model.decode(z).shape == (3, 3, 64, 64)
    batch = dict(reference=torch.rand(2, 3, 64, 64, generator=g), hint=torch.rand(2, 4, 64, 64, generator=g) * 2 - 1,
                 target=torch.rand(2, 3, 64, 64, generator=g) * 2 - 1, data_kind=torch.tensor([0, 2]))
    assert torch.isfinite(model.loss(batch, generator=g))


def test_fine_tune_trains_on_a_vae_folder_at_64_px(fresh_vae, tmp_path):
    "What `python -m anydoor.train model.pretrained=<folder> model.image_size=64 model.reference_size=64` runs."
    from anydoor.config import compose
    from anydoor.train import train
    out, _ = fresh_vae
    cfg = compose([f"model.pretrained={out}", "model.image_size=64", "model.reference_size=64", "logger=none",
                   "eval.enabled=false", "trainer.batch_size=2", "trainer.max_steps=2", "trainer.checkpoint_every=2",
                   "trainer.sample_every=0", "trainer.log_every=1", "data.num_workers=0", f"run_dir={tmp_path}"])
    summary = train(cfg)
    assert summary["step"] == 2 and torch.isfinite(torch.tensor(summary["loss"]))


def test_patch_size_keeps_about_64_tokens():
    from anydoor.id_extractor import IDExtractor, tiny_patch_size
    assert [tiny_patch_size(R) for R in (16, 32, 48, 64, 128)] == [4, 4, 6, 8, 16]
    assert encoder_config(32).patch_size == 4 and encoder_config(64).patch_size == 8
    assert IDExtractor.tiny(reference_size=64).num_tokens == 65 == IDExtractor.tiny(reference_size=32).num_tokens


def test_pixel_base_unet_is_unchanged():
    "The pixel codec's base UNet keeps its signature's defaults: 3 channels at 32²."
    u = base_unet()
    assert (u.config.sample_size, u.config.in_channels, u.config.out_channels) == (32, 3, 3)
    v = base_unet(0, 32, 4)
    assert (v.config.sample_size, v.config.in_channels, v.config.out_channels) == (32, 4, 4)


@pytest.mark.parametrize("overrides, message", [
    (dict(codec="jpeg"), "`codec` must be one of ('pixel', 'vae'), got 'jpeg'"),
    (dict(codec="vae", image_size=36), "`image_size` must be a multiple of 8 (codec 'vae' factor 2 x UNet downsampling 4), got 36"),
    (dict(image_size=30), "`image_size` must be a multiple of 4"),
    (dict(reference_size=44), "`reference_size` must be a multiple of the patch size 5"),
    (dict(codec="vae", vae_steps=0), "`vae_steps` must be an int in [1, inf], got 0"),
    (dict(codec="vae", vae_batch_size=2.5), "`vae_batch_size` must be an int in [1, inf], got 2.5"),
    (dict(codec="vae", vae_lr=0), "`vae_lr` must be a number > 0, got 0"),
    (dict(codec="vae", vae_kl_weight=-1e-6), "`vae_kl_weight` must be a number >= 0, got -1e-06"),
    (dict(codec="vae", vae_max_s=-1), "`vae_max_s` must be None or a number of seconds >= 0"),
])
def test_bad_vae_config_values_raise(overrides, message):
    with pytest.raises(ValueError) as e:
        resolve_config(PretrainConfig(out="x", **overrides))
    assert message in str(e.value)


def test_vae_presets_and_flags():
    for device in ("cpu",) + (("cuda",) if torch.cuda.is_available() else ()):
        cfg = resolve_config(PretrainConfig(out="x", device=device, codec="vae", image_size=64, reference_size=64))
        assert cfg.vae_steps >= 1 and cfg.vae_batch_size >= 1 and cfg.vae_lr > 0
    with pytest.raises(SystemExit) as e:
        main(["--out", "x", "--codec", "jpeg"])
    assert e.value.code == 2
    from anydoor.pretrain import build_parser
    args = build_parser().parse_args(["--out", "d", "--codec", "vae", "--vae-steps", "5", "--vae-kl-weight", "1e-4"])
    assert (args.codec, args.vae_steps, args.vae_kl_weight) == ("vae", 5, 1e-4)
