"""Distillation: match a frozen teacher's full next-token distributions (Unlearn-and-Distill, UNDO)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from undo.core.compute import forward_flops_per_token
from undo.schema.errors import UserError
from undo.core.timing import phase
from undo.objectives.base import Objective, register
from undo.core.logits import position_logits, sum_over_chunks


@register("distill")
class ForwardKL(Objective):
    """Forward KL from the teacher to the student on full next-token distributions (Hinton, Vinyals, Dean 2015,
    "Distilling the Knowledge in a Neural Network"; the distillation step of Lee et al. 2025, arXiv 2506.06278):

        p = softmax(z_teacher / T),  q = softmax(z_student / T)
        L = T² · mean over counted positions t of  KL(p_t ‖ q_t) = Σ_v p_tv (log p_tv − log q_tv)

    A position counts when its own input token is real (attention_mask 1; every position when there is no mask):
    the teacher's next-token distribution there is defined whether or not the following token exists, so unlike
    the CE losses the last real position of each row counts too. The batch is {"input_ids", optional
    "attention_mask"} of unlabelled text. The T² factor (Hinton et al.) keeps gradient magnitudes comparable
    across temperatures, since the soft-target gradients scale as 1/T²; at T = 1 (the default, the paper's value)
    it is exactly 1 and L is the plain KL. The logged "kl" is the mean KL at temperature T, without T².

    The teacher (any size, same vocabulary) runs in eval mode under torch.no_grad(): it never trains.
    """

    is_unlearning = False
    needs_reference = False

    def __init__(self, teacher: nn.Module, temperature: float = 1.0):
        temperature = float(temperature)
        if not (math.isfinite(temperature) and temperature > 0):
            raise UserError(f"temperature = {temperature} is out of range: distillation needs a finite "
                            "temperature > 0")
        self.teacher, self.temperature = teacher, temperature
        self.teacher.eval()

    def loss(self, model, batch):
        if model is self.teacher:
            raise UserError("the distillation student is the teacher itself; distil into a copy")
        input_ids, attention_mask = batch["input_ids"], batch.get("attention_mask")
        counted = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        if self.teacher.training:  # someone switched it back; dropout etc. must stay off
            self.teacher.eval()
        with torch.no_grad(), phase("reference_forwards"):
            teacher = position_logits(self.teacher, input_ids, attention_mask, counted, frozen=True)
        student = position_logits(model, input_ids, attention_mask, counted)
        if teacher.vocab != student.vocab:
            raise UserError(f"teacher and student vocabularies differ ({teacher.vocab} vs {student.vocab} logits); "
                            "distillation needs the same tokenizer and vocab")
        if teacher.head is None and student.head is None:
            kl = forward_kl(teacher.logits(), student.logits(), self.temperature)
        else:  # a large vocabulary: chunk by chunk (undo.core.logits)
            kl = sum_over_chunks(lambda start, stop, t, s: forward_kl(t, s, self.temperature, reduction="sum"),
                                 teacher, student) / len(student)
        return self.temperature ** 2 * kl, {"kl": kl.item()}

    def extra_flops(self, batch):
        input_ids = batch["input_ids"]
        return {"teacher": input_ids.numel() * forward_flops_per_token(self.teacher, input_ids.shape[-1])}


def forward_kl(teacher_logits: torch.Tensor, student_logits: torch.Tensor, temperature: float = 1.0,
               reduction: str = "mean") -> torch.Tensor:
    """Mean (or sum) over rows of KL(softmax(teacher/T) ‖ softmax(student/T)); logits are [positions, vocab]."""
    teacher_logp = torch.log_softmax(teacher_logits / temperature, dim=-1)
    student_logp = torch.log_softmax(student_logits / temperature, dim=-1)
    per_position = F.kl_div(student_logp, teacher_logp, reduction="none", log_target=True).sum(dim=-1)
    return per_position.mean() if reduction == "mean" else per_position.sum()
