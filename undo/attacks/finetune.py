"""The paper's relearning attack: plain full fine-tuning on forget-domain data."""

from __future__ import annotations

from undo.attacks.base import AttackKind, register_attack


@register_attack("finetune")
class FullFinetune(AttackKind):
    """Every weight trains on next-token cross-entropy (the base class's behaviour)."""
