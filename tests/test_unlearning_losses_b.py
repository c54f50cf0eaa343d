"""Unlearning objectives RMU and RepNoise against hand-computed numbers and short engine runs."""

import copy
import json

import pytest
import torch
import torch.nn.functional as F

from undo.core.compute import forward_flops_per_token
from undo.config import ModelConfig, TrainConfig
from undo.training.engine import train
from undo.schema.errors import UserError
from undo.core.models import build_model
from undo.objectives import OBJECTIVES
from undo.objectives.repnoise import RepNoise, mmd2
from undo.objectives.common import block_outputs
from undo.objectives.rmu import RMU

TINY = ModelConfig(layers=3, width=32, heads=2, context=16, vocab=40)
CFG = TrainConfig(batch_size=4, lr=1e-2, schedule="constant", warmup_steps=0, weight_decay=0.0, log_every=1,
                  eval_every=100, checkpoint_every=100)


def tiny_model(seed=0):
    return build_model(TINY, seed=seed, pad_id=0, eos_id=2, tokenizer_size=40)


def random_ids(seed, rows=4, length=16):
    return torch.randint(3, 40, (rows, length), generator=torch.Generator().manual_seed(seed))


def unlearning_batch(seed=1, masked=False):
    batch = {"forget_input_ids": random_ids(seed), "retain_input_ids": random_ids(seed + 100)}
    if masked:  # right padding: the forget rows keep 16, 11, 16 and 6 tokens, the retain rows 16, 16, 9, 16
        batch["forget_attention_mask"] = (torch.arange(16) < torch.tensor([16, 11, 16, 6])[:, None]).long()
        batch["retain_attention_mask"] = (torch.arange(16) < torch.tensor([16, 16, 9, 16])[:, None]).long()
    return batch


class Fixed:
    """Micro-batch i is one of `count` fixed unlearning batches."""

    def __init__(self, count=1):
        self.batches = [unlearning_batch(seed) for seed in range(1, count + 1)]

    def __getitem__(self, i):
        return self.batches[i % len(self.batches)]


def hidden(model, input_ids, attention_mask=None):
    """Residual stream after each block, from HF hidden states (index b + 1 = after block b) for all but the
    last block; the last one's entry is post-final-norm, so a forward hook reads its raw output."""
    raw = {}
    handle = model.model.layers[-1].register_forward_hook(lambda mod, args, out: raw.setdefault("last", out))
    out = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
    handle.remove()
    return [*out.hidden_states[1:-1], raw["last"]], out


def test_both_registered_as_unlearning_methods():
    assert OBJECTIVES["rmu"] is RMU and OBJECTIVES["repnoise"] is RepNoise
    assert RMU.is_unlearning and RepNoise.is_unlearning
    assert RMU.needs_reference and not RepNoise.needs_reference


def test_block_outputs_are_hidden_states_shifted_by_one_and_the_last_is_before_the_final_norm():
    model, ids = tiny_model(), random_ids(1)
    model(input_ids=ids, output_hidden_states=True)  # HF installs its own hooks on first use
    hooks = [len(block._forward_hooks) for block in model.model.layers]
    with torch.no_grad(), block_outputs(model, [0, 1, 2]) as captured:
        out = model(input_ids=ids, output_hidden_states=True)
    assert len(out.hidden_states) == 4  # embeddings, then one per block
    assert torch.equal(captured[0], out.hidden_states[1]) and torch.equal(captured[1], out.hidden_states[2])
    assert not torch.allclose(captured[2], out.hidden_states[3])
    torch.testing.assert_close(model.model.norm(captured[2]), out.hidden_states[3])
    assert [len(block._forward_hooks) for block in model.model.layers] == hooks  # ours are removed


# ---------------------------------------------------------------------------------------------------- RMU


def test_rmu_steering_vector_is_unit_norm_and_fixed_by_the_seed():
    u = RMU(reference=None, seed=5).direction(32)
    assert u.shape == (32,) and torch.linalg.vector_norm(u).item() == pytest.approx(1.0, abs=1e-6)
    assert (u >= 0).all()  # uniform [0, 1) draws, normalised, as in the WMDP code
    assert torch.equal(u, RMU(reference=None, seed=5).direction(32))
    assert not torch.allclose(u, RMU(reference=None, seed=6).direction(32))


@pytest.mark.parametrize("alpha", [0.0, 100.0])
def test_rmu_loss_matches_hand_computation(alpha):
    model, reference = tiny_model(0), tiny_model(1)  # a different reference, so the retain term is not 0
    batch = unlearning_batch(masked=True)
    rmu = RMU(reference=reference, layer=1, steer=3.0, alpha=alpha, seed=4)
    loss, logs = rmu.loss(model, batch)

    u = torch.rand(32, generator=torch.Generator().manual_seed(4))
    target = 3.0 * u / u.norm()
    forget_mask, retain_mask = batch["forget_attention_mask"].bool(), batch["retain_attention_mask"].bool()
    h_forget = hidden(model, batch["forget_input_ids"], batch["forget_attention_mask"])[0][1][forget_mask]
    h_retain = hidden(model, batch["retain_input_ids"], batch["retain_attention_mask"])[0][1][retain_mask]
    h_frozen = hidden(reference, batch["retain_input_ids"], batch["retain_attention_mask"])[0][1][retain_mask]
    forget_mse = F.mse_loss(h_forget, target.expand_as(h_forget))
    retain_mse = F.mse_loss(h_retain, h_frozen)
    assert retain_mse > 1e-4  # the reference differs, so a wrong retain term would show at alpha > 0
    torch.testing.assert_close(loss, forget_mse + alpha * retain_mse)
    assert logs == pytest.approx({"forget_mse": forget_mse.item(), "retain_mse": retain_mse.item()})


def test_rmu_on_the_last_block_uses_its_output_before_the_final_norm():
    model, batch = tiny_model(), unlearning_batch()
    rmu = RMU(reference=copy.deepcopy(model), layer=2, alpha=0.0)
    loss, _ = rmu.loss(model, batch)
    h_last = hidden(model, batch["forget_input_ids"])[0][2]
    torch.testing.assert_close(loss, F.mse_loss(h_last, (6.0 * rmu.direction(32)).expand_as(h_last)))


def test_rmu_trainable_parameters_are_down_projections_of_the_chosen_blocks():
    model = tiny_model()
    down = [block.mlp.down_proj.weight for block in model.model.layers]

    def chosen(**knobs):
        return [id(p) for p in RMU(reference=None, **knobs).trainable_parameters(model)]

    assert chosen() == [id(p) for p in down]  # layer 2: blocks 0, 1, 2
    assert chosen(layer=1) == [id(down[0]), id(down[1])]  # clipped at block 0
    assert chosen(layer=2, trainable_layers=[1]) == [id(down[1])] == chosen(layer=2, trainable_layers=1)


def test_rmu_engine_steps_change_only_the_chosen_weights_and_pull_forget_activations_to_the_target(tmp_path):
    model = tiny_model()
    reference = copy.deepcopy(model).eval().requires_grad_(False)
    rmu = RMU(reference=reference, layer=2, steer=1.0, alpha=1.0, trainable_layers=[0, 2], seed=1)
    batches = Fixed()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    with torch.no_grad():
        mse_before = rmu.loss(model, batches[0])[1]["forget_mse"]
    train(model, rmu, batches, CFG, 5, tmp_path, progress=False)
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert changed == {"model.layers.0.mlp.down_proj.weight", "model.layers.2.mlp.down_proj.weight"}
    assert all(torch.equal(p, before[name]) for name, p in reference.named_parameters())
    with torch.no_grad():
        mse_after = rmu.loss(model, batches[0])[1]["forget_mse"]
    assert mse_after < 0.9 * mse_before


def test_rmu_counts_the_reference_forward_as_extra_flops():
    reference = tiny_model()
    batch = unlearning_batch()
    flops = RMU(reference=reference).extra_flops(batch)
    assert flops == {"reference": 4 * 16 * forward_flops_per_token(reference, 16)}


@pytest.mark.parametrize("knobs, message", [
    ({"layer": -1}, "rmu layer must be >= 0"),
    ({"layer": 1, "trainable_layers": [2]}, "trainable_layers"),
    ({"layer": 1, "trainable_layers": []}, "trainable_layers"),
    ({"steer": 0.0}, "steer"),
    ({"alpha": -1.0}, "alpha"),
])
def test_rmu_rejects_bad_knobs(knobs, message):
    with pytest.raises(UserError, match=message):
        RMU(reference=None, **knobs)


def test_rmu_rejects_a_layer_the_model_lacks():
    with pytest.raises(UserError, match=r"rmu layer = 3 is out of range: the model has 3 blocks"):
        RMU(reference=None, layer=3).trainable_parameters(tiny_model())


# ---------------------------------------------------------------------------------------------------- RepNoise


def test_mmd_is_zero_for_identical_samples_small_for_one_distribution_large_for_shifted_ones():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(200, 8, generator=g), torch.randn(200, 8, generator=g)
    assert mmd2(x, x).item() == 0.0  # the biased V-statistic of identical samples
    assert 0 <= mmd2(x, y).item() < 0.03
    assert mmd2(x, y + 1.0).item() > 0.15
    assert mmd2(x, y + 1.0).item() > mmd2(x, y + 0.5).item() > mmd2(x, y).item()
    assert 0 <= mmd2(x, y, bandwidth=2.0).item() < 0.03 < 0.15 < mmd2(x, y + 1.0, bandwidth=2.0).item()


def test_mmd_with_fixed_bandwidth_matches_the_formula():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(5, 3, generator=g), torch.randn(7, 3, generator=g) + 0.3
    k = lambda a, b: torch.exp(-((a[:, None] - b[None]) ** 2).sum(-1) / (2 * 1.5**2)).mean()  # noqa: E731
    torch.testing.assert_close(mmd2(x, y, bandwidth=1.5), k(x, x) + k(y, y) - 2 * k(x, y))


def hand_mmd(x, y):
    """Biased MMD^2, Gaussian kernel with 2 sigma^2 = median squared distance over distinct pooled pairs."""
    z = torch.cat([x, y])
    d = ((z[:, None] - z[None]) ** 2).sum(-1)
    scale = d[torch.triu(torch.ones_like(d, dtype=torch.bool), diagonal=1)].median()
    k = torch.exp(-d / scale)
    n = len(x)
    return k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean()


def test_repnoise_loss_matches_hand_computation():
    model, batch = tiny_model(), unlearning_batch(masked=True)
    repnoise = RepNoise(alpha=0.5, beta=0.3, max_tokens=20, seed=3)
    loss, logs = repnoise.loss(model, batch)

    def hf_ce(side):
        ids, mask = batch[f"{side}_input_ids"], batch[f"{side}_attention_mask"]
        return model(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100)).loss

    forget_ids, forget_mask = batch["forget_input_ids"], batch["forget_attention_mask"].bool()
    states, _ = hidden(model, forget_ids, batch["forget_attention_mask"])
    generator = repnoise.generator(forget_ids)
    keep = torch.randperm(int(forget_mask.sum()), generator=generator)[:20]
    mmds = []
    for h in states:
        x = h[forget_mask][keep]
        mmds.append(hand_mmd(x, torch.randn(x.shape, generator=generator)))
    mmd = sum(mmds) / 3
    expected = hf_ce("retain") - 0.5 * hf_ce("forget") + 0.3 * mmd
    torch.testing.assert_close(loss, expected)
    assert logs == pytest.approx({"retain_ce": hf_ce("retain").item(), "forget_ce": hf_ce("forget").item(),
                                  "mmd": mmd.item()})


def test_repnoise_noise_is_reproducible_and_depends_on_seed_and_batch():
    model = tiny_model()
    first, second = unlearning_batch(1), unlearning_batch(2)

    def mmd(seed, batch):
        with torch.no_grad():
            return RepNoise(seed=seed, max_tokens=16).loss(model, batch)[1]["mmd"]

    def draw(seed, batch):
        return torch.randn(4, generator=RepNoise(seed=seed).generator(batch["forget_input_ids"]))

    assert mmd(0, first) == mmd(0, first) and mmd(0, first) != mmd(1, first)
    assert torch.equal(draw(0, first), draw(0, first)) and not torch.equal(draw(0, first), draw(0, second))


def test_repnoise_engine_steps_lower_the_mmd_term(tmp_path):
    model, repnoise = tiny_model(), RepNoise(beta=10.0, seed=2)
    batches = Fixed()
    with torch.no_grad():
        before = repnoise.loss(model, batches[0])[1]
    train(model, repnoise, batches, CFG, 8, tmp_path, progress=False)
    with torch.no_grad():
        after = repnoise.loss(model, batches[0])[1]
    assert after["mmd"] < 0.8 * before["mmd"]
    assert after["forget_ce"] > before["forget_ce"]


def test_repnoise_resumed_run_matches_an_uninterrupted_one(tmp_path):
    class Interrupted(Exception):
        pass

    class CrashAt(Fixed):
        def __getitem__(self, i):
            if i == 4:
                raise Interrupted
            return super().__getitem__(i)

    cfg = CFG.model_copy(update={"checkpoint_every": 3})

    def run(workdir, batches):
        model = tiny_model()
        result = train(model, RepNoise(seed=2), batches, cfg, 6, workdir, progress=False, run_key="k")
        return model, [{k: v for k, v in line.items() if k != "tokens_per_s"} for line in result.history]

    full_model, full = run(tmp_path / "full", Fixed(3))
    with pytest.raises(Interrupted):
        run(tmp_path / "cut", CrashAt(3))
    assert json.loads((tmp_path / "cut" / "checkpoint" / "state.json").read_text())["step"] == 3
    resumed_model, resumed = run(tmp_path / "cut", Fixed(3))
    assert resumed == full
    assert all(torch.equal(a, b) for a, b in zip(full_model.parameters(), resumed_model.parameters()))


def test_repnoise_rejects_bad_knobs_and_missing_blocks():
    for knobs, message in [({"alpha": -1.0}, "alpha"), ({"layers": []}, "layers"), ({"max_tokens": 1}, "max_tokens"),
                           ({"bandwidth": 0.0}, "bandwidth")]:
        with pytest.raises(UserError, match=message):
            RepNoise(**knobs)
    with pytest.raises(UserError, match=r"repnoise layers = 5 is out of range"):
        RepNoise(layers=[0, 5]).loss(tiny_model(), unlearning_batch())


def test_repnoise_layers_knob_selects_blocks():
    model, batch = tiny_model(), unlearning_batch()
    states, _ = hidden(model, batch["forget_input_ids"])
    repnoise = RepNoise(layers=1, max_tokens=64)
    _, logs = repnoise.loss(model, batch)
    generator = repnoise.generator(batch["forget_input_ids"])
    x = states[1].reshape(-1, 32)[torch.randperm(64, generator=generator)]
    assert logs["mmd"] == pytest.approx(hand_mmd(x, torch.randn(x.shape, generator=generator)).item(), rel=1e-5)
