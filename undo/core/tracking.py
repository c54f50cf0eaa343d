"""Experiment trackers: a live view of every stage's metrics in TensorBoard, Weights & Biases or MLflow.

`metrics.jsonl` stays the record (the report, resumption and `undo verify` read it); a tracker only shows the same
numbers. `run_stage` opens the context of the stage running in this process (`tracking_for`, when the config's
`tracking.backend` names a tracker); the engine opens its run there (`stage_logger`) and hands it the numbers of each
line it writes (`numbers`). Each stage is one tracker run named like its artifact (an attack's LRs are runs of their
own, `<artifact>/lr_<lr>`). Only the main process logs.

The small interface is `MetricLogger` (torchtune's `MetricLoggerInterface` is the model): `log(metrics, step)`,
`close()`. A resumed stage restarts its curves at the checkpoint's step: TensorBoard purges the events after it,
MLflow and W&B record the steps again (their history keeps both; the later value is the one a stage resumed from).
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal, Protocol

from undo.schema.errors import UserError

Backend = Literal["tensorboard", "wandb", "mlflow"]
PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "sqlalchemy"}  # what each backend needs
# (mlflow: its local SQLite store needs SQLAlchemy beside mlflow itself)


def missing_backend(backend: str) -> str | None:
    """The line to print when the backend's package is not installed (looked up without importing it), else None.
    Each backend's extra has its name: `pip install 'undo[tensorboard]'`."""
    missing = next((name for name in (backend, PACKAGES[backend]) if importlib.util.find_spec(name) is None), None)
    if missing is not None:
        return (f"tracking.backend {backend!r} needs the {missing} package, which is not installed: pip install "
                f"'undo[{backend}]'")
    return None


class MetricLogger(Protocol):
    def log(self, metrics: dict[str, float], step: int) -> None:
        """Record `metrics` (name -> number) at `step`."""

    def close(self) -> None:
        """Flush and release the run."""


class TensorBoardLogger:
    """Event files in `<dir>/<run>/` (`torch.utils.tensorboard.SummaryWriter`)."""

    def __init__(self, folder: Path, run: str, *, resumed_from: int | None = None):
        from torch.utils.tensorboard import SummaryWriter

        # Resumed after the checkpoint of step s: its lines up to s stand, the later ones are written again.
        self.writer = SummaryWriter(log_dir=str(folder / run),
                                    purge_step=None if resumed_from is None else resumed_from + 1)

    def log(self, metrics: dict[str, float], step: int) -> None:
        for name, value in metrics.items():
            self.writer.add_scalar(name, value, global_step=step)
        self.writer.flush()  # a live view: each line is visible as soon as it is written

    def close(self) -> None:
        self.writer.close()


class WandbLogger:
    """A Weights & Biases run in `<dir>/wandb/`, offline unless `WANDB_MODE` says otherwise (`wandb sync` uploads
    it); runs of one study share its group (the run directory's name)."""

    def __init__(self, folder: Path, run: str, *, project: str, group: str, resumed_from: int | None = None):
        import wandb

        folder.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(project=project, name=run, group=group, dir=str(folder),
                              mode=os.environ.get("WANDB_MODE", "offline"), reinit="create_new",
                              config={"resumed_from": resumed_from})

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def close(self) -> None:
        self.run.finish()


def mlflow_store(folder: Path) -> str:
    """The tracking URI of the local MLflow store in `folder`: an SQLite database (`mlflow ui --backend-store-uri`
    reads it)."""
    return f"sqlite:///{(folder / 'mlflow.db').resolve()}"


class MLflowLogger:
    """An MLflow run in the experiment `project` of the local store `<dir>/mlflow.db` (`mlflow_store`), through
    `MlflowClient` (no process-wide active run)."""

    def __init__(self, folder: Path, run: str, *, project: str, group: str, resumed_from: int | None = None):
        from mlflow.tracking import MlflowClient

        folder.mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(tracking_uri=mlflow_store(folder))
        experiment = self.client.get_experiment_by_name(project)
        experiment_id = (experiment.experiment_id if experiment is not None
                         else self.client.create_experiment(project))
        tags = {"undo.study": group, **({"undo.resumed_from": str(resumed_from)} if resumed_from else {})}
        self.run_id = self.client.create_run(experiment_id, run_name=run, tags=tags).info.run_id

    def log(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(name.replace("@", "at_"), value, now, step)
                                                    for name, value in metrics.items()])

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


def open_logger(backend: Backend, folder: Path, run: str, *, project: str, group: str,
                resumed_from: int | None = None) -> MetricLogger:
    missing = missing_backend(backend)
    if missing is not None:  # uninstalled after the config was checked
        raise UserError(missing)
    if backend == "tensorboard":
        return TensorBoardLogger(folder, run, resumed_from=resumed_from)
    if backend == "wandb":
        return WandbLogger(folder, run, project=project, group=group, resumed_from=resumed_from)
    return MLflowLogger(folder, run, project=project, group=group, resumed_from=resumed_from)


@dataclass(frozen=True)
class Tracking:
    """What the running stage logs to: the backend, its folder, the project and the study (group) names, and the
    artifact whose work folder (`partial`) the engine trains in."""

    backend: Backend
    folder: Path
    project: str
    group: str
    artifact: str
    partial: Path


_ACTIVE: Tracking | None = None


@contextlib.contextmanager
def tracking_for(tracking: Tracking | None) -> Iterator[None]:
    """Within the block, the engine's lines go to `tracking` (None: nowhere)."""
    global _ACTIVE
    previous, _ACTIVE = _ACTIVE, tracking
    try:
        yield
    finally:
        _ACTIVE = previous


def stage_logger(workdir: Path, resumed_from: int | None) -> MetricLogger | None:
    """The tracker run of the training in `workdir` (the artifact's, or one of its sub-runs), or None."""
    t = _ACTIVE
    if t is None:
        return None
    run = t.artifact
    with contextlib.suppress(ValueError):
        relative = workdir.resolve().relative_to(t.partial.resolve())
        if relative.parts:
            run = f"{t.artifact}/{relative.as_posix()}"
    return open_logger(t.backend, t.folder, run, project=t.project, group=t.group, resumed_from=resumed_from)


def numbers(line: dict[str, Any]) -> dict[str, float]:
    """A metrics.jsonl line's numbers as tracker metrics, named `<kind>/<name>` (e.g. train/loss, eval/forget);
    the step is the tracker's own axis, and non-numbers (nested FLOP counts, flags) are left out."""
    kind = line.get("kind", "line")
    return {f"{kind}/{name}": float(value) for name, value in line.items()
            if name not in ("kind", "step") and isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value)}
