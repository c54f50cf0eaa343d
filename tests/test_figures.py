"""The report's figures, built from the committed example results (docs/results): every file is written, curves of
several seeds have bands and one seed has none, titles name the setting and the seed count, the Pareto key has no
repeated label and no text sits at data points, and the axes say which way is better in both settings."""

import json
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import pytest
from matplotlib.collections import PolyCollection

from undo.report.figures import build_figures, figures
from undo.schema.report import ClassifierSummary, Results
from undo.schema.study import Role

matplotlib.use("Agg")
RESULTS = Path(__file__).resolve().parent.parent / "docs" / "results"
KIND = "finetune"


def load_results(path: Path) -> Results:
    """A Results dump; one written before attack kinds existed (a single `attack` per model, robustness not keyed
    by kind, selection keyed "seed N") is read as one "finetune" attack."""
    data = json.loads(Path(path).read_text())
    if "attack_kinds" not in data:
        data["attack_kinds"] = [KIND]
        data["selection"] = {int(str(k).split()[-1]): v for k, v in data["selection"].items()}
        for m in data["models"]:
            attack = m.pop("attack", None)
            m["attacks"] = {KIND: {**attack, "kind": KIND}} if attack else {}
            m["robustness"] = {KIND: m["robustness"]} if m.get("robustness") else {}
        data["claims"] = {}  # not read by the figures
    return Results.model_validate(data)


def one_seed(results: Results) -> Results:
    """The same study cut down to its first seed."""
    seed = results.seeds[0]
    return results.model_copy(update={"seeds": [seed], "models": [m for m in results.models if m.seed == seed]})


@pytest.fixture(scope="module")
def arithmetic() -> Results:
    results = load_results(RESULTS / "arithmetic.json")
    assert len(results.seeds) == 3  # the tests below rely on a multi-seed study
    return results


@pytest.fixture(scope="module")
def language() -> Results:
    return load_results(RESULTS / "language.json")


def bands(ax) -> int:
    return sum(isinstance(c, PolyCollection) for c in ax.collections)


def legend_labels(fig) -> list[str]:
    return [t.get_text() for legend in fig.legends for t in legend.get_texts()]


def attacked_groups_with_seeds(results: Results, role: Role, **match) -> int:
    """How many seeds of this role (matching fields) were attacked: the count a band needs to be at least 2."""
    return sum(1 for r in results.models if r.role == role and r.artifact and r.attack(KIND)
               and all(getattr(r, k) == v for k, v in match.items()))


def test_every_figure_is_written(tmp_path, arithmetic, language):
    made = figures(arithmetic, {}, KIND, tmp_path / "a", suffix="_x")
    assert made == {name: f"{name}_x.png" for name in ("relearning", "undo", "budgets", "pareto", "oracle_matching")}
    made_language = figures(language, {}, KIND, tmp_path / "l")
    assert set(made_language) == {"relearning", "undo", "budgets", "pareto"}  # no oracle-matching models there
    for folder, files in ((tmp_path / "a", made), (tmp_path / "l", made_language)):
        for file in files.values():
            assert (folder / file).stat().st_size > 10_000  # a real PNG, not an empty canvas


def test_bands_titles_and_legends(arithmetic, language):
    figs = build_figures(arithmetic, KIND)
    try:
        # Relearning: one band per curve that is a mean over several seeds (teacher, distilled, oracle, base).
        families = sorted({r.family for r in arithmetic.models if r.role == Role.DISTILLED})
        axes = figs["relearning"].axes
        assert len(axes) == len(families)
        for ax, family in zip(axes, families):
            expected = sum(attacked_groups_with_seeds(arithmetic, role, **match) >= 2 for role, match in
                           ((Role.TEACHER, {"family": family}), (Role.DISTILLED, {"family": family}),
                            (Role.ORACLE, {}), (Role.BASE, {})))
            assert expected == 4 and bands(ax) == expected, family
            # The base model's curve (at accuracy 1.0) lies inside the axes, drawn above the others.
            base = [line for line in ax.lines if line.get_label() == "base (no unlearning)"]
            assert len(base) == 1 and max(base[0].get_ydata()) < ax.get_ylim()[1]
            assert base[0].get_zorder() > max(line.get_zorder() for line in ax.lines if line is not base[0])
        # UNDO's relearning panel: a band per alpha and per comparison curve; its scatter has error bars.
        alphas = {r.alpha for r in arithmetic.models if r.role == Role.UNDO}
        left, right = figs["undo"].axes
        assert bands(right) == len(alphas) + 4
        assert any(len(c.lines[2]) > 0 for c in left.containers)
        assert any(len(c.lines[2]) > 0 for c in figs["pareto"].axes[0].containers)
        for name, fig in figs.items():
            assert "arithmetic" in fig.get_suptitle() and "3 seeds" in fig.get_suptitle(), name
            assert "95 % Student-t interval" in fig.get_suptitle(), name
        # Pareto: a key with each label once (one entry per alpha, not one per point), no text at points.
        labels = legend_labels(figs["pareto"])
        assert len(labels) == len(set(labels))
        assert {f"UNDO α={a:g}" for a in alphas} <= set(labels) and "base (no unlearning)" in labels
        assert all(not ax.texts for ax in figs["pareto"].axes)
        # Accuracy: less forget and more retain are better.
        pareto = figs["pareto"].axes
        assert all("lower is better" in ax.get_xlabel() for ax in pareto)
        assert "higher is better" in pareto[0].get_ylabel()
        assert "lower is better" in figs["relearning"].axes[0].get_ylabel()
    finally:
        for fig in figs.values():
            plt.close(fig)

    for results, setting in ((one_seed(arithmetic), "arithmetic"), (one_seed(language), "language")):
        figs = build_figures(results, KIND)
        try:
            assert figs
            for name, fig in figs.items():
                assert setting in fig.get_suptitle() and "1 seed" in fig.get_suptitle(), name
                assert all(bands(ax) == 0 for ax in fig.axes), name  # no interval from one seed
                assert all(len(c.lines[2]) == 0 for ax in fig.axes for c in ax.containers), name
            if setting == "language":  # cross-entropy: more forget CE and less retain CE are better
                pareto = figs["pareto"].axes
                assert all("higher is better" in ax.get_xlabel() for ax in pareto)
                assert "lower is better" in pareto[0].get_ylabel()
                assert "higher is better" in figs["relearning"].axes[0].get_ylabel()
        finally:
            for fig in figs.values():
                plt.close(fig)


def with_filters(results: Results) -> Results:
    """The study with two data filters' oracles per seed (copies of its oracle records, given a filter's
    identity, robustness, labels and compute): a recall-0.9 filter and a classifier trained on the unlearning
    labels."""
    teacher_labels = next(r.accounting.labelled_fraction for r in results.models if r.role == Role.TEACHER)
    added = []
    for oracle in (r for r in results.models if r.role == Role.ORACLE):
        for update in ({"id": "filter recall 0.9", "filter_recall": 0.9, "labelled": 1.0, "robust": 0.4},
                       {"id": "classifier filter", "classifier": ClassifierSummary(training_documents=10, precision=0.8,
                                                                                  recall=0.7),
                        "labelled": teacher_labels, "robust": 0.2}):
            accounting = oracle.accounting.model_copy(update={"labelled_fraction": update.pop("labelled"),
                                                              "lineage_fraction_of_oracle": 1.01})
            robustness = {KIND: {"area": update.pop("robust")}}
            added.append(oracle.model_copy(update={**update, "role": Role.FILTERED, "accounting": accounting,
                                                   "robustness": robustness, "artifact": update["id"]}))
    return results.model_copy(update={"models": results.models + added})


def test_the_budgets_figure_places_each_filter_at_its_compute_and_labels(arithmetic):
    figs = build_figures(with_filters(arithmetic), KIND)
    try:
        compute, labels = figs["budgets"].axes
        for ax in (compute, labels):
            assert ax.get_xscale() == "log" and "lower is better" in ax.get_xlabel()
            notes = {t.get_text(): t.xy for t in ax.texts}
            assert notes["r=0.9"][1] == pytest.approx(0.4) and notes["classifier"][1] == pytest.approx(0.2)
        assert compute.texts and "higher is better" in compute.get_ylabel()
        # Compute: each filter at its whole lineage (101 % of the oracle's FLOPs); labels: the recall filter
        # classified everything (100 %), the classifier learnt from the unlearning step's labels only.
        assert {t.get_text(): t.xy[0] for t in compute.texts}["classifier"] == pytest.approx(101)
        by_labels = {t.get_text(): t.xy[0] for t in labels.texts}
        assert by_labels["r=0.9"] == pytest.approx(100)
        assert by_labels["classifier"] == pytest.approx(by_labels["α=0.5"]) and by_labels["classifier"] < 10
        legend = legend_labels(figs["budgets"])
        assert "data filter trained on the unlearning labels" in legend
        assert "imperfect data filter (recall < 1)" in legend and len(legend) == len(set(legend))
        assert "data filter trained on the unlearning labels" in legend_labels(figs["pareto"])
    finally:
        for fig in figs.values():
            plt.close(fig)


def test_the_budgets_figure_without_unlearn_and_distill(arithmetic):
    """A study may distil no random-init student (study.distill_methods: []): the figure places the rest."""
    without = arithmetic.model_copy(update={"models": [r for r in with_filters(arithmetic).models
                                                       if r.role != Role.DISTILLED]})
    fig = build_figures(without, KIND)["budgets"]
    try:
        assert {t.get_text() for t in fig.axes[0].texts} >= {"r=0.9", "classifier", "α=0.5"}
    finally:
        plt.close(fig)


def test_a_reader_that_names_a_missing_field_fails_instead_of_printing_a_dash(arithmetic):
    """Issue 28, bug 2: the report's accessors caught KeyError/TypeError/AttributeError, so a renamed field printed
    "not measured" or "–". A number that is legitimately absent reads None; a misspelt one is an error."""
    from undo.report.aggregate import seed_interval
    from undo.report.markdown import stat

    undo_models = [r for r in arithmetic.models if r.role == Role.UNDO and r.artifact]
    mean, _ = seed_interval(undo_models, lambda r: r.stage_compute)
    assert mean is not None and mean > 0  # the real field, measured
    with pytest.raises(AttributeError):
        seed_interval(undo_models, lambda r: r.stage_computee)
    with pytest.raises(AttributeError):
        stat(undo_models, lambda r: r.accounting.stage_fraction_of_the_oracle)
    with pytest.raises(KeyError):
        stat(undo_models, lambda r: r.metrics["retian"])
    unattacked = [r.model_copy(update={"attacks": {}}) for r in undo_models]
    assert stat(unattacked, lambda r: r.forget_at(KIND, "area")) == "–"  # not attacked: legitimately no number
