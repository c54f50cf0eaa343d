"""Token streams: mixtures by weight, packing into fixed-length sequences, deterministic batches.

The data path reads like the paper: documents -> tokens -> packed sequences -> batches. Every order is a pure
function of a seed, so a run (and a resumed run) sees exactly the same batches.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import torch

from undo.schema.errors import UserError


def mixture_schedule(weights: dict[str, float], n: int, seed: int) -> list[str]:
    """The component of each of `n` documents, drawn i.i.d. with probability proportional to its weight."""
    names = [name for name, weight in weights.items() if weight > 0]
    if not names:
        raise UserError("a data mixture needs at least one component with a positive weight")
    probs = np.array([weights[name] for name in names], dtype=np.float64)
    picks = np.random.default_rng(seed).choice(len(names), size=n, p=probs / probs.sum())
    return [names[i] for i in picks]


def pack(token_lists: Sequence[Sequence[int]], context: int) -> torch.Tensor:
    """Concatenate documents and cut the stream into rows of `context` tokens (the ragged tail is dropped)."""
    stream = np.fromiter((t for tokens in token_lists for t in tokens), dtype=np.int64)
    rows = len(stream) // context
    if rows == 0:
        raise UserError(f"only {len(stream)} tokens of data, fewer than one sequence of model.context={context}; "
                        "generate more examples or lower model.context")
    return torch.from_numpy(stream[: rows * context].reshape(rows, context).copy())


class PackedBatches:
    """Batch `i` of a shuffled pass over packed rows; epoch `e` uses the permutation seeded by (seed, e).

    Indexing by batch number (not iterating) is what makes resume exact: a resumed run asks for batch i and
    gets the same rows as the uninterrupted run did.
    """

    def __init__(self, rows: torch.Tensor, batch_size: int, seed: int):
        if len(rows) < batch_size:
            raise UserError(f"{len(rows)} packed sequences are fewer than one batch (train.batch_size="
                            f"{batch_size}); generate more examples or lower the batch size")
        self.rows = rows
        self.batch_size = batch_size
        self.seed = seed
        self.batches_per_epoch = len(rows) // batch_size
        self._epoch, self._order = -1, None

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.rows[self.row_indices(index)]}

    def row_indices(self, index: int) -> torch.Tensor:
        """Which rows batch `index` holds."""
        epoch, within = divmod(index, self.batches_per_epoch)
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._order = epoch, torch.randperm(len(self.rows), generator=generator)
        return self._order[within * self.batch_size : (within + 1) * self.batch_size]


class PairedBatches:
    """One forget batch and one retain batch per step (unlearning): keys `forget_input_ids`, `retain_input_ids`."""

    def __init__(self, forget_rows: torch.Tensor, retain_rows: torch.Tensor, batch_size: int, seed: int):
        self.forget = PackedBatches(forget_rows, batch_size, seed)
        self.retain = PackedBatches(retain_rows, batch_size, seed + 1)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"forget_input_ids": self.forget[index]["input_ids"],
                "retain_input_ids": self.retain[index]["input_ids"]}


def derive_seed(seed: int, *names: str) -> int:
    """A seed for a named sub-stream (e.g. the unlearning data), stable across runs and Python processes."""
    digest = hashlib.sha256(":".join([str(seed), *names]).encode()).digest()
    return int.from_bytes(digest[:4], "little")
