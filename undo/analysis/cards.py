"""Model cards: every saved `model/` folder says what made it, in a Hugging Face model card (`model/README.md`, YAML
metadata read by `huggingface_hub.ModelCard` and the Hub).

A card holds the stage that made the model and its knobs, its seed and its inputs (by artifact name and stage key),
the compute and labels of its whole lineage (`undo.analysis.accounting`: FLOPs, and labelled tokens as a share of
the base model's pretraining tokens), and its evaluation on the test split. `undo report` writes the cards of the
models it attacked again, with the attack's results and the robustness (`sections`). The card is a description
written after the artifact is sealed, not a part of it: the artifact's record of its model files does not list it,
so rewriting it never makes the artifact look damaged.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from undo.analysis.accounting import accounting_of
from undo.schema.io import read_result
from undo.schema.report import Accounting
from undo.schema.results import StageResult

CARD = "README.md"
# What a stage's record says about how it made its model, where it has it (the rest is bookkeeping).
HOW = ("which", "source", "oracle_budget", "method", "lr", "knobs", "sam_rho", "init", "alpha", "beta",
       "stopped_early", "stop_step")


def how_made(result: StageResult) -> dict[str, Any]:
    """The knobs of the stage that made a model, as its record holds them (JSON values)."""
    fields = result.model_dump(mode="json", include=set(HOW))
    filtering = getattr(result, "filtering", None)
    if filtering is not None:
        fields["filter"] = filtering.model_dump(mode="json")
    return {name: value for name, value in fields.items() if value is not None}


def card_data(artifact: Path, evaluation: dict[str, float] | None,
              accounting: Accounting | None = None) -> dict[str, Any]:
    """The `undo:` block of the card's metadata: the artifact's own record, its lineage's accounting (against the
    base and oracle beside it, unless given: a study's report passes its own), and the evaluation behind reported
    numbers (test split)."""
    result = read_result(artifact)
    accounting = accounting or accounting_of(artifact)
    return {"artifact": result.name, "stage": result.kind, "key": result.key, "code_version": result.code_version,
            "seed": result.seed, "made_by": how_made(result),
            "inputs": {role: {"artifact": Path(path).name, "key": result.inputs.get(role)}
                       for role, path in result.input_paths.items() if path},  # an unused role (None) is left out
            "steps": result.steps, "tokens": result.tokens, "flops": result.flops_total,
            "lineage": [name for name in accounting.lineage if name],
            "lineage_flops": accounting.lineage_flops,
            "lineage_fraction_of_oracle": accounting.lineage_fraction_of_oracle,
            "labelled_tokens": accounting.labelled_tokens, "labelled_fraction": accounting.labelled_fraction,
            "evaluation": dict(evaluation or {})}


def _share(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.3g} %"


def card_text(data: dict[str, Any], sections: dict[str, str]) -> str:
    """The card's markdown: the YAML metadata, then what made the model, its lineage, its evaluation and any
    `sections` (title -> markdown) the report adds."""
    from huggingface_hub import ModelCardData

    metadata = ModelCardData(library_name="transformers", tags=["undo", "unlearning", data["stage"]], undo=data)
    made_by = ", ".join(f"{name} {json.dumps(value)}" for name, value in data["made_by"].items()) or "–"
    inputs = "; ".join(f"{role}: `{one['artifact']}` (key {one['key']})" for role, one in data["inputs"].items())
    lines = ["---", metadata.to_yaml(), "---", "", f"# {data['artifact']}", "",
             f"Made by undo {data['code_version']}, stage **{data['stage']}** (key "
             f"`{data['key']}`, seed {data['seed']}): {made_by}.", "",
             f"Inputs: {inputs or 'none'}.", "",
             "## Compute and labels", "",
             f"This stage: {data['steps']:,} steps, {data['tokens']:,} tokens, {data['flops']:.3g} FLOPs. Its lineage "
             f"({' <- '.join(data['lineage'])}): {data['lineage_flops']:.3g} FLOPs, "
             f"{_share(data['lineage_fraction_of_oracle'])} of the data-filtered oracle's pretraining; labelled "
             f"tokens {data['labelled_tokens'] or 0:,}, {_share(data['labelled_fraction'])} of the base model's "
             "pretraining tokens (data filtering labels all of them).", ""]
    if data["evaluation"]:
        lines += ["## Evaluation (test split)", "", "| metric | value |", "|---|---|",
                  *(f"| {name} | {value:.4g} |" for name, value in sorted(data["evaluation"].items())), ""]
    for title, body in sections.items():
        lines += [f"## {title}", "", body.rstrip(), ""]
    lines += ["Load it with `transformers.AutoModelForCausalLM.from_pretrained(<this folder>)`; its tokenizer is "
              "beside it.", ""]
    return "\n".join(lines)


def write_card(artifact: Path, evaluation: dict[str, float] | None, sections: dict[str, str] | None = None, *,
               accounting: Accounting | None = None) -> Path:
    """`<artifact>/model/README.md`, (re)written from the artifact's records."""
    path = Path(artifact) / "model" / CARD
    path.write_text(card_text(card_data(Path(artifact), evaluation, accounting), sections or {}))
    return path
