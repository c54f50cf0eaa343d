"""A corpus's documents, by index: held as text in memory, or tokenized once into a memmap on disk.

- `TextCorpus`: the documents as strings. Models built here train their tokenizer on the corpus's text, so this is
  their form (and such corpora are small).
- `TokenCorpus`: a corpus tokenized once with a model's own tokenizer into `<cache>/tokens/<key>/` (`tokens.bin`,
  every document's token ids end to end as uint32, and `offsets.npy`, document i being
  `tokens[offsets[i]:offsets[i + 1]]`), like nanoGPT's train.bin, and read through a numpy memmap: a corpus larger
  than memory is streamed through once and never held in it. The key hashes the corpus file's contents, how it is
  read, and the tokenizer, so a changed file or tokenizer makes a new store and an unchanged one is reused.

Both give `text(i)` and `token_ids(indices)` (without the end-of-text token the setting opens documents with).
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from undo.core.artifacts import build_once, stable_hash
from undo.schema.errors import UserError
from undo.settings.corpora import corpus_fingerprint, iter_documents

console = Console(stderr=True, soft_wrap=True)
FORMAT = "uint32-v1"  # part of the key: bump it when the layout changes
CHUNK = 1024  # documents tokenized per batch while building


class TextCorpus:
    def __init__(self, texts: list[str], tokenizer: Any = None):
        self.texts, self.tokenizer = texts, tokenizer

    def __len__(self) -> int:
        return len(self.texts)

    def text(self, index: int) -> str:
        return self.texts[index]

    def token_ids(self, indices: Sequence[int]) -> list[list[int]]:
        return self.tokenizer([self.texts[i] for i in indices], add_special_tokens=False)["input_ids"]


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A tokenizer's identity: its full serialisation (fast tokenizers) or its vocabulary (slow ones)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha256(f"{type(tokenizer).__name__}:{text}".encode()).hexdigest()[:16]


class TokenCorpus:
    def __init__(self, folder: Path, tokenizer: Any):
        self.folder, self.tokenizer = Path(folder), tokenizer
        self.offsets = np.load(self.folder / "offsets.npy")
        self.tokens = np.memmap(self.folder / "tokens.bin", dtype=np.uint32, mode="r")

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def ids(self, index: int) -> np.ndarray:
        return self.tokens[self.offsets[index]:self.offsets[index + 1]]

    def text(self, index: int) -> str:
        return self.tokenizer.decode(self.ids(index).tolist())

    def token_ids(self, indices: Sequence[int]) -> list[list[int]]:
        return [self.ids(i).tolist() for i in indices]

    @classmethod
    def build(cls, cache_dir: Path, source: str | list[str], *, limit: int | None, text_field: str,
              tokenizer: Any) -> TokenCorpus:
        """The store of `source`'s first `limit` documents under `tokenizer`, made on first use."""
        key = stable_hash({"format": FORMAT, "source": corpus_fingerprint(source), "limit": limit,
                           "text_field": text_field, "tokenizer": tokenizer_fingerprint(tokenizer)})
        def tokenize(staging: Path) -> None:
            count = _write(staging, iter_documents(source, limit=limit, text_field=text_field), tokenizer, source)
            (staging / "meta.json").write_text(json.dumps({"source": source, "documents": count, "limit": limit,
                                                           "text_field": text_field}) + "\n")
            console.print(f"tokenized {count:,} documents of {source} once into {cache_dir}/tokens_{key}")

        return cls(build_once(Path(cache_dir) / f"tokens_{key}", "offsets.npy", tokenize), tokenizer)


def _write(folder: Path, documents, tokenizer, source: str | list[str]) -> int:
    """Tokenize `documents` in batches into folder/tokens.bin and folder/offsets.npy; returns their number."""
    offsets = [0]
    with open(folder / "tokens.bin", "wb") as out:
        while batch := list(itertools.islice(documents, CHUNK)):
            for ids in tokenizer(batch, add_special_tokens=False)["input_ids"]:
                np.asarray(ids, dtype=np.uint32).tofile(out)
                offsets.append(offsets[-1] + len(ids))
    if len(offsets) == 1:
        raise UserError(f"corpus {source} has no non-empty documents; point the setting at a file with text in it")
    np.save(folder / "offsets.npy", np.asarray(offsets, dtype=np.int64))
    return len(offsets) - 1
