import pytest
import torch

from undo.core.data import PackedBatches, mixture_schedule, pack
from undo.schema.errors import UserError


def test_pack_concatenates_and_cuts_fixed_rows():
    rows = pack([[1, 2, 3], [4, 5], [6, 7, 8, 9], [10]], context=4)
    assert rows.tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]  # the ragged tail (9, 10) is dropped
    assert rows.dtype == torch.long
    with pytest.raises(UserError, match="fewer than one sequence"):
        pack([[1, 2]], context=4)


def test_mixture_proportions_follow_weights_and_seed():
    weights = {"a": 3.0, "b": 1.0, "zero": 0.0}
    picks = mixture_schedule(weights, 40_000, seed=1)
    share_a = picks.count("a") / len(picks)
    assert abs(share_a - 0.75) < 0.01
    assert "zero" not in picks
    assert picks == mixture_schedule(weights, 40_000, seed=1)
    assert picks != mixture_schedule(weights, 40_000, seed=2)
    with pytest.raises(UserError):
        mixture_schedule({"a": 0.0}, 10, seed=0)


def test_batches_are_indexable_deterministic_and_cover_each_row_once_per_epoch():
    rows = torch.arange(40).reshape(10, 4)
    batches = PackedBatches(rows, batch_size=3, seed=7)
    assert batches.batches_per_epoch == 3
    epoch0 = [batches[i]["input_ids"][:, 0].tolist() for i in range(3)]
    flat = sum(epoch0, [])
    assert len(set(flat)) == 9  # 9 distinct rows, no repeats within an epoch
    epoch1 = [batches[i]["input_ids"][:, 0].tolist() for i in range(3, 6)]
    assert epoch1 != epoch0  # a new permutation each epoch
    fresh = PackedBatches(rows, batch_size=3, seed=7)
    assert fresh[4]["input_ids"].tolist() == batches[4]["input_ids"].tolist()  # random access = resume
    assert PackedBatches(rows, 3, seed=8)[0]["input_ids"].tolist() != batches[0]["input_ids"].tolist()
    with pytest.raises(UserError, match="fewer than one batch"):
        PackedBatches(rows, batch_size=11, seed=0)
