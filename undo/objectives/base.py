"""The objective protocol and its registry. An objective says which parameters train, computes the loss of one
batch, counts the tokens the student trained on, and reports FLOPs spent outside the student's own
forward/backward (e.g. a teacher's forward pass). `@register(name)` adds a class to `OBJECTIVES`."""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator

import torch
from torch import nn

from undo.core.registry import registrar

OBJECTIVES: dict[str, type["Objective"]] = {}


register = registrar(OBJECTIVES)  # `@register(name)` on a class adds it to OBJECTIVES


class Objective(ABC):
    name = "objective"
    is_unlearning = False  # unlearning methods read labelled forget/retain batches and can be swept
    needs_reference = False  # True: the constructor takes `reference`, a frozen copy of the starting model

    @classmethod
    def wants_reference(cls, knobs: dict) -> bool:
        """Whether a run with these knobs needs the frozen reference (some methods need it only for one variant)."""
        return cls.needs_reference

    def trainable_parameters(self, model: nn.Module) -> Iterable[nn.Parameter]:
        return [p for p in model.parameters() if p.requires_grad]

    @abstractmethod
    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """The scalar to minimise for one micro-batch, and any extra numbers worth logging."""

    def tokens(self, batch: dict[str, torch.Tensor]) -> int:
        """Tokens the trained model processed in this batch (for throughput and FLOPs)."""
        return sum(int(t.numel()) for key, t in batch.items() if key.endswith("input_ids"))

    def adjust_gradients(self, params: list[nn.Parameter], recompute: Callable[[], object]) -> None:
        """Called after the step's gradients are accumulated, before clipping and the optimizer step.
        `recompute()` zeroes the gradients and re-accumulates them over the same micro-batches at the
        current weights. Plain objectives leave the gradients as they are."""

    def held_models(self) -> Iterator[nn.Module]:
        """The models the objective holds (e.g. a frozen reference or teacher), those of a wrapped objective too."""
        for value in vars(self).values():
            if isinstance(value, Objective):
                yield from value.held_models()
            elif isinstance(value, nn.Module):
                yield value

    def to(self, device, dtype: torch.dtype | None = None) -> "Objective":
        """Move the models the objective holds to the training device; with a `dtype` (mixed precision), frozen ones
        are held in it: half the memory, and autocast would compute in it anyway."""
        for model in self.held_models():
            model.to(device=device, dtype=dtype if is_frozen(model) and dtype is not None else None)
        return self

    def extra_flops(self, batch: dict[str, torch.Tensor]) -> dict[str, int]:
        """FLOPs spent besides the trained model's forward+backward, by kind (e.g. {"teacher": ...})."""
        return {}


def is_frozen(model: nn.Module) -> bool:
    """A model that never trains (no parameter asks for a gradient)."""
    return not any(p.requires_grad for p in model.parameters())


def unlearning_methods() -> list[str]:
    return sorted(name for name, cls in OBJECTIVES.items() if cls.is_unlearning)


def method_knobs(method: str) -> list[str]:
    """The knobs a method's constructor takes (what a sweep may set); `reference` and `seed` come from the stage."""
    accepted = inspect.signature(OBJECTIVES[method].__init__).parameters
    return sorted(set(accepted) - {"self", "reference", "seed"})


def check_knobs(method: str, knobs: Iterable[str]) -> None:
    unknown = sorted(set(knobs) - set(method_knobs(method)))
    if unknown:
        raise ValueError(f"unknown knob {unknown[0]!r} for method {method!r} "
                         f"(allowed: {', '.join(method_knobs(method)) or 'none'})")
