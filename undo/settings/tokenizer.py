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
