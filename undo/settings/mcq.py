"""The multiple-choice setting (the paper's WMDP setting): knowledge measured by lm-evaluation-harness tasks.

Data: as in the language setting. Unlearning reads forget and retain documents of two text corpora (e.g. the WMDP
bio/cyber forget corpora and a retain corpus), distillation and the attack read their mixture; a model from a
checkpoint tokenizes them with its own tokenizer, once, into token stores on disk.

Scores: the forget score is the mean multiple-choice accuracy over `forget_tasks` (e.g. wmdp_bio, wmdp_cyber), the
retain score the mean over `retain_tasks` (e.g. mmlu), each task's accuracy (lm-eval's `acc`: the choice with the
highest log-likelihood) also reported on its own (`forget/<task>`, `retain/<task>`). Evaluation runs in memory on
the model being trained (`lm_eval.evaluator.evaluate` with `HFLM(pretrained=<the model object>)`, no save and
reload); every question is opened by the model's BOS token where that is the model's convention (`bos_policy`: its
tokenizer adds one, or undo pretrained it on documents opened by <|endoftext|>). Each task's questions are split in
two, alternately (even positions: validation, odd: test), so that decisions and reported numbers never read the same
question. Inside training (the distillation stop rule,
unlearning logs, the attack's curves) each split is cut to its first `limit` questions; teacher selection and every
reported number use `report_limit` of theirs (null: every question).
Tasks are lm-eval's own (by name) or your own YAML files in `task_paths` (`TaskManager(include_path=...)`), whose
JSON/JSONL data can be local: nothing needs the network. Guessing scores `chance` (25 % for four choices): forget
scores below it count as chance in teacher selection and robustness (the floor), and the report marks it.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, PrivateAttr

from undo.core.artifacts import file_sha256
from undo.core.checkpoints import fingerprint
from undo.schema.errors import UserError
from undo.settings.base import Score, register_setting
from undo.settings.language import LanguageConfig, LanguageSetting
from undo.settings.tokenizer import EOS, adds_bos, has_undo_specials, with_bos

MCQ_ACCURACY = Score("accuracy", chance=0.25)
MCQ_FIELDS = {"forget_tasks", "retain_tasks", "task_paths", "limit", "report_limit", "num_fewshot", "include_ce",
              "corpus_help"}


@register_setting
class MCQConfig(LanguageConfig):
    """Forget and retain knowledge measured by multiple-choice tasks of lm-evaluation-harness; training data from a
    forget and a retain corpus (as in the language setting)."""

    name: Literal["mcq"] = "mcq"
    score: ClassVar[Score] = MCQ_ACCURACY
    retain_script: Literal["latin", "hangul"] | None = Field(None, description="a script check of the retain corpus")
    forget_script: Literal["latin", "hangul"] | None = Field(None, description="likewise for the forget corpus")
    forget_tasks: list[str] = Field(min_length=1, description="lm-eval tasks measuring what is removed, e.g. "
                                                              "[wmdp_bio, wmdp_cyber]")
    retain_tasks: list[str] = Field(min_length=1, description="lm-eval tasks measuring what is kept, e.g. [mmlu]")
    task_paths: list[str] = Field(default_factory=list, description="folders of your own task YAML files")
    limit: int | None = Field(50, ge=1, description="questions per task in evaluations during training (stop rule, "
                                                    "attack curves); null = all")
    report_limit: int | None = Field(None, ge=1, description="questions per task behind reported numbers and teacher "
                                                             "selection; null = all")
    num_fewshot: int = Field(0, ge=0, description="in-context examples per question")
    include_ce: bool = Field(False, description="also measure held-out cross-entropy on both corpora")
    corpus_help: dict[Literal["retain", "forget"], str] = Field(
        default_factory=dict, description="where to obtain each corpus, said when it is missing")
    eval_batch_size: int = Field(16, ge=1)
    # The experiment's checkpoint (pretrained, revision, trust_remote_code), None for a model built here: whether
    # lm-eval opens questions with BOS follows the model's convention (see `bos_policy`). Set by check_experiment.
    _checkpoint: tuple[str, str | None, bool] | None = PrivateAttr(None)

    def data_identity(self) -> dict[str, Any]:
        return {k: v for k, v in super().data_identity().items() if k not in MCQ_FIELDS}

    def evaluation_identity(self) -> dict[str, Any]:
        # Own task files count by content; lm-eval's built-in tasks by name and lm-eval's version.
        lm_eval = require_lm_eval()
        files = {str(p): file_sha256(p) for folder in self.task_paths for p in sorted(Path(folder).rglob("*"))
                 if p.is_file()}
        return {**super().evaluation_identity(), "task_files": files, "lm_eval": lm_eval.__version__,
                "add_bos_token": self.bos_decision()[0]}

    def bos_decision(self) -> tuple[bool, str]:
        """`bos_policy` for this experiment's model (its checkpoint's tokenizer, read once per process)."""
        return checkpoint_bos_policy(self._checkpoint)

    def with_eval_items(self, items: int) -> "MCQConfig":
        return self.model_copy(update={"limit": items, "eval_documents": min(items, self.heldout_documents)})

    def full_evaluation(self) -> "MCQConfig":
        return self.model_copy(update={"limit": self.report_limit})

    def check_experiment(self, experiment) -> None:
        super().check_experiment(experiment)
        model = experiment.model
        self._checkpoint = (None if model.pretrained is None else
                            (model.pretrained, model.revision, model.trust_remote_code))
        missing = [folder for folder in self.task_paths if not Path(folder).is_dir()]
        if missing:
            raise ValueError(f"setting.task_paths: {missing[0]} is not a folder of task YAML files")

    def build(self, cache_dir: Path, tokenizer: Any = None) -> "MCQSetting":
        return MCQSetting(self, cache_dir=cache_dir, tokenizer=tokenizer)

    def metrics_view(self, metrics: dict[str, float]) -> str:
        tasks = "  ".join(f"{name} {100 * value:.1f}%" for name, value in metrics.items() if "/" in name)
        return (f"retain {100 * metrics['retain']:.1f}%  forget {100 * metrics['forget']:.1f}% (chance "
                f"{100 * self.score.chance:.0f}%)  {tasks}")


class MCQSetting(LanguageSetting):
    score = MCQ_ACCURACY

    def __init__(self, cfg: MCQConfig, *, cache_dir: str | Path | None = None, tokenizer: Any = None):
        try:
            super().__init__(cfg, cache_dir=cache_dir, tokenizer=tokenizer)
        except UserError as err:
            def sources(side: str) -> list[str]:
                corpus = getattr(cfg, f"{side}_corpus")
                return corpus if isinstance(corpus, list) else [corpus]

            helps = [f"{side} corpus: {hint}" for side, hint in cfg.corpus_help.items()
                     if any(source in str(err) for source in sources(side))]
            if not helps or "does not exist" not in str(err):
                raise
            raise UserError(f"{err}; {helps[0]}") from None
        self.own_tokenizer = tokenizer is None  # a tokenizer undo trained opens every text with end-of-text
        checkpoint = None if self.own_tokenizer else cfg._checkpoint
        model_dir = _local_folder(checkpoint[0]) if checkpoint else None
        # Whether lm-eval opens every question with the BOS token, and why (the report prints `bos_policy`).
        self.add_bos, reason = bos_policy(None if self.own_tokenizer else self.tokenizer, model_dir)
        self.bos_policy = f"{'BOS added' if self.add_bos else 'no BOS'} ({reason})"
        self._lm_tokenizer = None
        self._tasks = None

    @property
    def lm_tokenizer(self):
        """The tokenizer lm-eval encodes questions with: the setting's, made to add BOS where the policy says so."""
        if self._lm_tokenizer is None:
            self._lm_tokenizer = with_bos(self.tokenizer) if self.add_bos else self.tokenizer
        return self._lm_tokenizer

    @property
    def tasks(self):
        """The lm-eval tasks, loaded once (their questions are read here, from the hub or from local files)."""
        if self._tasks is None:
            require_lm_eval()
            from lm_eval.tasks import TaskManager

            cfg = self.cfg
            with quiet():
                names = [*cfg.forget_tasks, *cfg.retain_tasks]
                # Indexing lm-eval's ~15k built-in task files takes seconds: skip it when your own files hold them all.
                manager = TaskManager(include_path=cfg.task_paths, include_defaults=False) if cfg.task_paths else None
                if manager is None or any(n not in manager.all_tasks for n in names):
                    manager = TaskManager(include_path=cfg.task_paths or None)
                unknown = [n for n in names if n not in manager.all_tasks]
                if unknown:
                    raise UserError(f"setting.forget_tasks/retain_tasks: {unknown[0]!r} is not an lm-eval task; "
                                    "name a registered one (lm_eval --tasks list) or add its YAML to task_paths")
                try:
                    loaded = manager.load(names)
                except Exception as err:  # noqa: BLE001 - datasets raise many kinds; one line says which task
                    raise UserError(f"could not load the lm-eval tasks {names}: {str(err).splitlines()[0]}") from None
            for task in loaded["tasks"].values():
                task.set_config(key="num_fewshot", value=cfg.num_fewshot)
                task.set_fewshot_seed(seed=1234)
            self._tasks = loaded
        return self._tasks

    def evaluate(self, model) -> dict[str, float]:
        cfg = self.cfg
        out = run_tasks(model, self.tasks, self.questions(), tokenizer=self.lm_tokenizer, add_bos=self.add_bos,
                        batch_size=cfg.eval_batch_size, context=self.context)
        metrics: dict[str, float] = {}
        for side, names in (("forget", cfg.forget_tasks), ("retain", cfg.retain_tasks)):
            accuracies = [task_accuracy(out, name) for name in names]
            metrics.update({f"{side}/{name}": acc for name, acc in zip(names, accuracies)})
            metrics[side] = sum(accuracies) / len(accuracies)
        if cfg.include_ce:
            cross_entropies = super().evaluate(model)
            metrics.update({k: v for k, v in cross_entropies.items() if k.endswith("_ce")})
        return metrics

    def questions(self) -> dict[str, list[int]]:
        """Each task's questions in this split (by position): every other one, the first `limit` of them."""
        first = 0 if self.cfg.split == "validation" else 1
        return {name: list(range(first, len(task.eval_docs), 2))[: self.cfg.limit]
                for name, task in self.tasks["tasks"].items()}

    def evaluate_sides(self, model, sides: tuple[str, ...]) -> dict[str, float]:
        return self.evaluate(model)

    def describe_evaluation(self) -> str:
        limit = "every question" if self.cfg.limit is None else f"the first {self.cfg.limit} questions"
        return (f"lm-eval tasks, {limit} of each: forget {', '.join(self.cfg.forget_tasks)}; retain "
                f"{', '.join(self.cfg.retain_tasks)}; {self.bos_policy}")


UNDO_PRETRAINED = f"undo pretrained this model on documents opened by {EOS}"


def bos_policy(tokenizer, model_dir: Path | None = None) -> tuple[bool, str]:
    """Whether lm-eval should open every question with the model's BOS token, and why: the model's own convention.
    - the tokenizer adds BOS itself (its post-processor or `add_bos_token`): yes, as lm-eval would with it;
    - a model undo pretrained: `tokenizer` None (undo trains the model and its tokenizer here), or a checkpoint
      folder undo saved (`save_model`: the weights beside one of undo's tokenizers, whose specials are
      <pad>, <unk>, <|endoftext|> with <|endoftext|> as BOS): yes, every document it was pretrained on was opened by
      <|endoftext|> (`TokenizedSetting.encode_documents`), as every arithmetic prompt is at evaluation;
    - otherwise (e.g. GPT-2): no, lm-eval's default."""
    if tokenizer is None:
        return True, UNDO_PRETRAINED
    if tokenizer.bos_token_id is not None and (getattr(tokenizer, "add_bos_token", False) is True
                                               or adds_bos(tokenizer)):
        return True, f"the tokenizer adds BOS ({tokenizer.bos_token})"
    if has_undo_specials(tokenizer) and (model_dir is None or _holds_tokenizer(model_dir)):
        return True, UNDO_PRETRAINED
    return False, "the tokenizer adds no BOS"


def checkpoint_bos_policy(checkpoint: tuple[str, str | None, bool] | None) -> tuple[bool, str]:
    """`bos_policy` of a checkpoint (pretrained, revision, trust_remote_code), or of a model built here (None)."""
    if checkpoint is None:
        return bos_policy(None)
    source, revision, trust_remote_code = checkpoint
    return _checkpoint_bos_policy(source, revision, trust_remote_code, fingerprint(source, revision))


@functools.lru_cache(maxsize=8)
def _checkpoint_bos_policy(source: str, revision: str | None, trust_remote_code: bool,
                           identity: str) -> tuple[bool, str]:
    from types import SimpleNamespace

    from undo.core.models import load_tokenizer

    tokenizer = load_tokenizer(source, SimpleNamespace(trust_remote_code=trust_remote_code), revision=revision)
    return bos_policy(tokenizer, _local_folder(source))


def _local_folder(source: str) -> Path | None:
    path = Path(source).expanduser()
    return path if path.is_dir() else None


def _holds_tokenizer(model_dir: Path) -> bool:
    """Whether a checkpoint folder holds the tokenizer files `save_model` writes beside the weights."""
    return any((model_dir / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json"))


def reuse_requests(tasks) -> None:
    """Keep each task's built requests for the next evaluation, with their answers cleared. lm-eval otherwise
    rebuilds every question's prompt each time (it compiles the Jinja template once per question: most of an
    evaluation's time on a small model), though the prompts never change between evaluations of one setting."""
    for task in tasks["tasks"].values():
        for instance in task.instances:
            instance.resps, instance.filtered_resps = [], {}
        task.build_all_requests = _keep_requests


def _keep_requests(**_) -> None:
    """A task's `build_all_requests` once its requests are built (see `reuse_requests`)."""


PROMPT = "{{question}}\\nA. {{choices[0]}}\\nB. {{choices[1]}}\\nC. {{choices[2]}}\\nD. {{choices[3]}}\\nAnswer:"


def write_task(folder: Path, name: str, questions: list[dict]) -> Path:
    """Your own four-choice task, offline: `questions` ({"question", "choices": [4], "answer": index}) as
    `<folder>/<name>.jsonl` and its lm-eval task file `<folder>/<name>.yaml` (WMDP's prompt format); put `folder` in
    `setting.task_paths` and `name` in the forget or retain tasks."""
    return _write_json_task(folder, name, questions, f"doc_to_text: \"{PROMPT}\"\n"
                            "doc_to_choice: [\"A\", \"B\", \"C\", \"D\"]\n", metrics=("acc",))


def write_choice_task(folder: Path, name: str, items: list[dict], *, home: Path | None = None) -> Path:
    """A four-choice task scored by continuation, offline: each item ({"prompt", "choices": [4], "answer": index})
    asks which choice is the likelier continuation of its prompt (" " + choice after it; accuracy on the summed
    log-likelihood, `acc_norm` per byte beside it), the form a small model can answer (the lettered WMDP prompt
    needs a model that reads options). Written as `<folder>/<name>.jsonl` and its lm-eval task file, which names the
    data file in `home` (default `folder`: where the files will be read from, when they are written elsewhere first)."""
    return _write_json_task(folder, name, items, "doc_to_text: \"{{prompt}}\"\ndoc_to_choice: \"{{choices}}\"\n",
                            metrics=("acc", "acc_norm"), home=home)


def _write_json_task(folder: Path, name: str, rows: list[dict], prompt: str, *, metrics: tuple[str, ...],
                     home: Path | None = None) -> Path:
    """`rows` as `<folder>/<name>.jsonl` and a multiple-choice lm-eval task file over them (`prompt`: its
    doc_to_text and doc_to_choice lines; the target is each row's `answer`), naming the data file in `home`."""
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / f"{name}.jsonl"
    data.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    (folder / f"{name}.yaml").write_text(
        f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    test: {(Path(home or folder) / data.name).resolve()}\n"
        f"test_split: test\noutput_type: multiple_choice\n{prompt}doc_to_target: answer\nmetric_list:\n"
        + "".join(f"  - metric: {metric}\n    aggregation: mean\n    higher_is_better: true\n" for metric in metrics))
    return folder / f"{name}.yaml"


def run_tasks(model, tasks, samples: dict[str, list[int]], *, tokenizer, add_bos: bool, batch_size: int,
              context: int | None) -> dict:
    """lm-eval's results for `tasks` (a `TaskManager.load` dict) on the questions `samples` names, run in memory on
    `model` (`HFLM(pretrained=<the model object>)`: no save and reload); the model's training flag is restored."""
    from lm_eval import evaluator
    from lm_eval.models.huggingface import HFLM

    was_training = model.training
    device = next(model.parameters()).device
    try:
        with quiet():
            lm = HFLM(pretrained=model, backend="causal", tokenizer=tokenizer, batch_size=batch_size,
                      device=str(device), max_length=context, add_bos_token=add_bos)
            out = evaluator.evaluate(lm=lm, task_dict=tasks, samples=samples, bootstrap_iters=0, log_samples=False,
                                     verbosity="ERROR")
        reuse_requests(tasks)
    finally:
        model.train(was_training)
    return out


def require_lm_eval():
    try:
        import lm_eval
    except ImportError:
        raise UserError("the mcq and knowledge settings evaluate with lm-evaluation-harness: pip install "
                        "'undo[mcq]' (or pip install lm-eval)") from None
    return lm_eval


def task_accuracy(out: dict, name: str, metric: str = "acc") -> float:
    """A task's (or a group's, e.g. mmlu) accuracy in lm-eval's results (`metric`: acc, or acc_norm)."""
    for section in ("results", "groups"):
        row = (out.get(section) or {}).get(name)
        if row and f"{metric},none" in row:
            return float(row[f"{metric},none"])
    raise UserError(f"lm-eval reported no {metric} for {name!r}; use multiple-choice tasks with an {metric!r} metric")


@contextlib.contextmanager
def quiet():
    """lm-eval's progress bars, warnings and logs are noise next to undo's own progress."""
    previous = {name: logging.getLogger(name).level for name in ("lm-eval", "lm_eval", "datasets")}
    for name in previous:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield  # an exception still propagates (and becomes one line, or keeps its traceback)
    finally:
        for name, level in previous.items():
            logging.getLogger(name).setLevel(level)
