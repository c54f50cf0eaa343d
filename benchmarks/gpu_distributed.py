"""GPU check for mixed precision: (1) a tiny study with bf16 autocast in every stage on one GPU, end to end;
(2) the ratio of bf16 to fp32 training throughput (tokens/s) of the engine on a ~100M-parameter Llama, the two
measured alternately in one run (these machines are noisy; only the ratio is compared).

Run:  python benchmarks/gpu_distributed.py            (one GPU; a few minutes)
      python benchmarks/gpu_distributed.py --tiny     (a smoke test of the script; runs on a CPU)

Two GPUs: `torchrun --nproc_per_node 2 -m undo run STUDY.yaml` trains every stage data-parallel; the tests prove
its numbers on the CPU (tests/test_distributed.py). A benchmark, not a test: it prints numbers and exits 0.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from undo.config import ModelConfig, TrainConfig, validate_config
from undo.core.data import PackedBatches
from undo.training.engine import read_metrics, train
from undo.core.models import build_model, count_parameters
from undo.objectives import OBJECTIVES
from undo.api import run_study


def tiny_study(run_dir: Path) -> float:
    bf16 = {"mixed_precision": "bf16"}
    raw = {"run_dir": str(run_dir),
           "setting": {"examples": 4000, "word_problem_weight": 0.0, "eval_per_cell": 20},
           "model": {"layers": 2, "width": 64, "heads": 2, "context": 64},
           "pretrain": {"train": {"batch_size": 16, "warmup_steps": 20, "max_steps": 200, "eval_every": 100, **bf16}},
           "unlearn": {"steps": 20, "eval_every": 10, "examples": 1000, **bf16,
                       "methods": [{"method": "grad_diff", "lrs": [1e-3]}, {"method": "maxent", "lrs": [1e-3]}],
                       "selection": {"min_retain_fraction": 0.0}},
           "distill": {"examples": 2000, "alphas": [0.5],
                       "train": {"max_steps": 100, "eval_every": 50, "warmup_steps": 10, **bf16}},
           "attack": {"lrs": [1e-4, 1e-3], "steps": 20, "eval_every": 10, "budgets": [10, 20],
                      "eval_per_cell": 10, "examples": 1000, **bf16},
           "study": {"undo_method": "grad_diff", "distill_methods": ["grad_diff"]}}
    start = time.perf_counter()
    run_study(validate_config(raw), progress=False)
    return time.perf_counter() - start


def throughput(model_cfg: ModelConfig, precision: str, steps: int, batch: int, workdir: Path) -> float:
    model = build_model(model_cfg, seed=0, pad_id=0, eos_id=2, tokenizer_size=model_cfg.vocab)
    if torch.cuda.is_available():
        model = model.cuda()
    rows = torch.randint(3, model_cfg.vocab, (batch * (steps + 1), model_cfg.context))
    cfg = TrainConfig(batch_size=batch, lr=1e-4, warmup_steps=1, max_steps=steps, eval_every=steps + 1,
                      checkpoint_every=steps + 1, log_every=1, mixed_precision=precision)
    train(model, OBJECTIVES["lm"](), PackedBatches(rows, batch, seed=0), cfg, steps, workdir, progress=False)
    logged = [line["tokens_per_s"] for line in read_metrics(workdir / "metrics.jsonl") if line["kind"] == "train"]
    return sorted(logged[2:])[len(logged[2:]) // 2]  # the median after warm-up steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="a smoke test: tiny model, few steps (runs on a CPU)")
    args = parser.parse_args()
    print(f"device: {torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU'}")
    with tempfile.TemporaryDirectory() as tmp:
        print(f"tiny study, bf16 in every stage: {tiny_study(Path(tmp) / 'study'):.0f} s")
        shape = (dict(layers=2, width=64, heads=2, context=64, vocab=256) if args.tiny
                 else dict(layers=12, width=768, heads=12, context=512, vocab=32000))  # ~110M parameters
        model_cfg = ModelConfig(**shape)
        steps, batch = (8, 4) if args.tiny else (30, 16)
        parameters = count_parameters(build_model(model_cfg, seed=0, pad_id=0, eos_id=2,
                                                  tokenizer_size=model_cfg.vocab))
        rates: dict[str, list[float]] = {"no": [], "bf16": []}
        for round_ in range(2):  # alternate, so drift hits both
            for precision in ("no", "bf16"):
                workdir = Path(tmp) / f"{precision}_{round_}"
                rates[precision].append(throughput(model_cfg, precision, steps, batch, workdir))
        fp32, bf16 = (max(r) for r in rates.values())
        print(json.dumps({"parameters": parameters, "fp32_tokens_per_s": round(fp32), "bf16_tokens_per_s": round(bf16),
                          "bf16_over_fp32": round(bf16 / fp32, 2)}, indent=2))


if __name__ == "__main__":
    main()
