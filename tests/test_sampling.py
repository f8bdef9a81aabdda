"The denoising loop: the detail residuals computed ahead of the loop equal the per-step ones."
import pytest
import torch

from anydoor.data import TeleportToyDataset, collate
from anydoor.model import AnyDoor
from anydoor.sampling import generate


@pytest.fixture(scope="module")
def batch():
    ds = TeleportToyDataset(split="heldout", image_size=32, reference_size=32, length=3)
    return collate([ds[i] for i in range(3)])


@pytest.mark.parametrize("switches, guidance, control", [
    ({}, 3.0, 1.0), ({}, 1.0, 1.0), ({}, 5.0, 0.4), ({"hint_concat": True}, 3.0, 1.0), ({"codec": "vae"}, 3.0, 1.0),
    ({"sees_latent": True}, 3.0, 1.0), ({}, 3.0, 0.0), ({"detail_enabled": False, }, 3.0, 1.0)])
def test_precomputed_detail_residuals_equal_the_per_step_loop(batch, switches, guidance, control):
    model = AnyDoor.tiny(seed=1, **switches).eval()
    ref, hint = batch["reference"], batch["hint"]
    if model.image_size != hint.shape[-1]: pytest.skip("sizes")
    kw = dict(num_inference_steps=7, guidance_scale=guidance, control_scale=control)
    a = generate(model, ref, hint, generator=torch.Generator().manual_seed(0), precompute_detail=False, **kw)
    b = generate(model, ref, hint, generator=torch.Generator().manual_seed(0), **kw)
    assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()


def test_detail_residuals_in_chunks_and_fallbacks(batch):
    model = AnyDoor.tiny(seed=2).eval()
    tokens, hint = model.id_extractor(batch["reference"]), batch["hint"]
    ts = torch.tensor([981, 500, 21, 1])
    with torch.no_grad():
        whole = model.detail_residuals(ts, tokens, hint, max_batch=64)
        small = model.detail_residuals(ts, tokens, hint, max_batch=3)      # one timestep per forward
        for k, t in enumerate(ts):
            down, mid = model.detail(torch.zeros(3, 3, 32, 32), int(t), tokens, hint)
            for got in (whole[k], small[k]):
                assert all(torch.allclose(x, y, atol=1e-5) for x, y in zip(got[0], down)) and torch.allclose(got[1], mid, atol=1e-5)
    assert model.detail_residuals(ts, tokens, hint, control_scale=0) is None
    assert AnyDoor.tiny(sees_latent=True).detail_residuals(ts, tokens, hint) is None
    assert AnyDoor.tiny(detail_enabled=False).detail_residuals(ts, tokens, hint) is None


def test_residuals_computed_a_chunk_at_a_time_equal_the_per_step_loop(batch, monkeypatch):
    "With a small DETAIL_BATCH the loop holds one chunk of steps' residuals at a time: same output, several forwards."
    import anydoor.sampling as sampling
    model = AnyDoor.tiny(seed=1).eval()
    ref, hint = batch["reference"], batch["hint"]
    a = generate(model, ref, hint, num_inference_steps=7, guidance_scale=3.0, generator=torch.Generator().manual_seed(0),
                 precompute_detail=False)
    calls = []
    hook = model.detail.register_forward_pre_hook(lambda m, args: calls.append(args[0].shape[0]))
    monkeypatch.setattr(sampling, "DETAIL_BATCH", 12)                  # 12 // (2 x 3) = 2 steps per forward
    try: b = generate(model, ref, hint, num_inference_steps=7, guidance_scale=3.0, generator=torch.Generator().manual_seed(0))
    finally: hook.remove()
    assert calls == [12, 12, 12, 6] and torch.allclose(a, b, atol=1e-5)


def test_sample_start_hint_is_img2img_at_strength_one_from_the_collage(batch):
    """sample_start="hint": the collage's latents noised to the first timestep, then the same loop as from noise."""
    from anydoor.sampling import ddim_scheduler
    from dataclasses import replace
    model = AnyDoor.tiny(seed=0).eval()
    ref, hint = batch["reference"], batch["hint"]
    noise = torch.randn(len(ref), model.latent_channels, model.latent_size, model.latent_size, generator=torch.Generator().manual_seed(1))
    s = ddim_scheduler(model.noise_scheduler); s.set_timesteps(4)
    by_hand = s.add_noise(model.encode(hint[:, :3]), noise, s.timesteps[:1].repeat(len(ref)))
    run = lambda **k: generate(model, ref, hint, num_inference_steps=4, guidance_scale=2.0, **k)
    from_hint = run(latents=noise, sample_start="hint")
    assert torch.allclose(from_hint, run(latents=by_hand, sample_start="noise"), atol=1e-6)
    assert not torch.allclose(from_hint, run(latents=noise, sample_start="noise"), atol=1e-3)
    # None follows the model's setting; the model's default is the released "noise"
    assert model.settings.sample_start == "noise" and torch.equal(run(latents=noise), run(latents=noise, sample_start="noise"))
    model.settings = replace(model.settings, sample_start="hint")
    assert torch.equal(run(latents=noise), from_hint)
    # several images per object: each starts from the same collage with its own noise
    many = generate(model, ref, hint, num_inference_steps=2, guidance_scale=2.0, num_images_per_prompt=3,
                    generator=torch.Generator().manual_seed(0))
    assert many.shape == (3 * len(ref), 3, model.image_size, model.image_size) and not torch.equal(many[0], many[1])
    lat = torch.randn(3 * len(ref), model.latent_channels, model.latent_size, model.latent_size,
                      generator=torch.Generator().manual_seed(2))
    shared = generate(model, ref, hint, num_inference_steps=2, guidance_scale=2.0, num_images_per_prompt=3, latents=lat)
    one_by_one = generate(model, ref.repeat_interleave(3, 0), hint.repeat_interleave(3, 0), num_inference_steps=2,
                          guidance_scale=2.0, latents=lat)       # each copy starts from its object's own collage
    assert torch.allclose(shared, one_by_one, atol=1e-5)
    with pytest.raises(ValueError, match=r"`sample_start` must be one of \('noise', 'hint'\), got 'image'"):
        run(latents=noise, sample_start="image")
    with pytest.raises(ValueError, match="`sample_start` must be one of"):
        AnyDoor.tiny(seed=0).__class__(model.codec, model.unet, model.detail, model.id_extractor, model.noise_scheduler,
                                       replace(model.settings, sample_start="img"))
