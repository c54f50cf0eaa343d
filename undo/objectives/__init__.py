"""Training objectives: what the one engine minimises. Each is a small class in its own file, registered by name.

An objective says which parameters train, computes the loss of one batch, counts the tokens the student trained
on, and reports FLOPs spent outside the student's own forward/backward (e.g. a teacher's forward pass).
Adding a method = adding one file with one registered class.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable

import torch
from torch import nn

OBJECTIVES: dict[str, type["Objective"]] = {}


def register(name: str) -> Callable[[type["Objective"]], type["Objective"]]:
    def add(cls: type[Objective]) -> type[Objective]:
        cls.name = name
        OBJECTIVES[name] = cls
        return cls

    return add


class Objective(ABC):
    name = "objective"

    def trainable_parameters(self, model: nn.Module) -> Iterable[nn.Parameter]:
        return [p for p in model.parameters() if p.requires_grad]

    @abstractmethod
    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """The scalar to minimise for one micro-batch, and any extra numbers worth logging."""

    def tokens(self, batch: dict[str, torch.Tensor]) -> int:
        """Tokens the trained model processed in this batch (for throughput and FLOPs)."""
        return sum(int(t.numel()) for key, t in batch.items() if key.endswith("input_ids"))

    def extra_flops(self, batch: dict[str, torch.Tensor]) -> dict[str, int]:
        """FLOPs spent besides the trained model's forward+backward, by kind (e.g. {"teacher": ...})."""
        return {}


from undo.objectives import lm  # noqa: E402,F401  (registers the built-in objectives)
