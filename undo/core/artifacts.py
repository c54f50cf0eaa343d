"""Artifacts: every stage's output is a directory.

    <run_dir>/<name>/
        model/          HF save_pretrained (safetensors) + tokenizer: AutoModelForCausalLM.from_pretrained opens it
        metrics.jsonl   the engine's log (train and eval lines)
        config.yaml     the resolved config that produced it
        meta.json       stage key, hashes, FLOPs, tokens, seed, code version, wall time, final metrics

Work in progress lives in `<run_dir>/.<name>.partial/` (with the engine's checkpoint) and is renamed to its final
name only when complete, so a directory with meta.json is always whole and never recomputed.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

import undo
from undo.schema.errors import UserError
from undo.schema.io import read_result, repair_hint, write_result
from undo.schema.results import StageResult

console = Console(stderr=True, soft_wrap=True)


def stable_hash(payload: Any) -> str:
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def code_version() -> str:
    """Package version, plus the git commit when run from a checkout."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{undo.__version__}+{commit}" if commit else undo.__version__


_DRY_RUN = contextvars.ContextVar("undo_dry_run", default=False)


def is_dry_run() -> bool:
    return _DRY_RUN.get()


class NotComputed(Exception):
    """Raised instead of starting work inside `dry_run()`: the artifact is not complete yet."""


@contextlib.contextmanager
def dry_run():
    """Within this block, stages return complete artifacts as usual but start no new work (NotComputed)."""
    token = _DRY_RUN.set(True)
    try:
        yield
    finally:
        _DRY_RUN.reset(token)


STAMPS = ".verified.json"  # (size, mtime) of each file when it was last hashed: a cache of the check, not content
CHECKSUMS = ".checksums.json"  # a cached folder's record of its own files


def content_record(folder: Path) -> dict[str, dict[str, Any]]:
    """sha256 and size of every file under `folder`, by relative name."""
    return {str(path.relative_to(folder)): {"sha256": file_sha256(path), "size": path.stat().st_size}
            for path in sorted(p for p in Path(folder).rglob("*") if p.is_file())}


def write_stamps(folder: Path, names, stamps: Path) -> None:
    entries = {name: [(Path(folder) / name).stat().st_size, (Path(folder) / name).stat().st_mtime_ns]
               for name in names if (Path(folder) / name).is_file()}
    tmp = Path(stamps).with_name(f".{Path(stamps).name}.{os.getpid()}.tmp")  # several readers may stamp at once
    tmp.write_text(json.dumps(entries) + "\n")
    tmp.replace(stamps)


def content_problems(folder: Path, record: dict[str, dict[str, Any]], stamps: Path) -> list[str]:
    """How `folder`'s files differ from `record`: one line per missing or changed file. A file whose size and
    modification time are those it had when last hashed is taken as unchanged (hashing real weights at every reuse
    would cost seconds); any other is hashed again."""
    try:
        seen = json.loads(Path(stamps).read_text())
    except (OSError, ValueError):
        seen = {}
    problems, rehashed = [], False
    for name, expected in record.items():
        path = Path(folder) / name
        if not path.is_file():
            problems.append(f"{name} is missing")
            continue
        stat = path.stat()
        if seen.get(name) == [stat.st_size, stat.st_mtime_ns]:
            continue
        if stat.st_size != expected["size"] or file_sha256(path) != expected["sha256"]:
            problems.append(f"{name} changed since it was made")
        rehashed = True
    if rehashed and not problems:
        with contextlib.suppress(OSError):  # a read-only copy of a run dir verifies, it just cannot remember it
            write_stamps(folder, record, stamps)
    return problems


def verified_meta(folder: Path) -> StageResult:
    """The artifact's typed record (`undo.schema.io.read_result`), once the model files it recorded are checked to
    be the ones it made."""
    meta = read_result(folder)
    problems = content_problems(Path(folder) / "model", meta.files, Path(folder) / STAMPS)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise UserError(f"{Path(folder) / 'model'}: {problems[0]}{more}; {repair_hint(Path(folder))}")
    return meta


MODEL = "model"  # an artifact's model folder: Hugging Face save_pretrained (safetensors) and its tokenizer


def model_folder(folder: Path | None, missing: str, example: str = "") -> Path:
    """`folder`'s model/ subfolder; when there is none, a UserError that starts with `missing` (e.g. "no teacher")
    and says what was expected (`example`: where such a folder usually is)."""
    if folder is None or not (Path(folder) / MODEL).is_dir():
        raise UserError(f"{missing} at {folder}: expected an artifact folder with a {MODEL}/ subfolder"
                        + (f", e.g. {example}" if example else ""))
    return Path(folder) / MODEL


def is_model_artifact(folder: Path | str) -> bool:
    """Whether `folder` is a finished artifact that holds a model (its record and a model/ with config.json)."""
    folder = Path(folder).expanduser()
    return (folder / "meta.json").is_file() and (folder / MODEL / "config.json").is_file()


def model_or_artifact(folder: Path) -> Path:
    """A model folder given either as an artifact folder (its model/ subfolder) or directly."""
    return Path(folder) / MODEL if (Path(folder) / MODEL).is_dir() else Path(folder)


class Artifact:
    def __init__(self, run_dir: str | Path, name: str, key: str):
        self.run_dir = Path(run_dir)
        self.name = name
        self.key = key
        self.path = self.run_dir / name
        self.partial = self.run_dir / f".{name}.partial"

    def is_complete(self) -> bool:
        """True if a finished artifact with this key exists and its files are the ones it recorded; an artifact from
        another config, or a damaged one, is an error (one line, with what to do)."""
        if not (self.path / "meta.json").is_file():
            if self.path.exists():
                raise UserError(f"{self.path} exists but is not a complete artifact (no meta.json); "
                                "move it away or delete it")
            return False
        meta = verified_meta(self.path)
        if meta.key != self.key:
            raise UserError(f"{self.path} was made by a different config (key {meta.key}, this run's is "
                            f"{self.key}); use another run_dir or delete that folder")
        return True

    def start(self) -> Path:
        """The work-in-progress folder (kept across interruptions so the engine can resume)."""
        if _DRY_RUN.get():
            raise NotComputed(f"{self.name} is not computed yet")
        self.partial.mkdir(parents=True, exist_ok=True)
        return self.partial

    def finish(self, result: StageResult) -> Path:
        """Drop the resumable checkpoint, record the model's files, write meta.json last, and rename the folder to
        its final name."""
        shutil.rmtree(self.partial / "checkpoint", ignore_errors=True)
        weights = self.partial / MODEL / "model.safetensors"
        result = result.model_copy(update={"name": self.name, "key": self.key, "code_version": code_version()})
        if weights.is_file():
            result.model_sha256 = file_sha256(weights)
        if (self.partial / MODEL).is_dir():
            result.files = content_record(self.partial / MODEL)
            write_stamps(self.partial / MODEL, result.files, self.partial / STAMPS)
        write_result(self.partial, result)
        self.partial.rename(self.path)
        return self.path


def build_once(final: Path, marker: str, build: Callable[[Path], None]) -> Path:
    """`final`, a cached folder: made by `build(staging)` in a temporary folder beside it and renamed into place, so
    a killed process never leaves half of one, with a record of its files. It is reused while its files are the
    recorded ones; a damaged or swapped cache is set aside (renamed, not deleted) and built again, saying so. Two
    processes building the same folder at once both finish: the later rename loses the race harmlessly."""
    final = Path(final)
    if final.exists():
        if (final / marker).is_file():
            try:
                record = json.loads((final / CHECKSUMS).read_text())
                problems = content_problems(final, record, final / STAMPS)
            except (OSError, ValueError):
                problems = ["its record of its files is missing or unreadable"]
            if not problems:
                return final
        else:  # its main file is gone (deleted by hand): a folder that cannot be used, nor be replaced by a rename
            problems = [f"{marker} is missing"]
        aside = final.with_name(f"{final.name}.damaged-{time.strftime('%Y%m%dT%H%M%S')}")
        final.rename(aside)
        console.print(f"[yellow]cache {final}[/]: {problems[0]}; set aside as {aside.name}, building it again")
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        build(staging)
        record = content_record(staging)
        (staging / CHECKSUMS).write_text(json.dumps(record) + "\n")
        write_stamps(staging, record, staging / STAMPS)
        os.replace(staging, final)
    except OSError:
        if not (final / marker).is_file():  # not a lost race with another process: a real failure
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final
