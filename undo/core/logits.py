"""Next-token logits without the whole `[positions, vocabulary]` tensor at once, for large vocabularies.

A causal LM's logits are its output head applied to its final hidden states. With a large vocabulary (Gemma's
256,000) and a long batch, the fp32 logits of a student and of its frozen teacher are a step's largest tensors (1 GB
each at 4 x 512 tokens), and their softmaxes as large again. Where the logits of a forward pass would pass
`LOGITS_BUDGET_BYTES`, the forward here stops at the head (the model runs as usual, wrappers such as DDP included;
its head only hands back its input), and `sum_over_chunks` applies the head to `CHUNK_BYTES` of logits at a
time, sums each chunk's loss, and recomputes each chunk in the backward pass (activation checkpointing): at most one
chunk's logits of each model exist at once. Gradients are those of the whole computation, to float rounding (the
sums run in another order). Below the budget nothing changes: the logits are the forward's own, as before.

The head is the model's output embeddings and what its class applies after them (Gemma-2's final logit softcapping);
the first time a model is used that way, its head's logits are checked against the model's own on a few positions,
and a model whose head does something else is computed whole.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

LOGITS_BUDGET_BYTES = 256 * 2**20  # fp32 logits of one forward larger than this are computed in chunks
# The fp32 logits of one chunk. Above glibc's largest threshold for serving an allocation from its own mapping
# (32 MiB): smaller chunks come from the heap, whose freed pages a CPU process keeps (measured, 256,000 vocabulary,
# 4 x 512 tokens: 3.6 GB of resident memory at 8 or 32 MiB chunks, 0.48 GB at 64 MiB).
CHUNK_BYTES = 64 * 2**20
_HEAD_MATCHES: "weakref.WeakKeyDictionary[nn.Module, bool]" = weakref.WeakKeyDictionary()


@dataclass
class PositionLogits:
    """The logits of chosen positions of one forward pass: `rows` are the logits themselves ([N, V]), or, when
    `head` is set, the final hidden states ([N, width]) that `head` maps to them. `frozen`: a model that never trains
    (a teacher, a reference), whose head runs without gradients."""

    rows: torch.Tensor
    vocab: int
    head: Callable[[torch.Tensor], torch.Tensor] | None = None
    frozen: bool = False

    def __len__(self) -> int:
        return self.rows.shape[0]

    def logits(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """fp32 logits of `rows` (a slice of `self.rows`; all of them by default)."""
        rows = self.rows if rows is None else rows
        if self.head is None:
            return rows.float()
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            return self.head(rows).float()


def forward(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs):
    """A training or scoring forward pass: without a key/value cache, since nothing is decoded after it (building
    one costs a little time and memory; the outputs are the same). A model without a cache (no `config.use_cache`,
    e.g. a plain torch module) is called as it is."""
    if hasattr(getattr(model, "config", None), "use_cache"):
        kwargs["use_cache"] = False
    return model(input_ids=input_ids, attention_mask=attention_mask, **kwargs)


def unwrapped(model: nn.Module) -> nn.Module:
    """The model inside a data-parallel wrapper (DDP's `.module`), or the model."""
    return model if hasattr(model, "config") else getattr(model, "module", model)


def vocabulary_size(model: nn.Module) -> int | None:
    """The number of logits the model's output head gives (None for a model without one)."""
    inner = unwrapped(model)
    head = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
    return getattr(head, "out_features", None)


def needs_chunks(model: nn.Module, positions: int) -> bool:
    """Whether the fp32 logits of `positions` positions would pass the budget, and the model can be chunked: not
    compiled (the head is swapped during the forward, which a compiled graph would not see), and a head whose logits
    are the model's. Under DDP the forward runs through the wrapper and the chunks' head products are edges of the
    same graph (recomputation only refills saved tensors), so each weight's gradient is reduced once."""
    vocab = vocabulary_size(model)
    return (vocab is not None and 4 * positions * vocab > LOGITS_BUDGET_BYTES
            and not isinstance(model, torch._dynamo.eval_frame.OptimizedModule) and head_matches(model))


def _head(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """hidden states -> logits, as the model's own forward computes them after its final norm."""
    inner = unwrapped(model)
    embeddings = inner.get_output_embeddings()
    cap = getattr(inner.config, "final_logit_softcapping", None)
    if cap is None:
        return embeddings
    return lambda hidden: torch.tanh(embeddings(hidden) / cap) * cap


@contextmanager
def _head_hands_back_its_input(model: nn.Module, seen: list[torch.Tensor]):
    """During the `with`, the model's output head records its input and returns one logit column in place of the
    vocabulary (what the model applies after its head runs on that column, cheaply)."""
    head = unwrapped(model).get_output_embeddings()

    def record(hidden):
        seen.append(hidden)
        return hidden[..., :1]

    head.forward = record
    try:
        yield
    finally:
        del head.forward


def final_hidden(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """The hidden states the model's head receives ([B, T, width]), from a forward that computes no logits."""
    seen: list[torch.Tensor] = []
    with _head_hands_back_its_input(model, seen):
        forward(model, input_ids, attention_mask)
    if len(seen) != 1:
        raise RuntimeError(f"the output head ran {len(seen)} times in one forward pass")
    return seen[0]


@torch.no_grad()
def head_matches(model: nn.Module) -> bool:
    """Whether `_head` of the hidden states gives the model's own logits (checked once per model, on 4 positions)."""
    inner = unwrapped(model)
    if inner not in _HEAD_MATCHES:
        ids = torch.arange(4, device=next(inner.parameters()).device).unsqueeze(0) % vocabulary_size(inner)
        was_training = inner.training
        inner.eval()  # dropout off: the two forwards must see the same network
        try:
            expected = forward(inner, ids).logits.float()
            got = _head(inner)(final_hidden(inner, ids, None)).float()
        finally:
            inner.train(was_training)
        _HEAD_MATCHES[inner] = got.shape == expected.shape and torch.allclose(got, expected, rtol=1e-4, atol=1e-4)
    return _HEAD_MATCHES[inner]


def position_logits(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                    positions: torch.Tensor, *, frozen: bool = False) -> PositionLogits:
    """The logits at `positions` (a [B, T] bool mask) of one forward pass: whole below the budget, else as final
    hidden states and the head (then `sum_over_chunks` applies it chunk by chunk)."""
    if needs_chunks(model, int(positions.sum())):
        hidden = final_hidden(model, input_ids, attention_mask)[positions]
        return PositionLogits(hidden, vocabulary_size(model), _head(model), frozen)
    logits = forward(model, input_ids, attention_mask).logits[positions]
    return PositionLogits(logits, logits.shape[-1], None, frozen)


def sum_over_chunks(loss: Callable[..., torch.Tensor], *sources: PositionLogits,
                    chunk: int | None = None) -> torch.Tensor:
    """`loss(start, stop, *logits)` summed over chunks of positions, where `logits` are each source's fp32 logits of
    positions `start..stop` and `loss` returns their summed loss. Sources with a head are evaluated `chunk` positions
    at a time (by default the size of `CHUNK_BYTES`), each chunk recomputed in the backward pass; otherwise in one
    piece, exactly as a plain computation."""
    count = len(sources[0])
    if all(source.head is None for source in sources):
        return loss(0, count, *(source.logits() for source in sources))
    chunk = chunk or max(1, CHUNK_BYTES // (4 * max(source.vocab for source in sources)))
    total = sources[0].rows.new_zeros((), dtype=torch.float32)
    for start in range(0, count, chunk):
        stop = min(count, start + chunk)

        def piece(*rows: torch.Tensor, start: int = start, stop: int = stop) -> torch.Tensor:
            return loss(start, stop, *(source.logits(r) for source, r in zip(sources, rows)))

        total = total + checkpoint(piece, *(source.rows[start:stop] for source in sources), use_reentrant=False)
    return total
