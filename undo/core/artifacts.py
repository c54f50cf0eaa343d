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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import undo
from undo.core.errors import UserError


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


class Artifact:
    def __init__(self, run_dir: str | Path, name: str, key: str):
        self.run_dir = Path(run_dir)
        self.name = name
        self.key = key
        self.path = self.run_dir / name
        self.partial = self.run_dir / f".{name}.partial"

    def is_complete(self) -> bool:
        """True if a finished artifact with this key exists; an artifact from another config is an error."""
        meta_path = self.path / "meta.json"
        if not meta_path.is_file():
            if self.path.exists():
                raise UserError(f"{self.path} exists but is not a complete artifact (no meta.json); "
                                "move it away or delete it")
            return False
        meta = json.loads(meta_path.read_text())
        if meta.get("key") != self.key:
            raise UserError(f"{self.path} was made by a different config (key {meta.get('key')}, this run's is "
                            f"{self.key}); use another run_dir or delete that folder")
        return True

    def start(self) -> Path:
        """The work-in-progress folder (kept across interruptions so the engine can resume)."""
        if _DRY_RUN.get():
            raise NotComputed(f"{self.name} is not computed yet")
        self.partial.mkdir(parents=True, exist_ok=True)
        return self.partial

    def finish(self, meta: dict[str, Any]) -> Path:
        """Drop the resumable checkpoint, write meta.json last, and rename the folder to its final name."""
        shutil.rmtree(self.partial / "checkpoint", ignore_errors=True)
        weights = self.partial / "model" / "model.safetensors"
        meta = {**meta, "name": self.name, "key": self.key, "code_version": code_version()}
        if weights.is_file():
            meta["model_sha256"] = file_sha256(weights)
        (self.partial / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        self.partial.rename(self.path)
        return self.path


def build_once(final: Path, marker: str, build: Callable[[Path], None]) -> Path:
    """`final`, a cached folder: made by `build(staging)` in a temporary folder beside it and renamed into place, so
    a killed process never leaves half of one; when `final/marker` exists it is reused. Two processes building the
    same folder at once both finish: the later rename loses the race harmlessly."""
    final = Path(final)
    if (final / marker).is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        build(staging)
        os.replace(staging, final)
    except OSError:
        if not (final / marker).is_file():  # not a lost race with another process: a real failure
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final
