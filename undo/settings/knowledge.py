"""The knowledge setting: a topic inside one language, the paper's WMDP setting at CPU scale.

Forget = what a model knows about the biology categories of WordNet's nouns (`animal`, `plant`, `body` by default),
retain = what it knows about every other noun. Both sides are the same kind of short English definition
(`undo.settings.wordnet`), so no script or style separates them and a filter has to learn the topic; some retain
definitions mention animals or plants, so knowledge leaks across the label as it does in real pretraining data.
It is an analogue of WMDP's bio split, not hazardous knowledge: WordNet's categories stand in for a topic boundary.

Data (`knowledge_split`, from `eval_seed`): per side, held-out synsets for the cross-entropy (validation, test;
never trained on), synsets asked about (validation, test) and a pool of the rest. The base model pretrains on one
document per synset (`aardvark: a kind of mammal. nocturnal burrowing mammal ...`): every asked synset and the
pool's first ones, `forget_synsets` + `retain_synsets` in all; the oracle on the retain ones alone (an equal-compute
oracle adds more of the retain pool). Unlearning and the attack draw from the pools only, so no stage but
pretraining (and distillation, which reads the pretraining stream as the paper's does) sees an asked synset's
document: an attacked model that answers a test question recovered what it knew rather than learned it.

Scores: four-way multiple choice through lm-evaluation-harness ("aardvark: a kind of" + " mammal" and three
hypernyms of other synsets of the same side; chance 25 %), on task files written here (offline), scored by
`choice_metric` (`acc`: the summed log-likelihood of the choice; `acc_norm`: per byte, lm-eval's length
normalisation); both are recorded (`forget_acc`, `forget_acc_norm`, ...). Beside them, the mean next-token
cross-entropy on each side's held-out definitions (`retain_ce`, `forget_ce`, as in the language setting).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, PrivateAttr, model_validator

from undo.core.artifacts import build_once, file_sha256, stable_hash
from undo.core.data import derive_seed
from undo.schema.errors import UserError
from undo.schema.strict import Seed
from undo.settings.base import Score, SettingConfig, TokenizedSetting, register_setting
from undo.settings.bpe import cached_tokenizer
from undo.settings.cross_entropy import document_rows, heldout_cross_entropy
from undo.settings.mcq import (
    MCQ_ACCURACY, bos_policy, checkpoint_bos_policy, quiet, require_lm_eval, run_tasks, task_accuracy,
    write_choice_task,
)
from undo.settings.tokenizer import with_bos
from undo.settings.wordnet import BIOLOGY, KnowledgeSplit, Synset, knowledge_split, read_synsets, task_items

Side = Literal["retain", "forget"]
SIDES: tuple[Side, ...] = ("retain", "forget")
DEFAULT_WORDNET = "../shared/data/wordnet_nouns.jsonl.xz"


@register_setting
class KnowledgeConfig(SettingConfig):
    """Topic knowledge inside one language: forget = WordNet's biology nouns (by lexicographer category), retain =
    the other nouns; measured by four-way multiple choice (lm-eval) and held-out cross-entropy."""

    name: Literal["knowledge"] = "knowledge"
    score: ClassVar[Score] = MCQ_ACCURACY
    wordnet: str = Field(DEFAULT_WORDNET, description="WordNet's noun synsets (wordnet_nouns.jsonl.xz, one JSON "
                                                      "record per line)")
    forget_lexnames: list[str] = Field(list(BIOLOGY), min_length=1,
                                       description="lexicographer categories whose knowledge is removed")
    forget_synsets: int = Field(2000, ge=1, description="forget synsets in the base model's pretraining (every asked "
                                                        "one included)")
    retain_synsets: int = Field(2000, ge=1, description="retain synsets in the base model's pretraining (the oracle "
                                                        "trains on exactly these)")
    questions: int = Field(200, ge=1, description="questions per side in each split (validation, test)")
    heldout_documents: int = Field(200, ge=1, description="held-out definitions per side in each split, for the "
                                                          "cross-entropy (never trained on)")
    choice_metric: Literal["acc", "acc_norm"] = Field(
        "acc", description="lm-eval's score of a choice: acc = summed log-likelihood, acc_norm = per byte")
    limit: int | None = Field(100, ge=1, description="questions (and held-out definitions) per side in evaluations "
                                                     "during training; null = all")
    report_limit: int | None = Field(None, ge=1, description="likewise behind reported numbers and teacher "
                                                             "selection; null = all")
    eval_seed: Seed = Field(1_000_003, description="seed of the split into held-out, asked and pool synsets")
    vocab_size: int = Field(2048, ge=259, le=1_000_000, description="byte-level BPE vocabulary (model.vocab must be "
                                                                    ">= this)")
    tokenizer_sample_chars: int = Field(2_000_000, ge=1000, description="characters the tokenizer trains on, half "
                                                                        "from each side")
    eval_batch_size: int = Field(32, ge=1)
    # As the mcq setting: whether lm-eval opens questions with BOS follows the model's convention.
    _checkpoint: tuple[str, str | None, bool] | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _sizes_fit(self) -> "KnowledgeConfig":
        for side in SIDES:
            if getattr(self, f"{side}_synsets") < 2 * self.questions:
                raise ValueError(f"setting.{side}_synsets ({getattr(self, f'{side}_synsets')}) must hold the "
                                 f"2 x setting.questions ({2 * self.questions}) synsets asked about")
        return self

    EVALUATION_ONLY: ClassVar[set[str]] = {"choice_metric", "limit", "report_limit", "eval_batch_size"}

    def data_identity(self) -> dict[str, Any]:
        return {**self.model_dump(mode="json", exclude=self.EVALUATION_ONLY), "wordnet_sha256": self.fingerprint()}

    def evaluation_identity(self) -> dict[str, Any]:
        return {**self.model_dump(mode="json", exclude={"eval_batch_size"}), "wordnet_sha256": self.fingerprint(),
                "lm_eval": require_lm_eval().__version__, "add_bos_token": checkpoint_bos_policy(self._checkpoint)[0]}

    def fingerprint(self) -> str:
        path = Path(self.wordnet).expanduser()
        return file_sha256(path) if path.is_file() else self.wordnet  # a missing file is reported when built

    def with_eval_items(self, items: int) -> "KnowledgeConfig":
        return self.model_copy(update={"limit": items})

    def full_evaluation(self) -> "KnowledgeConfig":
        return self.model_copy(update={"limit": self.report_limit})

    def forget_parts(self) -> list[str]:
        """Each forget category can be a round's forget data alone (`study.rounds`: e.g. [animal])."""
        return list(self.forget_lexnames)

    def check_experiment(self, experiment) -> None:
        model = experiment.model
        if model.pretrained is None and model.vocab < self.vocab_size:
            raise ValueError(f"model.vocab ({model.vocab}) must be >= setting.vocab_size ({self.vocab_size}), the "
                             "tokenizer's size")
        self._checkpoint = None if model.pretrained is None else (model.pretrained, model.revision,
                                                                  model.trust_remote_code)

    def build(self, cache_dir: Path, tokenizer: Any = None) -> "KnowledgeSetting":
        return KnowledgeSetting(self, cache_dir=cache_dir, tokenizer=tokenizer)

    def metrics_view(self, metrics: dict[str, float]) -> str:
        line = (f"retain {100 * metrics['retain']:.1f}%  forget {100 * metrics['forget']:.1f}% (chance "
                f"{100 * self.score.chance:.0f}%)")
        if "retain_ce" in metrics:
            line += f"  retain CE {metrics['retain_ce']:.3f}  forget CE {metrics['forget_ce']:.3f} nats"
        return line


@dataclass(frozen=True)
class SynsetDocument:
    """One synset's pretraining document, labelled by its side."""

    synset: Synset
    component: str  # "retain" or "forget"

    @property
    def text(self) -> str:
        return self.synset.document()


@functools.lru_cache(maxsize=2)
def _synsets(path: str, sha256: str) -> list[Synset]:
    return read_synsets(path)  # read once per process and file contents (a study builds the setting per split)


class KnowledgeSetting(TokenizedSetting):
    """WordNet's synsets split by topic, their documents, and the lm-eval tasks that ask about them."""

    score = MCQ_ACCURACY

    def __init__(self, cfg: KnowledgeConfig, *, cache_dir: str | Path | None = None, tokenizer: Any = None):
        self.cfg = cfg
        cache = Path(cache_dir or ".undo_cache")
        synsets = _synsets(str(Path(cfg.wordnet).expanduser()), cfg.fingerprint())
        self.split: KnowledgeSplit = knowledge_split(
            synsets, seed=cfg.eval_seed, questions_per_split=cfg.questions, heldout_per_split=cfg.heldout_documents,
            pretraining={"forget": cfg.forget_synsets, "retain": cfg.retain_synsets},
            forget_lexnames=tuple(cfg.forget_lexnames))
        self.pretrained = {side: [SynsetDocument(s, side) for s in self.split.pretraining[side]] for side in SIDES}
        self.pools = {side: [SynsetDocument(s, side) for s in self.split.pool[side]] for side in SIDES}
        asked = {q.synset for side in SIDES for qs in self.split.questions[side].values() for q in qs}
        # What a mixture attack may train on: the pretraining stream without an asked synset's document.
        self.unasked = {side: [d for d in self.pretrained[side] if d.synset.id not in asked] for side in SIDES}
        self.own_tokenizer = tokenizer is None
        if tokenizer is None:  # a BPE trained on both sides' training documents, equally many characters of each
            tokenizer = cached_tokenizer(cache / "tokenizers",
                                         {side: [d.text for d in self.pretrained[side] + self.pools[side]]
                                          for side in SIDES},
                                         cfg.vocab_size, sample_chars=cfg.tokenizer_sample_chars, seed=cfg.eval_seed)
        self.tokenizer = tokenizer
        self.add_bos, reason = (bos_policy(None) if self.own_tokenizer else checkpoint_bos_policy(cfg._checkpoint))
        self.bos_policy = f"{'BOS added' if self.add_bos else 'no BOS'} ({reason})"
        self.lm_tokenizer = with_bos(tokenizer) if self.add_bos else tokenizer
        self.task_folder = self._write_tasks(cache)
        self._tasks = None

    # ------------------------------------------------------------------------------------------------------
    # Documents

    def pretraining_documents(self, which: Literal["base", "oracle"], seed: int) -> list[SynsetDocument]:
        """Every pretraining synset's document once, both sides shuffled together (epochs repeat the stream); the
        oracle's is the same stream without the forget documents."""
        stream = self.pretrained["forget"] + self.pretrained["retain"]
        order = np.random.default_rng(derive_seed(seed, "knowledge-stream")).permutation(len(stream))
        stream = [stream[i] for i in order]
        return [d for d in stream if d.component == "retain"] if which == "oracle" else stream

    def is_forget(self, document: SynsetDocument) -> bool:
        return document.component == "forget"

    def replacement_documents(self, n: int, seed: int) -> list[SynsetDocument]:
        """The retain pool's documents after the base stream's (never pretrained on, never asked about)."""
        start = self.cfg.retain_synsets - 2 * self.cfg.questions
        extra = self.pools["retain"][start:]
        if n > len(extra):
            raise UserError(f"an equal-compute oracle needs {n:,} more retain synsets, and the retain side has "
                            f"{len(extra):,} outside the base stream: lower setting.retain_synsets or set "
                            "pretrain.oracle_budget: same_examples")
        return extra[:n]

    def labelled_documents(self, side: Side, n: int, seed: int) -> list[SynsetDocument]:
        """`n` documents of one side's pool (no asked or held-out synset), sampled without replacement until the
        pool is exhausted."""
        return _sample(self.pools[side], n, derive_seed(seed, "knowledge", side))

    def forget_part_documents(self, parts: tuple[str, ...], n: int, seed: int) -> list[SynsetDocument]:
        """`n` documents of the forget pool's synsets in these categories (a round's forget data)."""
        pool = [d for d in self.pools["forget"] if d.synset.lexname in parts]
        if not pool:
            raise UserError(f"study.rounds: the forget pool holds no synset of {', '.join(parts)}; raise "
                            "setting.forget_synsets or choose other categories")
        return _sample(pool, n, derive_seed(seed, "knowledge", "forget", *parts))

    def mixture_documents(self, n: int, seed: int) -> list[SynsetDocument]:
        """The pretraining stream, in fresh shuffled passes: distillation reads what the base model read (the
        facts a student must learn from its teacher are those documents)."""
        return _sample(self.pretrained["forget"] + self.pretrained["retain"], n, derive_seed(seed, "knowledge-mix"),
                       passes=True)

    def attack_documents(self, data: Literal["forget", "mixture"], n: int, seed: int) -> list[SynsetDocument]:
        """Forget documents from the pool, or the pretraining stream without the asked synsets' documents."""
        if data == "forget":
            return self.labelled_documents("forget", n, seed)
        return _sample(self.unasked["forget"] + self.unasked["retain"], n, derive_seed(seed, "knowledge-attack"),
                       passes=True)

    def data_summary(self, documents: list[SynsetDocument]) -> dict[str, Any]:
        return {"documents": len(documents),
                "documents_per_component": {side: sum(d.component == side for d in documents) for side in SIDES},
                "questions_per_side": self.cfg.questions, "heldout_documents_per_side": self.cfg.heldout_documents}

    # ------------------------------------------------------------------------------------------------------
    # Evaluation

    def _write_tasks(self, cache: Path) -> Path:
        """This split's two tasks (`knowledge_forget`, `knowledge_retain`) as lm-eval task files: a cache folder
        named by their questions' hash, written once with a record of its files (`build_once`)."""
        items = {side: task_items(self.split.questions[side][self.cfg.split]) for side in SIDES}
        folder = cache / "knowledge_tasks" / stable_hash(items)[:16]

        def write(staging: Path) -> None:
            for side in SIDES:
                write_choice_task(staging, f"knowledge_{side}", items[side], home=folder)

        return build_once(folder, "knowledge_forget.yaml", write)

    @property
    def tasks(self):
        if self._tasks is None:
            require_lm_eval()
            from lm_eval.tasks import TaskManager

            with quiet():
                manager = TaskManager(include_path=[str(self.task_folder)], include_defaults=False)
                self._tasks = manager.load([f"knowledge_{side}" for side in SIDES])
            for task in self._tasks["tasks"].values():
                task.set_config(key="num_fewshot", value=0)
        return self._tasks

    def evaluate(self, model) -> dict[str, float]:
        return self.evaluate_sides(model, SIDES, cross_entropy=True)

    def evaluate_sides(self, model, sides: tuple[str, ...], cross_entropy: bool = False) -> dict[str, float]:
        """Accuracy on the `sides` questions (the first `limit`), and with `cross_entropy` each side's held-out
        cross-entropy (on as many definitions)."""
        tasks = self.tasks
        wanted = {f"knowledge_{side}" for side in sides}
        chosen = {**tasks, "tasks": {n: t for n, t in tasks["tasks"].items() if n in wanted}}
        samples = {name: list(range(min(self.cfg.limit or len(task.eval_docs), len(task.eval_docs))))
                   for name, task in chosen["tasks"].items()}
        out = run_tasks(model, chosen, samples, tokenizer=self.lm_tokenizer, add_bos=self.add_bos,
                        batch_size=self.cfg.eval_batch_size, context=self.context)
        metrics: dict[str, float] = {}
        for side in sides:
            for metric in ("acc", "acc_norm"):
                metrics[f"{side}_{metric}"] = task_accuracy(out, f"knowledge_{side}", metric)
            metrics[side] = metrics[f"{side}_{self.cfg.choice_metric}"]
        if cross_entropy:
            context = self.context or model.config.max_position_embeddings
            for side in sides:
                synsets = self.split.heldout[side][self.cfg.split][: self.cfg.limit]
                ids = self.encode_documents([s.document() for s in synsets])
                rows, real = document_rows(ids, context, self.pad_id)
                metrics[f"{side}_ce"] = heldout_cross_entropy(model, rows, real=real,
                                                              batch_size=self.cfg.eval_batch_size)
        return metrics

    def describe_evaluation(self) -> str:
        limit = "every question" if self.cfg.limit is None else f"the first {self.cfg.limit} questions"
        return (f"four-way questions about {self.cfg.questions} synsets per side ({limit}, lm-eval "
                f"{self.cfg.choice_metric}) and the cross-entropy of {self.cfg.heldout_documents} held-out definitions "
                f"per side; forget = WordNet's {', '.join(self.cfg.forget_lexnames)} nouns; {self.bos_policy}. An "
                "analogue of WMDP at CPU scale (a topic inside one language and genre), not hazardous knowledge: "
                "WordNet's categories stand in for a topic boundary")


def _sample(documents: list[SynsetDocument], n: int, seed: int, *, passes: bool = False) -> list[SynsetDocument]:
    """`n` of `documents` in a seeded order: a permutation, then (once it is used up) uniform draws, or with
    `passes` further permutations (every document once per pass, as epochs are)."""
    rng = np.random.default_rng(seed)
    order = [rng.permutation(len(documents))]
    while sum(map(len, order)) < n:
        order.append(rng.permutation(len(documents)) if passes else rng.integers(len(documents), size=n))
    return [documents[int(i)] for i in np.concatenate(order)[:n]]
