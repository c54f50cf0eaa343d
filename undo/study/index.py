"""Where each study has been run. A relative run_dir is read from the folder undo runs in, so the same config run
from another folder starts a new study there; this index (`$UNDO_STATE_DIR/studies.json`, default
`~/.local/state/undo/`) remembers each config's run directories, so that `undo run` can say a study already exists
elsewhere and `undo report` can say where it is."""

from __future__ import annotations

import json
import os
from pathlib import Path

from undo.config import ExperimentConfig, config_hash
from undo.schema.study import MANIFEST


def index_path() -> Path:
    state = os.environ.get("UNDO_STATE_DIR") or Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local"
                                                     / "state") / "undo"
    return Path(state) / "studies.json"


def _read() -> dict[str, list[str]]:
    try:
        index = json.loads(index_path().read_text())
        return index if isinstance(index, dict) else {}
    except (OSError, ValueError):
        return {}


def remember(cfg: ExperimentConfig) -> None:
    """Record this config's run directory (best effort: an unwritable home directory is no reason to stop)."""
    index, here = _read(), str(Path(cfg.run_dir).resolve())
    entries = index.setdefault(config_hash(cfg), [])
    if here not in entries:
        entries.append(here)
    try:
        index_path().parent.mkdir(parents=True, exist_ok=True)
        tmp = index_path().with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(index, indent=1) + "\n")
        tmp.replace(index_path())
    except OSError:
        pass


def elsewhere(cfg: ExperimentConfig) -> list[Path]:
    """Other run directories where this config's study exists."""
    here = Path(cfg.run_dir).resolve()
    return [Path(p) for p in _read().get(config_hash(cfg), []) if Path(p) != here and (Path(p) / MANIFEST).is_file()]
