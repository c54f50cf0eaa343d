"""Representation noising: make forget-data activations look like Gaussian noise while keeping retain behaviour."""

from __future__ import annotations

import zlib

import torch

from undo.schema.errors import UserError
from undo.objectives.base import Objective, register
from undo.objectives.common import (
    FORGET, RETAIN, block_outputs, check_blocks, cross_entropy, decoder_blocks, side,
)


def squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """|a_i - b_j|^2 for rows of a [n, d] and b [m, d], as an [n, m] matrix."""
    return (a.pow(2).sum(-1, keepdim=True) + b.pow(2).sum(-1) - 2 * a @ b.T).clamp_min(0)


def mmd2(x: torch.Tensor, y: torch.Tensor, bandwidth: float | None = None) -> torch.Tensor:
    """Biased (V-statistic) estimate of the squared MMD between samples x [n, d] and y [m, d]:

        mean k(x_i, x_j) + mean k(y_i, y_j) - 2 mean k(x_i, y_j),   k(a, b) = exp(-|a - b|^2 / (2 sigma^2)),

    sigma = `bandwidth`, or by the median heuristic 2 sigma^2 = median |a - b|^2 over distinct pairs of the pooled
    sample (held constant for the gradient). It is never negative and exactly 0 when x equals y.
    """
    dxx, dyy, dxy = squared_distances(x, x), squared_distances(y, y), squared_distances(x, y)
    if bandwidth is None:
        xi, xj = torch.triu_indices(len(x), len(x), 1, device=x.device)
        yi, yj = torch.triu_indices(len(y), len(y), 1, device=y.device)
        scale = torch.cat([dxx[xi, xj], dyy[yi, yj], dxy.flatten()]).detach().median()
    else:
        scale = 2 * bandwidth**2
    return torch.exp(-dxx / scale).mean() + torch.exp(-dyy / scale).mean() - 2 * torch.exp(-dxy / scale).mean()


@register("repnoise")
class RepNoise(Objective):
    """Representation noising (Rosati et al. 2024, "Representation Noising: A Defence Mechanism Against Harmful
    Finetuning", arXiv 2405.14577):

        L = CE(retain) - alpha * CE(forget) + beta * mean_{l in layers} MMD^2(h_l(forget tokens), N(0, I))

    h_l is the residual stream after block l in `layers` (a block or a list; default: every block), over the
    forget tokens that count, subsampled to at most `max_tokens` tokens (the same tokens for every layer); each
    layer is compared with its own draw of standard Gaussian noise of the same shape. MMD^2 is `mmd2` (Gaussian
    kernel, median heuristic unless `bandwidth` is set) with tokens as samples. The subsample and the noise come
    from a private generator seeded by `seed` and the batch's forget tokens: reproducible across runs and across a
    resume, fresh for every batch.

    alpha weighs the ascent and beta the noise term, as in the authors' code (domenicrosati/representation-noising,
    `harmless + beta * MMD - alpha * log(harmful)`). Their defaults (alpha = 1, beta = 0.001) are for a different
    estimator: MMD on each block's MLP output with whole sequences as samples and a sum of 5 kernels, and ascent on
    log(1 + CE(forget)), about 1/(1 + CE) per unit of CE. Here the ascent is linear in CE, so alpha defaults to
    0.1 (of that order for forget CEs of a few nats), and beta to 1.0 for this token-level MMD. Sweep both.
    """

    is_unlearning = True
    needs_reference = False

    def __init__(self, alpha: float = 0.1, beta: float = 1.0, layers: int | list[int] | None = None,
                 max_tokens: int = 256, bandwidth: float | None = None, seed: int = 0):
        if alpha < 0 or beta < 0:
            raise UserError(f"repnoise needs alpha >= 0 and beta >= 0, got alpha={alpha}, beta={beta}")
        if layers is not None and not layers:
            raise UserError("repnoise layers must list at least one block (or be omitted for all blocks)")
        if max_tokens < 2:
            raise UserError(f"repnoise max_tokens must be >= 2, got {max_tokens}")
        if bandwidth is not None and bandwidth <= 0:
            raise UserError(f"repnoise bandwidth must be > 0 (or null for the median heuristic), got {bandwidth}")
        self.alpha, self.beta = alpha, beta
        self.layers = [layers] if isinstance(layers, int) else layers
        self.max_tokens, self.bandwidth, self.seed = max_tokens, bandwidth, seed

    def generator(self, forget_ids: torch.Tensor) -> torch.Generator:
        """The private generator of one batch, seeded from `seed` and the forget tokens."""
        digest = zlib.crc32(forget_ids.cpu().numpy().tobytes(), self.seed % 2**32)
        return torch.Generator(device=forget_ids.device).manual_seed(digest)

    def loss(self, model, batch):
        forget_ids, forget_mask = side(batch, FORGET)
        blocks = list(range(len(decoder_blocks(model)))) if self.layers is None else self.layers
        check_blocks(model, blocks, "repnoise layers")
        with block_outputs(model, blocks) as hidden:
            forget_ce = cross_entropy(model, forget_ids, forget_mask)  # chunked for a large vocabulary
        retain_ce = cross_entropy(model, *side(batch, RETAIN))

        counted = torch.ones_like(forget_ids, dtype=torch.bool) if forget_mask is None else forget_mask.bool()
        generator = self.generator(forget_ids)
        keep = torch.randperm(int(counted.sum()), generator=generator, device=forget_ids.device)[:self.max_tokens]
        mmds = []
        for b in blocks:
            x = hidden[b][counted][keep].float()
            noise = torch.randn(x.shape, generator=generator, device=x.device)
            mmds.append(mmd2(x, noise, self.bandwidth))
        mmd = torch.stack(mmds).mean()
        loss = retain_ce - self.alpha * forget_ce + self.beta * mmd
        return loss, {"retain_ce": retain_ce.item(), "forget_ce": forget_ce.item(), "mmd": mmd.item()}
