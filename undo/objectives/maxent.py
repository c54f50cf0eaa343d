"""Maximum entropy: push next-token predictions on forget data toward the uniform distribution."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from undo.core.errors import UserError
from undo.objectives.base import Objective, register
from undo.objectives.common import FORGET, RETAIN, cross_entropy, shifted_logits, side


@register("maxent")
class MaxEnt(Objective):
    """L = mean over counted forget positions of KL(u || p_theta) + retain_weight * CE(retain)
    (MaxEnt in Lee et al. 2025, arXiv 2506.06278), with u uniform over the V logits:

        KL(u || p) = sum_v u_v log(u_v / p_v) = -log V - mean_v log p_v,

    zero exactly when the logits are uniform.
    """

    is_unlearning = True
    needs_reference = False

    def __init__(self, retain_weight: float = 1.0):
        if retain_weight < 0:
            raise UserError(f"maxent needs retain_weight >= 0, got {retain_weight}")
        self.retain_weight = retain_weight

    def loss(self, model, batch):
        logits, targets, mask, _ = shifted_logits(model, *side(batch, FORGET))
        log_probs = torch.log_softmax(logits, dim=-1)
        kl_from_uniform = -math.log(logits.shape[-1]) - log_probs.mean(dim=-1)
        forget_kl = kl_from_uniform[mask].mean()
        retain_ce = cross_entropy(model, *side(batch, RETAIN))
        forget_ce = F.nll_loss(log_probs[mask], targets[mask])
        loss = forget_kl + self.retain_weight * retain_ce
        return loss, {"forget_kl_uniform": forget_kl.item(), "forget_ce": forget_ce.item(),
                      "retain_ce": retain_ce.item()}
