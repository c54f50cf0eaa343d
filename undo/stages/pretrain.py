"""Pretraining: the base model on the full stream (retain and forget data), and the data-filtered oracle on the very
same stream with the forget documents removed (the "perfect data filtering" gold standard)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from undo.config import ExperimentConfig, TrainConfig
from undo.core.compute import matmul_parameters, train_flops_per_token
from undo.core.data import PackedBatches
from undo.core.engine import train
from undo.core.models import build_model, count_parameters, save_model
from undo.objectives import OBJECTIVES
from undo.settings import Setting
from undo.stages.base import Stage, StageJob, StageResult, console, run_stage, stage_key
from undo.stages.evaluation import evaluation_key, write_evaluation

Which = Literal["base", "oracle"]


def training_fields(train_cfg: TrainConfig) -> dict[str, Any]:
    """The training knobs that change the trained weights (not logging, evaluation or checkpoint cadence)."""
    return train_cfg.model_dump(mode="json", exclude={"eval_every", "checkpoint_every", "log_every"})


class PretrainResult(StageResult):
    kind: Literal["pretrain"] = "pretrain"
    which: Which
    flops_per_token: int
    parameters: int
    matmul_parameters: int
    data: dict[str, Any]


def pretraining_data(cfg: ExperimentConfig, setting: Setting, which: Which) -> tuple[list, PackedBatches]:
    """The documents of the base (or oracle) stream and their packed, shuffled batches."""
    documents = setting.pretraining_documents(which, cfg.seed)
    rows = setting.packed_rows(documents, cfg.model.context)
    return documents, PackedBatches(rows, cfg.pretrain.train.batch_size, seed=cfg.seed)


def pretraining_steps(cfg: ExperimentConfig, setting: Setting, which: Which, batches_per_epoch: int) -> int:
    """Optimizer steps for `epochs` passes over the packed stream. `max_steps` caps the *base* model; the oracle
    then trains on the same share of its own (filtered) stream, so it sees as many +/- examples as the base model
    does (in expectation), not more."""
    train_cfg = cfg.pretrain.train

    def full(batches: int) -> int:
        return math.ceil(batches * train_cfg.epochs / train_cfg.grad_accum)

    if not train_cfg.max_steps:
        return full(batches_per_epoch)
    if which == "base":
        return min(full(batches_per_epoch), train_cfg.max_steps)
    _, base_batches = pretraining_data(cfg, setting, "base")
    share = min(1.0, train_cfg.max_steps / full(base_batches.batches_per_epoch))
    return max(1, round(full(batches_per_epoch) * share))


@dataclass(frozen=True)
class Pretrain(Stage):
    """Pretrain the base model or the oracle into `<run_dir>/<which>/`."""

    which: Which
    kind = "pretrain"

    def config_slice(self, cfg: ExperimentConfig) -> dict[str, Any]:
        # Not the evaluation set or cadence: they change what is measured, never the weights.
        return {"which": self.which, "seed": cfg.seed, "data": cfg.setting.data_identity(),
                "model": cfg.model.model_dump(mode="json"), "train": training_fields(cfg.pretrain.train)}

    def artifact_name(self, inputs: dict[str, Path | None], key: str) -> str:
        return self.which

    def run(self, job: StageJob) -> PretrainResult:
        cfg, setting = job.cfg, job.setting()
        documents, batches = pretraining_data(cfg, setting, self.which)
        total_steps = pretraining_steps(cfg, setting, self.which, batches.batches_per_epoch)
        tokenizer = setting.tokenizer
        model = build_model(cfg.model, seed=cfg.seed, pad_id=tokenizer.pad_token_id, eos_id=tokenizer.eos_token_id,
                            tokenizer_size=len(tokenizer))
        console.print(f"[bold]{self.which}[/]: {len(documents):,} documents -> {len(batches.rows):,} sequences of "
                      f"{cfg.model.context} tokens; {total_steps:,} steps; {count_parameters(model):,} parameters")
        result = train(model, OBJECTIVES["lm"](), batches, cfg.pretrain.train, total_steps, job.workdir,
                       evaluate=setting.evaluate, progress=job.progress, description=f"pretrain {self.which}",
                       run_key=job.key)
        save_model(model, job.workdir / "model", tokenizer)
        write_evaluation(job.workdir, cfg.setting, result.final_metrics)  # the final evaluation is the last eval
        return PretrainResult(
            which=self.which, seed=cfg.seed, steps=result.steps, tokens=result.tokens,
            labelled_tokens=0,  # pretraining reads unlabelled text; only unlearning reads labels
            flops=result.flops, flops_per_token=train_flops_per_token(model, cfg.model.context),
            parameters=count_parameters(model), matmul_parameters=matmul_parameters(model),
            wall_time_s=round(result.wall_time_s, 2), evaluation_key=evaluation_key(cfg.setting),
            final_metrics=result.final_metrics,
            data={**setting.data_summary(documents), "sequences": len(batches.rows)})


def pretrain(cfg: ExperimentConfig, which: Which, *, progress: bool = True) -> Path:
    """Pretrain the base model or the oracle into `<run_dir>/<which>/`; a complete artifact is reused."""
    return run_stage(Pretrain(which), cfg, progress=progress)


def pretrain_key(cfg: ExperimentConfig, which: Which) -> str:
    return stage_key(Pretrain(which), cfg, {})
