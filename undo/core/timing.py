"""Where a stage's wall time goes: training, reference forwards, evaluation, and the rest (data, loading, saving).

One stopwatch per process (a stage runs alone in its process, or first in line in `undo run`). Code marks its
phases with `with phase("evaluation"):`; phases nest exclusively (a teacher forward inside a training step counts
as a reference forward, not as training), so the phases of a stage add up to at most its wall time.
`undo.stages.base.run_stage` resets the stopwatch before a stage and records `split(total)` in its meta.json.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Literal

Phase = Literal["training", "reference_forwards", "evaluation"]
PHASES: tuple[Phase, ...] = ("training", "reference_forwards", "evaluation")
OTHER = "io_and_setup"  # what no phase claims: data generation and packing, model loading and saving, checkpoints


class Stopwatch:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._stack: list[list] = []  # [phase, started, seconds spent in phases nested inside it]

    def reset(self) -> None:
        self.seconds, self._stack = {}, []

    @contextmanager
    def phase(self, name: Phase):
        entry = [name, time.perf_counter(), 0.0]
        self._stack.append(entry)
        try:
            yield
        finally:
            self._stack.pop()
            spent = time.perf_counter() - entry[1]
            self.seconds[name] = self.seconds.get(name, 0.0) + spent - entry[2]
            if self._stack:
                self._stack[-1][2] += spent

    def split(self, total_s: float) -> dict[str, float]:
        """Each phase's seconds and the rest of `total_s`, rounded to milliseconds."""
        phases = {name: round(self.seconds.get(name, 0.0), 3) for name in PHASES}
        return {**phases, OTHER: round(max(0.0, total_s - sum(phases.values())), 3)}


STOPWATCH = Stopwatch()
phase = STOPWATCH.phase
