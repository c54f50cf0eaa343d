"""WordNet as a topic-level knowledge base (undo/settings/wordnet.py): documents, four-way questions of one side,
disjoint splits, an attack pool that no question asks about, and one-line errors for bad data or categories."""

from __future__ import annotations

import json
import lzma
from pathlib import Path

import pytest

from undo.schema.errors import UserError
from undo.settings.wordnet import knowledge_split, read_synsets, split_by_topic

ANIMALS = ["mammal", "bird", "fish", "insect", "reptile", "amphibian"]
THINGS = ["tool", "vehicle", "building", "garment", "container", "device"]


def wordnet_file(folder: Path, n: int = 60) -> Path:
    """A small file in WordNet's format: n animals (one with its hypernym in its word) and n artifacts."""
    records = [{"id": f"a{i}", "words": [f"beast{i}"], "lexname": "animal", "definition": f"an animal number {i}",
                "examples": [], "hypernyms": [ANIMALS[i % len(ANIMALS)]]} for i in range(n)]
    records[0]["words"] = ["giant mammal"]  # its answer is spelt in its word: never asked
    records += [{"id": f"t{i}", "words": [f"thing{i}"], "lexname": "artifact", "definition": f"a made thing {i}",
                 "examples": ["use it"], "hypernyms": [THINGS[i % len(THINGS)]]} for i in range(n)]
    path = folder / "wordnet_nouns.jsonl.xz"
    with lzma.open(path, "wt", encoding="utf-8") as out:
        out.writelines(json.dumps(r) + "\n" for r in records)
    return path


def test_documents_questions_and_splits(tmp_path):
    synsets = read_synsets(wordnet_file(tmp_path))
    assert synsets[1].document() == "beast1: a kind of bird. an animal number 1"
    split = knowledge_split(synsets, seed=3, questions_per_split=10, forget_lexnames=("animal",))
    assert split == knowledge_split(synsets, seed=3, questions_per_split=10, forget_lexnames=("animal",))
    assert split != knowledge_split(synsets, seed=4, questions_per_split=10, forget_lexnames=("animal",))
    pools = {"forget": set(ANIMALS), "retain": set(THINGS)}
    asked = set()
    for side, splits in split.questions.items():
        ids = [[q.synset for q in questions] for questions in splits.values()]
        assert [len(i) for i in ids] == [10, 10] and not set(ids[0]) & set(ids[1])  # disjoint splits
        for q in (q for questions in splits.values() for q in questions):
            assert len(set(q.choices)) == 4 and set(q.choices) <= pools[side]  # four choices of its own side
            truth = next(s for s in synsets if s.id == q.synset)
            assert q.choices[q.answer] == truth.hypernyms[0] and q.prompt == f"{truth.word}: a kind of"
        asked |= {i for part in ids for i in part}
    assert "a0" not in asked  # "giant mammal: a kind of mammal" tests reading, not knowledge
    assert {s.id for s in split.attack_pool} == {s.id for s in split.forget} - asked  # no asked synset is trained on
    answers = [q.answer for splits in split.questions.values() for qs in splits.values() for q in qs]
    assert len(set(answers)) > 1  # the true answer is not always in one place


def test_bad_data_and_categories_are_one_line(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        read_synsets(tmp_path / "missing.jsonl.xz")
    damaged = tmp_path / "damaged.jsonl.xz"
    damaged.write_bytes(lzma.compress(b'{"id": 1}\n')[:20])
    with pytest.raises(UserError, match="is damaged"):
        read_synsets(damaged)
    foreign = tmp_path / "foreign.jsonl"
    foreign.write_text('{"id": "1", "words": ["x"]}\n')
    with pytest.raises(UserError, match="line 1: not a synset record"):
        read_synsets(foreign)
    synsets = read_synsets(wordnet_file(tmp_path))
    with pytest.raises(UserError, match="'animals' is not a WordNet lexicographer category; use some of: animal"):
        split_by_topic(synsets, ("animals",))
    with pytest.raises(UserError, match="leaves no retain synsets"):
        split_by_topic(synsets, ("animal", "artifact"))
    with pytest.raises(UserError, match="questions need more"):
        knowledge_split(synsets, seed=0, questions_per_split=40, forget_lexnames=("animal",))


@pytest.mark.skipif(not Path(__file__).parents[2].joinpath("shared/data/wordnet_nouns.jsonl.xz").is_file(),
                    reason="the shared WordNet file is not beside this checkout")
def test_the_shared_wordnet_file_gives_the_biology_split():
    synsets = read_synsets(Path(__file__).parents[2] / "shared/data/wordnet_nouns.jsonl.xz")
    forget, retain = split_by_topic(synsets)
    assert (len(synsets), len(forget)) == (82115, 17555)  # the numbers its README gives


def test_lm_eval_scores_a_four_question_knowledge_task_as_a_hand_written_argmax(tmp_path):
    """The questions written as a continuation-scored lm-eval task (the mcq setting's `task_paths`): its accuracy
    is the share of questions whose true hypernym has the highest summed log-probability after "WORD: a kind of"."""
    from tests.test_mcq import mcq_config
    from undo.config import validate_config
    from undo.core.models import load_model
    from undo.settings.mcq import write_choice_task
    from undo.settings.wordnet import task_items
    from undo.stages.evaluation import setting_for

    synsets = read_synsets(wordnet_file(tmp_path))
    split = knowledge_split(synsets, seed=0, questions_per_split=8, forget_lexnames=("animal",))
    raw = mcq_config(tmp_path, limit=None)
    for side in ("forget", "retain"):
        write_choice_task(tmp_path / "tasks", f"wordnet_{side}", task_items(split.questions[side]["test"]))
    raw["setting"] = {**raw["setting"], "forget_tasks": ["wordnet_forget"], "retain_tasks": ["wordnet_retain"]}
    cfg = validate_config(raw)
    setting = setting_for(cfg, split="test")  # the mcq setting's test split: a task's odd positions, 4 questions
    model = load_model(Path(cfg.model.pretrained))
    metrics = setting.evaluate(model)
    for side in ("forget", "retain"):
        correct = 0
        for q in split.questions[side]["test"][1::2]:
            scores = choice_log_likelihoods(model, setting.tokenizer, q)
            correct += max(range(4), key=scores.__getitem__) == q.answer
        assert metrics[side] == pytest.approx(correct / 4), (side, correct)


def choice_log_likelihoods(model, tokenizer, question) -> list[float]:
    """By hand: each choice's summed log-probability after "<|endoftext|>WORD: a kind of" (" " + the choice)."""
    import torch
    import torch.nn.functional as F

    scores = []
    for choice in question.choices:
        prefix = tokenizer(question.prompt, add_special_tokens=False)["input_ids"]
        answer = tokenizer(" " + choice, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([[tokenizer.eos_token_id, *prefix, *answer]])
        with torch.no_grad():
            logp = F.log_softmax(model(input_ids=ids).logits[0, :-1].float(), dim=-1)
        scores.append(float(logp[-len(answer):].gather(-1, ids[0, 1:][-len(answer):, None]).sum()))
    return scores
