"""The labels unlearning spends: the labelled documents and paired batches every unlearning run of a seed trains on,
and which of those documents its steps actually read (what the label-budget-matched data filter,
`undo.stages.filter`, is trained on: the same documents, so the same count)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from undo.config import ExperimentConfig
from undo.core.artifacts import file_sha256
from undo.core.data import PairedBatches, derive_seed
from undo.schema.errors import UserError
from undo.settings import Setting
from undo.settings.corpora import read_documents


@dataclass(frozen=True)
class GivenDocument:
    """A forget document from the user's own file (`unlearn.forget_data`)."""

    text: str
    component: str = "forget"


@dataclass(frozen=True)
class RoundData:
    """What one round of `study.rounds` forgets: parts of the setting's forget side, or a file of documents."""

    number: int  # 1, 2, ... (in artifact names)
    parts: tuple[str, ...] | None = None
    forget_data: str | None = None

    def identity(self) -> dict[str, Any]:
        """What of the round shapes its unlearning runs: the parts, or the file's contents (not the round's number:
        the same data from the same start is the same run)."""
        if self.parts is not None:
            return {"forget_parts": list(self.parts)}
        return {"forget_data_sha256": file_sha256(Path(self.forget_data).expanduser())}


def forget_data_identity(cfg: ExperimentConfig, round_data: RoundData | None = None) -> dict[str, Any]:
    """What replaces the setting's forget side in the keys of the stages that read unlearning's labels: a round's
    data, or the user's forget file; nothing without either (so keys made before these options stay the same)."""
    if round_data is not None:
        return {"round_forget": round_data.identity()}
    path = cfg.unlearn.forget_data
    return {} if path is None else {"forget_data_sha256": file_sha256(Path(path).expanduser())}


def documents_from_file(path: str, n: int, seed: int, where: str) -> list[GivenDocument]:
    """`n` documents drawn from a file of forget documents (a seeded order, repeated as needed)."""
    texts = read_documents(str(Path(path).expanduser()))
    if not texts:
        raise UserError(f"{where} {path} holds no documents")
    rng = np.random.default_rng(derive_seed(seed, "forget-data"))
    order = np.concatenate([rng.permutation(len(texts)) for _ in range(-(-n // len(texts)))])[:n]
    return [GivenDocument(texts[int(i)]) for i in order]


def forget_documents(cfg: ExperimentConfig, setting: Setting, n: int, seed: int,
                     round_data: RoundData | None = None) -> list:
    """`n` forget documents: a round's (its parts of the forget side, or its file), drawn from
    `unlearn.forget_data`, or the setting's."""
    if round_data is not None and round_data.parts is not None:
        return setting.forget_part_documents(round_data.parts, n, seed)
    if round_data is not None:
        return documents_from_file(round_data.forget_data, n, seed, f"study.rounds ({round_data.number}) forget_data")
    if cfg.unlearn.forget_data is None:
        return setting.labelled_documents("forget", n, seed)
    return documents_from_file(cfg.unlearn.forget_data, n, seed, "unlearn.forget_data")


def unlearning_data(cfg: ExperimentConfig, setting: Setting,
                    round_data: RoundData | None = None) -> tuple[dict[str, list], PairedBatches]:
    """The labelled documents of each side (`unlearn.examples` each) and the paired batches every unlearning run of
    this seed (and round) trains on (the same for every sweep point)."""
    u = cfg.unlearn
    documents = {"forget": forget_documents(cfg, setting, u.examples, cfg.seed, round_data),
                 "retain": setting.labelled_documents("retain", u.examples, cfg.seed)}
    rows = {side: setting.packed_rows(documents[side], cfg.model.context) for side in documents}
    return documents, PairedBatches(rows["forget"], rows["retain"], u.batch_size,
                                    seed=derive_seed(cfg.seed, "unlearn"))


def documents_read(cfg: ExperimentConfig, setting: Setting) -> dict[str, list]:
    """The labelled documents an unlearning run of this config reads, per side: each document with a token in a row
    of the `steps x grad_accum` micro-batches it trains on, in stream order (the labels unlearning spends)."""
    documents, batches = unlearning_data(cfg, setting)
    micro_batches = cfg.unlearn.steps * cfg.unlearn.grad_accum
    context = cfg.model.context
    read = {}
    for side, stream in (("forget", batches.forget), ("retain", batches.retain)):
        rows = sorted({int(r) for i in range(micro_batches) for r in stream.row_indices(i)})
        lengths = np.array([len(ids) for ids in setting.encode_documents([d.text for d in documents[side]])])
        ends = np.cumsum(lengths)
        starts = ends - lengths
        touched: set[int] = set()
        for row in rows:  # the documents overlapping tokens [row x context, (row + 1) x context)
            first = int(np.searchsorted(ends, row * context, side="right"))
            last = int(np.searchsorted(starts, (row + 1) * context, side="left"))
            touched.update(range(first, last))
        read[side] = [documents[side][i] for i in sorted(touched)]
    return read
