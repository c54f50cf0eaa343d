"""Evaluations of finished models, cached beside their weights and keyed by what they measure.

A complete artifact's weights never change; what decisions and reports read about them (the retain and forget
scores) is an *evaluation*: the setting's `evaluate(model)` under an evaluation identity (the setting's items, seeds
and files, `SettingConfig.evaluation_identity`). It is stored as `<artifact>/evaluations/<evaluation key>.json`, so
a study whose evaluation set changes re-measures every model it reads without retraining any, and never reads a
number measured on another evaluation set. Teacher selection and the report read evaluations, not the metrics a
stage happened to log while it trained: selection the validation split's (`decision_key`), the report the test
split's (`report_key`), so that no reported number is measured on the items it was chosen on.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Literal

from transformers import AutoTokenizer

from undo.config import ExperimentConfig, ModelConfig
from undo.core import distributed
from undo.core.artifacts import NotComputed, is_dry_run, model_or_artifact, stable_hash
from undo.core.checkpoints import fingerprint
from undo.schema.errors import UserError
from undo.schema.io import EvaluationRecord, evaluation_path, read_evaluation
from undo.core.models import load_model, load_tokenizer
from undo.settings import Setting, SettingConfig, build_setting
from undo.settings.corpus_store import tokenizer_fingerprint



Purpose = Literal["training", "decisions", "report"]


def section_for(cfg: ExperimentConfig, purpose: Purpose) -> SettingConfig:
    """The setting section behind an evaluation: as configured during training (validation split, possibly cut
    short), the full validation split for decisions, the full test split for the report."""
    if purpose == "decisions":
        return cfg.setting.for_decisions()
    return cfg.setting.for_report() if purpose == "report" else cfg.setting


def setting_for(cfg: ExperimentConfig, eval_items: int | None = None, *, purpose: Purpose = "training",
                split: str | None = None) -> Setting:
    """The config's setting for `purpose` (evaluating `eval_items` items per cell/side when given; on another
    `split` when given), built once per process, with the model's own tokenizer when the model comes from a
    checkpoint; derived files (a trained tokenizer) are cached in the run directory."""
    section = section_for(cfg, purpose)
    if split is not None:
        section = section.with_split(split)
    if eval_items is not None:
        section = section.with_eval_items(eval_items)
    return build_setting(section, Path(cfg.run_dir) / "cache", tokenizer=model_tokenizer(cfg.model),
                         tokenizer_identity=tokenizer_identity(cfg.model), context=cfg.model.context)


def tokenizer_identity(model: ModelConfig) -> str | None:
    """What identifies the tokenizer stages tokenize with: the checkpoint's (its files' hash), or None for the
    setting's own (which its data identity already determines)."""
    return None if model.pretrained is None else fingerprint(model.pretrained, model.revision)


def model_tokenizer(model: ModelConfig):
    """The checkpoint's tokenizer (loaded once per process), or None for a model built here."""
    if model.pretrained is None:
        return None
    return _tokenizer(model.pretrained, model.revision, model.trust_remote_code, tokenizer_identity(model))


@functools.lru_cache(maxsize=8)
def _tokenizer(source: str, revision: str | None, trust_remote_code: bool, identity: str):
    return load_tokenizer(source, ModelConfig(pretrained=source, revision=revision,
                                              trust_remote_code=trust_remote_code), revision=revision)


def evaluation_key(section: SettingConfig, model: ModelConfig) -> str:
    """The identity of an evaluation: what the setting measures (`section`) and how the model is loaded to measure
    it (`ModelConfig.load_identity`: the same weights in bfloat16 give other numbers)."""
    return stable_hash({**section.evaluation_identity(), "split": section.split, **model.load_identity()})


def write_evaluation(folder: Path, section: SettingConfig, model: ModelConfig, metrics: dict[str, float]) -> Path:
    """Record `metrics` as `folder`'s evaluation under `section`'s identity, the model loaded as `model` says
    (atomically: complete or absent); under several processes, by the main one."""
    key = evaluation_key(section, model)
    path = evaluation_path(folder, key)
    if not distributed.is_main():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{key}.{os.getpid()}.tmp")
    record = EvaluationRecord(evaluation_key=key, evaluation={**section.evaluation_identity(), **model.load_identity()},
                              split=section.split, metrics=metrics)
    tmp.write_text(record.model_dump_json(indent=2) + "\n")
    tmp.replace(path)
    return path


def report_key(cfg: ExperimentConfig) -> str:
    """The evaluation identity of every reported number: the full test split."""
    return evaluation_key(section_for(cfg, "report"), cfg.model)


def decision_key(cfg: ExperimentConfig) -> str:
    """The evaluation identity of teacher selection: the full validation split."""
    return evaluation_key(section_for(cfg, "decisions"), cfg.model)


def check_tokenizer(folder: Path, setting: Setting) -> None:
    """A model saved with a tokenizer (every artifact) must have been trained with the setting's: the same weights
    read through another tokenizer measure nothing (a swapped tokenizer cache, or a model of another setting)."""
    model_dir = model_or_artifact(folder)
    if not any((model_dir / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json")):
        return
    try:
        saved = AutoTokenizer.from_pretrained(model_dir)
    except Exception as err:  # noqa: BLE001 - a damaged tokenizer file raises many kinds
        raise UserError(f"the tokenizer saved in {model_dir} cannot be read ({type(err).__name__}); restore it or "
                        "delete the artifact to recompute it") from None
    if tokenizer_fingerprint(saved) != tokenizer_fingerprint(setting.tokenizer):
        raise UserError(f"{model_dir} was trained with another tokenizer than this config's setting uses (a model "
                        "of another setting or corpus, or a changed tokenizer cache); use the config it was made "
                        "with")


def ensure_evaluation(folder: Path, cfg: ExperimentConfig, purpose: Purpose = "report") -> dict[str, float]:
    """The model in `folder` under the config's evaluation for `purpose` ("report": the test split; "decisions":
    the validation split): read back if measured, else measured now (inside a dry run, NotComputed instead)."""
    section = section_for(cfg, purpose)
    metrics = read_evaluation(folder, evaluation_key(section, cfg.model))
    if metrics is not None:
        return metrics
    if is_dry_run():
        raise NotComputed(f"{Path(folder).name} is not evaluated on this evaluation set yet")
    setting = setting_for(cfg, purpose=purpose)
    check_tokenizer(folder, setting)
    metrics = setting.evaluate(load_model(Path(folder) / "model", cfg.model))
    write_evaluation(folder, section, cfg.model, metrics)
    return metrics
