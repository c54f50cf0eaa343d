"""The GPU check, ready to run: one script, under 5 minutes on one GPU, that prints

1. bf16 tokens/s and MFU of the engine's pretraining step and distillation step on a ~110M-parameter Llama (FLOPs
   from undo's counter; the peak from the device's spec table, else a measured bf16 matmul);
2. the peak memory of one step of each training stage (pretraining, GradDiff unlearning, distillation with its
   frozen teacher) on a Gemma-2-2B-shaped random model, beside `undo config --memory`'s estimate;
3. a 2-process FSDP pretraining (`torchrun --nproc_per_node 2 ... --set distributed.strategy=fsdp`): on two GPUs when
   the machine has them, else as two CPU processes (NCCL cannot put two ranks on one GPU), with what each process
   held.

Run:  python benchmarks/gpu_check.py          (a GPU machine)
      python benchmarks/gpu_check.py --cpu    (the same code at tiny shapes, fp32, on the CPU: ~1 minute; CI runs it
                                               through tests/test_gpu_check.py)
A benchmark, not a test: it prints numbers and exits 0.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from engine_throughput import matmul_peak_gflops  # noqa: E402

from undo.config import TrainConfig  # noqa: E402
from undo.core.data import PackedBatches  # noqa: E402
from undo.core.models import count_parameters, fresh_model, llama_config  # noqa: E402
from undo.objectives import OBJECTIVES  # noqa: E402
from undo.training.engine import read_metrics, train  # noqa: E402

# Dense bf16 tensor-core peaks from the vendors' spec sheets (TFLOP/s, without sparsity).
SPEC_BF16_TFLOPS = {"H200": 989.0, "H100 SXM": 989.0, "H100 NVL": 835.0, "H100 PCIe": 756.0, "H100": 756.0,
                    "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10G": 70.0, "RTX 4090": 165.0}


def peak_flops(cpu: bool) -> tuple[float, str]:
    """FLOP/s the MFU is taken against, and where that number comes from."""
    if not cpu:
        name = torch.cuda.get_device_name()
        for key, tflops in SPEC_BF16_TFLOPS.items():
            if key in name:
                return tflops * 1e12, f"spec sheet, {key} bf16 dense"
        n = 8192
        a, b = (torch.randn(n, n, device="cuda", dtype=torch.bfloat16) for _ in range(2))
        torch.matmul(a, b)
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(10):
            torch.matmul(a, b)
        torch.cuda.synchronize()
        return 10 * 2 * n**3 / (time.perf_counter() - start), "measured bf16 matmul"
    gflops, _ = matmul_peak_gflops()
    return gflops * 1e9, "measured fp32 matmul"


def llama(cpu: bool):
    shape = dict(layers=2, width=64, heads=2, context=64, vocab=512) if cpu \
        else dict(layers=12, width=768, heads=12, context=1024, vocab=32000)  # ~110M parameters
    from undo.config import ModelConfig

    return fresh_model(llama_config(ModelConfig(**shape), pad_id=0, eos_id=2), seed=0), shape


def step_rate(objective_name: str, cpu: bool, workdir: Path, steps: int, batch: int) -> dict:
    """tokens/s (median after two warm-up steps) and achieved FLOP/s of the engine's step."""
    model, shape = llama(cpu)
    objective = OBJECTIVES["lm"]() if objective_name == "lm" else \
        OBJECTIVES["distill"](copy.deepcopy(model).eval().requires_grad_(False), temperature=1.0)
    rows = torch.randint(3, shape["vocab"], (batch * steps, shape["context"]))
    cfg = TrainConfig(batch_size=batch, lr=1e-4, warmup_steps=1, max_steps=steps, eval_every=steps + 1,
                      checkpoint_every=steps + 1, log_every=1, mixed_precision="no" if cpu else "bf16")
    result = train(model, objective, PackedBatches(rows, batch, seed=0), cfg, steps, workdir, progress=False)
    rates = sorted(line["tokens_per_s"] for line in read_metrics(workdir / "metrics.jsonl")
                   if line["kind"] == "train" and line["step"] > 2)
    tokens_per_s = rates[len(rates) // 2]
    flops_per_token = sum(result.flops.values()) / result.tokens
    return {"parameters": count_parameters(model), "tokens_per_s": round(tokens_per_s),
            "flops_per_s": tokens_per_s * flops_per_token}


def gemma_shaped(cpu: bool):
    from transformers import Gemma2Config

    if cpu:
        return Gemma2Config(vocab_size=1000, hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                            num_attention_heads=2, num_key_value_heads=1, head_dim=32, tie_word_embeddings=True)
    return Gemma2Config(vocab_size=256000, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
                        num_attention_heads=8, num_key_value_heads=4, head_dim=256, tie_word_embeddings=True)


def stage_peaks(cpu: bool, workdir: Path, rows: int = 4, context: int = 512) -> list[dict]:
    """Two steps of each stage on a random Gemma-2-2B-shaped model in bf16: the device's peak beside the estimate."""
    from undo.stages.memory import Architecture, Step, stage_memory

    context = 64 if cpu else context
    device = "cpu" if cpu else "cuda"
    config = gemma_shaped(cpu)
    records = []
    for stage, objective_name, frozen, sides in (("pretrain", "lm", 0, 1), ("unlearn grad_diff", "grad_diff", 0, 2),
                                                 ("distill", "distill", 1, 1)):
        if not cpu:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
        model = fresh_model(config, seed=0, dtype="float32" if cpu else "bfloat16").to(device)
        arch = Architecture.of(model)
        teacher = copy.deepcopy(model).eval().requires_grad_(False) if frozen else None
        objective = OBJECTIVES["distill"](teacher, temperature=1.0) if teacher is not None else \
            OBJECTIVES[objective_name]() if objective_name == "lm" else OBJECTIVES[objective_name](retain_weight=1.0)
        ids = torch.randint(3, config.vocab_size, (rows * 2, context))
        batch = {"input_ids": ids[:rows]} if sides == 1 else {"forget_input_ids": ids[:rows],
                                                              "retain_input_ids": ids[rows:]}
        cfg = TrainConfig(batch_size=rows, lr=1e-5, warmup_steps=1, max_steps=2, eval_every=3, checkpoint_every=3,
                          log_every=1)
        train(model, objective, [batch, batch], cfg, 2, workdir / stage.replace(" ", "_"), progress=False)
        estimate = stage_memory(arch, Step(stage, rows * sides, arch.parameters, frozen, "no", two_logits=bool(frozen),
                                           sides=sides), context=context,
                                dtype="float32" if cpu else "bfloat16", processes=1, strategy="ddp")
        measured = None if cpu else torch.cuda.max_memory_allocated() - before
        records.append({"stage": stage, "parameters": arch.parameters, "estimate_gib": estimate.total / 2**30,
                        "measured_gib": None if measured is None else measured / 2**30})
        del model, teacher, objective
    return records


def fsdp_run(cpu: bool, workdir: Path) -> dict:
    """A 2-process sharded pretraining through the CLI, on two GPUs or as two CPU processes."""
    two_gpus = not cpu and torch.cuda.device_count() >= 2
    width, layers = (64, 3) if not two_gpus else (1024, 16)
    raw = {"run_dir": str(workdir / "runs"), "setting": {"name": "alphabet", "examples": 400},
           "model": {"layers": layers, "width": width, "heads": 4, "context": 64, "vocab": 1000},
           "pretrain": {"train": {"batch_size": 8, "max_steps": 6, "eval_every": 6, "checkpoint_every": 3,
                                  "log_every": 1, "mixed_precision": "bf16" if two_gpus else "no"}},
           "distributed": {"strategy": "fsdp"}}
    path = workdir / "fsdp.yaml"
    path.write_text(yaml.safe_dump(raw))
    env = dict(os.environ) if two_gpus else {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "undo", "pretrain", str(path), "--only", "base", "--no-progress"],
                          capture_output=True, text=True, env=env, timeout=600)
    held = re.findall(r"(parameter|optimizer-state) bytes per process (\[[\d, ]+\]) of (\d+)", done.stderr)
    return {"where": "two GPUs" if two_gpus else "two CPU processes (gloo)", "exit_code": done.returncode,
            "wall_s": round(time.perf_counter() - start, 1),
            "bytes_per_process": {kind: {"held": json.loads(h), "whole": int(w)} for kind, h, w in held},
            **({"error": [line for line in done.stderr.splitlines() if "error" in line.lower()][-3:]}
               if done.returncode else {})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cpu", action="store_true", help="tiny shapes on the CPU (what CI runs)")
    args = parser.parse_args()
    cpu = args.cpu or not torch.cuda.is_available()
    peak, source = peak_flops(cpu)
    report: dict = {"device": "CPU" if cpu else torch.cuda.get_device_name(), "peak_flops_per_s": peak,
                    "peak_source": source}
    with tempfile.TemporaryDirectory() as tmp:
        steps, batch = (6, 4) if cpu else (20, 8)
        for name, objective in (("pretraining", "lm"), ("distillation", "distill")):
            rate = step_rate(objective, cpu, Path(tmp) / name, steps, batch)
            report[name] = {**rate, "mfu": round(rate["flops_per_s"] / peak, 3)}
            print(json.dumps({name: report[name]}), flush=True)
        report["stage_peaks"] = stage_peaks(cpu, Path(tmp) / "peaks")
        print(json.dumps({"stage_peaks": report["stage_peaks"]}), flush=True)
        report["fsdp"] = fsdp_run(cpu, Path(tmp))
        print(json.dumps({"fsdp": report["fsdp"]}), flush=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
