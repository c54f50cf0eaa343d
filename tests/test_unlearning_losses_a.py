"""Unlearning objectives (GradAscent, GradDiff, MaxEnt, NPO, SimNPO) against hand-computed numbers."""

import copy
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from undo.core.compute import forward_flops_per_token
from undo.config import ModelConfig, TrainConfig
from undo.training.engine import train
from undo.schema.errors import UserError
from undo.core.models import build_model
from undo.objectives import OBJECTIVES
from undo.objectives.grad_ascent import GradAscent
from undo.objectives.grad_diff import GradDiff
from undo.objectives.maxent import MaxEnt
from undo.objectives.npo import NPO
from undo.objectives.simnpo import SimNPO

TINY = ModelConfig(layers=1, width=32, heads=2, context=16, vocab=40)


def tiny_model(seed=0):
    return build_model(TINY, seed=seed, pad_id=0, eos_id=2, tokenizer_size=40)


def random_ids(seed, rows=3, length=12):
    return torch.randint(3, 40, (rows, length), generator=torch.Generator().manual_seed(seed))


def unlearning_batch(forget_mask=False):
    batch = {"forget_input_ids": random_ids(1), "retain_input_ids": random_ids(2)}
    if forget_mask:  # right padding: the rows keep 12, 9 and 5 tokens
        lengths = torch.tensor([12, 9, 5])
        batch["forget_attention_mask"] = (torch.arange(12) < lengths[:, None]).long()
    return batch


def hand_ce(model, input_ids, attention_mask=None):
    """Mean next-token CE written out independently of undo.objectives.common."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1]
    targets = input_ids[:, 1:]
    if attention_mask is not None:
        targets = targets.masked_fill(attention_mask[:, 1:] == 0, -100)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)


class Unigram(nn.Module):
    """A stub LM whose next-token logits are `weights` at every position, whatever the input."""

    def __init__(self, weights):
        super().__init__()
        self.weights = nn.Parameter(torch.tensor(weights, dtype=torch.float32))

    def forward(self, input_ids, attention_mask=None, **kwargs):
        return SimpleNamespace(logits=self.weights.expand(*input_ids.shape, -1))


def unigram_logprobs(weights):
    normaliser = math.log(sum(math.exp(w) for w in weights))
    return [w - normaliser for w in weights]


STUB_IDS = torch.tensor([[0, 1, 2, 3, 1], [2, 2, 0, 1, 3]])
STUB_MASK = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])  # row 2 counts targets 2 and 0 only
THETA, REF = [0.5, -1.0, 2.0, 0.0], [1.0, 0.3, -0.7, 0.2]


def stub_sequence_logprobs(weights):
    """Per row of STUB_IDS/STUB_MASK: (summed log-prob of the counted targets, how many counted), by hand."""
    logprob = unigram_logprobs(weights)
    rows = []
    for ids, mask in zip(STUB_IDS.tolist(), STUB_MASK.tolist()):
        counted = [target for target, keep in zip(ids[1:], mask[1:]) if keep]
        rows.append((sum(logprob[t] for t in counted), len(counted)))
    return rows


def stub_batch():
    return {"forget_input_ids": STUB_IDS, "forget_attention_mask": STUB_MASK, "retain_input_ids": STUB_IDS}


def test_each_method_is_registered_under_its_name():
    expected = {"grad_ascent": GradAscent, "grad_diff": GradDiff, "maxent": MaxEnt, "npo": NPO, "simnpo": SimNPO}
    for name, cls in expected.items():
        assert OBJECTIVES[name] is cls and cls.name == name and cls.is_unlearning
    assert NPO.needs_reference and not any(c.needs_reference for c in (GradAscent, GradDiff, MaxEnt, SimNPO))


def test_grad_ascent_is_exactly_minus_cross_entropy_and_its_gradient():
    batch = unlearning_batch()
    lm_model, ga_model = tiny_model(), tiny_model()
    lm_loss, _ = OBJECTIVES["lm"]().loss(lm_model, {"input_ids": batch["forget_input_ids"]})
    ga_loss, logs = GradAscent().loss(ga_model, batch)
    assert ga_loss.item() == pytest.approx(-lm_loss.item(), rel=1e-6)
    assert logs == {"forget_ce": pytest.approx(lm_loss.item(), rel=1e-6)}
    lm_loss.backward()
    ga_loss.backward()
    for lm_param, ga_param in zip(lm_model.parameters(), ga_model.parameters()):
        assert torch.equal(ga_param.grad, -lm_param.grad)


def test_grad_ascent_gradient_is_exactly_the_negated_cross_entropy_gradient():
    batch = unlearning_batch(forget_mask=True)
    ce_model, ga_model = tiny_model(), tiny_model()
    hand_ce(ce_model, batch["forget_input_ids"], batch["forget_attention_mask"]).backward()
    GradAscent().loss(ga_model, batch)[0].backward()
    for ce_param, ga_param in zip(ce_model.parameters(), ga_model.parameters()):
        assert torch.equal(ga_param.grad, -ce_param.grad)


def test_grad_diff_is_minus_forget_ce_plus_weighted_retain_ce():
    batch, model = unlearning_batch(forget_mask=True), tiny_model()
    loss, logs = GradDiff(retain_weight=2.5).loss(model, batch)
    with torch.no_grad():
        forget_ce = hand_ce(model, batch["forget_input_ids"], batch["forget_attention_mask"]).item()
        retain_ce = hand_ce(model, batch["retain_input_ids"]).item()
    assert loss.item() == pytest.approx(-forget_ce + 2.5 * retain_ce, rel=1e-6)
    assert logs == {"forget_ce": pytest.approx(forget_ce, rel=1e-6), "retain_ce": pytest.approx(retain_ce, rel=1e-6)}
    assert GradDiff().retain_weight == 1.0


def test_maxent_is_zero_at_uniform_logits_and_positive_otherwise():
    batch, model = unlearning_batch(forget_mask=True), tiny_model()
    assert MaxEnt(retain_weight=0.0).loss(model, batch)[0].item() > 1e-3
    with torch.no_grad():
        model.lm_head.weight.zero_()
    loss, logs = MaxEnt(retain_weight=0.0).loss(model, batch)
    assert abs(loss.item()) < 1e-6 and abs(logs["forget_kl_uniform"]) < 1e-6
    assert logs["forget_ce"] == pytest.approx(math.log(40), rel=1e-6)


def test_maxent_matches_kl_from_uniform_by_hand():
    batch, model = unlearning_batch(forget_mask=True), tiny_model()
    loss, logs = MaxEnt(retain_weight=0.7).loss(model, batch)
    with torch.no_grad():
        probs = torch.softmax(model(input_ids=batch["forget_input_ids"]).logits[:, :-1].double(), dim=-1)
        uniform = 1.0 / probs.shape[-1]
        kl_per_position = (uniform * torch.log(uniform / probs)).sum(dim=-1)
        counted = batch["forget_attention_mask"][:, 1:].bool()
        kl = kl_per_position[counted].mean().item()
        retain_ce = hand_ce(model, batch["retain_input_ids"]).item()
    assert logs["forget_kl_uniform"] == pytest.approx(kl, rel=1e-5)
    assert loss.item() == pytest.approx(kl + 0.7 * retain_ce, rel=1e-5)


def test_npo_matches_its_formula_on_fixed_log_probs():
    beta = 0.3
    objective = NPO(reference=Unigram(REF).eval(), beta=beta)
    loss, logs = objective.loss(Unigram(THETA), stub_batch())
    terms = [(2 / beta) * math.log(1 + math.exp(beta * (theta - ref)))
             for (theta, _), (ref, _) in zip(stub_sequence_logprobs(THETA), stub_sequence_logprobs(REF))]
    assert loss.item() == pytest.approx(sum(terms) / len(terms), rel=1e-6)
    rows = stub_sequence_logprobs(THETA)
    assert logs["forget_ce"] == pytest.approx(-sum(lp for lp, _ in rows) / sum(n for _, n in rows), rel=1e-6)


def test_npo_at_the_reference_is_two_over_beta_log_two_and_reference_gets_no_gradient():
    model = tiny_model()
    reference = copy.deepcopy(model).eval()
    batch = unlearning_batch(forget_mask=True)
    loss, _ = NPO(reference=reference, beta=0.1).loss(model, batch)
    assert loss.item() == pytest.approx(2 / 0.1 * math.log(2), rel=1e-6)
    loss.backward()
    assert all(p.grad is None for p in reference.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_npo_retain_term_tokens_and_reference_flops():
    model, batch = tiny_model(), unlearning_batch()
    reference = copy.deepcopy(model).eval()
    without, _ = NPO(reference=reference).loss(model, batch)
    with_retain, logs = NPO(reference=reference, retain_weight=0.5).loss(model, batch)
    retain_ce = hand_ce(model, batch["retain_input_ids"]).item()
    assert with_retain.item() == pytest.approx(without.item() + 0.5 * retain_ce, rel=1e-6)
    assert logs["retain_ce"] == pytest.approx(retain_ce, rel=1e-6)
    assert NPO(reference=reference).tokens(batch) == 36
    assert NPO(reference=reference, retain_weight=0.5).tokens(batch) == 72
    assert NPO(reference=reference).extra_flops(batch) == {"reference": 36 * forward_flops_per_token(model, 12)}


def test_simnpo_matches_its_formula_on_known_average_log_probs():
    beta, gamma = 2.5, 0.4
    loss, _ = SimNPO(beta=beta, gamma=gamma).loss(Unigram(THETA), stub_batch())
    terms = [-(2 / beta) * math.log(1 / (1 + math.exp(beta * logprob / counted + gamma)))
             for logprob, counted in stub_sequence_logprobs(THETA)]
    assert loss.item() == pytest.approx(sum(terms) / len(terms), rel=1e-6)


def test_simnpo_retain_term_and_defaults():
    model, batch = tiny_model(), unlearning_batch()
    assert (SimNPO().beta, SimNPO().gamma, SimNPO().retain_weight) == (2.5, 0.0, 0.0)
    without, _ = SimNPO().loss(model, batch)
    with_retain, _ = SimNPO(retain_weight=2.0).loss(model, batch)
    retain_ce = hand_ce(model, batch["retain_input_ids"]).item()
    assert with_retain.item() == pytest.approx(without.item() + 2.0 * retain_ce, rel=1e-6)
    assert SimNPO().tokens(batch) == 36 and SimNPO(retain_weight=2.0).tokens(batch) == 72


@pytest.mark.parametrize("make", [lambda: GradDiff(retain_weight=-1), lambda: MaxEnt(retain_weight=-1),
                                  lambda: NPO(reference=None, beta=0), lambda: SimNPO(beta=-2.5),
                                  lambda: SimNPO(retain_weight=-1)])
def test_bad_knobs_are_refused(make):
    with pytest.raises(UserError, match="needs"):
        make()


class UnlearningBatches:
    def __getitem__(self, i):
        return {"forget_input_ids": random_ids(10 + i, rows=4, length=16),
                "retain_input_ids": random_ids(100 + i, rows=4, length=16)}


def test_a_few_engine_steps_of_grad_ascent_raise_forget_cross_entropy(tmp_path):
    model, batches = tiny_model(), UnlearningBatches()
    forget = batches[0]["forget_input_ids"]
    with torch.no_grad():
        before = hand_ce(model, forget).item()
    cfg = TrainConfig(batch_size=4, lr=1e-2, warmup_steps=0, schedule="constant", eval_every=100,
                      checkpoint_every=100, log_every=1)
    result = train(model, GradAscent(), batches, cfg, 3, tmp_path, progress=False)
    with torch.no_grad():
        after = hand_ce(model, forget).item()
    assert after > before + 0.1
    logged = [line["forget_ce"] for line in result.history if line["kind"] == "train"]
    assert len(logged) == 3 and logged[0] == pytest.approx(before, rel=1e-5) and logged[-1] > logged[0]
    assert result.tokens == 3 * 4 * 16  # the retain half is not processed
