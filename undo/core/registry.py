"""Registries of named classes (unlearning objectives, attack kinds, executors): `@register(name)` names a class and
adds it to its table, so that a config or a flag can pick it by that name."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T", bound=type)


def registrar(table: dict[str, T]) -> Callable[[str], Callable[[T], T]]:
    """The `register(name)` decorator of `table`: it sets the class's `name` and adds the class under it."""

    def register(name: str) -> Callable[[T], T]:
        def add(cls: T) -> T:
            cls.name = name
            table[name] = cls
            return cls

        return add

    return register
