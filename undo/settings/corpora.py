"""Reading a text corpus (one document per line, JSONL, parquet or a Hugging Face dataset) and checking its script.

The language setting trains on whatever corpus a user points it at, so the reader accepts the common formats,
streams (a 600k-line file is not read in full when only a few thousand documents are wanted) and fails with one
line that names the file and the fix. `check_script` catches the most likely mistake cheaply: the retain and
forget corpora swapped, or a corpus in neither language.
"""

from __future__ import annotations

import functools
import gzip
import itertools
import json
import lzma
import re
from collections.abc import Iterator
from pathlib import Path

from undo.core.artifacts import file_sha256
from undo.schema.errors import UserError

TEXT_SUFFIXES = (".txt", ".jsonl")
COMPRESSIONS = {".xz": lzma.open, ".gz": gzip.open}
ACCEPTED = ".txt, .jsonl (each optionally .xz or .gz) or .parquet"
# `owner/name`, `owner/name:config` or `owner/name:config:split` (`owner/name::split` for the default config).
HF_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?::(?P<config>[\w.-]*))?(?::(?P<split>[\w.-]+))?$")


def read_documents(source: str | list[str], *, limit: int | None = None, text_field: str = "text") -> list[str]:
    """The first `limit` non-empty documents of `source` (all when `limit` is None), whitespace stripped.

    `source` is a file (.txt: one document per line; .jsonl: `record[text_field]`; .parquet: column `text_field`;
    .txt/.jsonl may end in .xz or .gz) or, when no such path exists, a Hugging Face dataset id
    `owner/name[:config[:split]]` (split defaults to train), streamed so nothing is downloaded in full.
    """
    taken = list(iter_documents(source, limit=limit, text_field=text_field))
    if not taken:
        raise UserError(f"corpus {source} has no non-empty documents; point the setting at a file with text in it")
    return taken


def _is_file_source(source: str) -> bool:
    """A source names a file unless it looks like a dataset id and no such path exists."""
    path = Path(source).expanduser()
    return path.exists() or not HF_ID.match(source) or _suffixes(path)[0] is not None


def _check_file(path: Path) -> None:
    if path.is_dir():
        raise UserError(f"corpus {path} is a folder; name the corpus files in it (a list of paths is one corpus)")
    if _suffixes(path)[0] is None:
        raise UserError(f"corpus {path} has a suffix we cannot read; use {ACCEPTED}")
    if not path.is_file():
        raise UserError(f"corpus file {path} does not exist; check the path (relative paths start at the "
                        "directory you run from)")


def check_source(source: str | list[str]) -> None:
    """A one-line error now, before any corpus is read, for a local file that does not exist or cannot be read."""
    for one in source if isinstance(source, list) else [source]:
        if _is_file_source(one):
            _check_file(Path(one).expanduser())


def iter_documents(source: str | list[str], *, limit: int | None = None, text_field: str = "text") -> Iterator[str]:
    """`read_documents`, one document at a time (a corpus larger than memory is never held in it). A list of
    sources is one corpus: each source's first `limit` documents, in order."""
    if isinstance(source, list):
        return itertools.chain.from_iterable(iter_documents(s, limit=limit, text_field=text_field) for s in source)
    if limit is not None and limit < 1:
        raise UserError(f"document limit {limit} for corpus {source} must be at least 1; raise it or drop it")
    if _is_file_source(source):
        documents = _read_file(Path(source).expanduser(), text_field)
    else:
        hf = HF_ID.match(source)
        documents = _read_hf(source, hf["repo"], hf["config"] or None, hf["split"] or "train", text_field)
    # islice stops pulling from the generator (and so from the file) once `limit` documents are in.
    return itertools.islice((d for d in (doc.strip() for doc in documents) if d), limit)


def _suffixes(path: Path) -> tuple[str | None, str | None]:
    """(format, compression) from the file name; format is None when the suffix is not one we read."""
    name = path.name.lower()
    compression = next((c for c in COMPRESSIONS if name.endswith(c)), None)
    stem = name[: -len(compression)] if compression else name
    fmt = next((s for s in (*TEXT_SUFFIXES, ".parquet") if stem.endswith(s)), None)
    if fmt == ".parquet" and compression:
        fmt = None  # parquet compresses internally; a .parquet.gz is not something pyarrow opens
    return fmt, compression


def _read_file(path: Path, text_field: str) -> Iterator[str]:
    _check_file(path)
    fmt, compression = _suffixes(path)
    if fmt == ".parquet":
        return _read_parquet(path, text_field)
    return _read_lines(path, fmt, compression, text_field)


def _read_lines(path: Path, fmt: str, compression: str | None, text_field: str) -> Iterator[str]:
    opener = COMPRESSIONS.get(compression, open)
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if fmt == ".txt":
                    yield line
                elif line.strip():
                    yield _jsonl_field(line, path, number, text_field)
    except (UnicodeDecodeError, lzma.LZMAError, gzip.BadGzipFile, EOFError) as e:
        raise UserError(f"corpus {path} cannot be read as UTF-8 {fmt[1:]}{' ' + compression if compression else ''}"
                        f" ({type(e).__name__}: {_first_line(e)}); re-export it as UTF-8 text") from None


def _jsonl_field(line: str, path: Path, number: int, text_field: str) -> str:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        raise UserError(f"corpus {path} line {number} is not valid JSON ({e.msg}); fix or remove that line") from None
    value = record.get(text_field) if isinstance(record, dict) else None
    if not isinstance(value, str):
        raise UserError(f"corpus {path} line {number} has no string field {text_field!r}; "
                        "set setting.text_field to the key that holds the document")
    return value


def _read_parquet(path: Path, text_field: str) -> Iterator[str]:
    import pyarrow.parquet as pq  # comes with `datasets`; imported here so text corpora need neither

    try:
        table = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises ArrowInvalid/OSError with multi-line messages
        raise UserError(f"corpus {path} is not a readable parquet file ({_first_line(e)}); re-export it") from None
    columns = table.schema_arrow.names
    if text_field not in columns:
        raise UserError(f"corpus {path} has no column {text_field!r} (columns: {', '.join(columns)}); "
                        "set the corpus text field to the column that holds the documents")

    def documents() -> Iterator[str]:
        for batch in table.iter_batches(batch_size=1024, columns=[text_field]):
            yield from (value for value in batch.column(0).to_pylist() if isinstance(value, str))

    return documents()


def _read_hf(source: str, repo: str, config: str | None, split: str, text_field: str) -> Iterator[str]:
    try:
        import datasets
    except ImportError:
        raise UserError(f"corpus {source} looks like a Hugging Face dataset id, which needs the `datasets` "
                        "package; run `pip install datasets` or point at a local file") from None
    try:
        records = datasets.load_dataset(repo, config, split=split, streaming=True)
        for record in records:
            if not isinstance(record.get(text_field), str):
                raise UserError(f"Hugging Face dataset {source} has no string field {text_field!r} "
                                f"(fields: {', '.join(record)}); set setting.text_field to the right one")
            yield record[text_field]
    except UserError:
        raise
    except Exception as e:  # network, unknown dataset or config or split: all surface as different exceptions
        raise UserError(f"cannot stream Hugging Face dataset {source} ({type(e).__name__}: {_first_line(e)}); "
                        "check the id, config, split and network, or point at a local file") from None


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [""])[0][:200]


# --- the script check ---------------------------------------------------------------------------------------

LANGUAGE = {"latin": "English", "hangul": "Korean"}


def _is_latin(c: str) -> bool:
    # ASCII letters, Latin-1 Supplement and Latin Extended-A/B, Latin Extended Additional (callers pass letters).
    return c < "\u0250" or "\u1e00" <= c <= "\u1eff"


def _is_hangul(c: str) -> bool:
    # Syllables, Jamo, Compatibility Jamo.
    return "\uac00" <= c <= "\ud7a3" or "\u1100" <= c <= "\u11ff" or "\u3130" <= c <= "\u318f"


def check_script(documents: list[str], expected: str, source: str, *, role: str = "this corpus",
                 sample: int = 200, min_share: float = 0.5) -> None:
    """Raise UserError unless `expected` ("latin" or "hangul") holds at least `min_share` of the Latin + Hangul
    letters in the first `sample` documents.

    Cheap on purpose: it only has to catch a swapped or wrong corpus, not identify a language. `role` names the
    setting the corpus fills (e.g. "setting.retain_corpus") so the message says what to change.
    """
    if expected not in LANGUAGE:
        raise ValueError(f"expected must be one of {sorted(LANGUAGE)}, not {expected!r}")
    latin = hangul = 0
    for doc in documents[:sample]:
        for c in doc:
            if c.isalpha():
                latin += _is_latin(c)
                hangul += _is_hangul(c)
    if latin + hangul == 0:
        raise UserError(f"corpus {source} has no Latin or Hangul letters in its first {sample} documents, but "
                        f"{role} needs {LANGUAGE[expected]} ({expected}); point {role} at the right file")
    share = (latin if expected == "latin" else hangul) / (latin + hangul)
    if share < min_share:
        found = "Hangul" if expected == "latin" else "Latin"
        raise UserError(f"corpus {source} looks like {found} text (share of {expected.capitalize()} letters "
                        f"{100 * share:.0f} %), but {role} needs {LANGUAGE[expected]} ({expected}); "
                        f"point {role} at the right file")


@functools.lru_cache(maxsize=16)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    return file_sha256(Path(path))


def corpus_fingerprint(source: str | list[str]) -> str:
    """A local corpus file's sha256 (cached per size and mtime); a dataset id stands for itself; a list of sources
    is the list of theirs."""
    if isinstance(source, list):
        return "+".join(corpus_fingerprint(s) for s in source)
    path = Path(source)
    if not path.is_file():
        return source
    stat = path.stat()
    return _file_sha256(str(path.resolve()), stat.st_size, stat.st_mtime_ns)
