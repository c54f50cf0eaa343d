import re
from pathlib import Path

import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from undo.settings.arithmetic import ArithmeticConfig
from undo.settings import arithmetic_templates as T
from undo.settings.arithmetic import (ArithmeticSetting, Problem, evaluation_problems, first_number,
                                      overlap_with_training, score, training_problems)
from undo.settings.tokenizer import build_char_tokenizer


def test_tokenizer_round_trip_and_saved_file(tmp_path):
    tok = build_char_tokenizer()
    text = "Ana has 12 apples; 3 * 4 = 12. (x/y) ~!"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text)  # one token per character
    assert tok.decode(ids) == text
    tok.save_pretrained(tmp_path)
    assert (tmp_path / "tokenizer.json").is_file()
    reloaded = PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tokenizer.json"))
    assert reloaded(text, add_special_tokens=False)["input_ids"] == ids
    auto = AutoTokenizer.from_pretrained(tmp_path)
    assert auto.decode(auto("7 + 5 = ")["input_ids"]) == "7 + 5 = "
    assert tok.convert_ids_to_tokens(tok("\u00e9", add_special_tokens=False)["input_ids"]) == ["<unk>"]


def check_answer(p: Problem):
    expected = {"add": p.a + p.b, "sub": p.a - p.b, "mul": p.a * p.b, "div": p.a // p.b}[p.op]
    assert p.answer == expected and p.answer >= 0
    if p.op == "div":
        assert p.a % p.b == 0
    lo, hi = (1, 50) if p.op in ("add", "sub") else (1, 20)
    if p.op == "div":
        assert lo <= p.b <= hi and lo <= p.answer <= hi
    else:
        assert lo <= p.a <= hi and lo <= p.b <= hi
    assert first_number(p.completion) == p.answer
    assert p.prompt.endswith(" ")


def test_generator_is_deterministic_correct_and_seed_dependent():
    cfg = ArithmeticConfig()
    first, again = training_problems(cfg, 500, seed=3), training_problems(cfg, 500, seed=3)
    assert first == again
    assert [p.text for p in training_problems(cfg, 500, seed=4)] != [p.text for p in first]
    for p in first:
        check_answer(p)
    assert {p.component for p in first} == {f"{o}/{f}" for o in ("add", "sub", "mul", "div")
                                             for f in ("equation", "word")}


def template_regex(template: str) -> re.Pattern:
    pattern = re.escape(template)
    for slot in ("name", "name2", "obj", "container", "a", "b", "answer"):
        pattern = pattern.replace(re.escape("{" + slot + "}"), r"(.+?)")
    return re.compile(pattern + "$")


def test_templates_meet_the_contract():
    for op in ("add", "sub", "mul", "div"):
        assert len(T.TRAIN_TEMPLATES[op]) >= 20 and len(T.HELDOUT_TEMPLATES[op]) >= 10
        assert not set(T.TRAIN_TEMPLATES[op]) & set(T.HELDOUT_TEMPLATES[op])
        for template in T.TRAIN_TEMPLATES[op] + T.HELDOUT_TEMPLATES[op]:
            assert template.index("{a}") < template.index("{b}") < template.index("{answer}")
            assert " {answer}" in template and not template.endswith("{answer}")


def test_word_problems_use_training_templates_in_training_and_held_out_ones_in_evaluation():
    cfg = ArithmeticConfig(eval_per_cell=30)
    train_res = {op: [template_regex(t) for t in T.TRAIN_TEMPLATES[op]] for op in T.TRAIN_TEMPLATES}
    held_res = {op: [template_regex(t) for t in T.HELDOUT_TEMPLATES[op]] for op in T.HELDOUT_TEMPLATES}
    for p in training_problems(cfg, 400, seed=0):
        if p.format == "word":
            assert any(r.match(p.text) for r in train_res[p.op]), p.text
            assert not any(r.match(p.text) for r in held_res[p.op]), p.text
    evaluation = evaluation_problems(cfg)
    assert len(evaluation) == 8 * 30
    for p in evaluation:
        check_answer(p)
        if p.format == "word":
            assert any(r.match(p.text) for r in held_res[p.op]), p.text
            assert not any(r.match(p.text) for r in train_res[p.op]), p.text


def test_evaluation_sets_are_fixed_by_eval_seed_and_distinct_per_cell():
    cfg = ArithmeticConfig(eval_per_cell=50)
    assert evaluation_problems(cfg) == evaluation_problems(ArithmeticConfig(eval_per_cell=50))
    assert evaluation_problems(cfg) != evaluation_problems(ArithmeticConfig(eval_per_cell=50, eval_seed=7))
    for cell in {p.component for p in evaluation_problems(cfg)}:
        pairs = [(p.a, p.b) for p in evaluation_problems(cfg) if p.component == cell]
        assert len(pairs) == len(set(pairs)) == 50


def test_scoring_of_hand_made_outputs():
    cfg = ArithmeticConfig()
    problems = [
        Problem("add", "equation", 2, 3, 5, "2 + 3 = ", "5"),
        Problem("add", "equation", 9, 9, 18, "9 + 9 = ", "18"),
        Problem("sub", "word", 9, 4, 5, "x ", "5."),
        Problem("mul", "equation", 3, 4, 12, "3 * 4 = ", "12"),
        Problem("div", "word", 12, 4, 3, "y ", "3."),
    ]
    outputs = ["5\n", "180", " 5 apples", "1 2", "no idea"]  # right, wrong (first number 180), right, wrong, wrong
    metrics = score(problems, outputs, cfg)
    assert metrics["add/equation"] == 0.5
    assert metrics["sub/word"] == 1.0
    assert metrics["mul/equation"] == 0.0 and metrics["div/word"] == 0.0
    assert metrics["retain"] == pytest.approx((0.5 + 1.0) / 2)
    assert metrics["forget"] == 0.0
    assert first_number("-4 left") == -4 and first_number("none") is None


def test_overlap_counts_shared_operand_triples():
    train = [Problem("add", "equation", 2, 3, 5, "", ""), Problem("mul", "word", 3, 4, 12, "", "")]
    evaluation = [Problem("add", "word", 2, 3, 5, "", ""), Problem("add", "equation", 3, 2, 5, "", ""),
                  Problem("mul", "equation", 3, 4, 12, "", "")]
    assert overlap_with_training(train, evaluation) == {"add/word": 1, "add/equation": 0, "mul/equation": 1}


def test_oracle_stream_is_the_base_stream_without_forget_problems():
    setting = ArithmeticSetting(ArithmeticConfig(examples=2000, eval_per_cell=2))
    base = setting.pretraining_documents("base", seed=5)
    oracle = setting.pretraining_documents("oracle", seed=5)
    assert oracle == [p for p in base if p.op in ("add", "sub")]
    assert {p.op for p in oracle} == {"add", "sub"}
    assert len(oracle) < len(base)


def test_operations_on_neither_side_are_ordinary_data_the_perfect_oracle_keeps():
    """retain [add], forget [mul]: - and / are on neither side. The perfect filter (the oracle) removes exactly what
    `is_forget` calls forget, as a recall-1 filter would, so it keeps them; the replacement documents an
    equal-compute oracle draws are of the oracle's mixture (no forget operation, every other one)."""
    from undo.stages.pretrain import imperfect_filter

    setting = ArithmeticSetting(ArithmeticConfig(examples=2000, eval_per_cell=2, retain=["add"], forget=["mul"]))
    base = setting.pretraining_documents("base", seed=5)
    oracle = setting.pretraining_documents("oracle", seed=5)
    assert {"sub", "div"} <= {p.op for p in base}
    assert oracle == [p for p in base if not setting.is_forget(p)]  # same documents, same order
    assert {p.op for p in oracle} == {"add", "sub", "div"}
    assert len(base) - len(oracle) == sum(p.op == "mul" for p in base) > 0
    # The perfect filter is the recall-1 filter; one of recall near 1 keeps the same neither-side documents.
    assert imperfect_filter(setting, base, 1.0, seed=5)[0] == oracle
    kept, _ = imperfect_filter(setting, base, 0.999, seed=5)
    assert [p for p in kept if p.op != "mul"] == oracle
    replacements = setting.replacement_documents(2000, seed=5)
    assert {p.op for p in replacements} == {"add", "sub", "div"}
    assert not any(setting.is_forget(p) for p in replacements)


def test_the_default_oracle_and_its_replacements_are_the_retain_side():
    setting = ArithmeticSetting(ArithmeticConfig(examples=2000, eval_per_cell=2))
    assert {p.op for p in setting.replacement_documents(1000, seed=3)} == {"add", "sub"}
    assert {p.op for p in setting.pretraining_documents("oracle", seed=3)} == {"add", "sub"}


def test_encoded_documents_open_with_the_separator():
    setting = ArithmeticSetting(ArithmeticConfig(eval_per_cell=2))
    docs = setting.encode_documents(["1 + 1 = 2", "ab"])
    eos = setting.tokenizer.eos_token_id
    assert docs[0][0] == eos and docs[1] == [eos, *setting.tokenizer("ab", add_special_tokens=False)["input_ids"]]


def test_only_trained_formats_are_evaluated_unless_asked():
    equations_only = ArithmeticConfig(word_problem_weight=0.0, eval_per_cell=3)
    assert {p.format for p in evaluation_problems(equations_only)} == {"equation"}
    assert {p.format for p in evaluation_problems(ArithmeticConfig(eval_per_cell=3))} == {"equation", "word"}
    asked = equations_only.model_copy(update={"eval_formats": ["word"]})
    assert {p.format for p in evaluation_problems(asked)} == {"word"}
    # The retain mean is over the evaluated cells only: a never-trained format cannot halve it.
    problems = evaluation_problems(equations_only)
    metrics = score(problems, [str(p.answer) for p in problems], equations_only)
    assert metrics["retain"] == 1.0 and "add/word" not in metrics


def test_validation_and_test_splits_are_disjoint_and_no_stage_after_pretraining_trains_on_them():
    from undo.core.data import derive_seed
    from undo.settings.arithmetic import ArithmeticConfig, heldout_pairs

    cfg = ArithmeticConfig(word_problem_weight=0.3, examples=8000)
    validation, test = cfg.build(Path(".")), cfg.with_split("test").build(Path("."))
    items = {split: {(p.op, p.a, p.b) for p in s.eval_problems} for split, s in (("v", validation), ("t", test))}
    assert len(validation.eval_problems) == len(test.eval_problems) == 4 * 2 * cfg.heldout_per_cell
    assert items["v"] and not items["v"] & items["t"]  # disjoint splits
    assert {p.text for p in validation.eval_problems}.isdisjoint(p.text for p in test.eval_problems)
    held = items["v"] | items["t"]
    # Every stream after pretraining: unlearning's labelled data, the mixture (distillation, attack).
    later = [*validation.labelled_documents("forget", 3000, 1), *validation.labelled_documents("retain", 3000, 1),
             *validation.mixture_documents(5000, derive_seed(0, "distill"))]
    assert not {(p.op, p.a, p.b) for p in later} & held
    # Pretraining holds the held-out facts (the capability to remove) unless told not to; never their texts'
    # word-problem templates.
    pretraining = validation.pretraining_documents("base", 0)
    assert {(p.op, p.a, p.b) for p in pretraining} & held
    strict = ArithmeticConfig(word_problem_weight=0.3, examples=8000, heldout_from_pretraining=True).build(Path("."))
    assert not {(p.op, p.a, p.b) for p in strict.pretraining_documents("base", 0)} & held
    assert not {p.text for p in pretraining} & {p.text for p in validation.eval_problems if p.format == "word"}
    # The attack's smaller evaluation is a prefix of each split, per cell.
    assert len(heldout_pairs(cfg.eval_seed, 50)["test"]["mul"]) == 50
    small = cfg.with_eval_items(10).with_split("test").build(Path("."))
    assert [p.text for p in small.eval_problems if p.op == "mul"] == \
        [p.text for p in test.eval_problems if p.op == "mul"][:10] + \
        [p.text for p in test.eval_problems if p.op == "mul"][50:60]
