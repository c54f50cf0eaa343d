"""Negative Preference Optimization: lower the forget data's likelihood relative to the frozen original model."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from undo.core.compute import forward_flops_per_token
from undo.schema.errors import UserError
from undo.core.timing import phase
from undo.objectives.base import Objective, register
from undo.objectives.common import FORGET, sequence_logprob, side, tokens_read, with_optional_retain_term


@register("npo")
class NPO(Objective):
    """NPO (Zhang, Lin, Bai, Mei 2024, "Negative Preference Optimization: From Catastrophic Collapse to Effective
    Unlearning", arXiv 2404.05868), with log pi(y|x) the summed token log-probability of a forget sequence:

        L = -(2/beta) * mean_forget log sigmoid(-beta * (log pi_theta(y|x) - log pi_ref(y|x)))
            + retain_weight * CE(retain)

    pi_ref is `reference`, the frozen original model (eval mode, never trained). At theta == ref the first term
    is (2/beta) log 2. The retain term is optional (retain_weight 0.0, the default, leaves the retain half unused).
    """

    is_unlearning = True
    needs_reference = True

    def __init__(self, reference: nn.Module, beta: float = 0.1, retain_weight: float = 0.0):
        if beta <= 0 or retain_weight < 0:
            raise UserError(f"npo needs beta > 0 and retain_weight >= 0, got beta={beta}, "
                            f"retain_weight={retain_weight}")
        self.reference, self.beta, self.retain_weight = reference, beta, retain_weight

    def loss(self, model, batch):
        input_ids, attention_mask = side(batch, FORGET)
        logprob, counted = sequence_logprob(model, input_ids, attention_mask)
        with torch.no_grad(), phase("reference_forwards"):
            reference_logprob, _ = sequence_logprob(self.reference, input_ids, attention_mask)
        npo = -(2 / self.beta) * F.logsigmoid(-self.beta * (logprob - reference_logprob)).mean()
        logs = {"npo": npo.item(), "forget_ce": (-logprob.sum() / counted.sum()).item()}
        return with_optional_retain_term(model, batch, npo, logs, self.retain_weight)

    def tokens(self, batch):
        return tokens_read(batch, self.retain_weight)

    def extra_flops(self, batch):
        forget_ids = batch["forget_input_ids"]
        return {"reference": forget_ids.numel() * forward_flops_per_token(self.reference, forget_ids.shape[-1])}
