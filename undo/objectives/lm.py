"""Plain next-token cross-entropy: pretraining, and later the relearning attack."""

from __future__ import annotations

from undo.objectives.base import Objective, register
from undo.objectives.common import cross_entropy, forward
from undo.core.logits import needs_chunks


@register("lm")
class NextTokenCrossEntropy(Objective):
    def loss(self, model, batch):
        input_ids = batch["input_ids"]
        if needs_chunks(model, input_ids.numel()):  # a large vocabulary: chunk by chunk (undo.core.logits)
            return cross_entropy(model, input_ids, batch.get("attention_mask")), {}
        labels = input_ids
        if "attention_mask" in batch:  # padded batches: padding predicts nothing
            labels = input_ids.masked_fill(batch["attention_mask"] == 0, -100)
        out = forward(model, input_ids, batch.get("attention_mask"), labels=labels)
        return out.loss, {}
