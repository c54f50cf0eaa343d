"""Imperfect data filters (`pretrain.filter_recalls`): an oracle whose filter has recall r removes a fraction r of
the base stream's forget documents (within binomial noise) and no retain document, trains on the oracle's budget,
and takes its place beside the oracle in a study (attacked per seed, in the report's tables)."""

import json
import math

import pytest

from tests.conftest import TINY
from undo.config import validate_config
from undo.core.errors import UserError
from undo.stages.evaluation import setting_for
from undo.stages.pretrain import imperfect_filter, pretrain
from undo.study.runner import run_study
from tests.test_study import study_config


@pytest.mark.parametrize("recall", [0.9, 0.99, 0.999])
def test_a_filter_of_recall_r_removes_a_share_r_of_forget_documents_and_no_retain_document(tmp_path, recall):
    cfg = validate_config({**TINY, "run_dir": str(tmp_path / "runs"), "setting": {"examples": 40_000}})
    setting = setting_for(cfg)
    stream = setting.pretraining_documents("base", cfg.seed)
    kept, record = imperfect_filter(setting, stream, recall, cfg.seed)
    forget = [d for d in stream if setting.is_forget(d)]
    assert record.forget_documents == len(forget) > 15_000
    # Binomial(n, r): the removed count lies within 4 standard deviations of n r (a miss here is a bug, p < 1e-4).
    n = len(forget)
    assert abs(record.removed - n * recall) <= 4 * math.sqrt(n * recall * (1 - recall)) + 1
    assert len(stream) - len(kept) == record.removed
    # Every retain document is kept, in the stream's order; what is left of the forget side is still in order.
    retain_ids = [id(d) for d in stream if not setting.is_forget(d)]
    assert [id(d) for d in kept if not setting.is_forget(d)] == retain_ids
    kept_ids = {id(d) for d in kept}
    assert [id(d) for d in stream if id(d) in kept_ids] == [id(d) for d in kept]
    # The draws are the seed's: the same filter again removes the very same documents, another seed others.
    again, _ = imperfect_filter(setting, stream, recall, cfg.seed)
    assert [id(d) for d in again] == [id(d) for d in kept]
    if recall < 0.999:  # at 0.999 two seeds may well keep the same handful
        other, _ = imperfect_filter(setting, stream, recall, cfg.seed + 1)
        assert [id(d) for d in other] != [id(d) for d in kept]


def test_a_recall_zero_filter_keeps_the_base_stream(tmp_path):
    cfg = validate_config({**TINY, "run_dir": str(tmp_path / "runs")})
    setting = setting_for(cfg)
    stream = setting.pretraining_documents("base", cfg.seed)
    kept, record = imperfect_filter(setting, stream, 0.0, cfg.seed)
    assert kept == stream and record.removed == 0 and record.forget_documents > 0


def test_the_filtered_oracle_trains_the_oracles_budget_and_records_its_filter(tmp_path):
    cfg = validate_config({**TINY, "run_dir": str(tmp_path / "runs"), "pretrain": {
        **TINY["pretrain"], "filter_recalls": [0.5]}})
    oracle = json.loads((pretrain(cfg, "oracle", progress=False) / "meta.json").read_text())
    filtered_dir = pretrain(cfg, "oracle", recall=0.5, progress=False)
    filtered = json.loads((filtered_dir / "meta.json").read_text())
    assert filtered_dir.name == "oracle_recall0.5" and filtered["which"] == "oracle"
    assert filtered["key"] != oracle["key"]
    assert filtered["steps"] == oracle["steps"] and filtered["tokens"] == oracle["tokens"]  # equal compute
    record = filtered["filtering"]
    assert record["recall"] == 0.5 and 0 < record["removed"] < record["forget_documents"]
    # It kept about half of the forget documents, which the perfect oracle has none of.
    kept = {c: n for c, n in filtered["data"]["documents_per_component"].items() if c.startswith(("mul", "div"))}
    assert sum(kept.values()) == record["forget_documents"] - record["removed"]
    assert not any(c.startswith(("mul", "div")) for c in oracle["data"]["documents_per_component"])
    assert oracle.get("filtering") is None


@pytest.mark.parametrize("recalls, fragment", [([1.0], "1 is the oracle itself"), ([0.9, 0.9], "must not repeat"),
                                               ([-0.1], "in [0, 1)")])
def test_bad_filter_recalls_are_refused(recalls, fragment, tmp_path):
    with pytest.raises(UserError, match=fragment.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        validate_config({**TINY, "run_dir": str(tmp_path), "pretrain": {**TINY["pretrain"],
                                                                          "filter_recalls": recalls}})


def test_a_study_attacks_each_filtered_oracle_and_reports_it(tmp_path):
    raw = study_config(tmp_path / "runs", study={"seeds": [0], "attack_sweep_points": False},
                       pretrain={"filter_recalls": [0.5]})
    run_dir = run_study(validate_config(raw), progress=False)
    results = json.loads((run_dir / "results.json").read_text())
    filtered = [m for m in results["models"] if m["role"] == "filtered"]
    assert [m["id"] for m in filtered] == ["filter recall 0.5"]
    (model,) = filtered
    assert model["filter_recall"] == 0.5 and 0 < model["filter_removed"] < 1
    assert model["attacks"]["finetune"]["at"]  # attacked like the oracle
    assert model["accounting"]["labelled_fraction"] == 1.0  # a filter classifies every document
    report = (run_dir / "report.md").read_text()
    pretraining = report[report.index("## Pretraining"):report.index("## Unlearning")]
    assert "| filter recall 0.5 |" in pretraining
    attack = report[report.index("## Relearning attack"):]
    assert "| filter recall 0.5 |" in attack


def test_undo_pretrain_makes_the_filtered_oracles_and_refuses_only_filtered_without_recalls(tmp_path, capsys):
    import yaml

    from undo.cli import main

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({**TINY, "run_dir": str(tmp_path / "runs")}))
    with pytest.raises(SystemExit) as exit_info:
        main(["pretrain", str(config), "--only", "filtered", "--no-progress"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pretrain.filter_recalls" in err
    with pytest.raises(SystemExit) as exit_info:
        main(["pretrain", str(config), "--only", "filtered", "--set", "pretrain.filter_recalls=[0.5, 0.9]",
              "--no-progress"])
    assert exit_info.value.code in (0, None)
    assert sorted(p.name for p in (tmp_path / "runs").iterdir() if not p.name.startswith(".")) == [
        "oracle_recall0.5", "oracle_recall0.9"]
