"""The alphabet setting: a toy that a tiny model learns in seconds. Retain = runs of letters forwards
("c d e f g"), forget = the same runs backwards ("g f e d c").

Why it exists: a smoke test of a new method, a check that a pipeline works on a new machine, and the test suite all
need a setting where a model of one block and width 32 becomes capable in a few hundred steps (measured: 300 steps,
a few seconds on 2 CPU cores, reach 100 % on both sides; the oracle, which never sees a backward run, scores 0 % on
forget), so that unlearning, distillation and the attack produce distinct, non-zero numbers. It says nothing about
language models; the arithmetic, language and multiple-choice settings are the science.

Documents: a run of 5-10 consecutive letters from a random start, wrapping past `z` to `a`, separated by spaces;
forwards or backwards (a share `forget_share` of the base stream is backwards). There are 26 x 6 distinct runs per
direction. Held out: `heldout_per_side` runs per direction for a validation split and as many for a test split,
disjoint, drawn from `eval_seed`; no stage after pretraining trains on them (pretraining does: the capability is a
rule over 26 letters, every transition of which is in every stream anyway).

Evaluation: teacher-forced next-letter accuracy, greedy, on every letter after the first two of a run (the second
letter is where the direction shows); `retain` over the forward runs, `forget` over the backward ones.
"""

from __future__ import annotations

import functools
import string
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from undo.core.data import derive_seed
from undo.schema.strict import Seed
from undo.settings.base import ACCURACY, Score, SettingConfig, TokenizedSetting, register_setting
from undo.settings.tokenizer import CHAR_VOCAB_SIZE, build_char_tokenizer

Direction = Literal["forwards", "backwards"]
LETTERS = string.ascii_lowercase
LENGTHS = range(5, 11)
DIRECTIONS: tuple[Direction, ...] = ("forwards", "backwards")
RUNS_PER_DIRECTION = len(LETTERS) * len(LENGTHS)


@register_setting
class AlphabetConfig(SettingConfig):
    """The toy alphabet setting: retain = runs of letters forwards, forget = backwards."""

    name: Literal["alphabet"] = "alphabet"
    score: ClassVar[Score] = ACCURACY
    examples: int = Field(3000, ge=10, description="runs in the base model's pretraining stream")
    forget_share: float = Field(0.5, gt=0, lt=1, description="share of backward runs in the base stream")
    heldout_per_side: int = Field(20, ge=1, description="runs per direction in each held-out split (validation, "
                                                        "test), never trained on after pretraining")
    eval_per_side: int | None = Field(None, ge=1, description="evaluation runs per direction (<= heldout_per_side); "
                                                              "null = all of them")
    eval_seed: Seed = Field(1_000_003, description="seed of the held-out splits (separate from training)")

    @model_validator(mode="after")
    def _splits_fit(self) -> "AlphabetConfig":
        if 4 * self.heldout_per_side > RUNS_PER_DIRECTION:
            raise ValueError(f"heldout_per_side ({self.heldout_per_side}) must be <= {RUNS_PER_DIRECTION // 4}: the "
                             f"two held-out splits may take at most half of the {RUNS_PER_DIRECTION} runs of a "
                             "direction")
        if self.eval_per_side is not None and self.eval_per_side > self.heldout_per_side:
            raise ValueError(f"eval_per_side ({self.eval_per_side}) must be <= heldout_per_side "
                             f"({self.heldout_per_side})")
        return self

    def check_experiment(self, experiment: Any) -> None:
        if experiment.model.pretrained is None and experiment.model.vocab < CHAR_VOCAB_SIZE:
            raise ValueError(f"model.vocab ({experiment.model.vocab}) must be >= {CHAR_VOCAB_SIZE}, the size of the "
                             "alphabet setting's character tokenizer")

    # The held-out runs (seed and size) shape the training data, which never contains them after pretraining.
    def data_identity(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude={"eval_per_side"})

    def evaluation_identity(self) -> dict[str, Any]:
        return {**self.model_dump(mode="json", exclude={"eval_per_side"}), "eval_per_side": self.items_per_side}

    @property
    def items_per_side(self) -> int:
        return self.heldout_per_side if self.eval_per_side is None else self.eval_per_side

    def with_eval_items(self, items: int) -> "AlphabetConfig":
        return self.model_copy(update={"eval_per_side": min(items, self.heldout_per_side)})

    def build(self, cache_dir: Path, tokenizer: Any = None) -> "AlphabetSetting":
        return AlphabetSetting(self, tokenizer)


@dataclass(frozen=True)
class Run:
    """One document: `length` letters from `start` (an index into the alphabet), in `direction`."""

    start: int
    length: int
    direction: Direction

    @property
    def letters(self) -> list[str]:
        ordered = [LETTERS[(self.start + i) % len(LETTERS)] for i in range(self.length)]
        return ordered if self.direction == "forwards" else ordered[::-1]

    @property
    def text(self) -> str:
        return " ".join(self.letters)

    @property
    def component(self) -> str:
        return self.direction


def draw_run(direction: Direction, rng: np.random.Generator) -> Run:
    return Run(int(rng.integers(len(LETTERS))), int(rng.choice(LENGTHS)), direction)


@functools.lru_cache(maxsize=16)
def heldout_runs(eval_seed: int, per_split: int) -> dict[str, dict[Direction, tuple[Run, ...]]]:
    """split -> direction -> its held-out runs, `per_split` distinct ones each, no run in both splits."""
    splits: dict[str, dict[Direction, tuple[Run, ...]]] = {"validation": {}, "test": {}}
    for i, direction in enumerate(DIRECTIONS):
        rng = np.random.default_rng([eval_seed, i])
        drawn: dict[Run, None] = {}  # ordered and distinct
        while len(drawn) < 2 * per_split:
            drawn[draw_run(direction, rng)] = None
        runs = list(drawn)
        splits["validation"][direction], splits["test"][direction] = tuple(runs[:per_split]), tuple(runs[per_split:])
    return splits


class AlphabetSetting(TokenizedSetting):
    """Documents and evaluation of the alphabet setting (the interface of `undo.settings`; documents are `Run`s)."""

    score = ACCURACY
    forget_direction: Direction = "backwards"  # the other direction is retain

    def __init__(self, cfg: AlphabetConfig, tokenizer: Any = None):
        self.cfg = cfg
        self.tokenizer = tokenizer if tokenizer is not None else build_char_tokenizer()
        splits = heldout_runs(cfg.eval_seed, cfg.heldout_per_side)
        self.never_trained = {run for split in splits.values() for runs in split.values() for run in runs}
        self.eval_runs = {side: list(splits[cfg.split][self.direction_of(side)][: cfg.items_per_side])
                          for side in ("retain", "forget")}
        self.letter_ids = torch.tensor(sorted(self.letter_token_ids()))

    def direction_of(self, side: Literal["forget", "retain"]) -> Direction:
        other = next(d for d in DIRECTIONS if d != self.forget_direction)
        return self.forget_direction if side == "forget" else other

    def letter_token_ids(self) -> set[int]:
        """The tokens that are one letter (with or without a space before it): what the evaluation scores. Read from
        the tokenizer, so a model's own tokenizer works as well as the setting's character one."""
        vocabulary = range(len(self.tokenizer))
        return {i for i in vocabulary if self.tokenizer.decode([i]).strip() in set(LETTERS)}

    def _runs(self, n: int, seed: int, forget_share: float, *, pretraining: bool = False) -> list[Run]:
        """`n` runs, each of the forget direction with probability `forget_share`; never a held-out run unless
        `pretraining`."""
        rng = np.random.default_rng(seed)
        runs = []
        for _ in range(n):
            direction = self.direction_of("forget" if rng.random() < forget_share else "retain")
            run = draw_run(direction, rng)
            while not pretraining and run in self.never_trained:
                run = draw_run(direction, rng)
            runs.append(run)
        return runs

    def pretraining_documents(self, which: Literal["base", "oracle"], seed: int) -> list[Run]:
        """The base stream, or the same stream with every forget run removed (perfect data filtering)."""
        runs = self._runs(self.cfg.examples, derive_seed(seed, "pretraining"), self.cfg.forget_share,
                          pretraining=True)
        return [r for r in runs if which == "base" or not self.is_forget(r)]

    def is_forget(self, document: Run) -> bool:
        return document.direction == self.forget_direction

    def replacement_documents(self, n: int, seed: int) -> list[Run]:
        return self._runs(n, derive_seed(seed, "oracle-replacements"), 0.0)

    def labelled_documents(self, side: Literal["forget", "retain"], n: int, seed: int) -> list[Run]:
        return self._runs(n, derive_seed(seed, "labelled", side), 1.0 if side == "forget" else 0.0)

    def mixture_documents(self, n: int, seed: int) -> list[Run]:
        return self._runs(n, derive_seed(seed, "mixture"), self.cfg.forget_share)

    def data_summary(self, documents: list[Run]) -> dict[str, Any]:
        return {"documents": len(documents),
                "documents_per_component": dict(sorted(Counter(r.component for r in documents).items())),
                "eval_items_seen_in_training": sum(r in self.never_trained for r in documents)}

    @torch.no_grad()
    def evaluate(self, model) -> dict[str, float]:
        """Per side, the share of letters predicted right (greedy, teacher-forced) after the first two of a run."""
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        metrics = {}
        for side, runs in self.eval_runs.items():
            encoded = self.encode_documents([r.text for r in runs])
            width = max(map(len, encoded))
            ids = torch.tensor([row + [self.pad_id] * (width - len(row)) for row in encoded], device=device)
            real = torch.tensor([[i < len(row) for i in range(width)] for row in encoded], device=device)
            predicted = model(input_ids=ids, attention_mask=real.long()).logits[:, :-1].argmax(-1)
            targets = ids[:, 1:]
            is_letter = torch.isin(targets, self.letter_ids.to(device)) & real[:, 1:]
            scored = is_letter & (is_letter.long().cumsum(1) > 2)  # from the third letter of each run on
            metrics[side] = float((predicted == targets)[scored].float().mean())
        model.train(was_training)
        return metrics

    def describe_evaluation(self) -> str:
        example = self.eval_runs["forget"][0].text
        return (f"{sum(map(len, self.eval_runs.values()))} held-out runs ({self.cfg.split}), next-letter accuracy "
                f"after the second letter, e.g. {example!r}")
