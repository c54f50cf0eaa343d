import copy

import pytest
import torch
import torch.nn.functional as F

from undo.config import ModelConfig, TrainConfig
from undo.core.data import PackedBatches
from undo.training.engine import train
from undo.schema.errors import UserError
from undo.core.models import build_model
from undo.objectives import OBJECTIVES
from undo.objectives.distill import ForwardKL

SMALL = ModelConfig(layers=1, width=32, heads=2, context=16, vocab=40)
WIDE = ModelConfig(layers=1, width=64, heads=2, context=16, vocab=40)


def model(cfg=SMALL, seed=0):
    return build_model(cfg, seed=seed, pad_id=0, eos_id=2, tokenizer_size=40)


def padded_batch():
    ids = torch.randint(3, 40, (3, 16), generator=torch.Generator().manual_seed(11))
    mask = torch.ones_like(ids)
    mask[1, 10:] = 0  # right padding
    mask[2, 4:] = 0
    return {"input_ids": ids.masked_fill(mask == 0, 0), "attention_mask": mask}


def test_registered_as_distill_and_not_an_unlearning_method():
    assert OBJECTIVES["distill"] is ForwardKL
    assert not ForwardKL.is_unlearning and not ForwardKL.needs_reference


def test_kl_is_zero_for_an_identical_student_and_positive_otherwise():
    teacher, batch = model(), padded_batch()
    objective = ForwardKL(teacher)
    same, _ = objective.loss(copy.deepcopy(teacher), batch)
    assert abs(same.item()) < 1e-6
    other, logs = objective.loss(model(seed=1), batch)
    assert other.item() > 1e-3 and logs["kl"] == other.item()


def test_kl_matches_hand_computation_and_excludes_pads():
    teacher, student, batch = model(), model(seed=1), padded_batch()
    loss, _ = ForwardKL(teacher).loss(student, batch)
    mask = batch["attention_mask"]
    with torch.no_grad():
        t = teacher(**batch).logits
        s = student(**batch).logits
    p, log_p, log_q = t.softmax(-1), t.log_softmax(-1), s.log_softmax(-1)
    per_position = (p * (log_p - log_q)).sum(-1)  # [B, T], explicit sum over the vocabulary
    expected = (per_position * mask).sum() / mask.sum()  # 16 + 10 + 4 = 30 counted positions
    assert mask.sum() == 30
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-5, atol=1e-7)
    kl_div = F.kl_div(log_q[mask.bool()], log_p[mask.bool()], reduction="batchmean", log_target=True)
    torch.testing.assert_close(loss.detach(), kl_div, rtol=1e-5, atol=1e-7)
    # pads excluded: changing the padded tokens' ids changes nothing counted (right padding, causal attention)
    repadded = {**batch, "input_ids": batch["input_ids"].masked_fill(mask == 0, 7)}
    again, _ = ForwardKL(teacher).loss(student, repadded)
    torch.testing.assert_close(again, loss, rtol=1e-6, atol=1e-7)


def test_temperature_scales_logits_and_multiplies_by_t_squared():
    teacher, student, batch = model(), model(seed=1), padded_batch()
    plain, plain_logs = ForwardKL(teacher, temperature=1.0).loss(student, batch)
    assert plain.item() == plain_logs["kl"]  # T = 1: exactly the KL
    hot, hot_logs = ForwardKL(teacher, temperature=2.0).loss(student, batch)
    mask = batch["attention_mask"].bool()
    with torch.no_grad():
        t, s = teacher(**batch).logits[mask] / 2.0, student(**batch).logits[mask] / 2.0
    kl_at_2 = (t.softmax(-1) * (t.log_softmax(-1) - s.log_softmax(-1))).sum(-1).mean()
    assert hot_logs["kl"] == pytest.approx(kl_at_2.item(), rel=1e-5)
    assert hot.item() == pytest.approx(4.0 * kl_at_2.item(), rel=1e-5)
    assert hot_logs["kl"] < plain_logs["kl"]  # softer distributions are closer
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(UserError, match="^temperature = .* out of range"):
            ForwardKL(teacher, temperature=bad)


def test_training_lowers_kl_and_never_touches_the_teacher(tmp_path):
    teacher, student = model(WIDE, seed=0), model(SMALL, seed=1)  # a wider teacher than the student
    teacher.train()
    objective = ForwardKL(teacher)
    assert not teacher.training
    teacher_before = {name: p.detach().clone() for name, p in teacher.named_parameters()}
    rows = torch.randint(3, 40, (32, 16), generator=torch.Generator().manual_seed(5))
    batches = PackedBatches(rows, batch_size=4, seed=0)
    probe = {"input_ids": rows[:8]}

    def kl(m):
        with torch.no_grad():
            return {"kl": objective.loss(m, probe)[0].item()}

    start = kl(student)["kl"]
    cfg = TrainConfig(batch_size=4, lr=1e-2, warmup_steps=0, eval_every=6, checkpoint_every=100, log_every=1)
    result = train(student, objective, batches, cfg, 6, tmp_path, evaluate=kl, progress=False)
    assert result.final_metrics["kl"] < 0.8 * start
    assert all(p.grad is None for p in teacher.parameters())
    assert all(torch.equal(p, teacher_before[name]) for name, p in teacher.named_parameters())
    assert not teacher.training
    assert [line["kl"] > 0 for line in result.history if line["kind"] == "train"] == [True] * 6

    # teacher FLOPs by hand: forward = 2 * N_matmul + 4 * layers * seq * d, per token the teacher read
    d, ff, layers, vocab, seq = 64, 256, 1, 40, 16
    n_matmul = layers * (4 * d * d + 3 * d * ff) + d * vocab
    assert result.tokens == 6 * 4 * 16
    assert result.flops["teacher"] == result.tokens * (2 * n_matmul + 4 * layers * seq * d)
    assert objective.extra_flops({"input_ids": rows[:2]}) == {"teacher": 32 * (2 * n_matmul + 4 * seq * d)}


def test_the_teacher_cannot_be_its_own_student():
    teacher = model()
    with pytest.raises(UserError, match="student is the teacher"):
        ForwardKL(teacher).loss(teacher, padded_batch())
