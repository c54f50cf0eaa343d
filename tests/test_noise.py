import math

import pytest
import torch
from torch import nn

from undo.config import ModelConfig
from undo.schema.errors import UserError
from undo.core.models import build_model
from undo.core.noise import shrink_and_perturb, xavier_uniform_noise

TINY = ModelConfig(layers=1, width=32, heads=2, context=16, vocab=40)


def tiny_model(seed=0):
    return build_model(TINY, seed=seed, pad_id=0, eos_id=2, tokenizer_size=40)


def weights(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def matrices(model):
    return {name: p for name, p in model.named_parameters() if p.ndim >= 2}


def test_alpha_zero_leaves_every_weight_bit_identical():
    model = tiny_model()
    before = weights(model)
    assert shrink_and_perturb(model, alpha=0.0, beta=1.0, seed=3) is model
    assert all(torch.equal(p, before[name]) for name, p in model.named_parameters())


def test_alpha_one_beta_zero_zeroes_matrices_and_sets_llama_gains_to_one():
    model = tiny_model()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.uniform_(-2, 2)  # trained gains are not 1
    shrink_and_perturb(model, alpha=1.0, beta=0.0, seed=0)
    gains = [name for name, p in model.named_parameters() if p.ndim == 1]
    assert len(gains) == 3  # input and post-attention norms of the block, final norm
    for name, p in model.named_parameters():
        assert torch.equal(p, torch.zeros_like(p) if p.ndim >= 2 else torch.ones_like(p)), name


class OnePlusNorm(nn.Module):
    """An RMSNorm written as (1 + w) * x_hat (Gemma-style): neutral gain w = 0."""

    def __init__(self, width):
        super().__init__()
        self.weight = nn.Parameter(torch.full((width,), 0.7))

    def forward(self, x):
        return (1 + self.weight) * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(8, 8)  # has a bias
        self.norm = OnePlusNorm(8)


def test_one_plus_w_norm_shrinks_to_zero_via_gain_offset():
    net = TinyNet()
    with torch.no_grad():
        net.proj.bias.fill_(0.5)
    shrink_and_perturb(net, alpha=1.0, beta=0.0, seed=0, gain_offsets={OnePlusNorm: 1.0})
    assert torch.equal(net.norm.weight, torch.zeros(8))
    assert torch.equal(net.proj.bias, torch.zeros(8))
    assert torch.equal(net.proj.weight, torch.zeros(8, 8))


def test_half_shrink_matches_gain_offset_formula():
    net = TinyNet()
    shrink_and_perturb(net, alpha=0.5, beta=0.0, seed=0, gain_offsets={OnePlusNorm: 1.0})
    torch.testing.assert_close(net.norm.weight, torch.full((8,), 0.35))


class PlainNorm(OnePlusNorm):
    """An RMSNorm written as w * x_hat, in no table either: neutral gain w = 1."""

    def forward(self, x):
        return self.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)


def test_an_unknown_norm_class_is_probed_for_its_convention():
    net = TinyNet()  # OnePlusNorm is in no table: its (1 + w) convention is measured
    shrink_and_perturb(net, alpha=0.5, beta=0.0, seed=0)
    torch.testing.assert_close(net.norm.weight, torch.full((8,), 0.35))
    plain = nn.Sequential(nn.Linear(8, 8), PlainNorm(8))
    shrink_and_perturb(plain, alpha=0.5, beta=0.0, seed=0)
    torch.testing.assert_close(plain[1].weight, torch.full((8,), 0.85))


class ScaledProjection(nn.Module):
    """A learned per-feature scale that is not a norm: its output is not scale-free, so no convention fits it."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(8, 8)
        self.scale = nn.Module()
        self.scale.weight = nn.Parameter(torch.full((8,), 0.7))
        self.scale.forward = lambda x: x + self.scale.weight


def test_a_vector_that_is_no_norm_gain_is_refused_before_anything_changes():
    net = ScaledProjection()
    before = weights(net)
    with pytest.raises(UserError, match=r"scale\.weight \(Module\.weight, a vector that is neither.*gain_offsets"):
        shrink_and_perturb(net, alpha=0.5, beta=1.0, seed=0)
    assert all(torch.equal(p, before[name]) for name, p in net.named_parameters())


def test_half_alpha_matches_hand_computation():
    model, alpha, beta, seed = tiny_model(), 0.5, 1.0, 7
    before = weights(model)
    shrink_and_perturb(model, alpha=alpha, beta=beta, seed=seed)
    generator = torch.Generator().manual_seed(seed)  # the noise is drawn matrix by matrix in parameter order
    for name, p in model.named_parameters():
        theta = before[name]
        if p.ndim >= 2:
            fan_out, fan_in = theta.shape
            bound = math.sqrt(6 / (fan_in + fan_out))
            noise = torch.empty(theta.shape).uniform_(-bound, bound, generator=generator)
            expected = (1 - alpha) * theta + alpha * beta * noise
        else:
            expected = (1 - alpha) * theta + alpha * 1.0
        torch.testing.assert_close(p, expected, rtol=1e-6, atol=1e-7, msg=name)
    assert not torch.equal(model.lm_head.weight, before["lm_head.weight"])


def test_noise_is_reproducible_by_seed_and_differs_across_seeds():
    a, b, c = (shrink_and_perturb(tiny_model(), alpha=0.3, beta=0.1, seed=s) for s in (1, 1, 2))
    for (name, pa), pb, pc in zip(a.named_parameters(), b.parameters(), c.parameters()):
        assert torch.equal(pa, pb), name
        if pa.ndim >= 2:
            assert not torch.equal(pa, pc), name


def test_global_rng_is_untouched():
    state = torch.get_rng_state()
    shrink_and_perturb(tiny_model(), alpha=0.5, beta=1.0, seed=0)
    assert torch.equal(torch.get_rng_state(), state)


def test_full_alpha_unit_beta_is_a_xavier_uniform_init():
    model = shrink_and_perturb(tiny_model(), alpha=1.0, beta=1.0, seed=0)
    for name, p in matrices(model).items():
        fan_out, fan_in = p.shape
        bound = math.sqrt(6 / (fan_in + fan_out))
        assert p.abs().max().item() <= bound, name
        assert p.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.1), name
    # the embedding is [vocab, width]: torch's fan_in = size(1) = width, fan_out = size(0) = vocab
    assert xavier_uniform_noise(torch.Size([40, 32]), torch.Generator()).abs().max() <= math.sqrt(6 / 72)


@pytest.mark.parametrize("alpha, beta, knob", [(-0.1, 0.1, "alpha"), (1.5, 0.1, "alpha"), (math.nan, 0.1, "alpha"),
                                               (0.5, -1.0, "beta"), (0.5, math.inf, "beta")])
def test_bad_alpha_or_beta_is_a_user_error(alpha, beta, knob):
    with pytest.raises(UserError, match=rf"^{knob} = .* out of range") as err:
        shrink_and_perturb(tiny_model(), alpha=alpha, beta=beta, seed=0)
    assert "\n" not in str(err.value)
