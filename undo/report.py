"""`undo report`: the study's report (report.md, PNG figures, results.json), every number read back from the
artifacts that `undo run` listed in `<run_dir>/study.json`.

Conventions of the report (also written into it):
- Forget and retain metrics are scores, higher = more of the capability present: accuracies (arithmetic), or minus
  the held-out cross-entropy (language), which the report shows as the cross-entropy itself (`Score.shown`).
- After an attack, "forget" is the attacker-best value at the budget (best LR of the grid at the last evaluated
  step <= budget). Pareto plots put it against the retain accuracy of the model as shipped (before the attack):
  the defender chooses what it ships, the attacker what it does to it.
- Robustness is normalised between the method's own unlearn-only teacher (0) and the data-filtered oracle (1),
  at each budget and for the area under the attacker-best curve (SCIENCE.md).
- Compute: a stage's FLOPs (distillation: student steps + teacher forwards) as a share of the oracle's
  pretraining FLOPs; the lineage share adds every ancestor (the base model's pretraining included).
- With several seeds, tables give the mean and a 95 % t-interval; curves are seed means.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from undo.accounting import accounting_of
from undo.artifacts import code_version
from undo.errors import UserError
from undo.pipeline import MANIFEST
from undo.robustness import BestCurve, EPS, area_under
from undo.settings import Score, score_of

# Two-sided 95 % Student-t quantiles by degrees of freedom (no scipy dependency for one table).
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
       15: 2.131, 20: 2.086, 30: 2.042}


def t95(df: int) -> float:
    eligible = [d for d in T95 if d <= df]
    return T95[max(eligible)] if df <= 30 else 1.96


def mean_ci(values: list[float | None]) -> tuple[float | None, float | None]:
    """Mean and 95 % half-interval over seeds (None half-interval with one value)."""
    xs = [v for v in values if v is not None]
    if not xs:
        return None, None
    if len(xs) == 1:
        return xs[0], None
    return statistics.fmean(xs), t95(len(xs) - 1) * statistics.stdev(xs) / math.sqrt(len(xs))


def load_json(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


# ----------------------------------------------------------------------------------------------------------
# Gathering: one record per (model, seed), then the study-level numbers


def attack_record(attack_dir: Path, budgets: list[int]) -> dict[str, Any]:
    """The attacker-best curve of one attack, its value and LR at each budget, the retain accuracy of that LR
    at that step, and the area up to the largest budget."""
    meta = load_json(attack_dir / "meta.json")
    best = BestCurve.from_dict(meta["best"])
    retain_by_lr = {run["lr"]: run["retain"] for run in meta["per_lr"]}
    at = {}
    for budget in budgets:
        index = max(i for i, step in enumerate(best.steps) if step <= budget)
        lr = best.best_lr[index]
        retain = retain_by_lr[lr]["values"][index] if lr is not None else None
        at[str(budget)] = {"forget": best.values[index], "step": best.steps[index], "lr": lr,
                           "retain_at_best_lr": retain,
                           "tokens": budget * meta["data"]["tokens_per_step"]}
    return {"artifact": attack_dir.name, "before": meta["metrics_before"], "best": best.to_dict(),
            "at": at, "area": area_under(best, max(budgets)), "area_up_to": max(budgets),
            "wall_time_s": meta["wall_time_s"], "flops_total": meta["flops_total"]}


def model_record(entry: dict[str, Any], budgets: list[int]) -> dict[str, Any]:
    record = {k: entry.get(k) for k in ("id", "role", "family", "alpha", "beta", "seed", "lr", "knobs", "skipped")}
    record["artifact"] = record["attack"] = None
    if entry.get("artifact"):
        path = Path(entry["artifact"])
        meta = load_json(path / "meta.json")
        record["artifact"] = path.name
        record["metrics"] = meta["final_metrics"]
        record["wall_time_s"] = meta.get("wall_time_s")
        record["steps"] = meta.get("steps")
        record["accounting"] = accounting_of(path)
        if meta["kind"] == "distill":
            record["distill"] = {k: meta[k] for k in ("init", "stopped_early", "stop_step", "flops", "flops_at_stop",
                                                      "teacher_metrics")}
            record["distill"]["teacher"] = Path(meta.get("input_paths", {}).get("teacher") or "").name or None
    if entry.get("attack"):
        record["attack"] = attack_record(Path(entry["attack"]), budgets)
    return record


def add_robustness(records: list[dict[str, Any]], budgets: list[int]) -> None:
    """Normalised robustness of every attacked model that has a method family, against that family's teacher
    (unlearn-only) and the oracle, with the same seed."""
    by_seed_role = {(r["seed"], r["role"], r.get("family")): r for r in records if r["role"] in ("teacher", "oracle")}
    for r in records:
        r["robustness"] = None
        teacher = by_seed_role.get((r["seed"], "teacher", r.get("family")))
        oracle = by_seed_role.get((r["seed"], "oracle", None))
        if not (r.get("attack") and r.get("family") and teacher and teacher.get("attack") and oracle
                and oracle.get("attack")):
            continue
        rob = {}
        for key in [*(str(b) for b in budgets), "area"]:
            if key == "area":
                p, u, o = r["attack"]["area"], teacher["attack"]["area"], oracle["attack"]["area"]
            else:
                p, u, o = (x["attack"]["at"][key]["forget"] for x in (r, teacher, oracle))
            rob[key] = (u - p) / (u - o) if abs(u - o) > EPS else None
        r["robustness"] = rob


def gather(run_dir: Path) -> dict[str, Any]:
    manifest_path = run_dir / MANIFEST
    if not manifest_path.is_file():
        raise UserError(f"no study at {run_dir}: {MANIFEST} is missing; run `undo run STUDY.yaml` first")
    manifest = load_json(manifest_path)
    cfg = manifest["config"]
    setting_name = cfg["setting"].get("name", "arithmetic")
    budgets = list(cfg["attack"]["budgets"])
    records = [model_record(entry, budgets) for entry in manifest["models"]]
    add_robustness(records, budgets)
    seen, wall = set(), defaultdict(float)
    for r in records:  # every artifact's own wall time, once (base and oracle appear once per seed)
        for name, seconds, kind in ((r["artifact"], r.get("wall_time_s"), r["role"]),
                                    ((r.get("attack") or {}).get("artifact"),
                                     (r.get("attack") or {}).get("wall_time_s"), "attack")):
            if name and name not in seen and seconds is not None:
                seen.add(name)
                kind = {"base": "pretrain", "oracle": "pretrain", "teacher": "unlearn", "undo": "distill",
                        "distilled": "distill", "oracle_match_base": "distill",
                        "oracle_match_random": "distill"}.get(kind, kind)
                wall[kind] += seconds
    results = {
        "run_dir": str(run_dir), "config_hash": manifest["config_hash"], "code_version": code_version(),
        "setting": setting_name, "score": score_of(setting_name).kind,
        "complete": manifest["complete"], "seeds": manifest["seeds"], "budgets": budgets,
        "selection": manifest["selection"], "skipped": manifest["skipped"],
        "wall_time_s": {**{k: round(v, 1) for k, v in sorted(wall.items())}, "total": round(sum(wall.values()), 1)},
        "models": records,
    }
    results["claims"] = claims(results, cfg)
    return results


# ----------------------------------------------------------------------------------------------------------
# The paper's claims, decided from the numbers (None = not measurable in this study)


def group_of(records, role, **match) -> list[dict[str, Any]]:
    """The finished models of one role (skipped ones have no artifact), optionally matching fields."""
    return [r for r in records
            if r["role"] == role and r.get("artifact") and all(r.get(k) == v for k, v in match.items())]


def per_id(records: list[dict[str, Any]], role: str, **match) -> dict[str, list[dict[str, Any]]]:
    """`group_of`, split by model id (one list of seeds per model)."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in group_of(records, role, **match):
        groups[r["id"]].append(r)
    return groups


def seed_mean(group: list[dict[str, Any]], get) -> float | None:
    values = []
    for r in group:
        try:
            values.append(get(r))
        except (KeyError, TypeError):
            pass
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def kendall_tau(xs: list[float], ys: list[float]) -> float | None:
    pairs = [(i, j) for i in range(len(xs)) for j in range(i + 1, len(xs))]
    if not pairs:
        return None
    score = sum(math.copysign(1, (xs[i] - xs[j]) * (ys[i] - ys[j])) if (xs[i] - xs[j]) * (ys[i] - ys[j]) else 0
                for i, j in pairs)
    return score / len(pairs)


def claims(results: dict[str, Any], cfg: dict[str, Any]) -> dict[str, Any]:
    records, budgets = results["models"], results["budgets"]
    keys = [str(b) for b in budgets]

    def forget_at(group, key):
        if key == "area":
            return seed_mean(group, lambda r: r["attack"]["area"])
        return seed_mean(group, lambda r: r["attack"]["at"][key]["forget"])

    out: dict[str, Any] = {}
    # R1: oracle matching.
    fin = group_of(records, "oracle_match_base")
    rnd = group_of(records, "oracle_match_random")
    if fin and rnd and all(r.get("attack") for r in fin + rnd):
        numbers = {k: {"finetuned_base": forget_at(fin, k), "random_init": forget_at(rnd, k)} for k in keys + ["area"]}
        out["R1"] = {"claim": "the base model distilled toward the oracle relearns faster than a random-init "
                              "student distilled from the oracle",
                     "held": all(v["finetuned_base"] > v["random_init"] for v in numbers.values()), "numbers": numbers}
    # R2: Unlearn-and-Distill vs unlearn-only, per family.
    r2 = {}
    for family in {r["family"] for r in records if r["role"] == "distilled"}:
        student = group_of(records, "distilled", family=family)
        teacher = group_of(records, "teacher", family=family)
        if student and teacher and all(r.get("attack") for r in student + teacher):
            numbers = {k: {"unlearn_only": forget_at(teacher, k), "unlearn_and_distill": forget_at(student, k)}
                       for k in keys + ["area"]}
            r2[family] = {"held": all(v["unlearn_and_distill"] < v["unlearn_only"] for v in numbers.values()),
                          "numbers": numbers}
    if r2:
        out["R2"] = {"claim": "Unlearn-and-Distill relearns more slowly than unlearn-only", "by_family": r2,
                     "held": all(v["held"] for v in r2.values())}
    # R3 and R5: UNDO's alpha sweep.
    undo = per_id(records, "undo")
    points = []
    for group in undo.values():
        points.append({"alpha": group[0]["alpha"],
                       "compute": seed_mean(group, lambda r: r["accounting"]["stage_fraction_of_oracle"]),
                       "steps": seed_mean(group, lambda r: r["steps"]),
                       "robustness": {k: seed_mean(group, lambda r, k=k: r["robustness"][k]) for k in keys + ["area"]},
                       "retain": seed_mean(group, lambda r: r["metrics"]["retain"]),
                       "labelled_fraction": seed_mean(group, lambda r: r["accounting"]["labelled_fraction"])})
    points.sort(key=lambda p: p["alpha"])
    if len(points) >= 2:
        alphas = [p["alpha"] for p in points]
        tau_c = kendall_tau(alphas, [p["compute"] for p in points]) if all(p["compute"] is not None
                                                                           for p in points) else None
        robust = [p["robustness"]["area"] for p in points]
        tau_r = kendall_tau(alphas, robust) if all(v is not None for v in robust) else None
        out["R3"] = {"claim": "UNDO's compute and robustness rise with alpha", "points": points,
                     "kendall_tau": {"compute": tau_c, "robustness_area": tau_r},
                     "held": None if tau_c is None or tau_r is None else (tau_c > 0 and tau_r > 0)}
    if points and any(p["robustness"]["area"] is not None for p in points):
        strongest = max((p for p in points if p["robustness"]["area"] is not None),
                        key=lambda p: p["robustness"]["area"])
        out["R5"] = {"claim": "UNDO's strongest alpha against data filtering (robustness 1 by definition, compute "
                              "= the oracle's pretraining)", "strongest": strongest,
                     "held": None}  # a comparison to report, not a yes/no claim
    # R4: Pareto frontier of the baselines (retain as shipped vs forget after the attack).
    baselines = [r for r in records if r["role"] in ("unlearn", "teacher") and r.get("attack")]
    undo_recs = [r for r in records if r["role"] == "undo" and r.get("attack")]
    if baselines and undo_recs:
        r4 = {}
        for k in ["before", *keys]:
            def point(r, k=k):
                forget = r["metrics"]["forget"] if k == "before" else r["attack"]["at"][k]["forget"]
                return r["metrics"]["retain"], forget
            rows = {}
            for u in undo_recs:
                ur, uf = point(u)
                dominated_by = [b["id"] for b in baselines if b["seed"] == u["seed"]
                                and point(b)[0] >= ur and point(b)[1] <= uf and point(b) != (ur, uf)]
                rows[f"{u['id']} (seed {u['seed']})"] = {"retain": ur, "forget": uf, "dominated_by": dominated_by}
            r4[k] = rows
        held = {k: any(not v["dominated_by"] for v in rows.values()) for k, rows in r4.items() if k != "before"}
        out["R4"] = {"claim": "UNDO lies on or beyond the Pareto frontier of the unlearn-only baselines after the "
                              "attack", "by_budget": r4, "held_at": held, "held": all(held.values()),
                     "baselines": sorted({b["id"] for b in baselines})}
    # R6: labels.
    if points:
        out["R6"] = {"claim": "UNDO needs labels only for the unlearning step: a small fraction of the pretraining "
                              "tokens (data filtering labels all of them)",
                     "labelled_fraction": {f"{p['alpha']:g}": p["labelled_fraction"] for p in points},
                     "data_filtering": 1.0, "held": all((p["labelled_fraction"] or 0) < 1.0 for p in points)}
    return out


# ----------------------------------------------------------------------------------------------------------
# Figures (matplotlib, PNG)

COLORS = {"base": "tab:gray", "oracle": "black", "grad_diff": "tab:blue", "maxent": "tab:orange",
          "rmu": "tab:green", "npo": "tab:red", "simnpo": "tab:purple", "repnoise": "tab:brown",
          "grad_ascent": "tab:pink", "grad_diff+sam": "tab:cyan"}


def color(family: str | None) -> str:
    return COLORS.get(family or "", "tab:olive")


def mean_curve(group: list[dict[str, Any]]) -> tuple[list[int], list[float]] | None:
    curves = [r["attack"]["best"] for r in group if r.get("attack")]
    if not curves:
        return None
    steps = curves[0]["steps"]
    if any(c["steps"] != steps for c in curves):
        raise UserError("attack curves of one model differ in their evaluated steps across seeds; use one attack "
                        "config for every seed")
    return steps, [statistics.fmean(values) for values in zip(*(c["values"] for c in curves))]


def _plot(ax, group, label, score: Score, **style) -> None:
    curve = mean_curve(group)
    if curve:
        steps, values = curve
        ax.plot(steps, [score.shown(v) for v in values], label=label, **style)


def _finish(fig, ax_list, path: Path, budgets, score: Score) -> None:
    for ax in ax_list:
        for b in budgets:
            ax.axvline(b, color="0.85", lw=0.8, zorder=0)
        ax.set_xlabel("attack step")
        if not score.relative:
            ax.set_ylim(-0.02, 1.0)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def figures(results: dict[str, Any], out: Path) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    records, budgets = results["models"], results["budgets"]
    score = score_of(results.get("setting", "arithmetic"))
    forget_label = f"{score.label('forget')} (attacker-best)"
    made: dict[str, str] = {}
    oracle, base = group_of(records, "oracle"), group_of(records, "base")

    families = sorted({r["family"] for r in records if r["role"] == "distilled"})
    if families:
        fig, axes = plt.subplots(1, len(families), figsize=(4.2 * len(families), 3.6), squeeze=False)
        for ax, family in zip(axes[0], families):
            _plot(ax, group_of(records, "teacher", family=family), "unlearn-only", score, color=color(family), ls="--")
            _plot(ax, group_of(records, "distilled", family=family), "unlearn-and-distill", score, color=color(family))
            _plot(ax, oracle, "oracle (data filtering)", score, color="black")
            _plot(ax, base, "base (no unlearning)", score, color="tab:gray", ls=":")
            ax.set_title(family)
            ax.set_ylabel(forget_label)
            ax.legend(fontsize=7)
        _finish(fig, axes[0], out / "relearning.png", budgets, score)
        plt.close(fig)
        made["relearning"] = "relearning.png"

    undo = results["claims"].get("R3", {}).get("points") or []
    if undo:
        fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
        xs = [100 * p["compute"] for p in undo]
        ys = [p["robustness"]["area"] for p in undo]
        left.plot(xs, ys, "o-", color="tab:orange", label="UNDO")
        for p, x, y in zip(undo, xs, ys):
            if y is not None:
                left.annotate(f"a={p['alpha']:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        undo_family = group_of(records, "undo")[0]["family"]
        distilled = group_of(records, "distilled", family=undo_family)
        if distilled and all(r.get("robustness") for r in distilled):
            left.plot([100 * seed_mean(distilled, lambda r: r["accounting"]["stage_fraction_of_oracle"])],
                      [seed_mean(distilled, lambda r: r["robustness"]["area"])], "s", color="tab:blue",
                      label="unlearn-and-distill (random init)")
        left.plot([100], [1], "X", color="black", label="data filtering (oracle)")
        left.set_xlabel("compute, % of the oracle's pretraining FLOPs")
        left.set_ylabel(f"robustness (area to {max(budgets)} steps)")
        left.legend(fontsize=7)
        left.grid(alpha=0.3)
        cmap = plt.get_cmap("viridis")
        for i, p in enumerate(undo):
            _plot(right, group_of(records, "undo", alpha=p["alpha"]), f"UNDO a={p['alpha']:g}",
                  score, color=cmap(i / max(1, len(undo) - 1)))
        _plot(right, group_of(records, "teacher", family=undo_family), "unlearn-only", score, color="tab:red", ls="--")
        _plot(right, oracle, "oracle", score, color="black")
        right.set_ylabel(forget_label)
        right.legend(fontsize=7)
        _finish(fig, [right], out / "undo.png", budgets, score)
        plt.close(fig)
        made["undo"] = "undo.png"

    stages_ = ["before", *(str(b) for b in budgets)]
    shown = [r for r in records if r.get("attack") and r.get("metrics")]
    if shown:
        fig, axes = plt.subplots(1, len(stages_), figsize=(4.2 * len(stages_), 3.8), squeeze=False)
        markers = {"unlearn": "o", "teacher": "o", "distilled": "s", "undo": "*", "oracle": "X", "base": "^",
                   "oracle_match_base": "v", "oracle_match_random": "D"}
        for ax, k in zip(axes[0], stages_):
            for r in shown:
                forget = r["metrics"]["forget"] if k == "before" else r["attack"]["at"][k]["forget"]
                filled = r["role"] not in ("unlearn",)
                forget, retain = score.shown(forget), score.shown(r["metrics"]["retain"])
                ax.scatter(forget, retain, marker=markers.get(r["role"], "o"),
                           s=90 if r["role"] == "undo" else 36,
                           facecolors=color(r.get("family") or r["role"]) if filled else "none",
                           edgecolors=color(r.get("family") or r["role"]), alpha=0.85)
                if r["role"] == "undo":
                    ax.annotate(f"{r['alpha']:g}", (forget, retain), fontsize=6,
                                textcoords="offset points", xytext=(3, 3))
            ax.set_title("before the attack" if k == "before" else f"after {k} attack steps")
            ax.set_xlabel(forget_label if k != "before" else score.label("forget"))
            ax.set_ylabel(f"{score.label('retain')} (as shipped)")
            if not score.relative:
                ax.set_xlim(-0.02, 1.0)
            ax.grid(alpha=0.3)
        from matplotlib.lines import Line2D
        handles = [Line2D([], [], marker=m, ls="", color="0.3", label=label) for m, label in
                   (("o", "unlearn-only (hollow: sweep point)"), ("s", "unlearn-and-distill"), ("*", "UNDO (alpha)"),
                    ("X", "data filtering"), ("^", "base"), ("v", "base distilled from oracle"),
                    ("D", "random init distilled from oracle"))]
        handles += [Line2D([], [], marker="o", ls="", color=color(f), label=f)
                    for f in sorted({r["family"] for r in shown if r.get("family")})]
        axes[0][-1].legend(handles=handles, fontsize=6, loc="lower right")
        fig.tight_layout()
        fig.savefig(out / "pareto.png", dpi=110)
        plt.close(fig)
        made["pareto"] = "pareto.png"

    fin, rnd = group_of(records, "oracle_match_base"), group_of(records, "oracle_match_random")
    if fin and rnd:
        fig, ax = plt.subplots(figsize=(5, 3.6))
        _plot(ax, fin, "base distilled toward the oracle", score, color="tab:red")
        _plot(ax, rnd, "random init distilled from the oracle", score, color="tab:blue")
        _plot(ax, oracle, "oracle", score, color="black", ls="--")
        _plot(ax, base, "base", score, color="tab:gray", ls=":")
        ax.set_ylabel(forget_label)
        ax.legend(fontsize=7)
        _finish(fig, [ax], out / "oracle_matching.png", budgets, score)
        plt.close(fig)
        made["oracle_matching"] = "oracle_matching.png"
    return made


# ----------------------------------------------------------------------------------------------------------
# Markdown


def pct(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{100 * value:.{digits}f}%"


def num(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def stat(group, get, fmt=pct) -> str:
    values = []
    for r in group:
        try:
            values.append(get(r))
        except (KeyError, TypeError):
            values.append(None)
    mean, half = mean_ci(values)
    if mean is None:
        return "–"
    return fmt(mean) + (f" ± {fmt(half)}" if half is not None else "")


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(row) + " |" for row in rows), ""]


def grouped(records, roles) -> list[list[dict[str, Any]]]:
    groups: dict[tuple, list] = {}
    for r in records:
        if r["role"] in roles and r.get("artifact"):
            groups.setdefault((r["role"], r["id"]), []).append(r)
    return list(groups.values())


def verdict(claim: dict[str, Any] | None) -> str:
    if claim is None:
        return "**not measured** in this study"
    return {True: "**held**", False: "**did not hold**",
            None: "**undecided** (some of its numbers are not measured yet)"}[claim["held"]]


def markdown(results: dict[str, Any], figs: dict[str, str], fig_dir: str) -> str:
    records, budgets, keys = results["models"], results["budgets"], [str(b) for b in results["budgets"]]
    c = results["claims"]
    S = score_of(results.get("setting", "arithmetic"))
    fmt = S.format  # a score as people read it (accuracy %, or CE in nats)
    shown_fmt = pct if not S.relative else (lambda v: num(v, 3))  # an already shown value (means, intervals)

    def metric(get):  # a record's score, as shown
        return lambda r: S.shown(get(r))

    units = ("accuracies" if not S.relative else "mean next-token cross-entropy on held-out documents, in nats "
             "(retain: lower is better; forget: higher = more forgotten)")
    lines = [f"# undo study report: `{results['run_dir']}`", "",
             f"Config hash `{results['config_hash']}`, code `{results['code_version']}`, seeds "
             f"{results['seeds']}{'' if results['complete'] else ' (study incomplete: some stages have not run)'}. "
             "Every number below is read from the artifacts' meta.json and metrics.jsonl (`undo report` "
             "regenerates this file).", "",
             f"Conventions: {units}; after an attack, forget = the attacker-best value at the budget (best LR of "
             "the grid); robustness is normalised between the method's unlearn-only teacher (0) and the oracle (1); "
             "compute is a share of the oracle's pretraining FLOPs. With several seeds: mean ± 95 % t-interval.", "",
             "## Stage wall times (this machine)", ""]
    lines += table(["stage", "seconds"], [[k, f"{v:.0f}"] for k, v in results["wall_time_s"].items()])

    lines += ["## The paper's claims at this scale", ""]
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
        f" (Kendall tau with alpha: compute {num(r3['kendall_tau']['compute'])}, robustness "
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
    lines.append("")

    for name, caption in (("relearning", "Relearning attack: unlearn-only vs Unlearn-and-Distill vs data filtering "
                                         f"(attacker-best {S.label('forget')}; grey lines mark the budgets)."),
                          ("undo", "UNDO: compute against robustness, one point per alpha (left); relearning curves "
                                   "per alpha (right)."),
                          ("pareto", f"Retain ({S.label('retain')}) as shipped against forget before the attack and "
                                     "after each budget, every attacked model."),
                          ("oracle_matching", "Oracle matching: the base model distilled toward the oracle vs a "
                                              "random init distilled from the oracle.")):
        if name in figs:
            lines += [f"![{caption}]({fig_dir}/{figs[name]})", "", f"*{caption}*", ""]

    lines += ["## Pretraining", ""]
    lines += table(["model", "steps", "tokens", "FLOPs", "retain", "forget", "labelled fraction"], [
        [g[0]["id"], stat(g, lambda r: r["steps"], lambda v: f"{v:,.0f}"),
         stat(g, lambda r: r["accounting"]["pretraining_tokens"] if r["role"] == "base" else None,
              lambda v: f"{v:,.0f}"),
         stat(g, lambda r: r["accounting"]["stage_flops_total"], lambda v: f"{v:.3g}"),
         stat(g, metric(lambda r: r["metrics"]["retain"]), shown_fmt),
         stat(g, metric(lambda r: r["metrics"]["forget"]), shown_fmt),
         stat(g, lambda r: r["accounting"]["labelled_fraction"])]
        for g in ([group[0]] for group in grouped(records, ("base", "oracle")))])  # one artifact, shared by seeds

    lines += [f"## Unlearning (every sweep point; the teacher is the most forgotten ({S.label('forget')}) that keeps "
              "the selection rule's share of the base model's retain performance)", ""]
    teachers = {(r["seed"], r["artifact"]) for r in records if r["role"] == "teacher"}
    lines += table(["run", "retain", "forget", "chosen as teacher", "FLOPs % oracle", "labelled fraction"], [
        [g[0]["id"], stat(g, metric(lambda r: r["metrics"]["retain"]), shown_fmt),
         stat(g, metric(lambda r: r["metrics"]["forget"]), shown_fmt),
         f"{sum((r['seed'], r['artifact']) in teachers for r in g)}/{len(g)} seeds",
         stat(g, lambda r: r["accounting"]["stage_fraction_of_oracle"], lambda v: pct(v, 2)),
         stat(g, lambda r: r["accounting"]["labelled_fraction"], lambda v: pct(v, 3))]
        for g in grouped(records, ("unlearn",)) if g[0].get("metrics")])

    lines += ["## Distillation", ""]
    lines += table(["student", "steps", "stopped by the rule", "FLOPs % oracle (student + teacher)",
                    "lineage % oracle", "retain", "forget", "teacher retain / forget"], [
        [g[0]["id"], stat(g, lambda r: r["steps"], lambda v: f"{v:,.0f}"),
         f"{sum(bool(r['distill']['stopped_early']) for r in g)}/{len(g)}",
         stat(g, lambda r: r["accounting"]["stage_fraction_of_oracle"], lambda v: pct(v, 2)),
         stat(g, lambda r: r["accounting"]["lineage_fraction_of_oracle"], lambda v: pct(v, 1)),
         stat(g, metric(lambda r: r["metrics"]["retain"]), shown_fmt),
         stat(g, metric(lambda r: r["metrics"]["forget"]), shown_fmt),
         stat(g, metric(lambda r: r["distill"]["teacher_metrics"]["retain"]), shown_fmt) + " / "
         + stat(g, metric(lambda r: r["distill"]["teacher_metrics"]["forget"]), shown_fmt)]
        for g in grouped(records, ("distilled", "undo", "oracle_match_base", "oracle_match_random"))
        if g[0].get("metrics")])

    lines += [f"## Relearning attack (attacker-best {S.label('forget')}; robustness in brackets)", ""]
    header = ["model", "before", *(f"@{k} steps" for k in keys), f"area to {max(budgets)}", "LR at the last budget"]
    rows = []
    for g in grouped(records, ("base", "oracle", "unlearn", "teacher", "distilled", "undo", "oracle_match_base",
                               "oracle_match_random")):
        if not g[0].get("attack") or (g[0]["role"] == "unlearn" and not any(r.get("attack") for r in g)):
            continue
        def cell(key, g=g):
            value = stat(g, metric(lambda r: r["attack"]["area"] if key == "area" else r["attack"]["at"][key]["forget"]),
                         shown_fmt)
            rob = stat(g, lambda r: r["robustness"][key], num) if any(r.get("robustness") for r in g) else None
            return value + (f" [{rob}]" if rob and rob != "–" else "")
        rows.append([g[0]["id"], stat(g, metric(lambda r: r["attack"]["before"]["forget"]), shown_fmt), *(cell(k) for k in keys),
                     cell("area"), ", ".join(sorted({f"{r['attack']['at'][keys[-1]]['lr']:g}" for r in g
                                                     if r["attack"]["at"][keys[-1]]["lr"] is not None}))])
    lines += table(header, rows)
    if results["skipped"]:
        lines += ["## Skipped", ""] + [f"- {name}: {why}" for name, why in results["skipped"].items()] + [""]
    return "\n".join(lines)


def write_report(run_dir: Path, out: Path | None = None) -> Path:
    """Write `<run_dir>/report.md` (or `out`), its figures beside it in `<stem>_figures/`, and the numbers in
    `results.json` (or `<stem>.json` beside `out`)."""
    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir / "report.md"
    results = gather(run_dir)
    fig_dir = out.parent / f"{out.stem}_figures"
    figs = figures(results, fig_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(markdown(results, figs, fig_dir.name) + "\n")
    results_name = "results.json" if out.name == "report.md" else f"{out.stem}.json"
    (out.parent / results_name).write_text(json.dumps(results, indent=2, default=str) + "\n")
    return out
