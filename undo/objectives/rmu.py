"""Representation Misdirection for Unlearning: steer one layer's forget activations to a fixed random vector."""

from __future__ import annotations

import torch
from torch import nn

from undo.core.compute import forward_flops_per_token
from undo.schema.errors import UserError
from undo.core.timing import phase
from undo.objectives.base import Objective, register
from undo.objectives.common import (
    FORGET, RETAIN, block_outputs, check_blocks, forward, parameters_matching, side,
)

# Each family's MLP output projection of block {i} (what RMU trains), as a regex over parameter names.
MLP_OUTPUT = {
    **dict.fromkeys(("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "olmo",
                     "olmo2", "phi3", "smollm3"), r"layers\.{i}\.mlp\.down_proj\.weight$"),
    "gpt2": r"\bh\.{i}\.mlp\.c_proj\.weight$",
    "gpt_neox": r"layers\.{i}\.mlp\.dense_4h_to_h\.weight$",
    "phi": r"layers\.{i}\.mlp\.fc2\.weight$",
    "opt": r"layers\.{i}\.fc2\.weight$",
}


def token_mse(a: torch.Tensor, b: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over the tokens that count of the per-token mean squared difference (= F.mse_loss without padding)."""
    per_token = (a.float() - b.float()).pow(2).mean(dim=-1)
    return per_token.mean() if attention_mask is None else per_token[attention_mask.bool()].mean()


@register("rmu")
class RMU(Objective):
    """RMU (Li et al. 2024, "The WMDP Benchmark: Measuring and Reducing Malicious Use With Unlearning",
    arXiv 2403.03218), with h_l the residual stream after block `layer` (0-based):

        L = MSE(h_l(forget), steer * u) + alpha * MSE(h_l(retain), h_l^ref(retain))

    MSE is the mean over counted (non-padding) tokens of the mean over the width. u is a fixed unit vector drawn
    as in the WMDP code: uniform [0, 1) per coordinate from `seed`, then normalised (so it lies in the positive
    orthant). h^ref comes from `reference`, the frozen original model. Only the MLP output projection of
    `trainable_layers` (a block or a list of blocks; default: `layer` and the two blocks below it) trains: the
    weights `MLP_OUTPUT` names for the model's family (`mlp.down_proj` in Llama, `mlp.c_proj` in GPT-2,
    `mlp.dense_4h_to_h` in GPT-NeoX, `fc2` in Phi/OPT). `trainable_regex` replaces that choice with any regular
    expression over parameter names (as open-unlearning's `trainable_params_regex`). In a sweep config a list
    value is a grid, so one run training blocks 0-2 is written `trainable_layers: [[0, 1, 2]]`.

    The default blocks mirror WMDP's Zephyr-7B run (l = 7, down_proj of blocks 5-7, c = 6.5). steer (c) only
    means something relative to the residual stream's norm; on tiny models, whose norm is far smaller, sweep it.
    alpha = 0 removes the retain term from the gradient, but its MSE is still computed and logged as a drift
    monitor, so the reference is always needed.
    """

    is_unlearning = True
    needs_reference = True

    def __init__(self, reference: nn.Module, layer: int = 2, steer: float = 6.0, alpha: float = 100.0,
                 trainable_layers: int | list[int] | None = None, trainable_regex: str | None = None,
                 seed: int = 0):
        if layer < 0:
            raise UserError(f"rmu layer must be >= 0, got {layer}")
        trainable = (list(range(max(0, layer - 2), layer + 1)) if trainable_layers is None
                     else [trainable_layers] if isinstance(trainable_layers, int) else list(trainable_layers))
        if not trainable or not all(0 <= t <= layer for t in trainable):
            raise UserError(f"rmu trainable_layers must be a non-empty list of blocks in 0..layer ({layer}), "
                            f"got {trainable_layers}")
        if steer <= 0 or alpha < 0:
            raise UserError(f"rmu needs steer > 0 and alpha >= 0, got steer={steer}, alpha={alpha}")
        self.reference, self.layer, self.steer, self.alpha = reference, layer, steer, alpha
        self.trainable_layers, self.trainable_regex, self.seed = sorted(set(trainable)), trainable_regex, seed

    def direction(self, width: int) -> torch.Tensor:
        """The unit steering vector u (float32, CPU); the same for the same seed on every machine."""
        u = torch.rand(width, generator=torch.Generator().manual_seed(self.seed))
        return u / u.norm()

    def trainable_parameters(self, model):
        check_blocks(model, [self.layer], "rmu layer")
        if self.trainable_regex is not None:
            return parameters_matching(model, self.trainable_regex, "rmu trainable_regex")
        family = model.config.model_type
        if family not in MLP_OUTPUT:
            raise UserError(f"rmu does not know the MLP output projection of {family!r} models; set knobs."
                            "trainable_regex to a regular expression over its parameter names")
        blocks = "|".join(str(i) for i in self.trainable_layers)
        return parameters_matching(model, MLP_OUTPUT[family].replace("{i}", f"(?:{blocks})"),
                                   f"rmu's {family} default (set knobs.trainable_regex to choose)")

    def activations(self, model: nn.Module, input_ids, attention_mask) -> torch.Tensor:
        with block_outputs(model, [self.layer]) as captured:
            forward(model, input_ids, attention_mask)
        return captured[self.layer]

    def loss(self, model, batch):
        forget_ids, forget_mask = side(batch, FORGET)
        retain_ids, retain_mask = side(batch, RETAIN)
        forget = self.activations(model, forget_ids, forget_mask)
        target = self.steer * self.direction(forget.shape[-1]).to(forget.device)
        forget_mse = token_mse(forget, target, forget_mask)
        with torch.no_grad(), phase("reference_forwards"):
            frozen = self.activations(self.reference, retain_ids, retain_mask)
        retain_mse = token_mse(self.activations(model, retain_ids, retain_mask), frozen, retain_mask)
        loss = forget_mse + self.alpha * retain_mse
        return loss, {"forget_mse": forget_mse.item(), "retain_mse": retain_mse.item()}

    def extra_flops(self, batch):
        retain_ids = batch["retain_input_ids"]
        return {"reference": retain_ids.numel() * forward_flops_per_token(self.reference, retain_ids.shape[-1])}
