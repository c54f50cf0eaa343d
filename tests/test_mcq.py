"""The multiple-choice setting, offline: tiny generated MCQ tasks as local JSON with their task YAML, tiny corpora, a
tiny checkpoint. lm-eval's accuracy equals the argmax of per-choice log-likelihoods computed by hand; a whole study
(checkpoint base -> unlearn -> UNDO -> attack -> report) runs on it; the training-time limit and the reported full
evaluation are separate; MaxEnt's KL-to-frozen retain term; attack evaluation at chosen steps; UNDO without a stop
rule."""

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tests.test_language import write_corpora
from undo.config import validate_config
from undo.schema.errors import UserError
from undo.core.models import fresh_model, load_model, save_model
from undo.objectives.maxent import MaxEnt
from undo.settings.mcq import MCQ_ACCURACY, write_task
from undo.settings.tokenizer import build_char_tokenizer
from undo.stages.evaluation import setting_for
from undo.api import run_study

def questions(kind: str, n: int) -> list[dict]:
    """Tiny generated questions: retain = which is the sum, forget = which is the product."""
    out = []
    for i in range(n):
        a, b = 2 + i % 7, 3 + i % 5
        right = a + b if kind == "add" else a * b
        choices = [right, right + 1, right - 1, right + 2]
        shift = i % 4
        choices = choices[shift:] + choices[:shift]
        out.append({"question": f"{a} {'+' if kind == 'add' else '*'} {b} = ?", "choices": [str(c) for c in choices],
                    "answer": choices.index(right)})
    return out


def tiny_checkpoint(folder: Path) -> Path:
    from transformers import LlamaConfig

    config = LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=128, pad_token_id=0, bos_token_id=2,
                         eos_token_id=2)
    save_model(fresh_model(config, seed=0), folder, build_char_tokenizer())
    return folder


def mcq_config(tmp_path: Path, **setting) -> dict:
    tasks = tmp_path / "tasks"
    write_task(tasks, "toy_products", questions("mul", 24))
    write_task(tasks, "toy_sums", questions("add", 24))
    corpora = write_corpora(tmp_path / "corpora")
    return {
        "seed": 0, "run_dir": str(tmp_path / "runs"),
        "setting": {"name": "mcq", "retain_corpus": corpora["retain"], "forget_corpus": corpora["forget"],
                    "forget_tasks": ["toy_products"], "retain_tasks": ["toy_sums"], "task_paths": [str(tasks)],
                    "limit": 8, "max_documents": 400, "retain_documents": 150, "forget_documents": 150,
                    "heldout_documents": 20, **setting},
        "model": {"pretrained": str(tiny_checkpoint(tmp_path / "checkpoint")), "context": 64},
        "unlearn": {"steps": 3, "batch_size": 4, "eval_every": 3, "examples": 60,
                    "methods": [{"method": "grad_diff", "lrs": [1e-3], "knobs": {"retain_weight": 1.0}},
                                {"method": "maxent", "lrs": [1e-3], "knobs": {"retain_loss": "kl"}}],
                    "selection": {"min_retain_fraction": 0.0}},
        "distill": {"examples": 60, "alphas": [0.25], "beta": 0.0, "stop_tolerance": None,
                    "train": {"batch_size": 4, "lr": 3e-3, "warmup_steps": 1, "max_steps": 3, "eval_every": 3}},
        "attack": {"data": "forget", "steps": 4, "eval_every": 4, "eval_steps": [1, 2, 4], "budgets": [2, 4],
                   "lrs": [1e-3, 1e-2], "eval_per_cell": 6, "examples": 60, "batch_size": 4},
        "study": {"undo_method": "maxent", "oracle_matching": False},
    }


@pytest.mark.parametrize("split,first", [("validation", 0), ("test", 1)])
def test_lm_eval_accuracy_is_the_argmax_of_per_choice_log_likelihoods_on_its_split(tmp_path, split, first):
    """Each split scores its own questions (validation: even positions, test: odd ones) exactly as a hand-written
    argmax over per-choice log-likelihoods does."""
    cfg = validate_config(mcq_config(tmp_path, limit=None))
    setting = setting_for(cfg, split=split)
    assert all(indices == list(range(first, 24, 2)) for indices in setting.questions().values())
    model = load_model(Path(cfg.model.pretrained))
    metrics = setting.evaluate(model)
    tokenizer = setting.tokenizer
    for task, kind in (("toy_products", "mul"), ("toy_sums", "add")):
        correct = 0
        for q in questions(kind, 24)[first::2]:
            context = f"{q['question']}\nA. {q['choices'][0]}\nB. {q['choices'][1]}\nC. {q['choices'][2]}\n" \
                      f"D. {q['choices'][3]}\nAnswer:"
            scores = []
            for letter in "ABCD":
                prefix = tokenizer(context, add_special_tokens=False)["input_ids"]
                answer = tokenizer(" " + letter, add_special_tokens=False)["input_ids"]
                ids = torch.tensor([[tokenizer.eos_token_id, *prefix, *answer]])
                with torch.no_grad():
                    logp = F.log_softmax(model(input_ids=ids).logits[0, :-1].float(), dim=-1)
                targets = ids[0, 1:]
                scores.append(float(logp[-len(answer):].gather(-1, targets[-len(answer):, None]).sum()))
            correct += max(range(4), key=scores.__getitem__) == q["answer"]
        side = "forget" if kind == "mul" else "retain"
        assert metrics[f"{side}/{task}"] == pytest.approx(correct / 12)
    assert metrics["forget"] == metrics["forget/toy_products"] and metrics["retain"] == metrics["retain/toy_sums"]


def test_reused_requests_score_every_model_as_a_fresh_evaluation_would(tmp_path):
    from undo.settings.mcq import MCQSetting

    cfg = validate_config(mcq_config(tmp_path))
    setting = setting_for(cfg)
    base = load_model(Path(cfg.model.pretrained))
    other = fresh_model(base.config, seed=7)
    first, second, again = setting.evaluate(base), setting.evaluate(other), setting.evaluate(base)
    assert first == again and first != second
    fresh = MCQSetting(cfg.setting, cache_dir=tmp_path / "fresh", tokenizer=setting.tokenizer)
    fresh.context = setting.context
    assert fresh.evaluate(other) == second


@pytest.mark.slow
def test_a_whole_mcq_study_offline(tmp_path):
    cfg = validate_config(mcq_config(tmp_path))
    run_dir = run_study(cfg, progress=False)
    results = json.loads((run_dir / "results.json").read_text())
    assert results["setting"] == "mcq" and results["score"] == "accuracy"
    roles = {m["role"] for m in results["models"] if m["artifact"]}
    assert {"base", "unlearn", "teacher", "distilled", "undo"} <= roles
    for m in results["models"]:
        if m["metrics"]:
            assert set(m["metrics"]) >= {"forget", "retain", "forget/toy_products", "retain/toy_sums"}
            assert all(0 <= m["metrics"][k] <= 1 for k in ("forget", "retain"))
    # Reported numbers are the full tasks (24 questions: multiples of 1/24); the attack's curves use its limit
    # (attack.eval_per_cell = 6 questions) at the chosen steps.
    base = next(m for m in results["models"] if m["role"] == "base")
    assert all(abs(v * 24 - round(v * 24)) < 1e-9 for k, v in base["metrics"].items() if "/" in k)
    attack = base["attacks"]["finetune"]
    assert attack["best"]["steps"] == [0, 1, 2, 4]
    assert all(abs(v * 6 - round(v * 6)) < 1e-9 for v in attack["best"]["values"])
    # UNDO without a stop rule trains to its cap.
    undo = next(m for m in results["models"] if m["role"] == "undo")
    assert undo["steps"] == 3 and undo["distill"]["stopped_early"] is False
    report = (run_dir / "report.md").read_text()
    assert "chance 25%" in report and "## Relearning attack" in report
    assert (run_dir / "report_figures" / "relearning.png").is_file()
    # The MaxEnt teacher held a frozen reference for its KL retain term and accounted for its forwards.
    maxent = next(m for m in results["models"] if m["role"] == "unlearn" and m["family"] == "maxent")
    meta = json.loads((run_dir / maxent["artifact"] / "meta.json").read_text())
    assert meta["flops"]["reference"] > 0 and meta["knobs"] == {"retain_loss": "kl"}


def test_maxent_kl_retain_term_is_the_kl_to_the_frozen_model():
    from transformers import LlamaConfig

    config = LlamaConfig(vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2)
    model, reference = fresh_model(config, seed=0), fresh_model(config, seed=1)
    ids = torch.randint(3, 40, (2, 8), generator=torch.Generator().manual_seed(0))
    batch = {"forget_input_ids": ids, "retain_input_ids": ids.flip(0)}
    objective = MaxEnt(retain_weight=2.0, retain_loss="kl", reference=reference)
    loss, logs = objective.loss(model, batch)
    p = F.log_softmax(reference(input_ids=batch["retain_input_ids"]).logits[:, :-1].float(), -1)
    q = F.log_softmax(model(input_ids=batch["retain_input_ids"]).logits[:, :-1].float(), -1)
    expected_kl = (p.exp() * (p - q)).sum(-1).mean().detach()
    assert logs["retain_kl"] == pytest.approx(expected_kl.item(), rel=1e-5)
    # The whole loss and its gradient, by hand (issue 29, item 3: only a logged number was checked): KL(u || p) on the
    # forget tokens, plus 2 x KL(p_ref || p) on the retain tokens, differentiated through the trained model only.
    forget_logp = F.log_softmax(model(input_ids=batch["forget_input_ids"]).logits[:, :-1].float(), -1)
    kl_uniform = (-math.log(40) - forget_logp.mean(-1)).mean()
    expected = kl_uniform + 2.0 * (p.detach().exp() * (p.detach() - q)).sum(-1).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    params = [w for w in model.parameters() if w.requires_grad]
    for got, want in zip(torch.autograd.grad(loss, params), torch.autograd.grad(expected, params)):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    reference.zero_grad(set_to_none=True)
    objective.loss(model, batch)[0].backward()
    assert all(w.grad is None for w in reference.parameters())  # the frozen model is only read
    assert MaxEnt.wants_reference({"retain_loss": "kl"}) and not MaxEnt.wants_reference({})
    assert MaxEnt(reference=None).loss(model, batch)[1]["retain_ce"] > 0


def test_chance_is_the_floor_of_forgetting():
    assert MCQ_ACCURACY.floored(0.1) == 0.25 and MCQ_ACCURACY.floored(0.4) == 0.4
    from undo.config import SelectionRule
    from undo.stages.selection import Candidate, select_teacher

    # 0.20 and 0.24 are both at the floor: the run that kept more retain wins.
    runs = [Candidate(name="below", retain=0.50, forget=0.20), Candidate(name="at", retain=0.60, forget=0.24)]
    assert select_teacher(runs, 0.6, SelectionRule(min_retain_fraction=0.5), MCQ_ACCURACY).chosen == "at"


@pytest.mark.slow
def test_bad_mcq_inputs_are_one_line(tmp_path):
    raw = mcq_config(tmp_path)
    raw["setting"]["forget_tasks"] = ["no_such_task"]
    with pytest.raises(UserError, match="'no_such_task' is not an lm-eval task"):
        setting_for(validate_config(raw)).evaluate(load_model(Path(raw["model"]["pretrained"])))
    raw = mcq_config(tmp_path)
    raw["setting"]["forget_corpus"] = str(tmp_path / "data" / "bio_forget.jsonl")
    raw["setting"]["corpus_help"] = {"forget": "request access at https://huggingface.co/datasets/cais/wmdp-bio-"
                                               "forget-corpus and save it there"}
    with pytest.raises(UserError, match=r"bio_forget.jsonl does not exist.*forget corpus: request access") as err:
        setting_for(validate_config(raw))
    assert "\n" not in str(err.value)
    raw = mcq_config(tmp_path)
    raw["setting"]["task_paths"] = [str(tmp_path / "nowhere")]
    with pytest.raises(UserError, match="setting.task_paths: .*nowhere is not a folder"):
        validate_config(raw)
    assert math.isclose(validate_config(mcq_config(tmp_path)).setting.score.chance, 0.25)


def test_the_shipped_wmdp_config_loads_and_says_where_to_get_its_corpora(tmp_path, capsys, monkeypatch):
    """In this process (the console script's own exit path: tests/test_config.py)."""
    from undo.cli import main

    root = Path(__file__).resolve().parents[1]

    def undo(*args: str, cwd: Path) -> tuple[int, str, str]:
        monkeypatch.chdir(cwd)
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_:
            main(list(args))
        out = capsys.readouterr()
        return exit_.value.code or 0, out.out, out.err

    code, out, _ = undo("config", "configs/wmdp.yaml", cwd=root)
    assert code == 0 and "wmdp_bio" in out and "stop_tolerance: null" in out
    tiny = tiny_checkpoint(tmp_path / "checkpoint")

    def data_command():
        code, _, err = undo("data", str(root / "configs" / "wmdp.yaml"), "--set", f"model.pretrained={tiny}",
                            "--set", "model.context=128",  # the tiny model's
                            "--set", "unlearn.methods=[{method: maxent}]", cwd=tmp_path)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1, err
        return lines[0]

    line = data_command()
    assert "bio_retain.jsonl does not exist" in line and "https://huggingface.co/datasets/cais/wmdp-corpora" in line
    (tmp_path / "data" / "wmdp").mkdir(parents=True)
    for name in ("bio_retain", "cyber_retain"):
        (tmp_path / "data" / "wmdp" / f"{name}.jsonl").write_text('{"text": "a retain paragraph"}\n')
    line = data_command()
    assert "bio_forget.jsonl does not exist" in line
    assert "https://huggingface.co/datasets/cais/wmdp-bio-forget-corpus" in line


def first_request_tokens(monkeypatch) -> list[list[int]]:
    """The context tokens of every loglikelihood request lm-eval scores (as it builds them, before truncation)."""
    from lm_eval.models.huggingface import HFLM

    seen, real = [], HFLM._loglikelihood_tokens
    monkeypatch.setattr(HFLM, "_loglikelihood_tokens",
                        lambda self, requests, *a, **k: seen.extend(r[1] for r in requests) or real(self, requests,
                                                                                                   *a, **k))
    return seen


def test_an_undo_made_model_given_as_a_checkpoint_is_measured_with_the_token_it_was_pretrained_after(tmp_path,
                                                                                                     monkeypatch):
    """undo pretrains on documents opened by <|endoftext|> (and its arithmetic evaluation opens every prompt with
    it): lm-eval must open every question with it too, or a model that does the arithmetic scores near chance."""
    from tests.conftest import TINY
    from undo.stages.pretrain import pretrain

    arithmetic = validate_config({**TINY, "run_dir": str(tmp_path / "arithmetic"),
                                  "model": {**TINY["model"], "context": 64}})
    base = pretrain(arithmetic, "base", progress=False) / "model"
    raw = mcq_config(tmp_path)
    raw["model"] = {"pretrained": str(base), "context": 64}
    cfg = validate_config(raw)
    setting = setting_for(cfg)
    seen = first_request_tokens(monkeypatch)
    setting.evaluate(load_model(base))
    eos = setting.tokenizer.eos_token_id
    assert seen and all(ids[0] == eos and ids[1] != eos for ids in seen)  # opened by it, once
    assert setting.tokenizer("1+1", add_special_tokens=True)["input_ids"][0] != eos  # the stages' tokenizer unchanged
    assert setting.add_bos is True and "<|endoftext|>" in setting.bos_policy and "undo" in setting.bos_policy
    assert cfg.setting.evaluation_identity()["add_bos_token"] is True
    from undo.settings.mcq import bos_policy

    assert bos_policy(setting.tokenizer, base) == (True, "undo pretrained this model on documents opened by "
                                                         "<|endoftext|>")


def plain_tokenizer(bos: bool = False):
    """A hand-made character tokenizer with an end-of-text token and no pad (GPT-2's layout): it adds no BOS; with
    `bos`, its post-processor opens every text with <s>."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<|endoftext|>": 0, "<unk>": 1, "<s>": 2, **{chr(c): c - 29 for c in range(32, 127)}}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()
    if bos:
        core.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                            special_tokens=[("<s>", 2)])
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|endoftext|>", unk_token="<unk>",
                                   bos_token="<s>" if bos else "<|endoftext|>")


def test_a_tokenizer_that_adds_no_bos_is_measured_without_one(tmp_path, monkeypatch):
    from transformers import LlamaConfig
    from undo.settings.mcq import bos_policy

    config = LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=128, bos_token_id=0, eos_token_id=0)
    source = tmp_path / "plain"
    save_model(fresh_model(config, seed=0), source, plain_tokenizer())
    raw = mcq_config(tmp_path)
    raw["model"] = {"pretrained": str(source), "context": 64}
    cfg = validate_config(raw)
    setting = setting_for(cfg)
    assert setting.add_bos is False and setting.bos_policy == "no BOS (the tokenizer adds no BOS)"
    assert cfg.setting.evaluation_identity()["add_bos_token"] is False
    assert cfg.setting.for_report().with_eval_items(3).evaluation_identity()["add_bos_token"] is False
    seen = first_request_tokens(monkeypatch)
    setting.evaluate(load_model(source))
    assert seen and all(ids[0] != setting.tokenizer.eos_token_id for ids in seen)
    # A tokenizer whose post-processor adds BOS keeps it (lm-eval adds it through the tokenizer).
    assert bos_policy(plain_tokenizer(bos=True), None) == (True, "the tokenizer adds BOS (<s>)")
    assert bos_policy(plain_tokenizer(), None) == (False, "the tokenizer adds no BOS")
