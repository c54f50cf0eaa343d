"""The report's figures (matplotlib, PNG), for one attack kind: relearning curves, UNDO's compute against robustness,
Pareto plots, oracle matching. Curves are seed means."""

from __future__ import annotations

import statistics
from pathlib import Path

from undo.core.errors import UserError
from undo.report.claims import group_of, seed_mean
from undo.report.records import ModelRecord, Results
from undo.settings import score_of
from undo.study.manifest import Role

COLORS = {"base": "tab:gray", "oracle": "black", "grad_diff": "tab:blue", "maxent": "tab:orange",
          "rmu": "tab:green", "npo": "tab:red", "simnpo": "tab:purple", "repnoise": "tab:brown",
          "grad_ascent": "tab:pink", "grad_diff+sam": "tab:cyan"}
MARKERS = {Role.UNLEARN: "o", Role.TEACHER: "o", Role.DISTILLED: "s", Role.UNDO: "*", Role.ORACLE: "X",
           Role.BASE: "^", Role.ORACLE_MATCH_BASE: "v", Role.ORACLE_MATCH_RANDOM: "D"}


def color(name: str | None) -> str:
    return COLORS.get(name or "", "tab:olive")


def mean_curve(group: list[ModelRecord], kind: str) -> tuple[list[int], list[float]] | None:
    curves = [r.attack(kind).best for r in group if r.attack(kind)]
    if not curves:
        return None
    steps = curves[0]["steps"]
    if any(c["steps"] != steps for c in curves):
        raise UserError("attack curves of one model differ in their evaluated steps across seeds; use one attack "
                        "config for every seed")
    return steps, [statistics.fmean(values) for values in zip(*(c["values"] for c in curves))]


def figures(results: Results, claims: dict, kind: str, out: Path, suffix: str = "") -> dict[str, str]:
    """Write the figures of attack kind `kind` into `out` (file names end in `suffix`); returns name -> file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    out.mkdir(parents=True, exist_ok=True)
    records, budgets = results.models, results.budgets
    score = score_of(results.setting)
    forget_label = f"{score.label('forget')} (attacker-best)"
    made: dict[str, str] = {}
    oracle, base = group_of(records, Role.ORACLE), group_of(records, Role.BASE)

    def plot(ax, group, label, **style) -> None:
        curve = mean_curve(group, kind)
        if curve:
            steps, values = curve
            ax.plot(steps, [score.shown(v) for v in values], label=label, **style)

    def save(fig, axes, name: str) -> None:
        for ax in axes:
            for b in budgets:
                ax.axvline(b, color="0.85", lw=0.8, zorder=0)
            if score.chance is not None:  # forget curves: guessing is the floor
                ax.axhline(score.chance, color="tab:red", lw=0.8, ls=":", zorder=0, label="chance (guessing)")
                if ax.get_legend() is not None:
                    ax.legend(fontsize=7)
            ax.set_xlabel("attack step")
            if not score.relative:
                ax.set_ylim(-0.02, 1.0)
            ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / f"{name}{suffix}.png", dpi=110)
        plt.close(fig)
        made[name] = f"{name}{suffix}.png"

    families = sorted({r.family for r in records if r.role == Role.DISTILLED})
    if families:
        fig, axes = plt.subplots(1, len(families), figsize=(4.2 * len(families), 3.6), squeeze=False)
        for ax, family in zip(axes[0], families):
            plot(ax, group_of(records, Role.TEACHER, family=family), "unlearn-only", color=color(family), ls="--")
            plot(ax, group_of(records, Role.DISTILLED, family=family), "unlearn-and-distill", color=color(family))
            plot(ax, oracle, "oracle (data filtering)", color="black")
            plot(ax, base, "base (no unlearning)", color="tab:gray", ls=":")
            ax.set_title(family)
            ax.set_ylabel(forget_label)
            ax.legend(fontsize=7)
        save(fig, axes[0], "relearning")

    undo = claims.get("R3", {}).get("points") or []
    if undo:
        # Compute against robustness needs the oracle (both are measured against it); without one, only the curves.
        anchored = all(p["compute"] is not None and p["robustness"]["area"] is not None for p in undo)
        fig, axes = plt.subplots(1, 2 if anchored else 1, figsize=(9 if anchored else 5, 3.6), squeeze=False)
        right = axes[0][-1]
        undo_family = group_of(records, Role.UNDO)[0].family
        if anchored:
            left = axes[0][0]
            xs = [100 * p["compute"] for p in undo]
            ys = [p["robustness"]["area"] for p in undo]
            left.plot(xs, ys, "o-", color="tab:orange", label="UNDO")
            for p, x, y in zip(undo, xs, ys):
                left.annotate(f"a={p['alpha']:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
            distilled = group_of(records, Role.DISTILLED, family=undo_family)
            if distilled and all(r.robustness.get(kind) for r in distilled):
                left.plot([100 * seed_mean(distilled, lambda r: r.accounting.stage_fraction_of_oracle)],
                          [seed_mean(distilled, lambda r: r.robustness[kind]["area"])], "s", color="tab:blue",
                          label="unlearn-and-distill (random init)")
            left.plot([100], [1], "X", color="black", label="data filtering (oracle)")
            left.set_xlabel("compute, % of the oracle's pretraining FLOPs")
            left.set_ylabel(f"robustness (area to {max(budgets)} steps)")
            left.legend(fontsize=7)
            left.grid(alpha=0.3)
        cmap = plt.get_cmap("viridis")
        for i, p in enumerate(undo):
            plot(right, group_of(records, Role.UNDO, alpha=p["alpha"]), f"UNDO a={p['alpha']:g}",
                 color=cmap(i / max(1, len(undo) - 1)))
        plot(right, group_of(records, Role.TEACHER, family=undo_family), "unlearn-only", color="tab:red", ls="--")
        plot(right, oracle, "oracle", color="black")
        right.set_ylabel(forget_label)
        right.legend(fontsize=7)
        save(fig, [right], "undo")

    stages = ["before", *(str(b) for b in budgets)]
    shown = [r for r in records if r.attack(kind) and r.metrics]
    if shown:
        fig, axes = plt.subplots(1, len(stages), figsize=(4.2 * len(stages), 3.8), squeeze=False)
        for ax, k in zip(axes[0], stages):
            for r in shown:
                forget = r.metrics["forget"] if k == "before" else r.attack(kind).at[k].forget
                forget, retain = score.shown(forget), score.shown(r.metrics["retain"])
                tint = color(r.family or r.role.value)
                ax.scatter(forget, retain, marker=MARKERS.get(r.role, "o"), s=90 if r.role == Role.UNDO else 36,
                           facecolors="none" if r.role == Role.UNLEARN else tint, edgecolors=tint, alpha=0.85)
                if r.role == Role.UNDO:
                    ax.annotate(f"{r.alpha:g}", (forget, retain), fontsize=6, textcoords="offset points",
                                xytext=(3, 3))
            if score.chance is not None:  # chance on both axes: no lower forget means more forgotten
                ax.axvline(score.chance, color="tab:red", lw=0.8, ls=":", zorder=0)
                ax.axhline(score.chance, color="tab:red", lw=0.8, ls=":", zorder=0)
            ax.set_title("before the attack" if k == "before" else f"after {k} attack steps")
            ax.set_xlabel(forget_label if k != "before" else score.label("forget"))
            ax.set_ylabel(f"{score.label('retain')} (as shipped)")
            if not score.relative:
                ax.set_xlim(-0.02, 1.0)
            ax.grid(alpha=0.3)
        handles = [Line2D([], [], marker=m, ls="", color="0.3", label=label) for m, label in
                   (("o", "unlearn-only (hollow: sweep point)"), ("s", "unlearn-and-distill"), ("*", "UNDO (alpha)"),
                    ("X", "data filtering"), ("^", "base"), ("v", "base distilled from oracle"),
                    ("D", "random init distilled from oracle"))]
        handles += [Line2D([], [], marker="o", ls="", color=color(f), label=f)
                    for f in sorted({r.family for r in shown if r.family})]
        axes[0][-1].legend(handles=handles, fontsize=6, loc="lower right")
        fig.tight_layout()
        fig.savefig(out / f"pareto{suffix}.png", dpi=110)
        plt.close(fig)
        made["pareto"] = f"pareto{suffix}.png"

    fin, rnd = group_of(records, Role.ORACLE_MATCH_BASE), group_of(records, Role.ORACLE_MATCH_RANDOM)
    if fin and rnd:
        fig, ax = plt.subplots(figsize=(5, 3.6))
        plot(ax, fin, "base distilled toward the oracle", color="tab:red")
        plot(ax, rnd, "random init distilled from the oracle", color="tab:blue")
        plot(ax, oracle, "oracle", color="black", ls="--")
        plot(ax, base, "base", color="tab:gray", ls=":")
        ax.set_ylabel(forget_label)
        ax.legend(fontsize=7)
        save(fig, [ax], "oracle_matching")
    return made
