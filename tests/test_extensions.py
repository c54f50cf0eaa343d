"""Extending undo from outside the package: a third setting and a second attack kind, each defined and registered in
this module only, run through a whole tiny study and its report. Nothing in `undo/` names them."""

import json
from pathlib import Path
from typing import Literal

import pytest

from tests.conftest import TINY
from undo.attacks import AttackKind, register_attack
from undo.config import validate_config
from undo.schema.errors import UserError
from undo.objectives.lm import NextTokenCrossEntropy
from undo.settings import register_setting
from undo.settings.alphabet import AlphabetConfig, AlphabetSetting
from undo.api import run_study


@register_setting
class ReversedAlphabetConfig(AlphabetConfig):
    """The built-in alphabet toy with its sides swapped: keep counting backwards ("f e d c"), forget counting forwards
    ("c d e f"). Its name, config class and setting class live in this module only."""

    name: Literal["reversed_alphabet"] = "reversed_alphabet"  # type: ignore[assignment]

    def build(self, cache_dir: Path, tokenizer=None) -> "ReversedAlphabet":
        return ReversedAlphabet(self, tokenizer)


class ReversedAlphabet(AlphabetSetting):
    forget_direction = "forwards"


TRAINED_BY_HEAD_ONLY: list[str] = []  # parameter names the head-only attack handed to the engine


class HeadOnlyLM(NextTokenCrossEntropy):
    def trainable_parameters(self, model):
        head = model.get_output_embeddings()
        TRAINED_BY_HEAD_ONLY.extend(n for n, p in model.named_parameters() if any(p is q for q in head.parameters()))
        return list(head.parameters())


@register_attack("head_only")
class HeadOnlyAttack(AttackKind):
    """A weaker attacker: fine-tunes the output head only."""

    def objective(self):
        return HeadOnlyLM()


STUDY = {
    "seed": 0,
    "setting": {"name": "reversed_alphabet", "examples": 3000},
    "model": TINY["model"],
    # Enough to learn both directions (base: 100 % retain and forget; oracle: 100 % retain, 0 % forget).
    "pretrain": {"train": {**TINY["pretrain"]["train"], "lr": 1e-2, "epochs": 20, "max_steps": 300,
                           "eval_every": 300, "checkpoint_every": 300}},
    "unlearn": {"steps": 4, "batch_size": 4, "eval_every": 2, "examples": 60,
                "methods": [{"method": "grad_diff", "lrs": [1e-3]}, {"method": "maxent", "lrs": [1e-3]}],
                "selection": {"min_retain_fraction": 0.0}},
    "distill": {"examples": 200, "alphas": [0.5], "stop_tolerance": None,
                "train": {"batch_size": 4, "max_steps": 4, "eval_every": 2, "warmup_steps": 1}},
    "attack": {"kinds": ["finetune", "head_only"], "steps": 4, "eval_every": 2, "budgets": [2, 4],
               "lrs": [1e-3, 1e-2], "eval_per_cell": 6, "examples": 200, "batch_size": 4},
    "study": {"undo_method": "maxent"},
}


@pytest.mark.slow
def test_a_setting_and_an_attack_kind_registered_outside_the_package_run_a_whole_study(tmp_path):
    cfg = validate_config({**STUDY, "run_dir": str(tmp_path / "runs")})
    assert type(cfg.setting) is ReversedAlphabetConfig
    run_dir = run_study(cfg, progress=False)
    results = json.loads((run_dir / "results.json").read_text())
    metrics = {m["role"]: m["metrics"] for m in results["models"] if m["role"] in ("base", "oracle")}
    assert metrics["base"]["forget"] > 0.9 and metrics["oracle"]["forget"] < 0.1  # the toy setting is real
    assert results["setting"] == "reversed_alphabet" and results["attack_kinds"] == ["finetune", "head_only"]
    roles = {m["role"] for m in results["models"] if m["artifact"]}
    assert {"base", "oracle", "teacher", "distilled", "undo", "oracle_match_base", "oracle_match_random"} <= roles
    attacked = [m for m in results["models"] if m["attacks"]]
    assert attacked and all(set(m["attacks"]) == {"finetune", "head_only"} for m in attacked)
    # The two kinds are different attacks on the same models: different artifacts, different curves. On the oracle
    # (0 % forget), fine-tuning every weight relearns some of the forward runs; the head alone does not.
    oracle = next(m for m in results["models"] if m["role"] == "oracle")
    finetune, head_only = oracle["attacks"]["finetune"], oracle["attacks"]["head_only"]
    assert finetune["artifact"] != head_only["artifact"] and head_only["artifact"].startswith("attack_head_only_")
    assert finetune["best"]["values"][0] == head_only["best"]["values"][0] == oracle["metrics"]["forget"]
    assert finetune["best"]["values"] != head_only["best"]["values"]
    assert set(results["claims"]) == {"finetune", "head_only"} and "R2" in results["claims"]["head_only"]
    report = (run_dir / "report.md").read_text()
    assert "## The paper's claims at this scale (attack: head_only)" in report
    assert "## Relearning attack (attack: head_only)" in report
    assert (run_dir / "report_figures" / "relearning_head_only.png").is_file()
    # The attack stage trained what the kind said: the output head, and nothing else.
    assert TRAINED_BY_HEAD_ONLY and set(TRAINED_BY_HEAD_ONLY) == {"lm_head.weight"}
    assert json.loads((run_dir / head_only["artifact"] / "meta.json").read_text())["attack_kind"] == "head_only"


def test_an_unregistered_setting_or_attack_kind_is_a_one_line_error():
    with pytest.raises(UserError, match="setting.name must be one of .*'reversed_alphabet'.*got 'algebra'"):
        validate_config({"setting": {"name": "algebra"}})
    with pytest.raises(UserError, match="attack: kinds: unknown attack kind 'prefix'; use one of: finetune, head_only, "
                                        "lora"):
        validate_config({"attack": {"kinds": ["prefix"]}})
