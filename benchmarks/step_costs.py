"""Three costs every study pays, each measured against the way it was done before (same numbers, less time):

* optimizer update: one training step (forward, backward, clip, AdamW) of the arithmetic studies' 4x64 model with
  AdamW's per-tensor update (torch's CPU default, what the engine used before) and its multi-tensor `foreach`
  update (what the engine uses now), at the attack's batch (2 x 64 tokens), the demo's (8 x 64) and the
  arithmetic study's (16 x 64). Blocks alternate per-tensor, foreach, ... for `--rounds` rounds; medians compared.
* key/value cache: the same training step with the forward building HF's key/value cache (the model's default,
  what the objectives did before) and without (`undo.objectives.common.forward`, use_cache=False, now): nothing is
  decoded after a training forward, so the cache is pure overhead (measured: 1-2 % of a step).
* tokenization: packing the demo's pretraining stream (300k equations) through the tokenizer's `__call__`
  (before) and through its fast backend's `encode_batch` (`Setting.encode_documents` now); the ids must be equal.

Run:  python benchmarks/step_costs.py [--rounds 5] [--steps 50]
A benchmark, not a test: it prints ratios measured in this one run and always exits 0.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from undo.config import ModelConfig
from undo.config.loading import load_config
from undo.core.models import build_model
from undo.objectives import OBJECTIVES
from undo.stages.evaluation import setting_for

MODEL = ModelConfig(layers=4, width=64, heads=2, context=64)


def step_seconds(model, batches, foreach: bool, use_cache: bool = False) -> float:
    """Mean seconds per training step on a fresh copy of `model`, the engine's optimizer groups and clip."""
    model = copy.deepcopy(model)
    matrices = [p for p in model.parameters() if p.ndim >= 2]
    vectors = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": matrices, "weight_decay": 0.1}, {"params": vectors, "weight_decay": 0.0}],
                                  lr=1e-3, foreach=foreach)
    objective = OBJECTIVES["lm"]()
    started = time.perf_counter()
    for batch in batches:
        if use_cache:  # the model's default forward, as the objectives ran it before
            loss = model(input_ids=batch["input_ids"], labels=batch["input_ids"]).loss
        else:
            loss, _ = objective.loss(model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return (time.perf_counter() - started) / len(batches)


def before_and_after(rounds: int, steps: int, before: dict, after: dict, names: tuple[str, str]) -> None:
    """Per batch size, training steps with the `before` options of `step_seconds` against the `after` ones, in
    alternating blocks; prints both medians and their ratio."""
    model = build_model(MODEL, seed=0, pad_id=0, eos_id=1, tokenizer_size=24)
    for batch_size in (2, 8, 16):
        generator = torch.Generator().manual_seed(0)
        batches = [{"input_ids": torch.randint(2, 20, (batch_size, MODEL.context), generator=generator)}
                   for _ in range(steps)]
        step_seconds(model, batches[:5], **before), step_seconds(model, batches[:5], **after)  # warm-up
        times: dict[str, list[float]] = {"before": [], "after": []}
        for _ in range(rounds):
            for side, options in (("before", before), ("after", after)):
                times[side].append(step_seconds(model, batches, **options))
        old, new = statistics.median(times["before"]), statistics.median(times["after"])
        print(f"  batch {batch_size:>2} x {MODEL.context}: {names[0]} {old * 1e3:6.2f} ms/step, {names[1]} "
              f"{new * 1e3:6.2f} ms/step, {names[1]}/{names[0]} = {new / old:.3f}")


def optimizer_update(rounds: int, steps: int) -> None:
    before_and_after(rounds, steps, {"foreach": False}, {"foreach": True}, ("per-tensor", "foreach"))


def key_value_cache(rounds: int, steps: int) -> None:
    before_and_after(rounds, steps, {"foreach": True, "use_cache": True}, {"foreach": True, "use_cache": False},
                     ("with cache", "without"))


def tokenization() -> None:
    setting = setting_for(load_config(None))
    texts = [document.text for document in setting.pretraining_documents("base", 0)]
    eos = setting.tokenizer.eos_token_id
    started = time.perf_counter()
    before = [[eos, *ids] for ids in setting.tokenizer(texts, add_special_tokens=False)["input_ids"]]
    before_s = time.perf_counter() - started
    started = time.perf_counter()
    after = setting.encode_documents(texts)
    after_s = time.perf_counter() - started
    print(f"  {len(texts):,} documents: tokenizer __call__ {before_s:.2f} s, encode_documents {after_s:.2f} s, "
          f"ratio {after_s / before_s:.3f}; ids equal: {before == after}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=50, help="training steps per timed block")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as each of `undo run --workers 2`'s processes on a 2-core machine
    print(f"optimizer update (1 thread, {args.rounds} rounds x {args.steps} steps, medians):")
    optimizer_update(args.rounds, args.steps)
    print(f"key/value cache in training forwards (1 thread, foreach AdamW, {args.rounds} rounds x {args.steps} "
          "steps, medians):")
    key_value_cache(args.rounds, args.steps)
    print("tokenization (the demo's pretraining stream):")
    tokenization()


if __name__ == "__main__":
    main()
