"""The arithmetic setting: retain = addition and subtraction, forget = multiplication and division.

Data, as in the paper: bare equations ("23 + 7 = 30") and templated word problems. Operands are 1-50 for + and -,
1-20 for * and /; division is built as (q*b)/b so every answer is whole; subtraction puts the larger operand
first so answers are never negative (a word problem cannot give away more than it has). ASCII `*` and `/` stand
for x and / because the tokenizer is ASCII. Training word problems use 20 templates per operation; evaluation
uses 10 separate held-out templates per operation.

Held out: for each operation, `heldout_per_cell` operand pairs of a validation split and as many of a test split,
drawn from `eval_seed`. No stage after pretraining ever trains on them (unlearning, distillation, the attack): a
model that recovers a test item after the attack recovered a fact it was not shown again. Pretraining does contain
them by default, because they are the capability to remove: a model this small memorises x and / rather than
learning an algorithm (measured, 0.28M parameters: 96 % forget accuracy on pretrained pairs, 22 % on never-seen
ones), so a base model that never saw them would have little to forget. `heldout_from_pretraining: true` removes
them from pretraining too (the test then measures generalisation to unseen equations). Word problems of the splits
use held-out templates.

Evaluation: greedy decoding of a few characters after the prompt; the first number written is compared exactly
with the answer. Accuracy per operation x format (8 cells), plus `retain` and `forget` means over their cells.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from rich.console import Group
from rich.table import Table

import undo.settings.arithmetic_templates as templates
from undo.core.data import derive_seed, mixture_schedule
from undo.schema.strict import Seed
from undo.settings.base import ACCURACY, Score, SettingConfig, TokenizedSetting, register_setting
from undo.settings.tokenizer import CHAR_VOCAB_SIZE, build_char_tokenizer

Operation = Literal["add", "sub", "mul", "div"]

OPERATIONS: tuple[Operation, ...] = ("add", "sub", "mul", "div")
FORMATS = ("equation", "word")
SYMBOL = {"add": "+", "sub": "-", "mul": "*", "div": "/"}
OPERAND_RANGE = {"add": (1, 50), "sub": (1, 50), "mul": (1, 20), "div": (1, 20)}
ANSWER_CHARS = 5  # enough for "400." or " 99 " : the longest answer has 3 digits
FIRST_NUMBER = re.compile(r"-?\d+")


@register_setting
class ArithmeticConfig(SettingConfig):
    """The embedded arithmetic setting: retain = + and -, forget = x and /."""

    name: Literal["arithmetic"] = "arithmetic"
    score: ClassVar[Score] = ACCURACY
    examples: int = Field(60_000, ge=1, description="documents in the base model's pretraining stream")
    operation_weights: dict[Operation, float] = Field(
        default_factory=lambda: {"add": 1.0, "sub": 1.0, "mul": 1.0, "div": 1.0},
        description="mixture weight of each operation in the base stream",
    )
    word_problem_weight: float = Field(0.3, ge=0, le=1, description="share of word problems (rest: equations)")
    retain: list[Operation] = Field(default_factory=lambda: ["add", "sub"])
    forget: list[Operation] = Field(default_factory=lambda: ["mul", "div"])
    heldout_per_cell: int = Field(50, ge=1, le=1000, description="operand pairs per operation in each held-out "
                                                                "split (validation, test), never trained on")
    heldout_from_pretraining: bool = Field(
        False, description="also keep the held-out pairs out of pretraining (later stages never train on them); "
                           "false: they are part of the capability the base model learns and the study removes")
    eval_per_cell: int | None = Field(None, ge=1, le=100_000, description="evaluation items per operation x format "
                                                                         "(<= heldout_per_cell); null = all of them")
    eval_formats: list[Literal["equation", "word"]] | None = Field(
        None, min_length=1, description="formats evaluated; null = those the pretraining mixture contains (a "
                                        "format never trained on would only dilute the retain/forget means)")
    eval_seed: Seed = Field(1_000_003, description="seed of the fixed evaluation sets (separate from training)")
    eval_batch_size: int = Field(256, ge=1)

    @model_validator(mode="after")
    def _split_is_sane(self) -> "ArithmeticConfig":
        for op, weight in self.operation_weights.items():
            if weight < 0:
                raise ValueError(f"operation_weights.{op} must be >= 0, got {weight}")
        if sum(self.operation_weights.values()) <= 0:
            raise ValueError("operation_weights must have a positive weight somewhere")
        if set(self.retain) & set(self.forget):
            raise ValueError(f"retain {self.retain} and forget {self.forget} must not overlap")
        if not self.retain or not self.forget:
            raise ValueError("retain and forget must each name at least one operation")
        for side, operations in (("retain", self.retain), ("forget", self.forget)):
            if len(set(operations)) != len(operations):
                raise ValueError(f"{side} names an operation twice: {operations}")
        if self.eval_per_cell is not None and self.eval_per_cell > self.heldout_per_cell:
            raise ValueError(f"eval_per_cell ({self.eval_per_cell}) must be <= heldout_per_cell "
                             f"({self.heldout_per_cell}): a split holds only that many items per operation")
        scarcest = min(OPERATIONS, key=distinct_pairs)
        if 4 * self.heldout_per_cell > distinct_pairs(scarcest):
            raise ValueError(f"heldout_per_cell ({self.heldout_per_cell}) must be <= {distinct_pairs(scarcest) // 4}: "
                             f"the two held-out splits may take at most half of the {distinct_pairs(scarcest)} "
                             f"operand pairs of {SYMBOL[scarcest]}")
        return self

    def forget_parts(self) -> list[str]:
        """Each forget operation can be a round's forget data alone (`study.rounds`: e.g. [mul], then [div])."""
        return list(self.forget)

    def check_experiment(self, experiment: Any) -> None:
        if experiment.model.pretrained is None and experiment.model.vocab < CHAR_VOCAB_SIZE:
            raise ValueError(f"model.vocab ({experiment.model.vocab}) must be >= {CHAR_VOCAB_SIZE}, the size of the "
                             "arithmetic setting's character tokenizer")

    @property
    def evaluated_formats(self) -> list[str]:
        if self.eval_formats is not None:
            return list(self.eval_formats)
        return [fmt for fmt, share in (("equation", 1 - self.word_problem_weight), ("word", self.word_problem_weight))
                if share > 0]

    # Evaluation sizes and batching only change what is measured; the held-out pairs (seed and size) shape the
    # training data, which never contains them.
    def data_identity(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude={"eval_per_cell", "eval_batch_size", "eval_formats"})

    def evaluation_identity(self) -> dict[str, Any]:
        return {**self.model_dump(mode="json", exclude={"eval_batch_size", "eval_formats", "eval_per_cell"}),
                "eval_per_cell": self.items_per_cell, "eval_formats": self.evaluated_formats}

    @property
    def items_per_cell(self) -> int:
        return self.heldout_per_cell if self.eval_per_cell is None else self.eval_per_cell

    def with_eval_items(self, items: int) -> "ArithmeticConfig":
        return self.model_copy(update={"eval_per_cell": min(items, self.heldout_per_cell)})

    def build(self, cache_dir: Path, tokenizer: Any = None) -> "ArithmeticSetting":
        return ArithmeticSetting(self, tokenizer)

    def metrics_view(self, metrics: dict[str, float]) -> Group:
        """Accuracy per operation x format, then the retain/forget means."""
        table = Table()
        table.add_column("operation")
        for fmt in FORMATS:
            table.add_column(fmt, justify="right")
        for op in OPERATIONS:
            table.add_row(op, *(f"{metrics[f'{op}/{fmt}']:.0%}" if f"{op}/{fmt}" in metrics else "-"
                                for fmt in FORMATS))
        return Group(table, super().metrics_view(metrics))


@dataclass(frozen=True)
class Problem:
    op: Operation
    format: Literal["equation", "word"]
    a: int
    b: int
    answer: int
    prompt: str  # everything before the answer (ends with a space)
    completion: str  # the answer and what follows it

    @property
    def text(self) -> str:
        return self.prompt + self.completion

    @property
    def component(self) -> str:
        return f"{self.op}/{self.format}"


def distinct_pairs(op: Operation) -> int:
    """How many different (a, b) problems `op` has."""
    low, high = OPERAND_RANGE[op]
    n = high - low + 1
    return n * (n + 1) // 2 if op == "sub" else n * n


@functools.lru_cache(maxsize=16)
def heldout_pairs(eval_seed: int, per_split: int) -> dict[str, dict[Operation, tuple[tuple[int, int], ...]]]:
    """split -> operation -> its held-out (a, b) pairs, in drawing order: `per_split` distinct pairs per split,
    the validation split's first, no pair in both."""
    splits: dict[str, dict[Operation, tuple[tuple[int, int], ...]]] = {"validation": {}, "test": {}}
    for i, op in enumerate(OPERATIONS):
        rng = np.random.default_rng([eval_seed, i])
        drawn: dict[tuple[int, int], None] = {}  # ordered and distinct
        while len(drawn) < 2 * per_split:
            a, b, _ = draw_operands(op, rng)
            drawn[(a, b)] = None
        pairs = list(drawn)
        splits["validation"][op], splits["test"][op] = tuple(pairs[:per_split]), tuple(pairs[per_split:])
    return splits


def never_trained(cfg: "ArithmeticConfig") -> dict[Operation, set[tuple[int, int]]]:
    """Per operation, the pairs of both held-out splits: no training stream after pretraining contains them."""
    splits = heldout_pairs(cfg.eval_seed, cfg.heldout_per_cell)
    return {op: set(splits["validation"][op]) | set(splits["test"][op]) for op in OPERATIONS}


def draw_operands(op: Operation, rng: np.random.Generator) -> tuple[int, int, int]:
    """(a, b, answer) for one problem of `op`."""
    low, high = OPERAND_RANGE[op]
    x, y = (int(v) for v in rng.integers(low, high + 1, size=2))
    if op == "add":
        return x, y, x + y
    if op == "sub":
        a, b = max(x, y), min(x, y)
        return a, b, a - b
    if op == "mul":
        return x, y, x * y
    return x * y, y, x  # div: (q*b) / b = q


def make_problem(op: Operation, fmt: str, a: int, b: int, answer: int, rng: np.random.Generator,
                 template_set: dict[str, tuple[str, ...]]) -> Problem:
    if fmt == "equation":
        return Problem(op, "equation", a, b, answer, f"{a} {SYMBOL[op]} {b} = ", str(answer))
    template = template_set[op][int(rng.integers(len(template_set[op])))]
    name, name2 = (str(n) for n in rng.choice(templates.NAMES, size=2, replace=False))
    slots = dict(name=name, name2=name2, a=a, b=b,
                 obj=str(rng.choice(templates.OBJECTS)), container=str(rng.choice(templates.CONTAINERS)))
    before, after = template.split("{answer}")
    return Problem(op, "word", a, b, answer, before.format(**slots), str(answer) + after.format(**slots))


def training_problems(cfg: ArithmeticConfig, n: int, seed: int, *, pretraining: bool = False) -> list[Problem]:
    """`n` problems drawn from the operation x format mixture, never a held-out pair (except in `pretraining`,
    unless `heldout_from_pretraining`).

    Each component draws from its own RNG (derived from the seed), so the problems of one component do not
    depend on how often the others were picked.
    """
    weights = {f"{op}/{fmt}": cfg.operation_weights.get(op, 0.0) * (cfg.word_problem_weight if fmt == "word"
                                                                     else 1 - cfg.word_problem_weight)
               for op in OPERATIONS for fmt in FORMATS}
    rngs = {name: np.random.default_rng([seed, i]) for i, name in enumerate(weights)}
    excluded = not pretraining or cfg.heldout_from_pretraining
    heldout = never_trained(cfg) if excluded else {op: set() for op in OPERATIONS}
    problems = []
    for component in mixture_schedule(weights, n, seed):
        op, fmt = component.split("/")
        rng = rngs[component]
        a, b, answer = draw_operands(op, rng)
        while (a, b) in heldout[op]:  # the evaluation splits' problems are never trained on
            a, b, answer = draw_operands(op, rng)
        problems.append(make_problem(op, fmt, a, b, answer, rng, templates.TRAIN_TEMPLATES))
    return problems


def evaluation_problems(cfg: ArithmeticConfig) -> list[Problem]:
    """The evaluation items of `cfg.split`: its first `eval_per_cell` held-out operand pairs per operation, in each
    evaluated format (by default those the pretraining mixture contains); word problems from the held-out templates
    only. Drawn from `eval_seed`, never from a training seed."""
    pairs = heldout_pairs(cfg.eval_seed, cfg.heldout_per_cell)[cfg.split]
    problems = []
    for i, op in enumerate(OPERATIONS):
        for j, fmt in enumerate(FORMATS):
            if fmt not in cfg.evaluated_formats:
                continue
            rng = np.random.default_rng([cfg.eval_seed, i, j, 0 if cfg.split == "validation" else 1])
            for a, b in pairs[op][: cfg.items_per_cell]:
                problems.append(make_problem(op, fmt, a, b, answer_of(op, a, b), rng, templates.HELDOUT_TEMPLATES))
    return problems


def answer_of(op: Operation, a: int, b: int) -> int:
    return {"add": a + b, "sub": a - b, "mul": a * b, "div": a // b}[op]


def first_number(text: str) -> int | None:
    match = FIRST_NUMBER.search(text)
    return int(match.group()) if match else None


def score(problems: list[Problem], outputs: list[str], cfg: ArithmeticConfig) -> dict[str, float]:
    """Accuracy per operation x format cell, and the retain/forget means over their cells."""
    correct: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for problem, output in zip(problems, outputs, strict=True):
        total[problem.component] += 1
        correct[problem.component] += first_number(output) == problem.answer
    metrics = {cell: correct[cell] / total[cell] for cell in total}
    for side in ("retain", "forget"):
        cells = [c for c in metrics if c.split("/")[0] in getattr(cfg, side)]
        if cells:
            metrics[side] = sum(metrics[c] for c in cells) / len(cells)
    return metrics


def overlap_with_training(train: list[Problem], evaluation: list[Problem]) -> dict[str, int]:
    """How many evaluation items ask an (operation, a, b) that also occurs in `train`, per cell: 0 by construction
    for every stream after pretraining (and for pretraining with `heldout_from_pretraining`), recorded so that
    anyone can check it."""
    seen = {(p.op, p.a, p.b) for p in train}
    counts: Counter[str] = Counter()
    for p in evaluation:
        counts[p.component] += (p.op, p.a, p.b) in seen
    return dict(counts)


class ArithmeticSetting(TokenizedSetting):
    """Tokenizer, pretraining documents and evaluation for the arithmetic setting (the interface of
    `undo.settings`; documents are `Problem`s)."""

    score = ACCURACY

    def __init__(self, cfg: ArithmeticConfig, tokenizer: Any = None):
        self.cfg = cfg
        self.tokenizer = tokenizer if tokenizer is not None else build_char_tokenizer()
        self.eval_problems = evaluation_problems(cfg)

    def pretraining_documents(self, which: Literal["base", "oracle"], seed: int) -> list[Problem]:
        """The base stream, or the oracle's: the very same stream with every forget problem removed
        ("perfect data filtering", `is_forget` deciding, as for every filter: the oracle sees exactly the base's
        other examples, in the same order; an operation on neither side is ordinary data, kept)."""
        problems = training_problems(self.cfg, self.cfg.examples, seed, pretraining=True)
        if which == "oracle":
            problems = [p for p in problems if not self.is_forget(p)]
        return problems

    def is_forget(self, document: Problem) -> bool:
        """The one forget predicate: the oracle, the imperfect and classifier filters' records all use it."""
        return document.op in self.cfg.forget

    def replacement_documents(self, n: int, seed: int) -> list[Problem]:
        """Fresh problems of the oracle's mixture (both formats, every operation but the forget ones at its base
        weight) from a stream of their own."""
        return training_problems(self.without_forget(), n, derive_seed(seed, "oracle-replacements"),
                                 pretraining=True)

    def only(self, side: Literal["forget", "retain"]) -> ArithmeticConfig:
        """The config with the mixture cut to one side's operations: labelled data of that side. An operation on
        neither side is in neither (it is not labelled data of either)."""
        return self.restricted(getattr(self.cfg, side))

    def restricted(self, operations) -> ArithmeticConfig:
        """The config with the mixture cut to `operations`, at their base weights."""
        weights = {op: self.cfg.operation_weights.get(op, 1.0) for op in operations}
        return self.cfg.model_copy(update={"operation_weights": weights})

    def without_forget(self) -> ArithmeticConfig:
        """The config with the forget operations cut out of the mixture, the others at their base weights: the
        oracle's mixture (what the perfect filter leaves of the base one)."""
        weights = {op: weight for op, weight in self.cfg.operation_weights.items() if op not in self.cfg.forget}
        return self.cfg.model_copy(update={"operation_weights": weights})

    def labelled_documents(self, side: Literal["forget", "retain"], n: int, seed: int) -> list[Problem]:
        """Labelled data for unlearning: `n` problems of the forget (or retain) operations only, in both formats,
        from a stream of their own (not the pretraining stream's documents)."""
        return training_problems(self.only(side), n, derive_seed(seed, "unlearn", side))

    def forget_part_documents(self, parts: tuple[str, ...], n: int, seed: int) -> list[Problem]:
        """`n` problems of these forget operations only (a round's forget data), from a stream of their own."""
        return training_problems(self.restricted(parts), n, derive_seed(seed, "unlearn", "forget", *parts))

    def mixture_documents(self, n: int, seed: int) -> list[Problem]:
        """A fresh draw of `n` problems from the pretraining mixture (every operation)."""
        return training_problems(self.cfg, n, seed)

    def data_summary(self, problems: list[Problem]) -> dict:
        return {"documents": len(problems), "heldout_from_pretraining": self.cfg.heldout_from_pretraining,
                "documents_per_component": dict(sorted(Counter(p.component for p in problems).items())),
                "eval_items_seen_in_training": overlap_with_training(problems, self.eval_problems),
                "eval_items_per_cell": self.cfg.items_per_cell}

    @torch.no_grad()
    def generate_answers(self, model, prompts: list[str]) -> list[str]:
        """Greedy continuation of each prompt (ANSWER_CHARS characters), batched with left padding."""
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        outputs: list[str] = []
        pad = self.pad_id
        encoded = self.encode_documents(prompts)
        batch = self.cfg.eval_batch_size
        for start in range(0, len(encoded), batch):
            chunk = encoded[start : start + batch]
            width = max(len(ids) for ids in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for row, seq in enumerate(chunk):
                ids[row, width - len(seq) :] = torch.tensor(seq)
                mask[row, width - len(seq) :] = 1
            generated = model.generate(
                input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=ANSWER_CHARS,
                do_sample=False, pad_token_id=pad, eos_token_id=None,
            )
            # Cut each continuation at the end-of-text token: what follows belongs to an imagined next document.
            texts = self.tokenizer.batch_decode(generated[:, width:], skip_special_tokens=False)
            outputs += [text.split(self.tokenizer.eos_token)[0] for text in texts]
        model.train(was_training)
        return outputs

    def evaluate(self, model) -> dict[str, float]:
        return self.evaluate_sides(model, ("retain", "forget"))

    def evaluate_sides(self, model, sides: tuple[str, ...]) -> dict[str, float]:
        operations = {op for side in sides for op in getattr(self.cfg, side)}
        problems = [p for p in self.eval_problems if p.op in operations]
        return score(problems, self.generate_answers(model, [p.prompt for p in problems]), self.cfg)

    def describe_evaluation(self) -> str:
        return f"{len(self.eval_problems)} items, e.g. {self.eval_problems[-1].prompt!r}"
