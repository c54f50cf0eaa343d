"""A byte-level BPE tokenizer for the language setting, trained on a balanced sample of its corpora and cached.

Balanced: each corpus contributes the same number of characters, so the merges serve English and Korean alike
(otherwise the larger or more repetitive corpus would take most of the vocabulary and the other language would
cost more tokens per character, which confounds every per-token comparison between retain and forget).
Byte-level: every string round-trips and no text is ever `<unk>`. The special tokens and their ids are those of
the arithmetic setting's tokenizer (undo/settings/tokenizer.py), so the rest of the pipeline treats both alike.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import tokenizers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from undo.core.artifacts import build_once
from undo.schema.errors import UserError
from undo.settings.tokenizer import EOS, PAD, UNK

SPECIALS = [PAD, UNK, EOS]  # ids 0, 1, 2
RECIPE = "bytelevel-bpe-v1"  # part of the cache key: bump it when the training recipe below changes
MIN_VOCAB = len(SPECIALS) + 256  # the specials plus one token per byte


def train_bpe_tokenizer(texts_by_corpus: dict[str, list[str]], vocab_size: int, *, sample_chars: int = 2_000_000,
                        seed: int = 0) -> PreTrainedTokenizerFast:
    """A byte-level BPE with at most `vocab_size` tokens, trained on `balanced_sample(...)`. Deterministic."""
    return _train_on_sample(balanced_sample(texts_by_corpus, sample_chars=sample_chars, seed=seed), vocab_size)


def cached_tokenizer(cache_dir: Path, texts_by_corpus: dict[str, list[str]], vocab_size: int, *,
                     sample_chars: int = 2_000_000, seed: int = 0) -> PreTrainedTokenizerFast:
    """`train_bpe_tokenizer(...)`, stored in `cache_dir/tokenizer_<key>/` and loaded from there on later calls.

    The key hashes what determines the result: the sampled text, the vocabulary size, the recipe and the
    `tokenizers` version. The directory appears by an atomic rename, so a killed process never leaves half of one.
    """
    sample = balanced_sample(texts_by_corpus, sample_chars=sample_chars, seed=seed)
    digest = hashlib.sha256(json.dumps([RECIPE, tokenizers.__version__, vocab_size, sample],
                                       ensure_ascii=False).encode("utf-8")).hexdigest()
    final = build_once(Path(cache_dir) / f"tokenizer_{digest[:16]}", "tokenizer.json",
                       lambda staging: _train_on_sample(sample, vocab_size).save_pretrained(staging))
    return PreTrainedTokenizerFast.from_pretrained(final)


def balanced_sample(texts_by_corpus: dict[str, list[str]], *, sample_chars: int, seed: int) -> list[str]:
    """The same number of characters from each corpus: documents in a seeded random order, the last one cut.

    The per-corpus budget is `sample_chars // len(texts_by_corpus)`, lowered to the smallest corpus's size so the
    corpora stay balanced. Corpora are taken in name order, so the dict's order does not matter.
    """
    if not texts_by_corpus:
        raise ValueError("texts_by_corpus is empty")
    sizes = {name: sum(map(len, texts)) for name, texts in texts_by_corpus.items()}
    empty = [name for name, size in sizes.items() if size == 0]
    if empty:
        raise UserError(f"corpus {empty[0]!r} has no text to train the tokenizer on; point it at a non-empty corpus")
    budget = min(sample_chars // len(texts_by_corpus), *sizes.values())
    sample = []
    for name in sorted(texts_by_corpus):
        texts = texts_by_corpus[name]
        order = list(range(len(texts)))
        random.Random(f"{seed}/{name}").shuffle(order)  # str seeds hash with sha512: stable across processes
        left = budget
        for i in order:
            if left <= 0:
                break
            piece = texts[i][:left]
            if piece:
                sample.append(piece)
                left -= len(piece)
    return sample


def _train_on_sample(sample: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    if vocab_size < MIN_VOCAB + 1:
        raise UserError(f"tokenizer vocab_size {vocab_size} leaves no room for merges: a byte-level BPE needs "
                        f"{MIN_VOCAB} tokens for the bytes and specials; set it above {MIN_VOCAB}")
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator(sample, trainer=trainer, length=len(sample))
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token=PAD, unk_token=UNK, eos_token=EOS,
                                   bos_token=EOS, padding_side="left", clean_up_tokenization_spaces=False)
