"""The prepared GPU check (benchmarks/gpu_check.py) runs end to end in its --cpu mode: the same code at tiny shapes,
so that the script a GPU session runs is known to work before it gets one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "gpu_check.py"


@pytest.mark.slow
def test_the_gpu_check_runs_on_the_cpu():
    done = subprocess.run([sys.executable, str(SCRIPT), "--cpu"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout[done.stdout.index("{\n"):])
    assert report["device"] == "CPU" and report["peak_source"] == "measured fp32 matmul"
    for step in ("pretraining", "distillation"):
        assert report[step]["tokens_per_s"] > 0 and 0 < report[step]["mfu"] < 1, report[step]
    assert [p["stage"] for p in report["stage_peaks"]] == ["pretrain", "unlearn grad_diff", "distill"]
    assert all(p["estimate_gib"] > 0 for p in report["stage_peaks"])
    fsdp = report["fsdp"]
    assert fsdp["exit_code"] == 0, fsdp
    for kind in ("parameter", "optimizer-state"):
        held, whole = fsdp["bytes_per_process"][kind]["held"], fsdp["bytes_per_process"][kind]["whole"]
        assert len(held) == 2 and max(held) <= 0.55 * whole
