"""A stage with several workers under `undo run --executor ray` (`resources: {distill: {workers: 2}}`) runs as a Ray
Train `TorchTrainer` job on a local Ray of 4 CPUs: its workers train it together as torchrun's processes would (gloo
on the CPU), and the study ends with the serial study's artifacts, weights and numbers."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from tests.studies import artifact_stamps, numbers, small_study_config
from tests.test_distributed import with_pretrained_models_of
from tests.test_tracking import series, tensorboard_scalars
from undo.api import run_study
from undo.config import validate_config
from undo.schema.errors import UserError
from undo.training.engine import read_metrics


@pytest.fixture
def local_ray():
    import ray  # a declared test dependency: missing, these tests fail rather than skip
    ray.init(num_cpus=4, include_dashboard=False, configure_logging=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_a_distillation_as_a_two_worker_ray_train_job_equals_the_serial_study(tmp_path, local_ray):
    one_job = {"study": {"distill_methods": []}}  # UNDO's noised student only: one job (each starts in ~15 s)
    serial = tmp_path / "serial"
    run_study(validate_config(small_study_config(serial, **one_job)), progress=False)
    on_ray = with_pretrained_models_of(serial, tmp_path / "ray")
    # With a tracker: the stages that ran as Ray tasks, and the Ray Train job's rank 0, show their lines in it.
    raw = {**small_study_config(on_ray, **one_job), "resources": {"distill": {"workers": 2}},
           "tracking": {"backend": "tensorboard"}}
    run_study(validate_config(raw), progress=False, executor="ray")
    assert sorted(artifact_stamps(on_ray)) == sorted(artifact_stamps(serial))
    assert numbers(json.loads((on_ray / "results.json").read_text())) == numbers(
        json.loads((serial / "results.json").read_text()))
    jobs = sorted(p.name for p in (on_ray / ".ray-train").iterdir() if p.is_dir())
    students = sorted(p.name for p in serial.glob("distill_*") if p.is_dir())
    assert len(jobs) == len(students) == 1  # the distillation ran as a Ray Train job, nothing else did
    for name in students:
        a, b = (load_file(d / name / "model" / "model.safetensors") for d in (serial, on_ray))
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=5e-5, msg=f"{name}: {key}")
        log = [json.loads(line) for line in (on_ray / name / "metrics.jsonl").read_text().splitlines()]
        assert log and log[0]["kind"] == "eval"
    unlearned = next(p.parent.name for p in on_ray.glob("unlearn_maxent_*/meta.json"))
    for run in (*students, unlearned):
        scalars = tensorboard_scalars(on_ray / "tracking" / run)
        lines = read_metrics(on_ray / run / "metrics.jsonl")
        assert scalars["eval/retain"] == pytest.approx(series(lines, "eval/retain"), rel=1e-6), run
        assert scalars["train/loss"] == pytest.approx(series(lines, "train/loss"), rel=1e-6), run


def test_a_job_the_cluster_cannot_hold_is_refused_before_any_work(tmp_path, local_ray):
    raw = {**small_study_config(tmp_path / "runs"), "resources": {"distill": {"workers": 8}}}
    with pytest.raises(UserError, match=r"resources.distill: 8 workers x 1 CPU need 8, but the Ray cluster has 4"):
        run_study(validate_config(raw), progress=False, executor="ray")
    assert not list((tmp_path / "runs").glob("*/meta.json"))
    gpus = {**raw, "resources": {"attack": {"workers": 2, "gpus_per_worker": 1}}}
    with pytest.raises(UserError, match=r"resources.attack: 2 workers x 1 GPU need 2, but the Ray cluster has 0"):
        run_study(validate_config(gpus), progress=False, executor="ray")
