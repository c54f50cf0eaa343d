"""A LoRA relearning attack: low-rank adapters (peft) on every linear layer of the decoder blocks, the base weights
frozen. The paper's attack is full fine-tuning (`finetune.py`); LoRA is the cheap attacker many threat models
assume (little memory, a few MB of weights to share), so a robust model should resist it too."""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import torch
from torch import nn

from undo.attacks.base import AttackKind, register_attack


@register_attack("lora")
class LoraAttack(AttackKind):
    """Only the adapters train (peft freezes everything else), on next-token cross-entropy."""

    # The usual LoRA recipe: rank 8 with alpha = 2 * rank (an update scale of 2); no dropout, since an attack of a
    # few hundred steps wants to fit the forget data, not to be regularised.
    RANK: ClassVar[int] = 8
    ALPHA: ClassVar[int] = 16
    DROPOUT: ClassVar[float] = 0.0
    # Every nn.Linear / GPT-2 Conv1D except the LM head: attention and MLP of every block, on any architecture.
    TARGET_MODULES: ClassVar[str] = "all-linear"
    # The adapters' random init is drawn from this seed, not from the global RNG, so that the attack gives the same
    # numbers whatever ran before it in the process.
    INIT_SEED: ClassVar[int] = 0

    def prepare(self, model: nn.Module) -> nn.Module:
        from peft import LoraConfig, get_peft_model  # here, not at import: validating a config must not load peft

        config = LoraConfig(r=self.RANK, lora_alpha=self.ALPHA, lora_dropout=self.DROPOUT,
                            target_modules=self.TARGET_MODULES, task_type="CAUSAL_LM")
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            torch.manual_seed(self.INIT_SEED)
            # Two warnings nobody can act on: peft handles GPT-2's Conv1D layers itself (it transposes their
            # adapters) and says so, and it reads a property that transformers 5 renamed.
            warnings.filterwarnings("ignore", message="fan_in_fan_out is set to False")
            warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated")
            return get_peft_model(model, config)

    def identity(self) -> dict[str, Any]:
        return {**super().identity(), "rank": self.RANK, "alpha": self.ALPHA, "dropout": self.DROPOUT,
                "target_modules": self.TARGET_MODULES, "init_seed": self.INIT_SEED}
