"""Wall time of a whole study (`undo run`), where it goes, and what the pipeline itself costs.

Run:  python benchmarks/study_time.py                  (the embedded demo study, into a fresh temporary run_dir)
      python benchmarks/study_time.py configs/arithmetic.yaml --run-dir /tmp/arith   (long)
      python benchmarks/study_time.py --workers 2      (stages run in 2 processes: `undo run --workers 2`)

What is measured, in one run:
* total:    wall time of `undo run STUDY --run-dir FRESH --no-progress` in a subprocess, from start to exit
            (imports, every stage, the report).
* stages:   the sum of every artifact's own `wall_time_s` (the engine's timed training and evaluation), split
            by stage kind (pretrain, unlearn, distill, attack).
* overhead: total - stages: process start and imports, data generation and packing, model loading and saving,
            teacher evaluation before distillation, the manifest and the report. Printed as a share of total.
* with --workers N: stages / total is the average number of stages that ran at once (the overhead line is then
            not meaningful and is left out).
* rerun:    wall time of the same command again, when every artifact is complete (what a cached study costs),
            as a ratio to the first run.

Goal: the README's main command (the demo study) within 10 minutes on the 2-core CPU; the pipeline's overhead a
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


def timed_run(study: str | None, run_dir: Path, workers: int = 1) -> float:
    command = [sys.executable, "-m", "undo", "run", *([study] if study else []), "--run-dir", str(run_dir),
               "--no-progress", "--workers", str(workers)]
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def stage_seconds(run_dir: Path) -> dict[str, float]:
    seconds: dict[str, float] = defaultdict(float)
    for meta_path in run_dir.glob("*/meta.json"):
        meta = json.loads(meta_path.read_text())
        seconds[meta.get("kind", "?")] += meta.get("wall_time_s") or 0.0
    return dict(sorted(seconds.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("study", nargs="?", help="study YAML (default: the embedded demo study)")
    parser.add_argument("--run-dir", type=Path, help="fresh folder for the artifacts (default: a temporary one)")
    parser.add_argument("--workers", type=int, default=1, help="processes running stages at once")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        run_dir = args.run_dir or Path(scratch) / "runs"
        if run_dir.exists() and any(run_dir.iterdir()):
            sys.exit(f"{run_dir} is not empty: the benchmark needs a fresh run_dir")
        total = timed_run(args.study, run_dir, args.workers)
        stages = stage_seconds(run_dir)
        rerun = timed_run(args.study, run_dir, args.workers)
    busy = sum(stages.values())
    print(f"study: {args.study or 'embedded demo'}")
    print(f"total wall time      {total:8.1f} s  ({total / 60:.1f} min)")
    for kind, seconds in stages.items():
        print(f"  {kind:<18} {seconds:8.1f} s  {seconds / total:6.1%}")
    if args.workers == 1:
        print(f"  {'overhead':<18} {total - busy:8.1f} s  {(total - busy) / total:6.1%}  (imports, data, loading, "
              "report)")
    else:
        print(f"  {args.workers} workers: stage time / wall time = {busy / total:.2f} stages at once on average")
    print(f"rerun, all cached    {rerun:8.1f} s  = {rerun / total:.3f} of the first run")


if __name__ == "__main__":
    main()
