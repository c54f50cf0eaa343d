"""The tiny study that end-to-end tests share (on the capable fixture, so the numbers they compare are not zeros), and
the helpers that compare two runs of it: report numbers, artifact stamps, weights."""

import json
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from tests.conftest import ALPHABET_STUDY, CAPABLE

# configs/alphabet.yaml (every stage kind, two seeds), with every model attacked and a distillation checkpoint at
# every step (the SIGKILL test kills the run in the middle of one).
STUDY = {**CAPABLE, **{k: v for k, v in ALPHABET_STUDY.items() if k not in ("run_dir", "setting", "model", "pretrain")}}
STUDY["study"] = {**STUDY["study"], "attack_sweep_points": True}
STUDY["distill"] = {**STUDY["distill"], "train": {**STUDY["distill"]["train"], "checkpoint_every": 1, "log_every": 1}}


def study_config(run_dir, **changes):
    raw = json.loads(json.dumps(STUDY))
    raw["run_dir"] = str(run_dir)
    for section, values in changes.items():
        raw[section] = {**raw.get(section, {}), **values}
    return raw


def numbers(results: dict) -> list:
    """Everything a reader would quote, without paths or wall times."""
    return [(m["id"], m["seed"], m.get("metrics"), m.get("steps"),
             {kind: (a["best"], a["at"]) for kind, a in m["attacks"].items()}, m.get("robustness"))
            for m in results["models"]]


def artifact_stamps(run_dir: Path) -> dict[str, int]:
    return {p.parent.name: p.stat().st_mtime_ns for p in run_dir.glob("*/meta.json")}


def assert_same_weights(run_dir: Path, reference: Path) -> None:
    """Every model artifact of `run_dir` holds the weights of the same artifact in `reference` (to float rounding:
    rtol 0, atol 1e-6; measured on this suite's hosts, the same to the bit)."""
    def weights(folder: Path) -> dict[str, dict[str, torch.Tensor]]:
        return {p.parent.parent.name: load_file(p) for p in folder.glob("*/model/model.safetensors")}

    ours, theirs = weights(run_dir), weights(reference)
    assert sorted(ours) == sorted(theirs) and theirs
    for name, tensors in theirs.items():
        assert ours[name].keys() == tensors.keys(), name
        for key, tensor in tensors.items():
            torch.testing.assert_close(ours[name][key], tensor, rtol=0, atol=1e-6, msg=f"{name}: {key}")


def wait_for(predicate, seconds: float = 120) -> None:
    deadline = time.time() + seconds
    while not predicate():
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def small_study_config(run_dir, **changes):
    """The study cut to what a test of the runner's mechanics needs (one seed, one teacher family distilled and
    attacked, one alpha): a third of the work."""
    study = {"seeds": [0], "attack_sweep_points": False, "oracle_matching": False, "distill_methods": ["maxent"],
             "attack_teachers": ["maxent"], **changes.pop("study", {})}
    return study_config(run_dir, study=study, distill={"alphas": [0.3], **changes.pop("distill", {})}, **changes)
