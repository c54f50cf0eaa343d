"""GPU check of the WMDP config (`configs/wmdp.yaml`): its stages on Gemma-2-2B-sized random weights, printing each
stage's peak accelerator memory and tokens/s, and the share of the attack's wall time spent in multiple-choice
evaluation at the config's question limit and evaluation steps.

Run:  python benchmarks/gpu_wmdp.py            (one GPU with ~24 GB; several minutes)
      python benchmarks/gpu_wmdp.py --tiny     (a 2-block Gemma-2 on the CPU: the same code path, in ~2 minutes)

Nothing is downloaded: the checkpoint is a random-weight Gemma-2 with gemma-2-2b's shape (26 blocks, width 2304,
8 heads of 256, 4 key/value heads, MLP 9216, vocabulary 256,000, tied embeddings, soft-capped logits) saved with
the arithmetic setting's character tokenizer; the corpora are generated sentences and the multiple-choice tasks are
generated questions written as local lm-eval task files: 2 forget tasks and 57 retain tasks (MMLU's number of
subtasks) of 20 questions each, so each evaluation asks as many questions as the shipped config (limit 20). Every
other setting is the shipped config's, but for fewer unlearning and distillation steps (--steps) and one attack LR.
Random weights learn nothing; the point is memory, speed and the evaluation's share. A benchmark: it exits 0.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from transformers import Gemma2Config

from undo.config import load_config
from undo.core.models import count_parameters, fresh_model, save_model
from undo.settings.mcq import MCQSetting, write_task
from undo.settings.tokenizer import build_char_tokenizer
from undo.stages.attack import attack
from undo.stages.distill import distill
from undo.stages.pretrain import pretrain
from undo.stages.unlearn import sweep_points, unlearn

ROOT = Path(__file__).resolve().parents[1]
def questions(seed: int, n: int = 20) -> list[dict]:
    rows = []
    for i in range(n):
        a, b = 2 + (i + seed) % 17, 3 + (i * 7 + seed) % 13
        choices = [a * b, a * b + 1, a * b - 1, a * b + a]
        rows.append({"question": f"{a} * {b} = ?", "choices": [str(c) for c in choices], "answer": 0})
    return rows


def write_corpus(path: Path, word: str, n: int) -> None:
    path.write_text("\n".join(json.dumps({"text": f"Note {i}: the {word} of {i % 97} and {i % 89} is what this "
                                                  f"paragraph is about, written out at some length."})
                              for i in range(n)) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="a 2-block, width-64 Gemma-2 (a CPU smoke test)")
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps of each unlearning/distillation run")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="undo_wmdp_"))
    shape = (dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                  num_key_value_heads=1, head_dim=32, vocab_size=256) if args.tiny else
             dict(hidden_size=2304, intermediate_size=9216, num_hidden_layers=26, num_attention_heads=8,
                  num_key_value_heads=4, head_dim=256, vocab_size=256_000))
    config = Gemma2Config(**shape, max_position_embeddings=8192, tie_word_embeddings=True, pad_token_id=0,
                          bos_token_id=2, eos_token_id=2)
    model = fresh_model(config, seed=0, dtype="bfloat16")
    parameters = count_parameters(model)
    save_model(model, scratch / "gemma-2-2b-shaped", build_char_tokenizer())
    del model
    tasks = scratch / "tasks"
    tasks.mkdir()
    forget_tasks, retain_tasks = ["toy_bio", "toy_cyber"], [f"toy_mmlu_{i}" for i in range(57)]
    for seed, name in enumerate(forget_tasks + retain_tasks):
        write_task(tasks, name, questions(seed))
    for side, word in (("forget", "product"), ("retain", "sum")):
        write_corpus(scratch / f"{side}.jsonl", word, 3000)

    layer = config.num_hidden_layers - 1 if args.tiny else 15
    trainable = list(range(max(0, layer - 5), layer + 1))
    rmu = {"layer": layer, "trainable_layers": [trainable], "steer": 80.0, "alpha": 100.0}
    attack_steps, eval_steps = 500, [10, 25, 50, 150, 500]  # the shipped attack schedule, tiny or not
    overrides = [
        f"run_dir={scratch / 'runs'}", f"model.pretrained={scratch / 'gemma-2-2b-shaped'}",
        f"setting.forget_corpus={scratch / 'forget.jsonl'}", f"setting.retain_corpus={scratch / 'retain.jsonl'}",
        f"setting.task_paths=[{tasks}]", f"setting.forget_tasks={forget_tasks}", f"setting.retain_tasks={retain_tasks}",
        "setting.max_documents=3000", "setting.retain_documents=2000", "setting.forget_documents=2000",
        "setting.report_limit=20", f"unlearn.steps={args.steps}", f"unlearn.eval_every={args.steps}",
        f"unlearn.methods=[{{method: rmu, lrs: [5.0e-5], knobs: {rmu}}}, "
        f"{{method: maxent, lrs: [1.0e-5], knobs: {{retain_loss: kl}}}}]",
        f"distill.train.max_steps={args.steps}", f"distill.train.eval_every={args.steps}",
        "attack.lrs=[1.0e-5]", f"attack.steps={attack_steps}", f"attack.eval_steps={eval_steps}",
        f"attack.budgets={eval_steps}", "unlearn.selection.min_retain_fraction=0.0",
    ]
    cfg = load_config(ROOT / "configs" / "wmdp.yaml", overrides)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    print(f"{device}: Gemma-2 shape, {config.num_hidden_layers} blocks, {parameters / 1e9:.2f} B parameters, bf16, "
          f"context {cfg.model.context}, batch {cfg.unlearn.batch_size}, {len(forget_tasks) + len(retain_tasks)} "
          f"tasks x 20 questions per evaluation")

    spent = {"evaluate": 0.0}
    evaluate = MCQSetting.evaluate

    def timed_evaluate(self, model):
        started = time.perf_counter()
        try:
            return evaluate(self, model)
        finally:
            spent["evaluate"] += time.perf_counter() - started

    MCQSetting.evaluate = timed_evaluate
    rows = []

    def stage(name, run):
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        spent["evaluate"] = 0.0
        started = time.perf_counter()
        path = run()
        seconds = time.perf_counter() - started
        meta = json.loads((path / "meta.json").read_text())
        tokens, wall = meta.get("tokens", 0), meta.get("wall_time_s") or 0
        peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
        rows.append((name, seconds, peak, tokens / wall if tokens and wall else None, spent["evaluate"] / seconds))
        return path

    base = stage("load + evaluate", lambda: pretrain(cfg, "base", progress=False))
    rmu_point, maxent_point = sweep_points(cfg)
    stage("unlearn rmu (layers 10-15)", lambda: unlearn(cfg, rmu_point, base, progress=False))
    teacher = stage("unlearn maxent, KL retain", lambda: unlearn(cfg, maxent_point, base, progress=False))
    stage("UNDO a=0.25 b=0 (no stop rule)", lambda: distill(cfg, teacher, init="noised", alpha=0.25, progress=False))
    stage(f"attack, 1 LR x {attack_steps} steps", lambda: attack(cfg, teacher, progress=False))
    print(f"{'stage':<34}{'seconds':>9}{'peak GiB':>10}{'tokens/s':>11}{'evaluation share':>18}")
    for name, seconds, peak, tps, share in rows:
        print(f"{name:<34}{seconds:9.1f}{'-' if peak is None else format(peak, '.2f'):>10}"
              f"{'-' if tps is None else format(tps, ',.0f'):>11}{share:>18.1%}")
    print(f"the attack's evaluations ({len(eval_steps) + 1} per LR) take {rows[-1][4]:.1%} of its wall time "
          "(goal: at most 25 %)")


if __name__ == "__main__":
    main()
