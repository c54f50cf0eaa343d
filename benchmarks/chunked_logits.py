"""Peak memory of one distillation step on a large-vocabulary model, its logits whole vs chunked (undo.core.logits).

    python benchmarks/chunked_logits.py [--vocab 256000 --width 64 --layers 2 --batch 4 --length 512]

Each variant runs in a fresh process (a process's peak resident memory only grows): it builds a teacher and a
student (random-weight Llamas of the given shape), runs one ForwardKL forward and backward, and prints the step's
peak resident memory above what the process held before the step, beside the size of one whole fp32 logits tensor
([batch x length, vocabulary]) and the step's wall time. The goal (issue 30): chunked, no more than the largest single
logits tensor plus the model. Numbers are this machine's; compare the two lines of one run.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def one_step(args: argparse.Namespace, chunked: bool) -> dict:
    import torch
    from transformers import LlamaConfig

    import undo.core.logits as logits
    from undo.core.models import fresh_model
    from undo.objectives.distill import ForwardKL

    torch.set_num_threads(max(1, torch.get_num_threads()))
    if not chunked:
        logits.LOGITS_BUDGET_BYTES = 2**62
    if args.chunk_mb:
        logits.CHUNK_BYTES = int(args.chunk_mb * 2**20)
    shape = LlamaConfig(vocab_size=args.vocab, hidden_size=args.width, intermediate_size=4 * args.width,
                        num_hidden_layers=args.layers, num_attention_heads=max(1, args.width // 32),
                        max_position_embeddings=args.length, tie_word_embeddings=False)
    teacher, student = fresh_model(shape, seed=0).requires_grad_(False), fresh_model(shape, seed=1)
    ids = torch.randint(3, args.vocab, (args.batch, args.length), generator=torch.Generator().manual_seed(0))
    objective = ForwardKL(teacher)
    logits.head_matches(student), logits.head_matches(teacher)  # the one-time check, outside the measured step
    before = resident_bytes()
    start = time.perf_counter()
    loss, _ = objective.loss(student, {"input_ids": ids})
    loss.backward()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"chunked": chunked, "step_peak_above_models_mb": (peak - before) / 2**20, "seconds": seconds,
            "loss": float(loss.detach()), "head_grad_norm": float(student.lm_head.weight.grad.norm())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, default=256_000)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--chunk-mb", type=float, default=None, help="fp32 logits per chunk (default: undo's)")
    parser.add_argument("--variant", choices=["chunked", "whole"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(one_step(args, args.variant == "chunked")))
        return
    logits_mb = args.batch * args.length * args.vocab * 4 / 2**20
    print(f"vocabulary {args.vocab:,}, width {args.width}, {args.layers} blocks, batch {args.batch} x {args.length} "
          f"tokens; one whole fp32 logits tensor: {logits_mb:,.0f} MB")
    results = {}
    for variant in ("chunked", "whole"):
        run = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--variant", variant], capture_output=True,
                             text=True)
        if run.returncode != 0:
            print(f"{variant}: failed ({run.stderr.strip().splitlines()[-1] if run.stderr.strip() else run.returncode})")
            continue
        results[variant] = json.loads(run.stdout.strip().splitlines()[-1])
        r = results[variant]
        print(f"{variant:>8}: step peak above the models {r['step_peak_above_models_mb']:,.0f} MB "
              f"({r['step_peak_above_models_mb'] / logits_mb:.2f}x one logits tensor), {r['seconds']:.1f} s, "
              f"loss {r['loss']:.6f}")
    if len(results) == 2:
        c, w = results["chunked"], results["whole"]
        print(f"chunked / whole: memory {c['step_peak_above_models_mb'] / w['step_peak_above_models_mb']:.2f}x, "
              f"time {c['seconds'] / w['seconds']:.2f}x; loss difference {abs(c['loss'] - w['loss']):.2e}, head "
              f"gradient norm difference {abs(c['head_grad_norm'] - w['head_grad_norm']):.2e}")


if __name__ == "__main__":
    main()
