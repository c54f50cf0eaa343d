"""GPU check for "your own model": every stage kind on a 0.5B-parameter checkpoint in bfloat16, printing each
stage's peak accelerator memory and tokens/s.

Run:  python benchmarks/gpu_own_model.py                 (Qwen2.5-0.5B's shape; a few minutes on one GPU)
      python benchmarks/gpu_own_model.py --layers 4       (a quick smoke test; also runs on a CPU, slowly)

Nothing is downloaded: the checkpoint is a random-weight Qwen2 with Qwen2.5-0.5B's shape (24 blocks, width 896,
14 heads, 2 key/value heads, MLP 4864, vocabulary 151,936), built from its config and saved to a temporary folder
with the arithmetic setting's tokenizer; the arithmetic data is generated. The stages are the real ones
(`undo.stages`): loading as the base model, GradDiff and RMU unlearning, UNDO distillation (alpha 0.25, beta 0, the
paper's WMDP values) and a relearning attack. Random weights learn nothing here; the point is memory and speed.
A benchmark, not a test: it prints numbers and exits 0.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from transformers import Qwen2Config

from undo.config import validate_config
from undo.core.models import count_parameters, fresh_model, save_model
from undo.settings.tokenizer import build_char_tokenizer
from undo.stages.attack import attack
from undo.stages.distill import distill
from undo.stages.pretrain import pretrain
from undo.stages.unlearn import sweep_points, unlearn


def peak_gib() -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps per training stage")
    parser.add_argument("--context", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--gradient-checkpointing", action="store_true")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="undo_gpu_"))
    config = Qwen2Config(vocab_size=151_936, hidden_size=896, intermediate_size=4864, num_hidden_layers=args.layers,
                         num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=args.context,
                         tie_word_embeddings=True, pad_token_id=0, bos_token_id=2, eos_token_id=2)
    model = fresh_model(config, seed=0, dtype="bfloat16")
    parameters = count_parameters(model)
    save_model(model, scratch / "checkpoint", build_char_tokenizer())
    del model
    steps, batch = args.steps, args.batch_size
    cfg = validate_config({
        "run_dir": str(scratch / "runs"),
        "setting": {"examples": 20_000, "word_problem_weight": 0.0, "eval_per_cell": 20, "eval_batch_size": 64},
        "model": {"pretrained": str(scratch / "checkpoint"), "dtype": "bfloat16", "context": args.context,
                  "gradient_checkpointing": args.gradient_checkpointing},
        "unlearn": {"steps": steps, "batch_size": batch, "eval_every": steps, "examples": 2000, "methods": [
            {"method": "grad_diff", "lrs": [1e-5], "knobs": {"retain_weight": 1.0}},
            {"method": "rmu", "lrs": [1e-5], "knobs": {"layer": min(7, args.layers - 1), "steer": 80.0}}]},
        "distill": {"examples": 4000, "alphas": [0.25], "beta": 0.0, "stop_tolerance": None,
                    "train": {"batch_size": batch, "max_steps": steps, "eval_every": steps, "warmup_steps": 2}},
        "attack": {"lrs": [1e-5], "steps": steps, "eval_every": steps, "budgets": [steps], "eval_per_cell": 10,
                   "examples": 2000, "batch_size": batch},
    })
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    print(f"{device}: Qwen2 shape, {args.layers} blocks, {parameters / 1e6:.0f} M parameters, bf16, context "
          f"{args.context}, batch {batch}, gradient checkpointing {args.gradient_checkpointing}")
    rows = []

    def stage(name, run):
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        path = run()
        seconds = time.perf_counter() - started
        meta = json.loads((path / "meta.json").read_text())
        tokens = meta.get("tokens", 0)
        rows.append((name, seconds, peak_gib(), tokens / meta["wall_time_s"] if tokens and meta["wall_time_s"] else None))
        return path

    base = stage("load + evaluate", lambda: pretrain(cfg, "base", progress=False))
    points = sweep_points(cfg)
    teacher = stage("unlearn grad_diff", lambda: unlearn(cfg, points[0], base, progress=False))
    stage("unlearn rmu (frozen reference)", lambda: unlearn(cfg, points[1], base, progress=False))
    stage("distill UNDO a=0.25 (teacher)", lambda: distill(cfg, teacher, init="noised", alpha=0.25, progress=False))
    stage("attack (1 LR)", lambda: attack(cfg, teacher, progress=False))
    print(f"{'stage':<34}{'seconds':>9}{'peak GiB':>10}{'tokens/s':>11}")
    for name, seconds, peak, tps in rows:
        print(f"{name:<34}{seconds:9.1f}{'-' if peak is None else format(peak, '.2f'):>10}"
              f"{'-' if tps is None else format(tps, ',.0f'):>11}")


if __name__ == "__main__":
    main()
