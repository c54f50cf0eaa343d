"""The memory estimate (`undo config --memory`) holds to the memory real stages use: the benchmark's measurement
(undo/stages/memory.py's peak of tensors against the growth of each process's resident memory, with glibc giving
freed tensors back) on a 12M-parameter model, for one process, and per process of a sharded (FSDP) run."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.conftest import TINY
from undo.cli import main
from undo.config import validate_config
from undo.stages.memory import Architecture, estimate

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
from memory_estimate import measure  # noqa: E402


def assert_close(records: list[dict], processes: int) -> None:
    assert len(records) == processes
    for record in records:
        ratio = record["measured"] / record["estimate"]
        assert 0.8 <= ratio <= 1.25, record


@pytest.mark.slow
@pytest.mark.parametrize("case", ["pretrain", "distill"])
def test_the_estimate_is_the_measured_peak_of_one_process(case):
    assert_close(measure(case), 1)


@pytest.mark.slow
def test_the_estimate_is_the_measured_peak_of_each_sharded_process():
    assert_close(measure("fsdp"), 2)


def test_the_estimate_follows_strategy_processes_and_precision():
    cfg = validate_config({**TINY, "model": {**TINY["model"], "layers": 4, "width": 256, "heads": 4, "vocab": 16000}})
    one = {m.stage: m for m in estimate(cfg, 1)}
    ddp = {m.stage: m for m in estimate(cfg, 2)}
    fsdp_cfg = cfg.model_copy(update={"distributed": cfg.distributed.model_copy(update={"strategy": "fsdp"})})
    fsdp = {m.stage: m for m in estimate(fsdp_cfg, 4)}
    arch = Architecture.of_config(cfg)
    assert one["pretrain"].weights == 4 * arch.parameters
    assert one["pretrain"].optimizer == 2 * 4 * arch.parameters
    assert ddp["pretrain"].gradients == 2 * one["pretrain"].gradients  # DDP's buckets
    assert fsdp["pretrain"].optimizer == one["pretrain"].optimizer // 4
    assert fsdp["pretrain"].total < one["pretrain"].total
    assert one["distill"].frozen == 4 * arch.parameters  # the teacher
    rmu = [m for m in estimate(validate_config(TINY), 1) if m.stage == "unlearn rmu"][0]
    assert rmu.optimizer < one["pretrain"].optimizer  # RMU trains one projection per block


def test_config_memory_prints_a_row_per_training_stage(capsys):
    config = Path(__file__).parents[1] / "configs" / "alphabet.yaml"
    with pytest.raises(SystemExit) as exit_:
        main(["config", str(config), "--memory", "--processes", "4", "--set", "distributed.strategy=fsdp"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "4 process(es), fsdp" in " ".join(out.split())
    for stage in ("pretrain", "unlearn grad_diff", "unlearn maxent", "distill", "attack finetune"):
        assert stage in out
