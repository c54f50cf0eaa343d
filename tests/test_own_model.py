"""Your own model: tiny random-weight checkpoints of five real architectures, built from their configs here and saved
to a temporary folder, go through every stage: loading as the base model, every unlearning method (SAM included),
distillation into random, noised and model students, and the attack. Plus shrink-and-perturb and FLOP counting on
each, the project's own base loaded back through `model.pretrained`, and one clean line for each bad input."""

import json
import math
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from transformers import GemmaConfig, Gemma2Config, GPT2Config, GPTNeoXConfig, LlamaConfig, Qwen2Config

from tests.conftest import TINY
from undo.config import validate_config
from undo.core.compute import analytic_forward_flops_per_token, forward_flops_per_token, matmul_parameters
from undo.core.data import derive_seed
from undo.core.models import fresh_model, load_model, save_model
from undo.core.noise import shrink_and_perturb
from undo.objectives.rmu import MLP_OUTPUT
from undo.settings.tokenizer import build_char_tokenizer
from undo.schema.results import AttackResult
from undo.stages.attack import attack
from undo.schema.io import read_result
from undo.stages.distill import distill
from undo.stages.evaluation import ensure_evaluation
from undo.stages.pretrain import pretrain
from undo.stages.unlearn import sweep_points, unlearn

SPECIAL = {"pad_token_id": 0, "bos_token_id": 2, "eos_token_id": 2}
SMALL = {"vocab_size": 100, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
         "num_attention_heads": 2, "max_position_embeddings": 64, **SPECIAL}
ARCHITECTURES = {
    "llama": lambda: LlamaConfig(**SMALL, num_key_value_heads=1),
    "qwen2": lambda: Qwen2Config(**SMALL, num_key_value_heads=1),
    "gemma2": lambda: Gemma2Config(**SMALL, num_key_value_heads=1, head_dim=16),
    "gpt2": lambda: GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=2, n_positions=64, **SPECIAL),
    "gpt_neox": lambda: GPTNeoXConfig(**SMALL),
}


def checkpoint(folder: Path, architecture: str, config=None) -> Path:
    """A random-weight checkpoint of `architecture` with the arithmetic setting's tokenizer saved beside it."""
    model = fresh_model(config or ARCHITECTURES[architecture](), seed=0)
    save_model(model, folder, build_char_tokenizer())
    return folder


METHODS = [
    {"method": "grad_ascent", "lrs": [1e-3]},
    {"method": "grad_diff", "lrs": [1e-3]},
    {"method": "grad_diff", "lrs": [1e-3], "sam_rho": 0.05},
    {"method": "maxent", "lrs": [1e-3]},
    {"method": "rmu", "lrs": [1e-2], "knobs": {"layer": 1, "steer": 2.0, "trainable_layers": [[0, 1]]}},
    {"method": "npo", "lrs": [1e-3], "knobs": {"retain_weight": 1.0}},
    {"method": "simnpo", "lrs": [1e-3]},
    {"method": "repnoise", "lrs": [1e-3]},
]


def own_model_config(run_dir: Path, source: Path, **model) -> dict:
    return {
        "seed": 0, "run_dir": str(run_dir),
        "setting": {"examples": 600, "eval_per_cell": 3, "eval_batch_size": 64, "word_problem_weight": 0.0},
        "model": {"pretrained": str(source), "context": 32, **model},
        "unlearn": {"steps": 2, "batch_size": 4, "eval_every": 2, "examples": 100, "methods": METHODS},
        "distill": {"examples": 100, "alphas": [0.5], "stop_tolerance": None,  # no stop rule: trains its 2 steps
                    "train": {"batch_size": 4, "max_steps": 2, "eval_every": 2, "warmup_steps": 1}},
        "attack": {"steps": 2, "eval_every": 2, "budgets": [2], "lrs": [1e-3], "eval_per_cell": 2, "examples": 100,
                   "batch_size": 4},
    }


def weights(folder: Path) -> dict[str, torch.Tensor]:
    """An artifact's weights by their names in the model (a file may store some under older names)."""
    return {k: v for k, v in load_model(folder / "model").state_dict().items()}


def changed(a: dict, b: dict) -> set[str]:
    return {name for name in a if not torch.equal(a[name], b[name])}


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_every_stage_runs_on_the_architecture_and_changes_what_it_should(tmp_path, architecture):
    source = checkpoint(tmp_path / "mine", architecture)
    cfg = validate_config(own_model_config(tmp_path / "runs", source))
    base = pretrain(cfg, "base", progress=False)
    assert json.loads((base / "meta.json").read_text())["source"] == str(source)
    assert changed(weights(base), load_model(source).state_dict()) == set()  # loaded, not trained
    base_weights = weights(base)

    for point in sweep_points(cfg):
        after = weights(unlearn(cfg, point, base, progress=False))
        moved = changed(after, base_weights)
        if point.method == "rmu":  # only the MLP output projections of blocks 0 and 1
            expected = {name for name in after if re.search(MLP_OUTPUT[architecture].replace("{i}", "[01]"), name)}
            assert moved == expected and len(expected) == 2, point.description
        else:
            assert moved, point.description
    teacher = unlearn(cfg, sweep_points(cfg)[1], base, progress=False)  # grad_diff
    teacher_weights = weights(teacher)

    student = weights(distill(cfg, teacher, init="random", progress=False))
    fresh = fresh_model(load_model(base / "model").config, seed=0).state_dict()
    assert changed(student, {k: fresh[k] for k in student}) == set(student)  # trained away from its fresh init
    noised = shrink_and_perturb(load_model(teacher / "model"), 0.5, cfg.distill.beta, seed=derive_seed(0, "noise"))
    student = weights(distill(cfg, teacher, init="noised", alpha=0.5, progress=False))
    assert changed(student, {k: v for k, v in noised.state_dict().items() if k in student})
    assert changed(student, teacher_weights)
    student = weights(distill(cfg, teacher, init="model", start=base, progress=False))
    assert changed(student, base_weights)

    result = read_result(attack(cfg, teacher, progress=False), AttackResult)
    assert [run.steps for run in result.per_lr] == [2] and result.flops_total > 0 and len(result.best.values) == 2
    assert math.isfinite(result.best.values[-1])


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_shrink_and_perturb_on_the_architecture(architecture):
    model = fresh_model(ARCHITECTURES[architecture](), seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    shrink_and_perturb(model, alpha=0.0, beta=0.1, seed=0)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # alpha 0: the identity

    shrink_and_perturb(model, alpha=1.0, beta=0.0, seed=0)
    x = torch.randn(2, 5, 32)
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if isinstance(weight, torch.nn.Parameter) and weight.ndim == 1:  # every norm now leaves x-hat unscaled
            expected = (x - x.mean(-1, keepdim=True)) if "LayerNorm" in type(module).__name__ else x
            out = module(x)
            scale = expected.pow(2).mean(-1, keepdim=True).sqrt()
            torch.testing.assert_close(out, expected / scale, atol=1e-3, rtol=1e-3, msg=name)
    for name, p in model.named_parameters():
        if p.ndim >= 2:
            assert torch.equal(p, torch.zeros_like(p)), name


def test_tied_weights_are_noised_once():
    model = fresh_model(ARCHITECTURES["gpt2"](), seed=0)
    assert model.lm_head.weight is model.transformer.wte.weight
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    shrink_and_perturb(model, alpha=0.5, beta=1.0, seed=3)
    generator = torch.Generator().manual_seed(3)
    for name, theta in before.items():  # one draw per parameter, in named_parameters order (the tie listed once)
        if theta.ndim >= 2:
            noise = torch.nn.init.xavier_uniform_(torch.empty(theta.shape), generator=generator)
            if name == "transformer.wte.weight":
                torch.testing.assert_close(model.lm_head.weight, 0.5 * theta + 0.5 * noise)
    assert model.lm_head.weight is model.transformer.wte.weight


def test_gemma_norms_shrink_toward_zero():
    """Gemma's RMSNorm multiplies by (1 + w): its identity gain is w = 0, found by probing the module."""
    model = fresh_model(GemmaConfig(**SMALL, num_key_value_heads=1, head_dim=16), seed=0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.fill_(0.8)
    shrink_and_perturb(model, alpha=0.25, beta=0.0, seed=0)
    gains = [p for p in model.parameters() if p.ndim == 1]
    assert gains and all(torch.allclose(p, torch.full_like(p, 0.6)) for p in gains)


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_flops_are_counted_on_every_architecture(architecture):
    model = fresh_model(ARCHITECTURES[architecture](), seed=0)
    counted = forward_flops_per_token(model, 32)
    assert counted >= 2 * matmul_parameters(model) > 2 * 100 * 32  # more than the LM head: every matmul is seen
    if architecture == "llama":
        assert abs(counted - analytic_forward_flops_per_token(model, 32)) <= 0.02 * counted


def test_the_projects_own_base_loaded_back_gives_the_same_metrics(tmp_path):
    cfg = validate_config({**TINY, "run_dir": str(tmp_path / "runs")})
    base = pretrain(cfg, "base", progress=False)
    mine = validate_config({**TINY, "run_dir": str(tmp_path / "again"),
                            "model": {"pretrained": str(base / "model"), "context": TINY["model"]["context"]}})
    loaded = pretrain(mine, "base", progress=False)
    assert ensure_evaluation(loaded, mine) == ensure_evaluation(base, cfg)
    assert changed(weights(loaded), weights(base)) == set()
    assert not (tmp_path / "again" / "oracle").exists() and mine.oracle_source is None  # no anchor invented


def test_a_bfloat16_checkpoint_trains_in_bfloat16(tmp_path):
    source = checkpoint(tmp_path / "mine", "qwen2")
    cfg = validate_config(own_model_config(tmp_path / "runs", source, dtype="bfloat16"))
    base = pretrain(cfg, "base", progress=False)
    assert {t.dtype for t in weights(base).values()} == {torch.bfloat16}
    after = weights(unlearn(cfg, sweep_points(cfg)[1], base, progress=False))
    assert {t.dtype for t in after.values()} == {torch.bfloat16} and changed(after, weights(base))


def test_gradient_checkpointing_changes_memory_not_numbers(tmp_path, monkeypatch):
    import undo.stages.unlearn as unlearn_stage

    source = checkpoint(tmp_path / "mine", "llama")
    recomputing = []
    real_train = unlearn_stage.train
    monkeypatch.setattr(unlearn_stage, "train", lambda model, *a, **k: recomputing.append(
        model.is_activation_checkpointing) or real_train(model, *a, **k))
    runs = []
    for flag in (False, True):
        cfg = validate_config(own_model_config(tmp_path / f"runs_{flag}", source, gradient_checkpointing=flag))
        base = pretrain(cfg, "base", progress=False)
        runs.append(weights(unlearn(cfg, sweep_points(cfg)[1], base, progress=False)))
    assert recomputing == [False, True]
    assert all(torch.allclose(runs[0][k], runs[1][k], atol=1e-6) for k in runs[0])


def cli(tmp_path, capsys, *args, config=None) -> SimpleNamespace:
    """`undo ARGS` in this process (the console script's own exit path: tests/test_config.py): its exit code and
    what it wrote to stderr."""
    from undo.cli import main

    command = [*args, *(["--no-progress"] if args[0] != "config" else [])]
    if config is not None:
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        command.insert(1, str(path))
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(command)
    return SimpleNamespace(returncode=exit_.value.code or 0, stderr=capsys.readouterr().err)


def one_line_exit_2(result, fragment):
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and fragment in lines[0] and "Traceback" not in result.stderr, result.stderr


def test_bad_own_model_inputs_end_with_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "not_a_checkpoint").mkdir()
    (tmp_path / "not_a_checkpoint" / "weights.txt").write_text("hello")
    raw = own_model_config(tmp_path / "runs", tmp_path / "not_a_checkpoint")
    one_line_exit_2(cli(tmp_path, capsys, "pretrain", config=raw),
                    "is not a Hugging Face checkpoint folder (no config.json)")

    narrow = checkpoint(tmp_path / "narrow", "llama", LlamaConfig(**{**SMALL, "vocab_size": 50}))
    raw = own_model_config(tmp_path / "runs", narrow)
    one_line_exit_2(cli(tmp_path, capsys, "pretrain", config=raw),
                    "the tokenizer has 98 tokens but the model has 50 embedding rows")

    source = checkpoint(tmp_path / "mine", "gpt2")
    raw = own_model_config(tmp_path / "runs", source)
    raw["unlearn"]["methods"] = [{"method": "rmu", "lrs": [1e-3], "knobs": {"layer": 5}}]
    one_line_exit_2(cli(tmp_path, capsys, "config", config=raw), "rmu layer 5 is out of range for a 2-block model")

    raw["unlearn"]["methods"] = [{"method": "rmu", "lrs": [1e-3], "knobs": {"layer": 1, "trainable_regex": "nowhere"}}]
    assert cli(tmp_path, capsys, "pretrain", config=raw).returncode == 0
    one_line_exit_2(cli(tmp_path, capsys, "unlearn", config=raw), "rmu trainable_regex 'nowhere' selects no parameter")


def pad_less_bpe(texts: list[str], vocab_size: int):
    """A byte-level BPE with an end-of-text token and no pad token (as GPT-2's tokenizer)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                        show_progress=False))
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|endoftext|>", bos_token="<|endoftext|>")


@pytest.mark.slow
def test_the_language_setting_on_a_checkpoints_own_tokenizer(tmp_path):
    from tests.test_language import language_config
    from undo.core.models import load_model as load
    from undo.settings.corpora import read_documents
    from undo.settings.cross_entropy import heldout_cross_entropy
    from undo.stages.evaluation import setting_for
    from undo.api import run_study

    raw = language_config(tmp_path)
    corpora = {side: read_documents(raw["setting"][f"{side}_corpus"]) for side in ("retain", "forget")}
    tokenizer = pad_less_bpe(corpora["retain"] + corpora["forget"], 300)
    assert tokenizer.pad_token_id is None
    gpt2 = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=64,
                      bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)
    source = tmp_path / "gpt2"
    save_model(fresh_model(gpt2, seed=0), source, tokenizer)
    raw["model"] = {"pretrained": str(source), "context": 32}
    raw["setting"].pop("vocab_size")
    raw["study"]["oracle_matching"] = False
    cfg = validate_config(raw)
    setting = setting_for(cfg)

    # Each corpus was tokenized once, with the checkpoint's tokenizer, into a store that is read, not rebuilt.
    stores = sorted((tmp_path / "runs" / "cache" / "tokens").glob("tokens_*"))
    assert len(stores) == 2
    stamps = [(s / "tokens.bin").stat().st_mtime_ns for s in stores]
    document = setting.heldout["forget"][0]
    assert document.corpus.token_ids([document.index])[0] == tokenizer(document.text, add_special_tokens=False)["input_ids"]
    run_dir = run_study(cfg, progress=False)
    assert [(s / "tokens.bin").stat().st_mtime_ns for s in stores] == stamps

    # Without a pad token, padding is masked by length: the padded evaluation equals one document at a time.
    base = load(run_dir / "base" / "model")
    for side in ("retain", "forget"):
        total = count = 0
        for doc in setting.eval_documents[side]:
            ids = setting.document_ids([doc])[0][:32]
            ce = heldout_cross_entropy(base, torch.tensor([ids]), real=torch.ones(1, len(ids), dtype=torch.bool))
            total, count = total + ce * (len(ids) - 1), count + len(ids) - 1
        assert setting.evaluate(base)[f"{side}_ce"] == pytest.approx(total / count, rel=1e-5)
    results = json.loads((run_dir / "results.json").read_text())
    assert results["setting"] == "language" and {m["role"] for m in results["models"] if m["artifact"]} >= {
        "base", "teacher", "distilled", "undo"}
    assert all(math.isfinite(m["metrics"]["forget_ce"]) for m in results["models"] if m["metrics"])
    # No oracle was named or trained: the report says so and invents no anchor.
    assert "oracle" not in {m["role"] for m in results["models"]}
    assert all(not m["robustness"] for m in results["models"])
    assert all(m["accounting"]["stage_fraction_of_oracle"] is None for m in results["models"] if m["accounting"])
    report = (run_dir / "report.md").read_text()
    assert "No data-filtered oracle in this study" in report and "there is no data-filtered oracle" in report


def test_an_oracle_of_the_checkpoints_architecture_can_be_pretrained_here(tmp_path):
    source = checkpoint(tmp_path / "mine", "gpt_neox")
    raw = own_model_config(tmp_path / "runs", source)
    raw["pretrain"] = {"oracle": True, "train": {"batch_size": 8, "max_steps": 3, "warmup_steps": 1, "eval_every": 3}}
    cfg = validate_config(raw)
    assert cfg.oracle_source == "trained"
    oracle = pretrain(cfg, "oracle", progress=False)
    meta = json.loads((oracle / "meta.json").read_text())
    assert meta["source"] is None and meta["steps"] > 0 and meta["flops_total"] > 0
    assert type(load_model(oracle / "model")).__name__ == "GPTNeoXForCausalLM"
    assert set(meta["data"]["documents_per_component"]) == {"add/equation", "sub/equation"}  # retain data only
    with pytest.raises(Exception, match="keep one of them"):
        validate_config({**raw, "oracle": {"pretrained": str(source)}})
