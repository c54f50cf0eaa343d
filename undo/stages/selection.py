"""Choosing a teacher per method family among finished unlearning runs.

The rule: the lowest forget score among runs whose retain score keeps `unlearn.selection.min_retain_fraction` of the
base model's (ties go to the higher retain score); if no run qualifies, none is chosen, and that is recorded. Every
number the rule reads is an evaluation of the validation split under the current evaluation identity (`undo.stages.evaluation`), the base
model's included, so a changed evaluation set re-decides the choice instead of reusing numbers measured on another.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from undo.config import ExperimentConfig
from undo.schema.study import Candidate, SelectionRule, TeacherChoice
from undo.core import distributed
from undo.settings import ACCURACY, Score
from undo.stages.evaluation import ensure_evaluation
from undo.stages.unlearn import SweepPoint, default_base, optional_base, sweep_points, unlearn


def select_teacher(candidates: Sequence[Candidate], base_retain: float, rule: SelectionRule,
                   score: Score = ACCURACY) -> TeacherChoice:
    """Lowest forget score among runs whose retain score keeps `min_retain_fraction` of the base model's; ties go to
    the higher retain score (forget scores below a multiple-choice chance level count as chance, so a run a few
    questions below chance does not beat one at chance that kept more retain). If no run qualifies, none is chosen."""
    threshold = score.retain_floor(base_retain, rule.min_retain_fraction)
    judged = [c.model_copy(update={"qualifies": c.retain >= threshold}) for c in candidates]
    qualified = [c for c in judged if c.qualifies]
    chosen = min(qualified, key=lambda c: (score.floored(c.forget), -c.retain)).name if qualified else None
    return TeacherChoice(rule=rule, base_retain=base_retain, retain_threshold=threshold, chosen=chosen,
                         candidates=judged)


def teacher_selection(cfg: ExperimentConfig, runs: Sequence[tuple[SweepPoint, Path]],
                      base: Path) -> dict[str, TeacherChoice]:
    """The teacher of each method family among finished unlearning runs, by `cfg.unlearn.selection`, on the
    evaluations of the runs and of the base model under the config's evaluation set."""
    run_dir = Path(cfg.run_dir)
    base_retain = ensure_evaluation(base, cfg, "decisions")["retain"]
    families: dict[str, list[Candidate]] = {}
    for point, path in runs:
        metrics = ensure_evaluation(path, cfg, "decisions")
        where = Path(path).relative_to(run_dir) if Path(path).is_relative_to(run_dir) else Path(path)
        families.setdefault(point.label, []).append(Candidate(
            name=Path(path).name, path=str(where), lr=point.lr, knobs=dict(point.knobs),
            retain=metrics["retain"], forget=metrics["forget"]))
    return {label: select_teacher(c, base_retain, cfg.unlearn.selection, cfg.setting.score)
            for label, c in families.items()}


def run_unlearning(cfg: ExperimentConfig, *, start: Path | None = None,
                   progress: bool = True) -> dict[str, TeacherChoice]:
    """Every sweep point, then the teacher of each method family; writes `<run_dir>/unlearn_selection.json`.

    `start`: unlearn from this model (an artifact folder, e.g. a previous teacher) instead of the base model: a round
    of the responsive loop. Its runs are artifacts whose lineage runs through `start`, so their labels and FLOPs add
    to its own; a teacher must still keep the selection rule's share of the *base* model's retain (when the run
    directory holds it; else of `start`'s), so rounds cannot lose retain bit by bit. Its choices go to
    `unlearn_selection_from_<start>.json`."""
    base = default_base(cfg) if start is None else (optional_base(cfg) or Path(start))
    runs = [(point, unlearn(cfg, point, Path(start) if start is not None else base, progress=progress))
            for point in sweep_points(cfg)]
    selection = teacher_selection(cfg, runs, base)
    name = "unlearn_selection.json" if start is None else f"unlearn_selection_from_{Path(start).resolve().name}.json"
    if distributed.is_main():
        (Path(cfg.run_dir) / name).write_text(
            json.dumps({label: choice.model_dump(mode="json") for label, choice in selection.items()}, indent=2) + "\n")
    return selection
