"""The language setting: retain = one language's text (English), forget = another's (Korean), as in the paper.

Data: each corpus is read once (its first `max_documents` documents), shuffled with `eval_seed`, and split into two
held-out sets of `heldout_documents` each (validation, then test: never trained on) and a training pool. The base model pretrains on the first
`retain_documents` of the retain pool and the first `forget_documents` of the forget pool, interleaved; the oracle
on exactly those retain documents and nothing else (perfect data filtering: as much retain text as the base sees).
Unlearning, the attack and distillation draw their documents from the pools with their own seeds.

Tokenizer: a byte-level BPE trained on an equal number of characters of each pool (`undo.settings.bpe`), cached
by the hash of what it was trained on.

Metric: mean next-token cross-entropy (nats) over the held-out documents of each language, token-weighted; each
document is one row (opened by the end-of-text token, cut at the model's context, padded), so no prediction crosses
a document boundary. `retain_ce` and `forget_ce` are those numbers; `retain` and `forget` are the scores the stages
compare (minus the CE: higher = more capability, see `undo.settings.Score`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from undo.core.data import derive_seed, mixture_schedule, pack
from undo.schema.errors import UserError
from undo.schema.strict import Seed
from undo.settings.base import NEG_CE, Score, SettingConfig, TokenizedSetting, register_setting
from undo.settings.bpe import cached_tokenizer
from undo.settings.corpora import check_script, check_source, corpus_fingerprint, read_documents
from undo.settings.corpus_store import TextCorpus, TokenCorpus
from undo.settings.cross_entropy import document_rows, heldout_cross_entropy

Side = Literal["retain", "forget"]


@register_setting
class LanguageConfig(SettingConfig):
    """The language setting: retain = one corpus (English in the paper), forget = another (Korean). Each corpus is a
    file (.txt one document per line, .jsonl, .parquet; .xz/.gz read transparently) or a Hugging Face dataset id
    (streamed through `datasets`). Metric: mean next-token cross-entropy on held-out documents of each corpus."""

    name: Literal["language"] = "language"
    score: ClassVar[Score] = NEG_CE
    retain_corpus: str | list[str] = Field(description="retain corpus: a file path or a Hugging Face dataset id (a "
                                                       "list of them is one corpus)")
    forget_corpus: str | list[str] = Field(description="forget corpus: a file path or a Hugging Face dataset id (a "
                                                       "list of them is one corpus)")
    text_field: str = Field("text", description="the text field of JSONL/parquet records and datasets")
    retain_script: Literal["latin", "hangul"] | None = Field(
        "latin", description="the script the retain corpus must be written in (a cheap check); null = no check")
    forget_script: Literal["latin", "hangul"] | None = Field("hangul", description="likewise for the forget corpus")
    max_documents: int = Field(100_000, ge=10, description="documents read from each corpus (the first ones)")
    retain_documents: int = Field(20_000, ge=1, description="retain documents in the base model's pretraining "
                                                            "stream (the oracle trains on exactly these)")
    forget_documents: int = Field(20_000, ge=1, description="forget documents in the base model's stream")
    heldout_documents: int = Field(200, ge=1, description="documents of each corpus in each held-out split "
                                                          "(validation, test), never trained on (drawn from eval_seed)")
    eval_documents: int | None = Field(None, ge=1, description="held-out documents evaluated (<= heldout_documents);"
                                                               " null = all of them")
    eval_seed: Seed = Field(1_000_003, description="seed of the held-out split")
    vocab_size: int = Field(4096, ge=259, le=1_000_000, description="byte-level BPE vocabulary (model.vocab must be "
                                                                    ">= this)")
    tokenizer_sample_chars: int = Field(2_000_000, ge=1000, description="characters the tokenizer trains on, "
                                                                        "half from each corpus")
    eval_batch_size: int = Field(32, ge=1)

    @model_validator(mode="after")
    def _eval_fits(self) -> "LanguageConfig":
        for side in ("retain", "forget"):
            source = getattr(self, f"{side}_corpus")
            if not source or any(not one.strip() for one in ([source] if isinstance(source, str) else source)):
                raise ValueError(f"{side}_corpus names no corpus ({source!r}); give a file path or a dataset id")
        if self.eval_documents is not None and self.eval_documents > self.heldout_documents:
            raise ValueError(f"eval_documents ({self.eval_documents}) must be <= heldout_documents "
                             f"({self.heldout_documents})")
        return self

    # The held-out split shapes the training pool, so its seed and size count for the data; so do the corpus
    # files' contents (a changed file is new data under the same name).
    def data_identity(self) -> dict[str, Any]:
        return {**self.model_dump(mode="json", exclude={"eval_documents", "eval_batch_size"}),
                "corpus_sha256": self.corpus_fingerprints()}

    def evaluation_identity(self) -> dict[str, Any]:
        return {**self.model_dump(mode="json", exclude={"eval_batch_size"}),
                "corpus_sha256": self.corpus_fingerprints()}

    def corpus_fingerprints(self) -> dict[str, str]:
        return {side: corpus_fingerprint(getattr(self, f"{side}_corpus")) for side in ("retain", "forget")}

    def with_eval_items(self, items: int) -> "LanguageConfig":
        return self.model_copy(update={"eval_documents": min(items, self.heldout_documents)})

    def check_experiment(self, experiment) -> None:
        if experiment.model.pretrained is None and experiment.model.vocab < self.vocab_size:
            raise ValueError(f"model.vocab ({experiment.model.vocab}) must be >= setting.vocab_size "
                             f"({self.vocab_size}), the tokenizer's size")

    def build(self, cache_dir: Path, tokenizer: Any = None) -> "LanguageSetting":
        return LanguageSetting(self, cache_dir=cache_dir, tokenizer=tokenizer)

    def metrics_view(self, metrics: dict[str, float]) -> str:
        return f"retain CE {metrics['retain_ce']:.3f} nats, forget CE {metrics['forget_ce']:.3f} nats"


@dataclass(frozen=True, eq=False)
class Document:
    """Document `index` of one side's corpus."""

    corpus: TextCorpus | TokenCorpus
    index: int
    component: str  # "retain" or "forget"

    @property
    def text(self) -> str:
        return self.corpus.text(self.index)


class LanguageSetting(TokenizedSetting):
    """Corpora, tokenizer and cross-entropy evaluation for the language setting (the interface of
    `undo.settings`). With a model built here, the corpora are read into memory and a BPE tokenizer is trained on
    them; with a checkpoint's tokenizer, each corpus is tokenized once into a memmap on disk (`corpus_store`)."""

    score = NEG_CE

    def __init__(self, cfg: LanguageConfig, *, cache_dir: str | Path | None = None, tokenizer: Any = None):
        self.cfg = cfg
        cache = Path(cache_dir or ".undo_cache")
        self.corpora: dict[Side, TextCorpus | TokenCorpus] = {}
        self.heldout_order: dict[Side, np.ndarray] = {}
        self.pool: dict[Side, np.ndarray] = {}  # corpus indices, in the seeded order they are drawn in
        for side in ("retain", "forget"):  # every missing file is reported before any corpus is read
            check_source(getattr(cfg, f"{side}_corpus"))
        for side in ("retain", "forget"):
            source = getattr(cfg, f"{side}_corpus")
            if tokenizer is None:
                corpus = TextCorpus(read_documents(source, limit=cfg.max_documents, text_field=cfg.text_field))
            else:
                corpus = TokenCorpus.build(cache / "tokens", source, limit=cfg.max_documents,
                                           text_field=cfg.text_field, tokenizer=tokenizer)
            script = getattr(cfg, f"{side}_script")
            if script is not None:
                check_script([corpus.text(i) for i in range(min(200, len(corpus)))], script, source,
                             role=f"setting.{side}_corpus")
            order = np.random.default_rng([cfg.eval_seed, 0 if side == "retain" else 1]).permutation(len(corpus))
            held = 2 * cfg.heldout_documents  # validation, then test
            wanted = held + getattr(cfg, f"{side}_documents")
            if len(order) < wanted:
                raise UserError(f"{source} has {len(order):,} documents (reading at most setting.max_documents="
                                f"{cfg.max_documents:,}); two held-out splits of setting.heldout_documents + "
                                f"setting.{side}_documents need {wanted:,}: lower them or point at a larger corpus")
            self.corpora[side] = corpus
            split = slice(0, cfg.heldout_documents) if cfg.split == "validation" else slice(cfg.heldout_documents, held)
            self.heldout_order[side] = order[split]
            self.pool[side] = order[held:]
        # A model from a checkpoint brings its tokenizer; a model built here gets a BPE trained on both pools.
        if tokenizer is None:
            tokenizer = cached_tokenizer(
                cache / "tokenizers", {side: [self.corpora[side].text(i) for i in self.pool[side]]
                                       for side in ("retain", "forget")},
                cfg.vocab_size, sample_chars=cfg.tokenizer_sample_chars, seed=cfg.eval_seed)
            for corpus in self.corpora.values():
                corpus.tokenizer = tokenizer
        self.tokenizer = tokenizer
        self.heldout = {side: [Document(self.corpora[side], int(i), side) for i in order]
                        for side, order in self.heldout_order.items()}
        evaluated = cfg.eval_documents or cfg.heldout_documents
        self.eval_documents = {side: docs[:evaluated] for side, docs in self.heldout.items()}

    # ------------------------------------------------------------------------------------------------------
    # Documents

    def pretraining_documents(self, which: Literal["base", "oracle"], seed: int) -> list[Document]:
        """The base stream (retain and forget documents interleaved by a seeded schedule), or the oracle's: the same
        stream with every forget document removed."""
        counts = {"retain": self.cfg.retain_documents, "forget": self.cfg.forget_documents}
        schedule = mixture_schedule({"retain": counts["retain"], "forget": counts["forget"]}, sum(counts.values()),
                                    derive_seed(seed, "language-mixture"))
        taken = {"retain": 0, "forget": 0}
        stream = []
        for side in schedule:  # i.i.d. picks; the first N of each pool are used, then the other side fills up
            if taken[side] >= counts[side]:
                side = "forget" if side == "retain" else "retain"
            stream.append(Document(self.corpora[side], int(self.pool[side][taken[side]]), side))
            taken[side] += 1
        if which == "oracle":
            stream = [d for d in stream if d.component == "retain"]
        return stream

    def is_forget(self, document: Document) -> bool:
        return document.component == "forget"

    def replacement_documents(self, n: int, seed: int) -> list[Document]:
        """The retain pool's documents after the base stream's `retain_documents` (more retain text, never in the base
        stream), in the pool's seeded order."""
        start, pool = self.cfg.retain_documents, self.pool["retain"]
        if start + n > len(pool):
            raise UserError(f"an equal-compute oracle needs {start + n:,} retain documents in the pool, which holds "
                            f"{len(pool):,}: raise setting.max_documents, point at a larger retain corpus, or set "
                            "pretrain.oracle_budget: same_examples")
        return [Document(self.corpora["retain"], int(i), "retain") for i in pool[start : start + n]]

    def labelled_documents(self, side: Side, n: int, seed: int) -> list[Document]:
        """`n` documents of one side, sampled (with replacement once the pool is exhausted) from its pool."""
        return self._sample(side, n, derive_seed(seed, "language", side))

    def mixture_documents(self, n: int, seed: int) -> list[Document]:
        """A fresh draw of the pretraining mixture: the base stream's proportions, sampled from the pools."""
        weights = {"retain": self.cfg.retain_documents, "forget": self.cfg.forget_documents}
        schedule = mixture_schedule(weights, n, derive_seed(seed, "language-mixture-draw"))
        picks = {side: iter(self._sample(side, schedule.count(side), derive_seed(seed, "draw", side)))
                 for side in ("retain", "forget")}
        return [next(picks[side]) for side in schedule]

    def _sample(self, side: Side, n: int, seed: int) -> list[Document]:
        pool = self.pool[side]
        rng = np.random.default_rng(seed)
        index = rng.permutation(len(pool))
        if n > len(pool):
            index = np.concatenate([index, rng.integers(len(pool), size=n - len(pool))])
        return [Document(self.corpora[side], int(pool[i]), side) for i in index[:n]]

    def data_summary(self, documents: list[Document]) -> dict:
        per_side = {side: sum(d.component == side for d in documents) for side in ("retain", "forget")}
        return {"documents": len(documents), "documents_per_component": per_side,
                "heldout_documents_per_side": self.cfg.heldout_documents,
                "eval_documents_per_side": len(self.eval_documents["retain"])}

    # ------------------------------------------------------------------------------------------------------
    # Tokens and evaluation

    def document_ids(self, documents: list[Document]) -> list[list[int]]:
        """Each document's token ids, opened by the end-of-text token (read from the store, or tokenized in one
        batch per corpus)."""
        ids: list[list[int] | None] = [None] * len(documents)
        for corpus in {id(d.corpus): d.corpus for d in documents}.values():
            positions = [i for i, d in enumerate(documents) if d.corpus is corpus]
            for position, tokens in zip(positions, corpus.token_ids([documents[i].index for i in positions])):
                ids[position] = [self.tokenizer.eos_token_id, *tokens]
        return ids

    def packed_rows(self, documents: list[Document], context: int):
        return pack(self.document_ids(documents), context)

    def document_rows(self, documents: list[Document], context: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One row per document, cut at `context` tokens and right-padded, and the mask of its real tokens (pads are
        never predicted)."""
        return document_rows(self.document_ids(documents), context, self.pad_id)

    def evaluate(self, model) -> dict[str, float]:
        return self.evaluate_sides(model, ("retain", "forget"))

    def evaluate_sides(self, model, sides: tuple[str, ...]) -> dict[str, float]:
        context = self.context or model.config.max_position_embeddings
        metrics: dict[str, float] = {}
        for side in sides:
            documents = self.eval_documents[side]
            rows, real = self.document_rows(documents, context)
            ce = heldout_cross_entropy(model, rows, real=real, batch_size=self.cfg.eval_batch_size)
            metrics[f"{side}_ce"] = ce
            metrics[side] = -ce
        return metrics

    def describe_evaluation(self) -> str:
        return f"{len(self.eval_documents['retain'])} held-out documents per side"
