"""Small pieces the unlearning objectives share: forget/retain batches, next-token CE and log-probs."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from undo.core.blocks import decoder_blocks
from undo.core.logits import forward, needs_chunks, position_logits, sum_over_chunks
from undo.schema.errors import UserError

FORGET, RETAIN = "forget", "retain"


def side(batch: dict[str, torch.Tensor], name: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(input_ids, attention_mask or None) of the forget or retain half of an unlearning batch."""
    return batch[f"{name}_input_ids"], batch.get(f"{name}_attention_mask")


def shifted_logits(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs):
    """Logits that predict tokens 1..T-1, the targets, the mask of positions that count, and the model output."""
    out = forward(model, input_ids, attention_mask, **kwargs)
    logits = out.logits[:, :-1].float()
    targets = input_ids[:, 1:]
    mask = torch.ones_like(targets, dtype=torch.bool) if attention_mask is None else attention_mask[:, 1:].bool()
    return logits, targets, mask, out


def next_token_positions(input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """The [B, T] mask of positions whose next token counts (real, and not the last column), and those targets."""
    mask = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    positions = torch.zeros_like(mask)
    positions[:, :-1] = mask[:, 1:]
    return positions, input_ids[:, 1:][mask[:, 1:]]


def cross_entropy(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean next-token cross-entropy over the positions that count (the same number HF's `labels=` gives); for a
    large vocabulary, chunk by chunk (undo.core.logits)."""
    positions, targets = next_token_positions(input_ids, attention_mask)
    logits = position_logits(model, input_ids, attention_mask, positions)
    if logits.head is None:
        return F.cross_entropy(logits.logits(), targets)
    return sum_over_chunks(lambda start, stop, chunk: F.cross_entropy(chunk, targets[start:stop], reduction="sum"),
                           logits) / len(logits)


def sequence_logprob(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sequence: the summed log-probability of its tokens given their prefixes, and how many tokens counted (for
    a large vocabulary, chunk by chunk: undo.core.logits)."""
    positions, targets = next_token_positions(input_ids, attention_mask)
    if not needs_chunks(model, int(positions.sum())):
        logits, targets, mask, _ = shifted_logits(model, input_ids, attention_mask)
        token_logp = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        return (token_logp * mask).sum(dim=1), mask.sum(dim=1)
    sequence = torch.arange(input_ids.shape[0], device=input_ids.device).unsqueeze(1).expand_as(positions)[positions]
    logits = position_logits(model, input_ids, attention_mask, positions)

    def per_sequence(start: int, stop: int, chunk: torch.Tensor) -> torch.Tensor:
        token_logp = torch.log_softmax(chunk, dim=-1).gather(-1, targets[start:stop, None]).squeeze(-1)
        return chunk.new_zeros(input_ids.shape[0]).index_add(0, sequence[start:stop], token_logp)

    return sum_over_chunks(per_sequence, logits), positions.sum(dim=1)


def check_blocks(model: nn.Module, blocks: Sequence[int], knob: str) -> None:
    """UserError unless every index in `blocks` names a transformer block of `model`."""
    count = len(decoder_blocks(model))
    bad = [b for b in blocks if not 0 <= b < count]
    if bad:
        raise UserError(f"{knob} = {bad[0]} is out of range: the model has {count} blocks (0..{count - 1})")


@contextmanager
def block_outputs(model: nn.Module, blocks: Sequence[int]) -> Iterator[dict[int, torch.Tensor]]:
    """During a forward pass inside the `with`, record the residual stream after each block in `blocks`
    ([B, T, width], with its autograd graph) into the yielded dict, keyed by block index.

    These are the raw block outputs, on any architecture. HF's `output_hidden_states=True` gives the same tensor at
    index b + 1 for every block but the last; its final entry is the last block's output *after* the final norm,
    which is why the blocks are hooked instead.
    """
    captured: dict[int, torch.Tensor] = {}

    def keep(index):
        def hook(module, args, output):
            captured[index] = output[0] if isinstance(output, tuple) else output
        return hook

    stack = decoder_blocks(model)
    handles = [stack[b].register_forward_hook(keep(b)) for b in blocks]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def parameters_matching(model: nn.Module, pattern: str, knob: str) -> list[nn.Parameter]:
    """The parameters whose full name matches the regular expression `pattern` (re.search); a UserError naming the
    pattern and some real names when none does."""
    regex = re.compile(pattern)
    chosen = [p for name, p in model.named_parameters() if regex.search(name)]
    if not chosen:
        names = [name for name, _ in model.named_parameters()]
        raise UserError(f"{knob} {pattern!r} selects no parameter of this {type(model).__name__}; its parameter names "
                        f"look like: {', '.join(names[:3])}, ..., {names[-1]}")
    return chosen


def with_optional_retain_term(model, batch, loss: torch.Tensor, logs: dict[str, float], weight: float):
    """loss + weight * CE(retain), for methods whose retain term is optional: with weight 0 the retain half of the
    batch is not even run (and `tokens_read` does not count it)."""
    if not weight:
        return loss, logs
    retain_ce = cross_entropy(model, *side(batch, RETAIN))
    return loss + weight * retain_ce, {**logs, "retain_ce": retain_ce.item()}


def tokens_read(batch: dict[str, torch.Tensor], retain_weight: float) -> int:
    """Tokens a method with an optional retain term reads: the forget half, plus the retain half if it is used."""
    retain = batch[f"{RETAIN}_input_ids"].numel() if retain_weight else 0
    return int(batch[f"{FORGET}_input_ids"].numel() + retain)
