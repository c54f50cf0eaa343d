"""The responsive loop inside a study (`study.rounds`): the UNDO family's sweep round by round, each round from the
previous round's teacher on its own forget data, then the last teacher distilled and attacked, and the report's
comparison with the study's one combined unlearning (paired by seed; lineage FLOPs and labels)."""

from __future__ import annotations

import json
import shutil
from collections import Counter

import yaml

from tests.conftest import TINY
from tests.studies import artifact_stamps, study_config
from tests.test_bad_inputs import run_cli
from undo.analysis.accounting import accounting_of
from undo.api import run_study
from undo.config import validate_config
from undo.schema.io import read_result
from undo.schema.study import Manifest, Role
from undo.stages.base import stage_key
from undo.stages.evaluation import setting_for
from undo.stages.labels import RoundData, unlearning_data
from undo.stages.unlearn import Unlearn, sweep_points
from undo.study.plan import build_plan, select_round_task, select_task, unlearn_task


def rounds_config(run_dir, tmp_path):
    """The shared study with two rounds of MaxEnt, each forgetting half of a set of backward runs (files: the
    alphabet setting's forget side has no parts)."""
    cfg = validate_config(study_config(run_dir))
    texts = sorted({d.text for d in setting_for(cfg).labelled_documents("forget", 80, seed=7)})
    files = [tmp_path / "round1.txt", tmp_path / "round2.txt"]
    files[0].write_text("\n".join(texts[: len(texts) // 2]) + "\n")
    files[1].write_text("\n".join(texts[len(texts) // 2:]) + "\n")
    raw = study_config(run_dir)
    raw["study"]["rounds"] = [{"forget_data": str(files[0])}, {"forget_data": str(files[1])}]
    return validate_config(raw), files


def test_rounds_then_distil_against_one_combined_unlearning(finished_study, tmp_path):
    run_dir = tmp_path / "runs"
    shutil.copytree(finished_study, run_dir)
    before = artifact_stamps(run_dir)
    cfg, files = rounds_config(run_dir, tmp_path)
    run_study(cfg, progress=False)
    after = artifact_stamps(run_dir)
    assert {name: after[name] for name in before} == before  # the combined study is reused, untouched

    manifest = Manifest.read(run_dir)
    assert manifest.rounds == [None, None]
    entries = {(e.role, e.seed, e.round): e for e in manifest.models if e.role.value.startswith("round")}
    for seed in cfg.seeds:
        first, last = (run_dir / entries[Role.ROUND_TEACHER, seed, n].artifact for n in (1, 2))
        # Round 2 starts from round 1's teacher, round 1 from the base model; each reads its own file.
        assert read_result(last).inputs == {"base": read_result(first).key}
        assert read_result(first).inputs == {"base": read_result(run_dir / "base").key}
        assert first.name.startswith("unlearn_round1_maxent") and last.name.startswith("unlearn_round2_maxent")
        scfg = cfg.model_copy(update={"seed": seed})
        for number, file in enumerate(files, 1):
            documents, _ = unlearning_data(scfg, setting_for(scfg), RoundData(number, forget_data=str(file)))
            assert {d.text for d in documents["forget"]} <= set(file.read_text().splitlines())
        # The lineage adds both rounds' labels and FLOPs to the base model's.
        accounting, metas = accounting_of(last), [read_result(p) for p in (last, first, run_dir / "base")]
        assert accounting.lineage == [last.name, first.name, "base"]
        assert accounting.labelled_tokens == metas[0].labelled_tokens + metas[1].labelled_tokens
        assert accounting.lineage_flops == sum(m.flops_total for m in metas)
        for role in (Role.ROUNDS_DISTILLED, Role.ROUNDS_UNDO):
            students = [e for e in manifest.models if e.role == role and e.seed == seed]
            assert students and all(read_result(run_dir / e.artifact).input_paths["teacher"] == str(last)
                                    for e in students)
            assert all(e.attacks["finetune"] for e in students)
        assert entries[Role.ROUND_TEACHER, seed, 2].attacks["finetune"]

    results = json.loads((run_dir / "results.json").read_text())
    comparison = results["rounds_comparison"]
    pairs = comparison["pairs"]["finetune"]
    assert [p["model"] for p in pairs] == ["unlearn-only teacher", "Unlearn-and-Distill", "UNDO a=0.3", "UNDO a=0.7"]
    records = {(m["id"], m["seed"]): m for m in results["models"]}
    for pair in pairs:
        for key, numbers in pair["forget_after"].items():
            if key == "area":
                continue
            by_hand = [records[pair["rounds"], s]["attacks"]["finetune"]["at"][key]["forget"]
                       - records[pair["combined"], s]["attacks"]["finetune"]["at"][key]["forget"] for s in cfg.seeds]
            assert numbers["difference"]["per_seed"] == by_hand
        # Two rounds of the combined run's length: twice its labels; the FLOPs of one more unlearning run.
        assert pair["labelled_tokens_ratio"]["per_seed"] == [2.0, 2.0]
        assert all(ratio > 1 for ratio in pair["lineage_flops_ratio"]["per_seed"])
    report = (run_dir / "report.md").read_text()
    section = report[report.index("## Rounds, then distil"):report.index("## Pretraining")]
    assert "maxent after round 2 (unlearn-only)" in section and "UNDO maxent rounds a=0.7" in section
    assert "- UNDO a=0.7: @2:" in section


def test_a_round_of_parts_draws_only_those_parts_and_keys_its_data():
    cfg = validate_config({**TINY, "study": {"rounds": [{"forget": ["mul"]}, {"forget": ["div"]}]}})
    setting = setting_for(cfg)
    for part in ("mul", "div"):
        documents, _ = unlearning_data(cfg, setting, RoundData(1, parts=(part,)))
        assert Counter(d.op for d in documents["forget"]) == {part: cfg.unlearn.examples}
        assert {d.op for d in documents["retain"]} == {"add", "sub"}
    point = sweep_points(cfg)[0]
    keys = {stage_key(Unlearn(point, data), cfg, {"base": "k"})
            for data in (None, RoundData(1, parts=("mul",)), RoundData(1, parts=("div",)),
                         RoundData(1, parts=("mul", "div")))}
    assert len(keys) == 4  # each round's data is its own run
    # The round's number only names the folder: the same data from the same start is the same run.
    assert stage_key(Unlearn(point, RoundData(1, parts=("mul",))), cfg, {"base": "k"}) == \
        stage_key(Unlearn(point, RoundData(2, parts=("mul",))), cfg, {"base": "k"})


def test_rounds_a_setting_or_study_cannot_run_are_one_line(tmp_path, capsys):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({**study_config(tmp_path / "runs"), "study": {"rounds": [{"forget": ["b"]}]}}))
    assert "has no parts to choose from; give the round a forget_data file" in run_cli(["config", path], capsys)
    path.write_text(yaml.safe_dump({**TINY, "study": {"undo_method": "none", "rounds": [{"forget": ["mul"]}]}}))
    assert "the study has no UNDO method" in run_cli(["config", path], capsys)
    assert not (tmp_path / "runs").exists()


def test_a_study_unlearns_from_its_unlearn_start(finished_study, tmp_path):
    """`unlearn.start`: every sweep point and the first round start from that artifact; teachers are still chosen
    against the base model's retain."""
    teacher = next(p.parent for p in finished_study.glob("unlearn_maxent_*/meta.json"))
    raw = study_config(finished_study)
    raw["unlearn"] = {**raw["unlearn"], "start": str(teacher)}
    raw["study"] = {**raw["study"], "rounds": [{"forget_data": str(tmp_path / "observed.txt")}]}
    (tmp_path / "observed.txt").write_text("z y x w v\n")
    plan = build_plan(validate_config(raw), progress=False)
    tasks = {task.name: task for task in plan.tasks}
    assert tasks["unlearning start"].run({}) == teacher.name  # named as the other tasks name artifacts
    unlearning = [t for t in plan.tasks if t.action is unlearn_task]
    firsts = [t for t in unlearning if "round 1" in t.name or "round" not in t.name]
    assert firsts and all(t.inputs == {"base": "unlearning start"} for t in firsts)
    selections = [t for t in plan.tasks if t.action in (select_task, select_round_task)]
    assert selections and all(t.inputs["base"] == "pretrain base" for t in selections)
