"""The knowledge setting (undo/settings/knowledge.py): WordNet's biology nouns as the forget topic inside one
language. Its streams keep every asked synset out of unlearning and the attack, its held-out definitions out of
every stage, and its lm-eval scores are the hand-computed argmax of each question's choices."""

from __future__ import annotations

import pytest

from tests.test_wordnet import choice_log_likelihoods, wordnet_file
from undo.config import validate_config
from undo.core.models import build_model
from undo.stages.evaluation import setting_for


def knowledge_config(tmp_path, n: int = 120, **setting) -> dict:
    """A study of the knowledge setting on a small file in WordNet's format (n animals, n artifacts)."""
    return {
        "seed": 0, "run_dir": str(tmp_path / "runs"),
        "setting": {"name": "knowledge", "wordnet": str(wordnet_file(tmp_path, n)), "forget_lexnames": ["animal"],
                    "forget_synsets": 40, "retain_synsets": 40, "questions": 8, "heldout_documents": 6,
                    "limit": 4, "vocab_size": 300, "tokenizer_sample_chars": 20_000, **setting},
        "model": {"layers": 1, "width": 32, "heads": 2, "context": 32, "vocab": 300},
        "pretrain": {"train": {"batch_size": 4, "lr": 3e-3, "warmup_steps": 2, "eval_every": 5,
                               "checkpoint_every": 3, "log_every": 1, "max_steps": 10}},
        "unlearn": {"steps": 4, "batch_size": 4, "eval_every": 2, "examples": 40,
                    "methods": [{"method": "maxent", "lrs": [1e-3]}], "selection": {"min_retain_fraction": 0.5}},
        "distill": {"examples": 80, "alphas": [0.5], "stop_tolerance": None,
                    "train": {"batch_size": 4, "lr": 3e-3, "warmup_steps": 1, "max_steps": 4, "eval_every": 2,
                              "checkpoint_every": 2, "log_every": 1}},
        "attack": {"data": "forget", "steps": 4, "eval_every": 2, "budgets": [2, 4], "lrs": [1e-3],
                   "eval_per_cell": 4, "examples": 40, "batch_size": 4},
        "study": {"undo_method": "maxent", "distill_methods": [], "oracle_matching": False},
    }


def test_asked_and_heldout_synsets_stay_out_of_unlearning_and_the_attack(tmp_path):
    cfg = validate_config(knowledge_config(tmp_path))
    setting = setting_for(cfg)
    split = setting.split
    asked = {side: {q.synset for qs in split.questions[side].values() for q in qs} for side in ("forget", "retain")}
    heldout = {s.id for side in ("forget", "retain") for part in split.heldout[side].values() for s in part}
    assert [len(asked[side]) for side in asked] == [16, 16] and len(heldout) == 24
    base = setting.pretraining_documents("base", seed=0)
    ids = [d.synset.id for d in base]
    assert len(ids) == len(set(ids)) == 80  # one document per pretraining synset
    assert asked["forget"] | asked["retain"] <= set(ids)  # the base model read every asked fact
    assert not heldout & set(ids)
    assert setting.pretraining_documents("oracle", seed=0) == [d for d in base if d.component == "retain"]
    assert all(d.text.startswith(f"{d.synset.word}: a kind of ") for d in base)
    streams = {"unlearning": [*setting.labelled_documents("forget", 300, 1),
                              *setting.labelled_documents("retain", 300, 1)],
               "attack": setting.attack_documents("forget", 300, 2),
               "mixture attack": setting.attack_documents("mixture", 300, 2),
               "replacements": setting.replacement_documents(20, 0)}
    for name, documents in streams.items():
        read = {d.synset.id for d in documents}
        assert not read & (asked["forget"] | asked["retain"] | heldout), name
    assert {d.component for d in streams["attack"]} == {"forget"}
    assert not {d.synset.id for d in streams["replacements"]} & set(ids)  # more retain text, never in the base stream
    # Distillation reads the pretraining stream (the facts a student learns from its teacher), in passes.
    mixture = setting.mixture_documents(200, 3)
    assert {d.synset.id for d in mixture} == set(ids) and mixture == setting.mixture_documents(200, 3)
    # Deterministic from the config; another eval_seed is another split.
    again = setting_for(validate_config(knowledge_config(tmp_path)))
    assert [d.text for d in again.pretraining_documents("base", 0)] == [d.text for d in base]
    other = setting_for(validate_config(knowledge_config(tmp_path, eval_seed=7)))
    assert other.split.questions != split.questions


def test_scores_are_the_hand_computed_argmax_of_each_question(tmp_path):
    """lm-eval's acc on the setting's own task files = the share of questions whose true hypernym has the highest
    summed log-probability after "WORD: a kind of" (acc_norm divides by the choice's bytes); the held-out
    cross-entropy is over each side's held-out definitions."""
    cfg = validate_config(knowledge_config(tmp_path))
    setting = setting_for(cfg, split="test")
    tokenizer = setting.tokenizer
    model = build_model(cfg.model, seed=0, pad_id=tokenizer.pad_token_id, eos_id=tokenizer.eos_token_id,
                        tokenizer_size=len(tokenizer)).eval()
    metrics = setting.evaluate(model)
    for side in ("forget", "retain"):
        correct = {"acc": 0, "acc_norm": 0}
        for q in setting.split.questions[side]["test"][:4]:  # limit 4
            scores = choice_log_likelihoods(model, tokenizer, q)
            correct["acc"] += max(range(4), key=scores.__getitem__) == q.answer
            normed = [s / len((" " + c).encode()) for s, c in zip(scores, q.choices)]
            correct["acc_norm"] += max(range(4), key=normed.__getitem__) == q.answer
        assert metrics[f"{side}_acc"] == pytest.approx(correct["acc"] / 4), side
        assert metrics[f"{side}_acc_norm"] == pytest.approx(correct["acc_norm"] / 4), side
        assert metrics[side] == metrics[f"{side}_acc"]  # choice_metric: acc
        assert 3.0 < metrics[f"{side}_ce"] < 7.0  # a random model's CE over 300 tokens is near ln(300) = 5.7
    normed = setting_for(validate_config(knowledge_config(tmp_path, choice_metric="acc_norm")), split="test")
    assert normed.evaluate_sides(model, ("forget",))["forget"] == metrics["forget_acc_norm"]


@pytest.mark.slow
def test_a_whole_knowledge_study_with_a_classifier_filter(tmp_path):
    """Every stage on the knowledge setting, then the report: accuracies on the full test questions, the attack's on
    its own limit, the cross-entropies and acc_norm beside them, and the classifier filter's oracle."""
    import json

    from undo.api import run_study

    raw = knowledge_config(tmp_path)
    raw["pretrain"]["classifier_filter"] = {}
    cfg = validate_config(raw)
    run_dir = run_study(cfg, progress=False)
    results = json.loads((run_dir / "results.json").read_text())
    assert results["setting"] == "knowledge" and results["chance"] == 0.25
    from undo.study.verify import verify_run_dir

    assert {f.status for f in verify_run_dir(run_dir)} == {"ok"}  # the task files are a cache with its record
    models = [m for m in results["models"] if m["artifact"]]
    assert {"base", "oracle", "filtered", "teacher", "undo"} <= {m["role"] for m in models}
    for m in models:  # reported on the 8 test questions per side (report_limit null): multiples of 1/8
        assert set(m["metrics"]) >= {"retain", "forget", "retain_ce", "forget_ce", "retain_acc_norm"}
        assert all(abs(m["metrics"][k] * 8 - round(m["metrics"][k] * 8)) < 1e-9 for k in ("retain", "forget"))
    curve = next(m for m in models if m["role"] == "base")["attacks"]["finetune"]["best"]["values"]
    assert all(abs(v * 4 - round(v * 4)) < 1e-9 for v in curve)  # the attack's limit: 4 questions
    classified = next(m for m in models if m["classifier"])
    assert 0 <= classified["classifier"]["precision"] <= 1 and classified["classifier"]["training_documents"] > 0
    report = (run_dir / "report.md").read_text()
    assert "not hazardous knowledge" in report and "chance 25%" in report
    base = next(m for m in models if m["role"] == "base")
    pretraining = report.split("## Pretraining")[1].split("##")[0]
    assert "forget above chance (points)" in pretraining
    base_row = next(line for line in pretraining.splitlines() if line.startswith("| base |"))
    assert f"| {100 * (base['metrics']['forget'] - 0.25):.1f} |" in base_row
    metrics_table = report.split("## Every metric, as shipped")[1].split("##")[0]
    assert "forget_ce" in metrics_table and f"{base['metrics']['forget_ce']:.3f}" in metrics_table
    # After the attack: the chosen LR's test metrics at the budget, read from its log (the line whose forget score
    # is the attacker-best one reported at that budget).
    for m in models:
        for attack in m["attacks"].values():
            for snapshot in attack["at"].values():
                assert snapshot["metrics"]["forget"] == snapshot["forget"] and "forget_ce" in snapshot["metrics"]
    assert "After the finetune attack (4 steps" in metrics_table
