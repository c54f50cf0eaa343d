"""Model cards (undo/analysis/cards.py) and `undo export`: every model folder of a study says what made it, its
lineage's compute and labels and its evaluation, with the same numbers as meta.json and the report; the report adds
what the attack did; an exported folder opens with `from_pretrained`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_bad_inputs import run_cli
from undo.cli import main
from undo.schema.io import read_result


def cards(run_dir: Path) -> dict[str, dict]:
    from huggingface_hub import ModelCard

    return {path.parent.parent.name: {"data": ModelCard.load(path).data.to_dict()["undo"], "text": path.read_text()}
            for path in sorted(run_dir.glob("*/model/README.md"))}


def test_every_model_card_holds_its_records_numbers_and_the_attacks(finished_study):
    results = json.loads((finished_study / "results.json").read_text())
    models = [m for m in results["models"] if m["artifact"] and m["metrics"]]
    found = cards(finished_study)
    assert set(found) == {Path(m["artifact"]).name for m in models}  # every model, and only models
    for m in models:
        card = found[Path(m["artifact"]).name]
        data, meta = card["data"], read_result(finished_study / m["artifact"])
        assert (data["key"], data["stage"], data["seed"], data["flops"]) == (
            meta.key, meta.kind, meta.seed, meta.flops_total)
        assert {role: one["key"] for role, one in data["inputs"].items()} == {
            role: key for role, key in meta.inputs.items() if key is not None}
        accounting = m["accounting"]
        assert data["lineage_flops"] == accounting["lineage_flops"]
        assert data["labelled_fraction"] == accounting["labelled_fraction"]
        assert data["evaluation"] == m["metrics"]  # the test split, as the report
        if m["role"] == "teacher":
            assert data["made_by"]["method"] == m["family"] and data["made_by"]["lr"] == meta.lr
        if m["attacks"]:
            section = card["text"].split("## Relearning attack (undo report)")[1]
            for kind, attack in m["attacks"].items():
                budget, snapshot = next(iter(attack["at"].items()))
                assert f"| {m['seed']} | {kind} | {budget} steps | {100 * snapshot['forget']:.1f}%" in section
    from undo.study.verify import verify_run_dir

    assert {f.status for f in verify_run_dir(finished_study)} == {"ok"}  # a card is no part of its artifact


def test_export_copies_a_model_that_opens_with_from_pretrained(finished_study, tmp_path, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    teacher = next(p.parent for p in finished_study.glob("unlearn_*/meta.json"))
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(teacher), str(tmp_path / "exported")])
    assert exit_info.value.code == 0
    exported = tmp_path / "exported"
    assert (exported / "README.md").read_text() == (teacher / "model" / "README.md").read_text()
    model = AutoModelForCausalLM.from_pretrained(exported)
    tokenizer = AutoTokenizer.from_pretrained(exported)
    assert model.num_parameters() > 0 and tokenizer.eos_token_id is not None
    # Bad input: one line each, nothing copied.
    assert "is not an empty folder" in run_cli(["export", teacher, exported], capsys)
    assert "not a finished artifact" in run_cli(["export", tmp_path, tmp_path / "other"], capsys)
    attack = next(p.parent for p in finished_study.glob("attack_*/meta.json"))
    assert "holds no model (a attack artifact)" in run_cli(["export", attack, tmp_path / "other"], capsys)
    assert not (tmp_path / "other").exists()


@pytest.mark.parametrize("name", ["README.md"])
def test_a_rewritten_card_never_makes_its_artifact_look_damaged(finished_study, tmp_path, name):
    """The card is written after the artifact is sealed: its record does not list it, so an edited or deleted card
    leaves the artifact complete (reused, not recomputed)."""
    import shutil

    from undo.core.artifacts import verified_meta

    copy = tmp_path / "base"
    shutil.copytree(finished_study / "base", copy)
    (copy / "model" / name).write_text("edited by hand\n")
    assert verified_meta(copy).key == read_result(finished_study / "base").key
    assert name not in read_result(copy).files
