"""Stages: artifacts in, artifacts out. Each is a pure function of its config and its input artifacts.

Here: pretraining of the base model (all four operations) and of the data-filtered oracle (retain operations
only, the very same retain examples as the base model saw: the "perfect data filtering" gold standard).
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Literal

from rich.console import Console

from undo.artifacts import Artifact, stable_hash
from undo.compute import matmul_parameters, train_flops_per_token
from undo.config import ExperimentConfig, dump_yaml
from undo.data import PackedBatches, pack
from undo.engine import train
from undo.models import build_model, count_parameters, save_model
from undo.objectives import OBJECTIVES
from undo.settings.arithmetic import ArithmeticSetting, overlap_with_training

console = Console(stderr=True)
Which = Literal["base", "oracle"]


def pretrain_key(cfg: ExperimentConfig, which: Which) -> str:
    """Everything that determines the pretrained model, and nothing else (not run_dir, not eval cadence)."""
    train_cfg = cfg.pretrain.train.model_dump(mode="json", exclude={"eval_every", "checkpoint_every", "log_every"})
    return stable_hash({"stage": "pretrain", "which": which, "seed": cfg.seed,
                        "setting": cfg.setting.model_dump(mode="json"), "model": cfg.model.model_dump(mode="json"),
                        "train": train_cfg})


def pretrain(cfg: ExperimentConfig, which: Which, *, progress: bool = True) -> Path:
    """Pretrain the base model or the oracle into `<run_dir>/<which>/`; a complete artifact is reused."""
    artifact = Artifact(cfg.run_dir, which, pretrain_key(cfg, which))
    if artifact.is_complete():
        console.print(f"[green]{which}[/]: complete artifact found at {artifact.path}, not recomputed")
        return artifact.path
    workdir = artifact.start()

    setting = ArithmeticSetting(cfg.setting)
    problems = setting.training_problems(which, cfg.seed)
    rows = pack(setting.encode_documents([p.text for p in problems]), cfg.model.context)
    train_cfg = cfg.pretrain.train
    batches = PackedBatches(rows, train_cfg.batch_size, seed=cfg.seed)
    total_steps = math.ceil(batches.batches_per_epoch * train_cfg.epochs / train_cfg.grad_accum)
    if train_cfg.max_steps:
        total_steps = min(total_steps, train_cfg.max_steps)

    tokenizer = setting.tokenizer
    model = build_model(cfg.model, seed=cfg.seed, pad_id=tokenizer.pad_token_id, eos_id=tokenizer.eos_token_id,
                        tokenizer_size=len(tokenizer))
    console.print(f"[bold]{which}[/]: {len(problems):,} documents -> {len(rows):,} sequences of "
                  f"{cfg.model.context} tokens; {total_steps:,} steps; {count_parameters(model):,} parameters")
    result = train(model, OBJECTIVES["lm"](), batches, train_cfg, total_steps, workdir,
                   evaluate=setting.evaluate, progress=progress, description=f"pretrain {which}",
                   run_key=artifact.key)

    save_model(model, workdir / "model", tokenizer)
    (workdir / "config.yaml").write_text(dump_yaml(cfg))
    meta = {
        "kind": "pretrain",
        "which": which,
        "seed": cfg.seed,
        "steps": result.steps,
        "tokens": result.tokens,
        "labelled_tokens": 0,  # pretraining reads unlabelled text; only unlearning reads labels
        "flops": result.flops,
        "flops_total": sum(result.flops.values()),
        "flops_per_token": train_flops_per_token(model, cfg.model.context),
        "parameters": count_parameters(model),
        "matmul_parameters": matmul_parameters(model),
        "wall_time_s": round(result.wall_time_s, 2),
        "final_metrics": result.final_metrics,
        "data": {
            "documents": len(problems),
            "documents_per_component": dict(sorted(Counter(p.component for p in problems).items())),
            "sequences": len(rows),
            "eval_items_seen_in_training": overlap_with_training(problems, setting.eval_problems),
            "eval_items_per_cell": cfg.setting.eval_per_cell,
        },
    }
    path = artifact.finish(meta)
    console.print(f"[green]{which}[/]: done in {result.wall_time_s:.0f}s -> {path}")
    return path
