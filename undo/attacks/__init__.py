"""Relearning-attack kinds (see `base.py`); importing a kind's module registers it."""

from undo.attacks.base import ATTACK_KINDS, AttackKind, register_attack  # noqa: F401
from undo.attacks import finetune, lora  # noqa: E402,F401
