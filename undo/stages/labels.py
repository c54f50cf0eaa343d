"""The labels unlearning spends: the labelled documents and paired batches every unlearning run of a seed trains on,
and which of those documents its steps actually read (what the label-budget-matched data filter,
`undo.stages.filter`, is trained on: the same documents, so the same count)."""

from __future__ import annotations

import numpy as np

from undo.config import ExperimentConfig
from undo.core.data import PairedBatches, derive_seed
from undo.settings import Setting


def unlearning_data(cfg: ExperimentConfig, setting: Setting) -> tuple[dict[str, list], PairedBatches]:
    """The labelled documents of each side (`unlearn.examples` each) and the paired batches every unlearning run of
    this seed trains on (the same for every sweep point)."""
    u = cfg.unlearn
    documents = {side: setting.labelled_documents(side, u.examples, cfg.seed) for side in ("forget", "retain")}
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
