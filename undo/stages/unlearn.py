"""Unlearning: one run per sweep point (method x LR x knob combination) on the pretrained base model. Every step reads
one forget batch and one retain batch from a labelled stream of their own; constant LR, AdamW without weight decay,
gradient clipping. Choosing a teacher among the runs is `undo.stages.selection`."""

from __future__ import annotations

import copy
import inspect
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from undo.config import ExperimentConfig, TrainConfig, UnlearnConfig
from undo.core.artifacts import Artifact, is_model_artifact
from undo.core.data import PairedBatches
from undo.training.engine import Evaluate, train
from undo.schema.errors import UserError
from undo.core.models import load_model, save_model
from undo.objectives import OBJECTIVES, Objective, check_knobs
from undo.objectives.sam import SAM
from undo.schema.results import UnlearnResult
from undo.stages.base import (
    COMPUTE_OPTIONS, Stage, StageJob, data_identity, defaulted, for_training, run_stage)
from undo.stages.evaluation import evaluation_key, write_evaluation
from undo.stages.labels import RoundData, forget_data_identity, unlearning_data
from undo.stages.pretrain import pretrain_key


@dataclass(frozen=True)
class SweepPoint:
    label: str  # method family, e.g. "rmu" or "rmu+sam"
    method: str
    lr: float
    knobs: tuple[tuple[str, Any], ...]
    sam_rho: float | None

    @property
    def description(self) -> str:
        knobs = " ".join(f"{k}={v}" for k, v in self.knobs)
        return f"{self.label} lr={self.lr:g}" + (f" {knobs}" if knobs else "")


def sweep_points(cfg: ExperimentConfig) -> list[SweepPoint]:
    """Every learning rate x every combination of list-valued knobs, for each configured method."""
    points = []
    for sweep in cfg.unlearn.methods:
        names = sorted(sweep.knobs)
        grids = [v if isinstance(v, list) else [v] for v in (sweep.knobs[n] for n in names)]
        for lr in sweep.lrs:
            for combo in itertools.product(*grids):
                points.append(SweepPoint(sweep.label, sweep.method, lr, tuple(zip(names, combo)), sweep.sam_rho))
    return points


def build_unlearning_objective(point: SweepPoint, reference: torch.nn.Module | None, seed: int) -> Objective:
    cls = OBJECTIVES[point.method]
    kwargs = dict(point.knobs)
    try:
        check_knobs(point.method, kwargs)
        if cls.wants_reference(kwargs):
            kwargs["reference"] = reference
        if "seed" in inspect.signature(cls.__init__).parameters:
            kwargs["seed"] = seed
        objective = cls(**kwargs)
    except (TypeError, ValueError) as err:  # a knob of the wrong type or value
        raise UserError(f"unlearn: method {point.method!r} with knobs {dict(point.knobs)}: {err}") from None
    return SAM(objective, point.sam_rho) if point.sam_rho else objective


@dataclass(frozen=True)
class Unlearn(Stage):
    """One unlearning run from the `base` input: constant LR, AdamW without weight decay, clipping."""

    point: SweepPoint
    round_data: RoundData | None = None  # a round of `study.rounds`: its forget data replaces the setting's
    kind = "unlearn"

    def config_slice(self, cfg: ExperimentConfig) -> dict[str, Any]:
        p = self.point
        # Evaluation cadence and the selection rule change what is logged and chosen, never the weights.
        # How the base model is loaded (dtype, attention kernel) changes every number of the run.
        return {"seed": cfg.seed, "data": data_identity(cfg), "context": cfg.model.context,
                **({"load": cfg.model.load_identity()} if cfg.model.load_identity() else {}),
                "method": p.method, "lr": p.lr, "knobs": p.knobs, "sam_rho": p.sam_rho,
                "unlearn": cfg.unlearn.model_dump(mode="json", exclude={"methods", "selection", "eval_every",
                                                                        "forget_data", "start",
                                                                        *defaulted(cfg.unlearn, COMPUTE_OPTIONS)}),
                **forget_data_identity(cfg, self.round_data)}

    def artifact_name(self, inputs: dict[str, Path | None], key: str) -> str:
        round_part = f"round{self.round_data.number}_" if self.round_data is not None else ""
        return f"unlearn_{round_part}{self.point.label.replace('+', '_')}_lr{self.point.lr:g}_{key[:8]}"

    def run(self, job: StageJob) -> UnlearnResult:
        cfg, setting = job.cfg, job.setting()
        _, batches = unlearning_data(cfg, setting, self.round_data)
        model = for_training(load_model(job.inputs["base"] / "model", cfg.model), cfg.model)
        result = unlearn_model(model, self.point, batches, cfg.unlearn, job.workdir, seed=cfg.seed,
                               evaluate=setting.evaluate, evaluation_key=evaluation_key(cfg.setting, cfg.model),
                               progress=job.progress, run_key=job.key)
        save_model(model, job.workdir / "model", setting.tokenizer)
        write_evaluation(job.workdir, cfg.setting, cfg.model, result.final_metrics)
        return result


def unlearn_model(model: torch.nn.Module, point: SweepPoint, batches: PairedBatches, u: UnlearnConfig,
                  workdir: Path, *, seed: int, evaluate: Evaluate | None = None, evaluation_key: str | None = None,
                  progress: bool = True, run_key: str = "") -> UnlearnResult:
    """Unlearn `model` in place: `u.steps` steps of `point`'s method at `point.lr` on `batches` (one forget and one
    retain batch per step), constant LR, AdamW without weight decay, clipping; evaluated with `evaluate` at step 0
    and every `u.eval_every` steps. `workdir` holds the log and the resumable checkpoint. The training core that
    the stage (`Unlearn.run`) and the Python API (`undo.session.unlearn`) share; saving is the caller's."""
    # The frozen reference is held once, in the model's dtype, and only for methods that read it.
    needs_reference = OBJECTIVES[point.method].wants_reference(dict(point.knobs))
    reference = copy.deepcopy(model).eval().requires_grad_(False) if needs_reference else None
    objective = build_unlearning_objective(point, reference, seed)
    train_cfg = TrainConfig(batch_size=u.batch_size, grad_accum=u.grad_accum, mixed_precision=u.mixed_precision,
                            compile=u.compile, lr=point.lr, schedule="constant", warmup_steps=0,
                            weight_decay=0.0, clip=u.clip, max_steps=u.steps, eval_every=u.eval_every,
                            checkpoint_every=max(u.eval_every, 50), log_every=10)
    result = train(model, objective, batches, train_cfg, u.steps, workdir, evaluate=evaluate,
                   eval_at_start=True, progress=progress, description=f"unlearn {point.description}",
                   run_key=run_key, config_keys=f"unlearn.methods[{point.label}].lrs")
    before = next(line for line in result.history if line["kind"] == "eval" and line["step"] == 0)
    return UnlearnResult(
        label=point.label, method=point.method, lr=point.lr, knobs=dict(point.knobs), sam_rho=point.sam_rho,
        seed=seed, steps=result.steps, tokens=result.tokens,
        labelled_tokens=result.tokens,  # every token it reads is forget- or retain-tagged
        flops=result.flops, wall_time_s=round(result.wall_time_s, 2), evaluation_key=evaluation_key,
        metrics_before={k: v for k, v in before.items() if k not in ("kind", "step", "tokens", "flops")},
        final_metrics=result.final_metrics)


def optional_base(cfg: ExperimentConfig) -> Path | None:
    """This config's pretrained base model if the run directory holds it complete, else None."""
    expected = Artifact(cfg.run_dir, "base", pretrain_key(cfg, "base"))
    return expected.path if expected.is_complete() else None


def check_start(start: Path) -> None:
    """One line, before any work, when `start` (unlearning's `--from`) is not a finished model artifact."""
    if not is_model_artifact(start):
        raise UserError(f"--from {start}: not a finished model artifact (an artifact folder with meta.json and "
                        "model/, e.g. a previous unlearning run); `undo eval`/`undo probe` take any model folder")


def default_base(cfg: ExperimentConfig) -> Path:
    """This config's pretrained base model, `<run_dir>/base` (a UserError if it is not there yet)."""
    expected = Artifact(cfg.run_dir, "base", pretrain_key(cfg, "base"))
    if not expected.is_complete():
        raise UserError(f"no pretrained base model at {expected.path}; run `undo pretrain` with this config first")
    return expected.path


def unlearn(cfg: ExperimentConfig, point: SweepPoint, base: Path | None = None, *,
            round_data: RoundData | None = None, progress: bool = True) -> Path:
    """One unlearning run from the base model (default: this config's `<run_dir>/base`; a round starts from the
    previous round's teacher), on the setting's forget side or `round_data`'s."""
    return run_stage(Unlearn(point, round_data), cfg, {"base": base if base is not None else default_base(cfg)},
                     progress=progress)
