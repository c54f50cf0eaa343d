"""Stages: artifacts in, artifacts out. Each is a pure function of its config and its input artifacts.

Pretraining of the base model (retain and forget data) and of the data-filtered oracle (the very same retain
data, nothing else: the "perfect data filtering" gold standard); unlearning runs on the base model, swept over
learning rates and method knobs, and the choice of a teacher per method; the relearning attack; distillation.
Every stage reads its data and evaluation from the config's setting (`undo.settings`: arithmetic or language).
"""

from __future__ import annotations

import copy
import functools
import inspect
import itertools
import json
import math
import shutil
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from rich.console import Console

from undo.accounting import accounting
from undo.artifacts import Artifact, file_sha256, stable_hash
from undo.compute import matmul_parameters, train_flops_per_token
from undo.config import ExperimentConfig, SelectionRule, TrainConfig, dump_yaml
from undo.data import PackedBatches, PairedBatches, derive_seed
from undo.engine import read_metrics, train
from undo.errors import UserError
from undo.models import build_model, count_parameters, load_model, save_model
from undo.objectives import OBJECTIVES, Objective, check_knobs
from undo.objectives.sam import SAM
from undo.robustness import BestCurve, Curve, area_under, attacker_best, normalised_robustness, snapshots, value_at
from undo.settings import ACCURACY, Score, make_setting, score_of

console = Console(stderr=True, soft_wrap=True)  # paths stay whole in logs
Which = Literal["base", "oracle"]


def pretrain_key(cfg: ExperimentConfig, which: Which) -> str:
    """Everything that determines the pretrained model, and nothing else (not run_dir, not eval cadence)."""
    return stable_hash({"stage": "pretrain", "which": which, "seed": cfg.seed, "setting": data_fields(cfg),
                        "model": cfg.model.model_dump(mode="json"), "train": training_fields(cfg.pretrain.train)})


def data_fields(cfg: ExperimentConfig) -> dict[str, Any]:
    """The setting's fields that shape training data (evaluation settings only change what is measured). The
    language setting's held-out split shapes its training pool, so its seed and size count; so do its corpus
    files' contents (a changed file is new data under the same name)."""
    if cfg.setting.name == "language":
        fields = cfg.setting.model_dump(mode="json", exclude={"eval_documents", "eval_batch_size"})
        fields["corpus_sha256"] = {side: corpus_fingerprint(getattr(cfg.setting, f"{side}_corpus"))
                                   for side in ("retain", "forget")}
        return fields
    return cfg.setting.model_dump(mode="json", exclude={"eval_per_cell", "eval_seed", "eval_batch_size",
                                                     "eval_formats"})


def evaluation_fields(cfg: ExperimentConfig) -> dict[str, Any]:
    """Everything that decides what an evaluation measures (the stop rule and the attack's curves depend on it)."""
    if cfg.setting.name == "language":
        return {"setting": cfg.setting.model_dump(mode="json", exclude={"eval_batch_size"}),
                "corpus_sha256": data_fields(cfg)["corpus_sha256"]}
    return {"setting": cfg.setting.model_dump(mode="json", exclude={"eval_batch_size", "eval_formats"}),
            "eval_formats": cfg.setting.evaluated_formats}


@functools.lru_cache(maxsize=16)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    return file_sha256(Path(path))


def corpus_fingerprint(source: str) -> str:
    """A local corpus file's sha256 (cached per size and mtime); a dataset id stands for itself."""
    path = Path(source)
    if not path.is_file():
        return source
    stat = path.stat()
    return _file_sha256(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


def training_fields(train_cfg: TrainConfig) -> dict[str, Any]:
    """The training knobs that change the trained weights (not logging, evaluation or checkpoint cadence)."""
    return train_cfg.model_dump(mode="json", exclude={"eval_every", "checkpoint_every", "log_every"})


_SETTINGS: dict[str, Any] = {}


def setting_for(cfg: ExperimentConfig, eval_items: int | None = None):
    """The config's setting (see `undo.settings`); derived files (a trained tokenizer) are cached in the run dir.
    A study builds the same setting for every stage, so a process keeps the ones it built: the language setting
    reads both corpora and its tokenizer each time (seconds). The key holds the corpus files' hashes (via
    `data_fields`), so an edited corpus is read again."""
    key = stable_hash({"setting": cfg.setting.model_dump(mode="json"), "data": data_fields(cfg),
                       "run_dir": cfg.run_dir, "eval_items": eval_items})
    if key not in _SETTINGS:
        _SETTINGS[key] = make_setting(cfg.setting, cache_dir=Path(cfg.run_dir) / "cache", eval_items=eval_items)
    return _SETTINGS[key]


def pretraining_data(cfg: ExperimentConfig, setting, which: Which):
    """The documents of the base (or oracle) stream and their packed, shuffled batches."""
    documents = setting.pretraining_documents(which, cfg.seed)
    rows = setting.packed_rows(documents, cfg.model.context)
    return documents, PackedBatches(rows, cfg.pretrain.train.batch_size, seed=cfg.seed)


def pretraining_steps(cfg: ExperimentConfig, setting, which: Which, batches_per_epoch: int) -> int:
    """Optimizer steps for `epochs` passes over the packed stream. `max_steps` caps the *base* model; the oracle
    then trains on the same share of its own (filtered) stream, so it sees as many +/- examples as the base model
    does (in expectation), not more."""
    train_cfg = cfg.pretrain.train

    def full(batches: int) -> int:
        return math.ceil(batches * train_cfg.epochs / train_cfg.grad_accum)

    if not train_cfg.max_steps:
        return full(batches_per_epoch)
    if which == "base":
        return min(full(batches_per_epoch), train_cfg.max_steps)
    _, base_batches = pretraining_data(cfg, setting, "base")
    share = min(1.0, train_cfg.max_steps / full(base_batches.batches_per_epoch))
    return max(1, round(full(batches_per_epoch) * share))


def pretrain(cfg: ExperimentConfig, which: Which, *, progress: bool = True) -> Path:
    """Pretrain the base model or the oracle into `<run_dir>/<which>/`; a complete artifact is reused."""
    artifact = Artifact(cfg.run_dir, which, pretrain_key(cfg, which))
    if artifact.is_complete():
        console.print(f"[green]{which}[/]: complete artifact found at {artifact.path}, not recomputed")
        return artifact.path
    workdir = artifact.start()

    setting = setting_for(cfg)
    problems, batches = pretraining_data(cfg, setting, which)
    train_cfg = cfg.pretrain.train
    total_steps = pretraining_steps(cfg, setting, which, batches.batches_per_epoch)

    tokenizer = setting.tokenizer
    model = build_model(cfg.model, seed=cfg.seed, pad_id=tokenizer.pad_token_id, eos_id=tokenizer.eos_token_id,
                        tokenizer_size=len(tokenizer))
    console.print(f"[bold]{which}[/]: {len(problems):,} documents -> {len(batches.rows):,} sequences of "
                  f"{cfg.model.context} tokens; {total_steps:,} steps; {count_parameters(model):,} parameters")
    result = train(model, OBJECTIVES["lm"](), batches, train_cfg, total_steps, workdir,
                   evaluate=setting.evaluate, progress=progress, description=f"pretrain {which}",
                   run_key=artifact.key)

    save_model(model, workdir / "model", tokenizer)
    (workdir / "config.yaml").write_text(dump_yaml(cfg))
    meta = {
        "kind": "pretrain",
        "which": which,
        "seed": cfg.seed,
        "steps": result.steps,
        "tokens": result.tokens,
        "labelled_tokens": 0,  # pretraining reads unlabelled text; only unlearning reads labels
        "flops": result.flops,
        "flops_total": sum(result.flops.values()),
        "flops_per_token": train_flops_per_token(model, cfg.model.context),
        "parameters": count_parameters(model),
        "matmul_parameters": matmul_parameters(model),
        "wall_time_s": round(result.wall_time_s, 2),
        "final_metrics": result.final_metrics,
        "data": {**setting.data_summary(problems), "sequences": len(batches.rows)},
    }
    meta["accounting"] = accounting({**meta, "key": artifact.key}, cfg.run_dir)
    path = artifact.finish(meta)
    console.print(f"[green]{which}[/]: done in {result.wall_time_s:.0f}s -> {path}")
    return path


# ----------------------------------------------------------------------------------------------------------
# Unlearning: one run per sweep point, on the pretrained base model; then a teacher per method by the rule.


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
        if cls.needs_reference:
            kwargs["reference"] = reference
        if "seed" in inspect.signature(cls.__init__).parameters:
            kwargs["seed"] = seed
        objective = cls(**kwargs)
    except (TypeError, ValueError) as err:  # a knob of the wrong type or value
        raise UserError(f"unlearn: method {point.method!r} with knobs {dict(point.knobs)}: {err}") from None
    return SAM(objective, point.sam_rho) if point.sam_rho else objective


def unlearn_key(cfg: ExperimentConfig, base_key: str, point: SweepPoint) -> str:
    u = cfg.unlearn
    return stable_hash({"stage": "unlearn", "base": base_key, "seed": cfg.seed,
                        "setting": data_fields(cfg), "method": point.method, "lr": point.lr,
                        "knobs": point.knobs, "sam_rho": point.sam_rho, "steps": u.steps,
                        "batch_size": u.batch_size, "clip": u.clip, "examples": u.examples})


def unlearn(cfg: ExperimentConfig, point: SweepPoint, base: Path | None = None, *, progress: bool = True) -> Path:
    """One unlearning run from the base model (default: this config's `<run_dir>/base`): constant LR, AdamW
    without weight decay, clipping."""
    if base is None:
        expected = Artifact(cfg.run_dir, "base", pretrain_key(cfg, "base"))
        if not expected.is_complete():
            raise UserError(f"no pretrained base model at {expected.path}; run `undo pretrain` with this config "
                            "first")
        base = expected.path
    base_key = target_key(base)
    key = unlearn_key(cfg, base_key, point)
    artifact = Artifact(cfg.run_dir, f"unlearn_{point.label.replace('+', '_')}_lr{point.lr:g}_{key[:8]}", key)
    if artifact.is_complete():
        return artifact.path
    workdir = artifact.start()

    setting = setting_for(cfg)
    u = cfg.unlearn
    rows = {side: setting.packed_rows(setting.labelled_documents(side, u.examples, cfg.seed), cfg.model.context)
            for side in ("forget", "retain")}
    batches = PairedBatches(rows["forget"], rows["retain"], u.batch_size, seed=derive_seed(cfg.seed, "unlearn"))
    model = load_model(base / "model")
    needs_reference = OBJECTIVES[point.method].needs_reference
    reference = copy.deepcopy(model).eval().requires_grad_(False) if needs_reference else None
    objective = build_unlearning_objective(point, reference, cfg.seed)
    train_cfg = TrainConfig(batch_size=u.batch_size, lr=point.lr, schedule="constant", warmup_steps=0,
                            weight_decay=0.0, clip=u.clip, max_steps=u.steps, eval_every=u.eval_every,
                            checkpoint_every=max(u.eval_every, 50), log_every=10)
    result = train(model, objective, batches, train_cfg, u.steps, workdir, evaluate=setting.evaluate,
                   eval_at_start=True, progress=progress, description=f"unlearn {point.description}",
                   run_key=key)
    save_model(model, workdir / "model", setting.tokenizer)
    (workdir / "config.yaml").write_text(dump_yaml(cfg))
    before = next(line for line in result.history if line["kind"] == "eval" and line["step"] == 0)
    meta = {
        "kind": "unlearn", "label": point.label, "method": point.method, "lr": point.lr,
        "knobs": dict(point.knobs), "sam_rho": point.sam_rho, "inputs": {"base": base_key}, "seed": cfg.seed,
        "steps": result.steps, "tokens": result.tokens,
        "labelled_tokens": result.tokens,  # every token it reads is forget- or retain-tagged
        "flops": result.flops, "flops_total": sum(result.flops.values()),
        "wall_time_s": round(result.wall_time_s, 2),
        "metrics_before": {k: v for k, v in before.items() if k not in ("kind", "step", "tokens", "flops")},
        "final_metrics": result.final_metrics,
    }
    meta["accounting"] = accounting({**meta, "key": key}, cfg.run_dir)
    return artifact.finish(meta)


def select_teacher(candidates: list[dict[str, Any]], base_retain: float, rule: SelectionRule,
                   score: Score = ACCURACY) -> dict[str, Any]:
    """Lowest forget metric among runs whose retain metric keeps `min_retain_fraction` of the base model's;
    ties go to the higher retain metric. If no run qualifies, none is chosen (and that is recorded)."""
    threshold = score.retain_floor(base_retain, rule.min_retain_fraction)
    for c in candidates:
        c["qualifies"] = c["retain"] >= threshold
    qualified = [c for c in candidates if c["qualifies"]]
    chosen = min(qualified, key=lambda c: (c["forget"], -c["retain"]))["name"] if qualified else None
    return {"rule": rule.model_dump(), "base_retain": base_retain, "retain_threshold": threshold,
            "chosen": chosen, "candidates": candidates}


def teacher_selection(cfg: ExperimentConfig, runs: Sequence[tuple[SweepPoint, Path]]) -> dict[str, Any]:
    """The teacher of each method family among finished unlearning runs, by `cfg.unlearn.selection`; each
    candidate keeps its artifact path."""
    families: dict[str, list[dict[str, Any]]] = {}
    base_retain = None
    for point, path in runs:
        meta = json.loads((Path(path) / "meta.json").read_text())
        base_retain = meta["metrics_before"]["retain"]
        families.setdefault(point.label, []).append({
            "name": meta["name"], "path": str(path), "lr": point.lr, "knobs": dict(point.knobs),
            "retain": meta["final_metrics"]["retain"], "forget": meta["final_metrics"]["forget"]})
    score = score_of(cfg.setting.name)
    return {label: select_teacher(c, base_retain, cfg.unlearn.selection, score) for label, c in families.items()}


def run_unlearning(cfg: ExperimentConfig, *, progress: bool = True) -> dict[str, Any]:
    """Every sweep point, then the teacher of each method family; writes `<run_dir>/unlearn_selection.json`."""
    runs = [(point, unlearn(cfg, point, progress=progress)) for point in sweep_points(cfg)]
    selection = teacher_selection(cfg, runs)
    (Path(cfg.run_dir) / "unlearn_selection.json").write_text(json.dumps(selection, indent=2) + "\n")
    return selection


# ----------------------------------------------------------------------------------------------------------
# Relearning attack: plain CE fine-tuning of a finished model at each LR of a grid. The data stream depends on the
# seed and the attack config only, never on the target, so every model attacked with one config sees the same
# batches in the same order (comparisons between models are paired).


def attack_data(cfg: ExperimentConfig, setting) -> tuple[list, PackedBatches]:
    """The attack's documents and shuffled batches: forget-operation documents, or a fresh draw of the
    pretraining mixture (all operations, as the paper attacked arithmetic)."""
    a = cfg.attack
    seed = derive_seed(cfg.seed, "attack")
    if a.data == "forget":
        problems = setting.labelled_documents("forget", a.examples, seed)
    else:
        problems = setting.mixture_documents(a.examples, seed)
    rows = setting.packed_rows(problems, cfg.model.context)
    return problems, PackedBatches(rows, a.batch_size, seed=seed)


def attack_data_key(cfg: ExperimentConfig) -> str:
    """Everything that determines the attack's batches: equal keys mean identical data in identical order."""
    a = cfg.attack
    return stable_hash({"stage": "attack-data", "seed": cfg.seed, "setting": data_fields(cfg),
                        "context": cfg.model.context, "data": a.data, "examples": a.examples,
                        "batch_size": a.batch_size})


def target_key(target: Path) -> str:
    """The attacked model's identity: its stage key from meta.json, or (a model made elsewhere) its weights' hash."""
    meta = target / "meta.json"
    key = json.loads(meta.read_text()).get("key") if meta.is_file() else None
    return key or stable_hash({p.name: file_sha256(p) for p in sorted((target / "model").glob("*.safetensors"))})


def attack_key(cfg: ExperimentConfig, target: str) -> str:
    return stable_hash({"stage": "attack", "target": target, "seed": cfg.seed, "data": attack_data_key(cfg),
                        "eval_seed": cfg.setting.eval_seed,
                        "eval_formats": getattr(cfg.setting, "evaluated_formats", None),
                        "attack": cfg.attack.model_dump(mode="json")})


def attack_one_lr(cfg: ExperimentConfig, target: Path, lr: float, batches: PackedBatches,
                  setting, workdir: Path, key: str, progress: bool) -> dict[str, Any]:
    """Fine-tune a fresh load of the target at one LR in `workdir`; a finished LR (done.json) is not redone.
    Returns the run's totals and its forget and retain curves read back from its metrics.jsonl."""
    a = cfg.attack
    done = workdir / "done.json"
    if not done.is_file():
        model = load_model(target / "model")
        if model.config.vocab_size < len(setting.tokenizer):
            raise UserError(f"{target / 'model'} has {model.config.vocab_size} embedding rows, fewer than the "
                            f"setting's tokenizer ({len(setting.tokenizer)} tokens); attack a model trained by undo "
                            "on this setting")
        train_cfg = TrainConfig(batch_size=a.batch_size, lr=lr, schedule="constant", warmup_steps=0,
                                weight_decay=0.0, clip=1.0, max_steps=a.steps, eval_every=a.eval_every,
                                checkpoint_every=max(a.eval_every, 50), log_every=10)
        result = train(model, OBJECTIVES["lm"](), batches, train_cfg, a.steps, workdir, evaluate=setting.evaluate,
                       eval_at_start=True, progress=progress, description=f"attack {target.name} lr={lr:g}",
                       run_key=f"{key}:lr={lr!r}")
        done.write_text(json.dumps({"lr": lr, "steps": result.steps, "tokens": result.tokens, "flops": result.flops,
                                    "wall_time_s": round(result.wall_time_s, 2)}) + "\n")
    shutil.rmtree(workdir / "checkpoint", ignore_errors=True)
    evals = [line for line in read_metrics(workdir / "metrics.jsonl") if line["kind"] == "eval"]
    steps = [line["step"] for line in evals]
    return {**json.loads(done.read_text()),
            "forget": Curve(steps, [line["forget"] for line in evals]).to_dict(),
            "retain": Curve(steps, [line["retain"] for line in evals]).to_dict()}


def attack(cfg: ExperimentConfig, target: Path, *, progress: bool = True) -> Path:
    """Relearning attack on the model in `target/model/` into `<run_dir>/attack_<target name>_<key>/`: one plain
    CE fine-tune per LR of `cfg.attack.lrs` (constant LR, AdamW without weight decay, clip 1.0), forget and retain
    accuracy every `eval_every` steps from step 0, then the attacker-best curve, snapshots and area."""
    target = Path(target)
    if not (target / "model").is_dir():
        raise UserError(f"nothing to attack at {target}: expected an artifact folder with a model/ subfolder, "
                        f"e.g. {Path(cfg.run_dir) / 'base'}")
    a = cfg.attack
    tkey = target_key(target)
    key = attack_key(cfg, tkey)
    artifact = Artifact(cfg.run_dir, f"attack_{target.resolve().name}_{key[:8]}", key)
    if artifact.is_complete():
        console.print(f"[green]attack {target.name}[/]: complete artifact found at {artifact.path}, not recomputed")
        return artifact.path
    workdir = artifact.start()

    # Evaluation during the attack uses `attack.eval_per_cell` items per cell (many evaluations per LR).
    setting = setting_for(cfg, eval_items=a.eval_per_cell)
    problems, batches = attack_data(cfg, setting)
    runs = [attack_one_lr(cfg, target, lr, batches, setting, workdir / f"lr_{lr:g}", key, progress) for lr in a.lrs]

    forget = {run["lr"]: Curve.from_dict(run["forget"]) for run in runs}
    retain = {run["lr"]: Curve.from_dict(run["retain"]) for run in runs}
    capped = a.max_retain_drop is not None
    best = attacker_best(forget, retain if capped else None, a.max_retain_drop)
    tokens_per_step = a.batch_size * cfg.model.context
    flops: Counter[str] = Counter()
    for run in runs:
        flops.update(run["flops"])
    (workdir / "config.yaml").write_text(dump_yaml(cfg))
    meta = {
        "kind": "attack", "inputs": {"target": {"key": tkey, "path": str(target)}}, "seed": cfg.seed,
        "attack": a.model_dump(mode="json"),
        "data": {"key": attack_data_key(cfg), "kind": a.data, "documents": len(problems),
                 "sequences": len(batches.rows), "tokens_per_step": tokens_per_step},
        "metrics_before": {"forget": forget[a.lrs[0]].values[0], "retain": retain[a.lrs[0]].values[0]},
        "per_lr": runs,
        "best": best.to_dict(),
        "max_retain_drop": a.max_retain_drop,
        "snapshots": [{**row, "tokens": row["budget"] * tokens_per_step} for row in snapshots(best, a.budgets)],
        "area": {"up_to": max(a.budgets), "value": area_under(best, max(a.budgets))},
        "tokens": sum(run["tokens"] for run in runs),
        "flops": dict(flops), "flops_total": sum(flops.values()),
        "wall_time_s": round(sum(run["wall_time_s"] for run in runs), 2),
    }
    path = artifact.finish(meta)
    console.print(f"[green]attack {target.name}[/]: done -> {path}")
    return path


def _normalised(p_method: float, p_unlearn_only: float, p_oracle: float) -> dict[str, Any]:
    try:
        return {"robustness": normalised_robustness(p_method, p_unlearn_only, p_oracle), "note": None}
    except UserError as err:  # unlearn-only and oracle relearn equally here: robustness is undefined
        return {"robustness": None, "note": str(err)}


def robustness_summary(results: dict[str, Path], unlearn_only: str, oracle: str,
                       budgets: Sequence[int]) -> dict[str, dict[str, Any]]:
    """For each attacked model (name -> attack artifact folder): the attacker-best forget value (and its LR) at each
    budget and the area up to the largest budget, each with robustness normalised between the `unlearn_only`
    model (0) and the `oracle` (1); None, with the reason, where the two relearn equally."""
    for role, name in (("unlearn-only", unlearn_only), ("oracle", oracle)):
        if name not in results:
            raise UserError(f"the {role} model {name!r} is not among the attacked models: {', '.join(results)}")
    curves = {name: BestCurve.from_dict(json.loads((path / "meta.json").read_text())["best"])
              for name, path in results.items()}
    up_to = max(budgets)
    summary: dict[str, dict[str, Any]] = {}
    for name, curve in curves.items():
        rows = []
        for row in snapshots(curve, budgets):
            rows.append({**row, **_normalised(row["value"], value_at(curves[unlearn_only], row["budget"]),
                                              value_at(curves[oracle], row["budget"]))})
        area = area_under(curve, up_to)
        summary[name] = {"before": curve.values[0], "budgets": rows, "area": {
            "up_to": up_to, "value": area,
            **_normalised(area, area_under(curves[unlearn_only], up_to), area_under(curves[oracle], up_to))}}
    return summary


# ----------------------------------------------------------------------------------------------------------
# Distillation (Unlearn-and-Distill, UNDO, oracle matching): a frozen teacher's full next-token distributions are
# matched by a student on a fresh draw of the unlabelled pretraining mixture (forget operations included: no labels
# are read), until the student's retain accuracy comes within `stop_tolerance` of the teacher's.

DistillInit = Literal["random", "noised", "model"]


def distill_key(cfg: ExperimentConfig, teacher_key: str, init: DistillInit, alpha: float | None,
                start_key: str | None) -> str:
    """Everything that determines the student: the teacher, the init (and its inputs), the data, the training
    knobs, and the evaluation that drives the stop rule (so eval_every and the eval set are part of it)."""
    d = cfg.distill
    return stable_hash({
        "stage": "distill", "teacher": teacher_key, "init": init, "seed": cfg.seed,
        "alpha": alpha if init == "noised" else None, "beta": d.beta if init == "noised" else None,
        "start": start_key if init == "model" else None,
        "student_model": (d.student_model or cfg.model).model_dump(mode="json") if init == "random" else None,
        **evaluation_fields(cfg), "context": cfg.model.context,
        "train": d.train.model_dump(mode="json", exclude={"checkpoint_every", "log_every"}),
        "stop_tolerance": d.stop_tolerance, "stop_on": stop_metrics(init), "temperature": d.temperature,
        "examples": d.examples})


def stop_metrics(init: DistillInit) -> list[str]:
    """What the stop rule compares with the teacher. A fresh or noised student starts below the teacher on retain,
    so reaching the teacher's retain accuracy is the paper's rule. A student started from a trained checkpoint
    (oracle matching: the base model toward the oracle) may already be there at step 0, so it must also come down
    to the teacher's forget accuracy: both within the tolerance."""
    return ["retain", "forget"] if init == "model" else ["retain"]


def distill_data(cfg: ExperimentConfig, setting) -> tuple[list, PackedBatches]:
    """A fresh draw of the unlabelled pretraining mixture (every operation) and its shuffled batches."""
    seed = derive_seed(cfg.seed, "distill")
    problems = setting.mixture_documents(cfg.distill.examples, seed)
    rows = setting.packed_rows(problems, cfg.model.context)
    return problems, PackedBatches(rows, cfg.distill.train.batch_size, seed=seed)


def distill_student(cfg: ExperimentConfig, setting, teacher: Path, init: DistillInit,
                    alpha: float | None, start: Path | None) -> torch.nn.Module:
    """The student before distillation: a fresh init, a shrink-and-perturbed copy of the teacher, or a checkpoint."""
    from undo.noise import shrink_and_perturb

    if init == "random":
        tokenizer = setting.tokenizer
        return build_model(cfg.distill.student_model or cfg.model, seed=cfg.seed, pad_id=tokenizer.pad_token_id,
                           eos_id=tokenizer.eos_token_id, tokenizer_size=len(tokenizer))
    if init == "noised":
        return shrink_and_perturb(load_model(teacher / "model"), alpha, cfg.distill.beta,
                                  seed=derive_seed(cfg.seed, "noise"))
    return load_model(start / "model")


def distill(cfg: ExperimentConfig, teacher: Path, *, init: DistillInit, alpha: float | None = None,
            start: Path | None = None, progress: bool = True) -> Path:
    """Distil the model in `teacher/model/` into a student (see `distill_student`) with forward KL on the
    pretraining mixture, evaluating every `distill.train.eval_every` steps from step 0 and stopping at the first
    evaluation where student retain >= teacher retain - `distill.stop_tolerance` (or at `max_steps`)."""
    teacher = Path(teacher)
    d = cfg.distill
    if init not in ("random", "noised", "model"):
        raise UserError(f"distill: init must be 'random', 'noised' or 'model', got {init!r}")
    if not (teacher / "model").is_dir():
        raise UserError(f"no teacher at {teacher}: expected an artifact folder with a model/ subfolder")
    if init == "noised":
        if alpha is None:
            raise UserError("distill: init 'noised' needs an alpha (the shrink-and-perturb strength)")
        if not 0.0 <= float(alpha) <= 1.0:
            raise UserError(f"distill: alpha = {alpha} is out of range: it must be in [0, 1]")
        alpha = float(alpha)
    else:
        alpha = None
    if init == "model":
        if start is None:
            raise UserError("distill: init 'model' needs --start ARTIFACT (the checkpoint the student starts from, "
                            "e.g. the base model for oracle matching)")
        start = Path(start)
        if not (start / "model").is_dir():
            raise UserError(f"no start model at {start}: expected an artifact folder with a model/ subfolder")
    else:
        start = None
    teacher_key = target_key(teacher)
    start_key = target_key(start) if start is not None else None
    key = distill_key(cfg, teacher_key, init, alpha, start_key)
    alpha_part = f"_a{alpha:g}" if alpha is not None else ""
    artifact = Artifact(cfg.run_dir, f"distill_{init}{alpha_part}_{teacher.resolve().name}_{key[:8]}", key)
    if artifact.is_complete():
        console.print(f"[green]distill {init}{alpha_part}[/]: complete artifact found at {artifact.path}, "
                      "not recomputed")
        return artifact.path
    workdir = artifact.start()

    setting = setting_for(cfg)
    problems, batches = distill_data(cfg, setting)
    teacher_model = load_model(teacher / "model").eval().requires_grad_(False)
    if teacher_model.config.vocab_size < len(setting.tokenizer):
        raise UserError(f"{teacher / 'model'} has {teacher_model.config.vocab_size} embedding rows, fewer than the "
                        f"setting's tokenizer ({len(setting.tokenizer)} tokens); distil a model trained by undo "
                        "on this setting")
    teacher_metrics = setting.evaluate(teacher_model)
    threshold = setting.score.at_least_near(teacher_metrics["retain"], d.stop_tolerance)
    forget_ceiling = setting.score.at_most_near(teacher_metrics["forget"], d.stop_tolerance)
    match_forget = "forget" in stop_metrics(init)
    student = distill_student(cfg, setting, teacher, init, alpha, start)

    def stop_rule(step: int, metrics: dict[str, float]) -> bool:
        return metrics["retain"] >= threshold and (not match_forget or metrics["forget"] <= forget_ceiling)

    objective = OBJECTIVES["distill"](teacher_model, temperature=d.temperature)
    max_steps = d.train.max_steps
    result = train(student, objective, batches, d.train, max_steps, workdir, evaluate=setting.evaluate,
                   stop_rule=stop_rule, eval_at_start=True, progress=progress,
                   description=f"distill {init}{alpha_part}", run_key=key)
    save_model(student, workdir / "model", setting.tokenizer)
    (workdir / "config.yaml").write_text(dump_yaml(cfg))
    flops_total = sum(result.flops.values())
    meta = {
        "kind": "distill", "init": init, "alpha": alpha, "beta": d.beta if init == "noised" else None,
        "inputs": {"teacher": teacher_key, "start": start_key},
        "input_paths": {"teacher": str(teacher), "start": str(start) if start is not None else None},
        "seed": cfg.seed,
        "teacher_metrics": teacher_metrics, "final_metrics": result.final_metrics,
        "stop_rule": {"tolerance": d.stop_tolerance, "on": stop_metrics(init), "threshold": threshold,
                      "forget_ceiling": forget_ceiling if match_forget else None, "eval_every": d.train.eval_every,
                      "max_steps": max_steps},
        "stopped_early": result.stopped_early,
        "stop_step": result.steps if result.stopped_early else None,
        "steps": result.steps, "tokens": result.tokens,
        "labelled_tokens": 0,  # distillation text is the unlabelled mixture
        "flops": result.flops, "flops_total": flops_total,
        "flops_at_stop": flops_total if result.stopped_early else None,
        "flops_per_token": train_flops_per_token(student, cfg.model.context),
        "parameters": count_parameters(student), "matmul_parameters": matmul_parameters(student),
        "wall_time_s": round(result.wall_time_s, 2),
        "data": {"documents": len(problems), "sequences": len(batches.rows)},
    }
    meta["accounting"] = accounting({**meta, "key": key}, cfg.run_dir)
    path = artifact.finish(meta)
    console.print(f"[green]distill {init}{alpha_part}[/]: {'stopped' if result.stopped_early else 'capped'} at "
                  f"step {result.steps} -> {path}")
    return path
