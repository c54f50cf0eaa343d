"""`undo report`: the study's report (report.md, PNG figures, results.json), every number read back from the
artifacts that the study manifest (`<run_dir>/study.json`) lists.

    records.py   typed records per (model, seed): evaluation, accounting, attacks, robustness
    aggregate.py groups of records, seed means and intervals (one implementation for claims, figures, tables)
    rules.py     the claims and their decision rules in words
    claims.py    the paper's claims R1-R7 as typed records, decided from the records, per attack kind
    rounds.py    `study.rounds` against the one combined unlearning, paired by seed
    figures.py   relearning curves, UNDO compute vs robustness, Pareto plots, oracle matching
    markdown.py  the report text and its tables

Conventions (also written into the report):
- Forget and retain metrics are scores, higher = more of the capability present: accuracies (arithmetic), or minus
  the held-out cross-entropy (language), which the report shows as the cross-entropy itself (`Score.shown`). Every
  model's metrics are its evaluation under the study's evaluation set.
- After an attack, "forget" is the attacker-best value at the budget (best LR of the grid at the last evaluated
  step <= budget). Pareto plots put it against the retain score of the model as shipped (before the attack).
- Robustness is normalised between the method's own unlearn-only teacher (0) and the data-filtered oracle (1),
  at each budget and for the area under the attacker-best curve (`undo.analysis.robustness`), under the
  same attack kind.
- Compute: a stage's FLOPs (distillation: student steps + teacher forwards) as a share of the oracle's
  pretraining FLOPs; the lineage share adds every ancestor (the base model's pretraining included).
- With several seeds, tables give the mean and a 95 % t-interval; curves are seed means.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from undo.analysis.cards import write_card
from undo.config.sections import TrackingConfig
from undo.core import tracking
from undo.report.claims import claims
from undo.report.figures import figures
from undo.report.markdown import markdown
from undo.report.records import Results, gather
from undo.report.rounds import rounds_comparison
from undo.schema.study import Manifest


def study_results(run_dir: Path) -> Results:
    """The study's records and its claims under each attack kind."""
    results = gather(Path(run_dir))
    results.claims = {kind: claims(results, kind) for kind in results.attack_kinds}
    results.rounds_comparison = rounds_comparison(results)
    return results


def write_report(run_dir: Path, out: Path | None = None) -> Path:
    """Write `<run_dir>/report.md` (or `out`), its figures beside it in `<stem>_figures/`, and the numbers in
    `results.json` (or `<stem>.json` beside `out`)."""
    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir / "report.md"
    results = study_results(run_dir)
    fig_dir = out.parent / f"{out.stem}_figures"
    figs = {kind: figures(results, results.claims[kind], kind, fig_dir, suffix="" if i == 0 else f"_{kind}")
            for i, kind in enumerate(results.attack_kinds)}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(markdown(results, figs, fig_dir.name) + "\n")
    results_name = "results.json" if out.name == "report.md" else f"{out.stem}.json"
    (out.parent / results_name).write_text(json.dumps(results.model_dump(mode="json"), indent=2) + "\n")
    track_results(results, Manifest.read(run_dir).config.get("tracking") or {})
    attack_cards(results, run_dir)
    return out


def attack_cards(results: Results, run_dir: Path) -> None:
    """The model card of every attacked model, written again with what the attack did to it: per seed that attacked
    it (a shared base model is attacked by each) and attack kind, the forget score before the attack and the
    attacker-best forget at each budget, with its LR and the robustness."""
    S = results.scoring
    by_artifact: dict[str, list] = {}
    for r in results.models:
        if r.artifact and r.attacks and (run_dir / r.artifact / "model").is_dir():
            by_artifact.setdefault(r.artifact, []).append(r)
    for artifact, records in by_artifact.items():
        rows = ["| seed | attack | budget | attacker-best forget | LR | robustness |", "|---|---|---|---|---|---|"]
        for r in records:
            for kind, attack in r.attacks.items():
                rows.append(f"| {r.seed} | {kind} | before | {S.format(attack.before['forget'])} | – | – |")
                for key, snapshot in attack.at.items():
                    robust = r.robustness_at(kind, key)
                    rows.append(f"| {r.seed} | {kind} | {key} steps | {S.format(snapshot.forget)} | "
                                f"{'–' if snapshot.lr is None else f'{snapshot.lr:g}'} | "
                                f"{'–' if robust is None else f'{robust:.2f}'} |")
        body = "\n".join([f"The relearning attack of study `{results.run_dir}`: {S.label('forget')}, measured on the "
                          "test split at the LR the attacker chose on validation; robustness 0 = its unlearn-only "
                          "teacher, 1 = the data-filtered oracle.", "", *rows])
        with contextlib.suppress(OSError):  # a read-only copy of a run directory keeps the cards it has
            write_card(run_dir / artifact, records[0].metrics, {"Relearning attack (undo report)": body},
                       accounting=records[0].accounting)


def track_results(results: Results, tracking_section: dict) -> None:
    """The report's numbers in the study's tracker, as one run named `report`: per model and seed, its retain and
    forget as shipped and, per attack kind, the attacker-best forget and the robustness at each budget and for the
    area (step 0: they are end results, not curves)."""
    t = TrackingConfig.model_validate(tracking_section)
    if t.backend is None:
        return
    run_dir = Path(results.run_dir)
    metrics: dict[str, float] = {}
    for r in results.models:
        if not r.metrics:
            continue
        name = f"{r.id}/seed{r.seed}"
        metrics.update({f"{name}/{side}": r.metrics[side] for side in ("retain", "forget")})
        for kind in results.attack_kinds:
            for key in [*map(str, results.budgets), "area"]:
                if r.attack(kind) is not None:
                    metrics[f"{name}/{kind}/forget@{key}"] = r.forget_at(kind, key)
                robust = r.robustness_at(kind, key)
                if robust is not None:
                    metrics[f"{name}/{kind}/robustness@{key}"] = robust
    logger = tracking.open_logger(t.backend, Path(t.dir) if t.dir is not None else run_dir / "tracking", "report",
                                  project=t.project, group=run_dir.name)
    logger.log({k: v for k, v in metrics.items() if v is not None}, 0)
    logger.close()
