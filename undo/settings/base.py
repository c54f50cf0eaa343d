"""What every setting provides, and the registry that maps `setting.name` to it.

A setting is the pair of capabilities a study keeps (retain) and removes (forget), with their data and their
measurement. It has two halves:
- its **config section** (`SettingConfig` subclass, the `setting:` block of the YAML), registered by name with
  `@register_setting`. It says how its scores compare (`score`), which of its fields shape training data
  (`data_identity`) and which decide what an evaluation measures (`evaluation_identity`): stage keys hash exactly
  these; it checks itself against the rest of the experiment and says how its metrics print;
- the **setting object** it builds (`build`), which every stage uses through the same small interface (`Setting`):
  tokenizer, documents for each stage, packed token rows, `evaluate(model)`.
The experiment config accepts any registered name, so adding a setting is one module that defines both halves and
registers its config class; no code outside `undo/settings/` asks which setting it has.
"""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

from pydantic import PrivateAttr

from undo.schema.strict import StrictModel
from undo.schema.score import ACCURACY, NEG_CE, Score  # noqa: F401  (settings name their score)
from undo.core.artifacts import stable_hash
from undo.core.data import pack

if TYPE_CHECKING:
    from rich.console import RenderableType


class Setting(Protocol):
    """The interface every stage uses. A document is anything with `.text` and `.component` (e.g. "mul/equation")."""

    tokenizer: Any  # the setting's own (`<pad>`=0, `<unk>`=1, `<|endoftext|>`=2), or the model's
    score: Score
    context: int | None  # the experiment's sequence length (set by `build_setting`)

    def pretraining_documents(self, which: Literal["base", "oracle"], seed: int) -> list:
        """The base model's stream, or the oracle's (the same stream with the forget documents removed)."""

    def replacement_documents(self, n: int, seed: int) -> list:
        """`n` retain-domain documents that are not in the base stream: what an equal-compute oracle trains on in
        place of the forget documents filtered out."""

    def is_forget(self, document) -> bool:
        """Whether a pretraining document belongs to the forget domain (what a perfect data filter removes)."""

    def labelled_documents(self, side: Literal["forget", "retain"], n: int, seed: int) -> list:
        """Forget- or retain-only documents, for unlearning (and a forget-data attack)."""

    def mixture_documents(self, n: int, seed: int) -> list:
        """A fresh draw of the pretraining mixture (distillation text)."""

    def forget_part_documents(self, parts: tuple[str, ...], n: int, seed: int) -> list:
        """Forget documents of these parts of the forget side only (`SettingConfig.forget_parts`): one round's data.
        Only settings whose config names parts implement it."""

    def attack_documents(self, data: Literal["forget", "mixture"], n: int, seed: int) -> list:
        """What the relearning attack trains on: forget documents, or a draw of the mixture. A setting whose
        evaluation asks about particular documents leaves those out, so an attack can only bring back what the
        model still holds, never teach the answers."""

    def packed_rows(self, documents: list, context: int):
        """The documents as one token stream cut into training rows of `context` tokens."""

    def evaluate(self, model) -> dict[str, float]:
        """Metrics, including `retain` and `forget` as scores (higher = more of the capability), on the split the
        setting was built for (`SettingConfig.split`)."""

    def evaluate_sides(self, model, sides: tuple[str, ...]) -> dict[str, float]:
        """At least the `sides` scores ("retain", "forget"): a cheaper evaluation where a setting can measure one
        side alone (the distillation stop rule probes retain often)."""

    def data_summary(self, documents: list) -> dict[str, Any]:
        """What a pretraining artifact records about its data."""

    def describe_evaluation(self) -> str:
        """One line on what `evaluate` measures (for `undo data`)."""


def encode_texts(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """Each text's token ids after the tokenizer's end-of-text token (documents are separated by it when packed):
    how every setting, and the Python API's texts, become training tokens."""
    eos = tokenizer.eos_token_id
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and backend.truncation is None and backend.padding is None:
        # A fast tokenizer's own batch encoder gives the same ids as calling the tokenizer, without
        # transformers' per-document conversion (most of the time of packing a large corpus).
        encoded = (encoding.ids for encoding in backend.encode_batch(texts, add_special_tokens=False))
    else:
        encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [[eos, *ids] for ids in encoded]


class TokenizedSetting:
    """What every setting does with its tokenizer: documents -> token ids, each document opened by the
    end-of-text token (so a prompt at evaluation starts exactly like a document in training) -> training rows."""

    tokenizer: Any
    context: int | None = None

    def evaluate_sides(self, model, sides: tuple[str, ...]) -> dict[str, float]:
        return self.evaluate(model)  # a setting that can measure one side alone overrides this

    def attack_documents(self, data: Literal["forget", "mixture"], n: int, seed: int) -> list:
        return self.labelled_documents("forget", n, seed) if data == "forget" else self.mixture_documents(n, seed)

    @property
    def pad_id(self) -> int:
        """The id padded positions hold (a tokenizer without a pad token pads with end-of-text; padded positions are
        always masked by length, never recognised by their id)."""
        pad = self.tokenizer.pad_token_id
        return self.tokenizer.eos_token_id if pad is None else pad

    def encode_documents(self, texts: list[str]) -> list[list[int]]:
        """Each text's token ids after an end-of-text token (documents are separated by it when packed)."""
        return encode_texts(self.tokenizer, texts)

    def packed_rows(self, documents: list, context: int):
        """The documents' texts as one token stream cut into rows of `context` tokens (every stage trains on these)."""
        return pack(self.encode_documents([d.text for d in documents]), context)


Split = Literal["validation", "test"]


class SettingConfig(StrictModel):
    """The `setting:` section. Subclasses narrow `name` to a Literal, set `score`, and implement the abstract methods
    below (pydantic's model class is an ABC: a section that leaves one out cannot be made).

    Every setting holds out two disjoint evaluation splits, never trained on: **validation**, which every decision
    reads (the stop rule, teacher selection, the attacker's choice of LR), and **test**, behind every reported
    number. A section evaluates its `split` (validation unless `with_split` says otherwise): stages never set it,
    `for_decisions` and `for_report` do."""

    name: str
    score: ClassVar[Score]
    _split: Split = PrivateAttr("validation")

    @property
    def split(self) -> Split:
        return self._split

    def with_split(self, split: Split) -> "SettingConfig":
        copy = self.model_copy()
        copy._split = split
        return copy

    @abstractmethod
    def data_identity(self) -> dict[str, Any]:
        """Everything that shapes training data (stage keys hash it): not evaluation sizes, which only change what
        is measured. A file's contents count, not just its name."""

    @abstractmethod
    def evaluation_identity(self) -> dict[str, Any]:
        """Everything that decides what `evaluate` measures (the items, their seed, the files they come from)."""

    @abstractmethod
    def with_eval_items(self, items: int) -> "SettingConfig":
        """This setting evaluated on `items` items per cell/side (the attack evaluates often, on fewer)."""

    def forget_parts(self) -> list[str]:
        """The parts of the forget side a round of unlearning can forget alone (`study.rounds`); none by default."""
        return []

    def check_experiment(self, experiment: Any) -> None:
        """Raise ValueError (one line, naming the keys) if the rest of the experiment does not fit this setting."""

    @abstractmethod
    def build(self, cache_dir: Path, tokenizer: Any = None) -> Setting:
        """The setting object; `cache_dir` is where it may keep derived files (e.g. a trained tokenizer).
        `tokenizer` is the model's own when the model comes from a checkpoint; None = the setting's own."""

    def full_evaluation(self) -> "SettingConfig":
        """This section with its evaluation at full size. A setting whose evaluations during training are cut short
        (a limit of questions) lifts the limit here; by default the same."""
        return self

    def for_decisions(self) -> "SettingConfig":
        """The evaluation teacher selection and the study's other choices read: the full validation split."""
        return self.full_evaluation().with_split("validation")

    def for_report(self) -> "SettingConfig":
        """The evaluation behind every reported number: the full test split."""
        return self.full_evaluation().with_split("test")

    def metrics_view(self, metrics: dict[str, float]) -> "RenderableType":
        """How a model's metrics print in the CLI (a line, or a rich table)."""
        return "  ".join(f"{side} {self.score.format(metrics[side])}" for side in ("retain", "forget")
                         if side in metrics)


SETTINGS: dict[str, type[SettingConfig]] = {}


def register_setting(config_class: type[SettingConfig]) -> type[SettingConfig]:
    """Make `setting.name: <name>` valid in every config (the name is the class's `name` default)."""
    name = config_class.model_fields["name"].default
    if not isinstance(name, str):
        raise TypeError(f"{config_class.__name__}.name needs a default: the setting's name")
    SETTINGS[name] = config_class
    return config_class


def parse_setting(value: Any, default: str) -> SettingConfig:
    """A `setting:` section (a mapping, or an already validated section) as its registered config class."""
    if isinstance(value, SettingConfig):
        return value
    if not isinstance(value, dict):
        raise ValueError(f"setting must be a mapping of keys, got {type(value).__name__}")
    name = value.get("name", default)
    if name not in SETTINGS:
        raise ValueError(f"setting.name must be one of {', '.join(repr(n) for n in sorted(SETTINGS))}, got {name!r}")
    return SETTINGS[name].model_validate(value)


_BUILT: dict[str, Setting] = {}


def build_setting(cfg: SettingConfig, cache_dir: str | Path, *, tokenizer: Any = None,
                  tokenizer_identity: str | None = None, context: int | None = None) -> Setting:
    """`cfg.build(cache_dir, tokenizer)`, once per process: a study builds the same setting for every stage, and
    building one can take seconds (the language setting reads two corpora and its tokenizer). The cache key holds the
    data identity, so an edited corpus file is read again, and the tokenizer's identity. `context` is the sequence
    length the experiment trains at (evaluations that cut documents cut them there)."""
    key = stable_hash({"class": f"{type(cfg).__module__}.{type(cfg).__qualname__}", "split": cfg.split,
                       "config": cfg.model_dump(mode="json"), "data": cfg.data_identity(),
                       "cache_dir": str(cache_dir), "tokenizer": tokenizer_identity, "context": context})
    if key not in _BUILT:
        setting = cfg.build(Path(cache_dir), tokenizer)
        setting.context = context
        _BUILT[key] = setting
    return _BUILT[key]
