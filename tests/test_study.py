"""`undo run` and `undo report` on a tiny study: every section, resume after SIGKILL with identical numbers,
recomputing only what a config change touches, one-line errors."""

import json
import signal
import subprocess
import sys

import psutil
import pytest
import yaml

from tests.studies import artifact_stamps, assert_same_weights, numbers, study_config, wait_for
from undo.cli import main
from undo.config import validate_config
from undo.schema.errors import UserError
from undo.study.plan import build_plan
from undo.api import run_study


@pytest.fixture
def finished(finished_study):
    return finished_study


@pytest.mark.slow
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


@pytest.mark.slow
def test_the_attackers_cost_is_recomputed_by_hand_from_the_attack_curves(finished):
    """Every attacked model's cost (the first evaluated step where its attacker-best forget accuracy is back halfway
    from the oracle's to the base's, both before the attack; its tokens and FLOPs) and its multiple of the
    unlearn-only teacher's, from the curves in results.json; the report shows the table."""
    results = json.loads((finished / "results.json").read_text())
    models = results["models"]
    costs = 0
    for m in models:
        if "finetune" not in m["recovery"]:
            continue
        costs += 1
        anchor = {role: next(x for x in models if x["role"] == role and x["seed"] == m["seed"])
                  for role in ("base", "oracle")}
        base, oracle = (anchor[role]["attacks"]["finetune"]["best"]["values"][0] for role in ("base", "oracle"))
        target = oracle + 0.5 * (base - oracle)
        attack = m["attacks"]["finetune"]
        best = attack["best"]
        reached = [step for step, value in zip(best["steps"], best["values"]) if value >= target - 1e-12]
        cost = m["recovery"]["finetune"]
        assert cost["target"] == pytest.approx(target)
        assert (cost["steps"], cost["reached"]) == ((reached[0], True) if reached else (best["steps"][-1], False))
        assert cost["tokens"] == cost["steps"] * attack["tokens_per_step"] > 0 or cost["steps"] == 0
        teacher = next((x for x in models if x["role"] == "teacher" and x["seed"] == m["seed"]
                        and x["family"] == m["family"]), None)
        theirs = teacher["recovery"]["finetune"] if teacher else None
        if theirs and theirs["reached"] and theirs["steps"] > 0:
            assert cost["times_unlearn_only"] == pytest.approx(cost["steps"] / theirs["steps"])
        else:
            assert cost["times_unlearn_only"] is None
    assert costs > 10 and base > oracle
    assert len({m["recovery"]["finetune"]["steps"] for m in models if m["recovery"]}) > 1  # the costs differ
    assert "Attacker's cost" in (finished / "report.md").read_text()


def test_the_study_s_models_are_capable_and_every_stage_moves_the_numbers(finished):
    """The fixture the equivalence tests below compare is not all zeros: the base knows both sides, the oracle only
    retain, unlearning lowers forget, the attack moves curves, robustness is defined."""
    results = json.loads((finished / "results.json").read_text())
    seed0 = [m for m in results["models"] if m["seed"] == 0]
    base, oracle = (next(m for m in seed0 if m["role"] == role) for role in ("base", "oracle"))
    assert base["metrics"]["forget"] > 0.8 and base["metrics"]["retain"] > 0.5
    assert oracle["metrics"]["forget"] < 0.1 and oracle["metrics"]["retain"] > 0.9
    unlearned = [m for m in seed0 if m["role"] == "unlearn"]
    assert unlearned and all(m["metrics"]["forget"] < base["metrics"]["forget"] - 0.1 for m in unlearned)
    assert len({m["metrics"]["forget"] for m in seed0}) >= 8  # distinct numbers, not a handful of ties
    curves = [a["best"]["values"] for m in seed0 for a in m["attacks"].values()]
    assert sum(len(set(curve)) > 1 for curve in curves) >= 5  # attacks that moved the forget score
    robust = [m["robustness"]["finetune"]["area"] for m in seed0 if m["role"] in ("undo", "distilled")]
    assert robust and all(isinstance(area, float) for area in robust) and len(set(robust)) > 1


@pytest.mark.slow
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


@pytest.mark.slow
def test_sigkill_of_a_two_worker_run_leaves_no_process_and_resumes_to_the_serial_run_s_weights(finished, tmp_path):
    """`undo run --workers 2` killed with SIGKILL in the middle of the study (after some distillation finished, while
    another one holds a checkpoint): no worker outlives it, and the rerun resumes that distillation from its
    checkpoint, recomputes nothing complete, leaves no partial folder and ends with the serial run's artifacts,
    weights and report numbers. Every stage kind ran in a pool worker (with its own share of the threads), so this
    is also the proof that `--workers` trains what one process trains."""
    run_dir = tmp_path / "runs"
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump(study_config(run_dir)))
    command = [sys.executable, "-m", "undo", "run", str(config), "--no-progress", "--workers", "2"]
    parent = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: list(run_dir.glob("distill_*/meta.json"))
             and list(run_dir.glob(".distill_*.partial/checkpoint/state.json")), seconds=300)
    workers = psutil.Process(parent.pid).children(recursive=True)
    assert workers, "the pool had started its workers"
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    gone, alive = psutil.wait_procs(workers, timeout=10)
    assert alive == [], f"workers outlived the killed run: {alive}"
    before = artifact_stamps(run_dir)
    assert "base" in before and not (run_dir / "report.md").exists()

    rerun = subprocess.run(command, capture_output=True, text=True)
    assert rerun.returncode == 0 and "resuming from the checkpoint of step" in rerun.stderr
    after = artifact_stamps(run_dir)
    assert {name: after[name] for name in before} == before  # complete artifacts were not recomputed
    assert not list(run_dir.glob(".*.partial"))
    assert sorted(after) == sorted(artifact_stamps(finished))
    resumed = json.loads((run_dir / "results.json").read_text())
    assert numbers(resumed) == numbers(json.loads((finished / "results.json").read_text()))
    assert_same_weights(run_dir, finished)


@pytest.mark.slow
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
def test_a_malformed_study_fails_with_one_line_and_exit_2(tmp_path, text, fragment, monkeypatch, capsys):
    """In this process (the console script's own exit path: tests/test_config.py)."""
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main(["run", str(config)])
    assert exit_.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0] and lines[0].startswith("undo: error:")
    assert not (tmp_path / "runs").exists()


def test_report_without_a_study_is_a_user_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["report", "--run-dir", str(tmp_path / "nothing")])
    assert exit_.value.code == 2
    assert "run `undo run STUDY.yaml` first" in capsys.readouterr().err
    assert not (tmp_path / "nothing").exists()


@pytest.mark.slow
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


@pytest.mark.slow
def test_the_ray_executor_makes_the_same_artifacts_weights_and_numbers(finished, tmp_path):
    """Every task a Ray task on a local Ray (this machine's 2 CPUs), launched as its inputs appear: the same
    artifacts (same keys), weights and report numbers as the serial run."""
    import ray  # noqa: F401  (a declared test dependency: missing, this test fails rather than skips)
    run_dir = tmp_path / "runs"
    run_study(validate_config(study_config(run_dir)), progress=False, executor="ray")
    assert sorted(artifact_stamps(run_dir)) == sorted(artifact_stamps(finished))
    assert numbers(json.loads((run_dir / "results.json").read_text())) == numbers(
        json.loads((finished / "results.json").read_text()))
    assert_same_weights(run_dir, finished)


@pytest.mark.slow
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
