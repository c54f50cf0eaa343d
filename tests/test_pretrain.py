import json

import pytest
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from undo.cli import main
from undo.config import validate_config
from undo.schema.errors import UserError
from undo.stages.pretrain import pretrain, pretrain_key
from tests.conftest import TINY, interrupt_pretraining


def test_pretrain_writes_complete_artifacts_for_base_and_oracle(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({**TINY, "pretrain": {**TINY["pretrain"], "oracle_budget": "same_examples"}}))
    with pytest.raises(SystemExit) as exit_info:
        main(["pretrain", str(config), "--run-dir", str(tmp_path / "runs"), "--no-progress"])
    assert exit_info.value.code in (0, None)
    for which in ("base", "oracle"):
        artifact = tmp_path / "runs" / which
        assert not (tmp_path / "runs" / f".{which}.partial").exists()
        assert not (artifact / "checkpoint").exists()
        meta = json.loads((artifact / "meta.json").read_text())
        assert meta["which"] == which and meta["steps"] > 0 and meta["tokens"] == meta["steps"] * 8 * 32
        assert meta["flops"]["train"] == meta["tokens"] * meta["flops_per_token"]
        assert set(meta["final_metrics"]) >= {"add/equation", "div/word", "retain", "forget"}
        assert len(meta["model_sha256"]) == 64 and meta["wall_time_s"] > 0
        assert yaml.safe_load((artifact / "config.yaml").read_text())["model"]["width"] == 32
        lines = [json.loads(line) for line in (artifact / "metrics.jsonl").read_text().splitlines()]
        assert any(line["kind"] == "eval" for line in lines)
        model = AutoModelForCausalLM.from_pretrained(artifact / "model")  # plain HF loading works
        assert model.config.hidden_size == 32
        assert AutoTokenizer.from_pretrained(artifact / "model").decode([20, 21]) == "12"
    base = json.loads((tmp_path / "runs" / "base" / "meta.json").read_text())
    oracle = json.loads((tmp_path / "runs" / "oracle" / "meta.json").read_text())
    assert set(base["data"]["documents_per_component"]) == {f"{o}/{f}" for o in ("add", "sub", "mul", "div")
                                                             for f in ("equation", "word")}
    assert set(oracle["data"]["documents_per_component"]) == {f"{o}/{f}" for o in ("add", "sub")
                                                               for f in ("equation", "word")}
    # The oracle's stream holds exactly the base's +/- documents (perfect data filtering)...
    for component, count in oracle["data"]["documents_per_component"].items():
        assert base["data"]["documents_per_component"][component] == count
    # ...and with max_steps capping the base (12 of its steps), the oracle trains on the same share of its own
    # stream, so it reads as many +/- sequences as the base model does, not twice as many.
    assert base["steps"] == 12
    share = base["steps"] * 8 / base["data"]["sequences"]
    assert abs(oracle["steps"] - share * oracle["data"]["sequences"] / 8) <= 1
    assert oracle["steps"] < base["steps"]


def test_equal_compute_oracle_trains_the_base_models_steps_and_tokens_on_more_retain_data(tmp_path):
    cfg = validate_config({**TINY, "run_dir": str(tmp_path / "runs")})
    assert cfg.pretrain.oracle_budget == "same_compute"  # the paper's budget is the default
    base = json.loads((pretrain(cfg, "base", progress=False) / "meta.json").read_text())
    oracle = json.loads((pretrain(cfg, "oracle", progress=False) / "meta.json").read_text())
    assert oracle["oracle_budget"] == "same_compute" and base["oracle_budget"] is None
    assert oracle["steps"] == base["steps"] == 12 and oracle["tokens"] == base["tokens"]
    assert oracle["data"]["sequences"] == base["data"]["sequences"]
    retain = {f"{o}/{f}" for o in ("add", "sub") for f in ("equation", "word")}
    assert set(oracle["data"]["documents_per_component"]) == retain  # still no forget document
    # Every base retain document plus replacements standing in for the filtered-out forget documents.
    base_retain = sum(base["data"]["documents_per_component"][c] for c in retain)
    forget = base["data"]["documents"] - base_retain
    assert oracle["data"]["documents"] >= base_retain + forget
    # An uncapped oracle also trains the base model's step count.
    uncapped = {**TINY, "run_dir": str(tmp_path / "uncapped"),
                "pretrain": {"train": {k: v for k, v in TINY["pretrain"]["train"].items() if k != "max_steps"}}}
    cfg = validate_config(uncapped)
    steps = [json.loads((pretrain(cfg, which, progress=False) / "meta.json").read_text())["steps"]
             for which in ("base", "oracle")]
    assert steps[0] == steps[1] > 12


def test_complete_artifact_is_not_recomputed_and_other_configs_are_refused(tiny_config):
    path = pretrain(tiny_config, "base", progress=False)
    stamp = (path / "meta.json").stat().st_mtime_ns
    assert pretrain(tiny_config, "base", progress=False) == path
    assert (path / "meta.json").stat().st_mtime_ns == stamp
    changed = tiny_config.model_copy(update={"seed": 1})
    with pytest.raises(UserError, match="made by a different config"):
        pretrain(changed, "base", progress=False)


def test_interrupted_pretraining_resumes_to_the_same_model(tiny_config, tmp_path, monkeypatch):
    reference = pretrain(tiny_config.model_copy(update={"run_dir": str(tmp_path / "ref")}), "base", progress=False)

    interrupt_pretraining(tiny_config, monkeypatch)
    assert (tmp_path / "runs" / ".base.partial" / "checkpoint").is_dir()
    resumed = pretrain(tiny_config, "base", progress=False)
    ref_meta, res_meta = (json.loads((p / "meta.json").read_text()) for p in (reference, resumed))
    assert res_meta["model_sha256"] == ref_meta["model_sha256"]
    assert res_meta["final_metrics"] == ref_meta["final_metrics"]


def test_stage_key_ignores_bookkeeping_but_not_science(tiny_config):
    key = pretrain_key(tiny_config, "base")
    assert pretrain_key(tiny_config.model_copy(update={"run_dir": "elsewhere"}), "base") == key
    cheaper_eval = validate_config({**TINY, "setting": {**TINY["setting"], "eval_per_cell": 2}})
    assert pretrain_key(cheaper_eval, "base") == key
    # The held-out pairs are never trained on, so which they are (their seed, their number) shapes the data.
    for change in ({"eval_seed": 9}, {"heldout_per_cell": 20}):
        assert pretrain_key(validate_config({**TINY, "setting": {**TINY["setting"], **change}}), "base") != key
    same_examples = validate_config({**TINY, "pretrain": {**TINY["pretrain"], "oracle_budget": "same_examples"}})
    assert pretrain_key(same_examples, "base") == key  # the oracle's budget is the oracle's alone
    assert pretrain_key(same_examples, "oracle") != pretrain_key(tiny_config, "oracle")
    cadence = validate_config({**TINY, "pretrain": {"train": {**TINY["pretrain"]["train"], "eval_every": 99}}})
    assert pretrain_key(cadence, "base") == key
    assert pretrain_key(tiny_config, "oracle") != key
    assert pretrain_key(validate_config({**TINY, "seed": 3}), "base") != key


def test_model_vocab_smaller_than_tokenizer_is_a_user_error(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["pretrain", "--set", "model.vocab=50", "--set", "model.width=32", "--set", "model.layers=3",
              "--run-dir", str(tmp_path / "r"), "--no-progress"])
    assert exit_info.value.code == 2
    assert "model.vocab (50) must be >= 98" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()  # refused with the config, before any stage


def test_eval_command_on_a_saved_model_and_bad_path(tiny_config, capsys, tmp_path):
    path = pretrain(tiny_config, "base", progress=False)
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", str(path), "--set", "setting.eval_per_cell=4"])
    assert exit_info.value.code in (0, None)
    assert "retain" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", str(tmp_path / "nowhere")])
    assert exit_info.value.code == 2
    assert "no model at" in capsys.readouterr().err
