"""Gradient ascent: raise the next-token loss on forget data, nothing else."""

from __future__ import annotations

from undo.objectives.base import Objective, register
from undo.objectives.common import FORGET, cross_entropy, side


@register("grad_ascent")
class GradAscent(Objective):
    """L = -CE(forget). The simplest behavioural unlearning baseline (GradAscent in Lee et al. 2025, arXiv
    2506.06278). The retain half of the batch is not used, so it is not counted as processed tokens."""

    is_unlearning = True
    needs_reference = False

    def loss(self, model, batch):
        forget_ce = cross_entropy(model, *side(batch, FORGET))
        return -forget_ce, {"forget_ce": forget_ce.item()}

    def tokens(self, batch):
        return int(batch["forget_input_ids"].numel())
