"""Lineage FLOPs and labelled-token accounting, checked by hand on made-up artifacts."""

import pytest

from undo.analysis.accounting import account, accounting_of, artifact_metas, lineage
from undo.schema.io import write_result
from undo.schema.results import DistillResult, PretrainResult, StopRuleRecord, UnlearnResult

STOP = StopRuleRecord(tolerance=None, on=["retain"], threshold=None, forget_ceiling=None, resolution=None,
                      probe_every=None, probes=0, max_steps=1)


def record(name, kind, **fields):
    """A minimal valid record of a stage of `kind` (its other fields are unread by the accounting)."""
    if kind == "pretrain":
        return PretrainResult(name=name, seed=0, flops_per_token=1, parameters=1, matmul_parameters=1, data={},
                              **fields)
    if kind == "unlearn":
        return UnlearnResult(name=name, seed=0, label="maxent", method="maxent", lr=1e-3, knobs={}, sam_rho=None,
                             metrics_before={}, **fields)
    return DistillResult(name=name, seed=0, init="random", alpha=None, beta=None, teacher_metrics={}, stop_rule=STOP,
                         stopped_early=False, stop_step=None, previous_probe=None, flops_at_stop=None,
                         flops_per_token=1, parameters=1, matmul_parameters=1, data={}, **fields)


def write(run_dir, name, kind, **fields):
    folder = run_dir / name
    folder.mkdir(parents=True)
    write_result(folder, record(name, kind, **fields))
    return folder


@pytest.fixture
def run_dir(tmp_path):
    run = tmp_path / "runs"
    write(run, "base", "pretrain", key="kb", which="base", flops={"train": 1000}, tokens=50_000)
    write(run, "oracle", "pretrain", key="ko", which="oracle", flops={"train": 400}, tokens=25_000)
    write(run, "unlearn_maxent", "unlearn", key="ku", inputs={"base": "kb"}, flops={"train": 20}, tokens=500,
          labelled_tokens=500)
    write(run, "distill_random", "distill", key="kd", inputs={"teacher": "ku", "start": None},
          flops={"train": 60, "teacher": 20}, tokens=4000)
    write(run, "distill_model", "distill", key="km", inputs={"teacher": "ko", "start": "kb"},
          flops={"train": 30, "teacher": 10}, tokens=2000)
    return run


def test_student_lineage_and_fractions_by_hand(run_dir):
    acc = accounting_of(run_dir / "distill_random")
    assert acc.lineage == ["distill_random", "unlearn_maxent", "base"]
    assert acc.stage_flops == {"train": 60, "teacher": 20} and acc.stage_flops_total == 80
    assert acc.stage_fraction_of_oracle == pytest.approx(80 / 400)
    assert acc.lineage_flops == 80 + 20 + 1000
    assert acc.lineage_fraction_of_oracle == pytest.approx(1100 / 400)
    assert acc.labelled_tokens == 500 and acc.labelled_fraction == pytest.approx(500 / 50_000)


def test_a_node_with_two_inputs_counts_each_ancestor_once(run_dir):
    acc = accounting_of(run_dir / "distill_model")  # teacher = oracle, start = base
    assert sorted(acc.lineage) == ["base", "distill_model", "oracle"]
    assert acc.lineage_flops == 40 + 400 + 1000


def test_data_filtering_labels_the_whole_pretraining_corpus(run_dir):
    oracle, base = accounting_of(run_dir / "oracle"), accounting_of(run_dir / "base")
    assert oracle.labelled_fraction == 1.0 and oracle.stage_fraction_of_oracle == 1.0
    assert base.labelled_fraction == 0.0 and base.lineage == ["base"]


def test_without_an_oracle_the_fractions_are_none_not_guesses(tmp_path):
    run = tmp_path / "runs"
    write(run, "unlearn", "unlearn", key="ku", inputs={"base": "elsewhere"}, flops={"train": 20}, labelled_tokens=7)
    acc = accounting_of(run / "unlearn")
    assert acc.stage_fraction_of_oracle is None and acc.lineage_fraction_of_oracle is None
    assert acc.labelled_fraction is None and acc.lineage == ["unlearn"] and acc.labelled_tokens == 7


def test_a_record_before_it_is_written_works_too(run_dir):
    metas = artifact_metas(run_dir)
    assert set(metas) == {"kb", "ko", "ku", "kd", "km"}
    meta = record("", "distill", key="new", inputs={"teacher": "ku"}, flops={"train": 4, "teacher": 0})
    acc = account(meta, metas, oracle=metas["ko"], base=metas["kb"])
    assert acc.lineage[0] is None and acc.lineage_flops == 4 + 20 + 1000
    assert [m.key for m in lineage(meta, metas)] == ["new", "ku", "kb"]
