"""The pydantic base of every config section (the experiment's and each setting's, and the selection rule that
teacher choices record)."""

from __future__ import annotations

import contextlib
import contextvars
import types
import typing
from collections.abc import Iterator
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

# Every RNG is seeded from it (numpy's generators take 0 .. 2**32 - 1 as one word).
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]


class StrictModel(BaseModel):
    """A typo or a wrong kind of value must never change an experiment: unknown keys are errors, NaN and infinite
    numbers are refused, a boolean is not a number (YAML's `true` would otherwise read as 1) and only `true` and
    `false` are booleans (pydantic would read 1, "yes" or "on" as true)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    def __getattribute__(self, name: str) -> Any:
        reads = _READS.get()
        if reads is not None and not name.startswith("_") and name in type(self).model_fields:
            reads.saw(self, name)
        return super().__getattribute__(name)

    def model_copy(self, *args: Any, **kwargs: Any) -> Any:
        copy = super().model_copy(*args, **kwargs)
        reads = _READS.get()
        if reads is not None:  # a copy of a section (e.g. the setting with fewer items) is still that section
            reads.alias(copy, self)
        return copy

    @field_validator("*", mode="before")
    @classmethod
    def _booleans_are_not_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name) if info.field_name else None
        if field is not None and _numbers_only(field.annotation) and _holds_bool(value):
            raise ValueError(f"expected a number, got a boolean ({value!r})")
        if field is not None and _boolean_only(field.annotation) and not isinstance(value, bool) and value is not None:
            raise ValueError(f"expected true or false, got {value!r}")
        return value


def _boolean_only(annotation: Any) -> bool:
    """True for bool and Optional[bool]."""
    if annotation is bool:
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args == [bool]
    return False


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


class Reads:
    """The config fields read while it records (`recording_reads`), by dotted path from the section it was given."""

    def __init__(self, root: BaseModel):
        self.paths: dict[int, str] = {}
        self.fields: set[str] = set()
        self._keep: list[BaseModel] = []  # the sections whose ids are mapped stay alive while recording
        self._map(root, "")

    def _map(self, section: BaseModel, prefix: str) -> None:
        self.paths[id(section)] = prefix
        self._keep.append(section)
        for name in type(section).model_fields:
            value = BaseModel.__getattribute__(section, name)
            if isinstance(value, BaseModel):
                self._map(value, f"{prefix}{name}.")

    def alias(self, copy: BaseModel, original: BaseModel) -> None:
        prefix = self.paths.get(id(original))
        if prefix is not None:
            self._map(copy, prefix)

    def saw(self, section: BaseModel, name: str) -> None:
        prefix = self.paths.get(id(section))
        if prefix is not None:  # a section built on the way (e.g. a stage's TrainConfig) is not the config's
            self.fields.add(prefix + name)


_READS: contextvars.ContextVar[Reads | None] = contextvars.ContextVar("undo_config_reads", default=None)


@contextlib.contextmanager
def recording_reads(config: BaseModel) -> Iterator[Reads]:
    """Within this block, every field of `config` (a StrictModel, and its sections) that is read by attribute is
    recorded by its dotted path (tests/test_keys.py checks that a stage's key covers what it reads)."""
    reads = Reads(config)
    token = _READS.set(reads)
    try:
        yield reads
    finally:
        _READS.reset(token)
