"""What a launch of several processes (`torchrun`, `accelerate launch`) needs from a config, checked before any work
starts: every training section's step must divide between the processes, and under `distributed.strategy: fsdp` the
models must have blocks to shard and train in a precision FSDP supports."""

from __future__ import annotations

from undo.config import ExperimentConfig
from undo.core.distributed import check_shareable
from undo.core.sharding import NO_BLOCKS
from undo.schema.errors import UserError


def training_sections(cfg: ExperimentConfig) -> dict[str, object]:
    """Every config section that sets a training step (batch_size, grad_accum, mixed_precision), by where it is."""
    return {"pretrain.train": cfg.pretrain.train, "unlearn": cfg.unlearn, "distill.train": cfg.distill.train,
            "attack": cfg.attack}


def check_launch(cfg: ExperimentConfig, processes: int) -> None:
    """One-line errors for a config that `processes` processes cannot run (nothing is loaded but config files)."""
    if processes <= 1:
        return
    for where, section in training_sections(cfg).items():
        check_shareable(section.batch_size, section.grad_accum, processes, where)
    if cfg.distributed.strategy != "fsdp":
        return
    for where, section in training_sections(cfg).items():
        if section.mixed_precision == "fp16":
            raise UserError(f"{where}.mixed_precision: fp16 is not supported with distributed.strategy fsdp; use "
                            "bf16 (or no)")
    for role, source in (("model.pretrained", cfg.model.pretrained), ("oracle.pretrained", cfg.oracle.pretrained)):
        if source is not None:
            check_blocks_of(source, cfg, role)


def check_blocks_of(source: str, cfg: ExperimentConfig, role: str) -> None:
    """A checkpoint's architecture, built on the meta device (no weights read), must have blocks FSDP can shard."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from undo.core.blocks import decoder_blocks

    config = AutoConfig.from_pretrained(source, trust_remote_code=cfg.model.trust_remote_code)
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config, trust_remote_code=cfg.model.trust_remote_code)
    try:
        decoder_blocks(skeleton, NO_BLOCKS)
    except UserError as err:
        raise UserError(f"{role}: {err}") from None
