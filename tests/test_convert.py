"""anydoor.convert: the released LDM/ControlNet layout <-> the pipeline's components, agreement with diffusers'
single-file converters, and a tiny checkpoint in the released layout converting to identical outputs."""
import argparse
import re

import numpy as np
import pytest
import torch
from diffusers.loaders.single_file_utils import (convert_controlnet_checkpoint, convert_ldm_unet_checkpoint,
                                                 convert_ldm_vae_checkpoint)
from transformers import Dinov2Config

from anydoor.convert import (PREFIXES, _table, controlnet_names, convert_released_checkpoint, dinov2_names,
                             load_released_state_dict, load_state_dict_file, main, to_released_layout, unet_names,
                             vae_names)
from anydoor.core import sample_object, sample_scene
from anydoor.detail import DetailExtractor
from anydoor.id_extractor import IDExtractor, encoder_config_dict
from anydoor.model import AnyDoor
from anydoor.pipeline import AnyDoorPipeline


def tiny_released_model(seed=0, swiglu=True):
    "Tiny AnyDoor with a VAE codec and (by default) a SwiGLU DINOv2 with layer scale, like ViT-g/14."
    m = AnyDoor.tiny(seed=seed, codec="vae")
    enc = Dinov2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, patch_size=4, image_size=32,
                       use_swiglu_ffn=swiglu, layerscale_value=0.5)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 7)
        idx = IDExtractor(encoder_config=encoder_config_dict(enc), context_dim=64, reference_size=32)
    return AnyDoor(m.codec, m.unet, m.detail, idx, m.noise_scheduler, m.settings)


@pytest.fixture(scope="module")
def original():
    return tiny_released_model(0)


@pytest.fixture(scope="module")
def released(original):
    return to_released_layout(original)


def survives(converter, names, prefix, config):
    back = converter({prefix + v: k for k, v in names.items()}, config)
    return {k: v for k, v in back.items() if v is not None} == {k: k for k in names}


# ---------------------------------------------------------------- the name table
def test_released_prefixes_and_fused_dinov2(released, original):
    prefixes = {p for p in PREFIXES.values()}
    assert all(any(k.startswith(p) for p in prefixes) for k in released)
    assert not any(k.startswith("control_model.input_blocks.0.") for k in released)    # branch does not see x_t
    enc = original.id_extractor.encoder.config
    qkv = released["cond_stage_model.model.blocks.0.attn.qkv.weight"]
    assert qkv.shape == (3 * enc.hidden_size, enc.hidden_size)
    assert released["cond_stage_model.model.blocks.1.mlp.w12.weight"].shape[0] == 2 * \
        released["cond_stage_model.model.blocks.1.mlp.w3.weight"].shape[1]
    assert released["first_stage_model.encoder.mid.attn_1.q.weight"].ndim == 4           # LDM's 1x1 convs


def test_names_agree_with_diffusers_converters_tiny(original, released):
    unet = convert_ldm_unet_checkpoint(released, original.unet.config)
    sd = original.unet.state_dict()
    assert unet.keys() == sd.keys() and all(torch.equal(unet[k], sd[k]) for k in sd)
    vae = convert_ldm_vae_checkpoint(released, original.codec.config)
    sd = original.codec.state_dict()
    assert vae.keys() == sd.keys() and all(torch.equal(vae[k], sd[k]) for k in sd)


def test_names_agree_with_diffusers_converters_sd21():
    real = AnyDoor.sd21_architecture(device="meta")
    assert survives(convert_ldm_unet_checkpoint, unet_names(real.unet), PREFIXES["unet"], real.unet.config)
    with torch.device("meta"):
        std = DetailExtractor.from_unet(real.unet, sees_latent=True, load_weights_from_unet=False)
    assert survives(convert_controlnet_checkpoint, controlnet_names(std), PREFIXES["detail"], std.config)
    rows = _table(real)
    names = [r[0] for r in rows]
    assert len(names) == len(set(names))
    assert sum(len(r[2]) for r in rows) == sum(len(m.state_dict()) for m in (real.unet, real.detail, real.id_extractor,
                                                                            real.codec))
    assert "control_model.input_hint_block.14.weight" in names and "control_model.zero_convs.11.0.weight" in names
    assert "cond_stage_model.model.blocks.39.mlp.w12.weight" in names


def test_vae_and_dinov2_names_cover_every_weight(original):
    assert set(vae_names(original.codec)) == set(original.codec.state_dict())
    assert set(dinov2_names(original.id_extractor.encoder)) == set(original.id_extractor.encoder.state_dict())
    plain = tiny_released_model(0, swiglu=False)
    hub = {v for v, _ in dinov2_names(plain.id_extractor.encoder).values()}
    assert "blocks.0.mlp.fc1.weight" in hub and "blocks.0.attn.qkv.bias" in hub and "pos_embed" in hub


def test_round_trip_into_a_fresh_model(original, released):
    target = tiny_released_model(5)
    report = load_released_state_dict(target, released)
    assert report["unused"] == [] and report["missing"] == []
    for a, b in [(original.unet, target.unet), (original.detail, target.detail), (original.codec, target.codec),
                 (original.id_extractor, target.id_extractor)]:
        sa, sb = a.state_dict(), b.state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_meta_architecture_is_filled(released):
    with torch.device("meta"):
        target = tiny_released_model(5)
    pipe = convert_released_checkpoint(released, architecture=target)
    assert not any(t.is_meta for m in (pipe.unet, pipe.detail, pipe.vae, pipe.id_extractor) for t in m.state_dict().values())


def test_pixel_codec_architecture(tmp_path):
    m = AnyDoor.tiny(seed=2)
    with torch.device("meta"):
        target = AnyDoor.tiny(seed=9)
    pipe = convert_released_checkpoint(to_released_layout(m), architecture=target, dtype=torch.bfloat16)
    assert pipe.unet.dtype == torch.bfloat16 and not pipe.vae.anchor.is_meta


# ---------------------------------------------------------------- files and the end-to-end check
def write_released_files(model, folder):
    released = to_released_layout(model)
    enc = PREFIXES["encoder"]
    body = {k: v for k, v in released.items() if not k.startswith(enc)}
    body["alphas_cumprod"] = model.noise_scheduler.alphas_cumprod.clone()
    body["control_model.input_blocks.0.0.weight"] = torch.zeros(32, 3, 3, 3)        # released file may carry it
    opt = [{"state": {i: {"exp_avg": p.detach().clone(), "exp_avg_sq": p.detach().clone()}
                      for i, p in enumerate(model.parameters())}}]
    torch.save(dict(state_dict=body, optimizer_states=opt, epoch=1, global_step=8687), folder / "released.ckpt")
    torch.save({k[len(enc):]: v for k, v in released.items() if k.startswith(enc)}, folder / "dinov2_pretrain.pth")
    return folder / "released.ckpt", folder / "dinov2_pretrain.pth"


def test_converted_pipeline_equals_native(original, tmp_path):
    ckpt, dino = write_released_files(original, tmp_path)
    pipe = convert_released_checkpoint(ckpt, dino, architecture=tiny_released_model(5))
    pipe.save_pretrained(tmp_path / "converted")
    files = sorted(p.relative_to(tmp_path / "converted").as_posix() for p in (tmp_path / "converted").rglob("*")
                   if p.is_file())
    assert "model_index.json" in files and not any("optim" in f for f in files)
    folder_bytes = sum((tmp_path / "converted" / f).stat().st_size for f in files)
    assert folder_bytes < ckpt.stat().st_size                                          # no optimizer state
    loaded = AnyDoorPipeline.from_pretrained(tmp_path / "converted")
    native = AnyDoorPipeline.from_model(original)
    scene, (gift, mask) = sample_scene("chelsea").resize((160, 106)), sample_object("gift")
    outs = []
    for p in (loaded, native):
        p.set_progress_bar_config(disable=True)
        outs.append(p(gift, mask, scene, (40, 20, 110, 90), num_inference_steps=2,
                      generator=torch.Generator().manual_seed(0), output_type="np").images)
    assert np.array_equal(outs[0], outs[1])


def test_cli_main(original, tmp_path):
    ckpt, dino = write_released_files(original, tmp_path)
    # the default architecture is SD 2.1: a tiny checkpoint does not fit it, and the CLI says so
    assert main(["--checkpoint", str(ckpt), "--dinov2", str(dino), "--out", str(tmp_path / "o")]) == 2
    assert main(["--checkpoint", str(tmp_path / "none.ckpt"), "--out", str(tmp_path / "o")]) == 2
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(SystemExit):
        main(["--checkpoint", str(ckpt), "--out", str(tmp_path / "full")])


# ---------------------------------------------------------------- bad inputs
def test_bad_inputs(original, released, tmp_path):
    with pytest.raises(FileNotFoundError, match="`checkpoint`: no such file"):
        convert_released_checkpoint(tmp_path / "missing.ckpt")
    with pytest.raises(TypeError, match="`checkpoint` must be a file path"):
        load_state_dict_file(3)
    no_dino = {k: v for k, v in released.items() if not k.startswith(PREFIXES["encoder"])}
    with pytest.raises(ValueError, match="pass `dinov2`"):
        convert_released_checkpoint(no_dino, architecture=tiny_released_model(5))
    with pytest.raises(ValueError, match="not an LDM/ControlNet-layout"):
        convert_released_checkpoint({"x": torch.zeros(1)})
    with pytest.raises(ValueError, match="a different architecture"):
        convert_released_checkpoint(released, architecture=AnyDoor.tiny(codec="vae"))     # plain MLP DINOv2
    wrong_width = dict(released)
    k = "model.diffusion_model.out.2.weight"
    wrong_width[k] = torch.zeros(5, *released[k].shape[1:])
    with pytest.raises(ValueError, match="shape mismatch"):
        convert_released_checkpoint(wrong_width, architecture=tiny_released_model(5))
    with pytest.raises(ValueError, match="noise schedule"):
        convert_released_checkpoint(released | {"alphas_cumprod": torch.linspace(1, 0, 1000)},
                                    architecture=tiny_released_model(5))
    with pytest.raises(TypeError, match="`architecture` must be an AnyDoor"):
        convert_released_checkpoint(released, architecture="sd21")
    torch.save(dict(state_dict=released, callbacks={"cb": argparse.Namespace(a=1)}), tmp_path / "pickled.ckpt")
    with pytest.raises(ValueError, match="trust_pickle=True"):
        load_state_dict_file(tmp_path / "pickled.ckpt")
    assert len(load_state_dict_file(tmp_path / "pickled.ckpt", trust_pickle=True)) == len(released)
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="holds no state dict"):
        load_state_dict_file(tmp_path / "list.pt")
    with pytest.raises(TypeError, match="`model` must be an AnyDoor"):
        to_released_layout(original.unet)


class _Payload:
    "A harmless stand-in for a malicious pickle: unpickling it would create a file."
    def __init__(self, path): self.path = str(path)
    def __reduce__(self):
        from pathlib import Path
        return (Path.touch, (Path(self.path),))


def test_a_malicious_checkpoint_does_not_execute(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "x": _Payload(marker)}, tmp_path / "evil.ckpt")
    with pytest.raises(ValueError, match="trust_pickle=True"):
        load_state_dict_file(tmp_path / "evil.ckpt")
    assert not marker.exists()


def test_files_that_are_not_checkpoints_get_one_clear_message(tmp_path, capsys):
    good = tmp_path / "good.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(4000)}}, good)
    data = good.read_bytes()
    files = {"random.ckpt": np.random.default_rng(0).bytes(5000), "empty.ckpt": b"", "truncated.ckpt": data[:len(data) // 2],
             "random.safetensors": b"not a safetensors header"}
    messages = {"random.ckpt": "is not a torch checkpoint", "empty.ckpt": "is empty (0 bytes)",
                "truncated.ckpt": "is not a readable torch checkpoint", "random.safetensors": "is not a readable safetensors"}
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError, match=re.escape(messages[name])):
            load_state_dict_file(tmp_path / name)
        assert main(["--checkpoint", str(tmp_path / name), "--out", str(tmp_path / f"o_{name}")]) == 2
        err = capsys.readouterr().err
        assert messages[name] in err and "Traceback" not in err
