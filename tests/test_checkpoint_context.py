"""The context of a checkpoint: a study on `model.pretrained` (or `oracle.pretrained`) trains and evaluates at the
checkpoint's own sequence length when `model.context` is left out (capped at the default, 128), and an explicit
`model.context` longer than the checkpoint's is one line naming both numbers and the fix."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from transformers import GPT2Config, LlamaConfig

from undo.config import validate_config
from undo.core.checkpoints import local_context
from undo.core.models import fresh_model, save_model
from undo.settings.tokenizer import build_char_tokenizer

SPECIAL = {"pad_token_id": 0, "bos_token_id": 2, "eos_token_id": 2}


def llama(folder: Path, positions: int) -> Path:
    config = LlamaConfig(vocab_size=100, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=positions, **SPECIAL)
    save_model(fresh_model(config, seed=0), folder, build_char_tokenizer())
    return folder


def gpt2(folder: Path, positions: int) -> Path:
    config = GPT2Config(vocab_size=100, n_embd=16, n_layer=1, n_head=2, n_positions=positions, **SPECIAL)
    save_model(fresh_model(config, seed=0), folder, build_char_tokenizer())
    return folder


def study(tmp_path: Path, model: dict, **more) -> dict:
    """An arithmetic study on a checkpoint (the demo's own base given back as `model.pretrained` is one)."""
    return {"seed": 0, "run_dir": str(tmp_path / "runs"), "model": model,
            "unlearn": {"methods": [{"method": "grad_diff", "lrs": [1e-3]}]},
            "study": {"undo_method": "none", "distill_methods": []}, **more}


def test_the_context_of_a_checkpoint_is_read_from_its_config(tmp_path):
    assert local_context(str(llama(tmp_path / "llama", 64))) == 64
    assert local_context(str(gpt2(tmp_path / "gpt2", 48))) == 48  # GPT-2 names it n_positions
    assert local_context("some-org/some-hub-model") is None


def test_left_out_the_context_is_the_checkpoints_never_above_the_default(tmp_path):
    short = llama(tmp_path / "short", 64)  # as the demo's base model (context 64) given as model.pretrained
    assert validate_config(study(tmp_path, {"pretrained": str(short)})).model.context == 64
    assert validate_config(study(tmp_path, {"pretrained": str(gpt2(tmp_path / "g", 48))})).model.context == 48
    # A long-context checkpoint (Llama 3's 131072) keeps today's default: batches stay the size they were.
    long = llama(tmp_path / "long", 131072)
    assert validate_config(study(tmp_path, {"pretrained": str(long)})).model.context == 128
    # A context the user sets (at most the checkpoint's) is kept, and a model built here keeps the default.
    assert validate_config(study(tmp_path, {"pretrained": str(short), "context": 32})).model.context == 32
    assert validate_config(study(tmp_path, {"pretrained": str(short), "context": 64})).model.context == 64
    assert validate_config(study(tmp_path, {})).model.context == 128
    # An oracle checkpoint trains at the same context: the shorter of the two decides.
    both = study(tmp_path, {"pretrained": str(long)}, oracle={"pretrained": str(short)})
    assert validate_config(both).model.context == 64
    # The resolved config reloads to the same config (its dump names the context it resolved to).
    resolved = validate_config(study(tmp_path, {"pretrained": str(short)}))
    assert validate_config(resolved.model_dump(mode="json")) == resolved


def test_an_explicit_context_longer_than_the_checkpoints_is_one_line(tmp_path):
    from undo.schema.errors import UserError

    short = llama(tmp_path / "short", 64)
    with pytest.raises(UserError, match=r"invalid config in .*model\.context \(128\).*64.*set model\.context to "
                                        r"64 or less") as err:
        validate_config(study(tmp_path, {"pretrained": str(short), "context": 128}))
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match=r"model\.context \(128\).*oracle\.pretrained.*64"):
        validate_config(study(tmp_path, {"pretrained": str(llama(tmp_path / "long", 4096)), "context": 128},
                              oracle={"pretrained": str(short)}))

    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(study(tmp_path, {"pretrained": str(short), "context": 128})))
    result = subprocess.run([sys.executable, "-m", "undo", "config", str(path)], capture_output=True, text=True,
                            cwd=tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "model.context (128)" in lines[0] and "64" in lines[0]
