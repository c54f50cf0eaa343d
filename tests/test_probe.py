"""`undo probe`: what a saved model writes after a prompt (greedy), or its setting's evaluation, so that a user can
see a behaviour that remains; prompts that do not fit the context are one line."""

from __future__ import annotations

import pytest
import torch
import yaml

from tests.studies import study_config
from tests.test_bad_inputs import run_cli
from undo.api import probe
from undo.cli import main
from undo.config import validate_config
from undo.core.models import load_model, load_tokenizer


def test_probe_is_the_greedy_continuation_after_the_end_of_text_opener(finished_study):
    cfg = validate_config(study_config(finished_study))
    (generation,) = probe(cfg, finished_study / "base", ["12 + 5 ="], max_new_tokens=6)
    model = load_model(finished_study / "base" / "model").eval()
    tokenizer = load_tokenizer(str(finished_study / "base" / "model"), cfg.model)
    ids = [tokenizer.eos_token_id, *tokenizer("12 + 5 =", add_special_tokens=False)["input_ids"]]
    assert generation.prompt_tokens == len(ids)
    written = []
    with torch.no_grad():  # greedy decoding by hand: the argmax of the next token, six times or to end-of-text
        for _ in range(6):
            following = int(model(torch.tensor([ids + written])).logits[0, -1].argmax())
            if following == tokenizer.eos_token_id:
                break
            written.append(following)
    assert generation.completion == tokenizer.decode(written, skip_special_tokens=True)


def test_probe_on_the_command_line_and_its_bad_input(finished_study, tmp_path, capsys):
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump(study_config(finished_study)))
    with pytest.raises(SystemExit) as exit_info:
        main(["probe", str(finished_study / "base"), "--prompt", "3 * 4 =", "--prompt", "9 - 2 =",
              "--config", str(config)])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "3 * 4 =" in out and "9 - 2 =" in out
    with pytest.raises(SystemExit) as exit_info:  # no prompt: the setting's evaluation
        main(["probe", str(finished_study / "base"), "--config", str(config)])
    assert exit_info.value.code == 0 and "retain" in capsys.readouterr().out
    long = " ".join(["1 + 1"] * 40)
    assert "exceeds the model's context" in run_cli(["probe", finished_study / "base", "--prompt", long,
                                                     "--config", config], capsys)
    assert "with 30 new token(s) it exceeds" in run_cli(["probe", finished_study / "base", "--prompt", "1 + 1 =",
                                                         "--max-new-tokens", 30, "--config", config], capsys)
    assert "no model at" in run_cli(["probe", tmp_path, "--prompt", "1 + 1 =", "--config", config], capsys)
