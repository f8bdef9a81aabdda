"""IDExtractor (SPEC §2.5-2.8): shapes, token modes, freezing, save/load, offline fail-fast, bad input."""
import time

import pytest
import torch
from transformers import Dinov2Model

from anydoor.id_extractor import (IDExtractor, ModelNotAvailableError, encoder_config_dict, hub_reachable,
                                  load_or_explain)


@pytest.fixture(scope="module")
def idx():
    return IDExtractor.tiny()


@pytest.fixture(scope="module")
def ref():
    return torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def test_shapes_and_token_modes(idx, ref):
    assert idx(ref).shape == (2, 65, 64) and idx.num_tokens == 65
    g = IDExtractor.tiny(token_mode="global")
    assert g(ref).shape == (2, 1, 64) and g.num_tokens == 1
    # the global token is the class token of the "all" tokens (same seed, same weights)
    assert torch.allclose(g(ref)[:, 0], idx(ref)[:, 0])
    none = IDExtractor.tiny(token_mode="none")
    assert torch.allclose(none(ref), none.uncond_tokens(2))
    assert torch.allclose(none(ref)[0], none(torch.rand(1, 3, 32, 32))[0])


def test_uncond_tokens_are_the_zero_image(idx):
    u = idx.uncond_tokens(3)
    assert u.shape == (3, 65, 64)
    assert torch.allclose(u[2], idx(torch.zeros(1, 3, 32, 32))[0])


def test_imagenet_normalisation_inside(idx, ref):
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    feats = idx.encoder(pixel_values=(ref - mean) / std).last_hidden_state
    assert torch.allclose(idx.projector(feats), idx(ref), atol=1e-6)


def test_seeded_and_independent_of_global_rng(ref):
    torch.manual_seed(123); a = torch.rand(1)
    torch.manual_seed(123); IDExtractor.tiny(seed=0); b = torch.rand(1)
    assert torch.equal(a, b)
    assert torch.equal(IDExtractor.tiny(seed=0)(ref), IDExtractor.tiny(seed=0)(ref))
    assert not torch.equal(IDExtractor.tiny(seed=1)(ref), IDExtractor.tiny(seed=0)(ref))


def test_only_projector_trains_and_encoder_keeps_no_graph(ref):
    m = IDExtractor.tiny()
    assert {n for n, p in m.named_parameters() if p.requires_grad} == {"projector.weight", "projector.bias"}
    m.train()
    assert m.training and not m.encoder.training
    m(ref).pow(2).mean().backward()
    assert m.projector.weight.grad is not None
    assert all(p.grad is None for p in m.encoder.parameters())
    assert m.encode_features(ref).grad_fn is None


def test_save_load_round_trip(tmp_path, ref):
    for mode in ("all", "global"):
        m = IDExtractor.tiny(token_mode=mode, seed=3)
        m.save_pretrained(tmp_path / mode)
        back = IDExtractor.from_pretrained(tmp_path / mode)
        assert back.config.token_mode == mode and back.config.reference_size == 32
        assert torch.equal(back(ref), m(ref))
        assert {n for n, p in back.named_parameters() if p.requires_grad} == {"projector.weight", "projector.bias"}


def test_from_encoder_local_folder(tmp_path, idx, ref):
    idx.encoder.save_pretrained(tmp_path / "dino")
    m = IDExtractor.from_encoder(tmp_path / "dino", context_dim=64, reference_size=32, seed=0)
    assert torch.equal(m.encode_features(ref), idx.encode_features(ref))
    assert m(ref).shape == (2, 65, 64)
    assert m.config.encoder_config == encoder_config_dict(idx.encoder.config)
    assert not any(p.requires_grad for p in m.encoder.parameters())


def test_offline_missing_model_fails_fast():
    t0 = time.time()
    with pytest.raises(ModelNotAvailableError) as e:
        IDExtractor.from_encoder("facebook/dinov2-does-not-exist")
    assert time.time() - t0 < 10
    msg = str(e.value)
    assert "facebook/dinov2-does-not-exist" in msg and "huggingface-cli download" in msg and "--local-dir" in msg


def test_fails_fast_without_offline_flag_when_hub_unreachable(monkeypatch):
    # no HF_HUB_OFFLINE: the loader probes the hub (here a closed local port) with a short timeout
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    assert hub_reachable(timeout=1.0) is False
    t0 = time.time()
    with pytest.raises(ModelNotAvailableError, match="hub is not reachable"):
        load_or_explain(Dinov2Model.from_pretrained, "facebook/dinov2-does-not-exist", timeout=1.0)
    assert time.time() - t0 < 10


def test_missing_folder_and_empty_folder(tmp_path):
    with pytest.raises(ModelNotAvailableError, match="no such folder"):
        IDExtractor.from_encoder(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotAvailableError, match="from the folder"):
        IDExtractor.from_encoder(str(tmp_path / "empty"))
    with pytest.raises(TypeError, match="`name_or_path`"):
        load_or_explain(Dinov2Model.from_pretrained, 3)


@pytest.mark.parametrize("bad,exc,msg", [
    (lambda r: r[0], ValueError, "`reference` must have 4 dimensions"),
    (lambda r: r[:, :1], ValueError, "`reference` must have 3 channels"),
    (lambda r: r * 2 - 1, ValueError, "`reference` values must lie in [0, 1]"),
    (lambda r: torch.rand(2, 3, 36, 36), ValueError, "`reference` must be 32x32"),
    (lambda r: r.numpy(), TypeError, "`reference` must be a torch.Tensor"),
    (lambda r: (r * 255).long(), TypeError, "`reference` must be a floating-point tensor"),
])
def test_bad_reference(idx, ref, bad, exc, msg):
    with pytest.raises(exc) as e:
        idx(bad(ref))
    assert msg in str(e.value)


def test_bad_construction(idx):
    with pytest.raises(ValueError, match="`token_mode` must be one of"):
        IDExtractor.tiny(token_mode="patches")
    with pytest.raises(ValueError, match="`reference_size` must be a multiple of the patch size 4"):
        IDExtractor.tiny(reference_size=30)
    with pytest.raises(ValueError, match="`context_dim` must be a positive int"):
        IDExtractor.tiny(context_dim=0)
    with pytest.raises(ValueError, match="`batch_size` must be a positive int"):
        idx.uncond_tokens(0)


def _bicubic_matrix(n_in, n_out, scale, a=-0.75):
    "1-D bicubic resampling at scale factor `scale`, written from its definition (Keys' kernel, clamped borders)."
    def keys(x):
        x = abs(x)
        if x <= 1: return (a + 2) * x**3 - (a + 3) * x**2 + 1
        return a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a if x < 2 else 0.0
    W = torch.zeros(n_out, n_in, dtype=torch.float64)
    for j in range(n_out):
        u = (j + 0.5) / scale - 0.5
        i0 = int(torch.floor(torch.tensor(u)))
        for i in range(i0 - 1, i0 + 3): W[j, min(max(i, 0), n_in - 1)] += keys(u - i)
    return W


@pytest.fixture(scope="module")
def paper_geometry():
    "DINOv2's geometry at toy width: a 37x37 position grid (518 px / patch 14), fed 224x224 references."
    from transformers import Dinov2Config
    cfg = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, patch_size=14, image_size=518)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        return IDExtractor(encoder_config=encoder_config_dict(cfg), context_dim=16, reference_size=224)


def test_position_grid_resized_as_released_code_by_default(paper_geometry):
    """The transformer layers receive patch embeddings + the 37x37 grid resized with scale (16+0.1)/37 (the
    released DINOv2 code), checked against a bicubic written here, not against torch's interpolate."""
    m = paper_geometry
    assert m.config.position_resize == "released"
    seen = {}
    hook = m.encoder.encoder.register_forward_pre_hook(lambda mod, args, kw: seen.update(h=(args or (kw["hidden_states"],))[0]),
                                                       with_kwargs=True)
    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    try: m(x)
    finally: hook.remove()
    emb = m.encoder.embeddings
    from anydoor.id_extractor import IMAGENET_MEAN, IMAGENET_STD
    pixels = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        patches = emb.patch_embeddings(pixels)                                    # (1, 256, 32)
    pos = emb.position_embeddings.detach().double()
    W = _bicubic_matrix(37, 16, 16.1 / 37)
    grid = torch.einsum("ai,bj,ijd->abd", W, W, pos[0, 1:].reshape(37, 37, -1)).reshape(256, -1)
    expected = torch.cat([emb.cls_token.detach().double()[0] + pos[0, :1], patches[0].double() + grid])
    assert torch.allclose(seen["h"][0].double(), expected, atol=1e-5)
    # transformers' own resize (size=(16, 16)) is measurably different: the default is not a no-op
    W_size = _bicubic_matrix(37, 16, 16 / 37)
    grid_size = torch.einsum("ai,bj,ijd->abd", W_size, W_size, pos[0, 1:].reshape(37, 37, -1)).reshape(256, -1)
    assert (grid - grid_size).norm() / grid_size.norm() > 0.01


def test_transformers_resize_is_an_option_and_round_trips(tmp_path, paper_geometry):
    m = paper_geometry
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        plain = m.encoder(pixel_values=x).last_hidden_state                       # transformers, untouched
    m.save_pretrained(tmp_path / "released")
    back = IDExtractor.from_pretrained(tmp_path / "released")
    assert back.config.position_resize == "released" and torch.equal(back(x), m(x))
    other = IDExtractor(encoder_config=m.config.encoder_config, context_dim=16, reference_size=224,
                        position_resize="transformers")
    other.load_state_dict(m.state_dict())
    with torch.no_grad():
        assert torch.equal(other.encoder(pixel_values=x).last_hidden_state, plain)
        assert not torch.allclose(other(x), m(x), atol=1e-4)
    other.save_pretrained(tmp_path / "tf")
    assert IDExtractor.from_pretrained(tmp_path / "tf").config.position_resize == "transformers"
    m.encoder.save_pretrained(tmp_path / "dino")
    fe = IDExtractor.from_encoder(tmp_path / "dino", context_dim=16, reference_size=224, position_resize="transformers")
    assert fe.config.position_resize == "transformers"
    assert "interpolate_pos_encoding" not in vars(m.encoder.embeddings)          # the swap never outlives a call
    with pytest.raises(ValueError, match="`position_resize` must be one of"):
        IDExtractor(encoder_config=m.config.encoder_config, position_resize="bilinear")


def save_tiny_clip(folder, two_tower: bool = True, stats: bool = True, patch: int = 4):
    "A tiny random CLIP (two towers, as `openai/clip-vit-*` ship) or its vision tower alone, saved like a hub download."
    import json
    from transformers import CLIPConfig, CLIPModel, CLIPVisionConfig, CLIPVisionModel
    vc = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=patch)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        if two_tower:
            m = CLIPModel(CLIPConfig(vision_config=vc, projection_dim=16, text_config=dict(
                hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=99,
                bos_token_id=0, eos_token_id=1, pad_token_id=1)))
        else: m = CLIPVisionModel(CLIPVisionConfig(**vc))
    m.save_pretrained(folder)
    if stats:
        (folder / "preprocessor_config.json").write_text(json.dumps(
            {"image_mean": [0.5, 0.4, 0.3], "image_std": [0.2, 0.25, 0.3]}))
    return m


def test_any_vision_backbone_plugs_in(tmp_path, ref):
    "A CLIP checkpoint (its vision tower) replaces DINOv2 in from_encoder; its processor's mean/std normalise; the config records it."
    from transformers import CLIPVisionModel
    clip = save_tiny_clip(tmp_path / "clip")
    x = IDExtractor.from_encoder(str(tmp_path / "clip"), context_dim=64, reference_size=32, seed=0)
    assert isinstance(x.encoder, CLIPVisionModel) and x.num_tokens == 65 and x(ref).shape == (2, 65, 64)
    assert x.config.image_mean == (0.5, 0.4, 0.3) and x.config.encoder_name_or_path == str(tmp_path / "clip")
    mean, std = torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1), torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1)
    expected = clip.vision_model(pixel_values=(ref - mean) / std).last_hidden_state
    assert torch.allclose(x.encode_features(ref), expected, atol=1e-6)
    assert {n for n, p in x.named_parameters() if p.requires_grad} == {"projector.weight", "projector.bias"}
    x.save_pretrained(tmp_path / "idx")                     # the saved model says which encoder it has
    back = IDExtractor.from_pretrained(tmp_path / "idx")
    assert isinstance(back.encoder, CLIPVisionModel) and back.config.encoder_config["model_type"] == "clip_vision_model"
    assert torch.equal(back(ref), x(ref))
    # another reference size: CLIP fits its position grid (transformers' interpolation)
    assert IDExtractor.from_encoder(str(tmp_path / "clip"), context_dim=8, reference_size=48)(
        torch.rand(1, 3, 48, 48)).shape == (1, 1 + 12 * 12, 8)
    # a vision tower alone, no processor config: the family's normalisation (OpenAI's for CLIP)
    save_tiny_clip(tmp_path / "vision", two_tower=False, stats=False)
    v = IDExtractor.from_encoder(str(tmp_path / "vision"), context_dim=8, reference_size=32)
    assert v.config.image_mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    # a DINOv2 folder without a processor config keeps ImageNet's, as before the plug-in
    assert IDExtractor.tiny().config.image_mean == (0.485, 0.456, 0.406)


def test_an_encoder_that_is_not_a_vit_is_refused(tmp_path):
    from transformers import ResNetConfig, ResNetModel
    ResNetModel(ResNetConfig(embedding_size=8, hidden_sizes=[8, 8], depths=[1, 1])).save_pretrained(tmp_path / "resnet")
    with pytest.raises(TypeError, match="`name_or_path` must be a ViT-style vision encoder whose config has an int `hidden_size`"):
        IDExtractor.from_encoder(str(tmp_path / "resnet"), context_dim=8, reference_size=32)
    save_tiny_clip(tmp_path / "clip14", patch=14)
    with pytest.raises(ValueError, match="`reference_size` must be a multiple of the patch size 14, got 32"):
        IDExtractor.from_encoder(str(tmp_path / "clip14"), context_dim=8, reference_size=32)
    with pytest.raises(ValueError, match="`image_std` must be positive"):
        IDExtractor(encoder_config={"hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2, "patch_size": 4},
                    reference_size=32, image_std=(0.2, 0.0, 0.2))
