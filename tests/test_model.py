"""AnyDoor (SPEC §6-7): tiny preset, loss, trainable set, real-preset loading from local folders,
save/load round trips of the model and of every component, offline fail-fast, bad batches."""
import time

import pytest
import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

from anydoor.detail import DetailExtractor
from anydoor.id_extractor import IDExtractor, ModelNotAvailableError
from anydoor.model import AnyDoor, PixelCodec, spec_trainable_names


def _batch(model, B=3, seed=0, fixed=True):
    g = torch.Generator().manual_seed(seed)
    S, R = model.image_size, model.reference_size
    b = dict(reference=torch.rand(B, 3, R, R, generator=g), hint=torch.rand(B, 4, S, S, generator=g) * 2 - 1,
             target=torch.rand(B, 3, S, S, generator=g) * 2 - 1, data_kind=torch.arange(B) % 3)
    if fixed:
        b["timesteps"] = torch.randint(0, model.num_train_timesteps, (B,), generator=g)
        b["noise"] = torch.randn(B, model.latent_channels, model.latent_size, model.latent_size, generator=g)
    return b


@pytest.fixture(scope="module")
def model():
    return AnyDoor.tiny()


def test_tiny_builds_fast_with_the_spec_schedule():
    t0 = time.time(); m = AnyDoor.tiny(); assert time.time() - t0 < 5
    assert (m.image_size, m.reference_size, m.latent_size, m.latent_channels, m.downsample_factor) == (32, 32, 32, 3, 1)
    assert (m.token_mode, m.detail_enabled, m.sees_latent) == ("all", True, False)
    c = m.noise_scheduler.config
    assert (c.num_train_timesteps, c.beta_schedule, c.beta_start, c.beta_end, c.prediction_type) == \
        (1000, "scaled_linear", 0.00085, 0.012, "epsilon")
    assert isinstance(m.codec, PixelCodec) and m.settings.detach_encoder_context and not m.settings.hint_concat


def test_patch_leaves_no_none_names_in_the_module():
    import anydoor.model                      # fastcore's @patch binds each new method's name to None at module level
    assert [n for n in dir(anydoor.model) if not n.startswith("_") and getattr(anydoor.model, n) is None] == []
    assert anydoor.model.sample_timesteps.__module__ == "anydoor.timesteps"   # a name it did not clobber


def test_tiny_overrides():
    m = AnyDoor.tiny(image_size=64, reference_size=48, block_out_channels=(32, 64), context_dim=32, patch_size=8)
    assert (m.image_size, m.reference_size, m.id_extractor.num_tokens) == (64, 48, 1 + 6 * 6)
    assert m.loss(_batch(m, B=2)).ndim == 0


def test_loss_reductions_and_determinism(model):
    b = _batch(model)
    per = model.loss(b, reduction="none")
    assert per.shape == (3,) and torch.allclose(per.mean(), model.loss(b))
    assert torch.equal(per, model.loss(b, reduction="none"))               # fixed t and noise
    b2 = _batch(model, fixed=False)
    l1 = model.loss(b2, generator=torch.Generator().manual_seed(5))
    l2 = model.loss(b2, generator=torch.Generator().manual_seed(5))
    assert torch.equal(l1, l2)


def test_loss_is_eps_mse(model):
    """The loss equals a hand-written ε-MSE through diffusers' own UNet forward."""
    b = _batch(model)
    with torch.no_grad():
        x_t = model.noise_scheduler.add_noise(b["target"], b["noise"], b["timesteps"])
        ids = model.id_extractor(b["reference"])
        down, mid = model.detail(x_t, b["timesteps"], ids, b["hint"])
        eps = model.unet(x_t, b["timesteps"], ids, down_block_additional_residuals=down,
                         mid_block_additional_residual=mid).sample
        want = (eps - b["noise"]).pow(2).mean(dim=(1, 2, 3))
        assert torch.allclose(model.loss(b, reduction="none"), want, atol=1e-6)


def test_loss_backward_reaches_exactly_the_trainable_set():
    m = AnyDoor.tiny()
    with torch.no_grad():   # non-zero zero convs so every detail parameter gets a gradient
        for c in [m.detail.controlnet_cond_embedding.conv_out, *m.detail.controlnet_down_blocks, m.detail.controlnet_mid_block]:
            c.weight.normal_(0, 0.05)
    m.loss(_batch(m)).backward()
    got = {n for n, p in m.named_parameters() if p.grad is not None}
    assert got == {n for n, _ in m.named_trainable_parameters()}


@pytest.mark.parametrize("kw", [dict(), dict(detail_enabled=False), dict(hint_concat=True), dict(token_mode="global"),
                                dict(sees_latent=True), dict(codec="vae"), dict(token_mode="none", detach_encoder_context=False)])
def test_trainable_parameters_are_spec_6(kw):
    m = AnyDoor.tiny(**kw)
    names = {n for n, _ in m.named_trainable_parameters()}
    assert names == spec_trainable_names(m)
    assert names == {n for n, p in m.named_parameters() if p.requires_grad}
    assert len(list(m.trainable_parameters())) == len(names)
    assert ("unet.conv_in.weight" in names) == kw.get("hint_concat", False)
    assert any(n.startswith("detail.") for n in names) == kw.get("detail_enabled", True)
    assert m.loss(_batch(m, B=2)).isfinite()


def test_variants_behave(model):
    b = _batch(model)
    off = AnyDoor.tiny(detail_enabled=False)
    assert off.detail is None and off.sees_latent is None
    # at initialisation the detail residuals are zero: the same loss with and without the branch
    assert torch.allclose(off.loss(b, "none"), model.loss(b, "none"))
    hc = AnyDoor.tiny(hint_concat=True)
    assert hc.unet.config.in_channels == 7 and torch.allclose(hc.loss(b, "none"), model.loss(b, "none"))  # zero-init channels
    v = AnyDoor.tiny(prediction_type="v_prediction")
    assert v.loss(b).isfinite()
    w = dict(b, loss_weight=torch.ones(3, 1, 32, 32))
    assert torch.allclose(model.loss(w, "none"), model.loss(b, "none"))


def test_predict_noise_control_scale_zero_is_no_detail(model):
    x, ids, hint = torch.randn(2, 3, 32, 32), torch.randn(2, 65, 64), torch.rand(2, 4, 32, 32) * 2 - 1
    with torch.no_grad():
        assert model.predict_noise(x, 10, ids, hint).shape == (2, 3, 32, 32)
        assert torch.equal(model.predict_noise(x, 10, ids, hint, control_scale=0),
                           model.unet(x, 10, ids).sample)


def test_vae_codec_path():
    m = AnyDoor.tiny(codec="vae")
    assert (m.downsample_factor, m.latent_channels, m.latent_size) == (2, 4, 16)
    assert tuple(m.detail.config.conditioning_embedding_out_channels) == (16, 32)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert m.encode(x, generator=torch.Generator().manual_seed(0)).shape == (1, 4, 16, 16)
        assert m.decode(torch.randn(1, 4, 16, 16)).shape == (1, 3, 32, 32)
    assert m.loss(_batch(m)).isfinite()


def _same_outputs(a, b, batch):   # the generator fixes the VAE's posterior sample
    return torch.equal(a.loss(batch, "none", generator=torch.Generator().manual_seed(0)),
                       b.loss(batch, "none", generator=torch.Generator().manual_seed(0)))


@pytest.mark.parametrize("kw", [dict(), dict(codec="vae", hint_concat=True, sees_latent=True, token_mode="global",
                                             timestep_mode="uniform", detach_encoder_context=False),
                                dict(detail_enabled=False)])
def test_save_load_round_trip_whole_model(tmp_path, kw):
    m = AnyDoor.tiny(seed=4, **kw)
    if m.detail is not None:
        with torch.no_grad():
            for c in m.detail.controlnet_down_blocks: c.weight.normal_(0, 0.05)
    m.save_pretrained(tmp_path)
    back = AnyDoor.from_pretrained(tmp_path)
    assert not m.training and not back.training
    b = _batch(m)
    assert _same_outputs(m, back, b)
    assert _same_outputs(m.train(), back.train(), b) and not m.codec.training
    assert back.settings == m.settings
    assert (back.token_mode, back.sees_latent, back.detail_enabled) == (m.token_mode, m.sees_latent, m.detail_enabled)
    assert {n for n, _ in back.named_trainable_parameters()} == {n for n, _ in m.named_trainable_parameters()}
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    b2 = _batch(m, fixed=False)
    assert torch.equal(m.loss(b2, generator=g1), back.loss(b2, generator=g2))


def test_save_load_round_trip_every_component(tmp_path):
    m = AnyDoor.tiny(codec="vae", seed=2)
    with torch.no_grad():
        for c in m.detail.controlnet_down_blocks: c.weight.normal_(0, 0.05)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    z, t, ids, hint = torch.randn(2, 4, 16, 16), torch.tensor([1, 999]), torch.randn(2, 65, 64), x.new_zeros(2, 4, 32, 32)
    for name, cls, run in [
        ("codec", AutoencoderKL, lambda c: c.decode(z).sample),
        ("unet", UNet2DConditionModel, lambda u: u(z, t, ids).sample),
        ("detail", DetailExtractor, lambda d: torch.cat([r.flatten() for r in d(z, t, ids, hint)[0]])),
        ("id_extractor", IDExtractor, lambda i: i(x * 0.5 + 0.5)),
    ]:
        comp = getattr(m, name).eval()
        comp.save_pretrained(tmp_path / name)
        back = cls.from_pretrained(tmp_path / name)
        with torch.no_grad():
            assert torch.equal(run(comp), run(back)), name
    m.noise_scheduler.save_pretrained(tmp_path / "scheduler")
    s = DDPMScheduler.from_pretrained(tmp_path / "scheduler")
    assert torch.equal(s.alphas_cumprod, m.noise_scheduler.alphas_cumprod)
    pc = PixelCodec(scaling_factor=0.5); pc.save_pretrained(tmp_path / "pc")
    assert PixelCodec.from_pretrained(tmp_path / "pc").config.scaling_factor == 0.5


def _save_foundation(m, d):
    m.codec.save_pretrained(d / "sd" / "vae"); m.unet.save_pretrained(d / "sd" / "unet")
    m.noise_scheduler.save_pretrained(d / "sd" / "scheduler"); m.id_extractor.encoder.save_pretrained(d / "dino")


@pytest.mark.parametrize("codec", ["vae", "pixel"])
def test_sd21_loads_local_folders_through_the_real_code(tmp_path, codec):
    src = AnyDoor.tiny(codec=codec, seed=1)
    _save_foundation(src, tmp_path)
    m = AnyDoor.sd21(sd=str(tmp_path / "sd"), dinov2=str(tmp_path / "dino"), image_size=32, reference_size=32)
    assert type(m.codec) is type(src.codec)
    for part in ("unet", "codec"):
        a, b = getattr(m, part).state_dict(), getattr(src, part).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(m.id_extractor.encode_features(torch.rand(1, 3, 32, 32).clamp(0, 1) * 0 + 0.5),
                       src.id_extractor.encode_features(torch.full((1, 3, 32, 32), 0.5)))
    assert {n for n, _ in m.named_trainable_parameters()} == spec_trainable_names(m)
    assert m.loss(_batch(m)).isfinite()


def test_sd21_refuses_v_prediction(tmp_path):
    src = AnyDoor.tiny(prediction_type="v_prediction")
    _save_foundation(src, tmp_path)
    with pytest.raises(ValueError, match="768 px v-prediction"):
        AnyDoor.sd21(sd=str(tmp_path / "sd"), dinov2=str(tmp_path / "dino"), image_size=32, reference_size=32)
    m = AnyDoor.from_foundation(str(tmp_path / "sd"), str(tmp_path / "dino"), image_size=32, reference_size=32)
    assert m.noise_scheduler.config.prediction_type == "v_prediction"   # the toy lever still loads


def test_offline_fail_fast_for_every_loader(tmp_path):
    t0 = time.time()
    with pytest.raises(ModelNotAvailableError, match="huggingface-cli download stabilityai/sd-does-not-exist"):
        AnyDoor.sd21(sd="stabilityai/sd-does-not-exist")
    src = AnyDoor.tiny(); _save_foundation(src, tmp_path)
    with pytest.raises(ModelNotAvailableError, match="facebook/dinov2-does-not-exist"):
        AnyDoor.sd21(sd=str(tmp_path / "sd"), dinov2="facebook/dinov2-does-not-exist", image_size=32, reference_size=32)
    with pytest.raises(ModelNotAvailableError, match="anydoor-org/nothing-here"):
        AnyDoor.from_pretrained("anydoor-org/nothing-here")
    with pytest.raises(ModelNotAvailableError, match="holds no anydoor.json"):
        AnyDoor.from_pretrained(tmp_path / "sd")
    assert time.time() - t0 < 20


@pytest.mark.parametrize("edit,exc,msg", [
    (lambda b: [1], TypeError, "`batch` must be a dict"),
    (lambda b: {k: v for k, v in b.items() if k != "target"}, ValueError, "`batch` is missing ['target']"),
    (lambda b: dict(b, reference=b["reference"][0]), ValueError, "`batch['reference']` must have 4 dimensions"),
    (lambda b: dict(b, reference=b["reference"][:, :1]), ValueError, "`batch['reference']` must have 3 channels"),
    (lambda b: dict(b, reference=b["reference"] - 1), ValueError, "`batch['reference']` values must lie in [0, 1]"),
    (lambda b: dict(b, reference=torch.rand(3, 3, 28, 28)), ValueError, "`batch['reference']` must be 32x32"),
    (lambda b: dict(b, reference=b["reference"].numpy()), TypeError, "`batch['reference']` must be a torch.Tensor"),
    (lambda b: dict(b, hint=b["hint"][:, :3]), ValueError, "`batch['hint']` must have 4 channels"),
    (lambda b: dict(b, hint=b["hint"] * 2), ValueError, "`batch['hint']` values must lie in [-1, 1]"),
    (lambda b: dict(b, hint=torch.zeros(3, 4, 16, 16)), ValueError, "`batch['hint']` must be 32x32"),
    (lambda b: dict(b, target=b["target"][:, :, None]), ValueError, "`batch['target']` must have 4 dimensions"),
    (lambda b: dict(b, target=(b["target"] + 1) * 2), ValueError, "`batch['target']` values must lie in [-1, 1]"),
    (lambda b: dict(b, target=b["target"][:2]), ValueError, "`batch` entries must share the batch size"),
    (lambda b: dict(b, data_kind=b["data_kind"].float()), TypeError, "`batch['data_kind']` must be an integer tensor"),
    (lambda b: dict(b, data_kind=[0, 1, 2]), TypeError, "`batch['data_kind']` must be an integer tensor"),
    (lambda b: dict(b, data_kind=b["data_kind"][None]), ValueError, "`batch['data_kind']` must have shape (B,)"),
    (lambda b: dict(b, data_kind=torch.tensor([0, 3, 1])), ValueError, "`batch['data_kind']` values must be in [0, 1, 2]"),
    (lambda b: dict(b, timesteps=torch.tensor([0, 1, 1000])), ValueError, "`batch['timesteps']` must have shape (3,)"),
    (lambda b: dict(b, timesteps=torch.tensor([0.5, 1.0, 2.0])), TypeError, "`batch['timesteps']` must be an integer tensor"),
    (lambda b: dict(b, noise=torch.randn(3, 3, 16, 16)), ValueError, "`batch['noise']` must have the latents' shape"),
    (lambda b: dict(b, loss_weight=-torch.ones(3, 1, 32, 32)), ValueError, "`batch['loss_weight']` must be (3, 1, 32, 32)"),
])
def test_bad_batches(model, edit, exc, msg):
    with pytest.raises(exc) as e:
        model.loss(edit(_batch(model)))
    assert msg in str(e.value)


def test_bad_arguments(model):
    with pytest.raises(ValueError, match="`reduction` must be 'mean' or 'none'"):
        model.loss(_batch(model), reduction="sum")
    x, ids = torch.randn(1, 3, 32, 32), torch.randn(1, 65, 64)
    with pytest.raises(ValueError, match="`hint` must be 1x the size of `x_t`"):
        model.predict_noise(x, 1, ids, torch.zeros(1, 4, 16, 16))
    with pytest.raises(ValueError, match="`x_t` must have 3 channels"):
        model.predict_noise(torch.randn(1, 4, 32, 32), 1, ids, torch.zeros(1, 4, 32, 32))
    with pytest.raises(TypeError, match="`control_scale` must be a number"):
        model.predict_noise(x, 1, ids, torch.zeros(1, 4, 32, 32), control_scale=None)
    with pytest.raises(ValueError, match="`images` values must lie in"):
        model.encode(torch.rand(1, 3, 32, 32) * 3)
    for kw, exc, msg in [(dict(token_mode="cls"), ValueError, "`token_mode` must be one of"),
                         (dict(image_size=34), ValueError, "`image_size` must be a multiple of 4"),
                         (dict(codec="vq"), ValueError, "`codec` must be 'pixel' or 'vae'"),
                         (dict(timestep_mode="late"), ValueError, "`timestep_mode` must be one of"),
                         (dict(hint_concat="yes"), TypeError, "`hint_concat` must be a bool"),
                         (dict(hint_embedding_channels=(16, 32)), ValueError, "downsamples by 2 but the codec by 1")]:
        with pytest.raises(exc, match=msg.replace("(", r"\(").replace(")", r"\)")):
            AnyDoor.tiny(**kw)
    with pytest.raises(TypeError, match="`unet` must be a diffusers UNet2DConditionModel"):
        AnyDoor(model.codec, torch.nn.Linear(1, 1), None, model.id_extractor, model.noise_scheduler)
    with pytest.raises(ValueError, match="makes 32-wide tokens but the UNet cross-attends to 64"):
        AnyDoor(model.codec, model.unet, None, IDExtractor.tiny(context_dim=32), model.noise_scheduler)
