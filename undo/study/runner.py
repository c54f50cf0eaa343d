"""Running a study: build the plan, execute it with an executor, keep the manifest current, write the report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from undo.config import ExperimentConfig, config_hash
from undo.core import distributed
from undo.core.artifacts import Artifact, dry_run
from undo.core.errors import UserError
from undo.core.locks import command_line, run_dir_lock
from undo.report import write_report
from undo.stages.pretrain import pretrain_key
from undo.stages.evaluation import report_key
from undo.study.executors import Executor, PoolExecutor, RayExecutor, SerialExecutor, console, execute
from undo.study.index import elsewhere, remember
from undo.study.manifest import MANIFEST, Manifest, ModelEntry
from undo.study.plan import Plan, build_plan, select_task


def manifest_of(plan: Plan, outputs: dict[str, Any], skipped: dict[str, str], pending: set[str]) -> Manifest:
    """What the plan has made so far: every model (once per seed) with its artifact and its attacks."""
    cfg = plan.cfg
    attacks: dict[tuple[str, int], dict[str, str | None]] = {}
    for task in plan.tasks:
        if task.attack_of is not None:
            attacks.setdefault((task.attack_of, task.cfg.seed), {})[task.attack_kind] = outputs.get(task.name)
    models = []
    for task in plan.tasks:
        if task.model is None:
            continue
        # The base model and oracle are shared by every seed and attacked once per seed: one entry per seed.
        for seed in [task.model.seed] if task.model.seed is not None else cfg.seeds:
            models.append(ModelEntry(**{**task.model.model_dump(), "seed": seed}, task=task.name,
                                     artifact=outputs.get(task.name), attacks=attacks.get((task.name, seed), {}),
                                     skipped=skipped.get(task.name)))
    selection = {t.cfg.seed: outputs[t.name] for t in plan.tasks
                 if t.action is select_task and outputs.get(t.name) is not None}
    return Manifest(config=cfg.model_dump(mode="json"), config_hash=config_hash(cfg),
                    run_dir=str(Path(cfg.run_dir).resolve()),
                    evaluation_key=report_key(cfg), seeds=cfg.seeds, attack_kinds=cfg.attack.kinds,
                    plan_key=plan.key, complete=all(t.name in outputs for t in plan.tasks) and not pending,
                    selection=selection, models=models, skipped=skipped)


def execute_plan(plan: Plan, executor: Executor) -> dict[str, Any]:
    run_dir = Path(plan.cfg.run_dir)

    def write(outputs, skipped, pending) -> None:
        if distributed.is_main():
            manifest_of(plan, outputs, skipped, pending).write(run_dir)

    return execute(plan, executor, write)


def run_study(cfg: ExperimentConfig, *, progress: bool = True, report: bool = True, workers: int | None = None,
              executor: str = "local", address: str | None = None) -> Path:
    """Build the plan, execute it (`executor` "local": in this process, or in `workers` processes, by default the
    config's `study.workers`; "ray": as Ray tasks on the cluster at `address`, a local Ray when None), then write
    the report. Returns the run directory."""
    if workers is None:  # the study's own default applies where this process schedules the stages
        local = executor == "local" and not distributed.launched()
        workers = (cfg.study.workers or 1) if local else 1
    if workers < 1:
        raise UserError(f"workers must be >= 1, got {workers}")
    if executor not in ("local", "ray"):
        raise UserError(f"--executor takes local or ray, got {executor!r}")
    if executor == "ray" and (workers > 1 or distributed.launched()):
        raise UserError("--executor ray schedules every stage on the cluster itself: drop --workers (and torchrun)")
    if address is not None and executor != "ray":
        raise UserError("--address names a Ray cluster: it needs --executor ray")
    if workers > 1 and distributed.launched():
        raise UserError("--workers runs stages side by side in one machine's processes; under torchrun every "
                        "process already trains each stage together: drop --workers (or torchrun)")
    others = [] if (Path(cfg.run_dir) / MANIFEST).is_file() else elsewhere(cfg)
    if others:
        console.print(f"[yellow]note[/]: this config's study already exists in {others[0]}; this run starts a new one "
                      f"in {Path(cfg.run_dir).resolve()} (run from there, or pass --run-dir {others[0]}, to reuse it)")
    with run_dir_lock(Path(cfg.run_dir), command_line()):
        if distributed.is_main():
            remember(cfg)
        serial = workers == 1 and executor == "local"
        plan = build_plan(cfg, progress=progress and serial)  # parallel tasks would garble progress bars
        if executor == "ray":
            chosen: Executor = RayExecutor(cfg.run_dir, address)
        else:
            chosen = SerialExecutor() if workers == 1 else PoolExecutor(workers)
        execute_plan(plan, chosen)
        if report and distributed.is_main():
            write_report(Path(cfg.run_dir))
    return Path(cfg.run_dir)


def collect_study(cfg: ExperimentConfig) -> Path:
    """Write the manifest of the study's complete artifacts, computing nothing; returns its path."""
    if not Artifact(cfg.run_dir, "base", pretrain_key(cfg, "base")).is_complete():
        others = elsewhere(cfg)
        where = (f"; this config's study is in {others[0]}: run from there or pass --run-dir {others[0]}" if others
                 else ": run `undo run STUDY.yaml` first")
        raise UserError(f"nothing of this study is computed in {Path(cfg.run_dir).resolve()} yet (no base model)"
                        f"{where}")
    with dry_run():
        execute_plan(build_plan(cfg, progress=False), SerialExecutor())
    return Path(cfg.run_dir) / MANIFEST
