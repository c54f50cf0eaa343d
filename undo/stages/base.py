"""The stage protocol and the one runner every stage goes through.

A stage is a pure function of the config slice it declares and of its input artifacts. It says
- `config_slice(cfg)`: everything it reads from the config that shapes what it makes (its setting's data identity;
  its evaluation identity when evaluations drive its result, e.g. a stop rule or attack curves);
- `artifact_name(...)`: the folder it writes, and `check(...)`: one-line errors on bad inputs before any work;
- `run(job)`: the work itself, writing `model/` (if it makes a model) into the job's work folder and returning a
  typed result (`StageResult` subclass) that becomes its meta.json.

`run_stage` owns the lifecycle the stages share: the key (a hash of the slice and the input artifacts' keys), reuse
of a complete artifact, the partial work folder that survives interruptions (the engine resumes from its
checkpoint there), config.yaml and meta.json, and the final rename. A stage never scans other artifacts: what it
records depends on its inputs only. Accounting across a lineage is computed where it is read (`undo.analysis`).
"""

from __future__ import annotations

import contextlib
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import BaseModel
from rich.console import Console

from undo.config import ExperimentConfig, ModelConfig, dump_yaml
from undo.core.artifacts import Artifact, content_record, is_dry_run, model_folder, stable_hash, verified_meta
from undo.analysis.cards import CARD, write_card
from undo.core import distributed, tracking
from undo.core.checkpoints import fingerprint
from undo.core.host import host_record
from undo.core.locks import artifact_lock, writable_run_dir
from undo.core.timing import STOPWATCH
from undo.schema.results import StageResult
from undo.settings import Setting
from undo.stages.evaluation import check_tokenizer, ensure_evaluation, setting_for, tokenizer_identity

console = Console(stderr=True, soft_wrap=True)  # paths stay whole in logs


@dataclass(frozen=True)
class Resources:
    """What a stage's task asks an executor for: CPU threads and accelerators (a hint; local executors share the
    CPU between their workers)."""

    cpus: int = 1
    gpus: float = 0.0


TRAINING = Resources(cpus=1, gpus=1.0)  # stages that train a model use the accelerator when there is one


@dataclass
class StageJob:
    """Everything a stage's `run` gets: the config, its inputs (role -> artifact folder), its key and work folder."""

    cfg: ExperimentConfig
    inputs: dict[str, Path | None]
    key: str
    workdir: Path
    progress: bool = True

    def setting(self, eval_items: int | None = None, split: str | None = None) -> Setting:
        return setting_for(self.cfg, eval_items, split=split)


class Stage(ABC):
    """One kind of stage; an instance carries the parameters that pick one artifact (e.g. which model, which LR)."""

    kind: ClassVar[str]
    makes_model: ClassVar[bool] = True
    resources: ClassVar[Resources] = TRAINING

    @abstractmethod
    def config_slice(self, cfg: ExperimentConfig) -> dict[str, Any]:
        """Everything this stage reads from the config that shapes its artifact (its key hashes exactly this)."""

    @abstractmethod
    def artifact_name(self, inputs: dict[str, Path | None], key: str) -> str:
        """The artifact's folder name in the run directory."""

    def check(self, cfg: ExperimentConfig, inputs: dict[str, Path | None]) -> None:
        """Raise a UserError for bad inputs, before any work starts."""
        for role, path in inputs.items():
            if path is not None:
                model_folder(path, f"no {role} model")

    @abstractmethod
    def run(self, job: StageJob) -> StageResult:
        """Do the work in `job.workdir` (write `model/` there if the stage makes a model) and describe it."""

    def describe(self, result: StageResult) -> str:
        return f"{self.kind} done in {result.wall_time_s:.0f}s"


def model_identity(model: ModelConfig) -> dict[str, Any]:
    """What of the model section shapes the weights: its shape fields, or the checkpoint (by its files' hash), the
    dtype and the attention kernel; not gradient checkpointing (the same numbers, recomputed) nor
    `pretraining_tokens` (read by the accounting only)."""
    fields = model.model_dump(mode="json", exclude={"gradient_checkpointing", "pretraining_tokens"})
    if model.pretrained is not None:  # by content: the same checkpoint moved elsewhere is the same model
        fields.pop("pretrained"), fields.pop("revision")
        fields["checkpoint"] = fingerprint(model.pretrained, model.revision)
    else:  # a tiny Llama built here runs no checkpoint's code: pinned, so that keys made before stay the same
        fields["trust_remote_code"] = False
    return fields


def pinned(fields: dict[str, Any], section: BaseModel, names: tuple[str, ...]) -> dict[str, Any]:
    """`fields` (a dump of `section`) with `names` set to their defaults: they cannot change what the stage makes
    (a cadence, a memory option), and pinning them, rather than dropping them, keeps the keys made before."""
    return {**fields, **{name: type(section).model_fields[name].get_default(call_default_factory=True)
                         for name in names if name in fields}}


# Options added after the keys were fixed: a key names them only when they are set (see `defaulted`).
COMPUTE_OPTIONS = ("grad_accum", "mixed_precision", "compile")  # of the unlearn and attack sections
TRAIN_OPTIONS_ADDED = ("compile",)  # of TrainConfig (pretrain.train, distill.train)


def defaulted(section: BaseModel, names: tuple[str, ...]) -> set[str]:
    """The fields among `names` left at their defaults: a key leaves them out, so an option added later does not
    change the keys of artifacts made before it (set, it counts)."""
    return {name for name in names if getattr(section, name) == type(section).model_fields[name].default}


def data_identity(cfg: ExperimentConfig) -> dict[str, Any]:
    """What shapes the token data of every stage: the setting's data fields and the tokenizer."""
    return {"setting": cfg.setting.data_identity(), "tokenizer": tokenizer_identity(cfg.model)}


def for_training(model: torch.nn.Module, cfg: ModelConfig) -> torch.nn.Module:
    """The model with the config's memory options on (gradient checkpointing)."""
    if cfg.gradient_checkpointing:
        enable = getattr(model, "activation_checkpointing_enable", None)  # transformers >= 5's name
        if enable is not None:
            enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    return model


def artifact_key(folder: Path) -> str:
    """An input model's identity: its stage key from meta.json (once its files are checked to be the ones it
    made), or, for a model made elsewhere, the hash of everything in its model/ folder (weights, config.json,
    tokenizer: the same weights under another config.json are another model)."""
    if (folder / "meta.json").is_file():
        return verified_meta(folder).key
    return stable_hash({name: entry["sha256"] for name, entry in content_record(folder / "model").items()})


def stage_key(stage: Stage, cfg: ExperimentConfig, input_keys: dict[str, str | None]) -> str:
    return stable_hash({"stage": stage.kind, "config": stage.config_slice(cfg), "inputs": input_keys})


def stage_tracking(cfg: ExperimentConfig, name: str, workdir: Path) -> tracking.Tracking | None:
    """Where the stage making artifact `name` (in `workdir`) shows its metrics live, if the config names a tracker."""
    t = cfg.tracking
    if t.backend is None:
        return None
    folder = Path(t.dir) if t.dir is not None else Path(cfg.run_dir) / "tracking"
    return tracking.Tracking(backend=t.backend, folder=folder, project=t.project, group=Path(cfg.run_dir).name,
                             artifact=name, partial=workdir)


def run_stage(stage: Stage, cfg: ExperimentConfig, inputs: dict[str, Path | None] | None = None, *,
              progress: bool = True) -> Path:
    """The stage's artifact folder: reused when complete, else made (resuming a partial one). A model-making stage's
    artifact also ends with its evaluation under the config's evaluation identity (see `undo.stages.evaluation`)."""
    inputs = {role: None if path is None else Path(path) for role, path in (inputs or {}).items()}
    stage.check(cfg, inputs)
    for path in inputs.values():
        if path is not None:
            check_tokenizer(path, setting_for(cfg))
    input_keys = {role: None if path is None else artifact_key(path) for role, path in inputs.items()}
    key = stage_key(stage, cfg, input_keys)
    artifact = Artifact(cfg.run_dir, stage.artifact_name(inputs, key), key)
    # Under several processes (torchrun) every one trains, the main one alone writes: see undo.core.distributed.
    main = distributed.is_main()
    if not is_dry_run() and main:
        writable_run_dir(Path(cfg.run_dir))
    # One writer per artifact: a second worker asked for it waits here, then finds it complete.
    writer = not is_dry_run() and main
    with artifact_lock(Path(cfg.run_dir), artifact.name) if writer else contextlib.nullcontext():
        if distributed.broadcast(main and artifact.is_complete()):
            if main:
                console.print(f"[green]{artifact.name}[/]: complete artifact found, not recomputed")
        else:
            workdir = artifact.start() if main else artifact.partial
            distributed.wait_for_main()
            started = time.perf_counter()
            STOPWATCH.reset()
            with distributed.strategy_for(cfg.distributed.strategy), tracking.tracking_for(
                    stage_tracking(cfg, artifact.name, workdir) if main else None):
                result = stage.run(StageJob(cfg, inputs, key, workdir, progress))
            elapsed = time.perf_counter() - started
            if not result.wall_time_s:
                result.wall_time_s = round(elapsed, 2)
            result.time_split = STOPWATCH.split(elapsed)
            result.host = host_record()
            result.inputs = input_keys
            result.flops_total = sum(result.flops.values())
            result.input_paths = {role: None if path is None else str(path) for role, path in inputs.items()}
            if main:
                (workdir / "config.yaml").write_text(dump_yaml(cfg))
                artifact.finish(result)
                console.print(f"[green]{artifact.name}[/]: {stage.describe(result)} -> {artifact.path}")
        if stage.makes_model and main:  # the split decisions read, and the one reports read
            ensure_evaluation(artifact.path, cfg, "decisions")
            reported = ensure_evaluation(artifact.path, cfg, "report")
            if not is_dry_run() and not (artifact.path / "model" / CARD).is_file():
                write_card(artifact.path, reported)  # what made the model, in its folder (`undo report` adds more)
    distributed.wait_for_main()  # the artifact is whole before any process goes on
    return artifact.path
