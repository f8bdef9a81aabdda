"""Injection (SPEC §6): agreement with diffusers, freezing policy, the no-backward property of the
frozen encoder (outputs carry no grad_fn), the exact-gradient switch, and bad input."""
import pytest
import torch

from anydoor.benchmark import step_cost
from anydoor.detail import DetailExtractor, tiny_unet
from anydoor.id_extractor import IDExtractor
from anydoor.injection import (apply_freezing_policy, encoder_outputs_in_graph, injected_unet_forward,
                               is_unet_decoder_parameter)


@pytest.fixture()
def parts():
    unet = tiny_unet()
    detail = DetailExtractor.from_unet(unet, conditioning_embedding_out_channels=(16,))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():   # non-zero zero convs, as after some training
        for c in [detail.controlnet_cond_embedding.conv_out, *detail.controlnet_down_blocks, detail.controlnet_mid_block]:
            c.weight.copy_(torch.randn(c.weight.shape, generator=g) * 0.05)
    idx = IDExtractor.tiny()
    apply_freezing_policy(unet, detail, idx)
    return unet, detail, idx


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(1)
    return dict(ref=torch.rand(2, 3, 32, 32, generator=g), x=torch.randn(2, 3, 32, 32, generator=g),
                hint=torch.rand(2, 4, 32, 32, generator=g) * 2 - 1, t=torch.tensor([20, 800]),
                eps=torch.randn(2, 3, 32, 32, generator=g))


def _loss(parts, data, detach):
    unet, detail, idx = parts
    ids = idx(data["ref"])
    down, mid = detail(data["x"], data["t"], ids, data["hint"])
    out = injected_unet_forward(unet, data["x"], data["t"], ids, down, mid, detach_encoder_context=detach)
    return (out - data["eps"]).pow(2).mean()


def test_agrees_with_diffusers_unet(parts, data):
    unet, detail, idx = parts
    ctx = torch.randn(2, 65, 64)
    with torch.no_grad():
        down, mid = detail(data["x"], data["t"], ctx, data["hint"])
        ref = unet(data["x"], data["t"], ctx, down_block_additional_residuals=down, mid_block_additional_residual=mid).sample
        for detach in (True, False):
            assert torch.equal(injected_unet_forward(unet, data["x"], data["t"], ctx, down, mid, detach), ref)
        assert torch.equal(injected_unet_forward(unet, data["x"], data["t"], ctx), unet(data["x"], data["t"], ctx).sample)
        odd = torch.randn(1, 3, 28, 36)
        assert torch.equal(injected_unet_forward(unet, odd, 7, ctx[:1]), unet(odd, 7, ctx[:1]).sample)
    # and with gradients on, the values are the same in both modes
    with torch.enable_grad():
        assert torch.equal(_loss(parts, data, True), _loss(parts, data, False))


def test_freezing_policy(parts):
    unet, detail, idx = parts
    names = set(apply_freezing_policy(unet, detail, idx))
    unet_train = {n.split(".", 1)[1] for n in names if n.startswith("unet.")}
    assert unet_train == {n for n, _ in unet.named_parameters() if n.startswith(("up_blocks.", "conv_norm_out.", "conv_out."))}
    assert all(is_unet_decoder_parameter(n) for n in unet_train)
    assert {n for n in names if n.startswith("id_extractor.")} == {"id_extractor.projector.weight", "id_extractor.projector.bias"}
    assert {n.split(".", 1)[1] for n in names if n.startswith("detail.")} == {n for n, _ in detail.named_parameters()}
    frozen = [unet.conv_in, unet.time_embedding, unet.down_blocks, unet.mid_block, idx.encoder]
    assert not any(p.requires_grad for m in frozen for p in m.parameters())
    with_conv_in = set(apply_freezing_policy(unet, detail, idx, train_conv_in=True))
    assert with_conv_in - names == {"unet.conv_in.weight", "unet.conv_in.bias"}


def test_default_keeps_frozen_encoder_out_of_the_backward(parts, data):
    """The no-backward property: the encoder's and mid block's OUTPUTS carry no grad_fn (hooks)."""
    unet = parts[0]
    found = encoder_outputs_in_graph(unet, lambda: _loss(parts, data, True).backward())
    assert set(found) == {"conv_in", "time_embedding", "mid_block", "down_blocks.0", "down_blocks.1", "down_blocks.2"}
    assert not any(found.values()), found
    frozen = [unet.conv_in, unet.time_embedding, unet.down_blocks, unet.mid_block]
    assert all(p.grad is None for m in frozen for p in m.parameters())
    assert all(p.grad is not None for p in unet.up_blocks.parameters())
    assert parts[2].projector.weight.grad is not None


def test_exact_mode_records_encoder_and_changes_projector_gradient(parts, data):
    unet, detail, idx = parts
    found = encoder_outputs_in_graph(unet, lambda: _loss(parts, data, False).backward())
    # the cross-attention blocks and the mid block see the ID tokens, so they are in the graph
    assert found["down_blocks.1"] and found["down_blocks.2"] and found["mid_block"]
    assert not found["conv_in"] and not found["down_blocks.0"]           # no cross-attention there
    assert all(p.grad is None for p in unet.down_blocks.parameters())   # weights stay frozen
    g_exact = idx.projector.weight.grad.clone()
    idx.zero_grad(); detail.zero_grad(); unet.zero_grad()
    _loss(parts, data, True).backward()
    g_default = idx.projector.weight.grad
    assert not torch.allclose(g_default, g_exact)                        # the term through the encoder


def test_decoder_and_detail_gradients_do_not_depend_on_the_mode(parts, data):
    unet, detail, idx = parts
    grads = {}
    for detach in (True, False):
        for m in parts: m.zero_grad()
        _loss(parts, data, detach).backward()
        grads[detach] = [p.grad.clone() for p in list(unet.up_blocks.parameters()) + list(detail.parameters())]
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(grads[True], grads[False]))


def test_cost_default_is_smaller(parts, data):
    c_default = step_cost(lambda: _loss(parts, data, True), repeats=0)
    c_exact = step_cost(lambda: _loss(parts, data, False), repeats=0)
    assert c_default["saved_mb"] < c_exact["saved_mb"]
    assert c_default["backward_nodes"] < c_exact["backward_nodes"]


def test_trainable_conv_in_learns_through_first_skip_only(parts, data):
    unet, detail, idx = parts
    apply_freezing_policy(unet, detail, idx, train_conv_in=True)
    ctx = idx(data["ref"])
    found = encoder_outputs_in_graph(unet, lambda: injected_unet_forward(unet, data["x"], data["t"], ctx).sum().backward())
    assert found["conv_in"] and not found["down_blocks.0"] and not found["mid_block"]
    assert unet.conv_in.weight.grad is not None


def test_unfrozen_encoder_is_refused_in_default_mode(parts, data):
    unet = parts[0]
    ctx = torch.randn(2, 65, 64)
    unet.down_blocks.requires_grad_(True)
    with pytest.raises(ValueError, match="needs a frozen UNet encoder"):
        injected_unet_forward(unet, data["x"], 3, ctx)
    with torch.no_grad():   # at inference it does not matter
        injected_unet_forward(unet, data["x"], 3, ctx)
    injected_unet_forward(unet, data["x"], 3, ctx, detach_encoder_context=False)


@pytest.mark.parametrize("kw,exc,msg", [
    (dict(unet="unet"), TypeError, "`unet` must be a diffusers UNet2DConditionModel"),
    (dict(sample=torch.randn(2, 4, 32, 32)), ValueError, "`sample` must have 3 channels"),
    (dict(sample=torch.randn(3, 32, 32)), ValueError, "`sample` must have 4 dimensions"),
    (dict(id_tokens=torch.randn(2, 65, 32)), ValueError, "`id_tokens` must have shape (2, T, 64)"),
    (dict(id_tokens=torch.randn(3, 65, 64)), ValueError, "`id_tokens` must have shape (2, T, 64)"),
    (dict(mid_residual=None), ValueError, "`down_residuals` and `mid_residual` must be given together"),
    (dict(down_residuals="short"), ValueError, "`down_residuals` must hold 6 maps"),
    (dict(down_residuals="wrong"), ValueError, "`down_residuals[2]` must have shape"),
    (dict(mid_residual=torch.zeros(2, 64, 4, 4)), ValueError, "`mid_residual` must have shape"),
    (dict(detach_encoder_context=1), TypeError, "`detach_encoder_context` must be a bool"),
    (dict(timestep="t"), TypeError, "`timestep` must be an int"),
])
def test_bad_inputs(parts, data, kw, exc, msg):
    unet, detail, idx = parts
    ctx = torch.randn(2, 65, 64)
    with torch.no_grad():
        down, mid = detail(data["x"], 3, ctx, data["hint"])
    args = dict(unet=unet, sample=data["x"], timestep=3, id_tokens=ctx, down_residuals=down, mid_residual=mid)
    if kw.get("down_residuals") == "short": kw = dict(down_residuals=down[:-1])
    if kw.get("down_residuals") == "wrong": kw = dict(down_residuals=(down[0], down[1], down[3]) + down[3:])
    args.update(kw)
    with pytest.raises(exc) as e:
        injected_unet_forward(**args)
    assert msg in str(e.value)
