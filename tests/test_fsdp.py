"""`distributed.strategy: fsdp`: two processes (`torchrun --nproc_per_node 2`, gloo on the CPU) each hold half of every
parameter, gradient and optimizer moment (FSDP2's `fully_shard`), and train to one process's weights; a killed
sharded run resumes on two processes or on one; bad launches fail before any work. The same code runs on GPUs."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from tests.conftest import CAPABLE, TINY
from tests.test_distributed import (
    finished, kill_after_a_checkpoint, same_artifact, study_under_torchrun_matches, torchrun)
from undo.config import validate_config
from undo.schema.errors import UserError
from undo.stages.launch import check_blocks_of, check_launch

FSDP = ("--set", "distributed.strategy=fsdp")


def write(tmp_path: Path, name: str, raw: dict) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**raw, "run_dir": str(tmp_path / name)}))
    return path


def shard_shares(stderr: str) -> list[tuple[str, list[int], int]]:
    """Every "<kind> bytes per process [a, b] of W" the engine printed (one line per training run)."""
    return [(kind, json.loads(held), int(whole)) for kind, held, whole
            in re.findall(r"(parameter|optimizer-state) bytes per process (\[[\d, ]+\]) of (\d+)", stderr)]


def assert_halved(stderr: str, runs: int) -> None:
    """Each process held about half of the model's parameters and optimizer state, in every one of `runs` runs."""
    shares = shard_shares(stderr)
    assert len(shares) == 2 * runs, stderr[-2000:]
    for kind, held, whole in shares:
        assert len(held) == 2 and sum(held) >= whole, (kind, held, whole)
        assert max(held) <= 0.55 * whole, (kind, held, whole)  # a row more where a count is odd


# A two-block model (three FSDP groups: each block, then embeddings, final norm and head), capable on the alphabet.
TWO_BLOCKS = {**CAPABLE, "model": {**CAPABLE["model"], "layers": 2}}
UNLEARN = {"steps": 4, "batch_size": 4, "eval_every": 2, "examples": 100,
           "methods": [{"method": "rmu", "lrs": [3e-3], "knobs": {"layer": 1, "steer": 4.0}},
                       {"method": "npo", "lrs": [3e-3]},
                       {"method": "grad_diff", "lrs": [3e-3], "knobs": {"retain_weight": 1.0}, "sam_rho": 0.05}],
           "selection": {"min_retain_fraction": 0.1}}
ATTACK = {"steps": 6, "eval_every": 2, "budgets": [2, 6], "lrs": [3e-2], "eval_per_cell": 3, "examples": 200,
          "batch_size": 4, "kinds": ["lora"]}


@pytest.mark.slow
def test_sharded_unlearning_and_lora_attack_train_like_one_process(tmp_path):
    """RMU (activation hooks on sharded blocks, a regex's parameters trained, a sharded frozen reference), NPO (a
    sharded reference), GradDiff under SAM (the whole gradient's norm) and a LoRA attack (peft adapters inside
    sharded blocks, with the arithmetic-free alphabet evaluation by both processes): one process's weights, metrics
    and counts, from the same pretrained base; each process holds half of what it trains."""
    from undo.stages.attack import attack
    from undo.stages.pretrain import pretrain
    from undo.stages.selection import run_unlearning

    raw = {**TWO_BLOCKS, "unlearn": UNLEARN, "attack": ATTACK}
    cfg = validate_config({**raw, "run_dir": str(tmp_path / "one")})
    pretrain(cfg, "base", progress=False)
    run_unlearning(cfg, progress=False)
    rmu = next((tmp_path / "one").glob("unlearn_rmu_*/"))
    attack(cfg, rmu, kind="lora", progress=False)

    two = write(tmp_path, "two", raw)
    (tmp_path / "two").mkdir()
    shutil.copytree(tmp_path / "one" / "base", tmp_path / "two" / "base")
    said = finished(torchrun("unlearn", str(two), *FSDP))
    said += finished(torchrun("attack", "--config", str(two), str(tmp_path / "two" / rmu.name), "--kind", "lora",
                              *FSDP))
    assert_halved(said, runs=4)
    names = sorted(p.name for p in (tmp_path / "one").glob("unlearn_*") if p.is_dir())
    assert len(names) == 3
    for name in names:
        assert same_artifact(tmp_path / "one" / name, tmp_path / "two" / name) < 2e-5, name
    metas = [json.loads(next(d.glob("attack_lora_*/meta.json")).read_text()) for d in (tmp_path / "one", tmp_path / "two")]
    curves = [[(run["forget"], run["retain"]) for run in meta["per_lr"]] for meta in metas]
    assert curves[0] == curves[1]
    assert len(set(curves[0][0][0]["values"])) > 1  # the attack moved the forget score: the numbers compared are real
    assert metas[0]["flops"] == metas[1]["flops"]


@pytest.mark.slow
def test_a_killed_sharded_run_resumes_on_two_processes_or_on_one(tmp_path):
    """A sharded pretraining killed after a checkpoint (each process wrote its shards) resumes on two processes and,
    from a copy, on one process; both end with the weights of an uninterrupted single-process run."""
    from undo.stages.pretrain import pretrain

    train = {**TINY["pretrain"]["train"], "max_steps": 40, "checkpoint_every": 4}
    raw = {**TINY, "model": {**TINY["model"], "layers": 2}, "pretrain": {"train": train}}
    reference = pretrain(validate_config({**raw, "run_dir": str(tmp_path / "one")}), "base", progress=False)
    two = write(tmp_path, "two", raw)
    kill_after_a_checkpoint(torchrun("pretrain", str(two), "--only", "base", *FSDP), tmp_path / "two" / ".base.partial")
    state = tmp_path / "two" / ".base.partial" / "checkpoint" / "state.json"
    assert not (tmp_path / "two" / "base").exists(), "the run finished before it could be killed"
    saved = json.loads(state.read_text())
    assert saved["format"] == "sharded" and any("__1_" in name for name in saved["checksums"])  # both wrote shards

    shutil.copytree(tmp_path / "two", tmp_path / "three")
    three = write(tmp_path, "three", raw)
    said_two = finished(torchrun("pretrain", str(two), "--only", "base", *FSDP))
    one_process = subprocess.run([sys.executable, "-m", "undo", "pretrain", str(three), "--only", "base",
                                  "--no-progress", *FSDP], capture_output=True, text=True, timeout=300)
    assert one_process.returncode == 0, one_process.stderr[-3000:]
    for said, run in ((said_two, "two"), (one_process.stderr, "three")):
        step = int(said.split("resuming from the checkpoint of step ")[1].split()[0])
        assert 8 <= step < 40, run
        same_artifact(reference, tmp_path / run / "base")
    assert_halved(said_two, runs=1)


@pytest.mark.slow
def test_a_whole_study_sharded_matches_one_process(tmp_path, finished_study):
    """`torchrun ... -m undo run --set distributed.strategy=fsdp`: unlearning, Unlearn-and-Distill and UNDO (a
    sharded frozen teacher; a noised student drawn before sharding, the same draw as one process) and the attacks
    give the artifacts, weights and report numbers of the serial study."""
    said = study_under_torchrun_matches(finished_study, tmp_path / "two", *FSDP)
    assert shard_shares(said)  # sharded indeed


def test_a_launch_is_checked_before_any_work(tmp_path):
    """Steps that do not divide between the processes, fp16 under FSDP, and (below) a model without blocks: one line
    each, from the config alone."""
    cfg = validate_config({**TINY, "run_dir": str(tmp_path / "runs"),
                           "attack": {"batch_size": 3, "grad_accum": 1}})
    with pytest.raises(UserError, match=r"attack: a step of 1 micro-batch\(es\) of 3 rows cannot be shared by 2"):
        check_launch(cfg, 2)
    check_launch(cfg, 1)  # one process shares nothing
    check_launch(validate_config({**TINY, "attack": {"batch_size": 3, "grad_accum": 2}}), 2)  # whole micro-batches
    fp16 = validate_config({**TINY, "distributed": {"strategy": "fsdp"},
                            "unlearn": {**TINY["unlearn"], "mixed_precision": "fp16"}})
    with pytest.raises(UserError, match="unlearn.mixed_precision: fp16 is not supported with distributed.strategy"):
        check_launch(fp16, 2)
    check_launch(fp16.model_copy(update={"distributed": fp16.distributed.model_copy(update={"strategy": "ddp"})}), 2)
    assert not (tmp_path / "runs").exists()


def test_fsdp_needs_a_model_with_blocks(tmp_path):
    """A real checkpoint's blocks are found on its meta-device skeleton (no weights read); a model without a stack of
    blocks is refused with the way out."""
    from undo.core.models import fresh_model, llama_config
    from undo.core.sharding import shard

    folder = tmp_path / "checkpoint"
    config = validate_config({**TINY, "model": {**TINY["model"], "layers": 2}})
    fresh_model(llama_config(config.model, pad_id=0, eos_id=1), seed=0).save_pretrained(folder)
    check_blocks_of(str(folder), config, "model.pretrained")
    with pytest.raises(UserError, match="cannot find the transformer blocks.*set distributed.strategy: ddp"):
        shard(nn.Sequential(nn.Linear(2, 2)))


def test_the_strategy_is_spelled_exactly():
    assert validate_config({"distributed": {"strategy": "fsdp"}}).distributed.strategy == "fsdp"
    assert validate_config({}).distributed.strategy == "ddp"
    with pytest.raises(Exception, match="strategy"):
        validate_config({"distributed": {"strategy": "FSDP2"}})


@pytest.fixture
def one_process_group():
    """A process group of one (gloo), so that `fully_shard` and torch.distributed.checkpoint run in this process."""
    import torch.distributed as dist

    from undo.core import sharding

    dist.init_process_group("gloo", rank=0, world_size=1, store=dist.HashStore())
    yield
    dist.destroy_process_group()
    sharding._mesh.cache_clear()


def test_a_sharded_checkpoint_round_trips_and_a_whole_one_is_not_loaded_sharded(tmp_path, one_process_group):
    """Weights, AdamW moments and the RNG come back from a sharded checkpoint into a freshly sharded model; a
    checkpoint written by one process or DDP is refused by a sharded run in one line (nothing is overwritten)."""
    from undo.core import sharding
    from undo.core.models import fresh_model, llama_config
    from undo.training.engine import Checkpoint, make_optimizer, rng_state

    cfg = validate_config({**TINY, "model": {**TINY["model"], "layers": 2}})
    train_cfg = cfg.pretrain.train

    def sharded_model(seed: int):
        model = fresh_model(llama_config(cfg.model, pad_id=0, eos_id=1), seed=seed)
        sharding.shard(model)
        optimizer = make_optimizer(list(model.parameters()), train_cfg)
        ids = torch.randint(3, 100, (2, 16), generator=torch.Generator().manual_seed(seed))
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        return model, optimizer

    model, optimizer = sharded_model(0)
    checkpoint = Checkpoint(tmp_path / "checkpoint")
    state = {"step": 3, "tokens": 96, "flops": {}, "elapsed_s": 1.0, "last_eval": {}, "stopped_early": False,
             "log_bytes": 0}
    saved_rng = rng_state()
    checkpoint.save_sharded(model, optimizer, state, "key", [saved_rng])
    assert checkpoint.damage("key") is None
    torch.manual_seed(123)  # moved on; the load must restore the saved state
    other, other_optimizer = sharded_model(1)
    restored = checkpoint.load(other, other_optimizer, "key")
    assert restored["step"] == 3 and torch.equal(torch.get_rng_state(), saved_rng["torch"])
    for (name, a), b in zip(model.named_parameters(), other.parameters()):
        torch.testing.assert_close(a.full_tensor(), b.full_tensor(), rtol=0, atol=0, msg=name)
    moments = [sharding.optimizer_tensors(o) for o in (optimizer, other_optimizer)]
    assert len(moments[0]) == 2 * len(list(model.parameters()))
    for a, b in zip(*moments):
        assert torch.equal(a.full_tensor(), b.full_tensor())

    whole = fresh_model(llama_config(cfg.model, pad_id=0, eos_id=1), seed=0)
    Checkpoint(tmp_path / "whole").save(whole, make_optimizer(list(whole.parameters()), train_cfg), state, "key")
    with pytest.raises(UserError, match="written by one process or under DDP; resume it with distributed.strategy"):
        Checkpoint(tmp_path / "whole").load(other, other_optimizer, "key")


@pytest.mark.slow
def test_a_sharded_gpt2_with_a_tied_head_trains_and_saves_like_one_process(tmp_path):
    """Another architecture (GPT-2: blocks under `transformer.h`, Conv1D layers, the head tied to the embeddings):
    GradDiff and an UNDO student under FSDP give one process's weights, and each saved folder is an ordinary
    checkpoint whose head is its embeddings again."""
    from tests.test_own_model import ARCHITECTURES, checkpoint, own_model_config
    from undo.core.models import load_model
    from undo.stages.distill import distill
    from undo.stages.pretrain import pretrain
    from undo.stages.selection import run_unlearning

    # Without dropout: each process draws its own masks for its rows, so no two ways of splitting a batch could agree.
    config = ARCHITECTURES["gpt2"]().to_dict() | {"resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}
    source = checkpoint(tmp_path / "mine", "gpt2", type(ARCHITECTURES["gpt2"]())(**config))
    raw = {**own_model_config(tmp_path / "one", source),
           "unlearn": {"steps": 2, "batch_size": 4, "eval_every": 2, "examples": 100,
                       "methods": [{"method": "grad_diff", "lrs": [1e-3]}], "selection": {"min_retain_fraction": 0}}}
    cfg = validate_config(raw)
    base = pretrain(cfg, "base", progress=False)
    run_unlearning(cfg, progress=False)
    teacher = next((tmp_path / "one").glob("unlearn_*/"))
    distill(cfg, teacher, init="noised", alpha=0.5, progress=False)

    two = write(tmp_path, "two", {k: v for k, v in raw.items() if k != "run_dir"})
    (tmp_path / "two").mkdir()
    shutil.copytree(base, tmp_path / "two" / "base")
    said = finished(torchrun("unlearn", str(two), *FSDP))
    # The student distils the single-process teacher: Adam's first steps turn rounding in a teacher into more.
    said += finished(torchrun("distill", "--config", str(two), str(teacher), "--init", "noised", *FSDP))
    assert_halved(said, runs=2)
    made = sorted(p.name for p in (tmp_path / "one").glob("*_*") if (p / "model").is_dir())
    assert len(made) == 2
    for name in made:
        assert same_artifact(tmp_path / "one" / name, tmp_path / "two" / name) < 2e-5, name
        model = load_model(tmp_path / "two" / name / "model")
        assert model.lm_head.weight is model.transformer.wte.weight


def close_metrics(one: Path, two: Path) -> dict[str, float]:
    """The final metrics of two artifacts, equal to float rounding (cross-entropies are not counts)."""
    a, b = (json.loads((p / "meta.json").read_text())["final_metrics"] for p in (one, two))
    assert a.keys() == b.keys() and a
    for name in a:
        assert b[name] == pytest.approx(a[name], rel=1e-4, abs=1e-6), name
    return a


@pytest.mark.slow
def test_sharded_models_are_evaluated_by_every_process_in_the_language_and_mcq_settings(tmp_path):
    """Held-out cross-entropy (language) and lm-evaluation-harness multiple choice through HFLM (mcq) on a sharded
    model: every process takes part in each forward, and the numbers are one process's."""
    from tests.test_language import language_config
    from tests.test_mcq import mcq_config
    from undo.stages.pretrain import pretrain
    from undo.stages.selection import run_unlearning

    language = {k: v for k, v in language_config(tmp_path / "language").items() if k != "run_dir"}
    pretrain(validate_config({**language, "run_dir": str(tmp_path / "language_one")}), "base", progress=False)
    finished(torchrun("pretrain", str(write(tmp_path, "language_two", language)), "--only", "base", *FSDP))
    metrics = close_metrics(tmp_path / "language_one" / "base", tmp_path / "language_two" / "base")
    assert metrics["retain"] != 0

    mcq = {k: v for k, v in mcq_config(tmp_path / "mcq").items() if k != "run_dir"}
    mcq["unlearn"] = {**mcq["unlearn"], "methods": mcq["unlearn"]["methods"][:1]}  # GradDiff only
    mcq["study"] = {**mcq["study"], "undo_method": "grad_diff"}
    cfg = validate_config({**mcq, "run_dir": str(tmp_path / "mcq_one")})
    base = pretrain(cfg, "base", progress=False)
    run_unlearning(cfg, progress=False)
    (tmp_path / "mcq_two").mkdir()
    shutil.copytree(base, tmp_path / "mcq_two" / "base")
    finished(torchrun("unlearn", str(write(tmp_path, "mcq_two", mcq)), *FSDP))
    name = next((tmp_path / "mcq_one").glob("unlearn_*/")).name
    close_metrics(tmp_path / "mcq_one" / name, tmp_path / "mcq_two" / name)
    assert same_weights_within(tmp_path / "mcq_one" / name, tmp_path / "mcq_two" / name, 2e-5)


def same_weights_within(one: Path, two: Path, atol: float) -> bool:
    from safetensors.torch import load_file

    a, b = (load_file(p / "model" / "model.safetensors") for p in (one, two))
    return a.keys() == b.keys() and all(torch.allclose(a[k], b[k], rtol=0, atol=atol) for k in a)


@pytest.mark.slow
def test_bf16_under_fsdp_is_the_sharding_policy_and_trains_like_autocast(tmp_path):
    """With mixed_precision bf16, FSDP gathers bf16 weights and reduces gradients in fp32 (its policy) while the
    sharded weights stay fp32: pretraining, and a distillation with its frozen teacher, give at each step the loss
    of one process under autocast to bf16 rounding, and save fp32 models."""
    from safetensors.torch import load_file

    from undo.stages.distill import distill
    from undo.stages.pretrain import pretrain

    bf16 = {"mixed_precision": "bf16"}
    raw = {**TINY, "model": {**TINY["model"], "layers": 2},
           "pretrain": {"train": {**TINY["pretrain"]["train"], **bf16}},
           "distill": {"examples": 100, "stop_tolerance": None,
                       "train": {"batch_size": 4, "max_steps": 4, "eval_every": 4, "warmup_steps": 1, **bf16}}}
    cfg = validate_config({**raw, "run_dir": str(tmp_path / "one")})
    base = pretrain(cfg, "base", progress=False)
    student = distill(cfg, base, init="random", progress=False)
    two = write(tmp_path, "two", raw)
    finished(torchrun("pretrain", str(two), "--only", "base", *FSDP))
    finished(torchrun("distill", "--config", str(two), str(base), "--init", "random", *FSDP))
    for one in (base, student):
        other = tmp_path / "two" / one.name
        losses = [[line["loss"] for line in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
                   if line["kind"] == "train"] for run in (one, other)]
        assert len(losses[0]) == len(losses[1]) > 0
        assert losses[1] == pytest.approx(losses[0], rel=2e-2), one.name
        assert all(t.dtype == torch.float32 for t in load_file(other / "model" / "model.safetensors").values())
