"""Adaptive timestep sampling (SPEC §7): distribution per data kind, determinism, bad input."""
import pytest
import torch

from anydoor.timesteps import DATA_KINDS, sample_timesteps


def _late_fraction(kind, mode="adaptive", n=50_000, seed=0):
    t = sample_timesteps(torch.full((n,), kind), 1000, mode=mode, generator=torch.Generator().manual_seed(seed))
    assert t.dtype == torch.long and t.shape == (n,) and 0 <= int(t.min()) and int(t.max()) < 1000
    return (t < 500).float().mean().item()


@pytest.mark.parametrize("kind,want", [(0, 0.85), (1, 0.15), (2, 0.5)])
def test_adaptive_late_fraction(kind, want):
    assert abs(_late_fraction(kind) - want) < 0.01


@pytest.mark.parametrize("kind", sorted(DATA_KINDS))
def test_uniform_mode_ignores_kind(kind):
    assert abs(_late_fraction(kind, mode="uniform") - 0.5) < 0.01


def test_adaptive_upper_half_of_images_is_uniform_share():
    # kind 0 lands in [500, 1000) only through the 30% uniform draw: 0.15 spread evenly
    t = sample_timesteps(torch.zeros(100_000, dtype=torch.long), generator=torch.Generator().manual_seed(1))
    assert abs(((t >= 500) & (t < 750)).float().mean().item() - 0.075) < 0.005
    assert abs((t >= 750).float().mean().item() - 0.075) < 0.005


def test_seeded_and_mixed_batch():
    kinds = torch.tensor([0, 1, 2, 1, 0])
    a = sample_timesteps(kinds, generator=torch.Generator().manual_seed(7))
    b = sample_timesteps(kinds, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    t = sample_timesteps(kinds.repeat(1000), uniform_prob=0.0)
    k = kinds.repeat(1000)
    assert (t[k == 0] < 500).all() and (t[k == 1] >= 500).all()


@pytest.mark.parametrize("args,kwargs,exc,msg", [
    (([0, 1],), {}, TypeError, "`data_kind` must be a torch.Tensor"),
    ((torch.tensor([0.0]),), {}, TypeError, "integer tensor"),
    ((torch.zeros(2, 2, dtype=torch.long),), {}, ValueError, "1 dimension"),
    ((torch.tensor([5]),), {}, ValueError, "`data_kind` values must be in [0, 1, 2]"),
    ((torch.tensor([0]),), {"mode": "linear"}, ValueError, "`mode` must be one of"),
    ((torch.tensor([0]),), {"num_train_timesteps": 0}, ValueError, "`num_train_timesteps` must be at least 2"),
    ((torch.tensor([0]),), {"uniform_prob": -0.1}, ValueError, "`uniform_prob` must lie in [0, 1]"),
    ((torch.tensor([0]),), {"generator": 3}, TypeError, "`generator` must be a torch.Generator"),
])
def test_bad_input(args, kwargs, exc, msg):
    with pytest.raises(exc) as e:
        sample_timesteps(*args, **kwargs)
    assert msg in str(e.value)
