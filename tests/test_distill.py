"""The distillation stage (Unlearn-and-Distill, UNDO, oracle matching) on tiny models: artifact, FLOP split,
stop rule, noised and model inits, CLI errors, reuse."""

import json

import pytest
import torch
import yaml

import undo.stages.distill as stages
from tests.conftest import TINY
from undo.cli import main
from undo.core.compute import forward_flops_per_token, train_flops_per_token
from undo.config import validate_config
from undo.core.data import derive_seed
from undo.training.engine import read_metrics
from undo.schema.errors import UserError
from undo.core.models import build_model, load_model, save_model
from undo.core.noise import shrink_and_perturb
from undo.settings.arithmetic import ArithmeticSetting
from undo.stages.base import artifact_key

DISTILL = {"examples": 200, "alphas": [0.3, 0.7],
           "train": {"batch_size": 4, "lr": 3e-3, "warmup_steps": 1, "max_steps": 4, "eval_every": 2,
                     "checkpoint_every": 100, "log_every": 1}}


def raw_config(tmp_path, **distill):
    return {**TINY, "run_dir": str(tmp_path / "runs"), "distill": {**DISTILL, **distill}}


def make_teacher(tmp_path, cfg, seed=1):
    """A tiny model saved as an artifact folder (no meta.json: its identity is its weights' hash)."""
    tokenizer = ArithmeticSetting(cfg.setting).tokenizer
    model = build_model(cfg.model, seed=seed, pad_id=tokenizer.pad_token_id, eos_id=tokenizer.eos_token_id,
                        tokenizer_size=len(tokenizer))
    folder = tmp_path / f"teacher{seed}"
    save_model(model, folder / "model", tokenizer)
    return folder


def evals_of(path):
    return [line for line in read_metrics(path / "metrics.jsonl") if line["kind"] == "eval"]


def test_config_section_defaults_and_validation():
    d = validate_config({}).distill
    assert (d.init, d.alphas, d.beta, d.student_model, d.stop_tolerance, d.temperature, d.examples) == \
        ("random", [0.2, 0.4, 0.6, 0.8], 0.1, None, 0.05, 1.0, 60_000)
    assert (d.train.batch_size, d.train.lr, d.train.schedule, d.train.warmup_steps, d.train.max_steps,
            d.train.eval_every) == (8, 1e-3, "cosine", 100, 3000, 250)
    # Setting one training knob keeps distillation's other defaults.
    assert validate_config({"distill": {"train": {"lr": 0.01}}}).distill.train.max_steps == 3000
    with pytest.raises(UserError, match=r"distill: alphas must each be in \[0, 1\], got \[1.5\]"):
        validate_config({"distill": {"alphas": [0.2, 1.5]}})
    with pytest.raises(UserError, match="distill.beta"):
        validate_config({"distill": {"beta": -0.1}})
    with pytest.raises(UserError, match="distill.init"):
        validate_config({"distill": {"init": "scratch"}})


def test_random_init_writes_a_complete_artifact_with_the_flop_split(tmp_path):
    cfg = validate_config(raw_config(tmp_path, stop_tolerance=None,  # no stop rule: runs max_steps
                                     student_model={"layers": 1, "width": 16, "heads": 2, "context": 32,
                                                    "vocab": 100}))
    teacher = make_teacher(tmp_path, cfg)
    path = stages.distill(cfg, teacher, init="random", progress=False)
    assert path.name.startswith("distill_random_teacher1_")
    meta = json.loads((path / "meta.json").read_text())
    assert meta["kind"] == "distill" and meta["init"] == "random" and meta["alpha"] is None
    assert meta["inputs"]["teacher"] == artifact_key(teacher) and meta["inputs"]["start"] is None
    assert meta["stopped_early"] is False and meta["stop_step"] is None and meta["flops_at_stop"] is None
    assert meta["steps"] == 4 and meta["tokens"] == 4 * 4 * 32 and meta["labelled_tokens"] == 0
    teacher_model, student = load_model(teacher / "model"), load_model(path / "model")
    assert student.config.hidden_size == 16 and teacher_model.config.hidden_size == 32
    assert meta["flops"]["teacher"] == meta["tokens"] * forward_flops_per_token(teacher_model, 32)
    assert meta["flops"]["train"] == meta["tokens"] * train_flops_per_token(student, 32)
    assert meta["flops_total"] == meta["flops"]["teacher"] + meta["flops"]["train"]
    assert set(meta["teacher_metrics"]) >= {"retain", "forget"} and set(meta["final_metrics"]) >= {"retain"}
    assert [e["step"] for e in evals_of(path)] == [0, 2, 4]
    assert (path / "config.yaml").is_file() and not (path / "checkpoint").exists()


def test_stop_rule_fires_at_the_first_qualifying_probe(tmp_path, monkeypatch):
    cfg = validate_config(raw_config(tmp_path, stop_tolerance=0.05, stop_probe_every=2,
                                     train={**DISTILL["train"], "max_steps": 10}))
    teacher = make_teacher(tmp_path, cfg)
    # Full evaluations: the teacher first (retain 0.9, threshold 0.85), the student once at the end. Probes (the
    # retain side alone) at steps 0, 2, 4, ...
    full = iter([{"retain": 0.9, "forget": 0.0}, {"retain": 0.87, "forget": 0.01}])
    probes = iter([0.1, 0.5, 0.86, 0.99, 0.99, 0.99])
    monkeypatch.setattr(ArithmeticSetting, "evaluate",  # (then the test split's, for the report)
                        lambda self, model: next(full, {"retain": 0.5, "forget": 0.5}))
    monkeypatch.setattr(ArithmeticSetting, "evaluate_sides",
                        lambda self, model, sides: {"retain": next(probes)} if sides == ("retain",) else None)
    path = stages.distill(cfg, teacher, init="random", progress=False)
    meta = json.loads((path / "meta.json").read_text())
    assert meta["teacher_metrics"]["retain"] == 0.9
    assert meta["stopped_early"] is True and meta["stop_step"] == 4 and meta["steps"] == 4
    assert meta["previous_probe"] == 2 and meta["stop_rule"]["probes"] == 3
    assert [e["step"] for e in evals_of(path)] == [0, 2, 4]  # 0.5 at step 2 was not enough; 0.86 at step 4 is
    assert meta["final_metrics"] == {"retain": 0.87, "forget": 0.01}  # the full evaluation at the stop
    assert meta["flops_at_stop"] == meta["flops_total"] > 0


@pytest.mark.parametrize("resolution,min_interval", [(0.02, 10), (0.05, 1), (0.01, 25)])
def test_probe_grid_brackets_every_first_qualifying_step_within_its_resolution(resolution, min_interval):
    """On hand-made rising metric sequences (first qualifying step t for every t), the stop reported at the first
    probe >= t is less than one probe interval after t, and within `resolution` of t once the grid is geometric."""
    max_steps = 5000
    probes = stages.probe_steps(max_steps, resolution, min_interval)
    assert probes == sorted(set(probes)) and probes[-1] == max_steps
    grid = [0, *probes]
    for first_qualifying in range(1, max_steps + 1):
        stop = next(p for p in grid if p >= first_qualifying)
        previous = grid[grid.index(stop) - 1]
        assert previous < first_qualifying <= stop
        assert stop - first_qualifying < stop - previous <= max(min_interval, resolution * previous)
        if previous >= min_interval / resolution:
            assert (stop - first_qualifying) / first_qualifying < resolution


@pytest.mark.slow
def test_reported_stop_is_within_the_resolution_of_a_hand_made_metric_through_the_engine(tmp_path, monkeypatch):
    """A real distillation whose probed retain score is a hand-made function of the step (step / 1000): the rule
    first qualifies at step 850 (teacher 0.9, tolerance 0.05); the run stops at the first probe after it, within
    2 % of it, and records the bracket."""
    cfg = validate_config(raw_config(tmp_path, stop_tolerance=0.05, train={**DISTILL["train"], "max_steps": 1000}))
    teacher = make_teacher(tmp_path, cfg)
    grid = iter([0, *stages.probe_steps(1000, 0.02, 10)])
    monkeypatch.setattr(ArithmeticSetting, "evaluate", lambda self, model: {"retain": 0.9, "forget": 0.0})
    monkeypatch.setattr(ArithmeticSetting, "evaluate_sides",
                        lambda self, model, sides: {"retain": next(grid) / 1000})
    meta = json.loads((stages.distill(cfg, teacher, init="random", progress=False) / "meta.json").read_text())
    stop, previous = meta["stop_step"], meta["previous_probe"]
    assert previous < 850 <= stop and (stop - 850) / 850 < 0.02
    assert stop - previous == max(10, int(0.02 * previous))
    assert meta["stop_rule"]["resolution"] == 0.02 and meta["stop_rule"]["probe_every"] == 10


def test_model_init_stops_only_when_forget_also_matches_the_teacher(tmp_path, monkeypatch):
    """Oracle matching: the base model already has the oracle's retain accuracy at step 0, so the rule also waits
    for its forget accuracy to come down to the oracle's (within the tolerance)."""
    cfg = validate_config(raw_config(tmp_path, stop_tolerance=0.05, stop_probe_every=2,
                                     train={**DISTILL["train"], "max_steps": 10}))
    teacher, base = make_teacher(tmp_path, cfg, seed=1), make_teacher(tmp_path, cfg, seed=2)
    # Teacher: retain 0.9, forget 0.1 (ceiling 0.15). Student: retain always fine; forget 0.6, 0.3, 0.16, 0.15.
    script = iter([(0.95, 0.6), (0.95, 0.3), (0.9, 0.16), (0.88, 0.14), (0.9, 0.0)])
    monkeypatch.setattr(ArithmeticSetting, "evaluate", lambda self, model: {"retain": 0.9, "forget": 0.1})
    monkeypatch.setattr(ArithmeticSetting, "evaluate_sides",
                        lambda self, model, sides: dict(zip(sides, next(script))))
    path = stages.distill(cfg, teacher, init="model", start=base, progress=False)
    meta = json.loads((path / "meta.json").read_text())
    assert meta["stop_rule"]["on"] == ["retain", "forget"] and meta["stop_rule"]["forget_ceiling"] == pytest.approx(0.15)
    assert meta["stop_step"] == 6 and [e["step"] for e in evals_of(path)] == [0, 2, 4, 6]
    assert stages.stop_metrics("random") == stages.stop_metrics("noised") == ["retain"]


@pytest.mark.parametrize("init,alpha,tolerance", [("noised", 0.0, 0.0), ("random", None, 1.0)])
def test_a_student_that_already_qualifies_stops_at_step_0(tmp_path, init, alpha, tolerance):
    cfg = validate_config(raw_config(tmp_path, stop_tolerance=tolerance))
    teacher = make_teacher(tmp_path, cfg)
    path = stages.distill(cfg, teacher, init=init, alpha=alpha, progress=False)
    meta = json.loads((path / "meta.json").read_text())
    assert meta["stopped_early"] is True and meta["stop_step"] == 0 and meta["steps"] == 0
    assert meta["tokens"] == 0 and meta["flops_total"] == 0 and meta["flops_at_stop"] == 0
    if init == "noised":  # alpha 0: the student is the teacher, so it matches it exactly
        assert path.name.startswith("distill_noised_a0_teacher1_")
        assert meta["final_metrics"] == meta["teacher_metrics"]


def test_noised_student_starts_from_shrink_and_perturb_of_the_teacher(tmp_path, monkeypatch):
    cfg = validate_config(raw_config(tmp_path, beta=0.5, train={**DISTILL["train"], "max_steps": 1}))
    teacher = make_teacher(tmp_path, cfg)
    starts = {}
    real_train = stages.train

    def capture(model, objective, *args, **kwargs):
        starts[kwargs["description"]] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return real_train(model, objective, *args, **kwargs)

    monkeypatch.setattr(stages, "train", capture)
    paths = [stages.distill(cfg, teacher, init="noised", alpha=a, progress=False) for a in (0.3, 0.7)]
    assert [p.name.split("_teacher1")[0] for p in paths] == ["distill_noised_a0.3", "distill_noised_a0.7"]
    for alpha in (0.3, 0.7):
        expected = shrink_and_perturb(load_model(teacher / "model"), alpha, 0.5, seed=derive_seed(0, "noise"))
        got = starts[f"distill noised_a{alpha:g}"]
        for name, value in expected.state_dict().items():
            torch.testing.assert_close(got[name], value)
        meta = json.loads((paths[alpha == 0.7] / "meta.json").read_text())
        assert (meta["alpha"], meta["beta"]) == (alpha, 0.5)
    a, b = starts["distill noised_a0.3"], starts["distill noised_a0.7"]
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_model_init_starts_from_the_given_checkpoint(tmp_path, monkeypatch):
    cfg = validate_config(raw_config(tmp_path, train={**DISTILL["train"], "max_steps": 1}))
    teacher, base = make_teacher(tmp_path, cfg, seed=1), make_teacher(tmp_path, cfg, seed=2)
    starts = []
    real_train = stages.train

    def capture(model, objective, *args, **kwargs):
        starts.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return real_train(model, objective, *args, **kwargs)

    monkeypatch.setattr(stages, "train", capture)
    with pytest.raises(UserError, match="needs --start"):
        stages.distill(cfg, teacher, init="model", progress=False)
    path = stages.distill(cfg, teacher, init="model", start=base, progress=False)
    base_weights = load_model(base / "model").state_dict()
    assert all(torch.equal(starts[0][k], v) for k, v in base_weights.items())
    assert json.loads((path / "meta.json").read_text())["inputs"]["start"] == artifact_key(base)


def test_cli_sweeps_alphas_errors_exit_2_and_complete_artifacts_are_reused(tmp_path, capsys):
    raw = raw_config(tmp_path, train={**DISTILL["train"], "max_steps": 2})
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(raw))
    teacher = make_teacher(tmp_path, validate_config(raw))
    capsys.readouterr()  # the teacher's save writes a progress line to stderr

    def cli(*args):
        with pytest.raises(SystemExit) as exit_info:
            main(["distill", str(teacher), "--config", str(config), "--no-progress", *args])
        return exit_info.value.code, capsys.readouterr()

    code, out = cli("--init", "model")
    assert code == 2 and "--init model needs --start" in out.err and len(out.err.strip().splitlines()) == 1
    code, out = cli("--init", "scratch")
    assert code == 2 and "--init takes random, noised or model, got 'scratch'" in out.err
    code, out = cli("--init", "noised")
    assert code in (0, None) and "distillation from teacher1" in out.out
    runs = sorted(p for p in (tmp_path / "runs").iterdir() if p.name.startswith("distill_noised"))
    assert [p.name.split("_teacher1")[0] for p in runs] == ["distill_noised_a0.3", "distill_noised_a0.7"]
    stamps = [(p / "meta.json").stat().st_mtime_ns for p in runs]
    code, out = cli("--init", "noised")
    assert code in (0, None) and [(p / "meta.json").stat().st_mtime_ns for p in runs] == stamps  # not rerun
