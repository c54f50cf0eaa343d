"""Evaluations of finished models, cached beside their weights and keyed by what they measure.

A complete artifact's weights never change; what decisions and reports read about them (the retain and forget
scores) is an *evaluation*: the setting's `evaluate(model)` under an evaluation identity (the setting's items, seeds
and files, `SettingConfig.evaluation_identity`). It is stored as `<artifact>/evaluations/<evaluation key>.json`, so
a study whose evaluation set changes re-measures every model it reads without retraining any, and never reads a
number measured on another evaluation set. Teacher selection and the report read evaluations, not the metrics a
stage happened to log while it trained.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from undo.config import ExperimentConfig
from undo.core.artifacts import NotComputed, is_dry_run, stable_hash
from undo.core.models import load_model
from undo.settings import Setting, SettingConfig, build_setting

FOLDER = "evaluations"


def setting_for(cfg: ExperimentConfig, eval_items: int | None = None) -> Setting:
    """The config's setting (evaluating `eval_items` items per cell/side when given), built once per process;
    derived files (a trained tokenizer) are cached in the run directory."""
    section = cfg.setting if eval_items is None else cfg.setting.with_eval_items(eval_items)
    return build_setting(section, Path(cfg.run_dir) / "cache")


def evaluation_key(section: SettingConfig) -> str:
    return stable_hash(section.evaluation_identity())


def write_evaluation(folder: Path, section: SettingConfig, metrics: dict[str, float]) -> Path:
    """Record `metrics` as `folder`'s evaluation under `section`'s identity (atomically: complete or absent)."""
    key = evaluation_key(section)
    path = Path(folder) / FOLDER / f"{key}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{key}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"evaluation_key": key, "evaluation": section.evaluation_identity(),
                               "metrics": metrics}, indent=2) + "\n")
    tmp.replace(path)
    return path


def read_evaluation(folder: Path, key: str) -> dict[str, float] | None:
    """`folder`'s evaluation under the identity with this key, or None if it was never measured."""
    path = Path(folder) / FOLDER / f"{key}.json"
    return json.loads(path.read_text())["metrics"] if path.is_file() else None


def ensure_evaluation(folder: Path, cfg: ExperimentConfig) -> dict[str, float]:
    """The model in `folder` evaluated under the config's setting: read back if measured, else measured now (inside
    a dry run, NotComputed instead)."""
    metrics = read_evaluation(folder, evaluation_key(cfg.setting))
    if metrics is not None:
        return metrics
    if is_dry_run():
        raise NotComputed(f"{Path(folder).name} is not evaluated on this evaluation set yet")
    metrics = setting_for(cfg).evaluate(load_model(Path(folder) / "model"))
    write_evaluation(folder, cfg.setting, metrics)
    return metrics
