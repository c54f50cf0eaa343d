import os
import subprocess
import sys
from pathlib import Path

import pytest

from undo.cli import main
from undo.config import ExperimentConfig, config_hash, load_config
from undo.schema.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def run_main(capsys, *args):
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    return exit_info.value.code, capsys.readouterr()


def write(tmp_path, text):
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("text, key_path, hint", [
    ("model:\n  layrs: 2\n", "model.layrs", "unknown key (did you mean 'layers'?); remove it or use one of: "
                                           "attn_implementation, context, dtype"),
    ("model:\n  layers: two\n", "model.layers", "valid integer"),
    ("model:\n  layers: 0\n", "model.layers", "greater than or equal to 1"),
    ("pretrain:\n  train:\n    lr: -1\n", "pretrain.train.lr", "greater than 0"),
    ("model:\n  width: 100\n  heads: 3\n", "model", "multiple of heads"),
    ("setting:\n  retain: [add, mul]\n", "setting", "must not overlap"),
])
def test_config_errors_are_one_line_with_exit_2(tmp_path, capsys, text, key_path, hint):
    code, out = run_main(capsys, "config", write(tmp_path, text))
    assert code == 2
    lines = out.err.strip().splitlines()
    assert len(lines) == 1, out.err
    assert f"{key_path}:" in lines[0] and hint in lines[0]
    assert "Traceback" not in out.err


def test_bad_override_and_missing_file_exit_2(tmp_path, capsys):
    code, out = run_main(capsys, "config", "--set", "model.layers=-3")
    assert code == 2 and "model.layers" in out.err
    code, out = run_main(capsys, "config", "--set", "nonsense")
    assert code == 2 and "key.path=value" in out.err
    code, out = run_main(capsys, "config", str(tmp_path / "missing.yaml"))
    assert code == 2 and "not found" in out.err
    code, out = run_main(capsys, "config", write(tmp_path, "model: [1, 2\n"))
    assert code == 2 and "not valid YAML" in out.err


@pytest.mark.slow
def test_real_console_entry_point_prints_no_traceback(tmp_path):
    bad = write(tmp_path, "sed: 1\n")
    proc = subprocess.run([sys.executable, "-m", "undo", "pretrain", bad], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert "sed" in proc.stderr and "Traceback" not in proc.stderr


def test_overrides_are_typed_and_nested():
    cfg = load_config(None, ["model.layers=3", "pretrain.train.lr=0.01", "setting.retain=[add]",
                             "pretrain.train.clip=null"])
    assert cfg.model.layers == 3
    assert cfg.pretrain.train.lr == 0.01
    assert cfg.setting.retain == ["add"]
    assert cfg.pretrain.train.clip is None


def test_hash_is_stable_and_sensitive(tmp_path):
    a = load_config(write(tmp_path, "seed: 1\nmodel:\n  layers: 3\n  width: 64\n"))
    b_path = tmp_path / "b.yaml"
    b_path.write_text("model:\n  width: 64\n  layers: 3\nseed: 1\n")  # same content, other key order
    b = load_config(b_path)
    assert config_hash(a) == config_hash(b)
    assert config_hash(a) != config_hash(load_config(b_path, ["seed=2"]))
    # The hash must not drift across Python processes (no dict-order or hash-randomisation effects).
    other_process = subprocess.run(
        [sys.executable, "-c", "from undo.config import ExperimentConfig, config_hash; "
                               "print(config_hash(ExperimentConfig()))"],
        capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "123"}, check=True)
    assert other_process.stdout.strip() == config_hash(ExperimentConfig())


def test_no_file_is_the_embedded_demo_study_and_configs_demo_is_that_file():
    assert load_config(None) == load_config(ROOT / "configs" / "demo.yaml")
    assert (ROOT / "configs" / "demo.yaml").resolve() == (ROOT / "undo" / "configs" / "demo.yaml").resolve()
    assert load_config(None) != ExperimentConfig()  # the demo is sized for minutes; the defaults are general


def test_unlearning_knobs_are_checked_when_the_config_loads(tmp_path, capsys):
    code, out = run_main(capsys, "config", "--set", "unlearn.methods=[{method: grad_diff, knobs: {lambda_: 2}}]")
    assert code == 2
    assert "unlearn.methods.0: unknown knob 'lambda_' for method 'grad_diff' (allowed: retain_weight)" in out.err


def test_user_error_type_for_library_callers():
    with pytest.raises(UserError, match="model.heads"):
        load_config(None, ["model.heads=0"])


def test_a_layer_knob_past_the_model_fails_at_load_with_the_fix(capsys):
    # The arithmetic study's RMU (its third method) steers block 2.
    code, out = run_main(capsys, "config", str(ROOT / "configs" / "arithmetic.yaml"), "--set", "model.layers=2")
    assert code == 2
    assert out.err.strip().endswith("unlearn.methods.2: rmu layer 2 is out of range for a 2-block model; set "
                                    "knobs.layer to 0..1")
