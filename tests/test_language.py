"""The language setting: the held-out split, base and oracle streams, the CE metric and its score, the stop rule
and teacher selection in CE, and a tiny language study end to end (pretrain, unlearn, distil, UNDO, attack,
report in nats)."""

import json
import math
from pathlib import Path

import pytest
import torch

from undo.cli import main
from undo.config import validate_config
from undo.schema.errors import UserError
from undo.api import run_study
from undo.settings import ACCURACY, NEG_CE
from undo.settings.corpora import read_documents
from undo.stages.evaluation import setting_for
from undo.stages.selection import Candidate, select_teacher

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
ENGLISH_FALLBACK = [
    "The quick brown fox jumps over the lazy dog near the quiet river bank.",
    "A function returns the value of its last expression unless told otherwise.",
    "She opened the window and the cold morning air filled the little room.",
    "Every configuration file is read once when the program starts running.",
]
KOREAN_FALLBACK = [
    "이 영화 정말 재미있어요 배우들의 연기가 최고였습니다",
    "스토리가 너무 지루하고 결말이 아쉬웠다 다시 보고 싶지 않다",
    "음악과 영상이 아름다워서 가족과 함께 보기 좋은 영화입니다",
    "기대했던 것보다 훨씬 좋았고 마지막 장면에서 눈물이 났다",
]


def write_corpora(directory: Path, n: int = 400) -> dict[str, str]:
    """Small corpora: the first documents of the shared English/Korean files when they exist (the project never
    requires them), else varied sentences built from a few templates."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for side, name, fallback in (("retain", "english", ENGLISH_FALLBACK), ("forget", "korean", KOREAN_FALLBACK)):
        shared = SHARED / f"{name}.txt.xz"
        if shared.is_file():
            documents = [d[:300] for d in read_documents(str(shared), limit=n)]
        else:
            documents = [f"{fallback[i % len(fallback)]} {i}" for i in range(n)]
        path = directory / f"{name}.txt"
        path.write_text("\n".join(documents) + "\n", encoding="utf-8")
        paths[side] = str(path)
    return paths


def language_config(tmp_path, **setting):
    corpora = write_corpora(tmp_path / "corpora")
    return {
        "seed": 0, "run_dir": str(tmp_path / "runs"),
        "setting": {"name": "language", "retain_corpus": corpora["retain"], "forget_corpus": corpora["forget"],
                    "max_documents": 400, "retain_documents": 150, "forget_documents": 150,
                    "heldout_documents": 20, "vocab_size": 300, "tokenizer_sample_chars": 20_000, **setting},
        "model": {"layers": 1, "width": 32, "heads": 2, "context": 32, "vocab": 300},
        "pretrain": {"train": {"batch_size": 8, "lr": 3e-3, "warmup_steps": 2, "eval_every": 5,
                               "checkpoint_every": 3, "log_every": 1, "max_steps": 12}},
        "unlearn": {"steps": 4, "batch_size": 4, "eval_every": 2, "examples": 60,
                    "methods": [{"method": "grad_diff", "lrs": [1e-3], "knobs": {"retain_weight": 1.0}},
                                {"method": "maxent", "lrs": [1e-3]}],
                    "selection": {"min_retain_fraction": 0.5}},
        "distill": {"examples": 100, "alphas": [0.3, 0.7], "stop_tolerance": None,  # no stop rule: runs 4 steps
                    "train": {"batch_size": 4, "lr": 3e-3, "warmup_steps": 1, "max_steps": 4, "eval_every": 2,
                              "checkpoint_every": 1, "log_every": 1}},
        "attack": {"data": "forget", "steps": 6, "eval_every": 2, "budgets": [2, 6], "lrs": [1e-3, 3e-3],
                   "eval_per_cell": 10, "examples": 100, "batch_size": 4},
        "study": {"undo_method": "maxent"},
    }


def test_split_streams_and_eval_are_disjoint_and_oracle_is_filtered(tmp_path):
    cfg = validate_config(language_config(tmp_path))
    setting = setting_for(cfg)
    heldout = {s: {d.text for d in docs} for s, docs in setting.heldout.items()}
    assert all(len(texts) == 20 for texts in heldout.values())
    base = setting.pretraining_documents("base", seed=0)
    oracle = setting.pretraining_documents("oracle", seed=0)
    assert sum(d.component == "retain" for d in base) == 150 and sum(d.component == "forget" for d in base) == 150
    # The oracle is the base stream with the forget documents removed: same retain documents, same order.
    assert [d.text for d in oracle] == [d.text for d in base if d.component == "retain"]
    for side in ("retain", "forget"):
        assert not heldout[side] & {d.text for d in base if d.component == side}  # never trained on
    assert {d.component for d in setting.labelled_documents("forget", 50, seed=1)} == {"forget"}
    # Unlearning data differs across seeds, is reproducible within one.
    assert ([d.text for d in setting.labelled_documents("forget", 50, seed=1)]
            == [d.text for d in setting.labelled_documents("forget", 50, seed=1)])
    assert ([d.text for d in setting.labelled_documents("forget", 50, seed=1)]
            != [d.text for d in setting.labelled_documents("forget", 50, seed=2)])
    # The test split: as many other held-out documents, disjoint from validation and from every training stream.
    test = setting_for(cfg, split="test")
    test_texts = {side: {d.text for d in docs} for side, docs in test.heldout.items()}
    trained = {d.text for d in [*base, *setting.labelled_documents("forget", 200, 1),
                                *setting.labelled_documents("retain", 200, 1), *setting.mixture_documents(300, 2),
                                *setting.replacement_documents(50, 0)]}
    for side in ("retain", "forget"):
        assert len(test_texts[side]) == 20 and not test_texts[side] & heldout[side]
        assert not (test_texts[side] | heldout[side]) & trained
    # The equal-compute oracle's replacements are retain documents the base stream does not hold.
    replacements = setting.replacement_documents(50, 0)
    assert {d.component for d in replacements} == {"retain"} and not {d.text for d in replacements} & \
        {d.text for d in base}
    # The tokenizer round-trips both languages and is saved under the run dir's cache.
    for text in (setting.heldout["retain"][0].text, setting.heldout["forget"][0].text):
        assert setting.tokenizer.decode(setting.tokenizer(text, add_special_tokens=False)["input_ids"]) == text
    assert list((Path(cfg.run_dir) / "cache" / "tokenizers").glob("*/tokenizer.json"))


def test_evaluation_is_held_out_cross_entropy_and_the_score_is_its_negative(tmp_path):
    cfg = validate_config(language_config(tmp_path))
    setting = setting_for(cfg)

    class Uniform(torch.nn.Module):  # equal logits everywhere: CE = ln(vocab) on every real token
        config = type("C", (), {"max_position_embeddings": 32})()

        def forward(self, input_ids, attention_mask=None, **_):
            return type("O", (), {"logits": torch.zeros(*input_ids.shape, 300)})()

    metrics = setting.evaluate(Uniform())
    for side in ("retain", "forget"):
        assert metrics[f"{side}_ce"] == pytest.approx(math.log(300), rel=1e-6)
        assert metrics[side] == -metrics[f"{side}_ce"]


def test_cross_entropy_score_rules():
    # Selection keeps 90 % of the base's retain: CE may grow to base / 0.9. Stop rule: relative gap 5 %.
    assert NEG_CE.retain_floor(-2.0, 0.9) == pytest.approx(-2.0 / 0.9)
    assert NEG_CE.at_least_near(-2.0, 0.05) == pytest.approx(-2.1)  # student CE <= 2.1
    assert NEG_CE.at_most_near(-6.0, 0.05) == pytest.approx(-5.7)  # student forget CE >= 5.7
    assert ACCURACY.at_least_near(0.9, 0.05) == pytest.approx(0.85)
    assert NEG_CE.format(-2.345) == "2.35" and ACCURACY.format(0.5) == "50.0%"
    # The most-forgotten run among those that keep retain: the highest forget CE.
    runs = [Candidate(name="a", retain=-2.1, forget=-7.0), Candidate(name="b", retain=-2.5, forget=-9.0),
            Candidate(name="c", retain=-2.05, forget=-6.0)]
    from undo.config import SelectionRule
    chosen = select_teacher(runs, base_retain=-2.0, rule=SelectionRule(min_retain_fraction=0.9), score=NEG_CE)
    assert chosen.chosen == "a" and [r.qualifies for r in chosen.candidates] == [True, False, True]


def test_corpus_contents_are_part_of_the_data_key(tmp_path):
    cfg = validate_config(language_config(tmp_path))
    before = cfg.setting.data_identity()
    path = Path(cfg.setting.forget_corpus)
    path.write_text(path.read_text(encoding="utf-8") + "새로운 문서가 하나 더 있습니다\n", encoding="utf-8")
    assert cfg.setting.data_identity() != before


def test_bad_language_configs_fail_with_one_line(tmp_path, capsys):
    raw = language_config(tmp_path)
    raw["setting"]["retain_corpus"], raw["setting"]["forget_corpus"] = (raw["setting"]["forget_corpus"],
                                                                        raw["setting"]["retain_corpus"])
    with pytest.raises(UserError, match="retain_corpus"):
        setting_for(validate_config(raw))
    raw = language_config(tmp_path, retain_documents=10_000)
    with pytest.raises(UserError, match="retain_documents"):
        setting_for(validate_config(raw))
    raw = language_config(tmp_path)
    raw["model"]["vocab"] = 128
    with pytest.raises(UserError, match="model.vocab"):
        validate_config(raw)
    raw = language_config(tmp_path)
    raw["setting"]["forget_corpus"] = str(tmp_path / "missing.txt")
    path = tmp_path / "bad.yaml"
    path.write_text(json.dumps(raw))
    with pytest.raises(SystemExit) as exit_info:
        main(["data", str(path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.txt" in err[0]


@pytest.mark.slow
def test_tiny_language_study_end_to_end(tmp_path):
    cfg = validate_config(language_config(tmp_path))
    run_study(cfg, progress=False)
    run_dir = Path(cfg.run_dir)
    results = json.loads((run_dir / "results.json").read_text())
    assert results["setting"] == "language" and results["score"] == "neg_ce"
    base = next(m for m in results["models"] if m["role"] == "base")
    assert base["metrics"]["retain_ce"] == pytest.approx(-base["metrics"]["retain"])
    roles = {m["role"] for m in results["models"] if m.get("artifact")}
    assert {"base", "oracle", "teacher", "distilled", "undo", "oracle_match_base", "oracle_match_random"} <= roles
    # Every attack relearned on Korean text: its attacker-best curve is in -CE, never above 0.
    curves = [a["best"]["values"] for m in results["models"] for a in m["attacks"].values()]
    assert len(curves) >= 5 and all(v <= 0 for values in curves for v in values)
    report = (run_dir / "report.md").read_text()
    assert "cross-entropy" in report and "nats" in report
    base_row = next(line for line in report.split("## Pretraining")[1].splitlines() if line.startswith("| base |"))
    assert f"| {base['metrics']['retain_ce']:.3f} |" in base_row  # the CE itself, in nats
    for claim in ("R2", "R3"):
        assert f"**{claim}**" in report
    # Shown values are CEs (positive), not the negative scores.
    attack_table = report.split("## Relearning attack")[1]
    assert "| -" not in attack_table
