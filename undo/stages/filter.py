"""The label-budget-matched data filter: a document classifier (forget vs retain) trained on exactly the labelled
documents one seed's unlearning step reads (`undo.stages.labels.documents_read`: the same documents, so the same
count and the same labels), measured on fresh labelled documents it never saw (distinct texts, none of them a
training text: `heldout_scores`), then used by `undo.stages.pretrain` to filter the whole pretraining corpus for an
oracle (`pretrain.classifier_filter`).

The classifier is scikit-learn's: hashed character n-grams (`HashingVectorizer`, stateless) into a logistic
regression. Its artifact stores the regression's weights as safetensors and the vectorizer's parameters in
meta.json (nothing is pickled); `load_classifier` rebuilds it.

Compute is counted like the rest of `undo`, in FLOPs: 2 per stored feature of a document for a prediction (a sparse
dot product), and for training 2 x that per pass (prediction and gradient) times the solver's iterations.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

from undo.config import ExperimentConfig
from undo.core.data import derive_seed
from undo.schema.errors import UserError
from undo.core.timing import phase
from undo.schema.io import read_result
from undo.schema.results import ClassifierScores, FilterResult
from undo.settings import Setting
from undo.stages.base import Resources, Stage, StageJob, StageResult, data_identity, run_stage
from undo.stages.labels import documents_read, forget_data_identity

WEIGHTS = "classifier.safetensors"


def hashed_features(vectorizer_params: dict[str, Any], texts: list[str]):
    """The texts' hashed character n-grams (a sparse matrix, one row per text)."""
    from sklearn.feature_extraction.text import HashingVectorizer

    params = {**vectorizer_params, "ngram_range": tuple(vectorizer_params["ngram_range"])}
    return HashingVectorizer(**params).transform(texts)


@dataclass
class DocumentClassifier:
    """Predicts whether documents are forget-domain (True) from their text."""

    vectorizer_params: dict[str, Any]
    coef: np.ndarray  # [features]
    intercept: float

    def features(self, texts: list[str]):
        return hashed_features(self.vectorizer_params, texts)

    def predict(self, texts: list[str]) -> tuple[np.ndarray, int]:
        """(is forget per text, FLOPs of the predictions)."""
        x = self.features(texts)
        return np.asarray(x @ self.coef + self.intercept > 0).ravel(), 2 * int(x.nnz)


def vectorizer_params(cfg: ExperimentConfig) -> dict[str, Any]:
    c = cfg.pretrain.classifier_filter
    return {"analyzer": "char_wb", "ngram_range": list(c.ngram_range), "n_features": c.features,
            "alternate_sign": False, "norm": "l2"}


def load_classifier(folder: Path) -> DocumentClassifier:
    record = read_result(folder, FilterResult)
    weights = load_file(folder / WEIGHTS)
    return DocumentClassifier(record.vectorizer, weights["coef"], float(weights["intercept"][0]))


@dataclass(frozen=True)
class TrainFilter(Stage):
    """Fit the classifier on this seed's unlearning labels; measure it on fresh labelled documents."""

    kind = "filter"
    makes_model = False
    resources = Resources(cpus=1, gpus=0.0)

    def config_slice(self, cfg: ExperimentConfig) -> dict[str, Any]:
        # The labelled documents are the unlearning step's: its data, steps and batches decide which are read.
        u = cfg.unlearn
        return {"seed": cfg.seed, "data": data_identity(cfg), "context": cfg.model.context,
                "unlearn": {"examples": u.examples, "steps": u.steps, "batch_size": u.batch_size,
                            "grad_accum": u.grad_accum},
                "classifier": cfg.pretrain.classifier_filter.model_dump(mode="json"), **forget_data_identity(cfg)}

    def artifact_name(self, inputs: dict[str, Path | None], key: str) -> str:
        return f"filter_classifier_{key[:8]}"

    def check(self, cfg: ExperimentConfig, inputs: dict[str, Path | None]) -> None:
        if cfg.pretrain.classifier_filter is None:
            raise UserError("no pretrain.classifier_filter in the config: the classifier filter is off")

    def run(self, job: StageJob) -> FilterResult:
        from sklearn.linear_model import LogisticRegression

        cfg, setting = job.cfg, job.setting()
        c = cfg.pretrain.classifier_filter
        started = time.perf_counter()
        read = documents_read(cfg, setting)
        texts = [d.text for d in read["forget"]] + [d.text for d in read["retain"]]
        labels = np.array([1] * len(read["forget"]) + [0] * len(read["retain"]))
        params = vectorizer_params(cfg)
        x = hashed_features(params, texts)
        with phase("training"):
            model = LogisticRegression(C=c.regularisation, max_iter=1000).fit(x, labels)
        classifier = DocumentClassifier(params, model.coef_[0].astype(np.float64),
                                        float(model.intercept_[0]))
        iterations = int(np.max(model.n_iter_))
        save_file({"coef": classifier.coef, "intercept": np.array([classifier.intercept])}, job.workdir / WEIGHTS)
        with phase("evaluation"):
            heldout = heldout_scores(classifier, setting, c.heldout_per_side, derive_seed(cfg.seed, "filter-heldout"),
                                     trained=set(texts))
        labelled_tokens = sum(len(ids) for ids in setting.encode_documents(texts))
        return FilterResult(
            seed=cfg.seed, vectorizer=classifier.vectorizer_params, regularisation=c.regularisation,
            training_documents={side: len(docs) for side, docs in read.items()}, heldout=heldout,
            iterations=iterations, labelled_tokens=labelled_tokens,
            flops={"train": 2 * 2 * int(x.nnz) * iterations}, wall_time_s=round(time.perf_counter() - started, 2))

    def describe(self, result: StageResult) -> str:
        h = result.heldout
        counts = "" if h.unique_documents is None else (
            f" on {h.unique_documents['forget']} forget + {h.unique_documents['retain']} retain unseen documents")
        return f"classifier filter: held-out precision {h.precision:.3f}, recall {h.recall:.3f}{counts}"


MAX_HELDOUT_DRAW = 64  # a side's held-out draw stops at this many times `per_side` documents


def unseen_texts(setting: Setting, side: str, per_side: int, seed: int, trained: Collection[str]) -> list[str]:
    """Up to `per_side` distinct texts of labelled `side` documents (a stream of their own) that are not in
    `trained`, first come first taken. A setting with few distinct documents (arithmetic) repeats them, so the draw
    doubles until it has enough, stops growing over two doublings (every unseen text found, as far as can be told),
    or reaches `MAX_HELDOUT_DRAW` x `per_side`: then it holds fewer."""
    n, found, stalled = per_side, -1, 0
    while True:
        texts = list(dict.fromkeys(d.text for d in setting.labelled_documents(side, n, seed)))
        unseen = [text for text in texts if text not in trained]
        stalled = stalled + 1 if len(unseen) == found else 0
        if len(unseen) >= per_side or stalled == 2 or n >= MAX_HELDOUT_DRAW * per_side:
            return unseen[:per_side]
        n, found = 2 * n, len(unseen)


def heldout_scores(classifier: DocumentClassifier, setting: Setting, per_side: int, seed: int, *,
                   trained: Collection[str]) -> ClassifierScores:
    """Precision and recall (forget = positive) on fresh labelled documents of each side (a stream of their own),
    out of sample: distinct texts, none among the `trained` ones, each scored once (fewer than `per_side` where
    the setting has fewer; the record says how many)."""
    trained = frozenset(trained)
    texts = {side: unseen_texts(setting, side, per_side, seed + offset, trained)
             for side, offset in (("forget", 0), ("retain", 1))}
    for side, found in texts.items():
        if not found:
            raise UserError(f"the classifier filter has no held-out {side} documents to measure it on: every {side} "
                            "document the setting draws is among those it was trained on; lower unlearn.examples "
                            "or unlearn.steps (fewer labelled documents read), or give the setting more distinct "
                            f"{side} documents")
    predicted, _ = classifier.predict(texts["forget"] + texts["retain"])
    truth = np.array([True] * len(texts["forget"]) + [False] * len(texts["retain"]))
    hits = int(np.sum(predicted & truth))
    return ClassifierScores(precision=hits / max(int(predicted.sum()), 1), recall=hits / len(texts["forget"]),
                            accuracy=float(np.mean(predicted == truth)), documents=per_side,
                            unique_documents={side: len(found) for side, found in texts.items()})


def train_filter(cfg: ExperimentConfig, *, progress: bool = True) -> Path:
    """The classifier filter of this config's seed into `<run_dir>/filter_classifier_<key>/`."""
    return run_stage(TrainFilter(), cfg, {}, progress=progress)
