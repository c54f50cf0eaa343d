"""The pydantic base of every config section (the experiment's and each setting's)."""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator


class StrictModel(BaseModel):
    """A typo or a wrong kind of value must never change an experiment: unknown keys are errors, NaN and infinite
    numbers are refused, and a boolean is not a number (YAML's `true` would otherwise read as 1)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _booleans_are_not_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name) if info.field_name else None
        if field is not None and _numbers_only(field.annotation) and _holds_bool(value):
            raise ValueError(f"expected a number, got a boolean ({value!r})")
        return value


def _numbers_only(annotation: Any) -> bool:
    """True for int/float annotations and containers of them (Optional allowed), never for ones that admit bool."""
    origin = typing.get_origin(annotation)
    if annotation in (int, float):
        return True
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return bool(args) and all(_numbers_only(a) for a in args)
    if origin in (list, tuple):
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        return bool(args) and all(_numbers_only(a) for a in args)
    if origin is dict:
        return _numbers_only(typing.get_args(annotation)[1])
    return False


def _holds_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return True
    if isinstance(value, (list, tuple)):
        return any(_holds_bool(v) for v in value)
    if isinstance(value, dict):
        return any(_holds_bool(v) for v in value.values())
    return False
