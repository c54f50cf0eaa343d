"""`undo run` and `undo report` on a tiny study: every section, resume after SIGKILL with identical numbers,
recomputing only what a config change touches, one-line errors."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import TINY
from undo.cli import main
from undo.config import validate_config
from undo.schema.errors import UserError
from undo.study.plan import build_plan
from undo.api import run_study

STUDY = {
    **TINY,
    "unlearn": {"steps": 4, "batch_size": 4, "eval_every": 2, "examples": 100,
                "methods": [{"method": "grad_diff", "lrs": [1e-3], "knobs": {"retain_weight": 1.0}},
                            {"method": "maxent", "lrs": [1e-3, 3e-3]}]},
    "distill": {"examples": 200, "alphas": [0.3, 0.7], "stop_tolerance": None,  # no stop rule: runs its 4 steps
                "train": {"batch_size": 4, "lr": 3e-3, "warmup_steps": 1, "max_steps": 4, "eval_every": 2,
                          "checkpoint_every": 1, "log_every": 1}},
    "attack": {"steps": 6, "eval_every": 2, "budgets": [2, 6], "lrs": [1e-3, 3e-3], "eval_per_cell": 3,
               "examples": 200, "batch_size": 4},
    "study": {"seeds": [0, 1], "attack_sweep_points": True},
}


def study_config(run_dir, **changes):
    raw = json.loads(json.dumps(STUDY))
    raw["run_dir"] = str(run_dir)
    for section, values in changes.items():
        raw[section] = {**raw.get(section, {}), **values}
    return raw


def numbers(results: dict) -> list:
    """Everything a reader would quote, without paths or wall times."""
    return [(m["id"], m["seed"], m.get("metrics"), m.get("steps"),
             {kind: (a["best"], a["at"]) for kind, a in m["attacks"].items()}, m.get("robustness"))
            for m in results["models"]]


def artifact_stamps(run_dir: Path) -> dict[str, int]:
    return {p.parent.name: p.stat().st_mtime_ns for p in run_dir.glob("*/meta.json")}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("study") / "runs"
    run_study(validate_config(study_config(run_dir)), progress=False)
    return run_dir


def test_tiny_study_report_has_every_section(finished):
    report = (finished / "report.md").read_text()
    for heading in ("## Stage wall times", "## The paper's claims at this scale", "## Pretraining",
                    "## Unlearning", "## Distillation", "## Relearning attack"):
        assert heading in report
    for claim in ("R1", "R2", "R3", "R4", "R5", "R6"):
        assert f"**{claim}**" in report
    for figure in ("relearning", "undo", "pareto", "oracle_matching"):
        assert f"report_figures/{figure}.png" in report
        assert (finished / "report_figures" / f"{figure}.png").stat().st_size > 5000
    results = json.loads((finished / "results.json").read_text())
    roles = {(m["role"], m["seed"]) for m in results["models"]}
    for role in ("base", "oracle", "unlearn", "teacher", "distilled", "undo", "oracle_match_base",
                 "oracle_match_random"):
        assert {(role, 0), (role, 1)} <= roles
    assert all(m["attacks"]["finetune"] for m in results["models"])  # attack_sweep_points: every model attacked
    undo = [m for m in results["models"] if m["role"] == "undo"]
    assert sorted({m["alpha"] for m in undo}) == [0.3, 0.7] and all(m["steps"] == 4 for m in undo)
    # Seeds differ downstream of pretraining but share the pretrained base.
    base = [m for m in results["models"] if m["role"] == "base"]
    assert len({m["artifact"] for m in base}) == 1 and len({m["attacks"]["finetune"]["artifact"] for m in base}) == 2
    # Every artifact names the machine that made it; the report lists it, once (one machine made them all).
    from undo.core.host import host_record

    made = len(list(finished.glob("*/meta.json")))
    assert [(h["host"]["cpu"], h["artifacts"]) for h in results["hosts"]] == [(host_record().cpu, made)]
    assert results["hosts_unrecorded"] == 0
    assert f"- {host_record().label}: {made} artifacts" in report and "different machines" not in report


def test_report_numbers_come_from_the_artifacts(finished):
    results = json.loads((finished / "results.json").read_text())
    teacher = next(m for m in results["models"] if m["role"] == "teacher" and m["family"] == "maxent"
                   and m["seed"] == 0)
    meta = json.loads((finished / teacher["artifact"] / "meta.json").read_text())
    # Reported numbers are the test split's evaluation; the stage's own final metrics (and teacher selection) are
    # the validation split's.
    evaluations = {json.loads(f.read_text())["split"]: json.loads(f.read_text())["metrics"]
                   for f in (finished / teacher["artifact"] / "evaluations").glob("*.json")}
    assert teacher["metrics"] == evaluations["test"] and meta["final_metrics"] == evaluations["validation"]
    chosen = next(c for c in results["selection"]["0"]["maxent"]["candidates"] if c["name"] == teacher["artifact"])
    assert (chosen["retain"], chosen["forget"]) == (evaluations["validation"]["retain"],
                                                     evaluations["validation"]["forget"])
    attack = teacher["attacks"]["finetune"]
    attack_meta = json.loads((finished / attack["artifact"] / "meta.json").read_text())
    assert attack["best"] == attack_meta["best"]
    assert attack["at"]["6"]["forget"] == attack_meta["best"]["values"][-1]
    selection = results["selection"]["0"]["maxent"]
    assert selection["chosen"] == teacher["artifact"]
    # The report regenerates to the same numbers from the artifacts alone.
    config = finished.parent / "study.yaml"
    config.write_text(yaml.safe_dump(study_config(finished)))
    with pytest.raises(SystemExit) as exit_:
        main(["report", str(config), "--out", str(finished / "again.md")])
    assert exit_.value.code == 0
    again = json.loads((finished / "again.json").read_text())
    assert numbers(again) == numbers(results)


def test_sigkill_then_rerun_recomputes_nothing_complete_and_ends_with_identical_numbers(finished, tmp_path):
    run_dir = tmp_path / "runs"
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump(study_config(run_dir)))
    command = [sys.executable, "-m", "undo", "run", str(config), "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    # Kill it in the middle of the study: after some distillation work has finished.
    deadline = time.time() + 120
    while time.time() < deadline and not list(run_dir.glob("distill_*/meta.json")):
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    before = artifact_stamps(run_dir)
    assert "base" in before and not (run_dir / "report.md").exists()

    assert subprocess.run(command, capture_output=True, env=env).returncode == 0
    after = artifact_stamps(run_dir)
    assert {name: after[name] for name in before} == before  # complete artifacts were not recomputed
    assert not list(run_dir.glob(".*.partial"))
    resumed = json.loads((run_dir / "results.json").read_text())
    assert numbers(resumed) == numbers(json.loads((finished / "results.json").read_text()))


def test_changing_one_stage_recomputes_it_and_its_dependants_only(finished, tmp_path):
    import shutil

    run_dir = tmp_path / "runs"
    shutil.copytree(finished, run_dir)
    before = artifact_stamps(run_dir)
    # A new UNDO alpha: its student and that student's attack, for each seed; nothing else.
    cfg = validate_config(study_config(run_dir, distill={"alphas": [0.3, 0.5]}))
    run_study(cfg, progress=False)
    after = artifact_stamps(run_dir)
    new = sorted(set(after) - set(before))
    assert len(new) == 4 and all("noised_a0.5" in name for name in new)
    assert {name: after[name] for name in before} == before


def test_plan_names_every_stage_kind_and_respects_the_study_section(tmp_path):
    cfg = validate_config(study_config(tmp_path, study={"seeds": [3], "attack_sweep_points": False,
                                                        "distill_methods": ["maxent"], "oracle_matching": False}))
    names = [t.name for t in build_plan(cfg).tasks]
    assert names[:2] == ["pretrain base", "pretrain oracle"]
    assert "seed 3 / distill maxent -> random init" in names
    assert not any("grad_diff -> random" in n or "oracle matching" in n for n in names)
    assert sum(n.startswith("seed 3 / attack") for n in names) == 2 + 2 + 1 + 2  # base, oracle, teachers, students
    assert "seed 3 / UNDO maxent alpha=0.7" in names


@pytest.mark.parametrize("text,fragment", [
    ("study: {seeds: []}\n", "study.seeds"),
    ("study: {distill_methods: [npo]}\n", "'npo' is not swept"),
    ("study: {colour: blue}\n", "study.colour: unknown key"),
    ("unlearn: [1, 2\n", "not valid YAML"),
])
def test_a_malformed_study_fails_with_one_line_and_exit_2(tmp_path, text, fragment):
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    result = subprocess.run([sys.executable, "-m", "undo", "run", str(config)], capture_output=True, text=True,
                            cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0] and lines[0].startswith("undo: error:")
    assert not (tmp_path / "runs").exists()


def test_report_without_a_study_is_a_user_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["report", "--run-dir", str(tmp_path / "nothing")])
    assert exit_.value.code == 2
    assert "run `undo run STUDY.yaml` first" in capsys.readouterr().err
    assert not (tmp_path / "nothing").exists()


def test_report_of_a_partial_study_lists_what_is_not_computed_and_computes_nothing(finished, tmp_path):
    import shutil

    run_dir = tmp_path / "runs"
    shutil.copytree(finished, run_dir)
    for attack in run_dir.glob("attack_distill_noised_a0.7_*"):
        shutil.rmtree(attack)
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump(study_config(run_dir)))
    before = artifact_stamps(run_dir)
    with pytest.raises(SystemExit) as exit_:
        main(["report", str(config)])
    assert exit_.value.code == 0 and artifact_stamps(run_dir) == before
    results = json.loads((run_dir / "results.json").read_text())
    undo_07 = [m for m in results["models"] if m["role"] == "undo" and m["alpha"] == 0.7]
    assert len(undo_07) == 2 and all(m["artifact"] and not m["attacks"] for m in undo_07)
    assert sum("is not computed yet" in why for why in results["skipped"].values()) == 2
    assert "is not computed yet" in (run_dir / "report.md").read_text()
    assert results["complete"] is False and "study incomplete" in (run_dir / "report.md").read_text()
    assert json.loads((finished / "results.json").read_text())["complete"] is True


def test_parallel_workers_make_the_same_artifacts_and_numbers(finished, tmp_path):
    """Two worker processes run independent stages at once; every stage is the same pure function of its inputs,
    so the study ends with the same artifacts (same keys) and the same report numbers as the serial run."""
    run_dir = tmp_path / "runs"
    run_study(validate_config(study_config(run_dir)), progress=False, workers=2)
    assert sorted(artifact_stamps(run_dir)) == sorted(artifact_stamps(finished))
    serial = json.loads((finished / "results.json").read_text())
    parallel = json.loads((run_dir / "results.json").read_text())
    assert numbers(parallel) == numbers(serial)


def test_the_ray_executor_makes_the_same_artifacts_and_numbers(finished, tmp_path):
    """Every task a Ray task on a local Ray (this machine's 2 CPUs), launched as its inputs appear: the same
    artifacts (same keys) and the same report numbers as the serial run."""
    import ray  # noqa: F401  (a declared test dependency: missing, this test fails rather than skips)
    run_dir = tmp_path / "runs"
    run_study(validate_config(study_config(run_dir)), progress=False, executor="ray")
    assert sorted(artifact_stamps(run_dir)) == sorted(artifact_stamps(finished))
    assert numbers(json.loads((run_dir / "results.json").read_text())) == numbers(
        json.loads((finished / "results.json").read_text()))


def test_a_ray_task_s_own_error_and_skip_reach_the_driver_unwrapped(tmp_path):
    """A user error in a Ray worker is still the one line it was (not Ray's wrapper and traceback); a skip is a
    skip; an internal error keeps its traceback."""
    from undo.study.executors import RayExecutor
    from undo.study.plan import SkipTask, Task

    def fails_like(kind):
        def action(cfg):
            raise kind("what went wrong, in one line")
        return action

    executor = RayExecutor(str(tmp_path))
    cfg = validate_config(study_config(tmp_path / "runs"))
    try:
        for kind in (UserError, SkipTask, ZeroDivisionError):
            future = executor.submit(Task(name=kind.__name__, action=fails_like(kind), cfg=cfg), {})
            with pytest.raises(kind) as raised:
                future.result(timeout=120)
            if kind is ZeroDivisionError:
                assert 'line' in str(raised.value) and "in action" in str(raised.value)  # the worker's traceback
            else:
                assert type(raised.value) is kind and str(raised.value) == "what went wrong, in one line"
    finally:
        executor.close(cancel=False)
