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
offset 1 for norms written as (1 + w)·x̂, e.g. Gemma's (w₀ = 0). `GAIN_OFFSETS` lists the known norm classes
(matched by exact class, so a subclass that changes the convention is not silently mistreated); callers add
others through `gain_offsets`. A vector parameter that is neither a bias nor the gain of a known norm raises
a UserError rather than being guessed at.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from undo.core.errors import UserError

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
    offsets = {**GAIN_OFFSETS, **(gain_offsets or {})}
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
    raise UserError(
        f"shrink-and-perturb does not know how to shrink {name} ({type(owner).__name__}.{attribute}, a vector): "
        f"pass gain_offsets={{{type(owner).__name__}: 0.0}} if the norm multiplies by its weight, "
        f"or 1.0 if it multiplies by (1 + weight)")
