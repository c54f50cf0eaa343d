import os
import tempfile
from pathlib import Path

import pytest
import yaml

from undo.config import ExperimentConfig, validate_config

# Tests record their studies in a throwaway index, not the user's (undo.study.index); subprocesses inherit it.
os.environ["UNDO_STATE_DIR"] = tempfile.mkdtemp(prefix="undo_state_")

TINY = {
    "seed": 0,
    "setting": {"examples": 600, "eval_per_cell": 4, "eval_batch_size": 64},
    "model": {"layers": 1, "width": 32, "heads": 2, "context": 32, "vocab": 100},
    "pretrain": {"train": {"batch_size": 8, "lr": 3e-3, "warmup_steps": 2, "eval_every": 5,
                           "checkpoint_every": 3, "log_every": 1, "max_steps": 12}},
    # The default sweep's RMU steers block 2; the tiny model has one block.
    "unlearn": {"methods": [{"method": "grad_diff", "lrs": [3e-4, 1e-3], "knobs": {"retain_weight": 15.0}},
                            {"method": "maxent", "lrs": [3e-4, 1e-3]},
                            {"method": "rmu", "lrs": [1e-3, 3e-3], "knobs": {"layer": 0}}]},
}

# The capable tiny fixture: the toy alphabet setting (undo.settings.alphabet), which the TINY model learns in 150
# steps (seconds): the base predicts about 90 % of letters on both sides, the oracle 100 % retain and 0 % forget, so
# unlearning, distillation and the attack give distinct, non-zero numbers. Every end-to-end test that compares numbers
# between two runs uses it; TINY (arithmetic, about 0 % everywhere at this size) stays for mechanics.
# Its setting, model and pretraining are those of configs/alphabet.yaml, the toy study users can run.
ALPHABET_STUDY = yaml.safe_load((Path(__file__).parents[1] / "configs" / "alphabet.yaml").read_text())
CAPABLE = {**TINY, **{section: ALPHABET_STUDY[section] for section in ("setting", "model", "pretrain")}}


@pytest.fixture(scope="session")
def finished_study(tmp_path_factory):
    """The shared tiny study (tests/studies.py) run once, serially, in this process: the reference that the
    SIGKILL, --workers, Ray and torchrun runs are compared with. Tests copy it before changing it."""
    from tests.studies import study_config
    from undo.api import run_study

    run_dir = tmp_path_factory.mktemp("study") / "runs"
    run_study(validate_config(study_config(run_dir)), progress=False)
    return run_dir


@pytest.fixture
def tiny_config(tmp_path) -> ExperimentConfig:
    return validate_config({**TINY, "run_dir": str(tmp_path / "runs")})


def interrupt_pretraining(cfg: ExperimentConfig, monkeypatch, at_batch: int = 7) -> None:
    """Pretrain the base model of `cfg` and stop it with Ctrl-C when it asks for batch `at_batch` (after the
    checkpoints before it), as a user interrupting a run would."""
    import undo.core.data
    from undo.stages.pretrain import pretrain

    real_getitem = undo.core.data.PackedBatches.__getitem__

    def interrupted_at(self, index):
        if index == at_batch:
            raise KeyboardInterrupt
        return real_getitem(self, index)

    monkeypatch.setattr(undo.core.data.PackedBatches, "__getitem__", interrupted_at)
    with pytest.raises(KeyboardInterrupt):
        pretrain(cfg, "base", progress=False)
    monkeypatch.setattr(undo.core.data.PackedBatches, "__getitem__", real_getitem)


class InterruptedAt:
    """Batches that raise KeyboardInterrupt (as Ctrl-C would) when the engine asks for batch `index`."""

    def __init__(self, batches, index: int = 3):
        self.batches, self.index = batches, index

    def __getitem__(self, index):
        if index == self.index:
            raise KeyboardInterrupt
        return self.batches[index]
