"""Small pieces the unlearning objectives share: forget/retain batches, next-token CE and log-probs."""

from __future__ import annotations

import torch
import torch.nn.functional as F

FORGET, RETAIN = "forget", "retain"


def side(batch: dict[str, torch.Tensor], name: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(input_ids, attention_mask or None) of the forget or retain half of an unlearning batch."""
    return batch[f"{name}_input_ids"], batch.get(f"{name}_attention_mask")


def shifted_logits(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs):
    """Logits that predict tokens 1..T-1, the targets, the mask of positions that count, and the model output."""
    out = model(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
    logits = out.logits[:, :-1].float()
    targets = input_ids[:, 1:]
    mask = torch.ones_like(targets, dtype=torch.bool) if attention_mask is None else attention_mask[:, 1:].bool()
    return logits, targets, mask, out


def cross_entropy(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean next-token cross-entropy over the positions that count (the same number HF's `labels=` gives)."""
    logits, targets, mask, _ = shifted_logits(model, input_ids, attention_mask)
    return F.cross_entropy(logits[mask], targets[mask])


def sequence_logprob(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sequence: the summed log-probability of its tokens given their prefixes, and how many tokens counted."""
    logits, targets, mask, _ = shifted_logits(model, input_ids, attention_mask)
    token_logp = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return (token_logp * mask).sum(dim=1), mask.sum(dim=1)
