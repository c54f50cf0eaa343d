"""Where a stage's time goes (`undo.core.timing`): phases nest exclusively, and every stage records its split."""

import json
import time

import pytest

from undo.core.timing import OTHER, PHASES, Stopwatch
from undo.stages.pretrain import pretrain


def test_nested_phases_count_once_and_the_rest_is_io():
    watch = Stopwatch()
    started = time.perf_counter()
    with watch.phase("training"):
        time.sleep(0.05)
        with watch.phase("reference_forwards"):  # a teacher forward inside a training step
            time.sleep(0.1)
    with watch.phase("evaluation"):
        time.sleep(0.02)
    time.sleep(0.03)  # outside every phase: I/O and setup
    split = watch.split(time.perf_counter() - started)
    # Sleeps overrun under load, never underrun: lower bounds only (an upper bound fails on a loaded machine). The
    # nested 0.1 s counts once: the phases add up to the wall time (counted twice, they would exceed it by 0.1 s).
    assert split["training"] >= 0.05 and split["reference_forwards"] >= 0.1
    assert split["evaluation"] >= 0.02 and split[OTHER] >= 0.03
    assert sum(split.values()) == pytest.approx(time.perf_counter() - started, abs=0.01)
    watch.reset()
    assert watch.split(1.0) == {**{name: 0.0 for name in PHASES}, OTHER: 1.0}


def test_a_pretrained_model_records_its_time_split(tiny_config):
    meta = json.loads((pretrain(tiny_config, "base", progress=False) / "meta.json").read_text())
    split = meta["time_split"]
    assert set(split) == {*PHASES, OTHER}
    assert split["training"] > 0 and split["evaluation"] > 0 and split["reference_forwards"] == 0
    # The engine's wall time (training and evaluation) lies within the stage's, which adds data and saving.
    assert split["training"] + split["evaluation"] <= meta["wall_time_s"] + 0.01
    assert sum(split.values()) >= meta["wall_time_s"] - 0.01


def test_every_artifact_records_the_machine_that_made_it(tiny_config):
    """Issue 29, item 5: the same seed gives other numbers on another CPU, so every meta.json names its host."""
    import os

    import torch

    from undo.schema.io import read_result
    from undo.stages.pretrain import pretrain

    host = read_result(pretrain(tiny_config, "base", progress=False)).host
    assert host.cpu and host.cores == os.cpu_count() and host.torch == torch.__version__
    assert host.threads == torch.get_num_threads() and host.device == "cpu"  # the CPU suite
    assert host.cpu in host.label and host.torch in host.label


def test_the_report_flags_a_study_made_on_several_machines():
    from undo.report.markdown import host_lines
    from undo.report.records import hosts_of
    from undo.schema.report import Results
    from undo.schema.results import HostRecord, UnlearnResult

    def made_on(cpu: str | None) -> UnlearnResult:
        host = None if cpu is None else HostRecord(cpu=cpu, cores=2, machine="x86_64", torch="2.13.0", threads=2,
                                                   device="cpu", python="3.11", os="linux")
        return UnlearnResult(seed=0, label="maxent", method="maxent", lr=1e-3, knobs={}, sam_rho=None,
                             metrics_before={}, host=host)

    hosts, unrecorded = hosts_of([made_on("AMD EPYC"), made_on("Intel Xeon"), made_on("Intel Xeon"), made_on(None)])
    assert [(h.host.cpu, h.artifacts) for h in hosts] == [("Intel Xeon", 2), ("AMD EPYC", 1)] and unrecorded == 1
    results = Results(run_dir="r", config_hash="h", code_version="c", setting="arithmetic", score="accuracy",
                      complete=True, seeds=[0], budgets=[2], attack_kinds=["finetune"], selection={}, skipped={},
                      wall_time_s={}, models=[], hosts=hosts, hosts_unrecorded=unrecorded)
    text = "\n".join(host_lines(results))
    assert "2 different machines" in text and "Intel Xeon (2 cores" in text and "AMD EPYC" in text
    assert "not recorded (made before undo recorded hosts): 1 artifacts" in text
    one = results.model_copy(update={"hosts": hosts[:1], "hosts_unrecorded": 0})
    assert "different machines" not in "\n".join(host_lines(one))
