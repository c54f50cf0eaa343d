"""The `undo` command line: parse, call `undo.api`, print typed results. Errors a user can cause print one line and
exit with code 2.

Each command imports what it needs when it runs: `undo --help` imports no torch, and checking a config imports none
of peft, lm-eval, Ray or scikit-learn (tests/test_architecture.py checks both).
"""

from __future__ import annotations

import errno
import os
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

try:  # newer typer carries its own copy of click (and its own Abort, typer.Abort)
    from typer._click.exceptions import ClickException, NoArgsIsHelpError
except ImportError:  # pragma: no cover - older typer uses the click package
    from click.exceptions import ClickException, NoArgsIsHelpError

from undo.core import interrupts
from undo.schema.errors import UserError

if TYPE_CHECKING:
    from undo.config import ExperimentConfig

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Robust capability removal: pretrain, unlearn, distill, attack, compare to data filtering.")
console = Console()

ConfigArg = Annotated[Optional[Path], typer.Argument(help="experiment YAML; omit for the embedded demo config")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="dotted override, e.g. --set model.layers=2")]
RunDirOpt = Annotated[Optional[Path], typer.Option("--run-dir", help="where artifacts go (overrides run_dir)")]
ProgressOpt = Annotated[bool, typer.Option("--progress/--no-progress", help="show a progress bar")]


def _load(config: Optional[Path], overrides: Optional[list[str]], run_dir: Optional[Path] = None) -> ExperimentConfig:
    from undo.config import load_config

    cfg = load_config(config, overrides)
    if run_dir is not None:
        cfg.run_dir = str(run_dir)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # under torchrun: what the processes cannot run, before any work
        from undo.core import distributed
        from undo.stages.launch import check_launch

        check_launch(cfg, distributed.world_size())
    return cfg


@app.command()
def run(config: ConfigArg = None, set_: SetOpt = None, run_dir: RunDirOpt = None,
        report: Annotated[bool, typer.Option("--report/--no-report", help="write the report at the end")] = True,
        workers: Annotated[Optional[int], typer.Option(
            help="run independent stages at once in this many processes (each gets its share of the CPU "
                 "threads); 1 = in this process, in order; default: the config's study.workers, else 1")] = None,
        executor: Annotated[str, typer.Option(
            help="local (this machine: --workers processes) or ray (every stage a Ray task with the CPUs/GPUs it "
                 "needs; needs pip install -e \".[ray]\" and a run_dir every node sees)")] = "local",
        address: Annotated[Optional[str], typer.Option(
            help="with --executor ray: the cluster's address (e.g. auto, or ray://HEAD:10001); default: a local "
                 "Ray")] = None,
        progress: ProgressOpt = True) -> None:
    """Run a whole study (no argument: the embedded demo study): pretrain base and oracle, unlearn, choose
    teachers, distil (Unlearn-and-Distill, UNDO, oracle matching), attack, report. Complete stages are reused and
    interrupted ones resume, so the same command finishes a killed run."""
    from undo.api import run_study

    cfg = _load(config, set_, run_dir)
    folder = run_study(cfg, progress=progress, report=report, workers=workers, executor=executor, address=address)
    if report:
        console.print(f"report: {folder / 'report.md'}", highlight=False)


@app.command("report")
def report_command(config: ConfigArg = None, set_: SetOpt = None, run_dir: RunDirOpt = None,
                   out: Annotated[Optional[Path], typer.Option(
                       help="where report.md goes (figures in <stem>_figures/, numbers in <stem>.json); default "
                            "<run_dir>/report.md")] = None) -> None:
    """Write the study's report from its artifacts: report.md, PNG figures and results.json. Computes nothing:
    stages that have not run yet are listed as such (a partial study gives a partial report)."""
    from undo import api

    path = api.report(_load(config, set_, run_dir), out)
    console.print(f"report: {path}", highlight=False)


@app.command()
def pretrain(config: ConfigArg = None, set_: SetOpt = None, run_dir: RunDirOpt = None,
             only: Annotated[Optional[str], typer.Option(
                 help="train only 'base', 'oracle', 'filtered' (the oracles of pretrain.filter_recalls) or "
                      "'classified' (pretrain.classifier_filter: the classifier of the config's seed and the oracle "
                      "of what it keeps)")] = None,
             progress: ProgressOpt = True) -> None:
    """Pretrain the base model (all operations), the data-filtered oracle (retain operations only), the oracle of
    each imperfect filter in pretrain.filter_recalls and, with pretrain.classifier_filter, the oracle of a
    classifier trained on the unlearning step's labels."""
    from undo import api
    from undo.schema.io import read_result
    from undo.stages.evaluation import ensure_evaluation

    cfg = _load(config, set_, run_dir)
    for path in api.pretrain(cfg, only, progress=progress):
        # The metrics of the current evaluation set (a reused model may have been measured on another).
        _print_result(cfg, read_result(path), ensure_evaluation(path, cfg), title=str(path))


@app.command()
def unlearn(config: ConfigArg = None, set_: SetOpt = None, run_dir: RunDirOpt = None,
            start: Annotated[Optional[Path], typer.Option(
                "--from", help="unlearn from this model artifact (e.g. a previous teacher) instead of the base "
                               "model: its lineage's labels and FLOPs carry over")] = None,
            progress: ProgressOpt = True) -> None:
    """Unlearn the forget domain from the pretrained base model: every method x LR x knob of the sweep, then
    pick each method's teacher by the selection rule (written to <run_dir>/unlearn_selection.json)."""
    from undo import api

    cfg = _load(config, set_, run_dir)
    selection = api.unlearn(cfg, start=start, progress=progress)
    S = cfg.setting.score
    table = Table(title=f"unlearning sweep (retain must stay >= {cfg.unlearn.selection.min_retain_fraction:.0%} "
                        "of the base model's)")
    for column in ("method", "lr", "knobs", "retain", "forget", "chosen"):
        table.add_column(column, overflow="fold")
    for label, family in selection.items():
        for c in family.candidates:
            knobs = " ".join(f"{k}={v}" for k, v in c.knobs.items())
            table.add_row(label, f"{c.lr:g}", knobs, S.format(c.retain), S.format(c.forget),
                          "<- teacher" if c.name == family.chosen else ("" if c.qualifies else "retain lost"))
    console.print(table)
    console.print(f"every run and the choices: {Path(cfg.run_dir) / 'unlearn_selection.json'}", highlight=False)


@app.command()
def attack(targets: Annotated[list[Path], typer.Argument(help="artifact folders to attack (each with model/)")],
           config: Annotated[Optional[Path], typer.Option(help="experiment YAML; omit for the demo config")] = None,
           set_: SetOpt = None, run_dir: RunDirOpt = None,
           unlearn_only: Annotated[Optional[str], typer.Option(
               "--unlearn-only", help="the target that scores robustness 0 (its folder name)")] = None,
           oracle: Annotated[Optional[str], typer.Option(
               help="the target that scores robustness 1 (its folder name)")] = None,
           kind: Annotated[Optional[list[str]], typer.Option(
               help="attack kind (undo.attacks), repeatable; default: attack.kinds of the config")] = None,
           progress: ProgressOpt = True) -> None:
    """Relearning attack: fine-tune each target on forget-domain data at every LR of the grid; report the attacker's
    best forget accuracy at each budget, the area under that curve, and normalised robustness."""
    from undo import api
    from undo.analysis.robustness import robustness_summary
    from undo.schema.io import read_result
    from undo.schema.results import AttackResult

    cfg = _load(config, set_, run_dir)
    names = [target.resolve().name for target in targets]
    if (unlearn_only is None) != (oracle is None):
        raise UserError("give both --unlearn-only and --oracle (robustness is normalised between them), or neither")
    for role, name in (("unlearn-only", unlearn_only), ("oracle", oracle)):
        if name is not None and Path(name).name not in names:
            raise UserError(f"the {role} model {Path(name).name!r} is not among the attacked models: "
                            f"{', '.join(names)}")
    attacks = api.attack(cfg, targets, kind, progress=progress)
    a, budgets, S = cfg.attack, cfg.attack.budgets, cfg.setting.score
    for attack_kind, paths in attacks.items():
        results = {name: read_result(path, AttackResult) for name, path in paths.items()}
        curves = {name: result.best for name, result in results.items()}
        summary = robustness_summary(curves, Path(unlearn_only).name, Path(oracle).name, budgets) if oracle else None
        tokens = ", ".join(f"@{s.budget}: step {s.step} = {s.tokens:,} tokens"
                           for s in next(iter(results.values())).snapshots)
        table = Table(title=f"relearning attack ({attack_kind}, {a.data} data, {len(a.lrs)} LRs, {a.steps} steps): "
                            f"attacker-best {S.label('forget')} (best LR)", caption=tokens)
        for column in ("model", "before", *(f"@{b}" for b in budgets), f"area <={max(budgets)}"):
            # Fold, never cut: a model's folder name or an LR must stay whole on an 80-column terminal.
            table.add_column(column, justify="left" if column == "model" else "right", overflow="fold")
        if summary:
            for column in (*(f"robust @{b}" for b in budgets), "robust area"):
                table.add_column(column, justify="right", overflow="fold")
        for name, result in results.items():
            cells = [f"{S.format(s.value)} ({'-' if s.lr is None else format(s.lr, 'g')})" for s in result.snapshots]
            row = [name, S.format(result.metrics_before["forget"]), *cells, S.format(result.area.value)]
            if summary:
                score = summary[name]
                row += [_robustness(r.robustness) for r in (*score.budgets, score.area)]
            table.add_row(*row)
        console.print(table)
        if summary:
            console.print("robustness: 0 = relearns like the unlearn-only model, 1 = like the data-filtered oracle; "
                          "n/a = both relearn equally there")
        for name, path in paths.items():
            console.print(f"{name}: {path}", highlight=False)


def _robustness(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


@app.command()
def distill(teacher: Annotated[Path, typer.Argument(help="the teacher's artifact folder (with model/)")],
            config: Annotated[Optional[Path], typer.Option(help="experiment YAML; omit for the demo config")] = None,
            set_: SetOpt = None, run_dir: RunDirOpt = None,
            init: Annotated[Optional[str], typer.Option(
                help="student init: random | noised (UNDO: every alpha of distill.alphas) | model (needs --start); "
                     "default: distill.init")] = None,
            start: Annotated[Optional[Path], typer.Option(
                help="with --init model: the artifact the student starts from (e.g. the base model)")] = None,
            progress: ProgressOpt = True) -> None:
    """Distil a frozen teacher into a student on the unlabelled pretraining mixture, stopping when the student's
    retain accuracy is within distill.stop_tolerance of the teacher's (Unlearn-and-Distill, UNDO, oracle matching)."""
    from undo import api
    from undo.schema.io import read_result
    from undo.schema.results import DistillResult

    cfg = _load(config, set_, run_dir)
    paths = api.distill(cfg, teacher, init, start, progress=progress)
    results = [read_result(path, DistillResult) for path in paths]
    t = results[0].teacher_metrics
    S = cfg.setting.score
    tolerance = cfg.distill.stop_tolerance
    rule = (f"stop when retain is within {tolerance:g} of the teacher's" if tolerance is not None
            else "no stop rule: to the step cap")
    table = Table(title=f"distillation from {teacher.resolve().name} (teacher {S.label('retain')} "
                        f"{S.format(t['retain'])}, {S.label('forget')} {S.format(t['forget'])}; {rule})")
    for column in ("init", "alpha", "steps", "stopped?", "FLOPs", "retain", "forget"):
        table.add_column(column, justify="left" if column == "init" else "right", overflow="fold")
    for result in results:
        m = result.final_metrics
        table.add_row(result.init, "-" if result.alpha is None else f"{result.alpha:g}", str(result.steps),
                      "yes" if result.stopped_early else "no (cap)", f"{result.flops_total:.3g}",
                      S.format(m["retain"]), S.format(m["forget"]))
    console.print(table)
    for path in paths:
        console.print(f"{path.name}: {path}", highlight=False)


@app.command("eval")
def evaluate(model_dir: Annotated[Path, typer.Argument(help="an artifact folder or its model/ folder")],
             config: Annotated[Optional[Path], typer.Option(help="experiment YAML (its setting is used)")] = None,
             set_: SetOpt = None) -> None:
    """Evaluate a saved model on the setting's fixed evaluation sets (arithmetic: accuracy per operation x format;
    language: held-out cross-entropy per language)."""
    from undo import api

    cfg = _load(config, set_)
    _print_result(cfg, None, api.evaluate(cfg, model_dir), title=str(model_dir))


@app.command()
def probe(model_dir: Annotated[Path, typer.Argument(help="an artifact folder or its model/ folder")],
          prompt: Annotated[Optional[list[str]], typer.Option(
              "--prompt", help="a prompt to continue (repeat for several); none: the setting's evaluation")] = None,
          max_new_tokens: Annotated[Optional[int], typer.Option(
              min=1, help="tokens generated per prompt (default: up to 32, as the context allows)")] = None,
          config: Annotated[Optional[Path], typer.Option(help="experiment YAML (how models load; its setting)")] = None,
          set_: SetOpt = None) -> None:
    """Show what a model does: its greedy continuation of each --prompt, or (without prompts) the setting's
    evaluation of it, so that you can see a behaviour that remains before unlearning it again."""
    from rich.markup import escape

    from undo import api

    cfg = _load(config, set_)
    if not prompt:
        _print_result(cfg, None, api.evaluate(cfg, model_dir), title=str(model_dir))
        return
    for g in api.probe(cfg, model_dir, prompt, max_new_tokens=max_new_tokens):
        console.print(f"[dim]{escape(g.prompt)}[/][bold]{escape(g.completion)}[/]", highlight=False)


@app.command()
def export(artifact: Annotated[Path, typer.Argument(help="a model artifact's folder, e.g. runs/demo/undo_...")],
           folder: Annotated[Path, typer.Argument(help="a new (or empty) folder to copy it into")]) -> None:
    """Copy a model with its model card and tokenizer into a folder, ready for from_pretrained or an upload."""
    from undo import api

    out = api.export(artifact, folder)
    console.print(f"[green]{artifact}[/] -> {out} (model, tokenizer and README.md, its model card)")


@app.command()
def data(config: ConfigArg = None, set_: SetOpt = None,
         which: Annotated[str, typer.Option(help="'base' or 'oracle' stream")] = "base",
         show: Annotated[int, typer.Option(min=0, help="documents to print")] = 8) -> None:
    """Show a sample of the pretraining stream and evaluation set, with their sizes."""
    from collections import Counter

    from rich.markup import escape

    from undo.stages.evaluation import setting_for

    cfg = _load(config, set_)
    if which not in ("base", "oracle"):
        raise UserError(f"--which takes 'base' or 'oracle', got {which!r}")
    setting = setting_for(cfg)
    documents = setting.pretraining_documents(which, cfg.seed)
    for d in documents[:show]:
        console.print(f"[dim]{d.component:>13}[/]  {escape(d.text[:200])}", highlight=False)
    counts = Counter(d.component for d in documents)
    tokens = len(setting.packed_rows(documents, cfg.model.context)) * cfg.model.context
    console.print(f"{len(documents):,} documents, {tokens:,} tokens; per component: {dict(sorted(counts.items()))}")
    console.print(f"evaluation: {setting.describe_evaluation()}", highlight=False)


@app.command()
def verify(run_dir: Annotated[Path, typer.Argument(help="a study's run directory")] = Path("runs/demo"),
           repair: Annotated[bool, typer.Option(
               "--repair", help="set every damaged artifact and cache aside (renamed, not deleted) so that the next "
                                "`undo run` recomputes it")] = False) -> None:
    """Check every artifact, work in progress and cache of a run directory against its own records; exit 2 if
    anything is damaged."""
    from undo.study.verify import set_aside, verify_run_dir

    findings = verify_run_dir(run_dir)
    table = Table(title=f"undo verify {run_dir}")
    for column in ("path", "status", "detail"):
        table.add_column(column)
    colours = {"ok": "green", "in progress": "cyan", "damaged": "red", "set aside": "yellow"}
    for finding in findings:
        table.add_row(str(finding.path.relative_to(run_dir)) if finding.path != run_dir else ".",
                      f"[{colours[finding.status]}]{finding.status}[/]", finding.detail)
    console.print(table)
    damaged = [f for f in findings if f.damaged]
    if repair and damaged:
        for aside in set_aside(damaged):
            console.print(f"set aside: {aside}", highlight=False)
        console.print("run the study again: what was set aside is recomputed")
    elif damaged:
        fail(f"{len(damaged)} of {len(findings)} entries in {run_dir} are damaged; see the table above, then delete "
             f"them or run `undo verify --repair {run_dir}`")


@app.command("config")
def show_config(config: ConfigArg = None, set_: SetOpt = None,
                memory: Annotated[bool, typer.Option(
                    "--memory", help="print each training stage's estimated peak memory per process instead")] = False,
                processes: Annotated[Optional[int], typer.Option(
                    min=1, help="with --memory: the processes (GPUs) one stage runs on; default: this launch's, "
                                "else 1")] = None) -> None:
    """Validate a config and print it fully resolved, with its hash."""
    from undo.config import config_hash, dump_yaml

    cfg = _load(config, set_)
    if memory:
        _print_memory(cfg, processes or int(os.environ.get("WORLD_SIZE", "1")))
        return
    typer.echo(dump_yaml(cfg), nl=False)
    typer.echo(f"# hash: {config_hash(cfg)}")


def _print_memory(cfg: ExperimentConfig, processes: int) -> None:
    from undo.stages.memory import Architecture, estimate

    arch = Architecture.of_config(cfg)
    stages = estimate(cfg, processes)
    unit, scale = ("GiB", 2**30) if max(stage.total for stage in stages) >= 2**30 else ("MiB", 2**20)
    strategy = cfg.distributed.strategy if processes > 1 else "one process"
    table = Table(title=f"estimated peak memory per process ({unit}): {arch.parameters:,} parameters in "
                        f"{cfg.model.dtype}, {processes} process(es), {strategy}", title_justify="left")
    kinds = {"weights": "weights", "gradients": "grads", "optimizer": "adam", "frozen": "frozen",
             "activations": "acts", "logits": "logits", "total": "total"}
    table.add_column("stage", no_wrap=True)
    for header in kinds.values():
        table.add_column(header, justify="right")
    for stage in stages:
        table.add_row(stage.stage, *(f"{getattr(stage, kind) / scale:.2f}" for kind in kinds))
    console.print(table)
    console.print("tensors only: add the CUDA context (~0.5 GiB) on a GPU; benchmarks/memory_estimate.py measures "
                  "the estimate against real runs", highlight=False)


def _print_result(cfg: ExperimentConfig, result, metrics: dict[str, float], title: str) -> None:
    """A model's metrics as its setting shows them, and its stage's cost when `result` (its record) is given."""
    console.print(f"[bold]{title}[/]", highlight=False)
    console.print(cfg.setting.metrics_view(metrics))
    if result is not None:
        console.print(f"wall time {result.wall_time_s:.0f}s, {result.flops_total:.3g} FLOPs")
        seen = getattr(result, "data", {}).get("eval_items_seen_in_training")
        if seen:
            console.print(f"evaluation items whose (operation, a, b) also occurs in training: {seen}")


def main(argv: list[str] | None = None) -> None:
    """Console entry point: user errors become one line on stderr and exit code 2."""
    quiet_unless_main()
    interrupts.install()
    quiet_transformers()
    try:
        code = app(args=argv, prog_name="undo", standalone_mode=False)
    except UserError as err:
        fail(str(err))
    except NoArgsIsHelpError as err:  # plain `undo`: the help, as click shows it
        print(err.ctx.get_help(), file=sys.stderr)
        sys.exit(2)
    except ClickException as err:  # a wrong command, flag or value: one line too, not click's box
        ctx = getattr(err, "ctx", None)
        command = f" {ctx.info_name}" if ctx is not None and ctx.parent is not None else ""
        fail(f"{err.format_message()} (see `undo{command} --help`)")
    except (KeyboardInterrupt, typer.Abort):
        interrupted()
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT):
            raise  # not something the user's disk or permissions did: keep the traceback
        where = f" writing {err.filename}" if err.filename else ""
        fail(f"{err.strerror}{where}; make room (or fix the permissions) and run the same command again: what is "
             "complete is kept and an interrupted stage resumes")
    if code == 130:  # typer turns Ctrl-C into exit code 130 itself
        interrupted()
    sys.exit(code if isinstance(code, int) else 0)


def quiet_transformers() -> None:
    """Per-file load/save bars are noise next to our own progress bar, and so is the reminder that generation ran
    past a small model's context (a long word problem is scored as it comes). Set through the environment, so that
    a command that never loads transformers does not import it for this."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:  # already imported (a test calling main): tell it directly
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()


def quiet_unless_main() -> None:
    """Under torchrun every process runs the command and dies with torchrun; only the main one talks. The others'
    chatter goes to /dev/null, but their errors still reach the terminal (`fail` and tracebacks use the real
    stderr)."""
    global _errors
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:  # not under torchrun (`undo.core.distributed.launched`)
        return
    from undo.core import distributed
    from undo.core.processes import die_with_parent

    die_with_parent()  # a process of torchrun's must not outlive it (a rerun would collide with it)
    if not distributed.is_main():
        _errors = sys.stderr
        sys.stdout = sys.stderr = open(os.devnull, "w")
        sys.excepthook = lambda kind, value, tb: traceback.print_exception(kind, value, tb, file=_errors)


_errors = None  # where a quiet process's errors still go

def interrupted() -> None:
    print("undo: interrupted; run the same command again to resume from the last checkpoint", file=sys.stderr)
    sys.exit(130)


def fail(message: str) -> None:
    print(f"undo: error: {' '.join(message.split())}", file=_errors or sys.stderr)  # always one line
    sys.exit(2)
