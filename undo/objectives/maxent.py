"""Maximum entropy: push next-token predictions on forget data toward the uniform distribution."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from undo.core.compute import forward_flops_per_token
from undo.schema.errors import UserError
from undo.core.timing import phase
from undo.objectives.base import Objective, register
from undo.core.logits import PositionLogits, needs_chunks, position_logits, sum_over_chunks
from undo.objectives.common import FORGET, RETAIN, cross_entropy, next_token_positions, shifted_logits, side


@register("maxent")
class MaxEnt(Objective):
    """L = mean over counted forget positions of KL(u || p_theta) + retain_weight * R
    (MaxEnt in Lee et al. 2025, arXiv 2506.06278), with u uniform over the V logits:

        KL(u || p) = sum_v u_v log(u_v / p_v) = -log V - mean_v log p_v,

    zero exactly when the logits are uniform. The retain term R is CE(retain) (`retain_loss: ce`, the default), or,
    as in the paper's WMDP runs, KL(p_ref || p_theta) on the retain tokens against the frozen starting model
    (`retain_loss: kl`): keep the original model's whole distribution on retain text rather than only its labels.
    """

    is_unlearning = True
    needs_reference = False

    def __init__(self, retain_weight: float = 1.0, retain_loss: str = "ce", reference: nn.Module | None = None):
        if retain_weight < 0:
            raise UserError(f"maxent needs retain_weight >= 0, got {retain_weight}")
        if retain_loss not in ("ce", "kl"):
            raise UserError(f"maxent retain_loss must be 'ce' or 'kl', got {retain_loss!r}")
        self.retain_weight, self.retain_loss, self.reference = retain_weight, retain_loss, reference

    @classmethod
    def wants_reference(cls, knobs: dict) -> bool:
        return knobs.get("retain_loss", "ce") == "kl"

    def retain_term(self, model, batch) -> torch.Tensor:
        if self.retain_loss == "ce":
            return cross_entropy(model, *side(batch, RETAIN))
        retain_ids, retain_mask = side(batch, RETAIN)
        positions, _ = next_token_positions(retain_ids, retain_mask)
        if needs_chunks(model, int(positions.sum())):  # a large vocabulary: chunk by chunk (undo.core.logits)
            with torch.no_grad(), phase("reference_forwards"):
                reference = position_logits(self.reference, retain_ids, retain_mask, positions, frozen=True)
            current = position_logits(model, retain_ids, retain_mask, positions)
            return sum_over_chunks(lambda start, stop, ref, cur: kl_sum(ref, cur), reference, current) / len(current)
        logits, _, mask, _ = shifted_logits(model, *side(batch, RETAIN))
        with torch.no_grad(), phase("reference_forwards"):
            reference, _, _, _ = shifted_logits(self.reference, *side(batch, RETAIN))
        reference_logp = torch.log_softmax(reference, dim=-1)
        kl = (reference_logp.exp() * (reference_logp - torch.log_softmax(logits, dim=-1))).sum(dim=-1)
        return kl[mask].mean()

    def loss(self, model, batch):
        forget_ids, forget_mask = side(batch, FORGET)
        positions, targets = next_token_positions(forget_ids, forget_mask)
        if needs_chunks(model, int(positions.sum())):
            return self.chunked_loss(model, batch, position_logits(model, forget_ids, forget_mask, positions), targets)
        logits, targets, mask, _ = shifted_logits(model, *side(batch, FORGET))
        log_probs = torch.log_softmax(logits, dim=-1)
        kl_from_uniform = -math.log(logits.shape[-1]) - log_probs.mean(dim=-1)
        forget_kl = kl_from_uniform[mask].mean()
        retain = self.retain_term(model, batch)
        forget_ce = F.nll_loss(log_probs[mask], targets[mask])
        loss = forget_kl + self.retain_weight * retain
        return loss, {"forget_kl_uniform": forget_kl.item(), "forget_ce": forget_ce.item(),
                      f"retain_{self.retain_loss}": retain.item()}

    def chunked_loss(self, model, batch, forget: PositionLogits, targets: torch.Tensor):
        """The same loss for a large vocabulary, chunk by chunk (undo.core.logits): the forget KL from uniform with
        its gradient; the forget CE, only logged, without."""
        def sums(start: int, stop: int, logits: torch.Tensor) -> torch.Tensor:
            log_probs = torch.log_softmax(logits, dim=-1)
            kl = (-math.log(logits.shape[-1]) - log_probs.mean(dim=-1)).sum()
            return torch.stack([kl, F.nll_loss(log_probs, targets[start:stop], reduction="sum").detach()])

        forget_kl, forget_ce = sum_over_chunks(sums, forget) / len(forget)
        retain = self.retain_term(model, batch)
        loss = forget_kl + self.retain_weight * retain
        return loss, {"forget_kl_uniform": forget_kl.item(), "forget_ce": forget_ce.item(),
                      f"retain_{self.retain_loss}": retain.item()}

    def extra_flops(self, batch):
        if self.retain_loss != "kl":
            return {}
        retain_ids = batch["retain_input_ids"]
        return {"reference": retain_ids.numel() * forward_flops_per_token(self.reference, retain_ids.shape[-1])}


def kl_sum(reference_logits: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Sum over positions of KL(p_reference || p) ([positions, vocab] logits)."""
    reference_logp = torch.log_softmax(reference_logits, dim=-1)
    return (reference_logp.exp() * (reference_logp - torch.log_softmax(logits, dim=-1))).sum()
