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
