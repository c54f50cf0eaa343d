import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from undo.settings.cross_entropy import heldout_cross_entropy

PAD = 0


class BigramModel(nn.Module):
    """Logits depend only on the input token: `table[token]` (log-probabilities over the vocabulary)."""

    def __init__(self, probabilities: list[list[float]]):
        super().__init__()
        self.table = nn.Parameter(torch.tensor(probabilities, dtype=torch.float64).log().float())
        self.seen = []

    def forward(self, input_ids, attention_mask=None):
        self.seen.append((self.training, torch.is_grad_enabled(), attention_mask))
        return SimpleNamespace(logits=self.table[input_ids])


def test_uniform_logits_give_ln_vocab():
    model = BigramModel([[1 / 7] * 7] * 7)
    rows = torch.tensor([[3, 4, 5, 6, 1], [0, 0, 2, 3, 4], [1, 2, 0, 0, 0]])
    for batch_size in (1, 2, 32):
        assert heldout_cross_entropy(model, rows, pad_id=PAD, batch_size=batch_size) == pytest.approx(math.log(7))


def test_known_probabilities_token_weighted_and_padding_excluded():
    # P[input] = next-token probabilities over (pad, 1, 2, 3).
    model = BigramModel([[0, 1 / 3, 1 / 3, 1 / 3],
                         [0, 1 / 8, 1 / 2, 3 / 8],
                         [0, 1 / 4, 1 / 4, 1 / 2],
                         [0, 1 / 2, 1 / 4, 1 / 4]])
    rows = torch.tensor([[1, 2, 3, 1, 2],   # packed: 1->2, 2->3, 3->1, 1->2 at 1/2 each: 4 ln 2
                         [0, 0, 0, 1, 3],   # left padded: only 1->3 (3/8) counts, not pad->1
                         [2, 1, 0, 0, 0]])  # right padded: only 2->1 (1/4): 2 ln 2
    expected = (4 * math.log(2) + math.log(8 / 3) + 2 * math.log(2)) / 6
    assert expected == pytest.approx((9 * math.log(2) - math.log(3)) / 6)
    mean_of_batch_means = (math.log(2) + math.log(8 / 3) + 2 * math.log(2)) / 3
    assert abs(expected - mean_of_batch_means) > 0.1  # so batch_size=1 would catch the wrong average
    for batch_size in (1, 2, 3):
        assert heldout_cross_entropy(model, rows, pad_id=PAD, batch_size=batch_size) == pytest.approx(expected)
    # The model saw the padding mask, in eval mode, without gradients.
    training, grad, mask = model.seen[-1]
    assert not training and not grad and mask.tolist() == (rows != PAD).long().tolist()


def test_training_flag_is_restored():
    model = BigramModel([[0.5, 0.5]] * 2)
    rows = torch.tensor([[1, 1, 1]])
    model.train()
    heldout_cross_entropy(model, rows, pad_id=PAD)
    assert model.training and model.seen[-1][0] is False
    model.eval()
    heldout_cross_entropy(model, rows, pad_id=PAD)
    assert not model.training


def test_rows_without_real_targets_are_refused():
    with pytest.raises(ValueError, match="no position"):
        heldout_cross_entropy(BigramModel([[0.5, 0.5]] * 2), torch.tensor([[0, 0, 1]]), pad_id=PAD)


def test_matches_hugging_face_loss_on_packed_rows():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, max_position_embeddings=16, pad_token_id=PAD))
    rows = torch.randint(1, 50, (5, 12))
    with torch.no_grad():
        reference = model(input_ids=rows, labels=rows).loss.item()  # every row has the same number of targets
    assert heldout_cross_entropy(model, rows, pad_id=PAD, batch_size=2) == pytest.approx(reference, rel=1e-5)
