"""Several processes, one run: what a stage needs from them under `torchrun` / `accelerate launch`.

Every process runs the same command; Accelerate's `PartialState` says which one this is (rank) and how many there
are. The contract the rest of undo keeps:
- every process trains (the engine shards each global batch between them, `shard_step`);
- only the main process writes: logs, checkpoints, models, evaluations, meta.json; the others wait for it
  (`wait_for_main`) and then read what it wrote (a shared run directory);
- evaluations run on the main process and their numbers reach every process (`broadcast`), so a stop rule
  decides the same everywhere.
A single process (the default) is rank 0 of 1, and every helper here is then a no-op.

How the processes share a model is the config's `distributed.strategy`: `ddp` (each holds all of it) or `fsdp` (each
holds a shard: `undo.core.sharding`). The stage runner sets it for the stage's duration (`strategy_for`) and the
engine reads `sharded()`.
"""

from __future__ import annotations

import contextvars
import functools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal, TypeVar

import torch

from undo.schema.errors import UserError

T = TypeVar("T")


Strategy = Literal["ddp", "fsdp"]
_STRATEGY: contextvars.ContextVar[Strategy] = contextvars.ContextVar("strategy", default="ddp")


@contextmanager
def strategy_for(strategy: Strategy) -> Iterator[None]:
    """Within the `with`, the processes share models by `strategy` (the config's `distributed.strategy`)."""
    token = _STRATEGY.set(strategy)
    try:
        yield
    finally:
        _STRATEGY.reset(token)


def sharded() -> bool:
    """True when models are sharded across several processes (FSDP); one process never shards."""
    return launched() and _STRATEGY.get() == "fsdp"


def launched() -> bool:
    """True under torchrun / accelerate launch with more than one process (their environment variables)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@functools.cache
def _state():
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())  # joins the process group (gloo on CPUs)


def rank() -> int:
    return _state().process_index if launched() else 0


def world_size() -> int:
    return _state().num_processes if launched() else 1


def is_main() -> bool:
    return rank() == 0


def wait_for_main() -> None:
    """Every process waits here until all have arrived (the main process has finished writing)."""
    if launched():
        _state().wait_for_everyone()


def broadcast(value: T) -> T:
    """The main process's `value`, on every process (any picklable object: metrics, a decision)."""
    if not launched():
        return value
    from accelerate.utils import broadcast_object_list

    box = [value if is_main() else None]
    broadcast_object_list(box, from_process=0)
    return box[0]


def gather(value: T) -> list[T]:
    """Every process's `value`, in rank order, on every process."""
    if not launched():
        return [value]
    from accelerate.utils import gather_object

    return gather_object([value])


def total_dict(values: dict[str, float]) -> dict[str, float]:
    """Each value summed over the processes, in one reduction (every process holds the same keys)."""
    if not launched():
        return values
    keys = sorted(values)
    tensor = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=_state().device)
    torch.distributed.all_reduce(tensor)
    return dict(zip(keys, tensor.tolist()))


def check_shareable(rows: int, accum: int, processes: int, what: str) -> None:
    """A step of `accum` micro-batches of `rows` rows divides between `processes` processes (see `shard_step`)."""
    if accum % processes and rows % processes:
        raise UserError(f"{what}: a step of {accum} micro-batch(es) of {rows} rows cannot be shared by {processes} "
                        f"processes; make its batch_size or grad_accum a multiple of {processes}")


def shard_step(micro_batches: list[dict[str, torch.Tensor]], what: str) -> tuple[list[dict[str, torch.Tensor]], float]:
    """This process's share of one optimizer step's micro-batches, and the factor its loss is scaled by so that the
    averaged gradient is the one a single process gets from all of them.

    Whole micro-batches when their count divides between the processes: exact for every objective. Otherwise each
    micro-batch's rows are split: exact for losses that are a mean over equally weighted rows (packed text), the
    usual data-parallel mean of per-process means for masked token means. Gradients are averaged over processes
    (DDP), so a process holding 1/N of the micro-batches scales its loss by N / grad_accum."""
    n, me, accum = world_size(), rank(), len(micro_batches)
    if n == 1:
        return micro_batches, 1.0 / accum
    if accum % n == 0:
        return micro_batches[me::n], n / accum
    rows = next(iter(micro_batches[0].values())).shape[0]
    check_shareable(rows, accum, n, what)
    share = rows // n
    return [{k: v[me * share:(me + 1) * share] for k, v in batch.items()} for batch in micro_batches], 1.0 / accum
