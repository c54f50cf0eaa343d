"""Shrink-and-perturb: the "Noise" step of UNDO.

Shrink-and-perturb comes from Ash & Adams 2020, "On Warm-Starting Neural Network Training" (NeurIPS 2020);
UNDO (Unlearn, Noise, Distill-on-Outputs) uses it to damage the unlearned teacher's copy before distilling
into it (Lee et al. 2025, "Distillation Robustifies Unlearning", arXiv 2506.06278). In place, with α ∈ [0, 1]
and β ≥ 0:

    matrices (ndim >= 2: linear weights, embeddings):  θ ← (1 − α)·θ + α·β·N,   N ~ Xavier-uniform(θ.shape)
    biases:                                            b ← (1 − α)·b             (toward 0)
    norm gains:                                        w ← (1 − α)·w + α·w₀      (toward the neutral gain w₀)

N is a fresh draw, U(−a, a) with a = sqrt(6 / (fan_in + fan_out)) (torch's `xavier_uniform_`, fan_in = size(1),
fan_out = size(0) for a 2-D weight), taken from a private CPU `torch.Generator` seeded by `seed`, one matrix after
another in `model.named_parameters()` order: the same seed gives the same weights on any device, and the global
RNG is untouched. α = 0 changes nothing; α = 1 with β = 1 is a fresh Xavier init (with unit norm gains).

The neutral gain w₀ is the value at which the norm leaves its input's scale unchanged. A norm computes
(offset + w)·x̂, so w₀ = 1 − offset: offset 0 for HF's LlamaRMSNorm and torch's LayerNorm/RMSNorm (w₀ = 1),
offset 1 for norms written as (1 + w)·x̂, e.g. Gemma's (w₀ = 0). `GAIN_OFFSETS` lists known norm classes
(matched by exact class, so a subclass that changes the convention is not silently mistreated); callers add
others through `gain_offsets`. Any other module's `weight` vector is *probed* (`probed_gain_offset`): run with its
parameters at zero, a w·x̂ norm outputs 0 and a (1 + w)·x̂ norm outputs x̂, so the convention is measured, not
guessed, on any architecture (Qwen2's and Gemma2's RMSNorm, GPT-NeoX's LayerNorm, ...). A vector that is neither
a bias nor a norm's gain by that test raises a UserError before anything is modified. Tied weights (an input
embedding shared with the output head) are one parameter and are noised once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from undo.schema.errors import UserError

# Norm class -> gain offset: the norm multiplies its normalised input by (offset + weight).
GAIN_OFFSETS: dict[type[nn.Module], float] = {
    LlamaRMSNorm: 0.0,
    nn.LayerNorm: 0.0,
    nn.RMSNorm: 0.0,
    nn.GroupNorm: 0.0,
}


def shrink_and_perturb(model: nn.Module, alpha: float, beta: float, seed: int,
                       gain_offsets: Mapping[type[nn.Module], float] | None = None) -> nn.Module:
    """Apply shrink-and-perturb to `model` in place (formula in the module docstring) and return it.

    `gain_offsets` maps further norm classes to their gain offset (0 if the norm multiplies by w, 1 if by 1 + w);
    it takes precedence over `GAIN_OFFSETS`.
    """
    alpha, beta = float(alpha), float(beta)
    if not 0.0 <= alpha <= 1.0:  # also refuses NaN
        raise UserError(f"alpha = {alpha} is out of range: shrink-and-perturb needs 0 <= alpha <= 1")
    if not (math.isfinite(beta) and beta >= 0.0):
        raise UserError(f"beta = {beta} is out of range: shrink-and-perturb needs a finite beta >= 0")
    offsets = {**GAIN_OFFSETS, **(gain_offsets or {})}  # a copy: probed classes are added to it
    generator = torch.Generator().manual_seed(seed)
    # Work out every parameter's treatment first, so an unknown norm fails before anything is modified.
    plan = [(name, param, _neutral_value(model, name, param, offsets)) for name, param in model.named_parameters()]
    with torch.no_grad():
        for name, param, neutral in plan:
            if param.ndim >= 2:
                noise = xavier_uniform_noise(param.shape, generator).to(param.device, param.dtype)
                param.copy_((1 - alpha) * param + (alpha * beta) * noise)
            else:
                param.copy_((1 - alpha) * param + alpha * neutral)
    return model


def xavier_uniform_noise(shape: torch.Size, generator: torch.Generator) -> torch.Tensor:
    """One float32 Xavier-uniform draw of `shape` from `generator` (on the CPU)."""
    return nn.init.xavier_uniform_(torch.empty(shape, dtype=torch.float32), generator=generator)


def _neutral_value(model: nn.Module, name: str, param: nn.Parameter,
                   offsets: Mapping[type[nn.Module], float]) -> float | None:
    """What a vector parameter shrinks toward (None for matrices, which are perturbed instead)."""
    if param.ndim >= 2:
        return None
    owner_name, _, attribute = name.rpartition(".")
    owner = model.get_submodule(owner_name)
    if attribute == "bias":
        return 0.0
    if attribute == "weight" and type(owner) in offsets:
        return 1.0 - offsets[type(owner)]
    if attribute == "weight":
        offset = probed_gain_offset(owner)
        if offset is not None:
            offsets[type(owner)] = offset  # one probe per class
            return 1.0 - offset
    raise UserError(
        f"shrink-and-perturb does not know how to shrink {name} ({type(owner).__name__}.{attribute}, a vector that "
        f"is neither a bias nor a norm's gain): pass gain_offsets={{{type(owner).__name__}: 0.0}} if it is a norm "
        f"that multiplies by its weight, or 1.0 if it multiplies by (1 + weight)")


@torch.no_grad()
def probed_gain_offset(norm: nn.Module) -> float | None:
    """Measure a norm's convention instead of guessing it: with its own parameters set to zero, a norm computing
    w·x̂ (+ b) outputs 0, and one computing (1 + w)·x̂ outputs the normalised input x̂, which does not change when the
    input is scaled. 0.0, 1.0, or None when the module behaves like neither (then it is not a norm's gain)."""
    weight = norm.weight
    own = dict(norm.named_parameters(recurse=False))
    saved = {name: p.detach().clone() for name, p in own.items()}
    x = torch.randn(2, 3, weight.numel(), generator=torch.Generator().manual_seed(0)).to(weight.device, weight.dtype)
    try:
        for p in own.values():
            p.zero_()
        out, out_scaled = norm(x), norm(3 * x)
    except Exception:  # noqa: BLE001 - a module that cannot run on one tensor is not a norm
        return None
    finally:
        for name, p in own.items():
            p.copy_(saved[name])
    if not (isinstance(out, torch.Tensor) and out.shape == x.shape):
        return None
    tolerance = 1e-3 if weight.dtype == torch.float32 else 3e-2
    if out.abs().max() <= tolerance:
        return 0.0
    if torch.allclose(out, out_scaled, atol=tolerance, rtol=tolerance) and out.abs().mean() > 0.1:
        return 1.0
    return None
