"""The pydantic base of every config section (the experiment's and each setting's)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Unknown keys are errors, not silently ignored: a typo must never change an experiment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
