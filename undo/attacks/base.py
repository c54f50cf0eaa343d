"""Attack kinds and their registry. A relearning attack fine-tunes a finished model on forget-domain data at every LR
of a grid; the attack stage (`undo/stages/attack.py`) owns the grid, the data stream, the evaluations and the
attacker-best curve, the same for every kind. A kind only says what trains and on which loss.

Adding a kind = one module with one `@register_attack(name)` class; `attack.kinds` in the config names the kinds a
study runs on every attacked model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from torch import nn

from undo.objectives import OBJECTIVES, Objective

ATTACK_KINDS: dict[str, type["AttackKind"]] = {}


def register_attack(name: str) -> Callable[[type["AttackKind"]], type["AttackKind"]]:
    def add(cls: type[AttackKind]) -> type[AttackKind]:
        cls.name = name
        ATTACK_KINDS[name] = cls
        return cls

    return add


class AttackKind:
    """Plain fine-tuning of every weight with next-token cross-entropy, unless a subclass says otherwise."""

    name: ClassVar[str] = "attack"

    def prepare(self, model: nn.Module) -> nn.Module:
        """The module the attack trains, built from the loaded target (e.g. wrapped in adapters)."""
        return model

    def objective(self) -> Objective:
        return OBJECTIVES["lm"]()

    def identity(self) -> dict[str, Any]:
        """What distinguishes this kind's results: part of the attack artifact's key."""
        return {"kind": self.name}
