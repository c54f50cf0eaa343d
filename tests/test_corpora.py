import gzip
import json
import lzma
import sys

import pytest

from undo.schema.errors import UserError
from undo.settings import corpora
from undo.settings.corpora import check_script, read_documents

DOCS = ["  The first document.  ", "", "Second one", "   ", "Third", "Fourth and last"]
EXPECTED = ["The first document.", "Second one", "Third", "Fourth and last"]
ENGLISH = ["The quick brown fox jumps over the lazy dog.", "Résumé of a naïve café owner, with façade."]
KOREAN = ["엔딩은 아쉬웠지만 재밌게 잘 봤다", "ㅋㅋㅋ 이 영화 최고 CGV에서 봤음"]


def write_lines(path, lines):
    opener = {".xz": lzma.open, ".gz": gzip.open}.get(path.suffix, open)
    with opener(path, "wt", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return str(path)


@pytest.mark.parametrize("name", ["c.txt", "c.txt.xz", "c.txt.gz", "c.jsonl", "c.jsonl.gz", "c.jsonl.xz"])
def test_line_formats_strip_skip_blanks_and_limit(tmp_path, name):
    if ".jsonl" in name:
        # A blank document and a blank line are both skipped; other fields are ignored.
        lines = [json.dumps({"body": d, "id": i}, ensure_ascii=False) for i, d in enumerate(DOCS)] + [""]
    else:
        lines = DOCS
    path = write_lines(tmp_path / name, lines)
    field = {"text_field": "body"} if ".jsonl" in name else {}
    assert read_documents(path, **field) == EXPECTED
    assert read_documents(path, limit=2, **field) == EXPECTED[:2]
    assert read_documents(path, limit=100, **field) == EXPECTED


def test_parquet(tmp_path):
    pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "c.parquet"
    pq.write_table(pa.table({"id": list(range(len(DOCS) + 1)), "text": DOCS + [None]}), path, row_group_size=2)
    assert read_documents(str(path)) == EXPECTED
    assert read_documents(str(path), limit=3) == EXPECTED[:3]
    with pytest.raises(UserError, match=r"c\.parquet has no column 'body' \(columns: id, text\)"):
        read_documents(str(path), text_field="body")


def test_limit_streams_instead_of_reading_everything(tmp_path, monkeypatch):
    path = write_lines(tmp_path / "big.txt", [f"doc {i}" for i in range(1000)])
    pulled = []
    real = corpora._read_lines

    def counting(*args):
        for line in real(*args):
            pulled.append(line)
            yield line

    monkeypatch.setattr(corpora, "_read_lines", counting)
    assert read_documents(path, limit=3) == ["doc 0", "doc 1", "doc 2"]
    assert len(pulled) == 3


def one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def test_file_errors_name_the_path_and_line(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(UserError) as e:
        read_documents(str(missing))
    assert str(missing) in one_line(e) and "does not exist" in str(e.value)

    empty = write_lines(tmp_path / "empty.txt.gz", ["", "   ", ""])
    with pytest.raises(UserError) as e:
        read_documents(empty)
    assert empty in one_line(e) and "no non-empty documents" in str(e.value)

    bad_json = write_lines(tmp_path / "bad.jsonl", ['{"text": "fine"}', "", '{"text": oops}'])
    with pytest.raises(UserError) as e:
        read_documents(bad_json)
    assert f"{bad_json} line 3 is not valid JSON" in one_line(e)

    no_field = write_lines(tmp_path / "nofield.jsonl", ['{"text": "fine"}', '{"body": "x"}'])
    with pytest.raises(UserError) as e:
        read_documents(no_field)
    assert f"{no_field} line 2 has no string field 'text'" in one_line(e)
    assert read_documents(no_field, limit=1) == ["fine"]  # the bad line is never reached

    unknown = write_lines(tmp_path / "c.csv", ["a,b"])
    with pytest.raises(UserError) as e:
        read_documents(unknown)
    assert unknown in one_line(e) and ".parquet" in str(e.value)

    not_utf8 = tmp_path / "latin1.txt"
    not_utf8.write_bytes("caf\u00e9\n".encode("latin-1"))
    with pytest.raises(UserError) as e:
        read_documents(str(not_utf8))
    assert str(not_utf8) in one_line(e)

    with pytest.raises(UserError, match="at least 1"):
        read_documents(empty, limit=0)


def test_path_like_missing_file_is_not_taken_for_a_dataset_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="data/english.txt.xz does not exist"):
        read_documents("data/english.txt.xz")


class FakeDatasets:
    """Stands in for the `datasets` module: records its call and yields records without any network."""

    def __init__(self, records=None, error=None):
        self.records, self.error, self.calls = records or [], error, []

    def load_dataset(self, path, name=None, *, split=None, streaming=False):
        self.calls.append((path, name, split, streaming))
        if self.error:
            raise self.error

        def stream():
            for record in self.records:
                self.pulled += 1
                yield record

        self.pulled = 0
        return stream()


def test_hugging_face_id_streams_with_limit_and_text_field(monkeypatch):
    fake = FakeDatasets([{"content": f" review {i} ", "label": i % 2} for i in range(100)])
    monkeypatch.setitem(sys.modules, "datasets", fake)
    assert read_documents("someone/reviews", limit=2, text_field="content") == ["review 0", "review 1"]
    assert fake.calls == [("someone/reviews", None, "train", True)] and fake.pulled == 2
    read_documents("someone/reviews:ko:test", limit=1, text_field="content")
    read_documents("someone/reviews::validation", limit=1, text_field="content")
    assert fake.calls[1:] == [("someone/reviews", "ko", "test", True), ("someone/reviews", None, "validation", True)]
    with pytest.raises(UserError) as e:
        read_documents("someone/reviews", limit=2)
    assert "someone/reviews has no string field 'text' (fields: content, label)" in one_line(e)


def test_hugging_face_failures_are_user_errors(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", FakeDatasets(error=ConnectionError("no network\nsecond line")))
    with pytest.raises(UserError) as e:
        read_documents("someone/reviews")
    assert "someone/reviews" in one_line(e) and "ConnectionError: no network" in str(e.value)

    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` raise ImportError
    with pytest.raises(UserError) as e:
        read_documents("someone/reviews")
    assert "pip install datasets" in one_line(e)


def test_check_script_accepts_the_right_language_and_names_the_swap():
    check_script(ENGLISH, "latin", "en.txt")
    check_script(KOREAN, "hangul", "ko.txt")  # a little Latin (CGV) is fine
    with pytest.raises(UserError) as e:
        check_script(KOREAN, "latin", "/data/ko.txt", role="setting.retain_corpus")
    message = one_line(e)
    assert message.startswith("corpus /data/ko.txt looks like Hangul text (share of Latin letters 10 %)")  # 3 of 29
    assert "setting.retain_corpus needs English (latin)" in message
    with pytest.raises(UserError, match=r"looks like Latin text \(share of Hangul letters 0 %\).*Korean \(hangul\)"):
        check_script(ENGLISH, "hangul", "en.txt", role="setting.forget_corpus")
    with pytest.raises(UserError, match="no Latin or Hangul letters"):
        check_script(["12345 !!", "Привет мир"], "latin", "x.txt")
    # Only the first `sample` documents are looked at.
    check_script(ENGLISH + KOREAN * 10, "latin", "mixed.txt", sample=2)
