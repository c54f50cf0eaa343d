"""Settings: a tokenizer, retain/forget corpora and an `evaluate(model)` that returns retain/forget metrics.

Every setting offers the same small interface, which is all the stages use:
- `tokenizer` (a `PreTrainedTokenizerFast`; `<pad>`=0, `<unk>`=1, `<|endoftext|>`=2) and `score` (below);
- `pretraining_documents(which, seed)`: the base stream, or the oracle's (the same stream, forget documents removed);
- `labelled_documents(side, n, seed)`: forget- or retain-only documents, for unlearning (and a 'forget' attack);
- `mixture_documents(n, seed)`: a fresh draw of the pretraining mixture (distillation text, a 'mixture' attack);
- `packed_rows(documents, context)`: the documents as one token stream cut into training rows;
- `evaluate(model)`: metrics, including `retain` and `forget` as *scores* (higher = more of the capability);
- `data_summary(documents)`: what a pretraining artifact records about its data.
A document is anything with `.text` and `.component` (e.g. "mul/equation", or "ko").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal


@dataclass(frozen=True)
class Score:
    """How a setting's `retain` and `forget` scores read and compare. Both are oriented so that higher means more of
    the capability (accuracy; or minus the cross-entropy, in nats), so attacker-best is always a maximum and
    robustness always (P_unlearn_only - P) / (P_unlearn_only - P_oracle). The tolerances are absolute for accuracy
    and relative for cross-entropy, as in the paper (mean accuracy within 0.05; relative CE gap below 0.05)."""

    kind: Literal["accuracy", "neg_ce"]

    @property
    def relative(self) -> bool:
        return self.kind == "neg_ce"

    def retain_floor(self, base: float, fraction: float) -> float:
        """The lowest retain score that keeps `fraction` of the base model's retain (CE may grow by 1/fraction)."""
        return base / fraction if self.relative else fraction * base

    def at_least_near(self, reference: float, tolerance: float) -> float:
        """The lowest score within `tolerance` of `reference` (the stop rule's retain threshold)."""
        return reference * (1 + tolerance) if self.relative else reference - tolerance

    def at_most_near(self, reference: float, tolerance: float) -> float:
        """The highest score within `tolerance` of `reference` (the forget ceiling of oracle matching)."""
        return reference * (1 - tolerance) if self.relative else reference + tolerance

    def shown(self, value: float) -> float:
        """The number people read: the accuracy, or the cross-entropy itself (not its negative)."""
        return -value if self.relative else value

    def format(self, value: float | None, digits: int = 1) -> str:
        if value is None:
            return "–"
        return f"{self.shown(value):.{digits + 1}f}" if self.relative else f"{100 * value:.{digits}f}%"

    def label(self, side: str) -> str:
        return f"{side} CE (nats)" if self.relative else f"{side} accuracy"


ACCURACY = Score("accuracy")
NEG_CE = Score("neg_ce")


class TokenizedSetting:
    """What every setting does with its tokenizer: documents -> token ids, each document opened by the
    end-of-text token (so a prompt at evaluation starts exactly like a document in training) -> training rows."""

    tokenizer: Any

    def encode_documents(self, texts: list[str]) -> list[list[int]]:
        eos = self.tokenizer.eos_token_id
        return [[eos, *ids] for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]

    def packed_rows(self, documents: list, context: int):
        """The documents' texts as one token stream cut into rows of `context` tokens (every stage trains on these)."""
        from undo.data import pack

        return pack(self.encode_documents([d.text for d in documents]), context)


def score_of(setting_name: str) -> Score:
    return NEG_CE if setting_name == "language" else ACCURACY


def make_setting(cfg, *, cache_dir: str | Path | None = None, eval_items: int | None = None):
    """The setting a config names. `eval_items` overrides the evaluation size (the attack evaluates often, on
    fewer items); `cache_dir` is where a setting may cache derived files (the language setting's tokenizer)."""
    if cfg.name == "language":
        from undo.settings.language import LanguageSetting

        if eval_items is not None:
            cfg = cfg.model_copy(update={"eval_documents": eval_items})
        return LanguageSetting(cfg, cache_dir=cache_dir)
    from undo.settings.arithmetic import ArithmeticSetting

    if eval_items is not None:
        cfg = cfg.model_copy(update={"eval_per_cell": eval_items})
    return ArithmeticSetting(cfg)
