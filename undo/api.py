"""The Python entry points above every layer: what the command line calls, and what a script or notebook can call.

    run_study(cfg)                 the whole study (`undo run`): every stage, then the report
    write_report(run_dir)          the report of a study's artifacts (`undo report`)
    pretrain(cfg, only=None)       the base model, the oracle and the data filters' oracles (`undo pretrain`)
    unlearn(cfg)                   the unlearning sweep and each method's teacher (`undo unlearn`)
    distill(cfg, teacher, init)    Unlearn-and-Distill, UNDO (every alpha) or oracle matching (`undo distill`)
    attack(cfg, targets, kinds)    the relearning attack of each target under each kind (`undo attack`)
    evaluate(cfg, model)           a saved model on the setting's evaluation set (`undo eval`)
    export(artifact, folder)       a model with its card and tokenizer, ready for from_pretrained (`undo export`)
    probe(cfg, model, prompts)     what a model writes after each prompt, greedily (`undo probe`)

Each checks its request first (one `UserError` line, nothing made), then holds the run directory's lock while it
works; stages return artifact folders, whose typed records `undo.schema.io.read_result` reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from undo.config import ExperimentConfig
from undo.core.locks import command_line, run_dir_lock
from undo.report import write_report
from undo.schema.errors import UserError
from undo.schema.study import TeacherChoice
from undo.study import runner

PRETRAIN_ONLY = ("base", "oracle", "filtered", "classified")


def run_study(cfg: ExperimentConfig, *, progress: bool = True, report: bool = True, workers: int | None = None,
              executor: str = "local", address: str | None = None) -> Path:
    """Run the study of `cfg` (see `undo.study.runner.run_study`) and, with `report`, write its report.md, figures and
    results.json into the run directory. Returns the run directory."""
    return runner.run_study(cfg, progress=progress, workers=workers, executor=executor, address=address,
                            then=write_report if report else None)


def report(cfg: ExperimentConfig, out: Path | None = None) -> Path:
    """The report of the study of `cfg` from its complete artifacts (computing nothing): the report's path."""
    if out is not None and Path(out).is_dir():
        raise UserError(f"--out {out} is a folder; give the path of the report file, e.g. {Path(out) / 'report.md'}")
    if out is not None:  # the report and its figures' folder go beside it: every existing folder above must be one
        blocking = next((p for p in Path(out).parents if p.exists() and not p.is_dir()), None)
        if blocking is not None:
            raise UserError(f"--out {out}: {blocking} is a file, not a folder; give a report path in a folder")
    if not Path(cfg.run_dir).is_dir():
        runner.collect_study(cfg)  # says there is nothing to report, without making the folder
    with run_dir_lock(Path(cfg.run_dir), command_line()):
        runner.collect_study(cfg)
        return write_report(Path(cfg.run_dir), out)


def pretrain(cfg: ExperimentConfig, only: str | None = None, *, progress: bool = True) -> list[Path]:
    """The base model and the oracle, each imperfect filter's oracle (`pretrain.filter_recalls`) and, with
    `pretrain.classifier_filter`, the classifier of the config's seed and the oracle of what it keeps; `only` one of
    `PRETRAIN_ONLY`. Returns the model artifacts' folders."""
    from undo.stages.filter import train_filter
    from undo.stages.pretrain import pretrain as pretrain_stage

    if only not in (None, *PRETRAIN_ONLY):
        raise UserError(f"--only takes 'base', 'oracle', 'filtered' or 'classified', got {only!r}")
    if only == "filtered" and not cfg.pretrain.filter_recalls:
        raise UserError("--only filtered: the config has no pretrain.filter_recalls (e.g. --set "
                        "'pretrain.filter_recalls=[0.9, 0.99]')")
    if only == "classified" and cfg.pretrain.classifier_filter is None:
        raise UserError("--only classified: the config has no pretrain.classifier_filter (e.g. --set "
                        "'pretrain.classifier_filter={}')")
    models = [("base", None)] if only in (None, "base") else []
    if only == "oracle" or (only is None and cfg.oracle_source):
        models.append(("oracle", None))
    if only in (None, "filtered"):
        models += [("oracle", recall) for recall in cfg.pretrain.filter_recalls]
    classified = only in (None, "classified") and cfg.pretrain.classifier_filter is not None
    with run_dir_lock(Path(cfg.run_dir), command_line()):
        paths = [pretrain_stage(cfg, which, recall=recall, progress=progress) for which, recall in models]
        if classified:  # the classifier reads the unlearning step's labels: no model is needed to train it
            paths.append(pretrain_stage(cfg, "oracle", classifier=train_filter(cfg, progress=progress),
                                        progress=progress))
    return paths


def unlearn(cfg: ExperimentConfig, *, start: Path | None = None, progress: bool = True) -> dict[str, TeacherChoice]:
    """Every unlearning sweep point from the base model (or from `start`, default `unlearn.start`: any finished model
    artifact, a round of the responsive loop), then each method family's teacher (also written to `<run_dir>/unlearn_selection.json`,
    or `unlearn_selection_from_<start>.json`)."""
    from undo.stages.selection import run_unlearning
    from undo.stages.unlearn import check_start

    if start is None and cfg.unlearn.start is not None:
        start = Path(cfg.unlearn.start).expanduser()
    if start is not None:
        check_start(start)
    with run_dir_lock(Path(cfg.run_dir), command_line()):
        return run_unlearning(cfg, start=start, progress=progress)


def distill(cfg: ExperimentConfig, teacher: Path, init: str | None = None, start: Path | None = None, *,
            progress: bool = True) -> list[Path]:
    """Distil `teacher` (an artifact folder) into a student: `init` random, noised (UNDO, once per alpha of
    `distill.alphas`) or model (from `start`); default `distill.init`. Returns the students' folders."""
    from undo.stages.distill import check_request
    from undo.stages.distill import distill as distill_stage

    init = init or cfg.distill.init
    alphas = cfg.distill.alphas if init == "noised" else [None]
    for alpha in alphas:  # before the run directory is locked (and so made): a mistyped command leaves nothing
        check_request(init, alpha, teacher, start)
    with run_dir_lock(Path(cfg.run_dir), command_line()):
        return [distill_stage(cfg, teacher, init=init, alpha=alpha, start=start, progress=progress)
                for alpha in alphas]


def attack(cfg: ExperimentConfig, targets: list[Path], kinds: list[str] | None = None, *,
           progress: bool = True) -> dict[str, dict[str, Path]]:
    """The relearning attack of every target (artifact folders) under every kind (default `attack.kinds`): attack
    kind -> target folder name -> the attack's artifact folder."""
    from undo.stages.attack import Attack
    from undo.stages.attack import attack as attack_stage

    kinds = list(kinds or cfg.attack.kinds)
    names = [Path(target).resolve().name for target in targets]
    if len(set(names)) < len(names):
        raise UserError(f"two targets share a folder name ({', '.join(names)}); results are named by folder")
    for kind in kinds:  # the stage's own checks (the folder, the kind), before the run directory is locked and made
        for target in targets:
            Attack(kind).check(cfg, {"target": Path(target)})
    out: dict[str, dict[str, Path]] = {}
    for kind in kinds:
        with run_dir_lock(Path(cfg.run_dir), command_line()):
            out[kind] = {name: attack_stage(cfg, Path(target), kind=kind, progress=progress)
                         for name, target in zip(names, targets)}
    return out


def evaluate(cfg: ExperimentConfig, model_dir: Path) -> dict[str, float]:
    """A saved model (an artifact folder or its model/ folder) on the setting's evaluation set, loaded as every stage
    loads it (`model.dtype`, `model.attn_implementation`, `model.trust_remote_code`)."""
    from undo.core.artifacts import model_or_artifact, verified_meta
    from undo.core.models import check_vocabulary, load_model
    from undo.stages.evaluation import check_tokenizer, setting_for

    directory = model_or_artifact(model_dir)
    if (Path(model_dir) / "meta.json").is_file():  # an artifact: its model files must be the ones it made
        verified_meta(Path(model_dir))
    if not directory.is_dir():
        raise UserError(f"no model at {model_dir}: give an artifact folder (with model/) or a model folder")
    setting = setting_for(cfg)
    check_tokenizer(directory, setting)
    model = load_model(directory, cfg.model)
    check_vocabulary(model, setting.tokenizer, str(directory))
    return setting.evaluate(model)


__all__ = ["attack", "distill", "evaluate", "pretrain", "report", "run_study", "unlearn", "write_report"]


def export(artifact: Path, folder: Path) -> Path:
    """Copy the model of `artifact` (a finished artifact folder, its model files checked against its record) with its
    model card and tokenizer into `folder` (new or empty): a folder `from_pretrained` opens, or to upload. An
    artifact made before cards existed gets its card first. Returns `folder`."""
    import shutil

    from undo.analysis.cards import CARD, write_card
    from undo.core.artifacts import MODEL, verified_meta

    artifact, folder = Path(artifact), Path(folder)
    if not (artifact / "meta.json").is_file():
        raise UserError(f"{artifact} is not a finished artifact (no meta.json); give an artifact folder of a run "
                        "directory, e.g. runs/demo/base")
    meta = verified_meta(artifact)
    if not (artifact / MODEL / "config.json").is_file():
        raise UserError(f"{artifact} holds no model (a {meta.kind} artifact); export a model-making stage's "
                        "artifact (pretrain, unlearn, distill)")
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise UserError(f"{folder} already exists and is not an empty folder; give a new folder to export into")
    if not (artifact / MODEL / CARD).is_file():
        write_card(artifact, None)
    staging = folder.with_name(f".{folder.name}.exporting")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(artifact / MODEL, staging)
    if folder.exists():
        folder.rmdir()
    staging.rename(folder)  # whole or not at all
    return folder



@dataclass(frozen=True)
class Generation:
    """What a model wrote after a prompt (greedy decoding), and the prompt's length in tokens."""

    prompt: str
    completion: str
    prompt_tokens: int


DEFAULT_NEW_TOKENS = 32


def probe(cfg: ExperimentConfig, model_dir: Path, prompts: list[str], *,
          max_new_tokens: int | None = None) -> list[Generation]:
    """Greedy continuations of `prompts` by a saved model (an artifact folder or its model/ folder), loaded as every
    stage loads it: what a user looks at to see a behaviour that remains. Each prompt is opened the way the model
    was trained to read text (its tokenizer's BOS, or undo's end-of-text token for a model undo pretrained). Without
    `max_new_tokens`, up to 32 tokens, fewer where the context ends first; a prompt that leaves no room (or not the
    `max_new_tokens` asked for) is refused in one line, before any generation."""
    import torch

    from undo.core.artifacts import model_or_artifact, verified_meta
    from undo.core.models import load_model, load_tokenizer
    from undo.settings.mcq import bos_policy

    if not prompts:
        raise UserError("give at least one --prompt (or leave them all out for the setting's evaluation)")
    if (Path(model_dir) / "meta.json").is_file():
        verified_meta(Path(model_dir))
    directory = model_or_artifact(model_dir)
    if not (directory / "config.json").is_file():
        raise UserError(f"no model at {model_dir}: give an artifact folder (with model/) or a model folder")
    tokenizer = load_tokenizer(str(directory), cfg.model, role=str(model_dir))
    model = load_model(directory, cfg.model).eval()
    context = model.config.max_position_embeddings
    add_bos, _ = bos_policy(tokenizer, directory)
    opener = [tokenizer.bos_token_id] if add_bos and tokenizer.bos_token_id is not None else []
    encoded = [opener + tokenizer(prompt, add_special_tokens=False)["input_ids"] for prompt in prompts]
    for number, ids in enumerate(encoded, 1):
        wanted = 1 if max_new_tokens is None else max_new_tokens
        if len(ids) + wanted > context:
            raise UserError(f"prompt {number} has {len(ids)} tokens; with {wanted} new token(s) it exceeds the model's "
                            f"context of {context} tokens: shorten it or generate fewer tokens (--max-new-tokens)")
    out = []
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with torch.no_grad():
        for prompt, ids in zip(prompts, encoded):
            tokens = torch.tensor([ids], device=next(model.parameters()).device)
            new = max_new_tokens or min(DEFAULT_NEW_TOKENS, context - len(ids))
            generated = model.generate(tokens, attention_mask=torch.ones_like(tokens), max_new_tokens=new,
                                       do_sample=False, pad_token_id=pad, eos_token_id=tokenizer.eos_token_id)
            completion = tokenizer.decode(generated[0, len(ids):], skip_special_tokens=True)
            out.append(Generation(prompt, completion, len(ids)))
    return out
