"""Lineage FLOPs and labelled-token accounting, checked by hand on made-up artifacts."""

import json

import pytest

from undo.analysis.accounting import accounting, accounting_of, lineage, artifact_metas


def write(run_dir, name, **meta):
    folder = run_dir / name
    folder.mkdir(parents=True)
    (folder / "meta.json").write_text(json.dumps({"name": name, **meta}))
    return folder


@pytest.fixture
def run_dir(tmp_path):
    run = tmp_path / "runs"
    write(run, "base", key="kb", kind="pretrain", which="base", flops={"train": 1000}, tokens=50_000,
          labelled_tokens=0)
    write(run, "oracle", key="ko", kind="pretrain", which="oracle", flops={"train": 400}, tokens=25_000,
          labelled_tokens=0)
    write(run, "unlearn_maxent", key="ku", kind="unlearn", inputs={"base": "kb"}, flops={"train": 20},
          tokens=500, labelled_tokens=500)
    write(run, "distill_random", key="kd", kind="distill", inputs={"teacher": "ku", "start": None},
          flops={"train": 60, "teacher": 20}, tokens=4000, labelled_tokens=0)
    write(run, "distill_model", key="km", kind="distill", inputs={"teacher": "ko", "start": "kb"},
          flops={"train": 30, "teacher": 10}, tokens=2000, labelled_tokens=0)
    return run


def test_student_lineage_and_fractions_by_hand(run_dir):
    acc = accounting_of(run_dir / "distill_random")
    assert acc["lineage"] == ["distill_random", "unlearn_maxent", "base"]
    assert acc["stage_flops"] == {"train": 60, "teacher": 20} and acc["stage_flops_total"] == 80
    assert acc["stage_fraction_of_oracle"] == pytest.approx(80 / 400)
    assert acc["lineage_flops"] == 80 + 20 + 1000
    assert acc["lineage_fraction_of_oracle"] == pytest.approx(1100 / 400)
    assert acc["labelled_tokens"] == 500 and acc["labelled_fraction"] == pytest.approx(500 / 50_000)


def test_a_node_with_two_inputs_counts_each_ancestor_once(run_dir):
    acc = accounting_of(run_dir / "distill_model")  # teacher = oracle, start = base
    assert sorted(acc["lineage"]) == ["base", "distill_model", "oracle"]
    assert acc["lineage_flops"] == 40 + 400 + 1000


def test_data_filtering_labels_the_whole_pretraining_corpus(run_dir):
    oracle, base = accounting_of(run_dir / "oracle"), accounting_of(run_dir / "base")
    assert oracle["labelled_fraction"] == 1.0 and oracle["stage_fraction_of_oracle"] == 1.0
    assert base["labelled_fraction"] == 0.0 and base["lineage"] == ["base"]


def test_without_an_oracle_the_fractions_are_none_not_guesses(tmp_path):
    run = tmp_path / "runs"
    write(run, "unlearn", key="ku", kind="unlearn", inputs={"base": "elsewhere"}, flops={"train": 20},
          labelled_tokens=7)
    acc = accounting_of(run / "unlearn")
    assert acc["stage_fraction_of_oracle"] is None and acc["lineage_fraction_of_oracle"] is None
    assert acc["labelled_fraction"] is None and acc["lineage"] == ["unlearn"] and acc["labelled_tokens"] == 7


def test_meta_dict_before_it_is_written_works_too(run_dir):
    meta = {"key": "new", "kind": "distill", "inputs": {"teacher": "ku"}, "flops": {"train": 4, "teacher": 0}}
    acc = accounting(meta, run_dir)
    assert acc["lineage"][0] is None and acc["lineage_flops"] == 4 + 20 + 1000
    assert set(artifact_metas(run_dir)) == {"kb", "ko", "ku", "kd", "km"}
    assert [m["key"] for m in lineage(meta, artifact_metas(run_dir))] == ["new", "ku", "kb"]
