"""Throughput of the training engine against a bare PyTorch loop, and against the machine's matmul peak.

Run:  python benchmarks/engine_throughput.py            (defaults: ~4.8 M-parameter Llama, context 256)
      python benchmarks/engine_throughput.py --help

What is measured
----------------
* engine: wall time of one `undo.training.engine.train(...)` call of `--steps` optimizer steps on a fresh copy of the
  model (LM objective, constant LR, no warmup, no eval, no checkpoint inside the block; evaluate=None).
  Everything the call does is included: Accelerator creation and `prepare`, optimizer construction, the
  per-step host work (LR setting, `.item()`, token/FLOP counting, a metrics.jsonl line every `--log-every`
  steps, the end-of-run log line) and reading the metrics back at the end.
* bare:   wall time of the same number of steps of a minimal loop on another fresh copy of the same model,
  same batches: forward with labels, backward, clip_grad_norm_, AdamW step, zero_grad; the optimizer (same
  hyper-parameters and param groups as the engine's) is built inside the timed block too.
* Not included on either side: building/copying the model, making the data, and one-time costs of the
  process, which an untimed warm-up run of each side pays first (the first Accelerator, allocator growth,
  kernel selection). The first step of each block still pays AdamW's lazy state allocation, on both sides.
* Blocks alternate engine, bare, engine, bare, ... for `--rounds` rounds; the medians of tokens/s are compared.
* peak:   best fp32 `torch.matmul` GFLOP/s on square matrices (1024 and 2048), same thread count as training.
  Achieved GFLOP/s = tokens/s x undo.core.compute.train_flops_per_token(model, context) / 1e9.

Goals (from the project issue): engine/bare >= 0.95, engine GFLOP/s / peak >= 0.6. This is a benchmark, not a
test: it always exits 0 and is not part of CI's pass/fail.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from undo.core.compute import train_flops_per_token
from undo.config import ModelConfig, TrainConfig
from undo.core.data import PackedBatches
from undo.training.engine import train
from undo.core.models import build_model, count_parameters
from undo.objectives import OBJECTIVES

PAD_ID, EOS_ID, TOKENIZER_SIZE = 0, 2, 98
ENGINE_RATIO_GOAL, PEAK_RATIO_GOAL = 0.95, 0.6


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--heads", type=int, default=4, help="width/heads must be even")
    p.add_argument("--mlp-width", type=int, default=688)
    p.add_argument("--vocab", type=int, default=128, help=f">= the tokenizer size ({TOKENIZER_SIZE})")
    p.add_argument("--context", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=20, help="optimizer steps per timed block")
    p.add_argument("--rounds", type=int, default=3, help="engine/bare block pairs")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps of each side before timing")
    p.add_argument("--log-every", type=int, default=10, help="the engine's metrics.jsonl interval")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")  # what the engine's Accelerator picks


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


# ------------------------------------------------------------------------------------------------------------
# The two sides


def train_config(args: argparse.Namespace, steps: int) -> TrainConfig:
    never = steps + 1  # no eval / checkpoint inside the block (the engine still logs its end-of-run line)
    return TrainConfig(batch_size=args.batch_size, schedule="constant", warmup_steps=0,
                       eval_every=never, checkpoint_every=never, log_every=args.log_every)


def run_engine(model: torch.nn.Module, batches: PackedBatches, cfg: TrainConfig, steps: int, workdir: Path) -> float:
    """Seconds for one engine call of `steps` steps (trains `model` in place)."""
    start = time.perf_counter()
    train(model, OBJECTIVES["lm"](), batches, cfg, steps, workdir=workdir, progress=False, evaluate=None)
    sync()
    return time.perf_counter() - start


def run_bare(model: torch.nn.Module, batches: PackedBatches, cfg: TrainConfig, steps: int) -> float:
    """Seconds for `steps` steps of a minimal PyTorch loop with the engine's optimizer settings."""
    start = time.perf_counter()
    model.to(device())
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
    for step in range(steps):
        input_ids = batches[step]["input_ids"].to(device())
        loss = model(input_ids=input_ids, labels=input_ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    sync()
    return time.perf_counter() - start


def max_weight_difference(a: torch.nn.Module, b: torch.nn.Module) -> float:
    return max((pa.detach().cpu() - pb.detach().cpu()).abs().max().item()
               for pa, pb in zip(a.parameters(), b.parameters()))


# ------------------------------------------------------------------------------------------------------------
# Peak


def matmul_peak_gflops(sizes=(1024, 2048), repeats: int = 5) -> tuple[float, int]:
    """Best fp32 GFLOP/s of torch.matmul on square matrices (2 n^3 FLOPs each), and the size that reached it."""
    best, best_n = 0.0, 0
    for n in sizes:
        a = torch.randn(n, n, device=device())
        b = torch.randn(n, n, device=device())
        out = torch.empty(n, n, device=device())
        torch.matmul(a, b, out=out)  # warm-up
        sync()
        for _ in range(repeats):
            start = time.perf_counter()
            torch.matmul(a, b, out=out)
            sync()
            gflops = 2 * n**3 / (time.perf_counter() - start) / 1e9
            if gflops > best:
                best, best_n = gflops, n
    return best, best_n


# ------------------------------------------------------------------------------------------------------------


def busy_cpus(seconds: float = 1.0) -> float | None:
    """CPUs kept busy by other processes over `seconds` (we sleep meanwhile), from /proc/stat; None elsewhere."""
    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        return sum(fields), fields[3] + fields[4]  # total, idle + iowait

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    return (os.cpu_count() or 1) * (1 - (idle1 - idle0) / max(total1 - total0, 1))


def mark(value: float, goal: float) -> str:
    return "PASS" if value >= goal else "BELOW"


def main() -> None:
    args = parse_args()
    run_start = time.perf_counter()
    threads = torch.get_num_threads()

    model_cfg = ModelConfig(layers=args.layers, width=args.width, heads=args.heads, mlp_width=args.mlp_width,
                            context=args.context, vocab=args.vocab)
    reference = build_model(model_cfg, seed=args.seed, pad_id=PAD_ID, eos_id=EOS_ID, tokenizer_size=TOKENIZER_SIZE)
    flops_per_token = train_flops_per_token(reference, args.context)
    tokens_per_block = args.steps * args.batch_size * args.context

    generator = torch.Generator().manual_seed(args.seed)
    n_rows = args.batch_size * max(args.steps, args.warmup)  # one epoch covers every block: no reshuffle inside
    rows = torch.randint(3, TOKENIZER_SIZE, (n_rows, args.context), generator=generator)
    batches = PackedBatches(rows, args.batch_size, seed=args.seed)

    print(f"device {device()} ({platform.processor() or platform.machine()}), torch {torch.__version__}, "
          f"{threads} threads")
    busy = busy_cpus()
    if busy is not None and busy > 0.25:
        print(f"warning: other processes are using {busy:.1f} CPUs right now; they distort these numbers")
    print(f"model: {count_parameters(reference) / 1e6:.2f} M parameters ({args.layers} layers, width {args.width}, "
          f"{args.heads} heads, mlp {args.mlp_width}, vocab {args.vocab}), context {args.context}, "
          f"batch {args.batch_size}; {flops_per_token / 1e6:.1f} MFLOP/token (train)")
    print(f"{args.rounds} rounds x (engine, bare) of {args.steps} steps = {tokens_per_block:,} tokens per block; "
          f"warm-up {args.warmup} steps each")

    peak, peak_n = matmul_peak_gflops()
    print(f"fp32 matmul peak: {peak:.1f} GFLOP/s (n={peak_n})")

    engine_tps, bare_tps = [], []
    with tempfile.TemporaryDirectory(prefix="undo-bench-") as tmp:
        if args.warmup:
            run_engine(copy.deepcopy(reference), batches, train_config(args, args.warmup), args.warmup,
                       Path(tmp) / "warmup")
            run_bare(copy.deepcopy(reference), batches, train_config(args, args.warmup), args.warmup)
        cfg = train_config(args, args.steps)
        for round_ in range(args.rounds):
            engine_model, bare_model = copy.deepcopy(reference), copy.deepcopy(reference)
            engine_s = run_engine(engine_model, batches, cfg, args.steps, Path(tmp) / f"round{round_}")
            bare_s = run_bare(bare_model, batches, cfg, args.steps)
            engine_tps.append(tokens_per_block / engine_s)
            bare_tps.append(tokens_per_block / bare_s)
            same = max_weight_difference(engine_model, bare_model)
            print(f"round {round_ + 1}: engine {engine_tps[-1]:,.0f} tok/s ({engine_s:.2f} s), "
                  f"bare {bare_tps[-1]:,.0f} tok/s ({bare_s:.2f} s); max |weight difference| {same:.1e}")

    engine, bare = statistics.median(engine_tps), statistics.median(bare_tps)
    ratio = engine / bare
    engine_gflops, bare_gflops = engine * flops_per_token / 1e9, bare * flops_per_token / 1e9
    peak_ratio = engine_gflops / peak
    print()
    print("summary (medians)")
    print(f"  engine       {engine:10,.0f} tok/s   {engine_gflops:7.1f} GFLOP/s")
    print(f"  bare PyTorch {bare:10,.0f} tok/s   {bare_gflops:7.1f} GFLOP/s   ({bare_gflops / peak:.2f} of peak)")
    print(f"  matmul peak                      {peak:7.1f} GFLOP/s")
    print(f"  engine / bare  = {ratio:.3f}   goal >= {ENGINE_RATIO_GOAL}  {mark(ratio, ENGINE_RATIO_GOAL)}")
    print(f"  engine / peak  = {peak_ratio:.3f}   goal >= {PEAK_RATIO_GOAL}   {mark(peak_ratio, PEAK_RATIO_GOAL)}")
    print(f"  best blocks: engine {max(engine_tps):,.0f} tok/s, bare {max(bare_tps):,.0f} tok/s, "
          f"ratio {max(engine_tps) / max(bare_tps):.3f} (less sensitive to other load on the machine)")
    print(f"  wall time {time.perf_counter() - run_start:.0f} s")


if __name__ == "__main__":
    main()
