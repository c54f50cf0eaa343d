"""Gradient difference: ascend on forget data while descending on retain data."""

from __future__ import annotations

from undo.schema.errors import UserError
from undo.objectives.base import Objective, register
from undo.objectives.common import FORGET, RETAIN, cross_entropy, side


@register("grad_diff")
class GradDiff(Objective):
    """L = -CE(forget) + retain_weight * CE(retain) (GradDiff in Lee et al. 2025, arXiv 2506.06278).

    retain_weight defaults to 1.0, the paper's value for the language setting; the paper used 15 for arithmetic,
    which a sweep sets explicitly.
    """

    is_unlearning = True
    needs_reference = False

    def __init__(self, retain_weight: float = 1.0):
        if retain_weight < 0:
            raise UserError(f"grad_diff needs retain_weight >= 0, got {retain_weight}")
        self.retain_weight = retain_weight

    def loss(self, model, batch):
        forget_ce = cross_entropy(model, *side(batch, FORGET))
        retain_ce = cross_entropy(model, *side(batch, RETAIN))
        loss = -forget_ce + self.retain_weight * retain_ce
        return loss, {"forget_ce": forget_ce.item(), "retain_ce": retain_ce.item()}
