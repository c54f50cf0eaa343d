"""Experiment trackers (undo/core/tracking.py): every stage's metrics.jsonl lines, shown live in TensorBoard, MLflow
or Weights & Biases under the artifact's name, and the report's numbers at the end. The tracker holds the same
numbers as metrics.jsonl, which stays the record."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from tests.conftest import TINY, interrupt_pretraining
from undo.config import validate_config
from undo.training.engine import read_metrics


def series(lines: list[dict], name: str) -> dict[int, float]:
    """A metric of metrics.jsonl by step, as the tracker names it (`train/loss`, `eval/retain`)."""
    kind, field = name.split("/", 1)
    return {line["step"]: float(line[field]) for line in lines if line["kind"] == kind and line.get(field) is not None}


def tensorboard_scalars(folder: Path) -> dict[str, dict[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in events.Tags()["scalars"]}


def tracked(tmp_path, backend: str, **extra) -> dict:
    return {**TINY, "run_dir": str(tmp_path / "runs"), "tracking": {"backend": backend, **extra}}


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="tensorboard is not installed")
@pytest.mark.slow
def test_tensorboard_holds_every_stage_line_and_the_report(tmp_path):
    """A whole tiny study: each training run's event files hold exactly its metrics.jsonl numbers (an attack's LRs
    are runs of their own), and the `report` run holds results.json's."""
    from tests.studies import study_config
    from undo.api import run_study

    raw = study_config(tmp_path / "runs")
    raw["tracking"] = {"backend": "tensorboard"}
    run_dir = run_study(validate_config(raw), progress=False)
    logs = sorted(p for p in run_dir.rglob("metrics.jsonl") if "tracking" not in p.parts)
    assert len(logs) >= 8
    for log in logs:
        run = log.parent.relative_to(run_dir).as_posix()
        scalars = tensorboard_scalars(run_dir / "tracking" / run)
        lines = read_metrics(log)
        for name in ("train/loss", "train/tokens", "eval/retain", "eval/forget"):
            expected = series(lines, name)
            if expected:
                assert scalars[name] == pytest.approx(expected, rel=1e-6), (run, name)
    assert any("/lr_" in p.parent.relative_to(run_dir).as_posix() for p in logs)  # an attack LR's own run
    results = json.loads((run_dir / "results.json").read_text())
    report = tensorboard_scalars(run_dir / "tracking" / "report")
    base = next(m for m in results["models"] if m["role"] == "base")
    assert report[f"base/seed{base['seed']}/forget"] == {0: pytest.approx(base["metrics"]["forget"])}
    attacked = next(m for m in results["models"] if m["robustness"].get("finetune", {}).get("area") is not None)
    assert report[f"{attacked['id']}/seed{attacked['seed']}/finetune/robustness@area"][0] == pytest.approx(
        attacked["robustness"]["finetune"]["area"])
    from undo.study.verify import verify_run_dir

    assert {f.status for f in verify_run_dir(run_dir)} == {"ok"}  # the tracker's folder is no damaged artifact


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="tensorboard is not installed")
def test_a_resumed_stage_restarts_its_tensorboard_curves_at_the_checkpoint(tmp_path, monkeypatch):
    """Interrupted after its step-6 checkpoint and resumed: the lines after the checkpoint were written twice; the
    event files keep the second (TensorBoard purges events from the resumed step on), as metrics.jsonl does."""
    from undo.stages.pretrain import pretrain

    cfg = validate_config(tracked(tmp_path, "tensorboard"))
    interrupt_pretraining(cfg, monkeypatch, at_batch=7)
    base = pretrain(cfg, "base", progress=False)
    lines = read_metrics(base / "metrics.jsonl")
    scalars = tensorboard_scalars(tmp_path / "runs" / "tracking" / base.name)
    assert scalars["train/loss"] == pytest.approx(series(lines, "train/loss"), rel=1e-6)
    assert sorted(scalars["train/loss"]) == list(range(1, 13))


@pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in ("mlflow", "sqlalchemy")),
                    reason="mlflow is not installed (undo[mlflow])")
def test_mlflow_holds_the_metrics_of_a_stage(tmp_path):
    from mlflow.tracking import MlflowClient

    from undo.core.tracking import mlflow_store
    from undo.stages.pretrain import pretrain

    cfg = validate_config(tracked(tmp_path, "mlflow", dir=str(tmp_path / "store"), project="tiny"))
    base = pretrain(cfg, "base", progress=False)
    client = MlflowClient(tracking_uri=mlflow_store(tmp_path / "store"))
    experiment = client.get_experiment_by_name("tiny")
    (run,) = client.search_runs([experiment.experiment_id], filter_string=f"attributes.run_name = '{base.name}'")
    lines = read_metrics(base / "metrics.jsonl")
    for name in ("train/loss", "eval/retain"):
        history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, name)}
        assert history == pytest.approx(series(lines, name), rel=1e-6), name
    assert run.info.status == "FINISHED"


@pytest.mark.skipif(importlib.util.find_spec("wandb") is None, reason="wandb is not installed (undo[wandb])")
def test_wandb_receives_every_line_of_a_stage_offline(tmp_path, monkeypatch):
    """W&B's offline run files are read by its Go service only, so this reads what its `Run.log` was given: the
    numbers of every metrics.jsonl line, at their steps, in a run named like the artifact."""
    import wandb.sdk.wandb_run

    from undo.stages.pretrain import pretrain

    monkeypatch.setenv("WANDB_SILENT", "true")
    received: list[tuple[str, dict, int]] = []
    real_log = wandb.sdk.wandb_run.Run.log

    def spy(run, data, step=None, **kwargs):
        received.append((run.name, dict(data), step))
        return real_log(run, data, step=step, **kwargs)

    monkeypatch.setattr(wandb.sdk.wandb_run.Run, "log", spy)
    cfg = validate_config(tracked(tmp_path, "wandb"))
    base = pretrain(cfg, "base", progress=False)
    assert {name for name, _, _ in received} == {base.name}
    assert len(list((tmp_path / "runs" / "tracking" / "wandb").glob("offline-run-*/run-*.wandb"))) == 1
    lines = read_metrics(base / "metrics.jsonl")
    for name in ("train/loss", "eval/retain"):
        got = {step: data[name] for _, data, step in received if name in data}
        assert got == pytest.approx(series(lines, name), rel=1e-6), name


@pytest.mark.parametrize("backend", ["tensorboard", "wandb", "mlflow"])
def test_a_tracker_that_is_not_installed_is_one_line_naming_its_extra(tmp_path, capsys, monkeypatch, backend):
    import yaml

    import undo.core.tracking
    from tests.test_bad_inputs import run_cli

    real = importlib.util.find_spec
    monkeypatch.setattr(undo.core.tracking.importlib.util, "find_spec",
                        lambda name, *a: None if name == backend else real(name, *a))
    path = tmp_path / "tracked.yaml"
    path.write_text(yaml.safe_dump(tracked(tmp_path, backend)))
    line = run_cli(["run", path], capsys)
    assert f"pip install 'undo[{backend}]'" in line and "tracking.backend" in line, line
    assert not (tmp_path / "runs").exists()
