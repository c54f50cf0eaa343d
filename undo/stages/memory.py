"""How much memory each training stage needs per process, before running it (`undo config --memory`).

The estimate adds up the tensors a step holds at its peak, for the config's model (built on the meta device: shapes,
no weights), precision, batch, strategy and number of processes:

- weights: the trained model in `model.dtype` (1/N of it per process under FSDP, which also gathers the root group,
  i.e. embeddings, final norm and head, and two blocks at a time: the one computing and the one prefetched);
- gradients: one per trained weight (1/N under FSDP, plus the root group's whole gradients, which are reduced only
  at the end of the backward; under DDP with several processes, its gradient buckets again);
- optimizer: AdamW's two moments per trained weight (1/N under FSDP);
- frozen models: a teacher or reference in the compute dtype (1/N under FSDP);
- activations: what the backward pass keeps, per token of this process's micro-batch: `10 h + 4 f` values per
  block (h the width, f the MLP width; counted with autograd's saved-tensor hooks on Llama blocks with fused
  attention), plus `V + 4 h` for the embeddings and the loss; with gradient checkpointing one block's worth plus
  each block's input;
- logits: the fp32 logits and their gradient (a distillation's teacher's logits and softmax too) beside the
  log-softmax the backward keeps, or, past `LOGITS_BUDGET_BYTES`, that many chunks of `CHUNK_BYTES`
  (`undo.core.logits`).

What it leaves out: the CUDA context and allocator slack on a GPU (compare with `torch.cuda.max_memory_allocated`),
the interpreter and libraries on a CPU (compare with the growth of the process's peak RSS during the stage).
`benchmarks/memory_estimate.py` measures both sides; tests/test_memory.py holds the estimate to the measurement.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from undo.config import ExperimentConfig
from undo.core.logits import CHUNK_BYTES, LOGITS_BUDGET_BYTES

BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
ADAM_MOMENTS = 2
ACTIVATION_WIDTHS = (10, 4)  # saved values per token and block: 10 x width + 4 x MLP width
LOSS_WIDTHS = 4  # saved values per token besides the blocks: the vocabulary (log-softmax) + 4 x width


@dataclass(frozen=True)
class Architecture:
    """The shapes the estimate reads, from a model built on the meta device."""

    parameters: int
    block_parameters: int
    root_parameters: int  # outside the blocks: embeddings, final norm, head (a tied head counted once)
    layers: int
    width: int
    mlp_width: int
    vocab: int
    linear_shapes: tuple[tuple[int, int], ...]  # (in, out) of every linear layer inside the blocks (for LoRA)

    @classmethod
    def of(cls, model: torch.nn.Module) -> "Architecture":
        from undo.core.blocks import decoder_blocks

        blocks = decoder_blocks(model, "the memory estimate reads a model's blocks")
        unique = {id(p): p.numel() for p in model.parameters()}
        block = sum(p.numel() for p in blocks[0].parameters())
        config = model.config
        text = getattr(config, "text_config", None) or config
        linears = tuple((m.in_features, m.out_features) for b in blocks for m in b.modules()
                        if isinstance(m, torch.nn.Linear))
        return cls(parameters=sum(unique.values()), block_parameters=block,
                   root_parameters=sum(unique.values()) - len(blocks) * block, layers=len(blocks),
                   width=text.hidden_size, mlp_width=getattr(text, "intermediate_size", 4 * text.hidden_size),
                   vocab=model.get_output_embeddings().out_features, linear_shapes=linears)

    @classmethod
    def of_config(cls, cfg: ExperimentConfig) -> "Architecture":
        """The config's model: its checkpoint's architecture, or the tiny Llama it builds."""
        from transformers import AutoModelForCausalLM

        from undo.core.models import llama_config, pretrained_config

        config = pretrained_config(cfg.model) if cfg.model.pretrained else llama_config(cfg.model, pad_id=0, eos_id=1)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=cfg.model.trust_remote_code)
        return cls.of(model)


@dataclass(frozen=True)
class StageMemory:
    """Bytes one process holds at a stage's peak, by kind."""

    stage: str
    weights: int
    gradients: int
    optimizer: int
    frozen: int
    activations: int
    logits: int

    @property
    def total(self) -> int:
        return sum(getattr(self, f.name) for f in fields(self) if f.name != "stage")


@dataclass(frozen=True)
class Step:
    """What one stage trains and holds: the rows of this process's micro-batch (both sides of an unlearning step),
    trained weights, frozen models and whether its loss compares two models' logits (distillation)."""

    stage: str
    rows: int
    trained: int
    frozen_models: int
    mixed_precision: str
    two_logits: bool = False
    sides: int = 1  # forwards whose graphs the backward keeps (unlearning: forget and retain); logits one at a time


def stage_memory(arch: Architecture, step: Step, *, context: int, dtype: str, processes: int, strategy: str,
                 gradient_checkpointing: bool = False) -> StageMemory:
    """The bytes one process holds at the peak of `step` (the module docstring says what each term counts)."""
    weight_bytes = BYTES[dtype]
    compute_bytes = 2 if step.mixed_precision in ("bf16", "fp16") else weight_bytes
    shards = processes if strategy == "fsdp" and processes > 1 else 1
    weights = arch.parameters * weight_bytes // shards
    if shards > 1:  # gathered while they compute: the root group for the whole step, two blocks at a time
        weights += (arch.root_parameters + 2 * arch.block_parameters) * compute_bytes
    elif compute_bytes < weight_bytes:  # autocast keeps a half-precision copy of every weight for the backward
        weights += arch.parameters * compute_bytes
    gradients = step.trained * weight_bytes // shards
    if shards == 1 and processes > 1:
        gradients *= 2  # DDP's gradient buckets
    if shards > 1 and step.trained == arch.parameters:  # the root group's whole gradients live through the backward
        gradients += arch.root_parameters * weight_bytes
    optimizer = ADAM_MOMENTS * step.trained * weight_bytes // shards
    frozen = step.frozen_models * arch.parameters * compute_bytes // shards
    tokens = step.rows * context
    per_block = ACTIVATION_WIDTHS[0] * arch.width + ACTIVATION_WIDTHS[1] * arch.mlp_width
    blocks = (arch.layers * arch.width + per_block) if gradient_checkpointing else arch.layers * per_block
    activations = tokens * (blocks * compute_bytes + LOSS_WIDTHS * arch.width * compute_bytes)
    one_logits = 4 * tokens // step.sides * arch.vocab  # one forward's fp32 logits
    # Beside the log-softmax the backward keeps (below): the logits and their gradient, and a teacher's logits and
    # softmax (distillation).
    copies = 4 if step.two_logits else 2
    logits = copies * (CHUNK_BYTES if one_logits > LOGITS_BUDGET_BYTES else one_logits)
    if one_logits <= LOGITS_BUDGET_BYTES:
        activations += 4 * tokens * arch.vocab  # every side's log-softmax, kept for the backward
    return StageMemory(step.stage, weights, gradients, optimizer, frozen, activations, logits)


def lora_parameters(arch: Architecture) -> int:
    from undo.attacks.lora import LoraAttack

    return sum(LoraAttack.RANK * (fan_in + fan_out) for fan_in, fan_out in arch.linear_shapes)


def rows_per_process(batch_size: int, grad_accum: int, processes: int) -> int:
    """A micro-batch's rows in one process (`undo.core.distributed.shard_step`): whole micro-batches when their
    count divides between the processes, else each micro-batch's rows split."""
    return batch_size if grad_accum % processes == 0 else batch_size // processes


def study_steps(cfg: ExperimentConfig, arch: Architecture, processes: int) -> list[Step]:
    """Every training stage of the config's study, with what it trains and holds."""
    from undo.objectives import OBJECTIVES

    rows = lambda section: rows_per_process(section.batch_size, section.grad_accum, processes)  # noqa: E731
    steps = [Step("pretrain", rows(cfg.pretrain.train), arch.parameters, 0, cfg.pretrain.train.mixed_precision)]
    u = cfg.unlearn
    for sweep in u.methods:
        references = int(OBJECTIVES[sweep.method].wants_reference(
            {k: v[0] if isinstance(v, list) else v for k, v in sweep.knobs.items()}))
        trained = arch.parameters if sweep.method != "rmu" else rmu_parameters(arch, sweep.knobs)
        steps.append(Step(f"unlearn {sweep.label}", 2 * rows(u), trained, references, u.mixed_precision, sides=2))
    steps.append(Step("distill", rows(cfg.distill.train), arch.parameters, 1, cfg.distill.train.mixed_precision,
                      two_logits=True))
    a = cfg.attack
    for kind in a.kinds:
        trained = lora_parameters(arch) if kind == "lora" else arch.parameters
        steps.append(Step(f"attack {kind}", rows(a), trained, 0, a.mixed_precision))
    return steps


def rmu_parameters(arch: Architecture, knobs: dict) -> int:
    """RMU trains the MLP output projections of its trainable blocks (default: its layer and the two below)."""
    layer = knobs.get("layer", 2)
    layer = layer[0] if isinstance(layer, list) else layer
    trained = knobs.get("trainable_layers")
    count = len(trained[0] if trained and isinstance(trained[0], list) else trained) if trained else min(3, layer + 1)
    return count * arch.width * arch.mlp_width


def estimate(cfg: ExperimentConfig, processes: int) -> list[StageMemory]:
    """Per-process peak memory of every training stage of the config's study, with `processes` processes."""
    arch = Architecture.of_config(cfg)
    return [stage_memory(arch, step, context=cfg.model.context, dtype=cfg.model.dtype, processes=processes,
                         strategy=cfg.distributed.strategy, gradient_checkpointing=cfg.model.gradient_checkpointing)
            for step in study_steps(cfg, arch, processes)]
