"""`model.compile`: a training step of the arithmetic studies' 4x64 model with its forward and backward compiled by
torch.compile against the same step in eager mode, for the three kinds of step a study spends its time in:

* attack, full fine-tuning: next-token CE at the attack's batch (2 x 64 tokens);
* attack, LoRA: the same with peft's rank-8 adapters on every linear layer (only they train);
* distillation: forward KL to a frozen teacher (the teacher's forward stays eager) at batch 16 x 64.

Each case compiles once (the time is printed: a study pays it once per worker process and kind of step, since a
freshly loaded model of the same architecture reuses the compiled code), then alternates eager and compiled
blocks of `--steps` steps on fresh copies of one model for `--rounds` rounds; medians compared. The weights after
one block are compared too: compiled kernels fuse operations, so they match to float rounding, not bit for bit.

Run:  python benchmarks/compile_step.py [--rounds 5] [--steps 50]
A benchmark, not a test: it prints ratios measured in this one run and always exits 0.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from undo.attacks import ATTACK_KINDS
from undo.config import ModelConfig
from undo.core.models import build_model
from undo.objectives import OBJECTIVES

MODEL = ModelConfig(layers=4, width=64, heads=2, context=64)


def block_seconds(model, objective, batches, compiled: bool) -> tuple[float, torch.nn.Module]:
    """Mean seconds per training step (forward, backward, clip, foreach AdamW) on a fresh copy of `model`."""
    model = copy.deepcopy(model)
    trained = torch.compile(model) if compiled else model
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0, foreach=True)
    started = time.perf_counter()
    for batch in batches:
        loss, _ = objective.loss(trained, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return (time.perf_counter() - started) / len(batches), model


def compare(name: str, model, objective, batch_size: int, rounds: int, steps: int) -> None:
    generator = torch.Generator().manual_seed(0)
    batches = [{"input_ids": torch.randint(2, 20, (batch_size, MODEL.context), generator=generator)}
               for _ in range(steps)]
    started = time.perf_counter()
    block_seconds(model, objective, batches[:2], compiled=True)
    compile_s = time.perf_counter() - started
    block_seconds(model, objective, batches[:2], compiled=False)  # warm-up
    times: dict[bool, list[float]] = {False: [], True: []}
    weights = {}
    for _ in range(rounds):
        for compiled in (False, True):
            seconds, weights[compiled] = block_seconds(model, objective, batches, compiled)
            times[compiled].append(seconds)
    eager, fast = statistics.median(times[False]), statistics.median(times[True])
    difference = max((a - b).abs().max().item() for a, b in zip(weights[False].parameters(),
                                                                weights[True].parameters()))
    print(f"  {name:<22} compile {compile_s:5.1f} s; eager {eager * 1e3:6.2f} ms/step, compiled {fast * 1e3:6.2f} "
          f"ms/step, compiled/eager = {fast / eager:.3f}; max |weight difference| after {steps} steps "
          f"{difference:.1e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=50, help="training steps per timed block")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as each of `undo run --workers 2`'s processes on a 2-core machine
    model = build_model(MODEL, seed=0, pad_id=0, eos_id=1, tokenizer_size=24)
    print(f"torch.compile of the training step (1 thread, {args.rounds} rounds x {args.steps} steps, medians):")
    compare("attack, full fine-tune", model, OBJECTIVES["lm"](), 2, args.rounds, args.steps)
    compare("attack, LoRA", ATTACK_KINDS["lora"]().prepare(copy.deepcopy(model)), OBJECTIVES["lm"](), 2,
            args.rounds, args.steps)
    teacher = build_model(MODEL, seed=1, pad_id=0, eos_id=1, tokenizer_size=24)
    compare("distillation", model, OBJECTIVES["distill"](teacher), 16, args.rounds, args.steps)


if __name__ == "__main__":
    main()
