"""The report as Markdown: conventions, wall times, the claims and figures of each attack kind, and the tables of
every stage (mean and 95 % t-interval over seeds)."""

from __future__ import annotations

from typing import Any

from undo.analysis.stats import mean_ci
from undo.report.records import ModelRecord, Results
from undo.settings import score_of
from undo.study.manifest import Role

DISTILLED_ROLES = (Role.DISTILLED, Role.UNDO, Role.ORACLE_MATCH_BASE, Role.ORACLE_MATCH_RANDOM)


def pct(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{100 * value:.{digits}f}%"


def num(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def stat(group: list[ModelRecord], get, fmt=pct) -> str:
    values = []
    for r in group:
        try:
            values.append(get(r))
        except (KeyError, TypeError, AttributeError):
            values.append(None)
    mean, half = mean_ci(values)
    if mean is None:
        return "–"
    return fmt(mean) + (f" ± {fmt(half)}" if half is not None else "")


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(row) + " |" for row in rows), ""]


def grouped(records: list[ModelRecord], roles) -> list[list[ModelRecord]]:
    """Finished records of these roles, one list (of seeds) per model."""
    groups: dict[tuple, list[ModelRecord]] = {}
    for r in records:
        if r.role in roles and r.artifact:
            groups.setdefault((r.role, r.id), []).append(r)
    return list(groups.values())


def verdict(claim: dict[str, Any] | None) -> str:
    if claim is None:
        return "**not measured** in this study"
    why = claim.get("undecided_because", "some of its numbers are not measured yet")
    return {True: "**held**", False: "**did not hold**", None: f"**undecided** ({why})"}[claim["held"]]


def claim_lines(c: dict[str, Any], fmt) -> list[str]:
    lines = []
    r1 = c.get("R1")
    lines.append(f"- **R1** (oracle matching: finetuned base relearns faster than a random-init student): {verdict(r1)}"
                 + (". Attacker-best forget, finetuned base vs random init: " + "; ".join(
                     f"{k if k == 'area' else '@' + k}: {fmt(v['finetuned_base'])} vs {fmt(v['random_init'])}"
                     for k, v in r1["numbers"].items()) if r1 else ""))
    r2 = c.get("R2")
    lines.append(f"- **R2** (Unlearn-and-Distill relearns more slowly than unlearn-only): {verdict(r2)}"
                 + ("".join(f"\n  - {fam}: {verdict(v)}; " + "; ".join(
                     f"{k if k == 'area' else '@' + k}: {fmt(n['unlearn_and_distill'])} vs {fmt(n['unlearn_only'])}"
                     for k, n in v["numbers"].items()) for fam, v in sorted(r2["by_family"].items())) if r2 else ""))
    r3 = c.get("R3")
    lines.append(f"- **R3** (UNDO's compute and robustness rise with alpha): {verdict(r3)}" + (
        f" (Kendall tau-b with alpha: compute {num(r3['kendall_tau']['compute'])}, robustness "
        f"{num(r3['kendall_tau']['robustness_area'])}). " + "; ".join(
            f"a={p['alpha']:g}: {pct(p['compute'], 2)} of oracle FLOPs, {num(p['steps'], 0)} steps, robustness "
            f"{num(p['robustness']['area'])}" for p in r3["points"]) if r3 else ""))
    r4 = c.get("R4")
    lines.append(f"- **R4** (UNDO on or beyond the baselines' Pareto frontier after the attack): {verdict(r4)}" + (
        f" against {len(r4['baselines'])} attacked unlearn-only run(s): {', '.join(r4['baselines'])}"
        " (" + ", ".join(f"after {k} steps: {'yes' if v else 'no'}" for k, v in r4["held_at"].items())
        + "; a point is off the frontier when an unlearn-only run of the same seed has higher retain and lower "
          "post-attack forget)" if r4 else ""))
    r5 = c.get("R5")
    if r5:
        s = r5["strongest"]
        lines.append(f"- **R5** (UNDO's strongest alpha vs data filtering): alpha {s['alpha']:g} reaches robustness "
                     f"{num(s['robustness']['area'])} (data filtering: 1) for {pct(s['compute'], 2)} of data "
                     "filtering's pretraining FLOPs.")
    else:
        lines.append(f"- **R5** (UNDO's strongest alpha vs data filtering): {verdict(None)}")
    r6 = c.get("R6")
    lines.append(f"- **R6** (labelled fraction): {verdict(r6)}" + (
        " UNDO's lineage read labelled tokens equal to " + ", ".join(
            f"{pct(v, 3)} (a={a})" for a, v in r6["labelled_fraction"].items())
        + " of the pretraining tokens; data filtering must label 100%." if r6 else ""))
    return lines + [""]


def markdown(results: Results, figs: dict[str, dict[str, str]], fig_dir: str) -> str:
    """The report; `figs` maps each attack kind to its figures (name -> file in `fig_dir`)."""
    records, budgets, keys = results.models, results.budgets, [str(b) for b in results.budgets]
    kinds = results.attack_kinds
    S = score_of(results.setting)
    fmt = S.format  # a score as people read it (accuracy %, or CE in nats)
    shown_fmt = pct if not S.relative else (lambda v: num(v, 3))  # an already shown value (means, intervals)

    def metric(get):  # a record's score, as shown
        return lambda r: S.shown(get(r))

    def of_kind(kind: str) -> str:
        return "" if len(kinds) == 1 else f" (attack: {kind})"

    units = ("accuracies" if not S.relative else "mean next-token cross-entropy on held-out documents, in nats "
             "(retain: lower is better; forget: higher = more forgotten)")
    if S.chance is not None:
        units = (f"multiple-choice accuracies (chance {100 * S.chance:.0f}%: what guessing scores; a forget score "
                 "below it counts as chance, the floor, in teacher selection and robustness)")
    lines = [f"# undo study report: `{results.run_dir}`", "",
             f"Config hash `{results.config_hash}`, code `{results.code_version}`, seeds "
             f"{results.seeds}{'' if results.complete else ' (study incomplete: some stages have not run)'}. "
             "Every number below is read from the artifacts' meta.json, metrics.jsonl and evaluations "
             "(`undo report` regenerates this file).", "",
             f"Conventions: {units}; after an attack, forget = the attacker-best value at the budget (best LR of "
             "the grid); robustness is normalised between the method's unlearn-only teacher (0) and the oracle (1); "
             "compute is a share of the oracle's pretraining FLOPs. With several seeds: mean ± 95 % t-interval.", ""]
    if not any(r.role == Role.ORACLE and r.artifact for r in records):
        lines += ["**No data-filtered oracle in this study**: robustness (0 = unlearn-only, 1 = oracle) and compute "
                  "as a share of the oracle's are not computed, not guessed. Compare the attacker-best forget of each "
                  "model with the base model's and its unlearn-only teacher's rows.", ""]
    lines += ["## Stage wall times (this machine)", ""]
    lines += table(["stage", "seconds"], [[k, f"{v:.0f}"] for k, v in results.wall_time_s.items()])

    for kind in kinds:
        lines += [f"## The paper's claims at this scale{of_kind(kind)}", ""]
        lines += claim_lines(results.claims.get(kind, {}), fmt)
        for name, caption in (
                ("relearning", "Relearning attack: unlearn-only vs Unlearn-and-Distill vs data filtering "
                               f"(attacker-best {S.label('forget')}; grey lines mark the budgets)."),
                ("undo", "UNDO: compute against robustness, one point per alpha (left); relearning curves per alpha "
                         "(right)."),
                ("pareto", f"Retain ({S.label('retain')}) as shipped against forget before the attack and after "
                           "each budget, every attacked model."),
                ("oracle_matching", "Oracle matching: the base model distilled toward the oracle vs a random init "
                                    "distilled from the oracle.")):
            if name in figs.get(kind, {}):
                lines += [f"![{caption}]({fig_dir}/{figs[kind][name]})", "", f"*{caption}*", ""]

    lines += ["## Pretraining", ""]
    lines += table(["model", "steps", "tokens", "FLOPs", "retain", "forget", "labelled fraction"], [
        [g[0].id, stat(g, lambda r: r.steps, lambda v: f"{v:,.0f}"),
         stat(g, lambda r: r.accounting.pretraining_tokens if r.role == Role.BASE else None, lambda v: f"{v:,.0f}"),
         stat(g, lambda r: r.accounting.stage_flops_total, lambda v: f"{v:.3g}"),
         stat(g, metric(lambda r: r.metrics["retain"]), shown_fmt),
         stat(g, metric(lambda r: r.metrics["forget"]), shown_fmt),
         stat(g, lambda r: r.accounting.labelled_fraction)]
        for g in ([group[0]] for group in grouped(records, (Role.BASE, Role.ORACLE)))])  # one artifact, all seeds

    lines += [f"## Unlearning (every sweep point; the teacher is the most forgotten ({S.label('forget')}) that keeps "
              "the selection rule's share of the base model's retain performance)", ""]
    teachers = {(r.seed, r.artifact) for r in records if r.role == Role.TEACHER}
    lines += table(["run", "retain", "forget", "chosen as teacher", "FLOPs % oracle", "labelled fraction"], [
        [g[0].id, stat(g, metric(lambda r: r.metrics["retain"]), shown_fmt),
         stat(g, metric(lambda r: r.metrics["forget"]), shown_fmt),
         f"{sum((r.seed, r.artifact) in teachers for r in g)}/{len(g)} seeds",
         stat(g, lambda r: r.accounting.stage_fraction_of_oracle, lambda v: pct(v, 2)),
         stat(g, lambda r: r.accounting.labelled_fraction, lambda v: pct(v, 3))]
        for g in grouped(records, (Role.UNLEARN,)) if g[0].metrics])

    lines += ["## Distillation", ""]
    lines += table(["student", "steps", "stopped by the rule", "FLOPs % oracle (student + teacher)",
                    "lineage % oracle", "retain", "forget", "teacher retain / forget"], [
        [g[0].id, stat(g, lambda r: r.steps, lambda v: f"{v:,.0f}"),
         f"{sum(bool(r.distill.stopped_early) for r in g)}/{len(g)}",
         stat(g, lambda r: r.accounting.stage_fraction_of_oracle, lambda v: pct(v, 2)),
         stat(g, lambda r: r.accounting.lineage_fraction_of_oracle, lambda v: pct(v, 1)),
         stat(g, metric(lambda r: r.metrics["retain"]), shown_fmt),
         stat(g, metric(lambda r: r.metrics["forget"]), shown_fmt),
         stat(g, metric(lambda r: r.distill.teacher_metrics["retain"]), shown_fmt) + " / "
         + stat(g, metric(lambda r: r.distill.teacher_metrics["forget"]), shown_fmt)]
        for g in grouped(records, DISTILLED_ROLES) if g[0].metrics])

    for kind in kinds:
        lines += [f"## Relearning attack{of_kind(kind)} (attacker-best {S.label('forget')}; robustness in brackets)",
                  ""]
        header = ["model", "before", *(f"@{k} steps" for k in keys), f"area to {max(budgets)}",
                  "LR at the last budget"]
        rows = []
        for g in grouped(records, tuple(Role)):
            attacked = [r for r in g if r.attack(kind)]
            if not attacked:
                continue

            def cell(key: str, g=attacked) -> str:
                value = stat(g, metric(lambda r: r.attack(kind).area if key == "area"
                                       else r.attack(kind).at[key].forget), shown_fmt)
                robust = any(r.robustness.get(kind) for r in g)
                rob = stat(g, lambda r: r.robustness[kind][key], num) if robust else None
                return value + (f" [{rob}]" if rob and rob != "–" else "")

            lrs = sorted({f"{r.attack(kind).at[keys[-1]].lr:g}" for r in attacked
                          if r.attack(kind).at[keys[-1]].lr is not None})
            rows.append([g[0].id, stat(attacked, metric(lambda r: r.attack(kind).before["forget"]), shown_fmt),
                         *(cell(k) for k in keys), cell("area"), ", ".join(lrs)])
        lines += table(header, rows)
    if results.skipped:
        lines += ["## Skipped", ""] + [f"- {name}: {why}" for name, why in results.skipped.items()] + [""]
    return "\n".join(lines)
