"""Attack kinds and their registry. A relearning attack fine-tunes a finished model on forget-domain data at every LR
of a grid; the attack stage (`undo/stages/attack.py`) owns the grid, the data stream, the evaluations and the
attacker-best curve, the same for every kind. A kind only says what trains and on which loss.

Adding a kind = one module with one `@register_attack(name)` class; `attack.kinds` in the config names the kinds a
study runs on every attacked model.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import nn

from undo.core.registry import registrar
from undo.objectives import OBJECTIVES, Objective

ATTACK_KINDS: dict[str, type["AttackKind"]] = {}


register_attack = registrar(ATTACK_KINDS)  # `@register_attack(name)` on a class adds it to ATTACK_KINDS


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
