"""The report's figures (matplotlib, PNG), for one attack kind: relearning curves, UNDO's compute against robustness,
robustness against compute and labels beside the data filters, Pareto plots, oracle matching.

Every curve is the mean over seeds with a shaded 95 % Student-t interval (`undo.analysis.stats.mean_ci`, the
interval the report's tables give); every scatter point is a seed mean with error bars of the same interval. With
one seed there is no interval, so neither bands nor bars. Each figure's title names the setting, the number of
seeds and the attack kind. Everything plotted is read from `results.models`, not from the claims.

Axes say which way is better. Scores are oriented "higher = more capability" (`Score`), but the figures show the
number people read (`Score.shown`): an accuracy (forget: lower is better, retain: higher is better) or a
cross-entropy (forget: higher is better, retain: lower is better).
"""

from __future__ import annotations

from pathlib import Path

from undo.report.aggregate import by_model as by_id, finished, mean_curve, seed_interval as interval
from undo.schema.report import ModelRecord, Results
from undo.schema.score import Score
from undo.schema.study import ROUNDS_ROLES, Role

COLORS = {"grad_diff": "tab:blue", "maxent": "tab:orange", "rmu": "tab:green", "npo": "tab:red",
          "simnpo": "tab:purple", "repnoise": "tab:brown", "grad_ascent": "tab:pink", "grad_diff+sam": "tab:cyan"}
BASE_STYLE = {"color": "0.35", "ls": "-.", "lw": 2.2, "zorder": 5}  # drawn last and thick: never hidden
ORACLE_STYLE = {"color": "black", "lw": 1.6}
BAND_ALPHA = 0.18
INTERVAL = "95 % Student-t interval over seeds"
# Pareto markers of the roles that are not a method family's (those are coloured by family or alpha).
SPECIAL = {Role.ORACLE: ("X", "black", "data filtering (oracle)"),
           Role.FILTERED: ("P", "dimgray", "imperfect data filter (recall < 1)"),
           Role.BASE: ("^", "0.35", "base (no unlearning)"),
           Role.ORACLE_MATCH_BASE: ("v", "goldenrod", "base distilled toward the oracle"),
           Role.ORACLE_MATCH_RANDOM: ("D", "slateblue", "random init distilled from the oracle")}
# A data filter whose classifier was trained on the unlearning step's labels (a FILTERED model with a classifier).
CLASSIFIER_FILTER = ("d", "saddlebrown", "data filter trained on the unlearning labels")


def color(name: str | None) -> str:
    return COLORS.get(name or "", "tab:olive")


def alpha_colors(alphas: list[float]) -> dict[float, tuple]:
    """One colour per UNDO alpha, dark (small alpha) to light; viridis stops before its pale yellow end."""
    import matplotlib

    cmap = matplotlib.colormaps["viridis"]
    return {a: cmap(0.85 * i / max(1, len(alphas) - 1)) for i, a in enumerate(sorted(alphas))}


def draw_curve(ax, group: list[ModelRecord], kind: str, score: Score, label: str, **style) -> None:
    """The seed-mean curve, and its band when there are several seeds (same colour, translucent)."""
    curve = mean_curve(group, kind, score)
    if curve is None:
        return
    steps, means, halves = curve
    (line,) = ax.plot(steps, means, label=label, **style)
    if halves is not None:
        ax.fill_between(steps, [m - h for m, h in zip(means, halves)], [m + h for m, h in zip(means, halves)],
                        color=line.get_color(), alpha=BAND_ALPHA, lw=0, zorder=line.get_zorder() - 0.5)



def draw_references(ax, records: list[ModelRecord], family: str, kind: str, score: Score, oracle_label: str,
                    base_label: str) -> None:
    """The curves every relearning panel is read against: the family's unlearn-only teacher (dashed) and its
    Unlearn-and-Distill student, the oracle and the base model."""
    draw_curve(ax, finished(records, Role.TEACHER, family=family), kind, score, "unlearn-only",
               color=color(family), ls="--")
    draw_curve(ax, finished(records, Role.DISTILLED, family=family), kind, score, "unlearn-and-distill",
               color=color(family))
    draw_curve(ax, finished(records, Role.ORACLE), kind, score, oracle_label, **ORACLE_STYLE)
    draw_curve(ax, finished(records, Role.BASE), kind, score, base_label, **BASE_STYLE)

def better(score: Score, side: str) -> str:
    """Which way is better for a shown number: less forget capability and more retain capability, where a shown
    cross-entropy is minus the score (so the directions flip)."""
    higher_capability_is_better = side == "retain"
    return "higher" if higher_capability_is_better != score.relative else "lower"


def with_direction(text: str, direction: str) -> str:
    """An axis label that says which way is better; the arrow points along the axis (also on a rotated y label)."""
    return f"{text}  (higher is better →)" if direction == "higher" else f"{text}  (← lower is better)"


def forget_axis(score: Score, after_attack: bool = True, vertical: bool = False) -> str:
    """The forget axis's label; on a vertical axis in two lines (in one it is taller than a one-panel figure)."""
    text = score.label("forget") + (", attacker-best" if after_attack else "")
    label = with_direction(text, better(score, "forget"))
    return label.replace("  (", "\n(") if vertical else label


def title(results: Results, kind: str, what: str, banded: str = "bands") -> str:
    """The figure's title: what it shows, the setting, the seed count, the attack kind and what the bands are."""
    n = len(results.seeds)
    spread = f"lines/points: seed means; {banded}: {INTERVAL}" if n > 1 else "one seed: no interval"
    return f"{what}\n{results.setting}, {n} seed{'s' if n != 1 else ''}, attack: {kind}\n({spread})"


def finish_curves(ax, results: Results, score: Score) -> None:
    """Shared decoration of attack-curve axes: budgets, chance, limits that keep a curve at 1.0 visible."""
    for b in results.budgets:
        ax.axvline(b, color="0.85", lw=0.8, zorder=0)
    if score.chance is not None:  # forget curves: guessing is the floor
        ax.axhline(score.chance, color="tab:red", lw=0.8, ls=":", zorder=0)
    if not score.relative:
        ax.set_ylim(-0.03, 1.05)  # room above 1.0, where the base model's curve sits
    ax.set_xlabel("attack step (grey lines: budgets)")
    ax.grid(alpha=0.3)


def curve_legend_extras(results: Results, score: Score) -> list:
    """Legend entries every curve figure shares: the base model, chance, and what a band is."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    extras = [Line2D([], [], **BASE_STYLE, label="base (no unlearning)")]
    if score.chance is not None:
        extras.append(Line2D([], [], color="tab:red", lw=0.8, ls=":", label="chance (guessing)"))
    if len(results.seeds) > 1:
        extras.append(Patch(color="0.5", alpha=BAND_ALPHA + 0.1, label=f"shaded: {INTERVAL}"))
    return extras


def relearning_figure(results: Results, kind: str, score: Score):
    """One panel per method family that was distilled: unlearn-only vs unlearn-and-distill vs oracle and base."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    records = results.models
    families = sorted({r.family for r in records if r.role == Role.DISTILLED})
    if not families:
        return None
    fig, axes = plt.subplots(1, len(families), figsize=(4.2 * len(families), 4.0), squeeze=False,
                             layout="constrained")
    for ax, family in zip(axes[0], families):
        draw_references(ax, records, family, kind, score, "oracle (data filtering)", "base (no unlearning)")
        ax.set_title(family, color=color(family))
        finish_curves(ax, results, score)
    axes[0][0].set_ylabel(forget_axis(score, vertical=True))
    # One legend for all panels: line styles in grey (each panel's colour is its family, named in its title).
    handles = [Line2D([], [], color="0.2", ls="--", label="unlearn-only (the family's chosen teacher)"),
               Line2D([], [], color="0.2", label="unlearn-and-distill"),
               Line2D([], [], **ORACLE_STYLE, label="oracle (data filtering)"),
               *curve_legend_extras(results, score)]
    # Two legend columns per panel: one row of every entry is wider than a one-panel figure and was cut at its edges.
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 2 * len(families)), fontsize=8)
    fig.suptitle(title(results, kind, "Relearning attack: attacker-best forget against attack steps"), fontsize=10)
    return fig


def undo_points(results: Results, kind: str) -> list[dict]:
    """One point per UNDO alpha: compute (% of the oracle's pretraining FLOPs) and robustness (area), each a seed
    mean with its interval's half-width, sorted by alpha."""
    points = []
    for group in by_id(finished(results.models, Role.UNDO)).values():
        compute = interval(group, lambda r: r.stage_compute, scale=100)
        robust = interval(group, lambda r: r.robustness_at(kind, "area"))
        points.append({"alpha": group[0].alpha, "group": group, "compute": compute, "robustness": robust})
    return sorted(points, key=lambda p: p["alpha"])


def undo_figure(results: Results, kind: str, score: Score):
    """UNDO: compute against robustness per alpha (left, when an oracle anchors both), relearning curves (right)."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    records = results.models
    points = undo_points(results, kind)
    if not points:
        return None
    family = points[0]["group"][0].family
    tint = alpha_colors([p["alpha"] for p in points])
    # Compute and robustness are both measured against the oracle; without one, only the curves.
    anchored = all(p["compute"][0] is not None and p["robustness"][0] is not None for p in points)
    fig, axes = plt.subplots(1, 2 if anchored else 1, figsize=(10.5 if anchored else 6, 5.2), squeeze=False,
                             layout="constrained")
    if anchored:
        left = axes[0][0]
        # A faint line in alpha order shows the trend; the points carry the numbers.
        left.plot([p["compute"][0] for p in points], [p["robustness"][0] for p in points], color="0.75", lw=1,
                  zorder=1)
        for p in points:
            (x, dx), (y, dy) = p["compute"], p["robustness"]
            left.errorbar(x, y, xerr=dx, yerr=dy, fmt="*", ms=13, color=tint[p["alpha"]], mec="black", mew=0.5,
                          elinewidth=1, capsize=2, zorder=3)
        distilled = finished(records, Role.DISTILLED, family=family)
        (x, dx) = interval(distilled, lambda r: r.stage_compute, scale=100)
        (y, dy) = interval(distilled, lambda r: r.robustness_at(kind, "area"))
        if x is not None and y is not None:
            left.errorbar(x, y, xerr=dx, yerr=dy, fmt="s", ms=7, color=color(family), elinewidth=1, capsize=2)
        left.plot([100], [1], "X", ms=9, color="black")  # the oracle: robustness 1 and 100 % by definition
        left.set_xlabel(with_direction("compute, % of the oracle's pretraining FLOPs", "lower"))
        left.set_ylabel(with_direction(f"robustness, area to {max(results.budgets)} steps\n"
                                       "(0 = unlearn-only, 1 = oracle)", "higher"))
        left.set_title("compute against robustness, one point per alpha", fontsize=9)
        left.grid(alpha=0.3)
    right = axes[0][-1]
    for p in points:
        draw_curve(right, p["group"], kind, score, f"UNDO α={p['alpha']:g}", color=tint[p["alpha"]])
    draw_references(right, records, family, kind, score, "oracle", "base")
    right.set_ylabel(forget_axis(score, vertical=True))
    right.set_title("relearning curves per alpha", fontsize=9)
    finish_curves(right, results, score)
    # One legend for both panels: an alpha has the same colour in each (a star on the left, a line on the right).
    handles = [Line2D([], [], color=tint[p["alpha"]], marker="*", ms=10, mec="black", mew=0.5,
                      label=f"UNDO ({family}) α={p['alpha']:g}") for p in points]
    handles += [Line2D([], [], color=color(family), ls="--", label=f"unlearn-only ({family})"),
                Line2D([], [], color=color(family), marker="s", label=f"unlearn-and-distill ({family}, random init)"),
                Line2D([], [], **ORACLE_STYLE, marker="X", label="data filtering (oracle)"),
                *curve_legend_extras(results, score)]
    fig.legend(handles=handles, loc="outside lower center", ncol=4, fontsize=8)
    fig.suptitle(title(results, kind, "UNDO: compute, robustness and relearning per alpha",
                       banded="bands and error bars"), fontsize=10)
    return fig


def budgets_figure(results: Results, kind: str):
    """Robustness (area) against compute (left) and against the labelled fraction (right), both on log axes: UNDO
    per alpha, Unlearn-and-Distill and unlearn-only of UNDO's family, the oracle and every data filter. Drawn when
    UNDO's robustness is anchored (an oracle and the teacher attacked)."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    points = [p for p in undo_points(results, kind) if p["robustness"][0] is not None]
    if not points:
        return None
    records, family = results.models, points[0]["group"][0].family
    tint = alpha_colors([p["alpha"] for p in points])
    # (group, marker style, annotation): everything measured against UNDO's teacher and the oracle.
    placed = [(p["group"], {"fmt": "*", "ms": 13, "color": tint[p["alpha"]], "mec": "black", "mew": 0.5},
               f"α={p['alpha']:g}") for p in points]
    placed += [(finished(records, Role.DISTILLED, family=family), {"fmt": "s", "ms": 7, "color": color(family)}, ""),
               (finished(records, Role.TEACHER, family=family), {"fmt": "o", "ms": 7, "color": color(family)}, "")]
    for group in by_id(finished(records, Role.FILTERED)).values():
        marker, c, _ = CLASSIFIER_FILTER if group[0].classifier else SPECIAL[Role.FILTERED]
        note = "classifier" if group[0].classifier else f"r={group[0].filter_recall:g}"
        placed.append((group, {"fmt": marker, "ms": 9, "color": c}, note))

    fig, axes = plt.subplots(1, 2, figsize=(10.5, 5.2), squeeze=False, sharey=True, layout="constrained")
    for ax, get, xlabel in (
            (axes[0][0], lambda r: r.compute, "compute, % of the oracle's pretraining FLOPs (log)"),
            (axes[0][1], lambda r: r.labelled_fraction,
             "labelled, % of the pretraining tokens (log)")):
        for group, style, note in (entry for entry in placed if entry[0]):  # a study may lack some (no U&D)
            teacher = group[0].role == Role.TEACHER  # robustness 0 by definition: its own anchor
            (x, dx) = interval(group, get, scale=100)
            (y, dy) = (0.0, None) if teacher else interval(group, lambda r: r.robustness_at(kind, "area"))
            if x is None or y is None or x <= 0:  # not measured (or nothing to place on a log axis)
                continue
            ax.errorbar(x, y, xerr=dx, yerr=dy, elinewidth=1, capsize=2, zorder=4, **style)
            if note:
                ax.annotate(note, (x, y), textcoords="offset points", xytext=(6, 4), fontsize=7)
        ax.plot([100], [1], "X", ms=9, color="black", zorder=5)  # the oracle: 100 % of both and robustness 1
        ax.axhline(0, color="0.6", lw=0.8, ls="--", zorder=0)
        ax.axhline(1, color="0.6", lw=0.8, ls=":", zorder=0)
        ax.set_xscale("log")
        ax.set_xlabel(with_direction(xlabel, "lower"))
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel(with_direction(f"robustness, area to {max(results.budgets)} steps\n"
                                         f"(0 = unlearn-only {family}, 1 = oracle)", "higher"))
    axes[0][0].set_title("robustness against compute", fontsize=9)
    axes[0][1].set_title("robustness against labels", fontsize=9)
    handles = [Line2D([], [], color=tint[p["alpha"]], marker="*", ls="", ms=10, mec="black", mew=0.5,
                      label=f"UNDO ({family}) α={p['alpha']:g}") for p in points]
    handles += [Line2D([], [], color=color(family), marker="s", ls="", label=f"unlearn-and-distill ({family})"),
                Line2D([], [], color=color(family), marker="o", ls="", label=f"unlearn-only ({family})"),
                Line2D([], [], marker="X", ls="", ms=8, color="black", label="data filtering (oracle)")]
    filtered = finished(records, Role.FILTERED)
    for marker, c, label in ([SPECIAL[Role.FILTERED]] if any(not r.classifier for r in filtered) else []) + \
            ([CLASSIFIER_FILTER] if any(r.classifier for r in filtered) else []):
        handles.append(Line2D([], [], marker=marker, ls="", ms=8, color=c, label=label))
    fig.legend(handles=handles, loc="outside lower center", ncol=4, fontsize=8)
    fig.suptitle(title(results, kind, "Robustness against compute and labels: UNDO beside data filtering",
                       banded="error bars"), fontsize=10)
    return fig


def pareto_style(r: ModelRecord, tint: dict[float, tuple]) -> dict:
    """Marker, colour and fill of a model's Pareto point: shape by stage, colour by family (UNDO: by alpha)."""
    if r.role == Role.FILTERED and r.classifier:
        marker, c, _ = CLASSIFIER_FILTER
        return {"fmt": marker, "color": c, "ms": 9, "mec": c, "zorder": 4}
    if r.role in SPECIAL:
        marker, c, _ = SPECIAL[r.role]
        big = r.role == Role.BASE  # the reference everything is compared with: larger, black-edged, on top
        return {"fmt": marker, "color": c, "ms": 10 if big else 8, "mec": "black" if big else c,
                "zorder": 6 if big else 4}
    if r.role == Role.UNDO:
        return {"fmt": "*", "color": tint[r.alpha], "ms": 13, "mec": "black", "mew": 0.5, "zorder": 5}
    c = color(r.family)
    if r.role == Role.DISTILLED:
        return {"fmt": "s", "color": c, "ms": 7, "zorder": 4}
    if r.role == Role.TEACHER:
        return {"fmt": "o", "color": c, "ms": 7, "zorder": 3}
    return {"fmt": "o", "color": c, "ms": 6, "mfc": "none", "zorder": 2}  # an unlearning sweep point


def pareto_figure(results: Results, kind: str, score: Score):
    """Retain (as shipped) against forget, before the attack and after each budget: one point per model."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    # The rounds' models have their own section (`study.rounds`); here, the study's one combined unlearning.
    shown = [r for r in results.models if r.attack(kind) and r.metrics and r.role not in ROUNDS_ROLES]
    if not shown:
        return None
    groups = list(by_id(shown).values())
    tint = alpha_colors(sorted({r.alpha for r in shown if r.role == Role.UNDO}))
    stages = ["before", *(str(b) for b in results.budgets)]
    fig, axes = plt.subplots(1, len(stages), figsize=(4.6 * len(stages), 5.2), squeeze=False, sharey=True,
                             layout="constrained")

    def forget(r: ModelRecord, stage: str) -> float:  # every record shown has its metrics and this attack
        return score.shown(r.metrics["forget"] if stage == "before" else r.attack(kind).at[stage].forget)

    for ax, stage in zip(axes[0], stages):
        for group in groups:
            (x, dx) = interval(group, lambda r: forget(r, stage))
            (y, dy) = interval(group, lambda r: score.shown(r.metrics["retain"]))
            if x is None or y is None:  # a model without this number is not placed anywhere
                continue
            style = pareto_style(group[0], tint)
            bars = ax.errorbar(x, y, xerr=dx, yerr=dy, elinewidth=0.9, capsize=0, ecolor=style["color"], **style)
            for lines in bars.lines[2]:  # light bars, so that the points stay readable where they cluster
                lines.set_alpha(0.5)
        base = finished(shown, Role.BASE)
        if base:  # the base model's forget level: what "nothing forgotten" looks like at this stage
            ax.axvline(interval(base, lambda r: forget(r, stage))[0], **{**BASE_STYLE, "lw": 1, "zorder": 1})
        if score.chance is not None:  # chance on both axes: no lower forget means more forgotten
            ax.axvline(score.chance, color="tab:red", lw=0.8, ls=":", zorder=0)
            ax.axhline(score.chance, color="tab:red", lw=0.8, ls=":", zorder=0)
        ax.set_title("before the attack" if stage == "before" else f"after {stage} attack steps", fontsize=9)
        ax.set_xlabel(forget_axis(score, after_attack=stage != "before"))
        if not score.relative:
            ax.set_xlim(-0.03, 1.05)  # room for points at 0 and 1
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(with_direction(f"{score.label('retain')}, as shipped", better(score, "retain")))

    # The key, by shape (stage), then by colour (family, UNDO's alpha), then the models drawn in their own style.
    roles = {r.role for r in shown}
    handles = [Line2D([], [], marker=m, ls="", color="0.3", mfc=fill, label=label)
               for role, m, fill, label in ((Role.UNLEARN, "o", "none", "unlearn-only, sweep point"),
                                            (Role.TEACHER, "o", "0.3", "unlearn-only, chosen teacher"),
                                            (Role.DISTILLED, "s", "0.3", "unlearn-and-distill"))
               if role in roles]
    handles += [Patch(color=color(f), label=f) for f in sorted({r.family for r in shown if r.family})]
    handles += [Line2D([], [], marker="*", ls="", ms=11, color=c, mec="black", mew=0.5, label=f"UNDO α={a:g}")
                for a, c in tint.items()]
    handles += [Line2D([], [], marker=SPECIAL[role][0], ls="", ms=8, color=SPECIAL[role][1], label=SPECIAL[role][2])
                for role in SPECIAL if role in roles
                and (role != Role.FILTERED or any(r.role == role and not r.classifier for r in shown))]
    if any(r.role == Role.FILTERED and r.classifier for r in shown):
        handles.append(Line2D([], [], marker=CLASSIFIER_FILTER[0], ls="", ms=8, color=CLASSIFIER_FILTER[1],
                              label=CLASSIFIER_FILTER[2]))
    if Role.BASE in roles:
        handles.append(Line2D([], [], **{**BASE_STYLE, "lw": 1}, label="base model's forget level"))
    if score.chance is not None:
        handles.append(Line2D([], [], color="tab:red", lw=0.8, ls=":", label="chance (guessing)"))
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 7), fontsize=8)
    fig.suptitle(title(results, kind, "Retain as shipped against forget, before and after the attack",
                       banded="error bars"), fontsize=10)
    return fig


def oracle_matching_figure(results: Results, kind: str, score: Score):
    """The base model distilled toward the oracle vs a random init distilled from the oracle (claim R1)."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    records = results.models
    fin, rnd = finished(records, Role.ORACLE_MATCH_BASE), finished(records, Role.ORACLE_MATCH_RANDOM)
    if not (fin and rnd):
        return None
    fig, ax = plt.subplots(figsize=(7, 5), layout="constrained")
    draw_curve(ax, fin, kind, score, "base distilled toward the oracle", color=SPECIAL[Role.ORACLE_MATCH_BASE][1])
    draw_curve(ax, rnd, kind, score, "random init distilled from the oracle",
               color=SPECIAL[Role.ORACLE_MATCH_RANDOM][1])
    draw_curve(ax, finished(records, Role.ORACLE), kind, score, "oracle (data filtering)", **ORACLE_STYLE)
    draw_curve(ax, finished(records, Role.BASE), kind, score, "base (no unlearning)", **BASE_STYLE)
    ax.set_ylabel(forget_axis(score, vertical=True))
    finish_curves(ax, results, score)
    handles = [Line2D([], [], color=SPECIAL[Role.ORACLE_MATCH_BASE][1], label="base distilled toward the oracle"),
               Line2D([], [], color=SPECIAL[Role.ORACLE_MATCH_RANDOM][1],
                      label="random init distilled from the oracle"),
               Line2D([], [], **ORACLE_STYLE, label="oracle (data filtering)"),
               *curve_legend_extras(results, score)]
    fig.legend(handles=handles, loc="outside lower center", ncol=3, fontsize=8)
    fig.suptitle(title(results, kind, "Oracle matching: relearning of two students of the oracle"), fontsize=10)
    return fig


def build_figures(results: Results, kind: str) -> dict:
    """The figures of attack kind `kind` as matplotlib Figures (name -> Figure), only those the study has data
    for; `figures` saves them. The caller closes them (matplotlib.pyplot.close)."""
    import matplotlib

    matplotlib.use("Agg")
    score = results.scoring
    made = {"relearning": relearning_figure(results, kind, score), "undo": undo_figure(results, kind, score),
            "budgets": budgets_figure(results, kind),
            "pareto": pareto_figure(results, kind, score),
            "oracle_matching": oracle_matching_figure(results, kind, score)}
    return {name: fig for name, fig in made.items() if fig is not None}


def figures(results: Results, claims: dict, kind: str, out: Path, suffix: str = "") -> dict[str, str]:
    """Write the figures of attack kind `kind` into `out` (file names end in `suffix`); returns name -> file.
    `claims` is not read: every figure is computed from `results.models`."""
    import matplotlib.pyplot as plt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    made = {}
    for name, fig in build_figures(results, kind).items():
        fig.savefig(out / f"{name}{suffix}.png", dpi=110, bbox_inches="tight")  # never cut a legend or a label
        plt.close(fig)
        made[name] = f"{name}{suffix}.png"
    return made
