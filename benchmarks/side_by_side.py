"""A candidate that was measured and not built: training the attack's LR grid side by side, as one batched model.

Every LR of the attack's grid fine-tunes the same target on the same batches, so N LRs could run as one forward
over N stacked copies of the weights (torch.func.vmap of functional_call) with one backward, each copy keeping its
own AdamW group, LR and gradient clip. This compares that with N separate runs (what the attack stage does), at
the arithmetic studies' 4x64 model and the attack's batch (2 x 64 tokens), one thread:

* separate:     N models trained one after the other, `--steps` steps each;
* side by side: the N models trained together, one vmapped forward and backward per step.

Attention runs in eager mode in both, since torch has no batching rule for the CPU's fused attention kernel (under
vmap it falls back to a loop over the copies). The weights after training are compared: side by side trains each
copy to the weights of its separate run. Worth building only if the ratio is well above 1; at this size the step
is mostly matrix products, which vmap batches into products of the same total cost.

Run:  python benchmarks/side_by_side.py [--lrs 9] [--steps 20] [--rounds 3]
A benchmark, not a test: it prints ratios measured in this one run and always exits 0.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from torch.func import functional_call, vmap

from undo.config import ModelConfig
from undo.core.models import build_model
from undo.objectives import OBJECTIVES

MODEL = ModelConfig(layers=4, width=64, heads=2, context=64)
GRID = [3e-6, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2]


def separate(model, batches, lrs) -> tuple[float, list[torch.nn.Module]]:
    objective, trained = OBJECTIVES["lm"](), []
    started = time.perf_counter()
    for lr in lrs:
        copy_ = copy.deepcopy(model)
        optimizer = torch.optim.AdamW(copy_.parameters(), lr=lr, weight_decay=0.0, foreach=True)
        for batch in batches:
            loss, _ = objective.loss(copy_, batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(copy_.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        trained.append(copy_)
    return time.perf_counter() - started, trained


class Functional(torch.nn.Module):
    """`template` run with the given weights (its own buffers), so that an objective can call it like a model."""

    def __init__(self, template: torch.nn.Module, weights: dict[str, torch.Tensor]):
        super().__init__()
        self.template, self.weights, self.config = template, weights, template.config

    def forward(self, **kwargs):
        return functional_call(self.template, self.weights, args=(), kwargs=kwargs, tie_weights=True, strict=False)


def side_by_side(model, batches, lrs) -> tuple[float, list[torch.nn.Module]]:
    objective = OBJECTIVES["lm"]()
    members = [copy.deepcopy(model) for _ in lrs]
    names = [name for name, _ in members[0].named_parameters()]
    optimizer = torch.optim.AdamW([{"params": list(m.parameters()), "lr": lr} for m, lr in zip(members, lrs)],
                                  weight_decay=0.0, foreach=True)

    def member_loss(weights, batch):
        return objective.loss(Functional(members[0], weights), batch)[0]

    started = time.perf_counter()
    for batch in batches:
        # Stacked inside autograd: each copy's gradient flows back to its own parameters.
        stacked = {name: torch.stack([dict(m.named_parameters())[name] for m in members]) for name in names}
        losses = vmap(member_loss, in_dims=(0, None), randomness="error")(stacked, batch)
        losses.sum().backward()  # the copies are independent: each one's gradient is its own loss's
        for member in members:
            torch.nn.utils.clip_grad_norm_(member.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - started, members


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lrs", type=int, default=9, help="LRs of the grid trained at once (at most 9)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)  # as each of `undo run --workers 2`'s processes on a 2-core machine
    model = build_model(MODEL, seed=0, pad_id=0, eos_id=1, tokenizer_size=24)
    model.config._attn_implementation = "eager"
    generator = torch.Generator().manual_seed(0)
    batches = [{"input_ids": torch.randint(2, 20, (2, MODEL.context), generator=generator)}
               for _ in range(args.steps)]
    lrs = GRID[:args.lrs]
    separate(model, batches[:2], lrs), side_by_side(model, batches[:2], lrs)  # warm-up
    times: dict[str, list[float]] = {"separate": [], "side by side": []}
    for _ in range(args.rounds):
        seconds, alone = separate(model, batches, lrs)
        times["separate"].append(seconds)
        seconds, together = side_by_side(model, batches, lrs)
        times["side by side"].append(seconds)
    difference = max((a - b).abs().max().item() for one, two in zip(alone, together)
                     for a, b in zip(one.parameters(), two.parameters()))
    old, new = statistics.median(times["separate"]), statistics.median(times["side by side"])
    steps = len(lrs) * args.steps
    print(f"{len(lrs)} LRs x {args.steps} steps (1 thread, {args.rounds} rounds, medians): separate "
          f"{old / steps * 1e3:.2f} ms per LR-step, side by side {new / steps * 1e3:.2f} ms per LR-step, "
          f"speed-up {old / new:.2f}x; max |weight difference| {difference:.1e}")


if __name__ == "__main__":
    main()
