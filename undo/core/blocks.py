"""A model's stack of transformer blocks, on any architecture: what RMU and RepNoise hook and what FSDP shards."""

from __future__ import annotations

from torch import nn

from undo.core.logits import unwrapped
from undo.schema.errors import UserError


def decoder_blocks(model: nn.Module, remedy: str = "use a method that does not read block activations") -> nn.ModuleList:
    """The model's stack of transformer blocks, found by its shape rather than its name (`model.layers` in Llama,
    `transformer.h` in GPT-2, `gpt_neox.layers`, `model.decoder.layers` in OPT): the ModuleList of
    `config.num_hidden_layers` modules of one class. A data-parallel wrapper (DDP) is looked through. `remedy`: what
    the error tells a user to do when there is no such list."""
    model = unwrapped(model)
    depth = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    stacks = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) == depth
              and len({type(block) for block in m}) == 1]
    if len(stacks) != 1:
        raise UserError(f"cannot find the transformer blocks of this {type(model).__name__} (expected one list of "
                        f"{depth} blocks, found {len(stacks)}); {remedy}")
    return stacks[0]
