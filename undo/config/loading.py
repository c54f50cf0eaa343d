"""Loading a config: YAML file (or the embedded demo study), dotted overrides, validation with one-line errors, and
a stable hash. A user error (unknown key, wrong type, value out of range) becomes a `UserError` naming the key path
and the fix; the CLI turns it into exit code 2."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from undo.config.experiment import ExperimentConfig
from undo.core.artifacts import stable_hash
from undo.schema.errors import UserError
from undo.settings import DEFAULT_SETTING, SETTINGS


DEMO_STUDY = Path(__file__).parents[1] / "configs" / "demo.yaml"


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read a YAML file (None = the embedded demo study), apply `key.path=value` overrides, validate."""
    raw: dict[str, Any] = {}
    embedded = path is None
    if embedded:
        path = DEMO_STUDY
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"config file not found: {path} (give the path of an experiment YAML file)")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise UserError(f"config file {path} is not UTF-8 text (byte {err.start} cannot be decoded); give a "
                            "YAML file") from None
        except OSError as err:
            raise UserError(f"config file {path} cannot be read: {err.strerror}") from None
        try:
            loaded = yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise UserError(f"config file {path} is not valid YAML{where}: {getattr(err, 'problem', err)}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise UserError(f"config file {path} must hold a mapping of keys at the top, got {type(loaded).__name__}")
        raw = loaded
    for item in overrides or []:
        apply_override(raw, item)
    return validate_config(raw, source="the embedded demo study" if embedded else str(path))


class UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, but a key given twice in one mapping is an error (YAML would keep the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"the key {key!r} appears twice in one mapping; "
                                                        "keep one", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Set `a.b.c=value` in a nested dict; the value is parsed as YAML (so 2 is an int, [1, 2] a list)."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise UserError(f"override {item!r} must look like key.path=value, e.g. model.layers=2")
    parts = key.strip().split(".")
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise UserError(f"override {item!r}: {part} is a value, not a section")
        node = child
    try:
        node[parts[-1]] = yaml.safe_load(text)
    except yaml.YAMLError:
        node[parts[-1]] = text


def validate_config(raw: dict[str, Any], source: str = "config") -> ExperimentConfig:
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as err:
        raise UserError(describe_validation_error(err, ExperimentConfig, source, raw)) from None


def describe_validation_error(err: ValidationError, root: type[BaseModel], source: str,
                              raw: dict[str, Any] | None = None) -> str:
    """One line: the key path of the first problem, what is wrong, and how to fix it."""
    errors = err.errors()
    first = errors[0]
    raw_loc = tuple(first["loc"])
    loc = [str(part) for part in raw_loc]
    path = ".".join(loc) or "(top level)"
    kind = first["type"]
    if kind == "extra_forbidden":
        section = (raw or {}).get("setting")
        name = section.get("name", DEFAULT_SETTING) if isinstance(section, dict) else None
        if raw_loc[:1] == ("setting",) and name in SETTINGS:  # the setting's own class holds its keys
            allowed = _allowed_keys(SETTINGS[name], raw_loc[1:-1])
        else:
            allowed = _allowed_keys(root, raw_loc[:-1])
        close = difflib.get_close_matches(str(raw_loc[-1]), allowed, n=1)
        hint = (f"unknown key{f' (did you mean {close[0]!r}?)' if close else ''}; remove it or use one of: "
                f"{', '.join(allowed)}" if allowed else "unknown key; remove it")
    elif kind == "value_error":
        hint = first["msg"].removeprefix("Value error, ")
    else:
        hint = f"{first['msg']} (got {first.get('input')!r})"
    more = f" (+{len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    where = f"{path}: " if loc else ""  # a cross-section check names its own keys
    return f"invalid config in {source}: {where}{hint}{more}"


def _allowed_keys(root: type[BaseModel], loc: tuple) -> list[str]:
    model: Any = root
    for part in loc:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        model = field.annotation
    fields = getattr(model, "model_fields", None)
    return sorted(fields) if fields else []


def config_hash(config: BaseModel) -> str:
    """A stable short hash of a resolved config (or any sub-section): key order and formatting don't matter."""
    return stable_hash(config.model_dump(mode="json"))


def dump_yaml(config: BaseModel) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
