"""The in-memory Python API (`undo.session`, reached as `undo.unlearn`, ...): the README's example runs as printed; the
API and the command line's stages give the same weights and records for the same model, texts and options (they
share each stage's training core); bad input is one `UserError` line; the input model is left as it was; a call
with a work folder resumes; and `import undo` stays light."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import undo
from tests.conftest import CAPABLE
from undo.config import validate_config
from undo.core.models import build_model, load_model
from undo.schema.errors import UserError
from undo.schema.io import read_result

README = Path(__file__).parents[1] / "README.md"


def readme_example() -> str:
    """The one python block of the README's `## From Python` section."""
    text = README.read_text()
    section = text.split("\n## From Python\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "the section holds exactly one python block"
    return blocks[0]


@pytest.mark.slow
def test_the_readme_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exec(compile(readme_example(), "README.md: From Python", "exec"), {"__name__": "__readme__"})
    printed = capsys.readouterr().out
    for line in ("base", "unlearned", "distilled", "oracle forget after 10 and 30 attack steps"):
        assert line in printed
    assert (tmp_path / "runs" / "python" / "base" / "meta.json").is_file()


def study_of(tmp_path, **sections) -> undo.Study:
    """The capable tiny alphabet study (tests/conftest.py) with these sections, its run directory in tmp_path."""
    return undo.Study(validate_config({**CAPABLE, "run_dir": str(tmp_path / "runs"), **sections}))


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Path:
    """A folder whose run directory holds the tiny study's pretrained base, made once: the stage and API runs of
    every parity test start from it (the base's key does not depend on the sections the tests change)."""
    from undo.api import pretrain

    folder = tmp_path_factory.mktemp("shared")
    pretrain(study_of(folder).config, "base", progress=False)
    return folder


UNLEARN = {"steps": 4, "batch_size": 4, "eval_every": 2, "examples": 100,
           "methods": [{"method": "grad_diff", "lrs": [1e-3], "knobs": {"retain_weight": 2.0}}]}


def max_difference(a: torch.nn.Module, b: torch.nn.Module) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    return max(float((sa[k].float() - sb[k].float()).abs().max()) for k in sa)


def test_unlearn_gives_the_stages_weights_and_record_and_leaves_its_input_alone(shared):
    from undo.api import pretrain
    from undo.stages.unlearn import sweep_points
    from undo.stages.unlearn import unlearn as unlearn_stage

    study = study_of(shared, unlearn=UNLEARN)
    cfg = study.config
    [base_dir] = pretrain(cfg, "base", progress=False)
    artifact = unlearn_stage(cfg, sweep_points(cfg)[0], progress=False)
    stage = read_result(artifact)

    base = load_model(base_dir / "model", cfg.model)
    forget, retain = study.unlearning_texts()
    out = undo.unlearn(base, study.tokenizer, forget=forget, retain=retain, method="grad_diff",
                       knobs={"retain_weight": 2.0}, lr=1e-3, steps=4, batch_size=4, eval_every=2, seed=cfg.seed,
                       evaluate=study, progress=False)
    assert max_difference(out.model, load_model(artifact / "model", cfg.model)) <= 1e-6
    assert max_difference(out.model, base) > 1e-4  # it trained (so the equality above says something)
    assert max_difference(base, load_model(base_dir / "model", cfg.model)) == 0  # the input is a copy's
    for field in ("final_metrics", "metrics_before", "steps", "tokens", "labelled_tokens", "flops", "method", "lr",
                  "knobs", "label", "seed", "evaluation_key"):
        assert getattr(out.result, field) == getattr(stage, field), field
    assert out.result.metrics_before != out.result.final_metrics


@pytest.mark.parametrize("init, alpha, tolerance", [("noised", 0.5, None), ("noised", 0.5, 0.2), ("random", None, None)])
def test_distill_gives_the_stages_student_and_record(shared, init, alpha, tolerance):
    from undo.api import pretrain
    from undo.stages.distill import distill as distill_stage

    study = study_of(shared, distill={"examples": 200, "alphas": [0.5], "stop_tolerance": tolerance,
                                      "train": {"batch_size": 4, "lr": 3e-3, "warmup_steps": 1, "max_steps": 6,
                                                "eval_every": 2}})
    cfg = study.config
    [base_dir] = pretrain(cfg, "base", progress=False)
    artifact = distill_stage(cfg, base_dir, init=init, alpha=alpha, progress=False)
    stage = read_result(artifact)

    out = undo.distill(base_dir, data=study.distillation_texts(), init=init, alpha=alpha or 0.5, beta=cfg.distill.beta,
                       steps=6, batch_size=4, lr=3e-3, warmup=1, eval_every=2, stop_tolerance=tolerance,
                       seed=cfg.seed, evaluate=study, progress=False)
    assert max_difference(out.model, load_model(artifact / "model", cfg.model)) <= 1e-6
    for field in ("final_metrics", "teacher_metrics", "steps", "tokens", "flops", "stopped_early", "stop_step",
                  "stop_rule", "alpha", "beta", "init", "evaluation_key", "data", "parameters"):
        assert getattr(out.result, field) == getattr(stage, field), field
    if tolerance is not None:
        assert out.result.stop_rule.threshold is not None


def test_oracle_matching_gives_the_stages_student(shared):
    """init="model": the base model distilled toward the oracle's outputs, as `undo distill ORACLE --init model
    --start BASE`, with the stop rule on both scores."""
    from undo.api import pretrain
    from undo.stages.distill import distill as distill_stage

    study = study_of(shared, distill={"examples": 200, "stop_tolerance": 0.2,
                                      "train": {"batch_size": 4, "lr": 3e-3, "warmup_steps": 1, "max_steps": 6,
                                                "eval_every": 2}})
    cfg = study.config
    [base_dir] = pretrain(cfg, "base", progress=False)
    [oracle_dir] = pretrain(cfg, "oracle", progress=False)
    artifact = distill_stage(cfg, oracle_dir, init="model", start=base_dir, progress=False)
    stage = read_result(artifact)
    base = load_model(base_dir / "model", cfg.model)
    out = undo.distill(oracle_dir, data=study.distillation_texts(), init="model", start=base, steps=6,
                       batch_size=4, lr=3e-3, warmup=1, eval_every=2, stop_tolerance=0.2, seed=cfg.seed,
                       evaluate=study, progress=False)
    assert max_difference(out.model, load_model(artifact / "model", cfg.model)) <= 1e-6
    assert max_difference(base, load_model(base_dir / "model", cfg.model)) == 0  # the start is a copy's
    for field in ("final_metrics", "teacher_metrics", "steps", "stopped_early", "stop_rule", "init"):
        assert getattr(out.result, field) == getattr(stage, field), field
    assert out.result.stop_rule.on == ["retain", "forget"]


def test_attack_gives_the_stages_curves(shared):
    from undo.api import pretrain
    from undo.stages.attack import attack as attack_stage

    study = study_of(shared, attack={"steps": 6, "eval_every": 2, "budgets": [2, 6], "lrs": [1e-3, 3e-3],
                                     "eval_per_cell": 3, "examples": 200, "batch_size": 4})
    cfg = study.config
    [base_dir] = pretrain(cfg, "base", progress=False)
    stage = read_result(attack_stage(cfg, base_dir, progress=False))

    out = undo.attack(base_dir, data=study.attack_texts(), lrs=[1e-3, 3e-3], steps=6, eval_every=2, budgets=[2, 6],
                      batch_size=4, seed=cfg.seed, evaluate=study, progress=False)
    for field in ("best", "validation_best", "per_lr", "grid", "snapshots", "area", "metrics_before", "tokens",
                  "flops", "evaluation_key"):
        a, b = getattr(out.result, field), getattr(stage, field)
        if field == "per_lr":  # wall time differs; the curves and totals do not
            a, b = ([run.model_dump(exclude={"wall_time_s"}) for run in runs] for runs in (a, b))
        assert a == b, field
    assert out.best == dict(zip(stage.best.steps, stage.best.values))
    assert max(out.best.values()) > 0


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """An untrained tiny model of the alphabet study and its tokenizer (no training: what the errors need)."""
    study = study_of(tmp_path_factory.mktemp("tiny"))
    tokenizer = study.tokenizer
    model = build_model(study.config.model, seed=0, pad_id=tokenizer.pad_token_id, eos_id=tokenizer.eos_token_id,
                        tokenizer_size=len(tokenizer))
    return study, model, tokenizer


TEXTS = ["a b c d e f g h", "h g f e d c b a"] * 40


@pytest.mark.parametrize("call, message", [
    (lambda m, t, s: undo.unlearn(m, t, forget=TEXTS, retain=TEXTS, method="forgetful"), "unknown method 'forgetful'"),
    (lambda m, t, s: undo.unlearn(m, t, forget=TEXTS, retain=TEXTS, knobs={"colour": 1}), "unknown knob 'colour'"),
    (lambda m, t, s: undo.unlearn(m, t, forget=[], retain=TEXTS), "forget: no texts"),
    (lambda m, t, s: undo.unlearn(m, t, forget=["  "], retain=TEXTS), "forget: no texts"),
    (lambda m, t, s: undo.unlearn(m, t, forget=["a b"], retain=TEXTS), "fewer than one batch"),
    (lambda m, t, s: undo.unlearn(m, t, forget=TEXTS, retain="no/such/file.txt"), "retain: no file at"),
    (lambda m, t, s: undo.unlearn(m, forget=TEXTS, retain=TEXTS), "needs its tokenizer"),
    (lambda m, t, s: undo.unlearn("no/such/folder", t, forget=TEXTS, retain=TEXTS), "no model at no/such/folder"),
    (lambda m, t, s: undo.unlearn(m, t, forget=TEXTS, retain=TEXTS, context=10_000), "context=10000"),
    (lambda m, t, s: undo.unlearn(m, t, forget=TEXTS, retain=TEXTS, steps=0), "steps"),
    (lambda m, t, s: undo.distill(m, t, data=TEXTS, init="grown"), "init takes 'noised', 'random' or 'model'"),
    (lambda m, t, s: undo.distill(m, t, data=TEXTS, init="model"), "init='model' needs start="),
    (lambda m, t, s: undo.distill(m, t, data=TEXTS, start=m), "start= only applies to init='model'"),
    (lambda m, t, s: undo.distill(m, t, data=TEXTS, stop_tolerance=0.05), "stop_tolerance needs evaluate="),
    (lambda m, t, s: undo.distill(m, t, data=TEXTS, alpha=2.0), "alpha"),
    (lambda m, t, s: undo.attack(m, t, data=TEXTS, evaluate=None), "attack needs evaluate="),
    (lambda m, t, s: undo.attack(m, t, data=TEXTS, evaluate=s, kind="surgery"), "unknown attack kind 'surgery'"),
    (lambda m, t, s: undo.attack(m, t, data=TEXTS, evaluate=s, steps=5, budgets=[10]), "budgets [10]"),
    (lambda m, t, s: undo.attack(m, t, data=TEXTS, evaluate=42), "evaluate takes a Study"),
    (lambda m, t, s: undo.evaluate(m, "study.yaml"), "evaluate takes a Study or a setting"),
    (lambda m, t, s: undo.load_study(overrides="seed=1"), "wrap it in [...]"),
    (lambda m, t, s: undo.load_study(overrides=["unlearn.stepz=3"]), "unknown key"),
])
def test_bad_input_is_one_user_error_line(tiny, call, message):
    study, model, tokenizer = tiny
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(UserError) as err:
        call(model, tokenizer, study)
    assert message in str(err.value)
    assert "\n" not in str(err.value)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_model_folder_without_a_model_is_refused(tiny, tmp_path):
    study, _, tokenizer = tiny
    (tmp_path / "model").mkdir()
    with pytest.raises(UserError, match="no model at"):
        undo.evaluate(tmp_path, study)


def test_an_interrupted_call_in_a_work_folder_resumes_to_the_same_weights(tiny, tmp_path, monkeypatch):
    import undo.core.data

    study, model, tokenizer = tiny
    options = dict(forget=TEXTS[1::2] * 4, retain=TEXTS[::2] * 4, method="maxent", lr=3e-3, steps=60, batch_size=2,
                   eval_every=10, progress=False)
    whole = undo.unlearn(model, tokenizer, **options)
    real = undo.core.data.PairedBatches.__getitem__

    def interrupted(self, index):
        if index == 55:  # after the checkpoint of step 50
            raise KeyboardInterrupt
        return real(self, index)

    monkeypatch.setattr(undo.core.data.PairedBatches, "__getitem__", interrupted)
    with pytest.raises(KeyboardInterrupt):
        undo.unlearn(model, tokenizer, workdir=tmp_path, **options)
    monkeypatch.setattr(undo.core.data.PairedBatches, "__getitem__", real)
    [folder] = tmp_path.iterdir()
    assert json.loads((folder / "checkpoint" / "state.json").read_text())["step"] == 50
    resumed = undo.unlearn(model, tokenizer, workdir=tmp_path, **options)
    assert max_difference(resumed.model, whole.model) == 0
    assert resumed.result.tokens == whole.result.tokens
    other = undo.unlearn(model, tokenizer, workdir=tmp_path, **{**options, "steps": 2})  # another call: its own folder
    assert len(list(tmp_path.iterdir())) == 2 and other.result.steps == 2


def test_import_undo_is_light_and_the_api_is_at_the_root():
    code = "import sys, undo; print('torch' in sys.modules); print(undo.unlearn.__module__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "undo.session"]
    with pytest.raises(AttributeError):
        undo.no_such_name  # noqa: B018
