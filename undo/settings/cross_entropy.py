"""Held-out cross-entropy: the language setting's retain and forget metric.

Token-weighted over the whole set (sum of token losses / number of tokens), so the result does not depend on
the batch size or on how padding happens to fall across batches, and two corpora are compared per token.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from undo.core.logits import position_logits, sum_over_chunks


@torch.no_grad()
def heldout_cross_entropy(model, rows: torch.Tensor, *, pad_id: int | None = None, real: torch.Tensor | None = None,
                          batch_size: int = 32) -> float:
    """Mean next-token cross-entropy in nats of `model` on `rows` (LongTensor [n, context]), over real tokens.

    `real` marks the real tokens (True) and padding (False); without it, a position is real unless it holds `pad_id`.
    A position counts when its target and its input are both real: padding is never a target, and with left padding
    the first real token, predicted from padding alone, is not a fair prediction either. Packed rows (no padding)
    count every position after the first. The model runs in eval mode on its own device; its training flag is
    restored afterwards.
    """
    if rows.dim() != 2 or rows.size(1) < 2:
        raise ValueError(f"rows must be [n, context] with context >= 2, got shape {tuple(rows.shape)}")
    if real is None:
        if pad_id is None:
            raise ValueError("give pad_id or the mask of real tokens")
        real = rows != pad_id
    device = next((p.device for p in model.parameters()), rows.device)
    was_training = model.training
    model.eval()
    total, count = torch.zeros((), dtype=torch.float64), 0
    try:
        for start in range(0, rows.size(0), batch_size):
            batch = rows[start:start + batch_size].to(device)
            mask = real[start:start + batch_size].to(device)
            counted = mask[:, 1:] & mask[:, :-1]
            positions = torch.zeros_like(mask)
            positions[:, :-1] = counted
            # For a large vocabulary, the logits chunk by chunk (undo.core.logits).
            logits = position_logits(model, batch, mask.long(), positions)
            targets = batch[:, 1:][counted]
            losses = sum_over_chunks(
                lambda start, stop, chunk: F.cross_entropy(chunk, targets[start:stop], reduction="sum"), logits)
            total += losses.double().cpu()
            count += int(counted.sum())
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("rows have no position whose input and target are both real tokens")
    return float(total / count)


def document_rows(ids: list[list[int]], context: int, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One row per document's token ids, cut at `context` tokens and right-padded, and the mask of its real tokens
    (pads are never predicted): the rows `heldout_cross_entropy` measures documents on."""
    rows = torch.full((len(ids), context), pad_id, dtype=torch.long)
    real = torch.zeros((len(ids), context), dtype=torch.bool)
    for i, one in enumerate(ids):
        one = one[:context]
        rows[i, : len(one)] = torch.tensor(one)
        real[i, : len(one)] = True
    return rows, real
