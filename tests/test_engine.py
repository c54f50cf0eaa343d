import json
import math

import pytest
import torch

from undo.core.compute import forward_flops_per_token, matmul_parameters, train_flops_per_token
from undo.config import ModelConfig, TrainConfig
from undo.core.data import PackedBatches
from undo.training.engine import lr_at, make_optimizer, read_metrics, train
from undo.schema.errors import TrainingDiverged, UserError
from undo.core.models import build_model
from undo.objectives import OBJECTIVES, Objective

TINY = ModelConfig(layers=1, width=32, heads=2, context=16, vocab=40)


def tiny_model(seed=0):
    return build_model(TINY, seed=seed, pad_id=0, eos_id=2, tokenizer_size=40)


def tiny_batches(batch_size=4, seed=0):
    rows = torch.randint(3, 40, (64, 16), generator=torch.Generator().manual_seed(123))
    return PackedBatches(rows, batch_size=batch_size, seed=seed)


def held_out_loss(model):
    ids = torch.randint(3, 40, (4, 16), generator=torch.Generator().manual_seed(99))
    with torch.no_grad():
        return {"heldout_loss": model(input_ids=ids, labels=ids).loss.item()}


CFG = TrainConfig(batch_size=4, lr=1e-2, warmup_steps=2, eval_every=4, checkpoint_every=3, log_every=1)


def comparable(history):
    """Log lines without wall-clock fields (everything else must match exactly)."""
    return [{k: v for k, v in line.items() if k != "tokens_per_s"} for line in history]


def run(workdir, batches=None, cfg=CFG, steps=10, **kwargs):
    model = tiny_model()
    result = train(model, OBJECTIVES["lm"](), batches or tiny_batches(), cfg, steps, workdir,
                   evaluate=held_out_loss, progress=False, run_key="k", **kwargs)
    return model, result


class Interrupted(Exception):
    pass


class CrashAt:
    """Batches that raise (like a kill) when micro-batch `index` is requested."""

    def __init__(self, inner, index):
        self.inner, self.index = inner, index

    def __getitem__(self, i):
        if i == self.index:
            raise Interrupted
        return self.inner[i]


def test_same_seed_same_metrics_and_weights(tmp_path):
    model_a, result_a = run(tmp_path / "a")
    model_b, result_b = run(tmp_path / "b")
    assert comparable(result_a.history) == comparable(result_b.history)
    for pa, pb in zip(model_a.parameters(), model_b.parameters()):
        assert torch.equal(pa, pb)
    assert result_a.steps == 10 and result_a.tokens == 10 * 4 * 16
    assert [e["step"] for e in result_a.history if e["kind"] == "eval"] == [4, 8, 10]


def test_multi_tensor_adamw_gives_the_per_tensor_update_bit_for_bit(tmp_path, monkeypatch):
    """The engine asks for AdamW's multi-tensor (foreach) update for speed: it must train to the very weights the
    per-tensor update (torch's CPU default, what every earlier artifact was trained with) gives."""
    model_fast, _ = run(tmp_path / "foreach")
    per_tensor = torch.optim.AdamW

    def without_foreach(*args, **kwargs):
        assert kwargs.pop("foreach") is True  # the engine really asked for it
        return per_tensor(*args, foreach=False, **kwargs)

    monkeypatch.setattr(torch.optim, "AdamW", without_foreach)
    model_slow, _ = run(tmp_path / "per_tensor")
    for fast, slow in zip(model_fast.parameters(), model_slow.parameters()):
        assert torch.equal(fast, slow)
    assert not torch.equal(next(model_fast.parameters()), next(tiny_model().parameters()))  # it trained


def test_training_forwards_build_no_cache_and_train_to_the_same_weights(tmp_path, monkeypatch):
    """Objectives run the model with use_cache=False (nothing decodes after a training forward; 1-2 % of a 4x64
    model's step, benchmarks/step_costs.py): the weights must be those the default forward (with its cache) trains
    to."""
    from undo.objectives.common import forward

    ids = torch.randint(3, 40, (2, 16), generator=torch.Generator().manual_seed(5))
    assert forward(tiny_model(), ids).past_key_values is None
    assert tiny_model()(input_ids=ids).past_key_values is not None  # what it saves
    model_fast, _ = run(tmp_path / "no_cache")
    original, switched = torch.nn.Module.__call__, []

    def with_cache(module, *args, **kwargs):
        if kwargs.get("use_cache") is False:
            kwargs["use_cache"] = True
            switched.append(module)
        return original(module, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "__call__", with_cache)
    model_cached, _ = run(tmp_path / "cache")
    assert len(switched) >= 10  # every training step's forward really ran with a cache
    for fast, cached in zip(model_fast.parameters(), model_cached.parameters()):
        assert torch.equal(fast, cached)


def test_resume_after_interruption_gives_identical_metrics(tmp_path):
    model_full, full = run(tmp_path / "full")
    with pytest.raises(Interrupted):
        run(tmp_path / "cut", batches=CrashAt(tiny_batches(), 7))  # dies in step 8; last checkpoint: step 6
    assert json.loads((tmp_path / "cut" / "checkpoint" / "state.json").read_text())["step"] == 6
    model_resumed, resumed = run(tmp_path / "cut")
    assert resumed.resumed_from == 6
    assert comparable(resumed.history) == comparable(full.history)
    assert resumed.tokens == full.tokens and resumed.flops == full.flops
    for pa, pb in zip(model_full.parameters(), model_resumed.parameters()):
        assert torch.equal(pa, pb)


def test_checkpoint_of_another_run_is_refused(tmp_path):
    with pytest.raises(Interrupted):
        run(tmp_path, batches=CrashAt(tiny_batches(), 5))
    with pytest.raises(UserError, match="belongs to another run"):
        train(tiny_model(), OBJECTIVES["lm"](), tiny_batches(), CFG, 10, tmp_path, progress=False, run_key="other")


class ExplodesAt(Objective):
    def __init__(self, step):
        self.step, self.calls = step, 0

    def loss(self, model, batch):
        self.calls += 1
        loss, logs = OBJECTIVES["lm"]().loss(model, batch)
        return (loss * math.nan if self.calls > self.step else loss), logs


def test_nan_loss_stops_with_clear_error_and_keeps_last_good_checkpoint(tmp_path):
    with pytest.raises(TrainingDiverged, match=r"loss became nan at step 8; the last good checkpoint \(step 6\)"):
        train(tiny_model(), ExplodesAt(7), tiny_batches(), CFG, 10, tmp_path, progress=False, run_key="k")
    state = json.loads((tmp_path / "checkpoint" / "state.json").read_text())
    assert state["step"] == 6
    assert all(math.isfinite(line.get("loss", 0.0)) for line in read_metrics(tmp_path / "metrics.jsonl"))


def test_gradient_accumulation_matches_the_big_batch(tmp_path):
    cfg_big = CFG.model_copy(update={"batch_size": 8, "grad_accum": 1})
    cfg_acc = CFG.model_copy(update={"batch_size": 4, "grad_accum": 2})
    rows = torch.randint(3, 40, (8, 16), generator=torch.Generator().manual_seed(5))

    class Fixed:  # micro-batches 2i and 2i+1 together are exactly the big batch i
        def __init__(self, size):
            self.size = size

        def __getitem__(self, i):
            j = i % (8 // self.size)
            return {"input_ids": rows[j * self.size:(j + 1) * self.size]}

    big, _ = run(tmp_path / "big", batches=Fixed(8), cfg=cfg_big, steps=3)
    acc, _ = run(tmp_path / "acc", batches=Fixed(4), cfg=cfg_acc, steps=3)
    for pa, pb in zip(big.parameters(), acc.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-4, atol=1e-5)


def test_stop_rule_stops_at_first_qualifying_eval(tmp_path):
    _, result = run(tmp_path, stop_rule=lambda step, metrics: step >= 8)
    assert result.stopped_early and result.steps == 8


def test_learning_rate_schedules():
    cfg = TrainConfig(lr=1.0, warmup_steps=4, min_lr_ratio=0.1)
    assert lr_at(0, cfg, 100) == pytest.approx(0.25)
    assert lr_at(3, cfg, 100) == pytest.approx(1.0)
    assert lr_at(4, cfg, 100) == pytest.approx(1.0)
    assert lr_at(52, cfg, 100) == pytest.approx(0.55)  # half way through the cosine
    assert lr_at(100, cfg, 100) == pytest.approx(0.1)
    constant = cfg.model_copy(update={"schedule": "constant"})
    assert lr_at(50, constant, 100) == 1.0


def test_gradients_are_clipped_before_the_optimizer_step(tmp_path, monkeypatch):
    import undo.training.engine

    seen = []

    def recording_optimizer(params, cfg):
        optimizer = make_optimizer(params, cfg)
        optimizer.register_step_pre_hook(lambda opt, args, kwargs: seen.append(total_grad_norm(opt)))
        return optimizer

    monkeypatch.setattr(undo.training.engine, "make_optimizer", recording_optimizer)
    _, result = run(tmp_path, cfg=CFG.model_copy(update={"clip": 0.05}), steps=3)
    logged = [line["grad_norm"] for line in result.history if line["kind"] == "train"]
    assert all(norm > 0.05 for norm in logged)  # the log keeps the norm before clipping...
    assert seen == pytest.approx([0.05] * 3, rel=1e-4)  # ...and the optimizer steps with the clipped gradient


def total_grad_norm(optimizer):
    grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])).item()


def test_only_objective_parameters_train(tmp_path):
    class HeadOnly(OBJECTIVES["lm"]):
        def trainable_parameters(self, model):
            return [model.lm_head.weight]

    model = tiny_model()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    train(model, HeadOnly(), tiny_batches(), CFG, 3, tmp_path, progress=False)
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert changed == {"lm_head.weight"}
    assert all(p.grad is None for name, p in model.named_parameters() if name != "lm_head.weight")
    assert all(p.requires_grad for p in model.parameters())  # frozen only while training


def test_flop_formula_matches_hand_computation():
    model = tiny_model()
    d, ff, layers, vocab, seq = 32, 128, 1, 40, 16
    per_layer = 4 * d * d + 3 * d * ff  # q, k, v, o projections; gate, up, down
    n_matmul = layers * per_layer + d * vocab  # + LM head; the embedding lookup costs nothing
    assert matmul_parameters(model) == n_matmul
    assert forward_flops_per_token(model, seq) == 2 * n_matmul + 4 * layers * seq * d
    assert train_flops_per_token(model, seq) == 3 * (2 * n_matmul + 4 * layers * seq * d)


def test_logged_flops_are_tokens_times_per_token_cost(tmp_path):
    model, result = run(tmp_path, steps=5)
    assert result.flops == {"train": result.tokens * train_flops_per_token(model, 16)}


def test_compiled_training_matches_eager_to_float_rounding(tmp_path, monkeypatch):
    """`compile`: the objective's forwards and backward run through torch.compile; fused kernels round differently,
    so the weights match eager training closely, not bit for bit. Evaluation reads the plain module."""
    compiled_modules, evaluated = [], []
    original = torch.compile

    def recording_compile(module, **kwargs):
        compiled_modules.append(module)
        return original(module, **kwargs)

    def evaluate(model):
        evaluated.append(type(model).__name__)
        return held_out_loss(model)

    monkeypatch.setattr(torch, "compile", recording_compile)
    model_eager, eager = run(tmp_path / "eager")
    model_compiled = tiny_model()
    compiled = train(model_compiled, OBJECTIVES["lm"](), tiny_batches(), CFG.model_copy(update={"compile": True}),
                     10, tmp_path / "compiled", evaluate=evaluate, progress=False, run_key="k")
    assert compiled_modules == [model_compiled]  # the eager run compiled nothing
    assert evaluated == ["LlamaForCausalLM"] * 3  # steps 4, 8, 10: the plain module, not the compiled wrapper
    losses = [(a["loss"], b["loss"]) for a, b in zip(eager.history, compiled.history) if a["kind"] == "train"]
    assert len(losses) == 10 and all(abs(a - b) <= 1e-4 * abs(a) for a, b in losses)
    initial = tiny_model()
    for eager_w, compiled_w in zip(model_eager.parameters(), model_compiled.parameters()):
        assert torch.allclose(eager_w, compiled_w, rtol=1e-4, atol=1e-5)
    assert not all(torch.equal(w, s) for w, s in zip(model_compiled.parameters(), initial.parameters()))


def test_a_compile_failure_is_one_line_naming_the_switch(tmp_path, monkeypatch):
    """Where torch.compile cannot build kernels (e.g. no C++ compiler), the run stops with a UserError that says
    how to train without it, not a compiler traceback."""
    original = torch.compile

    def failing_backend(graph, example_inputs):
        raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(torch, "compile", lambda module, **kwargs: original(module, backend=failing_backend))
    with pytest.raises(UserError, match=r"torch.compile failed .*set attack.compile: false"):
        train(tiny_model(), OBJECTIVES["lm"](), tiny_batches(), CFG.model_copy(update={"compile": True}), 2,
              tmp_path, progress=False, run_key="k", description="attack", config_keys="attack.lrs")
