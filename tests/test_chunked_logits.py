"""Large vocabularies in bounded memory (undo.core.logits): every loss that reads a whole next-token distribution
gives the same value and the same gradients computed chunk by chunk (the head applied to a few positions at a time,
recomputed in the backward pass) as computed whole; a model whose head the chunked path cannot reproduce is computed
whole; the chunked path really runs in chunks."""

import pytest
import torch
from transformers import Gemma2Config, LlamaConfig

import undo.core.logits as logits_module
from undo.core.models import fresh_model
from undo.objectives.common import cross_entropy, sequence_logprob
from undo.objectives.distill import ForwardKL
from undo.objectives.lm import NextTokenCrossEntropy
from undo.objectives.maxent import MaxEnt
from undo.objectives.repnoise import RepNoise
from undo.settings.cross_entropy import heldout_cross_entropy

VOCAB = 3000
SHAPE = dict(vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
             num_key_value_heads=2, max_position_embeddings=32)


def llama(seed: int):
    return fresh_model(LlamaConfig(**SHAPE, tie_word_embeddings=False), seed=seed)


def batch(seed: int = 0, rows: int = 3, length: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (rows, length), generator=generator)
    mask = torch.ones_like(ids)
    mask[0, -4:] = 0  # a padded row: its padding is no position
    return ids, mask


@pytest.fixture
def chunked(monkeypatch):
    """Chunk every forward, in chunks of 5 positions, and count the chunks."""
    calls = []
    real = logits_module.sum_over_chunks

    def counting(loss, *sources, chunk=None):
        calls.append(any(source.head is not None for source in sources))
        return real(loss, *sources, chunk=5)

    def switch(on: bool):
        monkeypatch.setattr(logits_module, "LOGITS_BUDGET_BYTES", 0 if on else 2**62)
        calls.clear()
    for module in ("undo.objectives.common", "undo.objectives.distill", "undo.objectives.maxent",
                   "undo.settings.cross_entropy"):
        monkeypatch.setattr(f"{module}.sum_over_chunks", counting)
    switch.calls = calls
    return switch


def value_and_gradients(compute, model):
    model.zero_grad(set_to_none=True)
    value = compute()
    value.sum().backward()
    return value.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_same(whole, chunks):
    torch.testing.assert_close(chunks[0], whole[0], rtol=1e-6, atol=1e-6)
    assert whole[1].keys() == chunks[1].keys() and whole[1]
    for name in whole[1]:
        torch.testing.assert_close(chunks[1][name], whole[1][name], rtol=1e-5, atol=1e-6, msg=name)


LOSSES = {
    "cross_entropy": lambda model, ids, mask, other: cross_entropy(model, ids, mask),
    "lm": lambda model, ids, mask, other: NextTokenCrossEntropy().loss(model, {"input_ids": ids,
                                                                              "attention_mask": mask})[0],
    "sequence_logprob": lambda model, ids, mask, other: sequence_logprob(model, ids, mask)[0],
    "distill": lambda model, ids, mask, other: ForwardKL(other, temperature=2.0).loss(
        model, {"input_ids": ids, "attention_mask": mask})[0],
    "maxent": lambda model, ids, mask, other: MaxEnt(retain_weight=0.5).loss(model, paired(ids, mask))[0],
    "maxent_kl_retain": lambda model, ids, mask, other: MaxEnt(retain_weight=0.5, retain_loss="kl",
                                                               reference=other).loss(model, paired(ids, mask))[0],
    "repnoise": lambda model, ids, mask, other: RepNoise(alpha=0.5, beta=0.1).loss(model, paired(ids, mask))[0],
}


def paired(ids, mask):
    return {"forget_input_ids": ids, "forget_attention_mask": mask,
            "retain_input_ids": ids.flip(0), "retain_attention_mask": mask.flip(0)}


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_full_distribution_loss_chunked_equals_whole_with_its_gradients(name, chunked):
    model, other = llama(0), llama(1).requires_grad_(False)
    ids, mask = batch()

    def compute():
        return LOSSES[name](model, ids, mask, other)

    chunked(False)
    whole = value_and_gradients(compute, model)
    assert not any(chunked.calls)  # no head: one piece, as before
    chunked(True)
    chunks = value_and_gradients(compute, model)
    assert any(chunked.calls)  # really chunked (29 positions in chunks of 5)
    assert_same(whole, chunks)


def test_heldout_cross_entropy_chunked_equals_whole(chunked):
    model = llama(0)
    ids, mask = batch(rows=5)
    chunked(False)
    whole = heldout_cross_entropy(model, ids, real=mask.bool(), batch_size=2)
    chunked(True)
    chunks = heldout_cross_entropy(model, ids, real=mask.bool(), batch_size=2)
    assert any(chunked.calls) and chunks == pytest.approx(whole, rel=1e-6)


def test_a_softcapped_head_is_reproduced_and_a_head_that_differs_is_computed_whole(chunked):
    gemma2 = fresh_model(Gemma2Config(**SHAPE, head_dim=8, final_logit_softcapping=5.0, query_pre_attn_scalar=8,
                                      sliding_window=16), seed=0)
    ids, mask = batch()
    chunked(False)
    whole = value_and_gradients(lambda: cross_entropy(gemma2, ids, mask), gemma2)
    chunked(True)
    assert logits_module.head_matches(gemma2)
    assert_same(whole, value_and_gradients(lambda: cross_entropy(gemma2, ids, mask), gemma2))

    # A Llama whose config carries a softcap its forward never applies: the chunked head would differ, so the loss is
    # computed whole (the chunked path never runs) and is the plain one.
    model = llama(0)
    chunked(False)
    plain = cross_entropy(model, ids, mask)
    model.config.final_logit_softcapping = 5.0
    chunked(True)
    assert not logits_module.head_matches(model)
    assert torch.equal(cross_entropy(model, ids, mask), plain) and chunked.calls == []
