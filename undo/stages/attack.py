"""The relearning attack: fine-tune a finished model at each LR of a grid and keep, at every evaluated step, the
attacker's best forget score (the defender faces the worst case). What trains, and on which loss, is the attack
kind's (`undo.attacks`); the grid, the data, the evaluations and the attacker-best curve are the same for every
kind.

Every evaluation measures both held-out splits. The attacker chooses on the validation split: the best LR at each
step, and whether the grid is too narrow (its best LR at a budget is an edge that beats its neighbour: then an LR
half a decade beyond is added, at most `attack.extend_grid` times per direction). The reported curve is the test
split's score of the LR chosen at each step. The data stream depends on the seed and the attack config only, never on the target, so every model attacked
with one config sees the same batches in the same order (comparisons between models are paired)."""

from __future__ import annotations

import math
import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict

from undo.analysis.robustness import area_under, attacker_best, snapshots
from undo.attacks import ATTACK_KINDS, AttackKind
from undo.config import AttackConfig, ExperimentConfig, TrainConfig
from undo.core import distributed
from undo.core.artifacts import model_folder, stable_hash
from undo.core.data import PackedBatches, derive_seed
from undo.training.engine import Evaluate, read_metrics, train
from undo.schema.errors import TrainingDiverged, UserError
from undo.core.models import check_vocabulary, load_model
from undo.schema.curves import BestCurve, Curve, index_at
from undo.schema.results import AttackArea, AttackData, AttackResult, GridRecord, LrRun
from undo.settings import Setting
from undo.stages.base import (
    COMPUTE_OPTIONS, Stage, StageJob, StageResult, console, data_identity, defaulted, for_training, run_stage)
from undo.stages.evaluation import evaluation_key


class LrTotals(BaseModel):
    """What a finished LR records in its folder (`done.json`) before its curves are read back from its log."""

    model_config = ConfigDict(extra="forbid")

    lr: float
    steps: int
    tokens: int
    flops: dict[str, int]
    wall_time_s: float


def attack_data(cfg: ExperimentConfig, setting: Setting) -> tuple[list, PackedBatches]:
    """The attack's documents and shuffled batches: forget documents, or a fresh draw of the pretraining mixture
    (every operation, as the paper attacked arithmetic)."""
    a = cfg.attack
    seed = derive_seed(cfg.seed, "attack")
    documents = setting.attack_documents(a.data, a.examples, seed)
    rows = setting.packed_rows(documents, cfg.model.context)
    return documents, PackedBatches(rows, a.batch_size, seed=seed)


def attack_data_key(cfg: ExperimentConfig) -> str:
    """Everything that determines the attack's batches: equal keys mean identical data in identical order."""
    a = cfg.attack
    return stable_hash({"stage": "attack-data", "seed": cfg.seed, "data": data_identity(cfg),
                        "context": cfg.model.context, "kind": a.data, "examples": a.examples,
                        "batch_size": a.batch_size})


@dataclass(frozen=True)
class Attack(Stage):
    """Attack the `target` input with the attack kind named `attack_kind`."""

    attack_kind: str = "finetune"
    kind = "attack"
    makes_model = False

    @property
    def method(self) -> AttackKind:
        return ATTACK_KINDS[self.attack_kind]()

    def config_slice(self, cfg: ExperimentConfig) -> dict[str, Any]:
        a = cfg.attack
        # Which other kinds a study runs does not change this one's result.
        # How the target is loaded (dtype, attention kernel) changes every number the attack computes.
        return {"seed": cfg.seed, "data": attack_data_key(cfg), "method": self.method.identity(),
                **({"load": cfg.model.load_identity()} if cfg.model.load_identity() else {}),
                "evaluation": cfg.setting.with_eval_items(a.eval_per_cell).evaluation_identity(),
                "attack": a.model_dump(mode="json", exclude={"kinds", *defaulted(a, COMPUTE_OPTIONS)})}

    def artifact_name(self, inputs: dict[str, Path | None], key: str) -> str:
        kind = "" if self.attack_kind == "finetune" else f"{self.attack_kind}_"
        return f"attack_{kind}{inputs['target'].resolve().name}_{key[:8]}"

    def check(self, cfg: ExperimentConfig, inputs: dict[str, Path | None]) -> None:
        model_folder(inputs.get("target"), "nothing to attack", example=str(Path(cfg.run_dir) / "base"))
        if self.attack_kind not in ATTACK_KINDS:
            raise UserError(f"unknown attack kind {self.attack_kind!r}; use one of: {', '.join(sorted(ATTACK_KINDS))}")

    def run(self, job: StageJob) -> AttackResult:
        cfg, a, target = job.cfg, job.cfg.attack, job.inputs["target"]
        # Evaluation during the attack uses `attack.eval_per_cell` items per cell (many evaluations per LR).
        splits = {"validation": job.setting(eval_items=a.eval_per_cell),
                  "test": job.setting(eval_items=a.eval_per_cell, split="test")}
        documents, batches = attack_data(cfg, splits["validation"])

        def load_target() -> torch.nn.Module:  # a fresh load per LR: every LR starts from the target
            model = for_training(load_model(target / "model", cfg.model), cfg.model)
            check_vocabulary(model, splits["validation"].tokenizer, f"the attacked model {target}")
            return model

        def evaluate(model) -> dict[str, float]:
            test = splits["test"].evaluate(model)
            return {**splits["validation"].evaluate(model), **{f"test/{k}": v for k, v in test.items()}}

        data = AttackData(key=attack_data_key(cfg), kind=a.data, documents=len(documents),
                          sequences=len(batches.rows), tokens_per_step=a.batch_size * a.grad_accum * cfg.model.context)
        return attack_model(load_target, self.attack_kind, batches, a, job.workdir, evaluate=evaluate,
                            name=target.name, seed=cfg.seed, data=data,
                            evaluation_key=evaluation_key(cfg.setting.with_eval_items(a.eval_per_cell)
                                                          .with_split("test"), cfg.model),
                            progress=job.progress, run_key=job.key)

    def describe(self, result: StageResult) -> str:
        return f"{self.attack_kind} attack done in {result.wall_time_s:.0f}s"


def attack_model(load_target: Callable[[], torch.nn.Module], attack_kind: str, batches: PackedBatches,
                 a: AttackConfig, workdir: Path, *, evaluate: Evaluate, name: str, seed: int, data: AttackData,
                 evaluation_key: str | None = None, progress: bool = True, run_key: str = "") -> AttackResult:
    """Attack a model with `attack_kind` at every LR of `a.lrs` (each on a fresh `load_target()`, in its own folder
    `workdir/lr_<lr>`; a finished LR is not redone), extending the grid at its edges as `a.extend_grid` allows, and
    keep the attacker-best curve. `evaluate(model)` gives the attacker's view (`forget`, `retain`: what it chooses
    on) and the reported one (`test/forget`, `test/retain`). The core that the stage (`Attack.run`) and the Python
    API (`undo.session.attack`) share."""
    method = ATTACK_KINDS[attack_kind]()
    runs: dict[float, LrRun] = {}
    diverged: list[float] = []

    def attempt(lr: float) -> None:
        """One LR; one that diverges is recorded and left out (too large a step is no attack)."""
        try:
            runs[lr] = attack_lr(load_target, method, lr, batches, a, workdir / f"lr_{lr:g}", evaluate=evaluate,
                                 name=name, progress=progress, run_key=f"{run_key}:lr={lr!r}")
        except TrainingDiverged as err:
            console.print(f"[yellow]attack {name}[/]: {err}; lr={lr:g} is left out")
            diverged.append(lr)

    for lr in a.lrs:
        attempt(lr)
    if not runs:
        raise UserError(f"attack {name}: every LR of attack.lrs diverged; lower them")
    capped = a.max_retain_drop is not None

    def choose() -> BestCurve:  # the attacker's choice, on validation
        forget = {lr: run.validation_forget for lr, run in runs.items()}
        retain = {lr: run.validation_retain for lr, run in runs.items()}
        return attacker_best(forget, retain if capped else None, a.max_retain_drop)

    chosen, extended, added = choose(), [], {"top": 0, "bottom": 0}
    while edges := grid_edges(chosen, runs, a.budgets):
        # Not past the bound, and not beyond an LR that diverged (a larger one would too).
        wanted = {side for side in edges.values() if added[side] < a.extend_grid
                  and not (side == "top" and any(lr > max(runs) for lr in diverged))}
        if not wanted:
            break
        for side in sorted(wanted):
            lr = max(runs) * math.sqrt(10) if side == "top" else min(runs) / math.sqrt(10)
            console.print(f"[yellow]attack {name}[/]: the best LR is the {side} of the grid; adding lr={lr:.3g}")
            attempt(lr)
            extended.append(lr)
            added[side] += 1
        chosen = choose()
    best = reported_curve(chosen, runs)
    flops: Counter[str] = Counter()
    for run in runs.values():
        flops.update(run.flops)
    first = runs[min(runs)]
    return AttackResult(
        attack_kind=attack_kind, seed=seed, attack=a.model_dump(mode="json"), data=data,
        evaluation_key=evaluation_key,
        metrics_before={"forget": first.forget.values[0], "retain": first.retain.values[0]},
        per_lr=[runs[lr] for lr in sorted(runs)],
        grid=GridRecord(configured=list(a.lrs), extended=extended, searched=sorted(runs), diverged=diverged,
                        edge_at=grid_edges(chosen, runs, a.budgets), single_lr=len(runs) == 1),
        best=best, validation_best=chosen, max_retain_drop=a.max_retain_drop,
        snapshots=snapshots(best, a.budgets, data.tokens_per_step),
        area=AttackArea(up_to=max(a.budgets), value=area_under(best, max(a.budgets))),
        tokens=sum(run.tokens for run in runs.values()), flops=dict(flops),
        wall_time_s=round(sum(run.wall_time_s for run in runs.values()), 2))


def attack_lr(load_target: Callable[[], torch.nn.Module], method: AttackKind, lr: float, batches: PackedBatches,
              a: AttackConfig, workdir: Path, *, evaluate: Evaluate, name: str, progress: bool = True,
              run_key: str = "") -> LrRun:
    """Fine-tune a fresh `load_target()` at one LR in `workdir`; a finished LR (done.json) is not redone. The
    curves are read back from its metrics.jsonl."""
    done = workdir / "done.json"
    main = distributed.is_main()
    if main and done.is_file() and (damage := finished_lr_damage(workdir)) is not None:
        aside = workdir.with_name(f"{workdir.name}.damaged-{time.strftime('%Y%m%dT%H%M%S')}")
        workdir.rename(aside)
        console.print(f"[yellow]attack {name} lr={lr:g}[/]: {damage}; set aside as {aside.name}, "
                      "running this LR again")
    if not distributed.broadcast(main and done.is_file()):
        model = load_target()
        train_cfg = TrainConfig(batch_size=a.batch_size, grad_accum=a.grad_accum,
                                mixed_precision=a.mixed_precision, compile=a.compile, lr=lr, schedule="constant",
                                warmup_steps=0, weight_decay=0.0, clip=1.0, max_steps=a.steps,
                                eval_every=a.eval_every, eval_steps=a.eval_steps,
                                checkpoint_every=max(a.eval_every, 50), log_every=10)
        result = train(method.prepare(model), method.objective(), batches, train_cfg, a.steps, workdir,
                       evaluate=evaluate, eval_at_start=True, progress=progress,
                       description=f"attack {name} lr={lr:g}", run_key=run_key, config_keys="attack.lrs")
        if main:
            totals = LrTotals(lr=lr, steps=result.steps, tokens=result.tokens, flops=result.flops,
                              wall_time_s=round(result.wall_time_s, 2))
            done.write_text(totals.model_dump_json() + "\n")
    if main:
        shutil.rmtree(workdir / "checkpoint", ignore_errors=True)
    distributed.wait_for_main()  # the others read the curves the main process wrote
    evals = [line for line in read_metrics(workdir / "metrics.jsonl") if line["kind"] == "eval"]
    steps = [line["step"] for line in evals]

    def curve(name: str) -> Curve:
        return Curve(steps, [line[name] for line in evals])

    return LrRun(**LrTotals.model_validate_json(done.read_text()).model_dump(), forget=curve("test/forget"),
                 retain=curve("test/retain"),
                 validation_forget=curve("forget"), validation_retain=curve("retain"))


def grid_edges(chosen: BestCurve, runs: dict[float, LrRun], budgets: list[int]) -> dict[str, str]:
    """Budget -> "top"/"bottom" where the attacker's best LR (on validation) is an edge of the grid and strictly
    beats its neighbour there (a tie means the grid's edge is not what limits the attacker)."""
    lrs = sorted(runs)
    if len(lrs) < 2:
        return {}
    edges = {}
    for budget in budgets:
        index = index_at(chosen, budget)
        for side, edge, neighbour in (("top", lrs[-1], lrs[-2]), ("bottom", lrs[0], lrs[1])):
            if chosen.best_lr[index] == edge and chosen.values[index] > runs[neighbour].validation_forget.values[index]:
                edges[str(budget)] = side
    return edges


def reported_curve(chosen: BestCurve, runs: dict[float, LrRun]) -> BestCurve:
    """The test split's forget score of the LR the attacker chose at each step (on validation); where a retain cap
    left no LR, the model before the attack."""
    test = {lr: run.forget.values for lr, run in runs.items()}
    first = test[min(runs)][0]
    values = [first if lr is None else test[lr][i] for i, lr in enumerate(chosen.best_lr)]
    return BestCurve(steps=chosen.steps, values=values, best_lr=chosen.best_lr, retain_cap=chosen.retain_cap)


def finished_lr_damage(workdir: Path) -> str | None:
    """Why a finished LR's record cannot be read back (a damaged done.json or log line), or None."""
    try:
        LrTotals.model_validate_json((workdir / "done.json").read_text())
        read_metrics(workdir / "metrics.jsonl")
    except (OSError, ValueError) as err:  # JSON and pydantic errors are ValueErrors
        return f"its record in {workdir} is damaged ({type(err).__name__})"
    return None


def attack(cfg: ExperimentConfig, target: Path, *, kind: str = "finetune", progress: bool = True) -> Path:
    """Relearning attack of kind `kind` on the model in `target/model/` into `<run_dir>/attack_<target>_<key>/`:
    one fine-tune per LR of `cfg.attack.lrs` (constant LR, AdamW without weight decay, clip 1.0), forget and retain
    scores every `eval_every` steps from step 0, then the attacker-best curve, snapshots and area."""
    return run_stage(Attack(kind), cfg, {"target": Path(target)}, progress=progress)
