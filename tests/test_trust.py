"""Trust no file: tampered, swapped, truncated and foreign files are detected, damaged checkpoints and caches are set
aside and recomputed to the same numbers, one undo process writes a run directory at a time. (A killed `--workers`
run leaving no process behind and resuming to the serial run's weights: tests/test_study.py.)"""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tests.conftest import CAPABLE, TINY, interrupt_pretraining
from tests.studies import small_study_config, wait_for
from undo.cli import main
from undo.config import validate_config
from undo.schema.errors import UserError
from undo.core.models import load_model, save_model
from undo.settings.tokenizer import build_char_tokenizer
from undo.stages.attack import attack
from undo.stages.pretrain import pretrain

ROOT = Path(__file__).resolve().parents[1]
ATTACK = {"lrs": [1e-3, 1e-2], "steps": 4, "eval_every": 2, "budgets": [2, 4], "batch_size": 4, "examples": 200,
          "eval_per_cell": 3}


def tiny(tmp_path, **changes):
    return validate_config({**TINY, "run_dir": str(tmp_path / "runs"), "attack": ATTACK, **changes})


def capable(tmp_path, **changes):
    """`tiny` on the capable fixture: where numbers are compared, they are not zeros."""
    return validate_config({**CAPABLE, "run_dir": str(tmp_path / "runs"), "attack": ATTACK, **changes})


@pytest.fixture
def cli(capsys, monkeypatch):
    """`undo ARGS` in this process, from the folder `cwd`: (exit code, stderr lines). (The console script's own exit
    path: tests/test_config.py.)"""
    from undo.cli import main

    def run(*args: str, cwd: Path | None = None) -> tuple[int, list[str]]:
        if cwd is not None:
            monkeypatch.chdir(cwd)
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_:
            main(list(args))
        return exit_.value.code or 0, capsys.readouterr().err.strip().splitlines()
    return run


def flip_byte(path: Path, offset_from_end: int = 16) -> None:
    data = bytearray(path.read_bytes())
    data[-offset_from_end] ^= 0xFF
    path.write_bytes(bytes(data))


def test_edited_weights_are_detected_named_and_repaired(tmp_path, capsys):
    cfg = tiny(tmp_path)
    base = pretrain(cfg, "base", progress=False)
    clean = (base / "model" / "model.safetensors").read_bytes()
    flip_byte(base / "model" / "model.safetensors")  # the header is intact: it still loads
    with pytest.raises(UserError, match=r"model\.safetensors changed since it was made; delete .*undo verify --repair"):
        pretrain(cfg, "base", progress=False)
    with pytest.raises(SystemExit) as exit_:
        main(["verify", str(tmp_path / "runs")])
    assert exit_.value.code == 2 and "1 of" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["verify", str(tmp_path / "runs"), "--repair"])
    assert exit_.value.code == 0 and list((tmp_path / "runs").glob("base.damaged-*"))
    again = pretrain(cfg, "base", progress=False)  # recomputed, to the same weights
    assert (again / "model" / "model.safetensors").read_bytes() == clean


def test_swapped_base_and_oracle_weights_are_detected(tmp_path):
    cfg = tiny(tmp_path)
    base, oracle = pretrain(cfg, "base", progress=False), pretrain(cfg, "oracle", progress=False)
    a, b = base / "model" / "model.safetensors", oracle / "model" / "model.safetensors"
    a.rename(tmp_path / "swap")
    b.rename(a)
    (tmp_path / "swap").rename(b)
    for which in ("base", "oracle"):
        with pytest.raises(UserError, match="changed since it was made"):
            pretrain(cfg, which, progress=False)
    with pytest.raises(UserError, match="changed since it was made"):
        attack(cfg, base, progress=False)  # a later stage refuses the damaged input too


def test_a_foreign_config_json_is_refused(tmp_path):
    cfg = tiny(tmp_path)
    base = pretrain(cfg, "base", progress=False)
    mine = tmp_path / "mine" / "model"
    shutil.copytree(base / "model", mine)
    config = json.loads((mine / "config.json").read_text())
    (mine / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 2}))  # 2 blocks over 1 block's
    with pytest.raises(UserError, match=r"do not fit its config\.json \(\d+ missing"):
        load_model(mine)
    bert = {"model_type": "bert", "architectures": ["BertLMHeadModel"], "vocab_size": 100, "hidden_size": 32,
            "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64, "is_decoder": True}
    (mine / "config.json").write_text(json.dumps(bert))
    with pytest.raises(UserError, match=r"do not fit its config\.json"):
        attack(cfg, mine.parent, progress=False)
    # The same weights under another config.json are another model: an old attack result is not reused for them.
    (mine / "config.json").write_text(json.dumps({**config, "rms_norm_eps": 1e-5}))
    first = attack(cfg, mine.parent, progress=False)
    (mine / "config.json").write_text(json.dumps({**config, "rms_norm_eps": 1e-4}))
    assert attack(cfg, mine.parent, progress=False) != first


@pytest.mark.parametrize("damage, fragment", [
    (lambda p: p.write_text(p.read_text()[:40]), "JSONDecodeError"),
    (lambda p: p.write_text(""), "JSONDecodeError"),
    (lambda p: p.write_text("[1, 2]"), "not an artifact.s record: no key"),
    (lambda p: p.write_text(json.dumps({k: v for k, v in json.loads(p.read_text()).items() if k != "key"})),
     "not an artifact.s record: no key"),
    (lambda p: p.write_bytes(b"\xff\xfe binary"), "UnicodeDecodeError"),
])
def test_a_damaged_meta_json_is_one_line_naming_the_folder(tmp_path, damage, fragment):
    cfg = tiny(tmp_path)
    base = pretrain(cfg, "base", progress=False)
    damage(base / "meta.json")
    with pytest.raises(UserError, match=rf"base/meta\.json is damaged \({fragment}.*delete .*base to recompute") as err:
        pretrain(cfg, "base", progress=False)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", ["model.safetensors", "optimizer.safetensors", "state.json"])
def test_a_damaged_checkpoint_is_set_aside_and_the_run_recovers_to_the_same_numbers(tmp_path, monkeypatch, capsys,
                                                                                     name):
    reference = pretrain(tiny(tmp_path / "ref"), "base", progress=False)
    cfg = tiny(tmp_path)
    interrupt_pretraining(cfg, monkeypatch)
    checkpoint = tmp_path / "runs" / ".base.partial" / "checkpoint"
    flip_byte(checkpoint / name, 3 if name == "state.json" else 16)  # a bit flip: same size, same header
    capsys.readouterr()
    resumed = pretrain(cfg, "base", progress=False)
    assert "damaged" in capsys.readouterr().err and list(resumed.glob("checkpoint.damaged-*"))  # kept, not deleted
    assert load_file(resumed / "model" / "model.safetensors").keys() == load_file(
        reference / "model" / "model.safetensors").keys()
    ref, res = (json.loads((p / "meta.json").read_text()) for p in (reference, resumed))
    assert res["model_sha256"] == ref["model_sha256"] and res["final_metrics"] == ref["final_metrics"]


def _drop_from_state(field: str):
    def damage(checkpoint: Path) -> None:
        state = json.loads((checkpoint / "state.json").read_text())
        (checkpoint / "state.json").write_text(json.dumps({k: v for k, v in state.items() if k != field}))
    return damage


def _log(edit):
    def damage(checkpoint: Path) -> None:
        log = checkpoint.parent / "metrics.jsonl"
        log.write_bytes(edit(log.read_bytes()))
    return damage


@pytest.mark.parametrize("name, damage", [
    ("state.json without its step", _drop_from_state("step")),
    ("state.json without the log's length", _drop_from_state("log_bytes")),
    ("state.json without the optimizer's groups", _drop_from_state("param_groups")),
    ("an emptied metrics.jsonl", _log(lambda data: b"")),
    ("a metrics.jsonl cut short", _log(lambda data: data[: len(data) // 3])),
    ("a garbled line in metrics.jsonl", _log(lambda data: b"{not json\n" + data)),
])
def test_a_checkpoint_with_damaged_records_is_set_aside_and_the_run_recovers(tmp_path, monkeypatch, capsys, name,
                                                                             damage):
    """Issue 29, item 4: a checkpoint whose state lacks a field, or whose log no longer reaches where it was saved,
    ended in a traceback (or resumed onto a log padded with zero bytes)."""
    reference = pretrain(tiny(tmp_path / "ref"), "base", progress=False)
    cfg = tiny(tmp_path)
    interrupt_pretraining(cfg, monkeypatch)
    damage(tmp_path / "runs" / ".base.partial" / "checkpoint")
    capsys.readouterr()
    resumed = pretrain(cfg, "base", progress=False)
    assert "damaged" in capsys.readouterr().err and list(resumed.glob("checkpoint.damaged-*")), name
    ref, res = (json.loads((p / "meta.json").read_text()) for p in (reference, resumed))
    assert res["model_sha256"] == ref["model_sha256"] and res["final_metrics"] == ref["final_metrics"]


def test_a_cached_tokenizer_whose_file_was_deleted_is_set_aside_and_rebuilt(tmp_path, capsys):
    """Issue 29, item 4: deleting the cached tokenizer's own file (its folder kept) ended in a traceback."""
    from tests.test_language import language_config
    from undo.settings.base import _BUILT
    from undo.stages.evaluation import setting_for

    cfg = validate_config(language_config(tmp_path))
    first = setting_for(cfg).tokenizer
    (cache,) = (tmp_path / "runs" / "cache" / "tokenizers").glob("tokenizer_*")
    (cache / "tokenizer.json").unlink()
    _BUILT.clear()
    capsys.readouterr()
    rebuilt = setting_for(cfg).tokenizer
    err = capsys.readouterr().err
    assert "set aside" in err and "tokenizer.json is missing" in err
    assert rebuilt.get_vocab() == first.get_vocab() and (cache / "tokenizer.json").is_file()
    assert list(cache.parent.glob("tokenizer_*.damaged-*"))


def test_a_damaged_tokenizer_cache_is_set_aside_and_rebuilt(tmp_path, capsys):
    from tests.test_language import language_config
    from undo.settings.base import _BUILT
    from undo.stages.evaluation import setting_for

    cfg = validate_config(language_config(tmp_path))
    first = setting_for(cfg).tokenizer
    caches = list((tmp_path / "runs" / "cache" / "tokenizers").glob("tokenizer_*"))
    assert len(caches) == 1
    tokenizer_json = caches[0] / "tokenizer.json"
    tokenizer_json.write_text(tokenizer_json.read_text().replace('"<unk>"', '"<unq>"'))  # a swapped/edited file
    _BUILT.clear()
    capsys.readouterr()
    rebuilt = setting_for(cfg).tokenizer
    assert "set aside" in capsys.readouterr().err
    assert rebuilt.get_vocab() == first.get_vocab()
    assert list(caches[0].parent.glob("tokenizer_*.damaged-*"))


def test_a_damaged_attack_record_reruns_that_lr_to_the_same_curves(tmp_path, monkeypatch):
    import undo.stages.attack as attack_stage

    cfg = capable(tmp_path)
    oracle = pretrain(cfg, "oracle", progress=False)  # 0 % forget: its curves move
    reference = json.loads((attack(cfg, oracle, progress=False) / "meta.json").read_text())
    cfg = capable(tmp_path / "again")
    oracle = pretrain(cfg, "oracle", progress=False)
    real_train = attack_stage.train

    def dies_in_second_lr(model, objective, batches, train_cfg, *args, **kwargs):
        if train_cfg.lr == ATTACK["lrs"][1]:
            raise KeyboardInterrupt
        return real_train(model, objective, batches, train_cfg, *args, **kwargs)

    monkeypatch.setattr(attack_stage, "train", dies_in_second_lr)
    with pytest.raises(KeyboardInterrupt):
        attack(cfg, oracle, progress=False)
    partial = next((tmp_path / "again" / "runs").glob(".attack_oracle_*.partial"))
    (partial / "lr_0.001" / "done.json").write_text('{"lr": 0.001, "ste')  # half-written
    monkeypatch.setattr(attack_stage, "train", real_train)
    meta = json.loads((attack(cfg, oracle, progress=False) / "meta.json").read_text())
    assert list(partial.parent.glob(".attack_oracle_*.partial")) == []
    assert [r["forget"] for r in meta["per_lr"]] == [r["forget"] for r in reference["per_lr"]]
    assert meta["best"] == reference["best"] and len(set(reference["best"]["values"])) > 1  # curves that move


def test_a_model_of_another_setting_is_refused(tmp_path):
    from tests.test_language import language_config

    base = pretrain(tiny(tmp_path), "base", progress=False)  # arithmetic, character tokenizer
    language = validate_config({**language_config(tmp_path / "lang"), "run_dir": str(tmp_path / "lang_runs")})
    with pytest.raises(UserError, match="trained with another tokenizer than this config's setting"):
        attack(language, base, progress=False)


def write_study(tmp_path: Path, run_dir: Path) -> Path:
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump(small_study_config(run_dir)))
    return config


@pytest.mark.slow
def test_a_second_undo_run_on_the_same_run_dir_exits_with_one_line(tmp_path):
    run_dir = tmp_path / "runs"
    config = write_study(tmp_path, run_dir)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen([sys.executable, "-m", "undo", "run", str(config), "--no-progress"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    wait_for(lambda: (run_dir / ".undo.lock.owner").is_file())
    first.send_signal(signal.SIGSTOP)  # holding the lock, however fast its study would have finished
    try:
        second = subprocess.run([sys.executable, "-m", "undo", "run", str(config), "--no-progress"],
                                capture_output=True, text=True, env=env)
    finally:
        first.send_signal(signal.SIGCONT)
    lines = second.stderr.strip().splitlines()
    assert second.returncode == 2 and len(lines) == 1, second.stderr
    assert f"pid {first.pid}" in lines[0] and "is writing" in lines[0]
    assert first.wait(timeout=300) == 0
    results = json.loads((run_dir / "results.json").read_text())
    assert results["complete"] and sorted(p.name for p in run_dir.glob(".*.partial")) == []


@pytest.mark.slow
def test_ctrl_c_prints_the_resume_hint_and_exits_130(tmp_path):
    run_dir = tmp_path / "runs"
    config = write_study(tmp_path, run_dir)
    process = subprocess.Popen([sys.executable, "-m", "undo", "run", str(config), "--no-progress"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: (run_dir / "base" / "meta.json").is_file())
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130
    assert err.strip().splitlines()[-1] == ("undo: interrupted; run the same command again to resume from the last "
                                            "checkpoint")


@pytest.mark.slow
def test_a_study_run_from_another_folder_says_where_the_first_one_is(tmp_path, cli):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump(small_study_config("runs")))  # relative: read from the folder undo runs in
    assert cli("run", str(config), "--no-progress", "--no-report", cwd=tmp_path / "a")[0] == 0
    code, lines = cli("report", str(config), cwd=tmp_path / "b")
    assert code == 2 and len(lines) == 1
    assert f"this config's study is in {(tmp_path / 'a' / 'runs').resolve()}" in lines[0]


def test_a_run_dir_that_is_a_file_or_read_only_is_one_line(tmp_path, cli):
    (tmp_path / "file").write_text("not a folder")
    code, lines = cli("pretrain", "--run-dir", str(tmp_path / "file"), "--no-progress")
    assert code == 2 and len(lines) == 1 and "is a file, not a folder" in lines[0]
    if os.geteuid() != 0:  # root writes anywhere: the permission check cannot be shown as root
        (tmp_path / "ro").mkdir(mode=0o500)
        code, lines = cli("pretrain", "--run-dir", str(tmp_path / "ro"), "--no-progress")
        assert code == 2 and "cannot be written" in lines[0]
    code, lines = cli("report", "--run-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path))
    assert code == 2 and len(lines) == 1


def test_an_external_model_saved_twice_is_reused_only_when_identical(tmp_path):
    cfg = tiny(tmp_path)
    tokenizer = build_char_tokenizer()
    folder = tmp_path / "mine"
    model = load_model(pretrain(cfg, "base", progress=False) / "model")
    save_model(model, folder / "model", tokenizer)
    first = attack(cfg, folder, progress=False)
    with torch.no_grad():
        next(model.parameters()).add_(1e-3)
    assert attack(cfg, folder, progress=False) == first  # the same files: the complete attack is reused
    save_model(model, folder / "model", tokenizer)
    assert attack(cfg, folder, progress=False) != first  # other weights: another attack


def test_a_swallowed_ctrl_c_still_stops_training_at_the_next_step(tiny_config):
    """Python prints "Exception ignored" and carries on when SIGINT lands in a finalizer; the remembered request
    stops the engine at its next step all the same."""
    from undo.core import interrupts
    from undo.stages.pretrain import pretrain

    try:
        try:
            interrupts._on_sigint(signal.SIGINT, None)  # what the CLI's handler does on Ctrl-C...
        except KeyboardInterrupt:
            pass  # ...swallowed, as in a __del__
        with pytest.raises(KeyboardInterrupt):
            pretrain(tiny_config, "base", progress=False)
        assert not (Path(tiny_config.run_dir) / "base" / "meta.json").exists()  # nothing finished by mistake
    finally:
        interrupts._requested.clear()


def test_verify_judges_a_checkpoint_as_the_engine_does(tmp_path, monkeypatch):
    """`undo verify` reports where an interrupted stage resumes, and calls damaged exactly the checkpoints the
    engine would set aside: it asks the engine's own check (before, a state.json without its step was a KeyError
    traceback in verify, and a log cut short passed as resumable)."""
    from undo.study.verify import verify_run_dir

    cfg = tiny(tmp_path)
    interrupt_pretraining(cfg, monkeypatch)
    partial = tmp_path / "runs" / ".base.partial"
    (finding,) = [f for f in verify_run_dir(tmp_path / "runs") if f.path == partial]
    assert finding.status == "in progress" and finding.detail == "resumes at step 6"
    log = partial / "metrics.jsonl"
    log.write_bytes(log.read_bytes()[:10])
    (finding,) = [f for f in verify_run_dir(tmp_path / "runs") if f.path == partial]
    assert finding.damaged and "metrics.jsonl" in finding.detail
    _drop_from_state("step")(partial / "checkpoint")
    (finding,) = [f for f in verify_run_dir(tmp_path / "runs") if f.path == partial]
    assert finding.damaged and "state.json has no step" in finding.detail
