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
from undo.objectives.common import FORGET, RETAIN, cross_entropy, shifted_logits, side


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
        logits, _, mask, _ = shifted_logits(model, *side(batch, RETAIN))
        with torch.no_grad(), phase("reference_forwards"):
            reference, _, _, _ = shifted_logits(self.reference, *side(batch, RETAIN))
        reference_logp = torch.log_softmax(reference, dim=-1)
        kl = (reference_logp.exp() * (reference_logp - torch.log_softmax(logits, dim=-1))).sum(dim=-1)
        return kl[mask].mean()

    def loss(self, model, batch):
        logits, targets, mask, _ = shifted_logits(model, *side(batch, FORGET))
        log_probs = torch.log_softmax(logits, dim=-1)
        kl_from_uniform = -math.log(logits.shape[-1]) - log_probs.mean(dim=-1)
        forget_kl = kl_from_uniform[mask].mean()
        retain = self.retain_term(model, batch)
        forget_ce = F.nll_loss(log_probs[mask], targets[mask])
        loss = forget_kl + self.retain_weight * retain
        return loss, {"forget_kl_uniform": forget_kl.item(), "forget_ce": forget_ce.item(),
                      f"retain_{self.retain_loss}": retain.item()}

    def extra_flops(self, batch):
        if self.retain_loss != "kl":
            return {}
        retain_ids = batch["retain_input_ids"]
        return {"reference": retain_ids.numel() * forward_flops_per_token(self.reference, retain_ids.shape[-1])}
