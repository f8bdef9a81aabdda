"""DetailExtractor (SPEC §5): ControlNet from the UNet, zero init, sees_latent, save/load, bad input."""
import pytest
import torch
from diffusers import ControlNetModel

from anydoor.detail import DetailExtractor, default_hint_embedding_channels, tiny_unet


@pytest.fixture(scope="module")
def unet():
    return tiny_unet()


def _pretend_trained(m, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for c in [m.controlnet_cond_embedding.conv_out, *m.controlnet_down_blocks, m.controlnet_mid_block]:
            c.weight.copy_(torch.randn(c.weight.shape, generator=g) * 0.05)
    return m


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(0)
    return (torch.randn(2, 3, 32, 32, generator=g), torch.tensor([3, 700]), torch.randn(2, 65, 64, generator=g),
            torch.rand(2, 4, 32, 32, generator=g) * 2 - 1)


def test_is_a_controlnet_with_zero_outputs(unet, inputs):
    d = DetailExtractor.from_unet(unet, conditioning_embedding_out_channels=(16,))
    assert isinstance(d, ControlNetModel)
    down, mid = d(*inputs)
    assert [tuple(r.shape) for r in down] == [(2, 32, 32, 32), (2, 32, 32, 32), (2, 32, 16, 16),
                                              (2, 64, 16, 16), (2, 64, 8, 8), (2, 64, 8, 8)]
    assert mid.shape == (2, 64, 8, 8)
    assert all(r.abs().max() == 0 for r in down) and mid.abs().max() == 0


def test_copies_the_unet_encoder(unet):
    d = DetailExtractor.from_unet(unet, conditioning_embedding_out_channels=(16,), sees_latent=True)
    for part in ("conv_in", "time_embedding", "down_blocks", "mid_block"):
        a, b = getattr(d, part).state_dict(), getattr(unet, part).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_released_hint_stack_for_factor_8(unet):
    e = DetailExtractor.from_unet(unet, load_weights_from_unet=False).controlnet_cond_embedding
    layers = [e.conv_in, *e.blocks, e.conv_out]
    assert [(m.in_channels, m.out_channels, m.stride[0]) for m in layers] == [
        (4, 16, 1), (16, 16, 1), (16, 32, 2), (32, 32, 1), (32, 96, 2), (96, 96, 1), (96, 256, 2), (256, 32, 1)]
    assert e.conv_out.weight.abs().max() == 0
    assert [default_hint_embedding_channels(f) for f in (1, 2, 4, 8)] == [(16,), (16, 32), (16, 32, 96), (16, 32, 96, 256)]


def test_sees_latent_switch(unet, inputs):
    x, t, ctx, hint = inputs
    released = _pretend_trained(DetailExtractor.from_unet(unet, conditioning_embedding_out_channels=(16,)))
    standard = _pretend_trained(DetailExtractor.from_unet(unet, conditioning_embedding_out_channels=(16,), sees_latent=True))
    assert released.conv_in is None and standard.conv_in is not None
    x2 = torch.randn_like(x)
    with torch.no_grad():
        a, am = released(x, t, ctx, hint); b, bm = released(x2, t, ctx, hint)
        assert all(torch.equal(p, q) for p, q in zip(a, b)) and torch.equal(am, bm)   # blind to x_t
        a, am = standard(x, t, ctx, hint); b, bm = standard(x2, t, ctx, hint)
        assert all(not torch.allclose(p, q) for p, q in zip(a, b)) and not torch.allclose(am, bm)
        # it does see the timestep, the ID tokens and the hint
        c, _ = released(x, t.flip(0), ctx, hint); assert not torch.allclose(c[-1], released(x, t, ctx, hint)[0][-1])
        c, _ = released(x, t, ctx.flip(0), hint); assert not torch.allclose(c[-1], released(x, t, ctx, hint)[0][-1])
        c, _ = released(x, t, ctx, hint.flip(0)); assert not torch.allclose(c[0], released(x, t, ctx, hint)[0][0])


def test_conditioning_scale_is_linear(unet, inputs):
    d = _pretend_trained(DetailExtractor.from_unet(unet, conditioning_embedding_out_channels=(16,)))
    with torch.no_grad():
        a, am = d(*inputs); b, bm = d(*inputs, conditioning_scale=2.0); z, zm = d(*inputs, conditioning_scale=0)
    assert all(torch.allclose(2 * p, q) for p, q in zip(a, b)) and torch.allclose(2 * am, bm)
    assert all(r.abs().max() == 0 for r in z)


def test_all_parameters_get_gradient_in_released_mode(unet, inputs):
    d = _pretend_trained(DetailExtractor.from_unet(unet, conditioning_embedding_out_channels=(16,)))
    down, mid = d(*inputs)
    (sum(r.pow(2).mean() for r in down) + mid.pow(2).mean()).backward()
    assert [n for n, p in d.named_parameters() if p.grad is None] == []   # no dead weight (conv_in is gone)


@pytest.mark.parametrize("sees_latent", [False, True])
def test_save_load_round_trip(tmp_path, unet, inputs, sees_latent):
    d = _pretend_trained(DetailExtractor.from_unet(unet, conditioning_embedding_out_channels=(16,), sees_latent=sees_latent))
    d.save_pretrained(tmp_path)
    back = DetailExtractor.from_pretrained(tmp_path)
    assert back.config.sees_latent is sees_latent and (back.conv_in is None) == (not sees_latent)
    assert tuple(back.config.conditioning_embedding_out_channels) == (16,)
    with torch.no_grad():
        a, am = d(*inputs); b, bm = back(*inputs)
    assert all(torch.equal(p, q) for p, q in zip(a, b)) and torch.equal(am, bm)


def test_latent_space_hint_factor(unet):
    u = tiny_unet(in_channels=4, out_channels=4, sample_size=16)
    d = DetailExtractor.from_unet(u, conditioning_embedding_out_channels=default_hint_embedding_channels(2))
    assert d.hint_downsample == 2
    down, mid = d(torch.randn(1, 4, 16, 16), 5, torch.randn(1, 7, 64), torch.zeros(1, 4, 32, 32))
    assert down[0].shape == (1, 32, 16, 16)
    with pytest.raises(ValueError, match=r"`hint` must have shape \(1, 4, 32, 32\)"):
        d(torch.randn(1, 4, 16, 16), 5, torch.randn(1, 7, 64), torch.zeros(1, 4, 16, 16))


@pytest.mark.parametrize("i,bad,exc,msg", [
    (0, lambda x: x[0], ValueError, "`sample` must have 4 dimensions"),
    (0, lambda x: x[:, :2], ValueError, "`sample` must have 3 channels"),
    (3, lambda h: h[:, :3], ValueError, "`hint` must have 4 channels"),
    (3, lambda h: h * 3, ValueError, "`hint` values must lie in [-1, 1]"),
    (3, lambda h: h[..., :16, :16], ValueError, "`hint` must have shape (2, 4, 32, 32)"),
    (3, lambda h: h[:1], ValueError, "`hint` must have shape (2, 4, 32, 32)"),
    (2, lambda c: c[..., :32], ValueError, "`id_tokens` must have shape (2, T, 64)"),
    (2, lambda c: c[0], ValueError, "`id_tokens` must have 3 dimensions"),
    (1, lambda t: torch.ones(3), ValueError, "`timestep` must be a scalar or have shape (2,)"),
    (1, lambda t: "1", TypeError, "`timestep` must be an int"),
])
def test_bad_forward_inputs(unet, inputs, i, bad, exc, msg):
    d = DetailExtractor.from_unet(unet, conditioning_embedding_out_channels=(16,))
    args = list(inputs); args[i] = bad(args[i])
    with pytest.raises(exc) as e:
        d(*args)
    assert msg in str(e.value)


def test_bad_construction(unet, inputs):
    d = DetailExtractor.from_unet(unet, conditioning_embedding_out_channels=(16,))
    with pytest.raises(TypeError, match="`conditioning_scale` must be a number"):
        d(*inputs, conditioning_scale="strong")
    with pytest.raises(TypeError, match="`sees_latent` must be a bool"):
        DetailExtractor.from_unet(unet, sees_latent="no")
    with pytest.raises(ValueError, match="`conditioning_embedding_out_channels`"):
        DetailExtractor.from_unet(unet, conditioning_embedding_out_channels=())
    with pytest.raises(ValueError, match="`hint_channels` must be a positive int"):
        DetailExtractor.from_unet(unet, hint_channels=0)
    with pytest.raises(TypeError, match="`unet` must be a diffusers UNet2DConditionModel"):
        DetailExtractor.from_unet(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="`downsample_factor` must be 1, 2, 4 or 8"):
        default_hint_embedding_channels(16)
    with pytest.raises(ValueError, match="`attention_levels` must have one entry per level"):
        tiny_unet(attention_levels=(True, False))
