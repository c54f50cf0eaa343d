"""The bad-input census: every input a user (or a crash) can give `undo` that is wrong ends with exactly one line
on stderr, `undo: error: ...`, and exit code 2 — never a traceback, never a silent run.

Four families: config values (each key of the schema given a value it must refuse), malformed config files,
command-line misuse, and damaged or foreign model folders. Each case runs the real CLI entry point in this
process (`undo.cli.main`), so a case that is wrongly accepted runs the command and fails here. The cases of
tests/test_trust.py (tampered artifacts, damaged checkpoints, locks, killed workers) are the fifth family.
"""

from __future__ import annotations

import copy
import json
import math
import shutil
from pathlib import Path

import pytest
import yaml

from tests.conftest import TINY
from tests.test_language import language_config
from undo.cli import main
from undo.config import validate_config
from undo.stages.pretrain import pretrain

DEMO = yaml.safe_load((Path(__file__).parents[1] / "undo" / "configs" / "demo.yaml").read_text())
NAN, INF = math.nan, math.inf


def run_cli(argv: list[str], capsys) -> str:
    """Runs `undo ARGV`; asserts exit code 2 and exactly one `undo: error:` line on stderr; returns that line."""
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2, f"exit {exit_info.value.code}: {err}"
    assert len(err) == 1, err
    assert err[0].startswith("undo: error: ") and "Traceback" not in err[0], err
    return err[0]


def with_value(raw: dict, dotted: str, value) -> dict:
    """A copy of `raw` with the value at `dotted` (a.b.0.c; a list index is a number) set, made when missing."""
    raw = copy.deepcopy(raw)
    *parents, last = dotted.split(".")
    node = raw
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return raw


# (dotted key, bad value, a fragment the line must contain: the key's own name unless given)
CONFIG_VALUES = [
    ("seed", -1, None), ("seed", 2**32, None), ("seed", "zero", None), ("seed", 1.5, None), ("seed", True, None),
    ("seed", None, None),
    ("run_dir", 5, None), ("run_dir", [], None),
    ("setting.name", "nosuch", "name"), ("setting.name", 3, "name"),
    ("setting.examples", 0, None), ("setting.examples", -5, None), ("setting.examples", 1.5, None),
    ("setting.examples", True, None), ("setting.examples", "many", None), ("setting.examples", NAN, None),
    ("setting.operation_weights", {"add": NAN, "sub": 1, "mul": 1, "div": 1}, "operation_weights"),
    ("setting.operation_weights", {"add": -1, "sub": 1, "mul": 1, "div": 1}, "operation_weights"),
    ("setting.operation_weights", {"add": INF, "sub": 1, "mul": 1, "div": 1}, "operation_weights"),
    ("setting.operation_weights", {"pow": 1.0}, "operation_weights"),
    ("setting.operation_weights", {"add": 0, "sub": 0, "mul": 0, "div": 0}, "operation_weights"),
    ("setting.operation_weights", {"add": True}, "operation_weights"),
    ("setting.word_problem_weight", -0.1, None), ("setting.word_problem_weight", NAN, None),
    ("setting.retain", [], "retain"), ("setting.retain", ["pow"], "retain"), ("setting.retain", ["mul"], "retain"),
    ("setting.retain", "add", "retain"), ("setting.forget", [], "forget"), ("setting.forget", ["add"], "forget"),
    ("setting.forget", ["div", "div"], "forget"),
    ("setting.eval_per_cell", 0, None), ("setting.eval_per_cell", -1, None), ("setting.eval_per_cell", True, None),
    ("setting.eval_formats", ["nosuch"], None), ("setting.eval_formats", [], None),
    ("setting.eval_seed", True, None), ("setting.eval_seed", -1, None),
    ("setting.eval_batch_size", 0, None), ("setting.nosuch", 1, "nosuch"),
    ("tracking.backend", "comet", "backend"), ("tracking.project", "", "project"), ("tracking.nosuch", 1, "nosuch"),
    ("model.layers", 0, None), ("model.layers", True, None), ("model.layers", -1, None), ("model.layers", 1.5, None),
    ("model.width", 0, None), ("model.width", 63, "width"), ("model.width", True, None),
    ("model.heads", 0, None), ("model.heads", 3, "heads"), ("model.kv_heads", 0, None), ("model.kv_heads", 3, None),
    ("model.mlp_width", 0, None), ("model.context", 0, None), ("model.vocab", 0, None),
    ("model.vocab", 10, "vocab"), ("model.init_std", -1, None), ("model.init_std", NAN, None),
    ("model.dtype", "float13", None), ("model.attn_implementation", "nosuch", None),
    ("model.pretraining_tokens", -1, None), ("model.trust_remote_code", "yes", None),
    ("model.gradient_checkpointing", 1, None), ("model.nosuch", 1, "nosuch"),
    ("pretrain.train.batch_size", 0, None), ("pretrain.train.batch_size", True, None),
    ("pretrain.train.grad_accum", 0, None), ("pretrain.train.lr", 0, None), ("pretrain.train.lr", -1, None),
    ("pretrain.train.lr", NAN, None), ("pretrain.train.lr", INF, None), ("pretrain.train.lr", "fast", None),
    ("pretrain.train.schedule", "nosuch", None), ("pretrain.train.warmup_steps", -1, None),
    ("pretrain.train.min_lr_ratio", -0.1, None), ("pretrain.train.min_lr_ratio", 2, None),
    ("pretrain.train.weight_decay", -1, None), ("pretrain.train.betas", [0.9], None),
    ("pretrain.train.betas", [1.5, 0.9], None), ("pretrain.train.eps", -1, None),
    ("pretrain.train.clip", -1, None), ("pretrain.train.epochs", 0, None), ("pretrain.train.epochs", -1, None),
    ("pretrain.train.max_steps", 0, None), ("pretrain.train.max_steps", -1, None),
    ("pretrain.train.eval_every", 0, None), ("pretrain.train.checkpoint_every", 0, None),
    ("pretrain.train.log_every", 0, None), ("pretrain.train.mixed_precision", "fp8", None),
    ("pretrain.train.compile", "yes", None), ("pretrain.train.compile", 1, None), ("unlearn.compile", "no", None),
    ("attack.compile", 0, None), ("distill.train.compile", "true", None),
    ("pretrain.train.nosuch", 1, "nosuch"), ("pretrain.oracle", "maybe", None),
    ("oracle.pretrained", 5, None), ("oracle.nosuch", 1, "nosuch"),
    ("unlearn.methods", [], "methods"),
    ("unlearn.methods", [{"method": "nosuch", "lrs": [1e-3]}], "method"),
    ("unlearn.methods", [{"method": "grad_diff", "lrs": []}], "lrs"),
    ("unlearn.methods", [{"method": "grad_diff", "lrs": [-1e-3]}], "lrs"),
    ("unlearn.methods", [{"method": "grad_diff", "lrs": [NAN]}], "lrs"),
    ("unlearn.methods", [{"method": "grad_diff", "lrs": [1e-3, 1e-3]}], "lrs"),
    ("unlearn.methods", [{"lrs": [1e-3]}], "method"),
    ("unlearn.methods", [{"method": "grad_diff", "lrs": [1e-3]}, {"method": "grad_diff", "lrs": [1e-4]}], "grad_diff"),
    ("unlearn.methods", [{"method": "grad_diff", "lrs": [1e-3], "knobs": {"nosuch": 1}}], "nosuch"),
    ("unlearn.methods", [{"method": "grad_diff", "lrs": [1e-3], "knobs": {"retain_weight": []}}], "retain_weight"),
    ("unlearn.methods", [{"method": "grad_diff", "lrs": [1e-3], "knobs": {"retain_weight": NAN}}], "retain_weight"),
    ("unlearn.methods", [{"method": "grad_diff", "lrs": [1e-3], "sam_rho": -1}], "sam_rho"),
    ("unlearn.methods", [{"method": "maxent", "lrs": [1e-3]},
                         {"method": "rmu", "lrs": [1e-3], "knobs": {"layer": 99}}], "layer"),
    ("unlearn.methods", {"method": "grad_diff", "lrs": [1e-3]}, "methods"),
    ("unlearn.steps", 0, None), ("unlearn.steps", True, None), ("unlearn.batch_size", 0, None),
    ("unlearn.examples", 0, None), ("unlearn.eval_every", 0, None), ("unlearn.clip", -1, None),
    ("unlearn.selection.min_retain_fraction", 1.5, None),
    ("unlearn.selection.min_retain_fraction", -0.1, None), ("unlearn.selection.min_retain_fraction", NAN, None),
    ("attack.data", "nosuch", None), ("attack.lrs", [], None), ("attack.lrs", [0], None),
    ("attack.lrs", [NAN], None), ("attack.lrs", [1e-3, 1e-3], None), ("attack.steps", 0, None),
    ("attack.eval_every", 0, None), ("attack.budgets", [], None), ("attack.budgets", [1000], "budgets"),
    ("attack.budgets", [-1], None), ("attack.max_retain_drop", -0.1, None), ("attack.max_retain_drop", NAN, None),
    ("attack.eval_per_cell", 0, None), ("attack.examples", 0, None), ("attack.batch_size", 0, None),
    ("attack.kinds", [], None), ("attack.kinds", ["nosuch"], None), ("attack.kinds", ["finetune", "finetune"], None),
    ("distill.init", "nosuch", None), ("distill.alphas", [], None), ("distill.alphas", [1.5], None),
    ("distill.alphas", [-0.1], None), ("distill.alphas", [NAN], None), ("distill.alphas", [0.3, 0.3], None),
    ("distill.beta", -1, None), ("distill.beta", NAN, None), ("distill.stop_tolerance", -5, None),
    ("distill.stop_tolerance", INF, None), ("distill.stop_tolerance", NAN, None), ("distill.temperature", 0, None),
    ("distill.temperature", -1, None), ("distill.examples", 0, None), ("distill.student_model", {"layers": 0}, None),
    ("distill.train.max_steps", 0, None),
    ("study.seeds", [], None), ("study.seeds", [0, 0], None), ("study.seeds", [-1], None),
    ("study.distill_methods", ["nosuch"], None), ("study.undo_method", "nosuch", None),
    ("study.attack_teachers", ["nosuch"], None), ("study.attack_sweep_points", "sometimes", None),
    ("study.oracle_matching", 1, None), ("study.nosuch", 1, "nosuch"), ("nosuch", 1, "nosuch"),
    ("study.rounds", [{"forget": ["add"]}], "not part of the forget side"),
    ("study.rounds", [{"forget": ["mul"], "forget_data": "observed.txt"}], "once"), ("study.rounds", [{}], "once"),
    ("study.rounds", [{"forget_data": "/nonexistent/observed.txt"}], "no file at"),
    ("study.rounds", [{"forget": []}], None), ("study.rounds", [{"forget": ["mul", "mul"]}], "twice"),
    ("unlearn.start", "/nonexistent/teacher", "not a finished model artifact"), ("study.rounds", "mul", None), ("study.rounds", [{"forget": ["mul"], "steps": 5}], "steps"),
]


@pytest.mark.parametrize("dotted, value, fragment", CONFIG_VALUES,
                         ids=[f"{d}={v!r}" for d, v, _ in CONFIG_VALUES])
def test_a_bad_config_value_is_one_line_naming_the_key(tmp_path, capsys, dotted, value, fragment):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(with_value(DEMO, dotted, value)))
    line = run_cli(["config", path], capsys)
    assert (fragment or dotted.split(".")[-1]) in line, line


LANGUAGE_VALUES = [
    ("setting.retain_corpus", "{missing}", "missing.txt"), ("setting.forget_corpus", "{missing}", "missing.txt"),
    ("setting.retain_corpus", [], "retain_corpus"), ("setting.forget_corpus", "{folder}", "is a folder"),
    ("setting.retain_corpus", "{empty}", "empty.txt"), ("setting.forget_corpus", "{binary}", "binary.txt"),
    ("setting.retain_documents", 10_000, "retain_documents"), ("setting.forget_documents", 10_000, "forget_documents"),
    ("setting.heldout_documents", 0, "heldout_documents"), ("setting.eval_documents", 1000, "eval_documents"),
    ("setting.vocab_size", 100, "vocab_size"), ("setting.retain_script", "cyrillic", "retain_script"),
    ("setting.forget_script", "latin", "forget_corpus"), ("model.vocab", 128, "model.vocab"),
    ("unlearn.selection.min_retain_fraction", 0, "min_retain_fraction"), ("setting.text_field", "body", None),
]


@pytest.mark.parametrize("dotted, value, fragment", LANGUAGE_VALUES,
                         ids=[f"{d}={v!r}" for d, v, _ in LANGUAGE_VALUES])
def test_a_bad_language_setting_is_one_line_before_any_stage(tmp_path, capsys, dotted, value, fragment):
    raw = language_config(tmp_path)
    (tmp_path / "folder").mkdir()
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "binary.txt").write_bytes(bytes(range(256)) * 40)
    if isinstance(value, str):
        value = value.format(missing=tmp_path / "missing.txt", folder=tmp_path / "folder",
                             empty=tmp_path / "empty.txt", binary=tmp_path / "binary.txt")
    if dotted == "setting.text_field":  # a JSONL corpus whose records have no such field
        jsonl = tmp_path / "retain.jsonl"
        jsonl.write_text("\n".join(json.dumps({"text": f"a document {i}"}) for i in range(400)))
        raw = with_value(raw, "setting.retain_corpus", str(jsonl))
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(with_value(raw, dotted, value)))
    line = run_cli(["data", path], capsys)  # reads the corpora, as the first stage would
    assert (fragment or dotted.split(".")[-1]) in line, line
    assert not (tmp_path / "runs").exists()  # nothing ran


KNOWLEDGE_VALUES = [
    ("setting.wordnet", "{missing}", "does not exist"), ("setting.wordnet", "{damaged}", "is damaged"),
    ("setting.wordnet", "{foreign}", "not a synset record"),
    ("setting.forget_lexnames", ["animals"], "'animals' is not a WordNet lexicographer category"),
    ("setting.forget_lexnames", ["animal", "artifact"], "leaves no retain synsets"),
    ("setting.forget_lexnames", [], "forget_lexnames"),
    ("setting.questions", 60, "must hold the 2 x setting.questions"), ("setting.forget_synsets", 10, "forget_synsets"),
    ("setting.heldout_documents", 55, "questions need more"),
    ("setting.retain_synsets", 5000, "retain_synsets must be between"),
    ("setting.choice_metric", "f1", "choice_metric"), ("model.vocab", 128, "model.vocab"),
]


@pytest.mark.parametrize("dotted, value, fragment", KNOWLEDGE_VALUES,
                         ids=[f"{d}={v!r}" for d, v, _ in KNOWLEDGE_VALUES])
def test_a_bad_knowledge_setting_is_one_line_before_any_stage(tmp_path, capsys, dotted, value, fragment):
    """A missing or damaged WordNet file, an unknown category, a forget list that leaves no retain synsets, sizes
    the file cannot hold: one line each, before any stage."""
    from tests.test_knowledge import knowledge_config

    raw = knowledge_config(tmp_path)
    if value == "{damaged}":
        value = tmp_path / "damaged.jsonl.xz"
        value.write_bytes(Path(raw["setting"]["wordnet"]).read_bytes()[:200])
    elif value == "{foreign}":
        value = tmp_path / "foreign.jsonl"
        value.write_text('{"text": "not a synset"}\n')
    elif value == "{missing}":
        value = tmp_path / "missing.jsonl.xz"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(with_value(raw, dotted, str(value) if isinstance(value, Path) else value)))
    line = run_cli(["data", path], capsys)  # reads the file and splits it, as the first stage would
    assert fragment in line, line
    assert not (tmp_path / "runs").exists()  # nothing ran


CONFIG_FILES = {
    "a list": b"- 1\n- 2\n",
    "a scalar": b"42\n",
    "duplicated key": b"seed: 0\nseed: 1\n",
    "duplicated nested key": b"model:\n  layers: 2\n  layers: 3\n",
    "yaml syntax error": b"model: {layers: 2\n",
    "tab indentation": b"model:\n\tlayers: 2\n",
    "non-utf-8": "seed: 0\nrun_dir: runs/d\xe9mo\n".encode("latin-1"),
    "binary": bytes(range(256)),
    "json missing a brace": b'{"seed": 0',
    "a python pickle": b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00K\x01.",
    "yaml tag": b"seed: !!python/object/apply:os.system ['true']\n",
}


@pytest.mark.parametrize("name", list(CONFIG_FILES))
def test_a_malformed_config_file_is_one_line_naming_it(tmp_path, capsys, name):
    path = tmp_path / "bad.yaml"
    path.write_bytes(CONFIG_FILES[name])
    line = run_cli(["config", path], capsys)
    assert "bad.yaml" in line, line


# argv with {tmp} for the test's folder, which holds a_file, a_folder and empty_artifact/model/
CLI_MISUSE = {
    "report below a file": ["report", "--out", "{tmp}/a_file/report.md", "--run-dir", "{tmp}/never_ran"],
    "unknown command": ["nosuch"],
    "unknown flag": ["run", "--nosuch"],
    "workers 0": ["run", "--workers", "0"],
    "workers -1": ["run", "--workers", "-1"],
    "workers not a number": ["run", "--workers", "two"],
    "unknown executor": ["run", "--executor", "slurm"],
    "ray executor with workers": ["run", "--executor", "ray", "--workers", "2"],
    "--address without ray": ["run", "--address", "auto"],
    "show -1": ["data", "--show", "-1"],
    "which both": ["data", "--which", "both"],
    "--only both": ["pretrain", "--only", "both"],
    "--set without =": ["config", "--set", "model.layers"],
    "--set unknown key": ["config", "--set", "nosuch.key=1"],
    "--set not a number": ["config", "--set", "model.layers=abc"],
    "--set a boolean for a number": ["config", "--set", "model.layers=true"],
    "--set into a scalar": ["config", "--set", "seed.x=1"],
    "config missing": ["config", "{tmp}/missing.yaml"],
    "config is a folder": ["config", "{tmp}/a_folder"],
    "run-dir is a file": ["pretrain", "--run-dir", "{tmp}/a_file"],
    "eval without a model": ["eval"],
    "eval of a missing folder": ["eval", "{tmp}/missing"],
    "eval of a file": ["eval", "{tmp}/a_file"],
    "eval of an empty model folder": ["eval", "{tmp}/empty_artifact"],
    "attack without targets": ["attack"],
    "attack of a missing folder": ["attack", "{tmp}/missing"],
    "attack of a folder without model/": ["attack", "{tmp}/a_folder"],
    "attack: --oracle without --unlearn-only": ["attack", "{tmp}/empty_artifact", "--oracle", "empty_artifact"],
    "attack: unknown kind": ["attack", "{tmp}/empty_artifact", "--kind", "nosuch"],
    "distill of a missing teacher": ["distill", "{tmp}/missing", "--run-dir", "{tmp}/runs"],
    "distill: unknown init": ["distill", "{tmp}/empty_artifact", "--init", "nosuch", "--run-dir", "{tmp}/runs"],
    "distill: --init model without --start": ["distill", "{tmp}/empty_artifact", "--init", "model"],
    "distill: --start without --init model": ["distill", "{tmp}/empty_artifact", "--init", "random",
                                              "--start", "{tmp}/empty_artifact"],
    "verify a missing folder": ["verify", "{tmp}/missing"],
    "verify a file": ["verify", "{tmp}/a_file"],
    "report with nothing run": ["report", "--run-dir", "{tmp}/never_ran"],
    "report --out at a folder": ["report", "--out", "{tmp}/a_folder", "--run-dir", "{tmp}/never_ran"],
}


@pytest.mark.parametrize("name", list(CLI_MISUSE))
def test_command_line_misuse_is_one_line(tmp_path, capsys, monkeypatch, name):
    monkeypatch.chdir(tmp_path)  # the demo config's relative run_dir lands here, if anything wrongly ran
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "a_folder").mkdir()
    (tmp_path / "empty_artifact" / "model").mkdir(parents=True)
    run_cli([a.format(tmp=tmp_path) for a in CLI_MISUSE[name]], capsys)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "never_ran").exists()


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny pretrained base artifact and the config it was trained under."""
    root = tmp_path_factory.mktemp("census")
    raw = {**TINY, "run_dir": str(root / "runs")}
    artifact = pretrain(validate_config(raw), "base", progress=False)
    config = root / "tiny.yaml"
    config.write_text(yaml.safe_dump(raw))
    return artifact, config


def _edit_json(name: str, change):
    def damage(model: Path) -> None:
        path = model / name
        path.write_text(json.dumps(change(json.loads(path.read_text()))))
    return damage


def _truncate(name: str, keep: float = 0.5):
    def damage(model: Path) -> None:
        data = (model / name).read_bytes()
        (model / name).write_bytes(data[: int(len(data) * keep)])
    return damage


def _write(name: str, content: bytes):
    return lambda model: (model / name).write_bytes(content)


def _delete(name: str):
    return lambda model: (model / name).unlink()


def _swap_two_tokens(model: Path) -> None:
    path = model / "tokenizer.json"
    tokenizer = json.loads(path.read_text())
    vocab = tokenizer["model"]["vocab"]
    a, b = list(vocab)[10], list(vocab)[11]
    vocab[a], vocab[b] = vocab[b], vocab[a]
    path.write_text(json.dumps(tokenizer))


def _weights_header(model: Path) -> None:
    data = bytearray((model / "model.safetensors").read_bytes())
    data[8:16] = b"{{{{{{{{"  # the JSON header right after its 8-byte length
    (model / "model.safetensors").write_bytes(bytes(data))


def _flip_one_bit(model: Path) -> None:
    data = bytearray((model / "model.safetensors").read_bytes())
    data[-5] ^= 1  # inside the last tensor's values: still valid safetensors, other weights
    (model / "model.safetensors").write_bytes(bytes(data))


def _pickle_instead(model: Path) -> None:
    import torch

    (model / "model.safetensors").unlink()
    torch.save({"x": torch.zeros(1)}, model / "pytorch_model.bin")


DAMAGED_MODELS = {
    "weights truncated": _truncate("model.safetensors"),
    "weights cut to 100 bytes": _truncate("model.safetensors", keep=0.0003),
    "weights empty": _write("model.safetensors", b""),
    "weights are text": _write("model.safetensors", b"not weights at all\n"),
    "weights header garbled": _weights_header,
    "weights with one bit flipped": _flip_one_bit,  # `undo eval` read them silently (issue 29, item 4)
    "weights deleted": _delete("model.safetensors"),
    "weights only as a pickle": _pickle_instead,
    "config.json empty": _write("config.json", b""),
    "config.json truncated": _truncate("config.json"),
    "config.json a list": _write("config.json", b"[1, 2]"),
    "config.json binary": _write("config.json", bytes(range(256))),
    "config.json deleted": _delete("config.json"),
    "config.json says BERT": _edit_json("config.json", lambda c: {
        "model_type": "bert", "architectures": ["BertLMHeadModel"], "vocab_size": c["vocab_size"],
        "hidden_size": c["hidden_size"], "num_hidden_layers": 1, "num_attention_heads": 2,
        "intermediate_size": 64, "is_decoder": True}),
    "config.json unknown model_type": _edit_json("config.json", lambda c: {**c, "model_type": "nosuch"}),
    "config.json one layer too many": _edit_json("config.json", lambda c: {**c, "num_hidden_layers": 2}),
    "config.json wider": _edit_json("config.json", lambda c: {**c, "hidden_size": 64}),
    "config.json another vocabulary": _edit_json("config.json", lambda c: {**c, "vocab_size": 50}),
    "tokenizer.json deleted": _delete("tokenizer.json"),
    "tokenizer.json truncated": _truncate("tokenizer.json"),
    "tokenizer.json two tokens swapped": _swap_two_tokens,
}


@pytest.mark.parametrize("name", list(DAMAGED_MODELS))
@pytest.mark.parametrize("command", ["eval", "attack"])
def test_a_damaged_or_foreign_model_folder_is_one_line_naming_it(trained, tmp_path, capsys, name, command):
    artifact, config = trained
    target = tmp_path / "suspect"
    shutil.copytree(artifact, target)
    DAMAGED_MODELS[name](target / "model")
    argv = [command, target, "--config", config]
    if command == "attack":
        argv += ["--run-dir", tmp_path / "runs", "--no-progress"]
    line = run_cli(argv, capsys)
    assert "suspect" in line, line
    assert not list(tmp_path.glob("runs/**/meta.json"))  # no attack result was written for it


def test_a_report_below_a_file_is_one_line_naming_the_file(tmp_path, capsys):
    """Issue 29, item 4: `undo report --out FILE/report.md` ended in NotADirectoryError when making the figures'
    folder; it is refused before anything is read or written."""
    (tmp_path / "a_file").write_text("x")
    line = run_cli(["report", "--out", tmp_path / "a_file" / "report.md", "--run-dir", tmp_path / "never_ran"], capsys)
    assert f"{tmp_path / 'a_file'} is a file, not a folder" in line
    assert not (tmp_path / "never_ran").exists()
