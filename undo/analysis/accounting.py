"""Compute and label accounting across a model's lineage, computed when it is read, from artifacts' meta.json.

Every stage records its own FLOPs (`flops`: training steps, and for distillation the teacher's forward passes
separately) and the labelled tokens it read (`labelled_tokens`: unlearning reads forget/retain-tagged text;
pretraining and distillation read unlabelled text). A stage names its inputs by stage key (`inputs`), so the
lineage of a distilled student is: student <- teacher (unlearned) <- base (pretrained).

The yardsticks are the oracle's pretraining FLOPs (what data filtering costs) and the base model's pretraining
tokens (data filtering must classify every one of them, so its labelled fraction is 1 by definition). A study
names its own base and oracle (the report passes them); `accounting_of` on a lone artifact takes the single
pretrained base and oracle that lie beside it. Nothing here is written into an artifact: a stage's record never
depends on which other artifacts happened to exist when it ran.
"""

from __future__ import annotations

from pathlib import Path

from undo.schema.io import read_result
from undo.schema.report import Accounting
from undo.schema.results import PretrainResult, StageResult


def artifact_metas(run_dir: str | Path) -> dict[str, StageResult]:
    """Every complete artifact's record in `run_dir`, by stage key."""
    records = (read_result(meta.parent) for meta in sorted(Path(run_dir).glob("*/meta.json")))
    return {record.key: record for record in records}


def lineage(meta: StageResult, metas: dict[str, StageResult]) -> list[StageResult]:
    """`meta` and all its ancestors (each once), nearest first. An input that is not in `metas` (a model made
    elsewhere) ends its branch."""
    chain, queue, seen = [], [meta], set()
    while queue:
        current = queue.pop(0)
        if current.key in seen:
            continue
        seen.add(current.key)
        chain.append(current)
        queue.extend(metas[key] for key in current.inputs.values() if key in metas)
    return chain


def _fraction(numerator: float, denominator: float | None) -> float | None:
    return numerator / denominator if denominator else None


def account(meta: StageResult, metas: dict[str, StageResult], *, oracle: StageResult | None,
            base: StageResult | None, pretraining_tokens: int | None = None) -> Accounting:
    """FLOPs of this stage (split as recorded) and of its whole lineage, each as a fraction of the `oracle`'s
    pretraining FLOPs; labelled tokens of the lineage as a fraction of the `base` model's pretraining tokens (or of
    `pretraining_tokens`, for a base model loaded from a checkpoint that was trained elsewhere). Fractions are None
    without an oracle (or a token count) to compare with: a loaded oracle's FLOPs are unknown."""
    oracle_flops = (sum(oracle.flops.values()) or None) if oracle else None
    if pretraining_tokens is None and base:
        pretraining_tokens = base.tokens or None
    chain = lineage(meta, metas)
    stage_flops = sum(meta.flops.values())
    lineage_flops = sum(sum(m.flops.values()) for m in chain)
    # An imperfect filter of a given recall still classified everything; a trained classifier's labels are its own
    # (its training documents, in its lineage).
    filtering = meta.filtering if isinstance(meta, PretrainResult) else None
    by_recall = filtering is not None and filtering.method == "recall"
    if by_recall or (oracle is not None and meta.key == oracle.key):
        labelled = pretraining_tokens  # data filtering classifies every document of the base model's corpus
    else:
        labelled = sum(m.labelled_tokens for m in chain)
    return Accounting(
        stage_flops=dict(meta.flops), stage_flops_total=stage_flops,
        stage_fraction_of_oracle=_fraction(stage_flops, oracle_flops),
        lineage=[m.name or None for m in chain], lineage_flops=lineage_flops,
        lineage_fraction_of_oracle=_fraction(lineage_flops, oracle_flops),
        oracle_pretraining_flops=oracle_flops, labelled_tokens=labelled, pretraining_tokens=pretraining_tokens,
        labelled_fraction=_fraction(labelled or 0, pretraining_tokens))


def _pretrained(metas: dict[str, StageResult], which: str) -> StageResult | None:
    found = [m for m in metas.values() if isinstance(m, PretrainResult) and m.which == which
             and m.filtering is None]  # the perfect oracle, not an imperfect filter's
    return found[0] if len(found) == 1 else None


def accounting_of(artifact: str | Path) -> Accounting:
    """`account` for a finished artifact folder, against the artifacts beside it (their single pretrained base and
    oracle as yardsticks)."""
    artifact = Path(artifact)
    metas = artifact_metas(artifact.parent)
    return account(read_result(artifact), metas, oracle=_pretrained(metas, "oracle"), base=_pretrained(metas, "base"))
