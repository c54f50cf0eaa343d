"""A character-level tokenizer built with the `tokenizers` library and wrapped as `PreTrainedTokenizerFast`.

One token per printable ASCII character plus three specials. `<|endoftext|>` separates documents (it opens each
one, so a prompt at evaluation starts exactly like a document in training).
"""

from __future__ import annotations

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

PAD, UNK, EOS = "<pad>", "<unk>", "<|endoftext|>"
CHAR_VOCAB_SIZE = 3 + (127 - 32)  # the specials and printable ASCII


def build_char_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {PAD: 0, UNK: 1, EOS: 2}
    for code in range(32, 127):  # printable ASCII, space included
        vocab[chr(code)] = len(vocab)
    core = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")  # every character is a word
    core.decoder = decoders.Fuse()  # join characters back without inserting spaces
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token=PAD, unk_token=UNK, eos_token=EOS, bos_token=EOS, padding_side="left"
    )


def has_undo_specials(tokenizer) -> bool:
    """Whether the tokenizer has the special tokens of every tokenizer undo builds (this character tokenizer and the
    language setting's BPE): `<pad>`=0, `<unk>`=1, `<|endoftext|>`=2, and `<|endoftext|>` as both BOS and EOS."""
    try:
        specials = tokenizer.convert_ids_to_tokens([0, 1, 2])
    except (IndexError, KeyError, OverflowError, TypeError, ValueError):
        return False
    return specials == [PAD, UNK, EOS] and tokenizer.bos_token == EOS and tokenizer.eos_token == EOS


def adds_bos(tokenizer) -> bool:
    """Whether the tokenizer itself opens a text it encodes (with special tokens, as by default) with its BOS token:
    its post-processor adds one (Llama, Gemma, Qwen3 ...) or its `add_bos_token` makes it add one."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return False
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bool(ids) and ids[0] == bos


def with_bos(tokenizer):
    """A copy of the tokenizer that opens every text it encodes with special tokens with its BOS token (the tokenizer
    itself is left as it is: every stage tokenizes with it)."""
    import copy

    from tokenizers import processors

    if adds_bos(tokenizer):
        return tokenizer
    tokenizer = copy.deepcopy(tokenizer)
    try:
        tokenizer.add_bos_token = True  # transformers >= 5 rebuilds the post-processor from this flag
    except (AttributeError, TypeError, ValueError):
        pass
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if not adds_bos(tokenizer) and backend is not None:
        bos = (tokenizer.bos_token, tokenizer.bos_token_id)
        backend.post_processor = processors.TemplateProcessing(single=f"{bos[0]} $A:0", pair=f"{bos[0]} $A:0 $B:1",
                                                               special_tokens=[bos])
    if not adds_bos(tokenizer):
        raise TypeError(f"cannot make the tokenizer {type(tokenizer).__name__} add its BOS token")
    return tokenizer
