"""The LoRA attack kind (undo.attacks.lora): it runs through the attack stage and the CLI under its own key, only the
adapters train (the base weights, tied ones included, never move), an interrupted run resumes to the same numbers,
and it works beyond Llama (GPT-2's Conv1D layers, GPT-NeoX, Qwen2)."""

import json

import pytest
import torch
import yaml
from torch import nn
from transformers import LlamaConfig
from transformers.pytorch_utils import Conv1D

from tests.conftest import CAPABLE, InterruptedAt
from tests.test_own_model import ARCHITECTURES, checkpoint, own_model_config
from undo.attacks import ATTACK_KINDS
from undo.attacks.lora import LoraAttack
from undo.cli import main
from undo.config import TrainConfig, validate_config
from undo.core.artifacts import file_sha256
from undo.core.data import PackedBatches
from undo.training.engine import read_metrics, train
from undo.core.models import fresh_model
from undo.objectives import OBJECTIVES
from undo.settings.cross_entropy import heldout_cross_entropy
from undo.schema.results import AttackResult
from undo.stages.attack import attack
from undo.schema.io import read_result
from undo.stages.pretrain import pretrain

LRS = [1e-3, 1e-2]
ATTACK = {"lrs": LRS, "steps": 4, "eval_every": 2, "budgets": [2, 4], "batch_size": 4, "examples": 300,
          "eval_per_cell": 2, "extend_grid": 0}  # the grid's extension has its own test (tests/test_attack.py)


@pytest.fixture(scope="module")
def oracle(tmp_path_factory):
    """A capable tiny Llama (the capable fixture's oracle: 100 % retain, 0 % forget) and the config whose run_dir its
    attacks share."""
    root = tmp_path_factory.mktemp("lora")
    cfg = validate_config({**CAPABLE, "run_dir": str(root / "runs"),
                           "attack": {**ATTACK, "kinds": ["finetune", "lora"]}})
    return cfg, pretrain(cfg, "oracle", progress=False)


def key_of(artifact):
    return json.loads((artifact / "meta.json").read_text())["key"]


def model_files(artifact):
    return {p.name: file_sha256(p) for p in sorted((artifact / "model").iterdir())}


def adapted_modules(model: nn.Module) -> set[str]:
    """What `all-linear` should adapt: every nn.Linear / Conv1D except the LM head."""
    head = model.get_output_embeddings()
    return {name for name, module in model.named_modules()
            if isinstance(module, (nn.Linear, Conv1D)) and module is not head}


def short_run(steps: int, checkpoint_every: int) -> TrainConfig:
    return TrainConfig(batch_size=4, lr=1e-2, schedule="constant", warmup_steps=0, weight_decay=0.0, clip=1.0,
                       max_steps=steps, eval_every=steps, checkpoint_every=checkpoint_every, log_every=1)


def random_batches(vocab: int) -> PackedBatches:
    rows = torch.randint(3, vocab, (16, 16), generator=torch.Generator().manual_seed(0))
    return PackedBatches(rows, batch_size=4, seed=0)


def test_a_lora_attack_runs_through_the_stage_under_its_own_key(oracle, tmp_path, capsys):
    cfg, target = oracle
    assert cfg.attack.kinds == ["finetune", "lora"] and "lora" in ATTACK_KINDS
    files = model_files(target)
    path = attack(cfg, target, kind="lora", progress=False)
    result = read_result(path, AttackResult)
    assert path.name.startswith("attack_lora_oracle_") and result.attack_kind == "lora"
    assert [run.lr for run in result.per_lr] == LRS
    for run in result.per_lr:  # a forget and a retain curve at every evaluated step, for every LR
        assert run.steps == ATTACK["steps"] and run.forget.steps == run.retain.steps == [0, 2, 4]
        assert (path / f"lr_{run.lr:g}" / "metrics.jsonl").is_file()
    assert len(result.best.values) == 3 and result.flops_total > 0
    assert model_files(target) == files  # the attacked model's own files are untouched

    finetune_path = attack(cfg, target, progress=False)
    finetune = read_result(finetune_path, AttackResult)
    assert key_of(path) != key_of(finetune_path)
    # The adapters start at zero (LoRA's B = 0): the same model at step 0, then another training.
    assert result.metrics_before == finetune.metrics_before
    assert result.metrics_before["retain"] > 0.9 and result.metrics_before["forget"] < 0.1  # numbers, not zeros
    assert result.best.values != finetune.best.values
    losses = [[line["loss"] for line in read_metrics(folder / "lr_0.01" / "metrics.jsonl") if line["kind"] == "train"]
              for folder in (path, finetune_path)]
    assert losses[0] != losses[1]

    # The CLI finds the finished artifact under the same key (nothing reruns) and prints its table.
    config_file = tmp_path / "tiny.yaml"
    config_file.write_text(yaml.safe_dump({**CAPABLE, "run_dir": cfg.run_dir, "attack": {**ATTACK, "kinds": ["lora"]}}))
    made = {p: p.stat().st_mtime_ns for p in path.rglob("*") if p.is_file()}
    with pytest.raises(SystemExit) as exit_info:
        main(["attack", str(target), "--kind", "lora", "--config", str(config_file), "--no-progress"])
    out = capsys.readouterr()
    assert exit_info.value.code in (0, None), out.err
    assert "relearning attack (lora," in out.out and path.name in out.out
    # Reused, not redone: the same artifact, every file of it untouched.
    assert {p: p.stat().st_mtime_ns for p in path.rglob("*") if p.is_file()} == made and made


def test_the_lora_identity_names_its_hyper_parameters():
    identity = LoraAttack().identity()
    assert identity == {"kind": "lora", "rank": 8, "alpha": 16, "dropout": 0.0, "target_modules": "all-linear",
                        "init_seed": 0}
    assert identity != ATTACK_KINDS["finetune"]().identity()


@pytest.mark.parametrize("architecture", ["llama", "gpt2", "gpt_neox", "qwen2"])
def test_only_the_adapters_train(architecture, tmp_path):
    model = fresh_model(ARCHITECTURES[architecture](), seed=0)
    before = {name: value.clone() for name, value in model.state_dict().items()}
    expected = adapted_modules(model)
    rows = random_batches(100)[0]["input_ids"]
    cross_entropy = heldout_cross_entropy(model, rows, pad_id=0)
    prepared = LoraAttack().prepare(model)
    assert heldout_cross_entropy(prepared, rows, pad_id=0) == cross_entropy  # B = 0: the same model until it trains

    trainable = {name: p for name, p in prepared.named_parameters() if p.requires_grad}
    assert all(".lora_A." in name or ".lora_B." in name for name in trainable)
    adapted = {name.removeprefix("base_model.model.").split(".lora_")[0] for name in trainable}
    assert adapted == expected  # every linear layer of the blocks (GPT-2's Conv1D too), not the LM head
    shapes = {name: module.weight.shape for name, module in model.named_modules() if name in expected}
    assert sum(p.numel() for p in trainable.values()) == sum(LoraAttack.RANK * sum(s) for s in shapes.values())

    result = train(prepared, OBJECTIVES["lm"](), random_batches(100), short_run(3, 10), 3, tmp_path,
                   progress=False)
    assert result.steps == 3 and result.flops["train"] > 0
    assert all(p.requires_grad for p in trainable.values())  # the engine gives the flags back as it found them
    assert all(not torch.equal(p, torch.zeros_like(p)) for name, p in trainable.items() if ".lora_B." in name)
    after = prepared.unload().state_dict()  # the base model again, under its own names, adapters removed
    assert after.keys() == before.keys()
    assert all(torch.equal(after[name], before[name]) for name in before)  # tied embeddings and head included


def test_the_adapters_are_a_small_fraction_of_a_wider_model():
    config = LlamaConfig(vocab_size=100, hidden_size=256, intermediate_size=1024, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=64)
    prepared = LoraAttack().prepare(fresh_model(config, seed=0))
    trainable = sum(p.numel() for p in prepared.parameters() if p.requires_grad)
    # r * (in + out) per layer against in * out: the share falls as the model widens (4.3 % at width 256).
    assert 0 < trainable < 0.05 * sum(p.numel() for p in prepared.parameters())


def test_an_interrupted_lora_run_resumes_to_the_same_numbers(tmp_path):
    """GPT-2: Conv1D layers and a head tied to the embeddings, through the engine's checkpoint of a PeftModel."""
    def run(workdir, batches):
        torch.manual_seed(0)  # GPT-2 trains with dropout: both runs start from the same RNG state
        prepared = LoraAttack().prepare(fresh_model(ARCHITECTURES["gpt2"](), seed=0))
        train(prepared, OBJECTIVES["lm"](), batches, short_run(4, 2), 4, workdir, progress=False)
        return prepared.state_dict()

    reference = run(tmp_path / "whole", random_batches(100))
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "resumed", InterruptedAt(random_batches(100), 3))
    assert (tmp_path / "resumed" / "checkpoint" / "state.json").is_file()
    resumed = run(tmp_path / "resumed", random_batches(100))
    assert all(torch.equal(resumed[name], reference[name]) for name in reference)

    def losses(workdir):
        return [line["loss"] for line in read_metrics(workdir / "metrics.jsonl") if line["kind"] == "train"]

    assert losses(tmp_path / "resumed") == losses(tmp_path / "whole") and len(losses(tmp_path / "whole")) == 4


def test_a_lora_attack_on_a_gpt2_checkpoint(tmp_path):
    source = checkpoint(tmp_path / "mine", "gpt2")
    cfg = validate_config(own_model_config(tmp_path / "runs", source))
    target = pretrain(cfg, "base", progress=False)
    files = model_files(target)
    result = read_result(attack(cfg, target, kind="lora", progress=False), AttackResult)
    assert [run.steps for run in result.per_lr] == [2] and len(result.best.values) == 2
    assert result.flops_total > 0
    assert model_files(target) == files
