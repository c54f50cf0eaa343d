"""Every stage's key against a written specification, one config field at a time.

A stage's artifact is reused whenever its key matches, so a knob that changes what a stage makes but is left out
of its key silently reuses a stale artifact (issue 28, bug 1: the model's dtype), and a knob that cannot change it but
is in the key recomputes for nothing. `AFFECTS` below says, for each stage, which config fields can change its
output. Three checks hold the keys to it:
- a new config field fails until it is placed here (`UNPLACED`);
- every field of the config, changed to another valid value, changes each stage's key exactly when `AFFECTS` says;
- every field a stage reads while it runs (recorded, `undo.schema.strict.recording_reads`) is in `AFFECTS` or is
  one that cannot change its artifact (`READ_ELSEWHERE`, each with its reason).
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TINY
from undo.config import validate_config
from undo.stages.attack import Attack
from undo.stages.base import stage_key
from undo.stages.distill import Distill
from undo.stages.filter import TrainFilter
from undo.stages.pretrain import Pretrain
from undo.stages.unlearn import SweepPoint, Unlearn

BASE = {**TINY, "run_dir": "runs/keys", "pretrain": {**TINY["pretrain"], "classifier_filter": {}}}
INPUTS = {"base": "k-base", "teacher": "k-teacher", "start": "k-start", "target": "k-target", "filter": "k-filter"}
POINT = SweepPoint("maxent", "maxent", 1e-3, (), None)

STAGES = {
    "pretrain base": Pretrain("base"),
    "pretrain oracle": Pretrain("oracle"),
    "pretrain oracle, filter recall": Pretrain("oracle", 0.9),
    "pretrain oracle, classifier filter": Pretrain("oracle", classified=True),
    "unlearn": Unlearn(POINT),
    "distill random": Distill("random"),
    "distill noised": Distill("noised", 0.5),
    "distill model": Distill("model"),
    "attack finetune": Attack("finetune"),
    "attack lora": Attack("lora"),
    "filter": TrainFilter(),
}

# Fields grouped as the specification reads them.
SETTING_EVALUATION = {"setting.eval_per_cell", "setting.eval_formats"}  # what is measured, never the data
SETTING_DATA = {"setting.examples", "setting.operation_weights", "setting.word_problem_weight", "setting.retain",
                "setting.forget", "setting.heldout_per_cell", "setting.heldout_from_pretraining", "setting.eval_seed"}
MODEL_SHAPE = {f"model.{f}" for f in ("layers", "width", "heads", "kv_heads", "mlp_width", "context", "vocab",
                                      "init_std")}
MODEL_LOAD = {"model.dtype", "model.attn_implementation"}
CADENCE = {"eval_every", "eval_steps", "checkpoint_every", "log_every"}  # what is logged and when, not the weights
TRAIN = {"batch_size", "grad_accum", "lr", "schedule", "warmup_steps", "min_lr_ratio", "weight_decay", "betas", "eps",
         "clip", "epochs", "max_steps", "mixed_precision", "compile"}


def pretrain_affects(oracle: bool) -> set[str]:
    return ({"seed", *SETTING_DATA, *MODEL_SHAPE, *MODEL_LOAD, *(f"pretrain.train.{f}" for f in TRAIN)}
            | ({"pretrain.oracle_budget"} if oracle else set()))


UNLEARN = {"seed", *SETTING_DATA, "model.context", *MODEL_LOAD, "unlearn.steps", "unlearn.batch_size", "unlearn.clip",
           "unlearn.examples", "unlearn.grad_accum", "unlearn.mixed_precision", "unlearn.compile",
           "unlearn.forget_data"}
# Distillation: the stop rule reads the evaluation, so what is measured decides where training ends.
DISTILL = {"seed", *SETTING_DATA, *SETTING_EVALUATION, "model.context", *MODEL_LOAD,
           *(f"distill.train.{f}" for f in TRAIN), "distill.stop_tolerance", "distill.stop_resolution",
           "distill.stop_probe_every", "distill.temperature", "distill.examples"}
# The attack evaluates `attack.eval_per_cell` items (not the setting's) at every evaluated step.
ATTACK = {"seed", *SETTING_DATA, "setting.eval_formats", "model.context", *MODEL_LOAD,
          *(f"attack.{f}" for f in ("data", "lrs", "steps", "eval_every", "eval_steps", "batch_size", "budgets",
                                    "max_retain_drop", "eval_per_cell", "examples", "grad_accum", "mixed_precision",
                                    "compile", "extend_grid"))}

AFFECTS = {
    "pretrain base": pretrain_affects(oracle=False),
    "pretrain oracle": pretrain_affects(oracle=True),
    "pretrain oracle, filter recall": pretrain_affects(oracle=True),
    "pretrain oracle, classifier filter": pretrain_affects(oracle=True),  # the classifier itself is its input
    "unlearn": UNLEARN,
    "distill random": DISTILL | MODEL_SHAPE | {"distill.student_model"},  # a fresh student of that shape
    "distill noised": DISTILL | {"distill.beta"},
    "distill model": DISTILL,
    "attack finetune": ATTACK,
    "attack lora": ATTACK,
    # The labels the classifier reads are those the unlearning step reads.
    "filter": {"seed", *SETTING_DATA, "model.context", "unlearn.examples", "unlearn.steps", "unlearn.batch_size",
               "unlearn.grad_accum", "unlearn.forget_data", *(f"pretrain.classifier_filter.{f}" for f in
                                       ("ngram_range", "features", "regularisation", "heldout_per_side"))},
}

# Fields that shape no stage's output: where artifacts go, what the study runs and how the report reads it, the
# evaluation batch, how models are loaded for memory (the same numbers), cadences, and sweeps whose points are
# the stages' own parameters.
NEVER = {"run_dir", "setting.eval_batch_size", "model.gradient_checkpointing", "model.pretraining_tokens",
         "model.trust_remote_code", "pretrain.oracle", "pretrain.filter_recalls", "unlearn.methods",
         "unlearn.eval_every", "unlearn.selection.min_retain_fraction", "attack.kinds", "distill.init",
         "distill.alphas", *(f"pretrain.train.{f}" for f in CADENCE),
         *(f"distill.train.{f}" for f in CADENCE), "study.seeds", "study.distill_methods", "study.undo_method",
         "study.oracle_matching", "study.attack_teachers", "study.attack_sweep_points", "study.workers",
         "study.rounds", "unlearn.start", "distributed.strategy", "resources", "tracking.backend", "tracking.dir", "tracking.project"}
# Not changed here: they need a checkpoint (tests/test_own_model.py covers keys of models loaded from one).
CHECKPOINTS = {"model.pretrained", "model.revision", "oracle.pretrained", "oracle.revision"}

# The user's own forget file (`unlearn.forget_data`): its contents, not its name, count.
OBSERVED = Path(tempfile.mkdtemp(prefix="undo_keys_")) / "observed.txt"
OBSERVED.write_text("7 * 6 = 42\n9 / 3 = 3\n")
# A model artifact to start unlearning from (`unlearn.start`): an input, keyed by its own key, never by its path.
START = OBSERVED.parent / "teacher"
(START / "model").mkdir(parents=True)
(START / "meta.json").write_text("{}")
(START / "model" / "config.json").write_text("{}")

# A value each field is changed to (valid with BASE); fields not named are changed by type (`changed`).
CHANGES: dict[str, Any] = {
    "setting.operation_weights": {"add": 1.0, "sub": 1.0, "mul": 2.0, "div": 1.0},
    "setting.retain": ["sub", "add"], "setting.forget": ["div", "mul"], "setting.heldout_per_cell": 40,
    "run_dir": "runs/elsewhere", "pretrain.train.schedule": "constant", "distill.train.schedule": "constant",
    "setting.eval_formats": ["equation"], "model.attn_implementation": "eager", "model.kv_heads": 1,
    "model.mlp_width": 48, "model.heads": 4, "model.width": 48, "model.dtype": "bfloat16",
    "model.pretraining_tokens": 1000, "pretrain.train.betas": [0.8, 0.95], "pretrain.train.eval_steps": [3],
    "pretrain.train.mixed_precision": "bf16", "pretrain.filter_recalls": [0.5], "pretrain.oracle": True,
    "pretrain.oracle_budget": "same_examples", "pretrain.classifier_filter.ngram_range": [2, 3],
    "unlearn.methods": [{"method": "maxent", "lrs": [1e-3]}], "unlearn.mixed_precision": "bf16",
    "attack.data": "forget", "attack.lrs": [1e-3], "attack.eval_steps": [10], "attack.budgets": [40],
    "attack.max_retain_drop": 0.1, "attack.mixed_precision": "bf16", "attack.kinds": ["lora"],
    "distill.init": "noised", "distill.alphas": [0.5], "distill.student_model": {"layers": 2},
    "distill.train.betas": [0.8, 0.95], "distill.train.eval_steps": [3], "distill.train.mixed_precision": "bf16",
    "distill.stop_tolerance": 0.1, "study.seeds": [1, 2], "study.distill_methods": ["grad_diff"],
    "study.undo_method": "none", "study.attack_teachers": ["maxent"], "study.workers": 2,
    "distributed.strategy": "fsdp", "resources": {"distill": {"workers": 2}}, "tracking.backend": "tensorboard",
    "tracking.dir": "runs/tracked", "tracking.project": "elsewhere", "unlearn.forget_data": str(OBSERVED),
    "study.rounds": [{"forget": ["mul"]}], "unlearn.start": str(START),
}


def leaves(section: dict, prefix: str = "") -> dict[str, Any]:
    """Every field of a dumped config by its dotted path (mappings of values, like operation weights, are one
    field)."""
    out = {}
    for name, value in section.items():
        path = f"{prefix}{name}"
        if isinstance(value, dict) and path not in CHANGES and name != "knobs":
            out.update(leaves(value, path + "."))
        else:
            out[path] = value
    return out


def changed(path: str, value: Any) -> Any:
    if path in CHANGES:
        return CHANGES[path]
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value / 2 if value else 0.25
    raise AssertionError(f"no change written for {path} = {value!r}: add one to CHANGES")


def with_field(raw: dict, path: str, value: Any) -> dict:
    raw = copy.deepcopy(raw)
    *parents, name = path.split(".")
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
    node[name] = value
    return raw


def keys(cfg) -> dict[str, str]:
    return {name: stage_key(stage, cfg, INPUTS) for name, stage in STAGES.items()}


FIELDS = leaves(validate_config(BASE).model_dump(mode="json"))
UNPLACED = sorted(set(FIELDS) - {"setting.name"} - NEVER - CHECKPOINTS - set().union(*AFFECTS.values()))


def test_every_config_field_is_placed():
    assert UNPLACED == [], "place each new field in AFFECTS (the stages whose output it can change) or NEVER"


@pytest.mark.parametrize("path", sorted(set(FIELDS) - CHECKPOINTS - {"setting.name"}))
def test_a_stage_key_changes_exactly_when_its_output_can(path):
    before = keys(validate_config(BASE))
    value = changed(path, FIELDS[path])
    assert value != FIELDS[path]
    cfg = validate_config(with_field(BASE, path, value))
    assert leaves(cfg.model_dump(mode="json"))[path] != FIELDS[path] or path in CHANGES  # the change took
    after = keys(cfg)
    wrong = {name: ("kept its key" if path in AFFECTS[name] else "changed its key")
             for name in STAGES if (after[name] != before[name]) != (path in AFFECTS[name])}
    assert wrong == {}, f"changing {path}: {wrong}"


def test_a_stage_key_changes_with_each_of_its_own_parameters():
    """What picks one artifact among a stage's siblings (the sweep point, alpha, attack kind, filter) is in its key."""
    cfg = validate_config(BASE)
    variants = {
        "unlearn": [Unlearn(POINT), Unlearn(SweepPoint("maxent", "maxent", 3e-3, (), None)),
                    Unlearn(SweepPoint("grad_diff", "grad_diff", 1e-3, (), None)),
                    Unlearn(SweepPoint("grad_diff", "grad_diff", 1e-3, (("retain_weight", 2.0),), None)),
                    Unlearn(SweepPoint("grad_diff+sam", "grad_diff", 1e-3, (), 0.01))],
        "distill": [Distill("random"), Distill("noised", 0.5), Distill("noised", 0.25), Distill("model")],
        "attack": [Attack("finetune"), Attack("lora")],
        "pretrain": [Pretrain("base"), Pretrain("oracle"), Pretrain("oracle", 0.9), Pretrain("oracle", 0.5),
                     Pretrain("oracle", classified=True)],
    }
    for kind, stages in variants.items():
        made = [stage_key(stage, cfg, INPUTS) for stage in stages]
        assert len(set(made)) == len(made), kind
    # And with each input's identity: another base model is another unlearning run.
    assert stage_key(Unlearn(POINT), cfg, {"base": "other"}) != stage_key(Unlearn(POINT), cfg, {"base": "k-base"})


# What each stage reads while it runs, recorded field by field (`undo.schema.strict.recording_reads`): every field a
# stage reads must be in its key (AFFECTS) or be one that cannot change its artifact (`READ_ELSEWHERE`, each with
# its reason). A new knob that a stage reads fails here until it is placed: in the key, or in that list.
READ_ELSEWHERE = {
    # The evaluations written beside a model are keyed by their own identity (what is measured, how it is loaded).
    *SETTING_EVALUATION, "setting.eval_batch_size", *MODEL_LOAD,
    # Where artifacts go; which checkpoint (none here: tests/test_own_model.py) and whether to run its code.
    "run_dir", "model.pretrained", "model.revision", "model.trust_remote_code", "oracle.pretrained",
    "oracle.revision", "pretrain.oracle",
    # Memory options and cadences: the same numbers, computed or logged differently. How several processes share a
    # model (DDP or FSDP): the same numbers to float rounding (tests/test_fsdp.py).
    "distributed.strategy", "model.gradient_checkpointing", *(f"{s}.{f}" for s in ("pretrain.train", "distill.train") for f in CADENCE),
    "unlearn.eval_every",
    # A tracker shows the metrics.jsonl lines a stage writes anyway (undo.core.tracking).
    "tracking.backend", "tracking.dir", "tracking.project",
}

RUN = {**BASE, "run_dir": None,
       "unlearn": {"steps": 2, "batch_size": 4, "eval_every": 2, "examples": 60,
                   "methods": [{"method": "maxent", "lrs": [1e-3]}]},
       "distill": {"examples": 100, "stop_tolerance": None,
                   "train": {"batch_size": 4, "max_steps": 2, "eval_every": 2, "warmup_steps": 1}},
       "attack": {"steps": 2, "eval_every": 2, "budgets": [2], "lrs": [1e-3], "eval_per_cell": 3, "examples": 100,
                  "batch_size": 4},
       "pretrain": {**BASE["pretrain"], "classifier_filter": {"heldout_per_side": 20}}}


def test_every_field_a_stage_reads_is_in_its_key_or_cannot_change_its_artifact(tmp_path):
    from undo.schema.strict import recording_reads
    from undo.stages.attack import attack
    from undo.stages.distill import distill
    from undo.stages.filter import train_filter
    from undo.stages.pretrain import pretrain
    from undo.stages.unlearn import unlearn

    cfg = validate_config({**RUN, "run_dir": str(tmp_path / "runs")})
    made: dict[str, object] = {}
    runs = {
        "pretrain base": lambda: made.setdefault("base", pretrain(cfg, "base", progress=False)),
        "pretrain oracle": lambda: pretrain(cfg, "oracle", progress=False),
        "pretrain oracle, filter recall": lambda: pretrain(cfg, "oracle", recall=0.5, progress=False),
        "filter": lambda: made.setdefault("filter", train_filter(cfg, progress=False)),
        "pretrain oracle, classifier filter": lambda: pretrain(cfg, "oracle", classifier=made["filter"],
                                                               progress=False),
        "unlearn": lambda: made.setdefault("teacher", unlearn(cfg, POINT, made["base"], progress=False)),
        "distill random": lambda: distill(cfg, made["teacher"], init="random", progress=False),
        "distill noised": lambda: distill(cfg, made["teacher"], init="noised", alpha=0.5, progress=False),
        "distill model": lambda: distill(cfg, made["teacher"], init="model", start=made["base"], progress=False),
        "attack finetune": lambda: attack(cfg, made["base"], kind="finetune", progress=False),
        "attack lora": lambda: attack(cfg, made["base"], kind="lora", progress=False),
    }
    assert set(runs) == set(STAGES)  # every stage of the specification runs here
    unplaced = {}
    for name, run in runs.items():
        with recording_reads(cfg) as reads:
            run()
        read = reads.fields & set(FIELDS)  # fields, not the sections holding them
        assert read, name  # the recorder saw the stage read its config
        if extra := sorted(read - AFFECTS[name] - READ_ELSEWHERE):
            unplaced[name] = extra
    assert unplaced == {}, "fields a stage reads that its key leaves out"
