"""The report as Markdown: conventions, wall times, the claims and figures of each attack kind, and the tables of
every stage (mean and 95 % t-interval over seeds)."""

from __future__ import annotations

from undo.report.aggregate import Get, grouped, seed_interval
from undo.schema.claims import Claim, Decided, Interval, PairedKey
from undo.schema.report import ModelRecord, Results
from undo.schema.study import Role

DISTILLED_ROLES = (Role.DISTILLED, Role.UNDO, Role.ORACLE_MATCH_BASE, Role.ORACLE_MATCH_RANDOM, Role.ROUNDS_DISTILLED,
                   Role.ROUNDS_UNDO)


def pct(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{100 * value:.{digits}f}%"


def num(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def stat(group: list[ModelRecord], get: Get, fmt=pct) -> str:
    """The seed mean of what `get` reads, ± the half-width of its 95 % t-interval (one seed: the value alone)."""
    mean, half = seed_interval(group, get)
    if mean is None:
        return "–"
    return fmt(mean) + (f" ± {fmt(half)}" if half is not None else "")


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(row) + " |" for row in rows), ""]


def verdict(claim: Decided | None) -> str:
    """The verdict in bold, with its reason where it has one."""
    if claim is None:
        return "**not measured** in this study"
    return f"**{claim.verdict}**" + (f" ({claim.why})" if claim.why else "")


def ci(stats: Interval, fmt) -> str:
    """An interval over seeds as "mean ± half-width" (just the mean with one seed)."""
    if stats.mean is None:
        return "–"
    return fmt(stats.mean) + (f" ± {fmt(stats.half_width)}" if stats.half_width is not None else "")


def difference(stats: Interval, score: str) -> str:
    """A difference of scores, signed: accuracy points, or nats of -CE (`score` is "neg_ce")."""
    if stats.mean is None:
        return "–"
    scale, digits, unit = (1, 3, " nats of -CE") if score == "neg_ce" else (100, 1, " pts")
    half = stats.half_width
    return (f"{scale * stats.mean:+.{digits}f}" + (f" ± {scale * half:.{digits}f}" if half is not None else "")
            + unit)


def seeds_of(stats: list[Interval]) -> str:
    """How many seeds the intervals span (the most of any)."""
    n = max((len(s.seeds) for s in stats), default=0)
    return "no seed measured" if n == 0 else f"{n} seed{'s' if n != 1 else ''}"


def key_name(key: str) -> str:
    return key if key == "area" else "@" + key


def headline(name: str, title: str, claim: Claim | None) -> str:
    """A claim's line up to its numbers: what it says, its decision rule, then the verdict."""
    if claim is None:
        return f"- **{name}** ({title}): {verdict(None)}"
    return f"- **{name}** ({title}). Rule: {claim.rule}. Verdict: {verdict(claim)}"


def compared_numbers(numbers: dict[str, PairedKey], first: str, second: str, fmt, score: str) -> str:
    """Per key: both seed means, then their paired difference (mean ± half-width) and its verdict."""
    return "; ".join(f"{key_name(k)}: {fmt(getattr(n, first))} vs {fmt(getattr(n, second))}, "
                     f"{difference(n.difference, score)} ({n.verdict})" for k, n in numbers.items())


def claim_lines(c: dict[str, Claim], fmt) -> list[str]:
    """One line per claim: the rule, the verdict in bold, then the numbers (mean ± 95 % half-width over seeds)."""
    lines = []
    r1 = c.get("R1")
    line = headline("R1", "oracle matching: the finetuned base relearns faster than a random-init student", r1)
    if r1:
        diffs = [n.difference for n in r1.numbers.values()]
        line += (f". Attacker-best forget, finetuned base vs random init (seed means), then their per-seed "
                 f"difference (mean ± half-width, {seeds_of(diffs)}): "
                 + compared_numbers(r1.numbers, "finetuned_base", "random_init", fmt, r1.score))
    lines.append(line)

    r2 = c.get("R2")
    line = headline("R2", "Unlearn-and-Distill relearns more slowly than unlearn-only", r2)
    if r2:
        diffs = [n.difference for v in r2.by_family.values() for n in v.numbers.values()]
        line += (f". Attacker-best forget, unlearn-only vs Unlearn-and-Distill (seed means), then their per-seed "
                 f"difference (mean ± half-width, {seeds_of(diffs)}):")
        line += "".join(f"\n  - {fam}: {verdict(v)}; "
                        + compared_numbers(v.numbers, "unlearn_only", "unlearn_and_distill", fmt, r2.score)
                        for fam, v in sorted(r2.by_family.items()))
    lines.append(line)

    r3 = c.get("R3")
    line = headline("R3", "UNDO's compute and robustness rise with alpha", r3)
    if r3:
        tau = r3.kendall_tau
        line += (f". Kendall tau-b with alpha (mean ± half-width, {seeds_of(list(tau.values()))}): compute "
                 f"{ci(tau['compute'], num)} ({tau['compute'].verdict}), robustness "
                 f"{ci(tau['robustness_area'], num)} ({tau['robustness_area'].verdict}). Seed means per alpha: "
                 + "; ".join(f"a={p.alpha:g}: {pct(p.compute, 2)} of oracle FLOPs, {num(p.steps, 0)} "
                             f"steps, robustness {num(p.robustness['area'])}" for p in r3.points))
    lines.append(line)

    r4 = c.get("R4")
    line = headline("R4", "UNDO on or beyond the baselines' Pareto frontier after the attack", r4)
    if r4:
        budgets = {k: v for k, v in r4.by_budget.items() if k != "before"}
        line += (f". UNDO points undominated by the {len(r4.baselines)} attacked unlearn-only run(s) of their "
                 f"seed ({', '.join(r4.baselines)}): "
                 + "; ".join(f"after {k} steps: {pct(v.share, 0)} ({v.undominated}/{v.points})"
                             for k, v in budgets.items()))
        if "before" in r4.by_budget:
            before = r4.by_budget["before"]
            line += f" (before the attack: {pct(before.share, 0)}, {before.undominated}/{before.points})"
    lines.append(line)

    r5 = c.get("R5")
    line = headline("R5", "UNDO's strongest alpha vs data filtering", r5)
    if r5:
        line += (f". Robustness (area) per alpha (mean ± half-width, "
                 f"{seeds_of([a.robustness for a in r5.by_alpha])}) at its compute (share of the oracle's "
                 "pretraining FLOPs): "
                 + "; ".join(f"a={a.alpha:g}: {ci(a.robustness, num)} at {ci(a.compute, pct)}"
                             for a in r5.by_alpha))
        if r5.cheapest:
            line += (f". Reaches 1 at alpha {r5.cheapest.alpha:g}, for {pct(r5.cheapest.compute, 1)} "
                     "of data filtering's pretraining FLOPs")
    lines.append(line)

    r6 = c.get("R6")
    line = headline("R6", "labelled fraction", r6)
    if r6:
        line += (". UNDO's lineage read labelled tokens equal to " + ", ".join(
            f"{pct(v, 3)} (a={a})" for a, v in r6.labelled_fraction.items())
            + " of the pretraining tokens; data filtering must label 100%")
        if r6.largest is not None:
            line += (f". Largest {pct(r6.largest, 3)}: {'below' if r6.below_ours else 'not below'} our 1 %, "
                     f"{'below' if r6.below_paper else 'not below'} the paper's 0.01 %")
    lines.append(line)

    r7 = c.get("R7")
    if r7:  # only a study with pretrain.classifier_filter speaks to it
        f = r7.filter
        line = headline("R7", "UNDO vs a data filter trained on the same labels", r7)
        diffs = [n.difference for a in r7.by_alpha.values() for n in a.numbers.values()]
        line += (f". The filter: {pct(f.labelled_fraction, 3)} of the pretraining tokens labelled, held-out "
                 f"precision {num(f.precision, 3)} and recall {num(f.recall, 3)}, removed "
                 f"{pct(f.forget_removed, 1)} of the forget documents, {pct(f.compute, 1)} of the oracle's "
                 f"FLOPs. Attacker-best forget, filter vs UNDO (seed means), then their per-seed difference (mean ± "
                 f"half-width, {seeds_of(diffs)}):")
        for alpha, a in r7.by_alpha.items():
            beats = ", ".join(key_name(k) for k in a.beats_at) or "no budget"
            loses = ", ".join(key_name(k) for k in a.loses_at) or "no budget"
            line += (f"\n  - a={alpha} ({pct(a.compute, 1)} of the oracle's FLOPs, {pct(a.labelled_fraction, 3)} "
                     f"labelled): {verdict(a)}; UNDO relearns less at {beats}, more at {loses}; "
                     + compared_numbers(a.numbers, "budget_matched_filter", "undo", fmt, r7.score))
        lines.append(line)
    return [line if line.endswith(".") else line + "." for line in lines] + [""]


def recovery_lines(records: list[ModelRecord], kind: str, of_kind: str) -> list[str]:
    """The attacker's cost: seed means (± 95 % interval) of the steps, tokens and FLOPs the attacker-best needs to
    bring forget back halfway from the oracle to the base, and of that cost over the unlearn-only teacher's. "≥":
    some seed was not brought back within the attack's budget, so the mean is a lower bound."""
    rows = []
    for g in grouped(records, tuple(Role)):
        costs = [r for r in g if r.recovery.get(kind)]
        if not costs:
            continue
        bound = "≥ " if any(not r.recovery[kind].reached for r in costs) else ""
        ratio_bound = "≥ " if any(r.recovery[kind].times_is_lower_bound for r in costs) else ""
        ratio = stat(costs, lambda r: r.recovery[kind].times_unlearn_only, lambda v: f"{v:.2g}x")
        rows.append([g[0].id, bound + stat(costs, lambda r: r.recovery[kind].steps, lambda v: f"{v:.0f}"),
                     bound + stat(costs, lambda r: r.recovery[kind].tokens, lambda v: f"{v:,.0f}"),
                     bound + stat(costs, lambda r: r.recovery[kind].flops, lambda v: f"{v:.3g}"),
                     ratio if ratio == "–" else ratio_bound + ratio])
    if not rows:
        return []
    return [f"Attacker's cost{of_kind}: what the attacker-best needs to bring forget back halfway from the oracle to "
            "the base model (first evaluated step; ≥: not within the attack's budget for some seed, a lower bound), "
            "and that cost as a multiple of the unlearn-only teacher's:", "",
            *table(["model", "steps", "tokens", "FLOPs", "x unlearn-only"], rows)]


def other_metrics(records: list[ModelRecord]) -> list[str]:
    """Every metric a setting measures beside the two scores (e.g. the knowledge setting's cross-entropies and
    length-normalised accuracies, the mcq setting's per-task accuracies), per model as shipped; none: no section."""
    names = sorted({name for r in records if r.metrics for name in r.metrics} - {"retain", "forget"})
    if not names:
        return []

    def fmt(name: str):
        return (lambda v: num(v, 3)) if name.endswith("_ce") else pct

    # One row per model, a shared artifact (base, oracle) counted once.
    groups = (list({r.artifact: r for r in group}.values()) for group in grouped(records, tuple(Role)))
    rows = [[g[0].id, *(stat(g, lambda r, n=name: (r.metrics or {}).get(n), fmt(name)) for name in names)]
            for g in groups if g[0].metrics]
    lines = ["## Every metric, as shipped (test split; cross-entropies in nats)", "", *table(["model", *names], rows)]
    # The same metrics after the attack: the attacker's chosen LR at the last budget, as the attack logged them.
    for kind in sorted({kind for r in records for kind in r.attacks}):
        def after(r: ModelRecord, name: str, kind=kind) -> float | None:
            attack = r.attack(kind)
            return None if attack is None else attack.at[max(attack.at, key=int)].metrics.get(name)

        attacked = [[r for r in group if r.attack(kind)] for group in grouped(records, tuple(Role))]
        rows = [[g[0].id, *(stat(g, lambda r, n=name: after(r, n), fmt(name)) for name in names)]
                for g in attacked if g and any(r.attack(kind).at[max(r.attack(kind).at, key=int)].metrics
                                               for r in g)]
        if rows:
            budget = max(int(b) for r in records if r.attack(kind) for b in r.attack(kind).at)
            lines += [f"After the {kind} attack ({budget} steps, the LR the attacker chose on validation; test "
                      "split; the attack evaluates fewer items than the table above):", "",
                      *table(["model", *names], rows)]
    return lines


def rounds_lines(results: Results, shown_fmt, metric) -> list[str]:
    """`study.rounds` against the one combined unlearning (`undo.report.rounds`): every model of both as shipped,
    then per attack kind the paired comparison after the attack, with compute and labels along the lineage."""
    comparison = results.rounds_comparison
    if comparison is None:
        return []
    records, S, family = results.models, results.scoring, comparison.family
    steps = "; ".join(f"round {i}: {', '.join(parts) if parts else 'a file of documents'}"
                      for i, parts in enumerate(comparison.rounds, 1))
    lines = ["## Rounds, then distil, against one combined unlearning (`study.rounds`)", "",
             f"The responsive loop: {family}'s sweep ran once per round ({steps}), each round from the previous "
             "round's teacher, the first from where the study's unlearning starts (the base model, unless "
             "`unlearn.start` names another); each round's teacher was chosen by the same rule, "
             "against the *base* model's retain. The combined unlearning forgot the whole forget side in one sweep "
             "of the same length. Both teachers were then distilled the same ways and attacked by the same attacker "
             "(same data, same LR grid). FLOPs and labelled tokens count the whole lineage (a round adds to the "
             "teacher it starts from).", ""]
    parts = [p for round_parts in comparison.rounds for p in (round_parts or [])]
    measured = [p for p in dict.fromkeys(parts)
                if any(name.startswith(f"{p}/") for r in records if r.metrics for name in r.metrics)]

    def part_score(r: ModelRecord, part: str) -> float | None:  # the mean of the part's cells (e.g. mul/*)
        cells = [v for name, v in (r.metrics or {}).items() if name.startswith(f"{part}/")]
        return sum(cells) / len(cells) if cells else None

    order = [(Role.TEACHER, None), *((Role.ROUND_TEACHER, n) for n in range(1, len(comparison.rounds) + 1)),
             (Role.DISTILLED, None), (Role.ROUNDS_DISTILLED, None)]
    alphas = sorted({r.alpha for r in records if r.role == Role.ROUNDS_UNDO})
    groups = []
    for role, number in order:
        groups.append([r for r in records if r.role == role and r.family == family and r.artifact
                       and (number is None or r.round == number)])
    for alpha in alphas:
        groups += [[r for r in records if r.role == role and r.family == family and r.alpha == alpha and r.artifact]
                   for role in (Role.UNDO, Role.ROUNDS_UNDO)]
    lines += table(["model", "retain", "forget", *(f"forget: {p}" for p in measured), "lineage FLOPs % oracle",
                    "labelled tokens (lineage)"], [
        [g[0].id, stat(g, metric(lambda r: r.metric("retain")), shown_fmt),
         stat(g, metric(lambda r: r.metric("forget")), shown_fmt),
         *(stat(g, metric(lambda r, p=p: part_score(r, p)), shown_fmt) for p in measured),
         stat(g, lambda r: r.lineage_compute, lambda v: pct(v, 1)),
         stat(g, lambda r: r.accounting.labelled_tokens if r.accounting else None, lambda v: f"{v:,.0f}")]
        for g in groups if g and g[0].metrics])
    kinds = results.attack_kinds
    for kind in kinds:
        pairs = comparison.pairs.get(kind, [])
        if not pairs:
            continue
        lines += [f"After the {kind} attack: attacker-best {S.label('forget')}, rounds vs combined (seed means), then "
                  "their per-seed difference, rounds minus combined (mean ± half-width; held: the rounds' model "
                  "relearned more, did not hold: less, inconclusive: the interval contains 0 or one seed); then the "
                  "lineage's FLOPs and labelled tokens, rounds over combined:"]
        for pair in pairs:
            flops, labels = pair.lineage_flops_ratio, pair.labelled_tokens_ratio
            lines.append(f"- {pair.model}: " + compared_numbers(pair.forget_after, "rounds", "combined", S.format,
                                                                S.kind)
                         + f"; FLOPs {ci(flops, lambda v: f'{v:.2f}x')}, labelled tokens "
                         f"{ci(labels, lambda v: f'{v:.2f}x')}")
        lines.append("")
    return lines


def host_lines(results: Results) -> list[str]:
    """The machines that made the study's artifacts; several are flagged: float kernels differ across CPUs, so the
    same seed gives slightly different numbers on each, and a host difference is not a regression."""
    lines = ["## Hosts (the machines that made the artifacts)", ""]
    lines += [f"- {h.host.label}: {h.artifacts} artifact{'s' if h.artifacts != 1 else ''}" for h in results.hosts]
    if results.hosts_unrecorded:
        lines.append(f"- not recorded (made before undo recorded hosts): {results.hosts_unrecorded} artifacts")
    if len(results.hosts) > 1:
        lines += ["", f"**This study's artifacts come from {len(results.hosts)} different machines.** Float kernels "
                  "differ across CPUs (and GPUs), so the same seed gives slightly different numbers on each: compare "
                  "numbers made on one machine, and read a difference between machines as that, not as a regression."]
    elif results.hosts:
        lines += ["", "Every artifact was made on this one machine; another CPU gives slightly different numbers for "
                  "the same seed (float kernels differ)."]
    return lines + [""]


def markdown(results: Results, figs: dict[str, dict[str, str]], fig_dir: str) -> str:
    """The report; `figs` maps each attack kind to its figures (name -> file in `fig_dir`)."""
    records, budgets, keys = results.models, results.budgets, [str(b) for b in results.budgets]
    kinds = results.attack_kinds
    S = results.scoring
    fmt = S.format  # a score as people read it (accuracy %, or CE in nats)
    shown_fmt = pct if not S.relative else (lambda v: num(v, 3))  # an already shown value (means, intervals)

    def metric(get: Get) -> Get:  # a record's score, as shown (None where not measured)
        return lambda r: None if get(r) is None else S.shown(get(r))

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
             f"Conventions: {units}; every reported number is measured on the setting's **test** split, while "
             "every choice (teacher selection, the distillation stop rule, the attacker's LR) was made on its "
             "separate **validation** split; after an attack, forget = the test score of the LR the attacker chose "
             "(on validation) at the budget; robustness is normalised between the method's unlearn-only teacher (0) "
             "and the oracle (1); compute is a share of the oracle's pretraining FLOPs. With several seeds: mean ± "
             "95 % t-interval.", "",
             *([f"Evaluation (test split): {results.evaluation}.", ""] if results.evaluation else [])]
    if not any(r.role == Role.ORACLE and r.artifact for r in records):
        lines += ["**No data-filtered oracle in this study**: robustness (0 = unlearn-only, 1 = oracle) and compute "
                  "as a share of the oracle's are not computed, not guessed. Compare the attacker-best forget of each "
                  "model with the base model's and its unlearn-only teacher's rows.", ""]
    lines += ["## Stage wall times", ""]
    lines += table(["stage", "seconds"], [[k, f"{v:.0f}"] for k, v in results.wall_time_s.items()])
    lines += host_lines(results)

    for kind in kinds:
        lines += [f"## The paper's claims at this scale{of_kind(kind)}", ""]
        lines += claim_lines(results.claims.get(kind, {}), fmt)
        for name, caption in (
                ("relearning", "Relearning attack: unlearn-only vs Unlearn-and-Distill vs data filtering "
                               f"(attacker-best {S.label('forget')}; grey lines mark the budgets)."),
                ("undo", "UNDO: compute against robustness, one point per alpha (left); relearning curves per alpha "
                         "(right)."),
                ("budgets", "Robustness after the attack against compute (left) and against labels (right): UNDO, "
                            "Unlearn-and-Distill, unlearn-only and every data filter, each at its cost."),
                ("pareto", f"Retain ({S.label('retain')}) as shipped against forget before the attack and after "
                           "each budget, every attacked model."),
                ("oracle_matching", "Oracle matching: the base model distilled toward the oracle vs a random init "
                                    "distilled from the oracle.")):
            if name in figs.get(kind, {}):
                lines += [f"![{caption}]({fig_dir}/{figs[kind][name]})", "", f"*{caption}*", ""]

    lines += rounds_lines(results, shown_fmt, metric)

    lines += ["## Pretraining", ""]
    budget = results.oracle_budget
    if budget is not None:
        lines += [f"The oracle's budget: **{budget.replace('_', ' ')}** (" + (
            "the paper's: as many steps and tokens as the base model, the filtered forget documents replaced by more "
            "retain-domain documents)" if budget == "same_compute" else
            "the base stream's retain documents only: fewer steps than the base model)") + ".", ""]
    if any(r.role == Role.FILTERED and r.filter_recall is not None for r in records):
        lines += ["Imperfect filters: each `filter recall r` model is pretrained like the oracle on the base stream "
                  "after a filter that removed each forget document with probability r (the share it removed is "
                  "given; no retain document is removed); a filter still classifies every document.", ""]
    if any(r.classifier for r in records):
        lines += ["The classifier filter (per seed): a logistic regression on hashed character n-grams trained on "
                  "exactly the labelled documents that seed's unlearning step read, then run on every pretraining "
                  "document; the oracle of what it kept, under the oracle's budget. Its labelled fraction is its "
                  "training documents' share of the corpus (the documents the unlearning step read, counted whole, "
                  "so somewhat more tokens than the rows unlearning trained on); held-out precision and "
                  "recall (forget = positive) on fresh labelled documents: "
                  + "; ".join(f"seed {r.seed}: {r.classifier.training_documents:,} training documents, precision "
                              f"{r.classifier.precision:.3f}, recall {r.classifier.recall:.3f}, retain documents "
                              f"removed {pct(r.filter_retain_removed, 2)}"
                              for r in records if r.classifier and r.artifact) + ".", ""]
    if S.chance is not None:
        lines += ["Forget above chance: the forget accuracy beyond guessing, in points. For the oracle and a "
                  "filter's oracle it is what reached them anyway: through retain documents that touch the topic, "
                  "or forget documents the filter missed.", ""]
    above_chance = ["forget above chance (points)"] if S.chance is not None else []
    lines += table(["model", "steps", "tokens", "FLOPs", "retain", "forget", *above_chance, "labelled fraction",
                    "forget documents removed"], [
        [g[0].id, stat(g, lambda r: r.steps, lambda v: f"{v:,.0f}"),
         stat(g, lambda r: r.accounting.pretraining_tokens if r.role == Role.BASE and r.accounting else None,
              lambda v: f"{v:,.0f}"),
         stat(g, lambda r: r.accounting.stage_flops_total if r.accounting else None, lambda v: f"{v:.3g}"),
         stat(g, metric(lambda r: r.metric("retain")), shown_fmt),
         stat(g, metric(lambda r: r.metric("forget")), shown_fmt),
         *([stat(g, lambda r: None if r.metrics is None else r.metric("forget") - S.chance,
                 lambda v: f"{100 * v:.1f}")] if above_chance else []),
         stat(g, lambda r: r.labelled_fraction),
         {Role.BASE: pct(0.0), Role.ORACLE: pct(1.0)}.get(g[0].role) or stat(g, lambda r: r.filter_removed,
                                                                             lambda v: pct(v, 2))]
        # One row per model: a shared artifact (base, oracle) counted once, per-seed artifacts (the classifier
        # filter's oracles) pooled over their seeds.
        for g in (list({r.artifact: r for r in group}.values())
                  for group in grouped(records, (Role.BASE, Role.ORACLE, Role.FILTERED)))])

    lines += [f"## Unlearning (every sweep point; the teacher is the most forgotten ({S.label('forget')}) that keeps "
              "the selection rule's share of the base model's retain performance)", ""]
    teachers = {(r.seed, r.artifact) for r in records if r.role == Role.TEACHER}
    lines += table(["run", "retain", "forget", "chosen as teacher", "FLOPs % oracle", "labelled fraction"], [
        [g[0].id, stat(g, metric(lambda r: r.metric("retain")), shown_fmt),
         stat(g, metric(lambda r: r.metric("forget")), shown_fmt),
         f"{sum((r.seed, r.artifact) in teachers for r in g)}/{len(g)} seeds",
         stat(g, lambda r: r.stage_compute, lambda v: pct(v, 2)),
         stat(g, lambda r: r.labelled_fraction, lambda v: pct(v, 3))]
        for g in grouped(records, (Role.UNLEARN,)) if g[0].metrics])

    lines += ["## Distillation", "",
              "The stop rule is probed on a geometric grid of steps; a stop at step s was first qualified somewhere in "
              "(previous probe, s]: the resolution column gives (s - previous probe) / s, the largest error of the "
              "reported compute (mean over seeds, largest in brackets).", ""]

    def resolution(g: list[ModelRecord]) -> str:
        shares = [(r.distill.stop_step - r.distill.previous_probe) / r.distill.stop_step for r in g
                  if r.distill and r.distill.stop_step and r.distill.previous_probe is not None]
        return f"{pct(sum(shares) / len(shares), 1)} [{pct(max(shares), 1)}]" if shares else "–"

    lines += table(["student", "steps", "stopped by the rule", "stop resolution", "FLOPs % oracle (student + teacher)",
                    "lineage % oracle", "retain", "forget", "teacher retain / forget"], [
        [g[0].id, stat(g, lambda r: r.steps, lambda v: f"{v:,.0f}"),
         f"{sum(bool(r.distill.stopped_early) for r in g)}/{len(g)}", resolution(g),
         stat(g, lambda r: r.stage_compute, lambda v: pct(v, 2)),
         stat(g, lambda r: r.lineage_compute, lambda v: pct(v, 1)),
         stat(g, metric(lambda r: r.metric("retain")), shown_fmt),
         stat(g, metric(lambda r: r.metric("forget")), shown_fmt),
         stat(g, metric(lambda r: r.teacher_metric("retain")), shown_fmt) + " / "
         + stat(g, metric(lambda r: r.teacher_metric("forget")), shown_fmt)]
        for g in grouped(records, DISTILLED_ROLES) if g[0].metrics])

    lines += other_metrics(records)

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
                value = stat(g, metric(lambda r: r.forget_at(kind, key)), shown_fmt)
                robust = any(r.robustness.get(kind) for r in g)
                rob = stat(g, lambda r: r.robustness_at(kind, key), num) if robust else None
                return value + (f" [{rob}]" if rob and rob != "–" else "")

            lrs = sorted({f"{r.attack(kind).at[keys[-1]].lr:g}" for r in attacked
                          if r.attack(kind).at[keys[-1]].lr is not None})
            edges = sorted({f"{side} @{budget}" for r in attacked for budget, side in r.attack(kind).edge_at.items()})
            flag = f" **best LR at the grid's edge ({', '.join(edges)}): a stronger attack may exist**" if edges else ""
            rows.append([g[0].id, stat(attacked, metric(lambda r: r.attack(kind).before["forget"]), shown_fmt),
                         *(cell(k) for k in keys), cell("area"), ", ".join(lrs) + flag])
        lines += table(header, rows)
        lines += recovery_lines(records, kind, of_kind(kind))
        searched = sorted({lr for r in records if r.attack(kind) for lr in r.attack(kind).lrs_searched})
        added = sorted({lr for r in records if r.attack(kind) for lr in r.attack(kind).lrs_added})
        if searched:
            lines += [f"LR grid searched: {len(searched)} values, {', '.join(f'{lr:.3g}' for lr in searched)}"
                      + (f" (added at an edge for some models: {', '.join(f'{lr:.3g}' for lr in added)})" if added
                         else "") + ".", ""]
    if results.skipped:
        lines += ["## Skipped", ""] + [f"- {name}: {why}" for name, why in results.skipped.items()] + [""]
    return "\n".join(lines)
