"""Experiment configuration: pydantic models for the YAML file, dotted overrides and a stable hash.

Every field has a default, so an empty file is a complete (general-purpose) experiment; no file at all means the
embedded demo study, `undo/configs/demo.yaml`. A user error in a
config (unknown key, wrong type, value out of range) becomes a `UserError` with one line naming the key path
and the fix; the CLI turns it into exit code 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, model_validator

from undo.errors import UserError

Operation = Literal["add", "sub", "mul", "div"]


class StrictModel(BaseModel):
    """Unknown keys are errors, not silently ignored: a typo must never change an experiment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(StrictModel):
    """A tiny LlamaForCausalLM."""

    layers: int = Field(4, ge=1, le=128, description="number of transformer blocks")
    width: int = Field(128, ge=8, le=16384, description="hidden size")
    heads: int = Field(4, ge=1, le=256, description="attention heads")
    kv_heads: int | None = Field(None, ge=1, description="key/value heads (grouped-query); default = heads")
    mlp_width: int | None = Field(None, ge=1, description="MLP intermediate size; default = 4 * width")
    context: int = Field(128, ge=8, le=131072, description="sequence length in tokens")
    vocab: int = Field(128, ge=8, le=1_000_000, description="embedding rows; >= the tokenizer's size")
    init_std: float = Field(0.02, gt=0, le=1.0, description="std of the normal weight init")

    @model_validator(mode="after")
    def _shapes_fit(self) -> "ModelConfig":
        if self.width % self.heads:
            raise ValueError(f"width ({self.width}) must be a multiple of heads ({self.heads})")
        if (self.width // self.heads) % 2:
            raise ValueError(f"head size width/heads = {self.width // self.heads} must be even (rotary embeddings)")
        if self.kv_heads is not None and self.heads % self.kv_heads:
            raise ValueError(f"heads ({self.heads}) must be a multiple of kv_heads ({self.kv_heads})")
        return self


class ArithmeticConfig(StrictModel):
    """The embedded arithmetic setting: retain = + and -, forget = x and /."""

    name: Literal["arithmetic"] = "arithmetic"
    examples: int = Field(60_000, ge=1, description="documents in the base model's pretraining stream")
    operation_weights: dict[Operation, float] = Field(
        default_factory=lambda: {"add": 1.0, "sub": 1.0, "mul": 1.0, "div": 1.0},
        description="mixture weight of each operation in the base stream",
    )
    word_problem_weight: float = Field(0.3, ge=0, le=1, description="share of word problems (rest: equations)")
    retain: list[Operation] = Field(default_factory=lambda: ["add", "sub"])
    forget: list[Operation] = Field(default_factory=lambda: ["mul", "div"])
    eval_per_cell: int = Field(100, ge=1, le=100_000, description="evaluation items per operation x format")
    eval_formats: list[Literal["equation", "word"]] | None = Field(
        None, min_length=1, description="formats evaluated; null = those the pretraining mixture contains (a "
                                        "format never trained on would only dilute the retain/forget means)")
    eval_seed: int = Field(1_000_003, description="seed of the fixed evaluation sets (separate from training)")
    eval_batch_size: int = Field(256, ge=1)

    @model_validator(mode="after")
    def _split_is_sane(self) -> "ArithmeticConfig":
        for op, weight in self.operation_weights.items():
            if weight < 0:
                raise ValueError(f"operation_weights.{op} must be >= 0, got {weight}")
        if sum(self.operation_weights.values()) <= 0:
            raise ValueError("operation_weights must have a positive weight somewhere")
        if set(self.retain) & set(self.forget):
            raise ValueError(f"retain {self.retain} and forget {self.forget} must not overlap")
        if not self.retain or not self.forget:
            raise ValueError("retain and forget must each name at least one operation")
        return self

    @property
    def evaluated_formats(self) -> list[str]:
        if self.eval_formats is not None:
            return list(self.eval_formats)
        return [fmt for fmt, share in (("equation", 1 - self.word_problem_weight), ("word", self.word_problem_weight))
                if share > 0]


class LanguageConfig(StrictModel):
    """The language setting: retain = one corpus (English in the paper), forget = another (Korean). Each corpus is a
    file (.txt one document per line, .jsonl, .parquet; .xz/.gz read transparently) or a Hugging Face dataset id
    (streamed through `datasets`). Metric: mean next-token cross-entropy on held-out documents of each corpus."""

    name: Literal["language"] = "language"
    retain_corpus: str = Field(description="retain corpus: a file path or a Hugging Face dataset id")
    forget_corpus: str = Field(description="forget corpus: a file path or a Hugging Face dataset id")
    text_field: str = Field("text", description="the text field of JSONL/parquet records and datasets")
    retain_script: Literal["latin", "hangul"] | None = Field(
        "latin", description="the script the retain corpus must be written in (a cheap check); null = no check")
    forget_script: Literal["latin", "hangul"] | None = Field("hangul", description="likewise for the forget corpus")
    max_documents: int = Field(100_000, ge=10, description="documents read from each corpus (the first ones)")
    retain_documents: int = Field(20_000, ge=1, description="retain documents in the base model's pretraining "
                                                            "stream (the oracle trains on exactly these)")
    forget_documents: int = Field(20_000, ge=1, description="forget documents in the base model's stream")
    heldout_documents: int = Field(200, ge=1, description="documents of each corpus held out for evaluation, never "
                                                          "trained on (drawn from eval_seed)")
    eval_documents: int | None = Field(None, ge=1, description="held-out documents evaluated (<= heldout_documents);"
                                                               " null = all of them")
    eval_seed: int = Field(1_000_003, description="seed of the held-out split")
    vocab_size: int = Field(4096, ge=259, le=1_000_000, description="byte-level BPE vocabulary (model.vocab must be "
                                                                    ">= this)")
    tokenizer_sample_chars: int = Field(2_000_000, ge=1000, description="characters the tokenizer trains on, "
                                                                        "half from each corpus")
    eval_batch_size: int = Field(32, ge=1)

    @model_validator(mode="after")
    def _eval_fits(self) -> "LanguageConfig":
        if self.eval_documents is not None and self.eval_documents > self.heldout_documents:
            raise ValueError(f"eval_documents ({self.eval_documents}) must be <= heldout_documents "
                             f"({self.heldout_documents})")
        return self


SETTING_CLASSES: dict[str, type[BaseModel]] = {"arithmetic": ArithmeticConfig, "language": LanguageConfig}


def _setting_name(value: Any) -> str:
    return (value.get("name", "arithmetic") if isinstance(value, dict) else getattr(value, "name", "arithmetic"))


SettingConfig = Annotated[Union[Annotated[ArithmeticConfig, Tag("arithmetic")],
                                Annotated[LanguageConfig, Tag("language")]],
                          Discriminator(_setting_name, custom_error_type="setting_name",
                                        custom_error_message="setting.name must be 'arithmetic' or 'language'")]


class TrainConfig(StrictModel):
    """Knobs of the one training engine (every stage uses these)."""

    batch_size: int = Field(8, ge=1, description="sequences per micro-batch")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step")
    lr: float = Field(1e-3, gt=0, le=10)
    schedule: Literal["cosine", "constant"] = "cosine"
    warmup_steps: int = Field(100, ge=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="cosine floor as a fraction of lr")
    weight_decay: float = Field(0.1, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = Field(1e-8, gt=0)
    clip: float | None = Field(1.0, gt=0, description="max global gradient norm; null disables clipping")
    epochs: float = Field(1.0, gt=0, description="passes over the packed data (sets the step count)")
    max_steps: int | None = Field(None, ge=1, description="hard cap on optimizer steps")
    eval_every: int = Field(500, ge=1, description="evaluate every N optimizer steps (and at the end)")
    checkpoint_every: int = Field(250, ge=1, description="save a resumable checkpoint every N steps")
    log_every: int = Field(10, ge=1, description="write a train line to metrics.jsonl every N steps")
    mixed_precision: Literal["no", "bf16", "fp16"] = Field(
        "no", description="autocast on GPUs; keep 'no' on CPUs, where bf16 is slower than fp32")

    @model_validator(mode="after")
    def _betas_in_range(self) -> "TrainConfig":
        if not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must each be in [0, 1), got {list(self.betas)}")
        return self


class PretrainConfig(StrictModel):
    train: TrainConfig = Field(default_factory=TrainConfig)
    oracle: bool = Field(True, description="also pretrain the data-filtered oracle (retain data only)")


class MethodSweep(StrictModel):
    """One unlearning method and the grid to sweep: every learning rate x every combination of list-valued knobs."""

    method: str = Field(description="a registered objective: grad_ascent, grad_diff, maxent, rmu, npo, simnpo, "
                                    "repnoise")
    lrs: list[float] = Field(default_factory=lambda: [1e-4, 3e-4, 1e-3], min_length=1)
    knobs: dict[str, Any] = Field(default_factory=dict, description="method knobs; a list value is swept")
    sam_rho: float | None = Field(None, gt=0, description="wrap the method in SAM with this radius")

    @model_validator(mode="after")
    def _method_exists(self) -> "MethodSweep":
        from undo.objectives import check_knobs, unlearning_methods

        if self.method not in unlearning_methods():
            raise ValueError(f"unknown method {self.method!r}; use one of: {', '.join(unlearning_methods())}")
        check_knobs(self.method, self.knobs)
        if any(lr <= 0 for lr in self.lrs):
            raise ValueError(f"lrs must all be > 0, got {self.lrs}")
        return self

    @property
    def label(self) -> str:
        return f"{self.method}+sam" if self.sam_rho else self.method


class SelectionRule(StrictModel):
    """How a sweep picks its teacher: the lowest forget metric among runs that keep enough retain performance."""

    min_retain_fraction: float = Field(0.95, ge=0, le=1, description="retain metric >= this x the base model's")


class UnlearnConfig(StrictModel):
    methods: list[MethodSweep] = Field(default_factory=lambda: [
        MethodSweep(method="grad_diff", lrs=[3e-4, 1e-3], knobs={"retain_weight": 15.0}),  # the paper's λ
        MethodSweep(method="maxent", lrs=[3e-4, 1e-3]),
        MethodSweep(method="rmu", lrs=[1e-3, 3e-3]),
    ])
    steps: int = Field(100, ge=1, description="optimizer steps per run (one forget + one retain batch each)")
    batch_size: int = Field(8, ge=1)
    clip: float | None = Field(1.0, gt=0)
    examples: int = Field(20_000, ge=1, description="labelled documents generated for each of forget and retain")
    eval_every: int = Field(50, ge=1)
    selection: SelectionRule = Field(default_factory=SelectionRule)


class AttackConfig(StrictModel):
    """Relearning attack: plain CE fine-tuning of a model for `steps` steps at a constant LR, for each LR of a grid;
    the attacker's best LR at each evaluated step is what counts (the defender faces the worst case)."""

    data: Literal["forget", "mixture"] = Field(
        "mixture", description="'forget': forget-operation documents only; 'mixture': the pretraining mixture "
                               "(all operations, as the paper attacked arithmetic)")
    # The paper swept ~10 LRs spanning 1e-6..1e-3 for 500 steps on much larger models. Our ~1M-parameter CPU
    # models take (and survive) larger steps, and every LR is a full fine-tuning run on a 2-core CPU, so the grid
    # is shifted up and shorter: 6 values, half a decade apart, 1e-5..3e-3.
    lrs: list[float] = Field(default_factory=lambda: [1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3], min_length=1)
    steps: int = Field(500, ge=1, description="attack steps per LR (the paper's 500)")
    eval_every: int = Field(20, ge=1, description="evaluate forget/retain every N steps, from step 0")
    batch_size: int = Field(8, ge=1)
    budgets: list[int] = Field(default_factory=lambda: [40, 500], min_length=1,
                               description="attack steps at which to report snapshots (each <= steps)")
    max_retain_drop: float | None = Field(
        None, ge=0, description="an attack point counts only if retain accuracy fell at most this much from "
                                "step 0; null = no cap")
    eval_per_cell: int = Field(50, ge=1, le=100_000,
                               description="evaluation items per operation x format during the attack (cheaper "
                                           "than the setting's, since every LR evaluates many times)")
    examples: int = Field(20_000, ge=1, description="documents generated for the attack's data stream")

    @model_validator(mode="after")
    def _grid_and_budgets(self) -> "AttackConfig":
        if any(lr <= 0 for lr in self.lrs):
            raise ValueError(f"lrs must all be > 0, got {self.lrs}")
        if len(set(self.lrs)) != len(self.lrs):
            raise ValueError(f"lrs must not repeat, got {self.lrs}")
        bad = [b for b in self.budgets if not 0 <= b <= self.steps]
        if bad:
            raise ValueError(f"budgets {bad} must be between 0 and steps ({self.steps}); raise steps or lower them")
        return self


class DistillTrainConfig(TrainConfig):
    """The engine's knobs with distillation's defaults: a step cap, and evaluation (the stop rule) every 250 steps."""

    max_steps: int | None = Field(3000, ge=1, description="hard cap on distillation steps")
    eval_every: int = Field(250, ge=1, description="evaluate, and ask the stop rule, every N optimizer steps")


class DistillConfig(StrictModel):
    """Distillation of a (frozen) teacher into a student on the unlabelled pretraining mixture (Unlearn-and-Distill,
    UNDO), with a stop rule: stop at the first evaluation where the student's retain accuracy is within
    `stop_tolerance` of the teacher's; `train.max_steps` caps it and `train.eval_every` is the rule's interval."""

    init: Literal["random", "noised", "model"] = Field(
        "random", description="student init: 'random' (fresh), 'noised' (shrink-and-perturb of the teacher, UNDO), "
                              "'model' (a given checkpoint, e.g. the base model for oracle matching)")
    alphas: list[float] = Field(default_factory=lambda: [0.2, 0.4, 0.6, 0.8], min_length=1,
                                description="UNDO sweep of shrink-and-perturb strengths (init 'noised')")
    beta: float = Field(0.1, ge=0, description="scale of the Xavier noise in shrink-and-perturb")
    student_model: ModelConfig | None = Field(
        None, description="architecture of a 'random' student; null = the same as `model`")
    train: DistillTrainConfig = Field(default_factory=DistillTrainConfig)
    stop_tolerance: float = Field(
        0.05, description="stop when the student's retain is within this of the teacher's: absolute for "
                                "accuracy (arithmetic), relative for cross-entropy (language: CE gap / teacher CE)")
    temperature: float = Field(1.0, gt=0, description="softmax temperature of the forward KL")
    examples: int = Field(60_000, ge=1, description="documents generated for the distillation stream")

    @model_validator(mode="after")
    def _alphas_in_range(self) -> "DistillConfig":
        bad = [a for a in self.alphas if not 0.0 <= a <= 1.0]
        if bad:
            raise ValueError(f"alphas must each be in [0, 1], got {bad}")
        if self.train.max_steps is None:
            raise ValueError("train.max_steps must be set: it caps distillation when the stop rule never fires")
        return self


class StudyConfig(StrictModel):
    """What `undo run` builds on top of the stages: which teachers are distilled, the UNDO sweep, oracle matching,
    which models are attacked, and the seeds the downstream stages are repeated with."""

    seeds: list[int] | None = Field(
        None, min_length=1, description="seeds for unlearning, distillation and attacks (each repeats them; the "
                                        "pretrained base and oracle are shared, from `seed`); null = [seed]")
    distill_methods: list[str] | None = Field(
        None, description="method families (as in unlearn.methods, e.g. 'maxent' or 'grad_diff+sam') whose chosen "
                          "teacher is distilled into a random-init student (Unlearn-and-Distill); null = those of "
                          "the paper's grad_diff, maxent, rmu that are swept")
    undo_method: str | None = Field(
        None, description="the method family whose teacher gets the UNDO sweep (distill.alphas, distill.beta); "
                          "null = maxent if swept (the paper's choice), else no UNDO; 'none' = no UNDO")
    oracle_matching: bool = Field(
        True, description="distil the oracle into the base model and into a random init, then attack both "
                          "(needs pretrain.oracle)")
    attack_teachers: list[str] | None = Field(
        None, description="method families whose chosen teacher is attacked (the unlearn-only baselines); null = "
                          "every swept family")
    attack_sweep_points: bool = Field(
        False, description="attack every unlearning sweep point (fuller Pareto plots), not only the teachers")


class ExperimentConfig(StrictModel):
    seed: int = Field(0, description="derives every RNG: data order, init, noise, generation")
    run_dir: str = Field("runs/demo", description="where artifacts go")
    setting: SettingConfig = Field(default_factory=ArithmeticConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig)
    unlearn: UnlearnConfig = Field(default_factory=UnlearnConfig)
    attack: AttackConfig = Field(default_factory=AttackConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)
    study: StudyConfig = Field(default_factory=StudyConfig)

    @model_validator(mode="after")
    def _study_names_sweeps(self) -> "ExperimentConfig":
        families = [m.label for m in self.unlearn.methods]
        undo_method = self.study.undo_method if self.study.undo_method != "none" else None
        for where, name in [*(("study.distill_methods", m) for m in self.study.distill_methods or []),
                            *(("study.attack_teachers", m) for m in self.study.attack_teachers or []),
                            ("study.undo_method", undo_method)]:
            if name is not None and name not in families:
                raise ValueError(f"{where}: {name!r} is not swept in unlearn.methods; use one of: "
                                 f"{', '.join(dict.fromkeys(families))}")
        if self.setting.name == "language" and self.model.vocab < self.setting.vocab_size:
            raise ValueError(f"model.vocab ({self.model.vocab}) must be >= setting.vocab_size "
                             f"({self.setting.vocab_size}), the tokenizer's size")
        for i, sweep in enumerate(self.unlearn.methods):  # a block index past the model fails here, not mid-study
            for layer in _layer_knob_values(sweep):
                if not 0 <= layer < self.model.layers:
                    raise ValueError(f"unlearn.methods.{i}: {sweep.method} layer {layer} is out of range for a "
                                     f"{self.model.layers}-block model; set knobs.layer to 0..{self.model.layers - 1}")
        return self

    @property
    def seeds(self) -> list[int]:
        return self.study.seeds or [self.seed]

    @property
    def distilled_families(self) -> list[str]:
        """Families whose teacher gets Unlearn-and-Distill (see StudyConfig.distill_methods)."""
        families = list(dict.fromkeys(m.label for m in self.unlearn.methods))
        if self.study.distill_methods is not None:
            return list(self.study.distill_methods)
        return [f for f in families if f in ("grad_diff", "maxent", "rmu")]

    @property
    def undo_family(self) -> str | None:
        """The family whose teacher gets the UNDO alpha sweep (see StudyConfig.undo_method)."""
        if self.study.undo_method == "none":
            return None
        if self.study.undo_method is not None:
            return self.study.undo_method
        return "maxent" if any(m.label == "maxent" for m in self.unlearn.methods) else None


def _layer_knob_values(sweep: MethodSweep) -> list[int]:
    """The block indices a sweep's `layer` knob takes (its default when unset), for methods that have one."""
    import inspect

    from undo.objectives import OBJECTIVES

    parameter = inspect.signature(OBJECTIVES[sweep.method].__init__).parameters.get("layer")
    if parameter is None:
        return []
    value = sweep.knobs.get("layer", parameter.default)
    return [v for v in (value if isinstance(value, list) else [value]) if isinstance(v, int)]


# ----------------------------------------------------------------------------------------------------------
# Loading, overrides, hashing


DEMO_STUDY = Path(__file__).parent / "configs" / "demo.yaml"


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read a YAML file (None = the embedded demo study), apply `key.path=value` overrides, validate."""
    raw: dict[str, Any] = {}
    embedded = path is None
    if embedded:
        path = DEMO_STUDY
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"config file not found: {path} (give the path of an experiment YAML file)")
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise UserError(f"config file {path} is not valid YAML{where}: {getattr(err, 'problem', err)}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise UserError(f"config file {path} must hold a mapping of keys at the top, got {type(loaded).__name__}")
        raw = loaded
    for item in overrides or []:
        apply_override(raw, item)
    return validate_config(raw, source="the embedded demo study" if embedded else str(path))


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Set `a.b.c=value` in a nested dict; the value is parsed as YAML (so 2 is an int, [1, 2] a list)."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise UserError(f"override {item!r} must look like key.path=value, e.g. model.layers=2")
    parts = key.strip().split(".")
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise UserError(f"override {item!r}: {part} is a value, not a section")
        node = child
    try:
        node[parts[-1]] = yaml.safe_load(text)
    except yaml.YAMLError:
        node[parts[-1]] = text


def validate_config(raw: dict[str, Any], source: str = "config") -> ExperimentConfig:
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as err:
        raise UserError(describe_validation_error(err, ExperimentConfig, source)) from None


def describe_validation_error(err: ValidationError, root: type[BaseModel], source: str) -> str:
    """One line: the key path of the first problem, what is wrong, and how to fix it."""
    errors = err.errors()
    first = errors[0]
    raw_loc = tuple(first["loc"])
    setting_class = None
    if raw_loc[:1] == ("setting",) and len(raw_loc) > 1 and raw_loc[1] in SETTING_CLASSES:
        setting_class = SETTING_CLASSES[raw_loc[1]]  # pydantic names the union member; users never write it
        raw_loc = raw_loc[:1] + raw_loc[2:]
    loc = [str(part) for part in raw_loc]
    path = ".".join(loc) or "(top level)"
    kind = first["type"]
    if kind == "extra_forbidden":
        allowed = (_allowed_keys(setting_class, raw_loc[1:-1]) if setting_class
                   else _allowed_keys(root, raw_loc[:-1]))
        hint = f"unknown key; remove it or use one of: {', '.join(allowed)}" if allowed else "unknown key; remove it"
    elif kind == "value_error":
        hint = first["msg"].removeprefix("Value error, ")
    else:
        hint = f"{first['msg']} (got {first.get('input')!r})"
    more = f" (+{len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    where = f"{path}: " if loc else ""  # a cross-section check names its own keys
    return f"invalid config in {source}: {where}{hint}{more}"


def _allowed_keys(root: type[BaseModel], loc: tuple) -> list[str]:
    model: Any = root
    for part in loc:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        model = field.annotation
    fields = getattr(model, "model_fields", None)
    return sorted(fields) if fields else []


def config_hash(config: BaseModel) -> str:
    """A stable short hash of a resolved config (or any sub-section): key order and formatting don't matter."""
    from undo.artifacts import stable_hash

    return stable_hash(config.model_dump(mode="json"))


def dump_yaml(config: BaseModel) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
