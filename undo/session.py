"""The in-memory Python API, for notebooks and scripts: models in, models and typed records out.

    study = undo.load_study(path, overrides)      a study's config, its setting and the exact texts its stages use
    undo.unlearn(model, tokenizer, forget=..., retain=..., method=...)   -> Unlearned(model, result: UnlearnResult)
    undo.distill(teacher, tokenizer, data=..., init="noised" | "random") -> Distilled(model, result: DistillResult)
    undo.attack(model, tokenizer, data=..., lrs=..., evaluate=...)     -> Attacked(result: AttackResult)
    undo.evaluate(model, study_or_setting)                              -> {"retain": ..., "forget": ..., ...}

Each function trains with the same core as the command line's stage (`undo.stages.unlearn.unlearn_model`,
`undo.stages.distill.distill_model`, `undo.stages.attack.attack_model`), so the same model, texts and options give
the same weights and numbers as `undo unlearn`/`distill`/`attack` (tests/test_python_api.py checks it). A model is
an in-memory transformers model or a path (an artifact folder with model/, or a model folder); texts are a list of
strings or a corpus file (`undo.settings.corpora.read_documents`: .txt, .jsonl, .parquet). The input model is never
changed unless `in_place=True`. Work (the training log, checkpoints) goes to a temporary folder, or with `workdir=`
to a subfolder named by the request's hash: the same call again resumes there, another call never mixes in.

`evaluate=` takes a `Study` (its validation split), a built setting (`Study.setting()`), or any function
model -> {"retain": score, "forget": score} (higher = more of the capability). Bad input is one `UserError` line.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union

import torch
from pydantic import BaseModel, ValidationError

from undo.config import AttackConfig, DistillConfig, ExperimentConfig, UnlearnConfig
from undo.config.loading import describe_validation_error, load_config
from undo.core.artifacts import model_or_artifact, stable_hash, verified_meta
from undo.core.data import PackedBatches, PairedBatches, derive_seed, pack
from undo.core.models import DTYPES, check_vocabulary, fresh_model, load_model, load_tokenizer
from undo.core.noise import shrink_and_perturb
from undo.schema.errors import UserError
from undo.schema.results import AttackData, AttackResult, DistillResult, UnlearnResult
from undo.schema.score import ACCURACY
from undo.settings import Setting
from undo.settings.base import encode_texts
from undo.settings.corpora import read_documents
from undo.settings.corpus_store import tokenizer_fingerprint

Model = Union[torch.nn.Module, str, Path]  # an in-memory causal LM, or a folder holding one
Texts = Union[Sequence[str], str, Path]  # the texts themselves, or a corpus file
Evaluator = Callable[[torch.nn.Module], dict[str, float]]


# --- the study: its config, its setting, the texts its stages train on ----------------------------------------


@dataclass(frozen=True)
class Study:
    """A study's resolved config (`undo.load_study`), with what the Python API needs from it: the setting that
    evaluates models, the base model, and the exact texts each stage of the study trains on."""

    config: ExperimentConfig

    def run(self, progress: bool = True, workers: int | None = None) -> Path:
        """Run the whole study, as `undo run` does (artifacts in `config.run_dir`, then the report). Returns the run
        directory."""
        from undo.api import run_study

        return run_study(self.config, progress=progress, workers=workers)

    def pretrain(self, which: Literal["base", "oracle"] = "base", progress: bool = True) -> torch.nn.Module:
        """The study's pretrained base model (or oracle), made as `undo pretrain` makes it (reused when its artifact
        in `config.run_dir` is complete), loaded in memory."""
        from undo.api import pretrain

        [path] = pretrain(self.config, which, progress=progress)
        return load_model(path / "model", self.config.model)

    def setting(self, split: Literal["validation", "test"] = "validation") -> Setting:
        """The study's setting, built: `.evaluate(model)` on the `split` held-out split (as the stages evaluate it
        while they train), `.tokenizer`, `.score`."""
        from undo.stages.evaluation import setting_for

        if split not in ("validation", "test"):
            raise UserError(f"split takes 'validation' or 'test', got {split!r}")
        return setting_for(self.config, split=split)

    @property
    def tokenizer(self) -> Any:
        """The tokenizer the study's models read (the setting's own, or the checkpoint's)."""
        return self.setting().tokenizer

    def unlearning_texts(self) -> tuple[list[str], list[str]]:
        """(forget, retain): the labelled texts every unlearning run of the study trains on (`unlearn.examples` of
        each side; the forget side from `unlearn.forget_data` when set), in the stage's order."""
        from undo.stages.labels import unlearning_data

        documents, _ = unlearning_data(self.config, self.setting())
        return [d.text for d in documents["forget"]], [d.text for d in documents["retain"]]

    def distillation_texts(self) -> list[str]:
        """The unlabelled texts the study's distillations train on (`distill.examples` of the mixture)."""
        from undo.stages.distill import distill_data

        documents, _ = distill_data(self.config, self.setting())
        return [d.text for d in documents]

    def attack_texts(self) -> list[str]:
        """The texts the study's relearning attack trains on (`attack.data`: the mixture or forget documents)."""
        from undo.stages.attack import attack_data
        from undo.stages.evaluation import setting_for

        documents, _ = attack_data(self.config, setting_for(self.config, self.config.attack.eval_per_cell))
        return [d.text for d in documents]

    def attack_evaluator(self) -> Evaluator:
        """What `undo attack` measures at each evaluated step: the validation split (the attacker's choice) and the
        test split (`test/...`, the reported curve), each on `attack.eval_per_cell` items."""
        from undo.stages.evaluation import setting_for

        cfg = self.config
        validation = setting_for(cfg, cfg.attack.eval_per_cell)
        test = setting_for(cfg, cfg.attack.eval_per_cell, split="test")

        def evaluate(model: torch.nn.Module) -> dict[str, float]:
            return {**validation.evaluate(model), **{f"test/{k}": v for k, v in test.evaluate(model).items()}}

        return evaluate

    def evaluation_key(self, attack: bool = False) -> str:
        """The identity of the evaluation `evaluate=study` measures (recorded in results, as the stages do); with
        `attack`, of the attack's reported one (the test split at `attack.eval_per_cell` items)."""
        from undo.stages.evaluation import evaluation_key

        section = self.config.setting
        if attack:
            section = section.with_eval_items(self.config.attack.eval_per_cell).with_split("test")
        return evaluation_key(section, self.config.model)


def load_study(path: str | Path | None = None, overrides: Sequence[str] = ()) -> Study:
    """A study from its YAML file (None: the embedded demo study, as `undo run` with no file), with `overrides` such
    as `["seed=1", "unlearn.steps=10"]` applied exactly as the command line's `--set`."""
    if isinstance(overrides, str):
        raise UserError(f"overrides takes a list of key=value strings, got the string {overrides!r}; wrap it in [...]")
    return Study(load_config(path, list(overrides)))


# --- what the functions return ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Unlearned:
    """The unlearned model (a copy of the input unless `in_place=True`) and its record, as `meta.json` holds it."""

    model: torch.nn.Module
    result: UnlearnResult


@dataclass(frozen=True)
class Distilled:
    """The student after distillation and its record (teacher's and final metrics, the stop rule, FLOPs)."""

    model: torch.nn.Module
    result: DistillResult


@dataclass(frozen=True)
class Attacked:
    """The relearning attack's record: every LR's curves and the attacker-best curve (`result.best`: at each
    evaluated step the best forget score over the LRs, and the LR that gave it). No model: each LR trained a copy."""

    result: AttackResult

    @property
    def best(self) -> dict[int, float]:
        """The attacker-best forget score at each evaluated step."""
        return dict(zip(self.result.best.steps, self.result.best.values))


# --- the functions ----------------------------------------------------------------------------------------------


def unlearn(model: Model, tokenizer: Any = None, *, forget: Texts, retain: Texts, method: str = "maxent",
            lr: float = 1e-3, steps: int = 100, batch_size: int = 8, knobs: dict[str, Any] | None = None,
            context: int | None = None, seed: int = 0, evaluate: Study | Setting | Evaluator | None = None,
            eval_every: int | None = None, in_place: bool = False, workdir: str | Path | None = None,
            progress: bool = True) -> Unlearned:
    """Unlearn `forget` from `model` while keeping `retain`: `steps` steps of `method` (any unlearning method of
    `undo.objectives`: grad_ascent, grad_diff, maxent, npo, rmu, simnpo, repnoise; its `knobs`, e.g.
    `{"retain_weight": 15}`) at a constant `lr`, each reading `batch_size` rows of `context` tokens (default: the
    model's context) from each side, in an order drawn from `seed`; AdamW without weight decay, gradients clipped
    at 1. With `evaluate`, measured at step 0, every `eval_every` steps and at the end (`result.metrics_before`,
    `result.final_metrics`). The same as one sweep point of `undo unlearn` with these options."""
    model, tokenizer = _model_and_tokenizer(model, tokenizer, evaluate)
    forget, retain = _texts(forget, "forget"), _texts(retain, "retain")
    knobs = dict(knobs or {})
    options = _section(UnlearnConfig, {"steps": steps, "batch_size": batch_size, "eval_every": eval_every or steps,
                                       "methods": [{"method": method, "lrs": [lr], "knobs": knobs}]}, "undo.unlearn")
    from undo.stages.unlearn import SweepPoint, unlearn_model

    point = SweepPoint(method, method, float(lr), tuple(sorted(knobs.items())), None)  # as `sweep_points` makes it
    context = _context(model, context)
    rows = {side: _rows(tokenizer, texts, context, batch_size, side) for side, texts in
            (("forget", forget), ("retain", retain))}
    batches = PairedBatches(rows["forget"], rows["retain"], batch_size, seed=derive_seed(seed, "unlearn"))
    model = _trainable(model if in_place else copy.deepcopy(model))
    request = {"api": "unlearn", "method": method, "lr": lr, "knobs": knobs, "steps": steps, "batch_size": batch_size,
               "eval_every": eval_every, "context": context, "seed": seed, "forget": forget, "retain": retain}
    with _work(workdir, request, model) as (folder, key):
        result = unlearn_model(model, point, batches, options, folder, seed=seed, evaluate=_evaluator(evaluate),
                               evaluation_key=_evaluation_key(evaluate), progress=progress, run_key=key)
    return Unlearned(model.eval(), result)


def distill(teacher: Model, tokenizer: Any = None, *, data: Texts,
            init: Literal["noised", "random", "model"] = "noised", start: Model | None = None,
            alpha: float = 0.5, beta: float = 0.1, steps: int = 1000, batch_size: int = 8, lr: float = 1e-3,
            warmup: int = 100, temperature: float = 1.0, stop_tolerance: float | None = None,
            evaluate: Study | Setting | Evaluator | None = None, eval_every: int | None = None,
            context: int | None = None, seed: int = 0, workdir: str | Path | None = None,
            progress: bool = True) -> Distilled:
    """Distil the frozen `teacher` into a student on `data` (forward KL on its full next-token distributions at
    `temperature`): `init="noised"` (UNDO) starts from the teacher after shrink-and-perturb with `alpha` and `beta`
    (noise drawn from `seed`), `init="random"` from a fresh init of the teacher's architecture (Unlearn-and-Distill),
    `init="model"` from a copy of `start` (oracle matching: the base model distilled toward the oracle's outputs;
    its stop rule also asks the student's forget score down to the teacher's).
    Up to `steps` steps (AdamW, `warmup` steps of linear warmup then cosine decay, as `distill.train`). With
    `stop_tolerance` (needs `evaluate`), the paper's stop rule: the run stops at the first probe where the student's
    retain score is within the tolerance of the teacher's. The same as `undo distill` with these options."""
    if init not in ("noised", "random", "model"):
        raise UserError(f"init takes 'noised', 'random' or 'model', got {init!r}")
    if (init == "model") != (start is not None):
        raise UserError("init='model' needs start= (the model the student starts from, e.g. the base model for "
                        "oracle matching)" if start is None else f"start= only applies to init='model' (this is "
                        f"init={init!r})")
    if stop_tolerance is not None and evaluate is None:
        raise UserError("stop_tolerance needs evaluate= (a Study, a setting or a function): the stop rule compares "
                        "the student's retain score with the teacher's")
    teacher, tokenizer = _model_and_tokenizer(teacher, tokenizer, evaluate)
    texts = _texts(data, "data")
    options = _section(DistillConfig, {
        "init": init, "alphas": [alpha], "beta": beta, "temperature": temperature, "stop_tolerance": stop_tolerance,
        "train": {"max_steps": steps, "batch_size": batch_size, "lr": lr, "warmup_steps": warmup,
                  "eval_every": eval_every or steps}}, "undo.distill")
    from undo.stages.distill import distill_model

    context = _context(teacher, context)
    rows = _rows(tokenizer, texts, context, batch_size, "data")
    batches = PackedBatches(rows, batch_size, seed=derive_seed(seed, "distill"))
    if init == "noised":  # as the stage: the teacher's weights, shrunk and perturbed
        student = shrink_and_perturb(_trainable(copy.deepcopy(teacher)), alpha, beta, seed=derive_seed(seed, "noise"))
    elif init == "model":  # a copy of the start model (the caller's stays as it was)
        start, _ = _model_and_tokenizer(start, tokenizer, evaluate)
        student = _trainable(copy.deepcopy(start))
    else:
        dtype = str(next(teacher.parameters()).dtype).removeprefix("torch.")
        student = fresh_model(teacher.config, seed=seed, dtype=dtype if dtype in DTYPES else "float32")
    frozen = copy.deepcopy(teacher).eval().requires_grad_(False)  # the caller's teacher keeps its own flags
    request = {"api": "distill", "init": init, "alpha": alpha if init == "noised" else None, "beta": beta,
               "steps": steps, "batch_size": batch_size, "lr": lr, "warmup": warmup, "temperature": temperature,
               "stop_tolerance": stop_tolerance, "eval_every": eval_every, "context": context, "seed": seed,
               "data": texts}
    if init == "model" and workdir is not None:  # the student's start is an input too
        request["start"] = _weights_hash(start)
    setting = _setting_of(evaluate)
    with _work(workdir, request, teacher) as (folder, key):
        result = distill_model(frozen, student, batches, options, folder, init=init,
                               alpha=float(alpha) if init == "noised" else None, seed=seed,
                               evaluate=_evaluator(evaluate), probe=setting.evaluate_sides if setting else None,
                               score=setting.score if setting else ACCURACY, documents=len(texts),
                               evaluation_key=_evaluation_key(evaluate), progress=progress, run_key=key)
    return Distilled(student.eval(), result)


def attack(model: Model, tokenizer: Any = None, *, data: Texts, evaluate: Study | Setting | Evaluator,
           lrs: Sequence[float] = (1e-4, 3e-4, 1e-3), steps: int = 100, batch_size: int = 8,
           eval_every: int | None = None, eval_steps: Sequence[int] | None = None,
           budgets: Sequence[int] | None = None, kind: str = "finetune", max_retain_drop: float | None = None,
           extend_grid: int = 2, context: int | None = None, seed: int = 0, workdir: str | Path | None = None,
           progress: bool = True) -> Attacked:
    """The relearning attack: fine-tune a copy of `model` on `data` at each LR of `lrs` for `steps` steps (`kind`
    "finetune": every weight; "lora": rank-8 adapters), evaluating forget and retain at step 0, every `eval_every`
    steps (or at `eval_steps`) and at the end, and keep the attacker's best forget score at each evaluated step
    (`result.best`; snapshots at `budgets`, default the last step; an LR half a decade beyond the grid is tried
    where its best LR is an edge, at most `extend_grid` times per side). `evaluate` is what the attacker reads: a
    Study chooses on its validation split and reports its test split, as `undo attack` does; a setting or function
    is both. The same as `undo attack` with these options."""
    if evaluate is None:
        raise UserError("attack needs evaluate= (a Study, a setting or a function): the attacker-best curve is made "
                        "of forget scores")
    model, tokenizer = _model_and_tokenizer(model, tokenizer, evaluate)
    texts = _texts(data, "data")
    options = _section(AttackConfig, {
        "lrs": list(lrs), "steps": steps, "batch_size": batch_size, "eval_every": eval_every or max(1, steps // 10),
        "eval_steps": list(eval_steps) if eval_steps else None, "budgets": list(budgets or [steps]),
        "kinds": [kind], "max_retain_drop": max_retain_drop, "extend_grid": extend_grid}, "undo.attack")
    from undo.stages.attack import attack_model

    context = _context(model, context)
    rows = _rows(tokenizer, texts, context, batch_size, "data")
    batches = PackedBatches(rows, batch_size, seed=derive_seed(seed, "attack"))
    if isinstance(evaluate, Study):
        measure = evaluate.attack_evaluator()
    else:  # one evaluation is both the attacker's view and the reported one
        one = _evaluator(evaluate)

        def measure(m: torch.nn.Module) -> dict[str, float]:
            metrics = one(m)
            return {**metrics, **{f"test/{k}": v for k, v in metrics.items()}}

    request = {"api": "attack", "options": options.model_dump(mode="json"), "context": context, "seed": seed,
               "data": texts}
    data_record = AttackData(key=stable_hash({**request, "options": None}), kind="texts", documents=len(texts),
                             sequences=len(rows), tokens_per_step=batch_size * context)
    with _work(workdir, request, model) as (folder, key):
        result = attack_model(lambda: _trainable(copy.deepcopy(model)), kind, batches, options, folder,
                              evaluate=measure, name="model", seed=seed, data=data_record,
                              evaluation_key=_evaluation_key(evaluate, attack=True), progress=progress,
                              run_key=key)
    return Attacked(result)


def evaluate(model: Model, study_or_setting: Study | Setting, tokenizer: Any = None) -> dict[str, float]:
    """The setting's metrics of `model` (`retain`, `forget`, and the setting's own, e.g. per operation): a Study
    measures its validation split, as `undo eval` does; a built setting (`Study.setting("test")`) its own split.
    A `tokenizer` given (or the one saved beside a model folder) must be the setting's: through another one the
    numbers would mean nothing."""
    setting = _setting_of(study_or_setting)
    if setting is None:
        raise UserError(f"evaluate takes a Study or a setting (Study.setting()), got {type(study_or_setting).__name__}")
    if isinstance(model, (str, Path)):
        model, saved = _load(model)
        tokenizer = tokenizer or saved
    elif not isinstance(model, torch.nn.Module):
        raise UserError(f"model must be a transformers model or a folder, got {type(model).__name__}")
    if tokenizer is not None and tokenizer_fingerprint(tokenizer) != tokenizer_fingerprint(setting.tokenizer):
        raise UserError("the model's tokenizer is not the setting's: evaluate it with the study it was trained in")
    check_vocabulary(model, setting.tokenizer, "the evaluated model")
    return setting.evaluate(model)


# --- helpers ----------------------------------------------------------------------------------------------------


def _load(path: str | Path) -> tuple[torch.nn.Module, Any]:
    """A model and its tokenizer from an artifact folder (its files checked against its record) or a model folder."""
    path = Path(path)
    directory = model_or_artifact(path)
    if not (directory / "config.json").is_file():
        raise UserError(f"no model at {path}: give an artifact folder (with model/) or a model folder (config.json "
                        "and safetensors weights)")
    if (path / "meta.json").is_file():
        verified_meta(path)
    from undo.config import ModelConfig

    tokenizer = None
    if any((directory / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json")):
        tokenizer = load_tokenizer(str(directory), ModelConfig(), role=str(path))
    return load_model(directory, ModelConfig()), tokenizer


def _model_and_tokenizer(model: Model, tokenizer: Any, evaluate: Any) -> tuple[torch.nn.Module, Any]:
    """The model in memory and the tokenizer that reads its texts: the one given, else the one saved beside a model
    folder, else the study's or setting's given as `evaluate`."""
    if isinstance(model, (str, Path)):
        model, saved = _load(model)
        tokenizer = tokenizer or saved
    elif not isinstance(model, torch.nn.Module) or not hasattr(model, "config"):
        raise UserError(f"model must be a transformers model (e.g. AutoModelForCausalLM) or a folder, got "
                        f"{type(model).__name__}")
    setting = _setting_of(evaluate)
    tokenizer = tokenizer or (setting.tokenizer if setting is not None else None)
    if tokenizer is None:
        raise UserError("an in-memory model needs its tokenizer to read the texts: pass tokenizer= (or evaluate= a "
                        "Study, whose tokenizer is used)")
    if tokenizer.eos_token_id is None:
        raise UserError("the tokenizer has no end-of-text (eos) token; undo opens every text with it")
    check_vocabulary(model, tokenizer, "the model")
    return model, tokenizer


def _texts(source: Texts, name: str) -> list[str]:
    """A list of texts, or a corpus file's documents; one line when there are none."""
    if isinstance(source, (str, Path)):
        if not Path(source).expanduser().is_file():
            raise UserError(f"{name}: no file at {source}; give a list of texts or a corpus file (.txt one text a "
                            "line, .jsonl, .parquet)")
        return read_documents(str(Path(source).expanduser()))
    texts = list(source)
    if not all(isinstance(text, str) for text in texts):
        raise UserError(f"{name}: give a list of strings (or a corpus file), not a list holding "
                        f"{type(next(t for t in texts if not isinstance(t, str))).__name__}")
    texts = [text for text in texts if text.strip()]
    if not texts:
        raise UserError(f"{name}: no texts (an empty list, or only blank strings); give at least one")
    return texts


def _rows(tokenizer: Any, texts: list[str], context: int, batch_size: int, name: str) -> torch.Tensor:
    """The texts as training rows of `context` tokens (each opened by end-of-text, packed, as every stage does)."""
    ids = encode_texts(tokenizer, texts)
    tokens = sum(len(one) for one in ids)
    if tokens < context * batch_size:
        raise UserError(f"{name}: the texts hold {tokens} tokens, fewer than one batch of {batch_size} rows of "
                        f"{context} tokens; give more text, or a smaller batch_size or context")
    return pack(ids, context)


def _context(model: torch.nn.Module, context: int | None) -> int:
    longest = getattr(model.config, "max_position_embeddings", None)
    context = context or longest
    if context is None:
        raise UserError("the model's config names no context length (max_position_embeddings); pass context=")
    if context < 2 or (longest is not None and context > longest):
        raise UserError(f"context={context} must be between 2 and the model's context ({longest})")
    return int(context)


def _section(kind: type[BaseModel], fields: dict[str, Any], where: str) -> Any:
    """The options as the config section the stage reads (the same validation and defaults), or one line."""
    try:
        return kind.model_validate(fields)
    except ValidationError as err:
        raise UserError(describe_validation_error(err, kind, where)) from None


def _trainable(model: torch.nn.Module) -> torch.nn.Module:
    return model.requires_grad_(True)  # as a model loaded from disk: every weight trains


def _setting_of(evaluate: Any) -> Setting | None:
    if isinstance(evaluate, Study):
        return evaluate.setting()
    return evaluate if hasattr(evaluate, "evaluate") and hasattr(evaluate, "score") else None


def _evaluator(evaluate: Study | Setting | Evaluator | None) -> Evaluator | None:
    if evaluate is None:
        return None
    setting = _setting_of(evaluate)
    if setting is not None:
        return setting.evaluate
    if not callable(evaluate):
        raise UserError(f"evaluate takes a Study, a setting or a function model -> {{'retain': .., 'forget': ..}}, "
                        f"got {type(evaluate).__name__}")

    def checked(model: torch.nn.Module) -> dict[str, float]:
        metrics = evaluate(model)
        if not isinstance(metrics, dict) or not {"retain", "forget"} <= set(metrics):
            raise UserError("evaluate= must return a dict with 'retain' and 'forget' scores (higher = more of the "
                            f"capability), got {metrics!r}")
        return {k: float(v) for k, v in metrics.items()}

    return checked


def _evaluation_key(evaluate: Any, attack: bool = False) -> str | None:
    return evaluate.evaluation_key(attack) if isinstance(evaluate, Study) else None


def _weights_hash(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().flatten().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@contextlib.contextmanager
def _work(workdir: str | Path | None, request: dict[str, Any], model: torch.nn.Module) -> Iterator[tuple[Path, str]]:
    """(folder, key) for one call's training log and checkpoints: a temporary folder, removed afterwards; or, with
    `workdir`, its subfolder named by the request (options, texts and the input weights), kept so that the same call
    resumes there."""
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix=f"undo_{request['api']}_") as folder:
            yield Path(folder), request["api"]
        return
    key = stable_hash({**request, "weights": _weights_hash(model)})
    folder = Path(workdir) / f"{request['api']}_{key[:12]}"
    folder.mkdir(parents=True, exist_ok=True)
    yield folder, key


__all__ = ["Attacked", "Distilled", "Study", "Unlearned", "attack", "distill", "evaluate", "load_study", "unlearn"]
