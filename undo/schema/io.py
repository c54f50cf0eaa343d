"""The one place that reads an artifact's records from disk: meta.json as its typed stage result, and the cached
evaluations beside the weights. Everything else asks these functions, never `json.loads` of a meta.json.

A damaged record is one line (`UserError`) naming the file and what to do.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, TypeVar

from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from undo.schema.errors import UserError
from undo.schema.results import AnyResult, StageResult

META = "meta.json"
EVALUATIONS = "evaluations"
R = TypeVar("R", bound=StageResult)

_ANY_RESULT = TypeAdapter(Annotated[AnyResult, Field(discriminator="kind")])


def repair_hint(folder: Path) -> str:
    return (f"delete {folder} to recompute it, or run `undo verify --repair {folder.parent}` to set aside every "
            "damaged artifact")


def read_result(folder: Path, result_type: type[R] | None = None) -> R:
    """An artifact's meta.json as its stage's typed result (the subclass its `kind` names, or `result_type`)."""
    path = Path(folder) / META
    damaged = f"{path} is damaged ({{}}); {repair_hint(Path(folder))}"
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(damaged.format(type(err).__name__)) from None
    if not isinstance(data, dict) or not isinstance(data.get("key"), str) or not data["key"]:
        raise UserError(damaged.format("not an artifact's record: no key"))
    try:
        return _ANY_RESULT.validate_python(data) if result_type is None else result_type.model_validate(data)
    except ValidationError as err:
        problem = err.errors()[0]
        where = ".".join(str(part) for part in problem["loc"]) or "the top level"
        raise UserError(damaged.format(f"not a stage's record: {where}: {problem['msg']}")) from None


def write_result(folder: Path, result: StageResult) -> Path:
    path = Path(folder) / META
    path.write_text(json.dumps(result.model_dump(mode="json"), indent=2) + "\n")
    return path


class EvaluationRecord(BaseModel):
    """A model's evaluation under one evaluation identity: `<artifact>/evaluations/<evaluation_key>.json`."""

    evaluation_key: str
    evaluation: dict  # the setting's evaluation identity (what was measured)
    split: str | None = None
    metrics: dict[str, float]


def evaluation_path(folder: Path, key: str) -> Path:
    return Path(folder) / EVALUATIONS / f"{key}.json"


def read_evaluation(folder: Path, key: str) -> dict[str, float] | None:
    """`folder`'s evaluation under the identity with this key, or None if it was never measured (or its record is
    damaged: it is then removed, so that it is measured again rather than read)."""
    path = evaluation_path(folder, key)
    if not path.is_file():
        return None
    try:
        return EvaluationRecord.model_validate_json(path.read_text()).metrics
    except (OSError, UnicodeDecodeError, ValidationError):
        path.unlink(missing_ok=True)
        return None
