"""Distillation (Unlearn-and-Distill, UNDO, oracle matching): a frozen teacher's full next-token distributions are
matched by a student on a fresh draw of the unlabelled pretraining mixture (forget documents included: no labels are
read), until the student's retain score comes within `distill.stop_tolerance` of the teacher's.

The stop is measured, not sampled: the rule is probed on a geometric grid of steps (`probe_steps`), each probe at
most `distill.stop_resolution` x its step after the previous one, so the reported stop lies within that share of
the first step that qualified (within `stop_probe_every` steps early on). A probe evaluates the stop metrics alone;
the student is fully evaluated once, at the end."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from undo.config import DistillConfig, ExperimentConfig
from undo.core.compute import matmul_parameters, train_flops_per_token
from undo.core.artifacts import model_folder
from undo.core.data import PackedBatches, derive_seed
from undo.training.engine import Evaluate, train
from undo.schema.errors import UserError
from undo.core.models import build_model, check_vocabulary, count_parameters, fresh_model, load_model, save_model
from undo.core.noise import shrink_and_perturb
from undo.core.timing import phase
from undo.objectives import OBJECTIVES
from undo.schema.results import DistillInit, DistillResult, StopRuleRecord
from undo.schema.score import ACCURACY, Score
from undo.settings import Setting
from undo.stages.base import (
    TRAIN_OPTIONS_ADDED, Stage, StageJob, StageResult, data_identity, defaulted, for_training, pinned, run_stage)
from undo.stages.evaluation import evaluation_key, write_evaluation


def stop_metrics(init: DistillInit) -> list[str]:
    """What the stop rule compares with the teacher. A fresh or noised student starts below the teacher on retain,
    so reaching the teacher's retain score is the paper's rule. A student started from a trained checkpoint
    (oracle matching: the base model toward the oracle) may already be there at step 0, so it must also come down
    to the teacher's forget score: both within the tolerance."""
    return ["retain", "forget"] if init == "model" else ["retain"]


def probe_steps(max_steps: int, resolution: float, min_interval: int) -> list[int]:
    """The steps the stop rule is asked at: each `max(min_interval, floor(resolution x previous))` after the last,
    and `max_steps`. A stop reported at probe p (previous probe q) means the first qualifying step t lies in
    (q, p], so p - t < p - q <= resolution x q < resolution x t once q >= min_interval / resolution."""
    steps, step = [], 0
    while step < max_steps:
        step = min(max_steps, step + max(min_interval, math.floor(resolution * step)))
        steps.append(step)
    return steps


def distill_data(cfg: ExperimentConfig, setting: Setting) -> tuple[list, PackedBatches]:
    """A fresh draw of the unlabelled pretraining mixture (every operation) and its shuffled batches."""
    seed = derive_seed(cfg.seed, "distill")
    documents = setting.mixture_documents(cfg.distill.examples, seed)
    rows = setting.packed_rows(documents, cfg.model.context)
    return documents, PackedBatches(rows, cfg.distill.train.batch_size, seed=seed)


@dataclass(frozen=True)
class Distill(Stage):
    """Distil the `teacher` input into a student: a fresh init (`random`), a shrink-and-perturbed copy of the teacher
    (`noised`, UNDO, with `alpha`), or the `start` input's weights (`model`, oracle matching)."""

    init: DistillInit
    alpha: float | None = None
    kind = "distill"

    def config_slice(self, cfg: ExperimentConfig) -> dict[str, Any]:
        d = cfg.distill
        noised = self.init == "noised"
        # The evaluation set counts: the stop rule reads it, so it decides where training ends.
        return {"seed": cfg.seed, "init": self.init, "alpha": self.alpha if noised else None,
                "beta": d.beta if noised else None,
                "student_model": pinned((d.student_model or cfg.model).model_dump(mode="json"), cfg.model,
                                        ("gradient_checkpointing", "pretraining_tokens", "trust_remote_code"))
                if self.init == "random" else None,
                "data": data_identity(cfg), "evaluation": cfg.setting.evaluation_identity(),
                "context": cfg.model.context,
                # Evaluation cadence: the stop rule probes on its own grid, and without one evaluations are only logged.
                "train": pinned(d.train.model_dump(mode="json", exclude={"checkpoint_every", "log_every",
                                                                         *defaulted(d.train, TRAIN_OPTIONS_ADDED)}),
                                d.train, ("eval_every", "eval_steps")),
                "stop_tolerance": d.stop_tolerance, "stop_on": stop_metrics(self.init), "temperature": d.temperature,
                "stop_probes": [d.stop_resolution, d.stop_probe_every] if d.stop_tolerance is not None else None,
                "examples": d.examples,
                # How the teacher (and a noised or started student) is loaded: every init reads the teacher.
                **({"load": cfg.model.load_identity()} if cfg.model.load_identity() else {})}

    def artifact_name(self, inputs: dict[str, Path | None], key: str) -> str:
        return f"distill_{self.init}{self._alpha_part}_{inputs['teacher'].resolve().name}_{key[:8]}"

    @property
    def _alpha_part(self) -> str:
        return f"_a{self.alpha:g}" if self.alpha is not None else ""

    def check(self, cfg: ExperimentConfig, inputs: dict[str, Path | None]) -> None:
        check_request(self.init, self.alpha, inputs.get("teacher"), inputs.get("start"))

    def student(self, job: StageJob, setting: Setting, teacher: torch.nn.Module) -> torch.nn.Module:
        """The student before distillation: a fresh tiny Llama (or `distill.student_model`) for a model built here, a
        fresh init of the teacher's own architecture for a checkpoint's; the noised teacher; or the start model."""
        cfg = job.cfg
        if self.init == "random":
            if cfg.model.pretrained is not None and cfg.distill.student_model is None:
                return fresh_model(teacher.config, seed=cfg.seed, dtype=cfg.model.dtype)
            tokenizer = setting.tokenizer
            return build_model(cfg.distill.student_model or cfg.model, seed=cfg.seed, pad_id=tokenizer.pad_token_id,
                               eos_id=tokenizer.eos_token_id, tokenizer_size=len(tokenizer))
        if self.init == "noised":
            return shrink_and_perturb(load_model(job.inputs["teacher"] / "model", cfg.model), self.alpha,
                                      cfg.distill.beta, seed=derive_seed(cfg.seed, "noise"))
        return load_model(job.inputs["start"] / "model", cfg.model)

    def run(self, job: StageJob) -> DistillResult:
        cfg, setting = job.cfg, job.setting()
        teacher_dir = job.inputs["teacher"]
        documents, batches = distill_data(cfg, setting)
        teacher = load_model(teacher_dir / "model", cfg.model).eval().requires_grad_(False)
        check_vocabulary(teacher, setting.tokenizer, f"the teacher {teacher_dir}")
        student = for_training(self.student(job, setting, teacher), cfg.model)
        result = distill_model(teacher, student, batches, cfg.distill, job.workdir, init=self.init, alpha=self.alpha,
                               seed=cfg.seed, evaluate=setting.evaluate, probe=setting.evaluate_sides,
                               score=setting.score, documents=len(documents),
                               evaluation_key=evaluation_key(cfg.setting, cfg.model), progress=job.progress,
                               run_key=job.key)
        save_model(student, job.workdir / "model", setting.tokenizer)
        write_evaluation(job.workdir, cfg.setting, cfg.model, result.final_metrics)
        return result

    def describe(self, result: StageResult) -> str:
        return f"{'stopped' if result.stopped_early else 'capped'} at step {result.steps}"


Probe = Callable[[torch.nn.Module, tuple[str, ...]], dict[str, float]]  # (model, sides) -> at least those scores


def distill_model(teacher: torch.nn.Module, student: torch.nn.Module, batches: PackedBatches, d: DistillConfig,
                  workdir: Path, *, init: DistillInit, alpha: float | None, seed: int,
                  evaluate: Evaluate | None = None, probe: Probe | None = None, score: Score = ACCURACY,
                  documents: int = 0, evaluation_key: str | None = None, progress: bool = True,
                  run_key: str = "") -> DistillResult:
    """Train `student` in place to match the frozen `teacher`'s next-token distributions on `batches` (forward KL
    at `d.temperature`) for up to `d.train.max_steps` steps. With `d.stop_tolerance`, the stop rule: the student's
    scores are probed (`probe`, default `evaluate`) on the geometric grid of `probe_steps`, and the run stops at the
    first probe within the tolerance of the teacher's (read by `score`). `init` and `alpha` are recorded (the
    student is made by the caller). The training core that the stage (`Distill.run`) and the Python API
    (`undo.session.distill`) share; saving is the caller's."""
    ruled = d.stop_tolerance is not None  # null: no stop rule, the step cap ends the run
    if ruled and evaluate is None:
        raise UserError("distill: the stop rule (a stop tolerance) needs an evaluation to compare student and teacher")
    with phase("evaluation"):
        teacher_metrics = evaluate(teacher) if evaluate is not None else {}
    threshold = score.at_least_near(teacher_metrics["retain"], d.stop_tolerance) if ruled else None
    forget_ceiling = score.at_most_near(teacher_metrics["forget"], d.stop_tolerance) if ruled else None
    match_forget = "forget" in stop_metrics(init)

    def stop_rule(step: int, metrics: dict[str, float]) -> bool:
        return metrics["retain"] >= threshold and (not match_forget or metrics["forget"] <= forget_ceiling)

    train_cfg, during = d.train, evaluate
    if ruled:  # probes of the stop metrics alone, on the geometric grid; one full evaluation at the end
        probes = probe_steps(d.train.max_steps, d.stop_resolution, d.stop_probe_every)
        train_cfg = d.train.model_copy(update={"eval_steps": probes})
        sides = tuple(stop_metrics(init))

        def during(model: torch.nn.Module) -> dict[str, float]:
            return probe(model, sides) if probe is not None else evaluate(model)

    alpha_part = f"_a{alpha:g}" if alpha is not None else ""
    result = train(student, OBJECTIVES["distill"](teacher, temperature=d.temperature), batches, train_cfg,
                   d.train.max_steps, workdir, evaluate=during, stop_rule=stop_rule if ruled else None,
                   eval_at_start=True, progress=progress, description=f"distill {init}{alpha_part}",
                   run_key=run_key, config_keys="distill.train")
    with phase("evaluation"):
        final_metrics = evaluate(student) if ruled else result.final_metrics
    probed = [line["step"] for line in result.history if line["kind"] == "eval"]
    previous = max((s for s in probed if s < result.steps), default=None) if result.stopped_early else None
    flops_total = sum(result.flops.values())
    context = batches.rows.shape[1]
    return DistillResult(
        init=init, alpha=alpha, beta=d.beta if init == "noised" else None, seed=seed,
        teacher_metrics=teacher_metrics, final_metrics=final_metrics, evaluation_key=evaluation_key,
        stop_rule=StopRuleRecord(tolerance=d.stop_tolerance, on=stop_metrics(init), threshold=threshold,
                                 forget_ceiling=forget_ceiling if match_forget else None,
                                 resolution=d.stop_resolution if ruled else None,
                                 probe_every=d.stop_probe_every if ruled else None, probes=len(probed),
                                 max_steps=d.train.max_steps),
        stopped_early=result.stopped_early, stop_step=result.steps if result.stopped_early else None,
        previous_probe=previous,
        steps=result.steps, tokens=result.tokens,
        labelled_tokens=0,  # distillation text is the unlabelled mixture
        flops=result.flops, flops_at_stop=flops_total if result.stopped_early else None,
        flops_per_token=train_flops_per_token(student, context),
        parameters=count_parameters(student), matmul_parameters=matmul_parameters(student),
        wall_time_s=round(result.wall_time_s, 2),
        data={"documents": documents, "sequences": len(batches.rows)})


def check_request(init: str, alpha: float | None, teacher: Path | None, start: Path | None) -> None:
    """One-line errors for a distillation asked for wrongly, before anything is made (the CLI calls it before it
    locks the run directory)."""
    if init not in ("random", "noised", "model"):
        raise UserError(f"--init takes random, noised or model, got {init!r}")
    if init == "noised":
        if alpha is None:
            raise UserError("distill: init 'noised' needs an alpha (the shrink-and-perturb strength)")
        if not 0.0 <= float(alpha) <= 1.0:
            raise UserError(f"distill: alpha = {alpha} is out of range: it must be in [0, 1]")
    if init == "model" and start is None:
        raise UserError("--init model needs --start ARTIFACT (the checkpoint the student starts from, e.g. the base "
                        "model for oracle matching)")
    if init != "model" and start is not None:
        raise UserError(f"--start only applies to --init model (this run is --init {init})")
    model_folder(teacher, "no teacher")
    if start is not None:
        model_folder(start, "no start model")


def distill(cfg: ExperimentConfig, teacher: Path, *, init: DistillInit, alpha: float | None = None,
            start: Path | None = None, progress: bool = True) -> Path:
    """Distil the model in `teacher/model/` into a student (see `Distill`) with forward KL on the pretraining
    mixture, evaluating every `distill.train.eval_every` steps from step 0 and stopping at the first evaluation
    where student retain >= teacher retain - `distill.stop_tolerance` (or at `max_steps`)."""
    check_request(init, alpha, teacher, start)
    inputs = {"teacher": Path(teacher), "start": Path(start) if init == "model" else None}
    stage = Distill(init, float(alpha) if init == "noised" else None)
    return run_stage(stage, cfg, inputs, progress=progress)
