"""Pretraining: the base model on the full stream (retain and forget data), and the data-filtered oracle on the very
same stream with the forget documents removed (the "perfect data filtering" gold standard). Under the paper's
equal-compute budget (`pretrain.oracle_budget: same_compute`) the removed documents are replaced by more
retain-domain documents and the oracle trains exactly the base model's steps and tokens.

Imperfect filters (`pretrain.filter_recalls`): an oracle whose filter has recall r removes each forget document of
the base stream with probability r (independent seeded draws) and keeps every retain document, under the same
budget as the oracle; it lands in `<run_dir>/oracle_recall<r>/`."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from undo.config import ExperimentConfig, TrainConfig
from undo.core.compute import matmul_parameters, train_flops_per_token
from undo.core.data import PackedBatches, derive_seed
from undo.schema.errors import UserError
from undo.training.engine import train
from undo.core.checkpoints import fingerprint
from undo.core.timing import phase
from undo.core.models import (
    build_model, check_vocabulary, count_parameters, fresh_model, load_pretrained, pretrained_config, save_model,
)
from undo.objectives import OBJECTIVES
from undo.schema.results import FilterRecord, PretrainResult
from undo.settings import Setting
from undo.stages.base import (
    TRAIN_OPTIONS_ADDED, Stage, StageJob, console, data_identity, defaulted, for_training, model_identity,
    run_stage, stage_key,
)
from undo.stages.evaluation import evaluation_key, write_evaluation
from undo.stages.filter import load_classifier

Which = Literal["base", "oracle"]


def training_fields(train_cfg: TrainConfig) -> dict[str, Any]:
    """The training knobs that change the trained weights (not logging, evaluation or checkpoint cadence)."""
    return train_cfg.model_dump(mode="json", exclude={"eval_every", "eval_steps", "checkpoint_every", "log_every",
                                                      *defaulted(train_cfg, TRAIN_OPTIONS_ADDED)})


def equal_compute(cfg: ExperimentConfig, which: Which) -> bool:
    return which == "oracle" and cfg.pretrain.oracle_budget == "same_compute"


def imperfect_filter(setting: Setting, documents: list, recall: float, seed: int) -> tuple[list, FilterRecord]:
    """The stream with each forget document removed with probability `recall`, every retain document kept, in the
    stream's order. The draws depend on the seed and the recall only, one per forget document in stream order."""
    forget = [setting.is_forget(document) for document in documents]
    draws = iter(np.random.default_rng(derive_seed(seed, "imperfect-filter", repr(recall))).random(sum(forget)))
    removed = [is_forget and next(draws) < recall for is_forget in forget]
    kept = [document for document, gone in zip(documents, removed) if not gone]
    return kept, FilterRecord(recall=recall, forget_documents=sum(forget), removed=sum(removed))


def classifier_filter(setting: Setting, documents: list, classifier) -> tuple[list, FilterRecord, int]:
    """The stream without the documents `classifier` calls forget-domain, what it removed, and its FLOPs."""
    predicted, flops = classifier.predict([d.text for d in documents])
    forget = np.array([setting.is_forget(d) for d in documents], dtype=bool)
    kept = [d for d, gone in zip(documents, predicted) if not gone]
    return kept, FilterRecord(method="classifier", recall=None, forget_documents=int(forget.sum()),
                              removed=int(np.sum(predicted & forget)), retain_documents=int((~forget).sum()),
                              retain_removed=int(np.sum(predicted & ~forget))), flops


@dataclass
class PretrainingData:
    documents: list
    batches: PackedBatches  # packed and shuffled
    filtering: FilterRecord | None = None  # what a data filter removed from the base stream
    filter_flops: int = 0  # a classifier's: classifying the base stream and the replacement documents


def pretraining_data(cfg: ExperimentConfig, setting: Setting, which: Which, recall: float | None = None,
                     classifier=None) -> PretrainingData:
    """The documents of the base (or oracle) stream and their batches; with `recall`, the oracle of that imperfect
    filter; with `classifier` (a `undo.stages.filter.DocumentClassifier`), the oracle of what it keeps (replacement
    documents pass through it too, as any data would). An equal-compute oracle's stream is the filtered one plus
    replacement retain documents, cut to exactly the base stream's rows."""
    filtering, filter_flops = None, 0
    if classifier is not None:
        documents, filtering, filter_flops = classifier_filter(setting, setting.pretraining_documents("base", cfg.seed),
                                                               classifier)
    elif recall is None:
        documents = setting.pretraining_documents(which, cfg.seed)
    else:
        documents, filtering = imperfect_filter(setting, setting.pretraining_documents("base", cfg.seed), recall,
                                                cfg.seed)
    rows = setting.packed_rows(documents, cfg.model.context)
    if equal_compute(cfg, which):
        base = setting.pretraining_documents("base", cfg.seed)
        base_rows, removed = len(setting.packed_rows(base, cfg.model.context)), len(base) - len(documents)
        wanted = max(removed, 1)
        while True:  # a retain document can be shorter than the forget one it replaces: draw more until it fills
            replacements = setting.replacement_documents(wanted, cfg.seed)
            if classifier is not None:
                replacements, _, flops = classifier_filter(setting, replacements, classifier)
                filter_flops += flops
            rows = setting.packed_rows(documents + replacements, cfg.model.context)
            if len(rows) >= base_rows:
                break
            wanted *= 2
        documents, rows = documents + replacements, rows[:base_rows]
    return PretrainingData(documents, PackedBatches(rows, cfg.pretrain.train.batch_size, seed=cfg.seed), filtering,
                           filter_flops)


def pretraining_steps(cfg: ExperimentConfig, setting: Setting, which: Which, batches_per_epoch: int) -> int:
    """Optimizer steps for `epochs` passes over the packed stream. `max_steps` caps the *base* model; an
    equal-compute oracle trains the base model's steps (its stream has the base's rows); an equal-examples oracle
    trains on the same share of its own (filtered) stream, so it sees as many retain examples as the base model
    does (in expectation), not more."""
    train_cfg = cfg.pretrain.train

    def full(batches: int) -> int:
        return math.ceil(batches * train_cfg.epochs / train_cfg.grad_accum)

    if not train_cfg.max_steps:
        return full(batches_per_epoch)
    if which == "base" or equal_compute(cfg, which):
        return min(full(batches_per_epoch), train_cfg.max_steps)
    base_batches = pretraining_data(cfg, setting, "base").batches
    share = min(1.0, train_cfg.max_steps / full(base_batches.batches_per_epoch))
    return max(1, round(full(batches_per_epoch) * share))


@dataclass(frozen=True)
class Pretrain(Stage):
    """The base model or the oracle in `<run_dir>/<which>/`: pretrained here on its stream, or loaded from the
    checkpoint the config names (`model.pretrained` for the base, `oracle.pretrained` for the oracle)."""

    which: Which
    recall: float | None = None  # an oracle of an imperfect filter with this recall (None: the perfect one)
    classified: bool = False  # an oracle of what the `filter` input (a trained classifier) keeps
    kind = "pretrain"

    def checkpoint(self, cfg: ExperimentConfig) -> tuple[str, str | None] | None:
        """(source, revision) when this model is loaded rather than trained (never an imperfect filter's oracle)."""
        if self.which == "base" and cfg.model.pretrained is not None:
            return cfg.model.pretrained, cfg.model.revision
        if self.which == "oracle" and self.perfect and cfg.oracle.pretrained is not None:
            return cfg.oracle.pretrained, cfg.oracle.revision
        return None

    def config_slice(self, cfg: ExperimentConfig) -> dict[str, Any]:
        # Not the evaluation set or cadence: they change what is measured, never the weights.
        checkpoint = self.checkpoint(cfg)
        if checkpoint is not None:
            return {"which": self.which, "loaded": fingerprint(*checkpoint), "model": model_identity(cfg.model)}
        budget = {"oracle_budget": cfg.pretrain.oracle_budget} if self.which == "oracle" else {}
        # The perfect oracle's key stays as it was; the classifier itself is the `filter` input (by its key).
        recall = {"filter_recall": self.recall} if self.recall is not None else {}
        classified = {"filter": "classifier"} if self.classified else {}
        return {"which": self.which, "seed": cfg.seed, "data": data_identity(cfg), "model": model_identity(cfg.model),
                "train": training_fields(cfg.pretrain.train), **budget, **recall, **classified}

    @property
    def perfect(self) -> bool:
        return self.recall is None and not self.classified

    def artifact_name(self, inputs: dict[str, Path | None], key: str) -> str:
        if self.classified:
            return f"{self.which}_classifier_{key[:8]}"
        return self.which if self.recall is None else f"{self.which}_recall{self.recall:g}"

    @property
    def label(self) -> str:
        if self.classified:
            return f"{self.which} (classifier filter)"
        return self.which if self.recall is None else f"{self.which} (filter recall {self.recall:g})"

    def check(self, cfg: ExperimentConfig, inputs: dict[str, Path | None]) -> None:
        if not self.perfect and self.which != "oracle":
            raise UserError("a data filter applies to the oracle only")
        if self.recall is not None and not 0.0 <= self.recall < 1.0:
            raise UserError(f"filter recall {self.recall} is out of range: it must be in [0, 1) (1 is the oracle)")
        if self.classified and self.recall is not None:
            raise UserError("an oracle is filtered by a recall or by a classifier, not both")
        trained = inputs.get("filter")
        if self.classified and (trained is None or not (trained / "meta.json").is_file()):
            raise UserError(f"no trained classifier filter at {trained}: expected a filter_classifier_* artifact")

    def run(self, job: StageJob) -> PretrainResult:
        checkpoint = self.checkpoint(job.cfg)
        return self.load(job, *checkpoint) if checkpoint is not None else self.train(job)

    def load(self, job: StageJob, source: str, revision: str | None) -> PretrainResult:
        """Your own model: loaded, checked against the tokenizer, evaluated and saved as this artifact's model/."""
        cfg, setting = job.cfg, job.setting()
        role = "model.pretrained" if self.which == "base" else "oracle.pretrained"
        model = load_pretrained(source, cfg.model, revision=revision, role=role)
        check_vocabulary(model, setting.tokenizer, role)
        console.print(f"[bold]{self.which}[/]: loaded {source} ({type(model).__name__}, "
                      f"{count_parameters(model):,} parameters)")
        with phase("evaluation"):
            metrics = setting.evaluate(model)
        save_model(model, job.workdir / "model", setting.tokenizer)
        write_evaluation(job.workdir, cfg.setting, cfg.model, metrics)
        return PretrainResult(
            which=self.which, source=source, seed=cfg.seed,
            flops_per_token=train_flops_per_token(model, cfg.model.context), parameters=count_parameters(model),
            matmul_parameters=matmul_parameters(model),
            evaluation_key=evaluation_key(cfg.setting, cfg.model), final_metrics=metrics, data={})

    def fresh(self, cfg: ExperimentConfig, setting: Setting) -> torch.nn.Module:
        """The untrained model: a tiny Llama, or (an oracle for a checkpoint) the checkpoint's architecture."""
        if cfg.model.pretrained is not None:
            return fresh_model(pretrained_config(cfg.model), seed=cfg.seed, dtype=cfg.model.dtype)
        tokenizer = setting.tokenizer
        return build_model(cfg.model, seed=cfg.seed, pad_id=tokenizer.pad_token_id, eos_id=tokenizer.eos_token_id,
                           tokenizer_size=len(tokenizer))

    def train(self, job: StageJob) -> PretrainResult:
        cfg, setting = job.cfg, job.setting()
        classifier = load_classifier(job.inputs["filter"]) if self.classified else None
        data = pretraining_data(cfg, setting, self.which, self.recall, classifier)
        documents, batches, filtered = data.documents, data.batches, data.filtering
        total_steps = pretraining_steps(cfg, setting, self.which, batches.batches_per_epoch)
        model = for_training(self.fresh(cfg, setting), cfg.model)
        classify_flops = {"filter": data.filter_flops} if classifier is not None else {}
        console.print(f"[bold]{self.label}[/]: {len(documents):,} documents -> {len(batches.rows):,} sequences of "
                      f"{cfg.model.context} tokens; {total_steps:,} steps; {count_parameters(model):,} parameters"
                      + (f"; the filter removed {filtered.removed:,} of {filtered.forget_documents:,} forget "
                         "documents" if filtered else ""))
        result = train(model, OBJECTIVES["lm"](), batches, cfg.pretrain.train, total_steps, job.workdir,
                       evaluate=setting.evaluate, progress=job.progress, description=f"pretrain {self.label}",
                       run_key=job.key, config_keys="pretrain.train")
        save_model(model, job.workdir / "model", setting.tokenizer)
        write_evaluation(job.workdir, cfg.setting, cfg.model, result.final_metrics)  # the final evaluation is the last eval
        return PretrainResult(
            which=self.which, seed=cfg.seed, steps=result.steps, tokens=result.tokens,
            oracle_budget=cfg.pretrain.oracle_budget if self.which == "oracle" else None,
            labelled_tokens=0,  # pretraining reads unlabelled text; only unlearning reads labels
            flops={**result.flops, **classify_flops}, flops_per_token=train_flops_per_token(model, cfg.model.context),
            parameters=count_parameters(model), matmul_parameters=matmul_parameters(model),
            wall_time_s=round(result.wall_time_s, 2), evaluation_key=evaluation_key(cfg.setting, cfg.model),
            final_metrics=result.final_metrics, filtering=filtered,
            data={**setting.data_summary(documents), "sequences": len(batches.rows)})


def pretrain(cfg: ExperimentConfig, which: Which, *, recall: float | None = None, classifier: Path | None = None,
             progress: bool = True) -> Path:
    """Pretrain the base model or the oracle into `<run_dir>/<which>/` (with `recall`: the oracle of that imperfect
    filter, into `<run_dir>/oracle_recall<recall>/`; with `classifier`, a trained filter artifact: the oracle of
    what it keeps); a complete artifact is reused."""
    stage = Pretrain(which, recall, classified=classifier is not None)
    return run_stage(stage, cfg, {"filter": Path(classifier)} if classifier is not None else {}, progress=progress)


def pretrain_key(cfg: ExperimentConfig, which: Which, recall: float | None = None) -> str:
    return stage_key(Pretrain(which, recall), cfg, {})
