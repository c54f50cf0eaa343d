"""The memory estimate (`undo config --memory`, undo/stages/memory.py) against the memory real stages use.

Each case runs one stage in a fresh process (two under torchrun for the DDP and FSDP cases) and measures how much its
peak resident memory grew during the stage; the estimate of that stage is printed beside it, with the ratio. On the
CPU the processes run with `MALLOC_MMAP_THRESHOLD_=65536`: glibc then serves every tensor from its own mapping and
gives it back when it is freed, so resident memory follows the live tensors (by default freed heap stays resident
and the peak of a stage includes the garbage of the ones before). On a GPU the measure is
`torch.cuda.max_memory_allocated`.

Run:  python benchmarks/memory_estimate.py                 (every case, small model: ~2 min on 2 CPU cores)
      python benchmarks/memory_estimate.py --size medium   (a 50M-parameter model: ~5 min)
      python benchmarks/memory_estimate.py --table         (the README's table: 2 B and 8 B models, 1-8 GPUs)
tests/test_memory.py runs the small pretraining, distillation and FSDP cases and holds the ratio to [0.8, 1.25].
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

SIZES = {  # width, layers, vocab, context, batch
    "small": (256, 4, 16000, 128, 8),
    "medium": (512, 6, 32000, 256, 8),
}
CASES = {  # case -> (stage run, processes, strategy)
    "pretrain": ("pretrain", 1, "ddp"),
    "unlearn": ("unlearn", 1, "ddp"),
    "distill": ("distill", 1, "ddp"),
    "ddp": ("pretrain", 2, "ddp"),
    "fsdp": ("pretrain", 2, "fsdp"),
}
ESTIMATED = {"pretrain": "pretrain", "unlearn": "unlearn grad_diff", "distill": "distill"}


def study(size: str, run_dir: Path, strategy: str) -> dict:
    width, layers, vocab, context, batch = SIZES[size]
    return {"seed": 0, "run_dir": str(run_dir), "setting": {"name": "alphabet", "examples": 400},
            "model": {"layers": layers, "width": width, "heads": 4, "context": context, "vocab": vocab},
            "pretrain": {"train": {"batch_size": batch, "lr": 1e-3, "warmup_steps": 1, "max_steps": 3,
                                   "eval_every": 3, "checkpoint_every": 100, "log_every": 1}},
            "unlearn": {"steps": 2, "batch_size": batch // 2, "eval_every": 2, "examples": 100,
                        "methods": [{"method": "grad_diff", "lrs": [1e-3]}]},
            "distill": {"examples": 200, "stop_tolerance": None,
                        "train": {"batch_size": batch, "lr": 1e-3, "warmup_steps": 1, "max_steps": 2, "eval_every": 2}},
            "distributed": {"strategy": strategy}}


def status_bytes(field: str) -> int:
    """A memory field of /proc/self/status (VmRSS, VmHWM), in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def peak_bytes() -> int:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated()
    try:
        return status_bytes("VmHWM")  # the peak since `start_measuring` reset it
    except (OSError, KeyError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def start_measuring() -> int:
    """Reset the peak to now (on Linux, writing 5 to /proc/self/clear_refs resets the resident high-water mark, so
    that a peak reached before the stage, e.g. while importing, is not taken for the stage's) and return the memory
    in use now."""
    import gc

    import psutil
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    return psutil.Process().memory_info().rss


def run_one(stage: str, size: str, run_dir: Path, strategy: str) -> None:
    """In this (fresh) process: one stage, printing its estimate and its measured growth as a JSON line."""
    from undo.config import validate_config
    from undo.core import distributed
    from undo.stages.memory import estimate

    from undo.stages.distill import distill
    from undo.stages.pretrain import pretrain
    from undo.stages.selection import run_unlearning

    cfg = validate_config(study(size, run_dir, strategy))
    if stage == "prepare":  # the base model the later stages start from
        pretrain(cfg, "base", progress=False)
        return
    estimated = {m.stage: m for m in estimate(cfg, int(os.environ.get("WORLD_SIZE", "1")))}[ESTIMATED[stage]]
    before = start_measuring()
    if stage == "pretrain":
        pretrain(cfg, "base", progress=False)
    elif stage == "unlearn":
        run_unlearning(cfg, progress=False)
    else:
        distill(cfg, run_dir / "base", init="random", progress=False)
    grown = peak_bytes() - before
    print(json.dumps({"rank": distributed.rank(), "estimate": estimated.total, "measured": grown,
                      "parts": {k: v for k, v in vars(estimated).items() if k != "stage"}}), flush=True)


def measure(case: str, size: str = "small") -> list[dict]:
    """Run `case` in fresh processes; one record per process: estimate and measured bytes."""
    stage, processes, strategy = CASES[case]
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    me = [str(Path(__file__).resolve())]
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "runs"

        def child(which: str, n: int) -> str:
            launcher = [sys.executable] if n == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                        "--nproc_per_node", str(n)]
            done = subprocess.run([*launcher, *me, "--child", which, "--size", size, "--run-dir", str(run_dir),
                                   "--strategy", strategy], env=env, capture_output=True, text=True, timeout=1200)
            if done.returncode != 0:
                raise RuntimeError(f"{case}: the {which} process failed:\n{done.stderr[-3000:]}")
            return done.stdout

        if stage != "pretrain":
            child("prepare", 1)
        out = child(stage, processes)
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def shapes() -> dict[str, object]:
    """Gemma-2-2B and Llama-3-8B as their published configs give them (built on the meta device: no download)."""
    from transformers import Gemma2Config, LlamaConfig

    return {"Gemma-2-2B": Gemma2Config(vocab_size=256000, hidden_size=2304, intermediate_size=9216,
                                       num_hidden_layers=26, num_attention_heads=8, num_key_value_heads=4,
                                       head_dim=256, tie_word_embeddings=True),
            "Llama-3-8B": LlamaConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336,
                                      num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                                      tie_word_embeddings=False)}


def table(gpus=(1, 4, 8), rows: int = 4, context: int = 512) -> str:
    """The README's table: each model's largest per-GPU estimate over a study's training stages (default methods,
    distillation, fine-tuning attack), bf16 weights and AdamW moments, gradient checkpointing, `rows` sequences of
    `context` tokens per GPU and micro-batch."""
    import torch
    from transformers import AutoModelForCausalLM

    from undo.config import validate_config
    from undo.stages.memory import Architecture, stage_memory, study_steps

    lines = ["| model | GPUs | DDP: largest stage | FSDP: largest stage |", "|---|---|---|---|"]
    for name, config in shapes().items():
        with torch.device("meta"):
            arch = Architecture.of(AutoModelForCausalLM.from_config(config))
        for n in gpus:
            step = {"batch_size": rows, "grad_accum": n}
            cfg = validate_config({"pretrain": {"train": step}, "unlearn": step, "attack": step,
                                   "distill": {"train": step}})
            cells = []
            for strategy in ("ddp", "fsdp"):
                stages = [stage_memory(arch, s, context=context, dtype="bfloat16", processes=n, strategy=strategy,
                                       gradient_checkpointing=True) for s in study_steps(cfg, arch, n)]
                worst = max(stages, key=lambda m: m.total)
                cells.append(f"{worst.total / 2**30:.1f} GiB ({worst.stage})")
            lines.append(f"| {name} ({arch.parameters / 1e9:.1f} B) | {n} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--child")
    parser.add_argument("--run-dir", type=Path)
    parser.add_argument("--strategy", default="ddp")
    parser.add_argument("--table", action="store_true", help="print the README's table of 2 B and 8 B models")
    args = parser.parse_args()
    if args.child:
        run_one(args.child, args.size, args.run_dir, args.strategy)
        return
    if args.table:
        print(table())
        return
    sys.path.insert(0, str(Path(__file__).parent))
    from engine_throughput import matmul_peak_gflops

    peak, _ = matmul_peak_gflops()
    print(f"machine: fp32 matmul peak {peak:.0f} GFLOP/s; model size {args.size} {SIZES[args.size]}")
    print(f"{'case':10} {'process':>7} {'estimate MiB':>13} {'measured MiB':>13} {'measured/estimate':>18}")
    for case in args.cases.split(","):
        for record in measure(case, args.size):
            print(f"{case:10} {record['rank']:>7} {record['estimate'] / 2**20:>13.0f} "
                  f"{record['measured'] / 2**20:>13.0f} {record['measured'] / record['estimate']:>18.2f}", flush=True)


if __name__ == "__main__":
    main()
