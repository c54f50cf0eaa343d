import os
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import PreTrainedTokenizerFast

from undo.schema.errors import UserError
from undo.settings import bpe
from undo.settings.bpe import balanced_sample, cached_tokenizer, train_bpe_tokenizer
from undo.settings.corpora import read_documents

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SENTENCES = ["The quick brown fox jumps over the lazy dog, doesn't it?  Twice  spaced.\tTabbed.",
             "Résumé: naïve café — 3.14 ≈ π.",
             "엔딩은 아쉬웠지만 재밌게 잘 봤다 ㅋㅋㅋ",
             "역시 한재석은 얼굴도 잘생겼고 연기도 참 잘해.한재석의 자연스러운 연기 정말 좋다."]
# Hand-written corpora, repeated so BPE has pairs to merge.
IN_MEMORY = {
    "english": [f"the cat sat on the mat number {i}, and the dog sat on the log." for i in range(60)],
    "korean": [f"이 영화 정말 재밌다 {i}번 봤는데 또 보고 싶다. 배우들 연기 최고" for i in range(60)],
}


@pytest.fixture(scope="module")
def real_corpora():
    if not (DATA / "english.txt.xz").is_file() or not (DATA / "korean.txt.xz").is_file():
        pytest.skip(f"the language corpora are not in {DATA}")
    return {"english": read_documents(str(DATA / "english.txt.xz"), limit=600),
            "korean": read_documents(str(DATA / "korean.txt.xz"), limit=3000)}


def check_tokenizer(tok, vocab_size):
    assert isinstance(tok, PreTrainedTokenizerFast)
    assert tok.convert_ids_to_tokens([0, 1, 2]) == ["<pad>", "<unk>", "<|endoftext|>"]
    assert (tok.pad_token_id, tok.unk_token_id, tok.eos_token_id, tok.bos_token_id) == (0, 1, 2, 2)
    assert tok.padding_side == "left"
    assert len(tok) <= vocab_size
    for text in SENTENCES:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert 1 not in ids  # byte-level: nothing is unknown
        assert tok.decode(ids) == text
    assert tok("<|endoftext|>Hi")["input_ids"][0] == 2


def test_in_memory_tokenizer_is_deterministic_and_round_trips(tmp_path):
    first = train_bpe_tokenizer(IN_MEMORY, 300, sample_chars=4000)
    check_tokenizer(first, 300)
    assert len(first) == 300  # enough repeated text to fill the vocabulary
    first.save_pretrained(tmp_path / "a")
    train_bpe_tokenizer(dict(reversed(IN_MEMORY.items())), 300, sample_chars=4000).save_pretrained(tmp_path / "b")
    assert (tmp_path / "a" / "tokenizer.json").read_bytes() == (tmp_path / "b" / "tokenizer.json").read_bytes()
    # Merges were learned for both languages.
    for text in ("the cat sat on the mat", "이 영화 정말 재밌다"):
        assert len(first(text, add_special_tokens=False)["input_ids"]) < len(text.encode()) / 2


def test_same_tokenizer_in_another_process_with_one_thread():
    """Rust hash maps are seeded per process and rayon splits work by thread count: neither may change merges."""
    code = ("import sys; from tests.test_bpe import IN_MEMORY; from undo.settings.bpe import train_bpe_tokenizer; "
            "sys.stdout.write(train_bpe_tokenizer(IN_MEMORY, 300, sample_chars=4000).backend_tokenizer.to_str())")
    env = {**os.environ, "RAYON_NUM_THREADS": "1", "PYTHONHASHSEED": "123"}
    other = subprocess.run([sys.executable, "-c", code], env=env, cwd=Path(__file__).parents[1],
                           capture_output=True, text=True, check=True).stdout
    assert other == train_bpe_tokenizer(IN_MEMORY, 300, sample_chars=4000).backend_tokenizer.to_str()


def test_real_corpora_tokenizer(real_corpora, tmp_path):
    tokenizers = [train_bpe_tokenizer(real_corpora, 1024, sample_chars=200_000) for _ in range(2)]
    for i, tok in enumerate(tokenizers):
        check_tokenizer(tok, 1024)
        tok.save_pretrained(tmp_path / str(i))
    assert (tmp_path / "0" / "tokenizer.json").read_bytes() == (tmp_path / "1" / "tokenizer.json").read_bytes()


def test_balanced_sample_gives_each_corpus_the_same_characters():
    corpora = {"a": ["x" * 7] * 100, "b": ["yy"] * 1000}
    sample = balanced_sample(corpora, sample_chars=300, seed=0)
    assert sum(len(s) for s in sample if s[0] == "x") == sum(len(s) for s in sample if s[0] == "y") == 150
    small = balanced_sample({"a": ["x" * 7] * 2, "b": ["yy"] * 1000}, sample_chars=300, seed=0)
    assert sum(map(len, small)) == 28  # capped at the smallest corpus so the two stay equal
    assert balanced_sample(IN_MEMORY, sample_chars=2000, seed=1) == balanced_sample(IN_MEMORY, sample_chars=2000,
                                                                                     seed=1)
    assert balanced_sample(IN_MEMORY, sample_chars=2000, seed=1) != balanced_sample(IN_MEMORY, sample_chars=2000,
                                                                                     seed=2)


def test_user_errors():
    with pytest.raises(UserError, match="vocab_size 200 leaves no room"):
        train_bpe_tokenizer(IN_MEMORY, 200)
    with pytest.raises(UserError, match="'korean' has no text"):
        train_bpe_tokenizer({"english": ["text"], "korean": []}, 300)


def test_cache_hit_loads_instead_of_training(tmp_path, monkeypatch):
    first = cached_tokenizer(tmp_path, IN_MEMORY, 300, sample_chars=4000)
    [stored] = tmp_path.iterdir()  # no staging directory is left behind
    assert stored.name.startswith("tokenizer_") and len(stored.name) == len("tokenizer_") + 16
    assert (stored / "tokenizer.json").is_file() and (stored / "tokenizer_config.json").is_file()

    def no_training(*args, **kwargs):
        raise AssertionError("trained again instead of loading the cache")

    monkeypatch.setattr(bpe, "_train_on_sample", no_training)
    again = cached_tokenizer(tmp_path, IN_MEMORY, 300, sample_chars=4000)
    assert again.backend_tokenizer.to_str() == first.backend_tokenizer.to_str()
    check_tokenizer(again, 300)
    with pytest.raises(AssertionError, match="trained again"):  # other inputs, other key
        cached_tokenizer(tmp_path, IN_MEMORY, 301, sample_chars=4000)
