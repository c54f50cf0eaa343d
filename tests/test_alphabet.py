"""The toy alphabet setting (the capable fixture of the suite): deterministic documents, disjoint held-out splits
that no stream after pretraining contains, an oracle that is the base stream without its backward runs, and an
evaluation whose value is known for a model that only counts forwards."""

import pytest
import torch

from undo.config import validate_config
from undo.schema.errors import UserError
from undo.settings.alphabet import LETTERS, AlphabetConfig, AlphabetSetting, Run


def setting(split="validation", **fields) -> AlphabetSetting:
    return AlphabetSetting(AlphabetConfig(**fields).with_split(split))


def test_documents_are_deterministic_per_seed_and_the_oracle_is_the_base_without_backward_runs():
    s = setting(examples=400)
    base, again, other = s.pretraining_documents("base", 0), s.pretraining_documents("base", 0), \
        s.pretraining_documents("base", 1)
    assert base == again and base != other and len(base) == 400
    assert {r.direction for r in base} == {"forwards", "backwards"}
    assert s.pretraining_documents("oracle", 0) == [r for r in base if r.direction == "forwards"]
    assert Run(24, 5, "forwards").text == "y z a b c" and Run(24, 5, "backwards").text == "c b a z y"


def test_held_out_splits_are_disjoint_and_never_trained_on_after_pretraining():
    validation, test = setting("validation"), setting("test")
    for side in ("retain", "forget"):
        assert len(validation.eval_runs[side]) == 20 and not set(validation.eval_runs[side]) & set(test.eval_runs[side])
    held_out = {run for s in (validation, test) for runs in s.eval_runs.values() for run in runs}
    streams = [validation.labelled_documents("forget", 500, 0), validation.labelled_documents("retain", 500, 0),
               validation.mixture_documents(500, 0), validation.replacement_documents(500, 0)]
    assert all(not set(stream) & held_out for stream in streams)
    assert {r.direction for r in streams[0]} == {"backwards"} and {r.direction for r in streams[3]} == {"forwards"}
    assert set(validation.pretraining_documents("base", 0)) & held_out  # the capability itself, as in arithmetic
    assert validation.data_summary(streams[2])["eval_items_seen_in_training"] == 0


class CountsForwards(torch.nn.Module):
    """A model that always predicts the next letter of the alphabet (and a space after a letter)."""

    def __init__(self, tokenizer):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        vocab = len(tokenizer)
        self.next = torch.arange(vocab)
        space = tokenizer.convert_tokens_to_ids(" ")
        for i, letter in enumerate(LETTERS):
            self.next[tokenizer.convert_tokens_to_ids(letter)] = space
        self.after_space = {tokenizer.convert_tokens_to_ids(letter): tokenizer.convert_tokens_to_ids(
            LETTERS[(i + 1) % len(LETTERS)]) for i, letter in enumerate(LETTERS)}
        self.vocab = vocab

    def forward(self, input_ids, attention_mask=None):
        predicted = torch.zeros_like(input_ids)
        for row in range(input_ids.size(0)):
            last_letter = None
            for position, token in enumerate(input_ids[row].tolist()):
                if token in self.after_space:
                    last_letter = token
                    predicted[row, position] = self.next[token]
                else:  # a space: the letter after the last one
                    predicted[row, position] = self.after_space.get(last_letter, 0)
        return type("Output", (), {"logits": torch.nn.functional.one_hot(predicted, self.vocab).float()})


def test_a_model_that_only_counts_forwards_scores_all_of_retain_and_none_of_forget():
    s = setting("test")
    assert s.evaluate(CountsForwards(s.tokenizer)) == {"retain": 1.0, "forget": 0.0}
    assert "40 held-out runs (test)" in s.describe_evaluation()


def test_bad_alphabet_sections_are_one_line():
    with pytest.raises(UserError, match=r"heldout_per_side \(40\) must be <= 39"):
        validate_config({"setting": {"name": "alphabet", "heldout_per_side": 40}})
    with pytest.raises(UserError, match=r"eval_per_side \(30\) must be <= heldout_per_side \(20\)"):
        validate_config({"setting": {"name": "alphabet", "eval_per_side": 30}})
    with pytest.raises(UserError, match=r"model.vocab \(50\) must be >= 98"):
        validate_config({"setting": {"name": "alphabet"}, "model": {"vocab": 50}})
