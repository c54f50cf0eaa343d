"""What `undo` needs to know about a Hugging Face checkpoint before loading its weights: whether it is one, its
depth, its identity (a hash of its files), and its tokenizer. Loading never unpickles (safetensors only) and runs a
checkpoint's own code only when the user says `trust_remote_code`."""

from __future__ import annotations

import functools
import json
from pathlib import Path

from undo.core.artifacts import file_sha256, stable_hash
from undo.schema.errors import UserError


def is_local(source: str) -> bool:
    return Path(source).expanduser().exists()


def check_checkpoint(source: str, role: str = "model.pretrained") -> None:
    """A local folder must hold a model: config.json and safetensors weights (a hub id is checked when loaded)."""
    path = Path(source).expanduser()
    if not path.exists():
        return
    if not path.is_dir() or not (path / "config.json").is_file():
        raise UserError(f"{role}: {source} is not a Hugging Face checkpoint folder (no config.json); point it at "
                        "the folder that save_pretrained wrote")
    if not any(path.glob("*.safetensors")):
        raise UserError(f"{role}: {source} has no .safetensors weights; undo only loads safetensors (convert it "
                        "with `model.save_pretrained(folder, safe_serialization=True)`)")


def local_depth(source: str) -> int | None:
    """The number of transformer blocks of a local checkpoint (from its config.json), None when it is not local."""
    path = Path(source).expanduser() / "config.json"
    if not path.is_file():
        return None
    config = json.loads(path.read_text())
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        if isinstance(config.get(key), int):
            return config[key]
    text = config.get("text_config") or {}
    return text.get("num_hidden_layers")


# Where configs name the longest sequence a model was built for: most architectures, GPT-2-like ones, older GPT-2
# files, and a few others.
CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length", "seq_length", "max_seq_len")


def local_context(source: str) -> int | None:
    """The sequence length a local checkpoint was built for (its config.json's `max_position_embeddings`, or
    `n_positions` for GPT-2-like configs; a multimodal config's `text_config`), read without importing
    transformers; None when it is not local or names none."""
    path = Path(source).expanduser() / "config.json"
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # loading the checkpoint says what is wrong with it
    for section in (config, config.get("text_config") or {}):
        if not isinstance(section, dict):
            continue
        for key in CONTEXT_KEYS:
            value = section.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    return None


@functools.lru_cache(maxsize=32)
def _folder_digest(path: str, stamp: tuple) -> str:
    return stable_hash({p.name: file_sha256(p) for p in sorted(Path(path).iterdir()) if p.is_file()})


def fingerprint(source: str, revision: str | None = None) -> str:
    """A checkpoint's identity: the hash of its files for a local folder (cached per size and mtime), its id and
    revision for a hub model."""
    path = Path(source).expanduser()
    if not path.is_dir():
        return f"{source}@{revision or 'main'}"
    stamp = tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(path.iterdir()) if p.is_file())
    return _folder_digest(str(path.resolve()), stamp)
