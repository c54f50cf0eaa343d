"""Several processes train one stage: `torchrun --nproc_per_node 2` on the CPU (gloo, which Accelerate picks up)
ends with the weights and metrics of one process with the same global batch, and a killed 2-process run resumes
to them. (`accelerate launch --cpu --num_processes 2` starts a single process on this machine; torchrun is what
really starts two.)"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
import yaml
from safetensors.torch import load_file

from tests.conftest import CAPABLE, TINY
from undo.config import validate_config
from undo.core import distributed
from undo.schema.errors import UserError
from undo.stages.pretrain import pretrain
from undo.stages.selection import run_unlearning

UNLEARN = {"steps": 6, "batch_size": 4, "eval_every": 3, "examples": 200,
           "methods": [{"method": "grad_diff", "lrs": [1e-3], "knobs": {"retain_weight": 1.0}},
                       {"method": "rmu", "lrs": [1e-3], "knobs": {"layer": 0}},
                       {"method": "repnoise", "lrs": [1e-3]}],
           "selection": {"min_retain_fraction": 0.1}}


def config(tmp_path: Path, run_dir: str, **changes) -> tuple[dict, Path]:
    raw = {**TINY, "run_dir": str(tmp_path / run_dir), "unlearn": UNLEARN, **changes}
    path = tmp_path / f"{run_dir}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return raw, path


def torchrun(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             "-m", "undo", *args, "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def finished(process: subprocess.Popen) -> str:
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-3000:]
    return err


def same_artifact(one: Path, two: Path) -> float:
    """Same weights (within float tolerance: the gradient is summed in another order), same metrics, same counts;
    one log, written once. Returns the largest weight difference."""
    a, b = (load_file(p / "model" / "model.safetensors") for p in (one, two))
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=2e-5, msg=name)
    meta_one, meta_two = (json.loads((p / "meta.json").read_text()) for p in (one, two))
    for field in ("steps", "tokens", "flops", "final_metrics"):
        assert meta_one[field] == meta_two[field], field
    log_one, log_two = ((p / "metrics.jsonl").read_text().splitlines() for p in (one, two))
    assert len(log_one) == len(log_two)
    pairs = [(json.loads(x), json.loads(y)) for x, y in zip(log_one, log_two)]
    losses = [(x["loss"], y["loss"]) for x, y in pairs if x["kind"] == "train"]
    assert losses and all(abs(x - y) < 1e-5 for x, y in losses)
    return max((a[name] - b[name]).abs().max().item() for name in a)


@pytest.mark.slow
def test_two_processes_pretrain_and_unlearn_like_one(tmp_path):
    """Pretraining with each step's rows split between the processes, then unlearning with whole micro-batches per
    process (grad_accum a multiple of the processes): one process's weights, metrics and counts, for every
    objective, RepNoise's batch-level MMD term included (under a row split it differs by ~7e-3: its MMD is per
    process)."""
    unlearn = {**UNLEARN, "grad_accum": 2}
    raw, _ = config(tmp_path, "one", unlearn=unlearn)
    cfg = validate_config(raw)
    pretrain(cfg, "base", progress=False)
    run_unlearning(cfg, progress=False)
    _, two = config(tmp_path, "two", unlearn=unlearn)
    finished(torchrun("pretrain", str(two), "--only", "base"))
    finished(torchrun("unlearn", str(two)))
    same_artifact(tmp_path / "one" / "base", tmp_path / "two" / "base")
    names = sorted(p.name for p in (tmp_path / "one").glob("unlearn_*") if p.is_dir())
    assert len(names) == 3 and names == sorted(p.name for p in (tmp_path / "two").glob("unlearn_*") if p.is_dir())
    for name in names:
        assert same_artifact(tmp_path / "one" / name, tmp_path / "two" / name) < 2e-5, name
    selection = [json.loads((tmp_path / d / "unlearn_selection.json").read_text()) for d in ("one", "two")]
    assert selection[0] == selection[1]


@pytest.mark.slow
def test_two_processes_train_compiled_like_one(tmp_path):
    """`compile` under torchrun: each process compiles the DDP-wrapped model (torch's DDP optimizer splits the graph
    at gradient buckets) and the run trains to one compiled process's weights, metrics and counts."""
    from undo.stages.pretrain import pretrain_key

    train = {**TINY["pretrain"]["train"], "compile": True}
    raw, _ = config(tmp_path, "one", pretrain={"train": train})
    pretrain(validate_config(raw), "base", progress=False)
    _, two = config(tmp_path, "two", pretrain={"train": train})
    finished(torchrun("pretrain", str(two), "--only", "base"))
    # Both runs trained compiled (their key is the compiled config's, not eager's) and agree within DDP's rounding.
    eager, _ = config(tmp_path, "eager")
    compiled_key = pretrain_key(validate_config(raw), "base")
    assert compiled_key != pretrain_key(validate_config(eager), "base")
    for run in ("one", "two"):
        assert json.loads((tmp_path / run / "base" / "meta.json").read_text())["key"] == compiled_key, run
    assert same_artifact(tmp_path / "one" / "base", tmp_path / "two" / "base") <= 2e-5


@pytest.mark.slow
def test_a_killed_two_process_run_resumes_to_the_same_weights(tmp_path):
    train = {**TINY["pretrain"]["train"], "max_steps": 40, "checkpoint_every": 4}
    raw, _ = config(tmp_path, "one", pretrain={"train": train})
    reference = pretrain(validate_config(raw), "base", progress=False)
    _, two = config(tmp_path, "two", pretrain={"train": train})
    kill_after_a_checkpoint(torchrun("pretrain", str(two), "--only", "base"), tmp_path / "two" / ".base.partial")
    assert not (tmp_path / "two" / "base").exists(), "the run finished before it could be killed"
    said = finished(torchrun("pretrain", str(two), "--only", "base"))
    step = int(said.split("resuming from the checkpoint of step ")[1].split()[0])
    assert 8 <= step < 40
    same_artifact(reference, tmp_path / "two" / "base")


def kill_after_a_checkpoint(process: subprocess.Popen, partial: Path, step: int = 8) -> None:
    """SIGKILL torchrun once its run has a checkpoint of `step` or later in `partial`; none of its processes may
    outlive it."""
    state = partial / "checkpoint" / "state.json"
    deadline = time.time() + 120
    while not (state.is_file() and json.loads(state.read_text())["step"] >= step) and time.time() < deadline:
        assert process.poll() is None, process.communicate()[1][-3000:]
        time.sleep(0.05)
    ranks = psutil.Process(process.pid).children(recursive=True)
    os.kill(process.pid, signal.SIGKILL)  # torchrun itself: its processes must not live on without it
    process.wait()
    _, alive = psutil.wait_procs(ranks, timeout=10)
    assert not alive, f"{len(alive)} of torchrun's processes outlived it"


def test_a_step_is_shared_by_whole_micro_batches_or_by_rows(monkeypatch):
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    micro = [{"input_ids": torch.arange(8).reshape(4, 2) + 10 * i} for i in range(4)]
    monkeypatch.setattr(distributed, "rank", lambda: 1)
    mine, scale = distributed.shard_step(micro, "train")
    assert [m["input_ids"][0, 0].item() for m in mine] == [10, 30] and scale == 2 / 4  # micro-batches 1 and 3
    mine, scale = distributed.shard_step(micro[:1], "train")
    assert mine[0]["input_ids"].tolist() == [[4, 5], [6, 7]] and scale == 1.0  # the second half of the rows
    odd = [{"input_ids": torch.zeros(3, 2)}]
    with pytest.raises(UserError, match="cannot be shared by 2 processes"):
        distributed.shard_step(odd, "unlearn")


def every_stage_study(options: dict, methods: list[dict], *, capable: bool = False) -> dict:
    """A tiny study (every stage kind, the given unlearning methods) whose every training stage sets `options`; or,
    `capable`, one on the capable fixture whose stages after pretraining set them (pretraining as the shared
    study's, whose models it reuses)."""
    if capable:
        study = every_stage_study(options, methods)
        return {**study, "setting": CAPABLE["setting"], "pretrain": CAPABLE["pretrain"]}
    return {"pretrain": {"train": {**TINY["pretrain"]["train"], **options}},
            "unlearn": {**UNLEARN, **options, "methods": methods},
            "distill": {"examples": 100, "alphas": [0.5], "stop_tolerance": None,
                        "train": {"batch_size": 4, "warmup_steps": 1, "max_steps": 4, "eval_every": 2, **options}},
            "attack": {"data": "forget", "steps": 4, "eval_every": 2, "budgets": [2, 4], "lrs": [1e-3],
                       "eval_per_cell": 4, "examples": 100, "batch_size": 4, **options},
            "study": {"undo_method": "grad_diff", "distill_methods": ["grad_diff"], "attack_teachers": ["grad_diff"]}}


@pytest.mark.slow
def test_every_stage_trains_in_bf16_and_frozen_models_are_held_in_it(tmp_path):
    """Mixed precision in pretraining, unlearning, distillation and the attack: a whole tiny study runs with it and
    its weights are not fp32's (autocast really ran); a frozen teacher is held in bf16."""
    from undo.objectives.distill import ForwardKL
    from undo.api import run_study

    study = every_stage_study({"mixed_precision": "bf16"}, [{"method": "grad_diff", "lrs": [1e-3]},
                                                            {"method": "maxent", "lrs": [1e-3],
                                                             "knobs": {"retain_loss": "kl"}}])
    raw, _ = config(tmp_path, "bf16", **study)
    run_study(validate_config(raw), progress=False, report=False)
    fp32 = json.loads(json.dumps(raw).replace('"bf16"', '"no"'))
    fp32["run_dir"] = str(tmp_path / "fp32")
    run_study(validate_config(fp32), progress=False, report=False)
    for pattern in ("base", "unlearn_grad_diff*", "distill_noised*", "attack_unlearn_grad_diff*"):
        [one], [two] = (sorted((tmp_path / d).glob(pattern)) for d in ("bf16", "fp32"))
        a, b = (json.loads((p / "meta.json").read_text()) for p in (one, two))
        assert a["key"] != b["key"], pattern  # mixed precision is part of what made it
        if (one / "model").is_dir():
            weights = [load_file(p / "model" / "model.safetensors") for p in (one, two)]
            assert any(not torch.equal(weights[0][k], weights[1][k]) for k in weights[0]), pattern

    teacher = torch.nn.Linear(2, 2).requires_grad_(False)
    ForwardKL(teacher).to("cpu", torch.bfloat16)
    assert teacher.weight.dtype == torch.bfloat16


@pytest.mark.slow
def test_every_stage_after_pretraining_trains_compiled_close_to_eager_under_its_own_key(tmp_path, finished_study):
    """`compile` in unlearning (a method reading block activations through hooks among them), distillation and the
    attack, from the capable base: the weights are eager's to float rounding, the attack curves (which move) are
    eager's, the keys are not eager's, and left at false the option is in no stage's key (keys made before it stay
    valid). Compiled pretraining is compared on weights in tests/test_engine.py and under torchrun above (a 150-step
    one would not stay at rounding: see `with_pretrained_models_of`)."""
    from undo.api import run_study

    study = every_stage_study({"compile": True}, [{"method": "grad_diff", "lrs": [1e-3]},
                                                  {"method": "rmu", "lrs": [1e-3], "knobs": {"layer": 0}}],
                              capable=True)
    raw, _ = config(tmp_path, "compiled", **study)
    eager = json.loads(json.dumps(raw).replace('"compile": true', '"compile": false'))
    eager["run_dir"] = str(tmp_path / "eager")
    for run in (raw, eager):
        with_pretrained_models_of(finished_study, Path(run["run_dir"]))
        run_study(validate_config(run), progress=False, report=False)
        base = Path(run["run_dir"]) / "base" / "meta.json"
        assert base.stat().st_mtime_ns == (finished_study / "base" / "meta.json").stat().st_mtime_ns  # reused
    for pattern in ("unlearn_grad_diff*", "unlearn_rmu*", "distill_noised*", "attack_unlearn_grad_diff*"):
        [one], [two] = (sorted((tmp_path / d).glob(pattern)) for d in ("compiled", "eager"))
        a, b = (json.loads((p / "meta.json").read_text()) for p in (one, two))
        assert a["key"] != b["key"], pattern
        if (one / "model").is_dir():
            weights = [load_file(p / "model" / "model.safetensors") for p in (one, two)]
            for key in weights[0]:
                torch.testing.assert_close(weights[0][key], weights[1][key], rtol=1e-3, atol=1e-4,
                                           msg=f"{pattern}: {key}")
        else:  # the attack: the same curve, one that moves
            assert a["best"]["values"] == pytest.approx(b["best"]["values"], abs=1e-6), pattern
            assert len(set(a["best"]["values"])) > 1, pattern
    made = sorted(p.name for p in (tmp_path / "eager").iterdir())
    without = json.loads(json.dumps(eager).replace(', "compile": false', "").replace('"compile": false, ', ""))
    assert "compile" not in json.dumps(without)
    run_study(validate_config(without), progress=False, report=False)
    assert sorted(p.name for p in (tmp_path / "eager").iterdir()) == made  # every artifact reused: the same keys


def with_pretrained_models_of(reference: Path, run_dir: Path) -> Path:
    """`run_dir` holding copies of `reference`'s pretrained models (reused: same keys), so that a study there runs
    its short stages only. Needed to compare two ways of running them on capable models: a 150-step pretraining at a
    high LR amplifies rounding (measured: DDP's other summation order, 1e-7 in the first losses, is 1e-2 by step 60
    and 0.03 in the final weights, as between two CPUs); a stage of a few steps keeps it at rounding."""
    for name in ("base", "oracle"):
        shutil.copytree(reference / name, run_dir / name)
    return run_dir


@pytest.mark.slow
def test_a_whole_study_under_torchrun_matches_one_process(tmp_path, finished_study):
    """`torchrun ... -m undo run`: every stage kind after pretraining (distillation's stop rule and the attack's
    curves included) with two processes gives the artifacts, weights and report numbers of the serial run.
    (Pretraining under torchrun: the tests above.)"""
    said = study_under_torchrun_matches(finished_study, tmp_path / "two")
    assert "bytes per process" not in said  # DDP by default: every process held the whole model (nothing sharded)


def study_under_torchrun_matches(reference: Path, run_dir: Path, *options: str) -> str:
    """`torchrun ... -m undo run` of the shared study in `run_dir` (from `reference`'s pretrained models) makes the
    artifacts and report numbers of the serial `reference`, and its weights within 5e-5; returns what it said."""
    from tests.studies import artifact_stamps, numbers, study_config

    with_pretrained_models_of(reference, run_dir)
    path = run_dir.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(study_config(run_dir)))
    said = finished(torchrun("run", str(path), *options))
    assert sorted(artifact_stamps(run_dir)) == sorted(artifact_stamps(reference))
    results = [json.loads((d / "results.json").read_text()) for d in (reference, run_dir)]
    assert numbers(results[0]) == numbers(results[1])
    models = sorted(p.parent.parent.name for p in reference.glob("*/model/model.safetensors"))
    assert len(models) > 10
    for name in models:
        a, b = (load_file(d / name / "model" / "model.safetensors") for d in (reference, run_dir))
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=5e-5, msg=f"{name}: {key}")
    return said


@pytest.mark.slow
def test_a_large_vocabulary_chunked_under_two_processes_trains_like_one(tmp_path):
    """A 600,000-token vocabulary: each process's 128 positions of fp32 logits (307 MB) pass the budget, so the loss
    runs chunk by chunk (undo.core.logits) through the DDP wrapper; the weights are one process's to rounding."""
    from undo.core.logits import LOGITS_BUDGET_BYTES

    model = {**TINY["model"], "vocab": 600_000}
    train = {**TINY["pretrain"]["train"], "max_steps": 6, "eval_every": 6, "checkpoint_every": 6}
    batch, context = train["batch_size"], model["context"]
    assert 4 * (batch // 2) * context * model["vocab"] > LOGITS_BUDGET_BYTES  # chunked in each of the two processes
    raw, _ = config(tmp_path, "one", model=model, pretrain={"train": train})
    pretrain(validate_config(raw), "base", progress=False)
    _, two = config(tmp_path, "two", model=model, pretrain={"train": train})
    finished(torchrun("pretrain", str(two), "--only", "base"))
    assert same_artifact(tmp_path / "one" / "base", tmp_path / "two" / "base") < 2e-5
