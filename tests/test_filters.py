"""Imperfect data filters (`pretrain.filter_recalls`): an oracle whose filter has recall r removes a fraction r of
the base stream's forget documents (within binomial noise) and no retain document, trains on the oracle's budget,
and takes its place beside the oracle in a study (attacked per seed, in the report's tables)."""

import json
import math

import numpy as np
import pytest

from tests.conftest import TINY
from undo.config import validate_config
from undo.schema.errors import UserError
from undo.stages.evaluation import setting_for
from undo.stages.pretrain import imperfect_filter, pretrain
from undo.api import run_study
from tests.studies import small_study_config


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


@pytest.mark.slow
def test_a_study_attacks_each_filtered_oracle_and_reports_it(tmp_path):
    raw = small_study_config(tmp_path / "runs", pretrain={"filter_recalls": [0.5]})
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


def undo_pretrain(tmp_path, raw: dict, *args: str) -> int | None:
    """`undo pretrain` on `raw` (written to a YAML file, run_dir under tmp_path) with `args`: its exit code."""
    import yaml

    from undo.cli import main

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({**raw, "run_dir": str(tmp_path / "runs")}))
    with pytest.raises(SystemExit) as exit_info:
        main(["pretrain", str(config), *args, "--no-progress"])
    return exit_info.value.code


def one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_undo_pretrain_makes_the_filtered_oracles_and_refuses_only_filtered_without_recalls(tmp_path, capsys):
    assert undo_pretrain(tmp_path, TINY, "--only", "filtered") == 2
    assert "pretrain.filter_recalls" in one_error_line(capsys)
    recalls = "pretrain.filter_recalls=[0.5, 0.9]"
    assert undo_pretrain(tmp_path, TINY, "--only", "filtered", "--set", recalls) in (0, None)
    assert sorted(p.name for p in (tmp_path / "runs").iterdir() if not p.name.startswith(".")) == [
        "oracle_recall0.5", "oracle_recall0.9"]


# ---- the label-budget-matched classifier filter ----------------------------------------------------------------

CLASSIFIED = {**TINY, "pretrain": {**TINY["pretrain"], "classifier_filter": {"heldout_per_side": 200}},
              "unlearn": {"steps": 5, "batch_size": 4, "eval_every": 5, "examples": 300,
                          "methods": [{"method": "grad_diff", "lrs": [1e-3], "knobs": {"retain_weight": 1.0}}]}}


def test_the_classifier_sees_exactly_the_documents_an_unlearning_run_reads(tmp_path, monkeypatch):
    import undo.core.data
    import undo.stages.filter as filter_stage
    from undo.stages.filter import train_filter
    from undo.stages.labels import unlearning_data
    from undo.stages.unlearn import sweep_points, unlearn

    cfg = validate_config({**CLASSIFIED, "run_dir": str(tmp_path / "runs")})
    base = pretrain(cfg, "base", progress=False)
    # Record the rows a real unlearning run asks its forget and retain streams for.
    asked: dict[int, set[int]] = {}
    real_rows = undo.core.data.PackedBatches.row_indices

    def recording(self, index):
        rows = real_rows(self, index)
        asked.setdefault(id(self), set()).update(int(r) for r in rows)
        return rows

    monkeypatch.setattr(undo.core.data.PackedBatches, "row_indices", recording)
    unlearn(cfg, sweep_points(cfg)[0], base, progress=False)
    monkeypatch.setattr(undo.core.data.PackedBatches, "row_indices", real_rows)
    assert len(asked) == 2  # one forget stream, one retain stream
    # The documents behind those rows, worked out here from the token stream itself.
    setting = setting_for(cfg)
    documents, _ = unlearning_data(cfg, setting)
    expected = []
    for side, rows in zip(("forget", "retain"), asked.values()):  # PairedBatches builds forget first
        spans, start = [], 0
        for ids in setting.encode_documents([d.text for d in documents[side]]):
            spans.append((start, start + len(ids)))
            start += len(ids)
        c = cfg.model.context
        expected += [d.text for d, (a, b) in zip(documents[side], spans)
                     if any(a < (r + 1) * c and b > r * c for r in rows)]
    seen = []
    real_features = filter_stage.hashed_features
    monkeypatch.setattr(filter_stage, "hashed_features",
                        lambda params, texts: seen.append(list(texts)) or real_features(params, texts))
    meta = json.loads((train_filter(cfg, progress=False) / "meta.json").read_text())
    assert seen[0] == expected  # trained on those documents and no other
    assert sum(meta["training_documents"].values()) == len(expected) < 2 * cfg.unlearn.examples
    held = meta["heldout"]
    assert held["documents"] == 200 and 0 <= held["precision"] <= 1 and held["recall"] > 0.5  # it learned something


def test_the_classifier_oracle_filters_the_corpus_and_counts_only_its_labels(tmp_path):
    from undo.analysis.accounting import accounting_of
    from undo.stages.filter import train_filter

    cfg = validate_config({**CLASSIFIED, "run_dir": str(tmp_path / "runs")})
    base = json.loads((pretrain(cfg, "base", progress=False) / "meta.json").read_text())
    classifier = train_filter(cfg, progress=False)
    folder = pretrain(cfg, "oracle", classifier=classifier, progress=False)
    meta = json.loads((folder / "meta.json").read_text())
    assert folder.name.startswith("oracle_classifier_") and meta["steps"] == base["steps"]  # the oracle's budget
    record = meta["filtering"]
    assert record["method"] == "classifier" and record["forget_documents"] > 0
    assert record["removed"] > record["forget_documents"] / 2  # char n-grams tell x and / from + and -
    # Classifying counts: every document of the base corpus, and the replacement documents an equal-compute oracle
    # draws in place of those it removed (they pass through the filter too).
    from undo.stages.filter import load_classifier

    setting = setting_for(cfg)
    corpus = [d.text for d in setting.pretraining_documents("base", cfg.seed)]
    _, corpus_flops = load_classifier(classifier).predict(corpus)
    assert meta["flops"]["filter"] > corpus_flops > 0
    labelled = accounting_of(folder)
    filter_tokens = json.loads((classifier / "meta.json").read_text())["labelled_tokens"]
    assert labelled.labelled_tokens == filter_tokens  # its classifier's labels, not the whole corpus
    assert 0 < labelled.labelled_fraction < 1


@pytest.mark.slow
def test_a_study_with_the_classifier_filter_attacks_one_per_seed_and_sets_it_beside_undo(tmp_path):
    raw = small_study_config(tmp_path / "runs", study={"seeds": [0, 1]},
                             pretrain={"classifier_filter": {"heldout_per_side": 100}, "filter_recalls": [0.5]})
    run_dir = run_study(validate_config(raw), progress=False)
    results = json.loads((run_dir / "results.json").read_text())
    filtered = [m for m in results["models"] if m["role"] == "filtered" and m["classifier"]]
    assert sorted(m["seed"] for m in filtered) == [0, 1] and all(m["attacks"]["finetune"]["at"] for m in filtered)
    # Every filter's robustness is measured on UNDO's scale (its teacher 0, the oracle 1), per seed.
    areas = [m["robustness"]["finetune"]["area"] for m in results["models"] if m["role"] == "filtered"]
    assert len(areas) == 4 and all(isinstance(area, float) for area in areas) and len(set(areas)) == 4
    r7 = results["claims"]["finetune"]["R7"]
    assert sorted(r7["by_alpha"]) == sorted(f"{a:g}" for a in raw["distill"]["alphas"])
    assert all(set(a["numbers"]) == {"2", "6", "area"} for a in r7["by_alpha"].values())
    assert "- **R7** (UNDO vs a data filter trained on the same labels)" in (run_dir / "report.md").read_text()
    assert results["wall_time_s"]["filter"] > 0  # the classifiers' own stages count in the study's wall time
    assert len({m["artifact"] for m in filtered}) == 2  # each seed's own classifier, so its own oracle
    # Character n-grams within words cannot see the order of one-letter words: on this toy the classifier trained on
    # the label budget is a poor filter (neither precision nor recall 0 or 1), so its oracle keeps forget documents.
    assert all(m["classifier"]["training_documents"] > 0 and 0 < m["classifier"]["recall"] < 1
               and 0 < m["classifier"]["precision"] < 1 for m in filtered)
    assert all(0 < m["accounting"]["labelled_fraction"] < 1 for m in filtered)
    report = (run_dir / "report.md").read_text()
    pretraining = report[report.index("## Pretraining"):report.index("## Unlearning")]
    # One row for the model, its two seeds' own oracles pooled (mean and interval), each seed's classifier described.
    assert pretraining.count("| classifier filter |") == 1 and "seed 0: " in pretraining and "seed 1: " in pretraining


def test_undo_pretrain_only_classified_trains_the_classifier_then_its_oracle(tmp_path, capsys):
    unfiltered = {**CLASSIFIED, "pretrain": TINY["pretrain"]}
    assert undo_pretrain(tmp_path, unfiltered, "--only", "classified") == 2
    assert "pretrain.classifier_filter" in one_error_line(capsys)
    assert undo_pretrain(tmp_path, unfiltered, "--only", "classified", "--set", "pretrain.classifier_filter={}") in (
        0, None)
    made = sorted(p.name for p in (tmp_path / "runs").iterdir() if not p.name.startswith("."))
    assert [name.split("_")[:2] for name in made] == [["filter", "classifier"], ["oracle", "classifier"]]
    meta = json.loads((tmp_path / "runs" / made[1] / "meta.json").read_text())
    assert meta["filtering"]["method"] == "classifier" and meta["inputs"]["filter"]


@pytest.mark.slow
def test_the_filter_stages_run_as_ray_tasks_with_the_same_artifacts_and_numbers(tmp_path):
    """The classifier filter, its oracle and a recall filter's oracle through the Ray executor (a local Ray): the
    same artifacts (same keys), weights and numbers as in this process."""
    import ray  # noqa: F401  (a declared test dependency: missing, this test fails rather than skips)
    from tests.studies import assert_same_weights, numbers

    def study(run_dir, **options):
        raw = small_study_config(run_dir, pretrain={"classifier_filter": {"heldout_per_side": 100},
                                                    "filter_recalls": [0.5]})
        return json.loads((run_study(validate_config(raw), progress=False, **options) / "results.json").read_text())

    local, on_ray = study(tmp_path / "local"), study(tmp_path / "ray", executor="ray")
    names = [sorted(p.parent.name for p in (tmp_path / side).glob("*/meta.json")) for side in ("local", "ray")]
    assert names[0] == names[1] and any(name.startswith("filter_classifier_") for name in names[0])
    assert numbers(on_ray) == numbers(local)
    assert_same_weights(tmp_path / "ray", tmp_path / "local")  # the filtered oracles' among them:
    assert {"oracle_recall0.5", *(n for n in names[0] if n.startswith("oracle_classifier"))} <= {
        p.parent.parent.name for p in (tmp_path / "local").glob("*/model/model.safetensors")}
    def classifiers(results):  # what each classifier is, without its wall time
        return [{k: v for k, v in m["classifier"].items() if k != "wall_time_s"}
                for m in results["models"] if m["classifier"]]

    assert classifiers(on_ray) == classifiers(local) != []


def test_the_classifiers_heldout_documents_are_unseen_distinct_texts_and_counted(tmp_path, monkeypatch):
    """In arithmetic a fresh draw repeats many problems (a few hundred distinct per operation and format): the
    held-out documents are those among them whose text the classifier was not trained on, each scored once, and the
    record says how many there were per side."""
    import undo.stages.filter as filter_stage
    from undo.stages.filter import train_filter

    cfg = validate_config({**CLASSIFIED, "run_dir": str(tmp_path / "runs")})
    seen = []
    real_features = filter_stage.hashed_features
    monkeypatch.setattr(filter_stage, "hashed_features",
                        lambda params, texts: seen.append(list(texts)) or real_features(params, texts))
    meta = json.loads((train_filter(cfg, progress=False) / "meta.json").read_text())
    trained, scored = seen[0], seen[1]
    assert not set(scored) & set(trained)  # out of sample
    assert len(scored) == len(set(scored))  # each text scored once
    held = meta["heldout"]
    assert sum(held["unique_documents"].values()) == len(set(scored))
    assert held["unique_documents"] == {"forget": 200, "retain": 200}  # enough unseen ones exist here


def test_the_classifier_scores_the_unseen_documents_there_are_and_refuses_when_there_are_none():
    from undo.settings.arithmetic import ArithmeticConfig, ArithmeticSetting
    from undo.stages.filter import DocumentClassifier, heldout_scores

    setting = ArithmeticSetting(ArithmeticConfig(word_problem_weight=0.0, eval_per_cell=2))
    classifier = DocumentClassifier({"analyzer": "char_wb", "ngram_range": [1, 2], "n_features": 64,
                                     "alternate_sign": False, "norm": "l2"}, np.zeros(64), 1.0)
    # Equations only: 2 x 400 forget problems less the 2 x 100 held-out pairs, so 600 distinct forget texts.
    trained = {d.text for d in setting.labelled_documents("forget", 300, 0)}
    scores = heldout_scores(classifier, setting, 1000, seed=1, trained=trained)
    assert scores.documents == 1000 and scores.unique_documents["retain"] == 1000
    assert scores.unique_documents["forget"] == 600 - len(trained) > 0
    assert scores.recall == 1.0  # the classifier says forget every time, so precision is the forget share
    assert scores.precision == pytest.approx(scores.unique_documents["forget"] / sum(scores.unique_documents.values()))
    every_forget_text = ({f"{a} * {b} = {a * b}" for a in range(1, 21) for b in range(1, 21)}
                         | {f"{q * b} / {b} = {q}" for q in range(1, 21) for b in range(1, 21)})
    with pytest.raises(UserError, match="no held-out forget documents") as refused:
        heldout_scores(classifier, setting, 10, seed=1, trained=every_forget_text)
    assert "\n" not in str(refused.value)
