"""FSDP2: a model sharded across the processes of one launch (`distributed.strategy: fsdp`).

Each decoder block is `fully_shard`ed, then the whole model (its embeddings, final norm and head form one more
group), so a process holds 1/N of every parameter, gradient and optimizer moment, and gathers one block's weights at
a time for its forward and backward. The same code runs on GPUs (NCCL) and on CPU processes (gloo), which is how the
tests prove it. What a stage needs besides training, here:
- `full_state_dict` / `plain_copy`: the whole model, gathered onto the main process, for saving an ordinary Hugging
  Face folder;
- `save_state` / `load_state`: a resumable state through `torch.distributed.checkpoint` (each process writes its
  shards; a load reshards to any number of processes, one included);
- `global_norm` / `clip_gradients`: the norm of the whole gradient, not of this process's shard;
- `local_bytes`: what this process really holds (for the measured per-process memory).
Evaluating a sharded model needs every process in its forward passes: the engine calls the evaluation on all of
them and keeps the main process's numbers.
"""

from __future__ import annotations

import copy
import functools
import warnings
from pathlib import Path

import torch
from torch import nn

from undo.core import distributed
from undo.core.blocks import decoder_blocks

NO_BLOCKS = "FSDP shards a model block by block; set distributed.strategy: ddp for this model"


@functools.cache
def _mesh():
    from torch.distributed.device_mesh import init_device_mesh

    n = distributed.world_size()  # joins the process group first (Accelerate's PartialState)
    return init_device_mesh("cuda" if torch.cuda.is_available() else "cpu", (n,))


def shard(model: nn.Module, *, mixed_precision: str = "no") -> nn.Module:
    """Shard `model` in place across the launch's processes: each decoder block, then the whole model; returns the
    module sharded last (the root, whose forward gathers the rest). With bf16 mixed precision the forward and
    backward gather bf16 weights and reduce gradients in fp32 (FSDP2's `MixedPrecisionPolicy`); the sharded weights
    and the optimizer stay fp32. A peft model's root is the model inside its adapters' wrapper: generation calls that
    model directly, so its forward is the one that must gather the embeddings and the head."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) \
        if mixed_precision == "bf16" else MixedPrecisionPolicy()
    root = model.get_base_model() if hasattr(model, "get_base_model") else model
    for block in decoder_blocks(root, NO_BLOCKS):
        fully_shard(block, mesh=_mesh(), mp_policy=policy)
    fully_shard(root, mesh=_mesh(), mp_policy=policy)
    return root


def is_sharded(model: nn.Module) -> bool:
    """Whether `model` (or a module inside it, e.g. under a peft wrapper) is sharded."""
    from torch.distributed.fsdp import FSDPModule

    return any(isinstance(module, FSDPModule) for module in model.modules())


def plain_class(model: nn.Module) -> type:
    """The model's own class (`fully_shard` gives a sharded module a subclass, e.g. FSDPLlamaForCausalLM)."""
    from torch.distributed.fsdp import FSDPModule

    return next(cls for cls in type(model).__mro__ if not issubclass(cls, FSDPModule))


def set_gradient_sync(model: nn.Module, enabled: bool) -> None:
    """Whether the next backward reduce-scatters gradients (off for all but the last micro-batch of a step)."""
    model.set_requires_gradient_sync(enabled)


def _local(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


def global_norm(tensors: list[torch.Tensor]) -> torch.Tensor:
    """The 2-norm of all of `tensors` together. For sharded tensors (DTensors), the squares of each process's shards
    are summed over the processes: the norm of the whole, the same on every process."""
    if not any(hasattr(t, "to_local") for t in tensors):
        return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in tensors]))
    squares = torch.stack([torch.linalg.vector_norm(_local(t).float()) ** 2 for t in tensors]).sum()
    torch.distributed.all_reduce(squares)
    return squares.sqrt()


@torch.no_grad()
def clip_gradients(params: list[nn.Parameter], max_norm: float) -> torch.Tensor:
    """Scale the gradients so that their whole norm is at most `max_norm` (torch's `clip_grad_norm_` rule); returns
    the norm before clipping."""
    grads = [p.grad for p in params if p.grad is not None]
    total = global_norm(grads)
    factor = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    for grad in grads:
        _local(grad).mul_(factor.to(grad.dtype))
    return total


def local_bytes(tensors) -> int:
    """Bytes of `tensors` this process holds (a sharded tensor's local shard)."""
    return sum(_local(t).numel() * t.element_size() for t in tensors)


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """The optimizer's per-parameter state tensors (AdamW's moments; not its step counters)."""
    return [value for slots in optimizer.state.values() for value in slots.values()
            if isinstance(value, torch.Tensor) and value.ndim > 0]


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's weights, gathered onto the main process's CPU (every process must call it; the others get
    an empty dict)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def plain_copy(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """An unsharded module of the model's own class holding `state` (the weights are assigned, not copied), to save
    with `save_pretrained`. Built on the meta device: no second initialisation of the weights."""
    with torch.device("meta"):  # its own copy of the config, which some constructors write to
        plain = plain_class(model)(copy.deepcopy(model.config))
    plain.load_state_dict(state, assign=True, strict=True)
    if hasattr(plain, "tie_weights"):
        plain.tie_weights()  # a tied head is one tensor again, saved once
    return plain


def save_state(model: nn.Module, optimizer: torch.optim.Optimizer, folder: Path) -> None:
    """Every process writes its shards of the model and optimizer into `folder` (torch.distributed.checkpoint)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optimizer_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=str(folder))


def load_state(model: nn.Module, optimizer: torch.optim.Optimizer, folder: Path) -> None:
    """Restore what `save_state` wrote into `model` and `optimizer`, sharded or not, on any number of processes
    (torch.distributed.checkpoint reshards)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_state, optimizer_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optimizer": optimizer_state}
    with warnings.catch_warnings():  # one process reading a sharded checkpoint is what we mean to do
        warnings.filterwarnings("ignore", message=".*assuming the intent is to load in a single process")
        dcp.load(state, checkpoint_id=str(folder))
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
