"""Wall time of a whole study (`undo run`), where it goes, and what the pipeline itself costs.

Run:  python benchmarks/study_time.py                  (the embedded demo study, into a fresh temporary run_dir)
      python benchmarks/study_time.py configs/arithmetic.yaml --run-dir /tmp/arith   (long)
      python benchmarks/study_time.py --workers 2      (stages run in 2 processes: `undo run --workers 2`)

What is measured, in one run:
* total:    wall time of `undo run STUDY --run-dir FRESH --no-progress` in a subprocess, from start to exit
            (imports, every stage, the report).
* stages:   per stage kind (pretrain, unlearn, distill, attack): how many ran, the sum of their whole runs, and
            that time split into training (forward, backward and optimizer of the trained model), reference
            forwards (frozen teachers and reference models), evaluation (every evaluation and stop-rule probe) and
            I/O and setup (data, loading and saving models, checkpoints), from each meta.json's `time_split`.
* overhead: total - stages (with 1 worker): process start and imports, the final evaluations of each made model
            (decisions and report), the manifest and the report. Printed as a share of total.
* with --workers N: stages / total is the average number of stages that ran at once (the overhead line is then
            not meaningful and is left out).
* rerun:    wall time of the same command again, when every artifact is complete (what a cached study costs),
            as a ratio to the first run.

Goals: the README's main command (the demo study) within 5 minutes on the 2-core CPU, the 3-seed arithmetic
study within 25 minutes with 2 workers; the pipeline's overhead a
small share of it. A benchmark, not a test: it always exits 0 and is not part of CI's pass/fail.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path


def timed_run(study: str | None, run_dir: Path, workers: int | None = None) -> float:
    command = [sys.executable, "-m", "undo", "run", *([study] if study else []), "--run-dir", str(run_dir),
               "--no-progress", *(["--workers", str(workers)] if workers else [])]
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


PHASES = ("training", "reference_forwards", "evaluation", "io_and_setup")


def stage_seconds(run_dir: Path) -> dict[str, dict[str, float]]:
    """Stage kind -> {"count", "total", and each phase's seconds}; an artifact made before `time_split` existed
    counts its `wall_time_s` as total only."""
    seconds: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for meta_path in run_dir.glob("*/meta.json"):
        meta = json.loads(meta_path.read_text())
        kind = seconds[meta.get("kind", "?")]
        split = meta.get("time_split") or {}
        kind["count"] += 1
        kind["total"] += sum(split.values()) if split else meta.get("wall_time_s") or 0.0
        for phase in PHASES:
            kind[phase] += split.get(phase, 0.0)
    return {kind: dict(values) for kind, values in sorted(seconds.items())}


def print_profile(stages: dict[str, dict[str, float]], total: float) -> None:
    print(f"  {'stage kind':<10} {'n':>4} {'seconds':>9} {'of wall':>8}   " + "  ".join(f"{p:>18}" for p in PHASES))
    for kind, values in stages.items():
        shares = "  ".join(f"{values.get(p, 0.0):8.0f} s {values.get(p, 0.0) / max(values['total'], 1e-9):6.1%}"
                           for p in PHASES)
        print(f"  {kind:<10} {values['count']:4.0f} {values['total']:9.1f} {values['total'] / total:8.1%}   {shares}")
    busy = sum(values["total"] for values in stages.values())
    overall = "  ".join(f"{sum(v.get(p, 0.0) for v in stages.values()):8.0f} s "
                        f"{sum(v.get(p, 0.0) for v in stages.values()) / max(busy, 1e-9):6.1%}" for p in PHASES)
    print(f"  {'all':<10} {sum(v['count'] for v in stages.values()):4.0f} {busy:9.1f} {busy / total:8.1%}   {overall}")


def study_workers(study: str | None) -> int:
    from undo.config.loading import load_config

    return load_config(study).study.workers or 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("study", nargs="?", help="study YAML (default: the embedded demo study)")
    parser.add_argument("--run-dir", type=Path, help="fresh folder for the artifacts (default: a temporary one)")
    parser.add_argument("--workers", type=int, help="processes running stages at once (default: the study's "
                        "study.workers, else 1)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        run_dir = args.run_dir or Path(scratch) / "runs"
        if run_dir.exists() and any(run_dir.iterdir()):
            sys.exit(f"{run_dir} is not empty: the benchmark needs a fresh run_dir")
        total = timed_run(args.study, run_dir, args.workers)
        stages = stage_seconds(run_dir)
        rerun = timed_run(args.study, run_dir, args.workers)
    busy = sum(values["total"] for values in stages.values())
    workers = args.workers or study_workers(args.study)
    print(f"study: {args.study or 'embedded demo'}, {workers} worker(s)")
    print(f"total wall time      {total:8.1f} s  ({total / 60:.1f} min)")
    print_profile(stages, total)
    if workers == 1:
        print(f"  {'overhead':<18} {total - busy:8.1f} s  {(total - busy) / total:6.1%}  (process start, imports, "
              "final evaluations, report)")
    else:
        print(f"  {workers} workers: stage time / wall time = {busy / total:.2f} stages at once on average")
    print(f"rerun, all cached    {rerun:8.1f} s  = {rerun / total:.3f} of the first run")


if __name__ == "__main__":
    main()
