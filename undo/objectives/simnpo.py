"""SimNPO: NPO without a reference model, on length-normalised log-likelihood with a margin."""

from __future__ import annotations

import torch.nn.functional as F

from undo.schema.errors import UserError
from undo.objectives.base import Objective, register
from undo.objectives.common import FORGET, sequence_logprob, side, tokens_read, with_optional_retain_term


@register("simnpo")
class SimNPO(Objective):
    """SimNPO (Fan, Liu, Lin, Jia, Zhang, Mei, Liu 2024, "Simplicity Prevails: Rethinking Negative Preference
    Optimization for LLM Unlearning", arXiv 2410.07163), with |y| the number of counted tokens of a forget sequence:

        L = -(2/beta) * mean_forget log sigmoid(-(beta/|y|) * log pi_theta(y|x) - gamma) + retain_weight * CE(retain)

    gamma is the reward margin. The retain term is optional (retain_weight 0.0, the default, leaves the retain
    half unused).
    """

    is_unlearning = True
    needs_reference = False

    def __init__(self, beta: float = 2.5, gamma: float = 0.0, retain_weight: float = 0.0):
        if beta <= 0 or retain_weight < 0:
            raise UserError(f"simnpo needs beta > 0 and retain_weight >= 0, got beta={beta}, "
                            f"retain_weight={retain_weight}")
        self.beta, self.gamma, self.retain_weight = beta, gamma, retain_weight

    def loss(self, model, batch):
        logprob, counted = sequence_logprob(model, *side(batch, FORGET))
        mean_logprob = logprob / counted.clamp(min=1)
        simnpo = -(2 / self.beta) * F.logsigmoid(-self.beta * mean_logprob - self.gamma).mean()
        logs = {"simnpo": simnpo.item(), "forget_ce": (-logprob.sum() / counted.sum()).item()}
        return with_optional_retain_term(model, batch, simnpo, logs, self.retain_weight)

    def tokens(self, batch):
        return tokens_read(batch, self.retain_weight)
