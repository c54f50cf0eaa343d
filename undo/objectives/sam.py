"""Sharpness-aware minimisation (Foret et al. 2021) around any objective, as a robust-unlearning baseline.

Each step: the gradient g of the wrapped objective is accumulated over all micro-batches first; the weights move
to w + e with e = rho * g / ||g|| (the worst nearby point, to first order); the gradient is taken again there;
the weights are restored to w; the optimizer then steps from w with the gradient from w + e. A step costs two
forward/backward passes (the engine counts both in FLOPs; the tokens are read once).
"""

from __future__ import annotations

import torch

from undo.core.sharding import global_norm
from undo.schema.errors import UserError
from undo.objectives.base import Objective


class SAM(Objective):
    def __init__(self, inner: Objective, rho: float = 0.05):
        if rho <= 0:
            raise UserError(f"sam_rho must be > 0, got {rho}")
        self.inner, self.rho = inner, rho
        self.name = f"sam({inner.name})"
        self.last_perturbation_norm = 0.0

    def trainable_parameters(self, model):
        return self.inner.trainable_parameters(model)

    def loss(self, model, batch):
        return self.inner.loss(model, batch)

    def tokens(self, batch):
        return self.inner.tokens(batch)

    def extra_flops(self, batch):
        return self.inner.extra_flops(batch)

    @torch.no_grad()
    def adjust_gradients(self, params, recompute):
        with_grad = [p for p in params if p.grad is not None]
        grad_norm = global_norm([p.grad for p in with_grad])  # of the whole gradient, also when it is sharded
        scale = self.rho / (grad_norm + 1e-12)
        perturbation = [p.grad * scale for p in with_grad]
        originals = [p.detach().clone() for p in with_grad]  # restored by copy: exact, unlike w + e - e
        for p, e in zip(with_grad, perturbation):
            p.add_(e)
        self.last_perturbation_norm = float(global_norm(perturbation))
        with torch.enable_grad():
            recompute()
        for p, original in zip(with_grad, originals):
            p.copy_(original)
