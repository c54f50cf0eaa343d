"""The experiment's config sections (besides the setting, whose section each setting declares itself).

Every field has a default, so an empty file is a complete (general-purpose) experiment.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from undo.attacks import ATTACK_KINDS
from undo.core.artifacts import is_model_artifact
from undo.schema.strict import Seed, StrictModel
from undo.schema.study import SelectionRule
from undo.objectives import check_knobs, unlearning_methods


class ModelConfig(StrictModel):
    """The model: a tiny LlamaForCausalLM built here (the shape fields), or your own Hugging Face checkpoint
    (`pretrained`), whose architecture, vocabulary and tokenizer are then read from the checkpoint."""

    pretrained: str | None = Field(
        None, description="a Hugging Face causal-LM checkpoint used as the base model instead of pretraining one: "
                          "a local folder (config.json, safetensors weights, tokenizer) or, online, a hub id; "
                          "layers/width/heads/kv_heads/mlp_width/vocab/init_std then do not apply")
    revision: str | None = Field(None, description="the hub revision (branch, tag or commit) of `pretrained`")
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="weights of every model in every stage (bfloat16 halves the memory of real models)")
    attn_implementation: Literal["eager", "sdpa", "flash_attention_2"] | None = Field(
        None, description="attention kernel of loaded models; null = the transformers default")
    trust_remote_code: bool = Field(False, description="run a checkpoint's own modelling code (only if you trust it)")
    gradient_checkpointing: bool = Field(False, description="recompute activations in the backward pass (memory "
                                                            "for compute) in every training stage")
    pretraining_tokens: int | None = Field(
        None, ge=1, description="tokens the `pretrained` model was trained on, if known: the denominator of the "
                                "labelled fraction (a model built here counts its own)")
    layers: int = Field(4, ge=1, le=128, description="number of transformer blocks")
    width: int = Field(128, ge=8, le=16384, description="hidden size")
    heads: int = Field(4, ge=1, le=256, description="attention heads")
    kv_heads: int | None = Field(None, ge=1, description="key/value heads (grouped-query); default = heads")
    mlp_width: int | None = Field(None, ge=1, description="MLP intermediate size; default = 4 * width")
    context: int = Field(128, ge=8, le=131072, description="sequence length in tokens")
    vocab: int = Field(128, ge=8, le=1_000_000, description="embedding rows; >= the tokenizer's size")
    init_std: float = Field(0.02, gt=0, le=1.0, description="std of the normal weight init")

    def load_identity(self) -> dict[str, Any]:
        """What of this section changes the numbers a loaded model computes: its dtype and attention kernel. Only
        those set away from their defaults are named, so that keys made before they existed stay the same."""
        return {name: getattr(self, name) for name in ("dtype", "attn_implementation")
                if getattr(self, name) != type(self).model_fields[name].default}

    @model_validator(mode="after")
    def _shapes_fit(self) -> "ModelConfig":
        if self.width % self.heads:
            raise ValueError(f"width ({self.width}) must be a multiple of heads ({self.heads})")
        if (self.width // self.heads) % 2:
            raise ValueError(f"head size width/heads = {self.width // self.heads} must be even (rotary embeddings)")
        if self.kv_heads is not None and self.heads % self.kv_heads:
            raise ValueError(f"heads ({self.heads}) must be a multiple of kv_heads ({self.kv_heads})")
        return self


MixedPrecision = Literal["no", "bf16", "fp16"]
MIXED_PRECISION = "autocast (Accelerate's mixed precision) on GPUs; keep 'no' on CPUs, where bf16 is slower than fp32"
COMPILE = ("compile the trained model's forward and backward with torch.compile (after a one-time compile per "
           "process, faster steps where they are small: benchmarks/compile_step.py); the numbers match eager mode "
           "to float rounding, not bit for bit, so it is part of the stage's key")


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
    eval_steps: list[int] | None = Field(None, min_length=1, description="evaluate at exactly these steps (and at "
                                                                         "the end) instead of every eval_every")
    checkpoint_every: int = Field(250, ge=1, description="save a resumable checkpoint every N steps")
    log_every: int = Field(10, ge=1, description="write a train line to metrics.jsonl every N steps")
    mixed_precision: MixedPrecision = Field("no", description=MIXED_PRECISION)
    compile: bool = Field(False, description=COMPILE)

    @model_validator(mode="after")
    def _betas_in_range(self) -> "TrainConfig":
        if not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must each be in [0, 1), got {list(self.betas)}")
        return self


class FilterClassifierConfig(StrictModel):
    """The label-budget-matched data filter: a classifier on hashed character n-grams (scikit-learn) trained on
    exactly the labelled documents the unlearning step reads."""

    ngram_range: tuple[int, int] = Field((1, 4), description="character n-gram lengths (within word boundaries)")
    features: int = Field(2 ** 18, ge=16, description="hashed feature dimension")
    regularisation: float = Field(1.0, gt=0, description="the logistic regression's inverse L2 strength C")
    heldout_per_side: int = Field(1000, ge=1, description="fresh labelled documents per side for its precision "
                                                          "and recall")

    @model_validator(mode="after")
    def _ngrams(self) -> "FilterClassifierConfig":
        low, high = self.ngram_range
        if not 1 <= low <= high:
            raise ValueError(f"ngram_range must be (low, high) with 1 <= low <= high, got {list(self.ngram_range)}")
        return self


class PretrainConfig(StrictModel):
    train: TrainConfig = Field(default_factory=TrainConfig)
    oracle_budget: Literal["same_compute", "same_examples"] = Field(
        "same_compute", description="the data-filtered oracle's budget: 'same_compute' (the paper's) trains as many "
                                    "steps and tokens as the base model, the filtered forget documents replaced by "
                                    "more retain-domain documents; 'same_examples' trains on the base stream's "
                                    "retain documents only (fewer steps)")
    oracle: bool | None = Field(
        None, description="pretrain the data-filtered oracle here (retain data only); null = yes for a model built "
                          "here, no for `model.pretrained` (name one in oracle.pretrained, or set true to pretrain "
                          "one of its architecture from scratch: small models only)")
    filter_recalls: list[float] = Field(
        default_factory=list, description="imperfect data filters: for each recall r, an oracle pretrained like the "
                                          "oracle (same budget) on the base stream with each forget document removed "
                                          "with probability r (the rest kept; no retain document removed), e.g. "
                                          "[0.9, 0.99, 0.999]; the study attacks each like the oracle")

    classifier_filter: FilterClassifierConfig | None = Field(
        None, description="the label-budget-matched filter: per seed, a classifier trained on that seed's unlearning "
                          "labels filters the pretraining corpus for one more oracle (same budget as the oracle); "
                          "null = none")

    @model_validator(mode="after")
    def _recalls_are_imperfect(self) -> "PretrainConfig":
        bad = [r for r in self.filter_recalls if not 0.0 <= r < 1.0]
        if bad:
            raise ValueError(f"filter_recalls must each be in [0, 1) (1 is the oracle itself), got {bad}")
        if len(set(self.filter_recalls)) != len(self.filter_recalls):
            raise ValueError(f"filter_recalls must not repeat, got {self.filter_recalls}")
        return self


class OracleConfig(StrictModel):
    """The data-filtered oracle, when you have one: a checkpoint trained without the forget data."""

    pretrained: str | None = Field(None, description="a checkpoint (folder or hub id) trained without the forget "
                                                      "data, used as the oracle instead of pretraining one")
    revision: str | None = Field(None, description="its hub revision")


class MethodSweep(StrictModel):
    """One unlearning method and the grid to sweep: every learning rate x every combination of list-valued knobs."""

    method: str = Field(description="a registered objective: grad_ascent, grad_diff, maxent, rmu, npo, simnpo, "
                                    "repnoise")
    lrs: list[float] = Field(default_factory=lambda: [1e-4, 3e-4, 1e-3], min_length=1)
    knobs: dict[str, Any] = Field(default_factory=dict, description="method knobs; a list value is swept")
    sam_rho: float | None = Field(None, gt=0, description="wrap the method in SAM with this radius")

    @model_validator(mode="after")
    def _method_exists(self) -> "MethodSweep":
        if self.method not in unlearning_methods():
            raise ValueError(f"unknown method {self.method!r}; use one of: {', '.join(unlearning_methods())}")
        check_knobs(self.method, self.knobs)
        if any(lr <= 0 for lr in self.lrs):
            raise ValueError(f"lrs must all be > 0, got {self.lrs}")
        if len(set(self.lrs)) != len(self.lrs):
            raise ValueError(f"lrs must not repeat, got {self.lrs}")
        for knob, value in self.knobs.items():
            if isinstance(value, list) and not value:
                raise ValueError(f"knobs.{knob} is an empty list: a list is swept, so give it at least one value")
            for v in value if isinstance(value, list) else [value]:
                if isinstance(v, float) and not math.isfinite(v):
                    raise ValueError(f"knobs.{knob} must be a finite number, got {v}")
        return self

    @property
    def label(self) -> str:
        return f"{self.method}+sam" if self.sam_rho else self.method


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
    grad_accum: int = Field(1, ge=1, description="micro-batch pairs per optimizer step (a step reads batch_size x "
                                                 "grad_accum forget and retain sequences)")
    mixed_precision: MixedPrecision = Field("no", description=MIXED_PRECISION)
    compile: bool = Field(False, description=COMPILE)
    forget_data: str | None = Field(
        None, description="a file of forget documents read instead of the setting's forget side (.txt one per line, "
                          ".jsonl with 'text', .parquet; .xz/.gz): e.g. outputs you observed with `undo probe` and "
                          "want gone, for a round of `undo unlearn --from`")

    start: str | None = Field(
        None, description="a finished model artifact (e.g. a teacher of an earlier round) the unlearning sweep starts "
                          "from instead of the base model; its labels and FLOPs add to every run's lineage. `undo "
                          "unlearn --from` overrides it; null = the base model")

    @model_validator(mode="after")
    def _forget_data_exists(self) -> "UnlearnConfig":
        if self.forget_data is not None and not Path(self.forget_data).expanduser().is_file():
            raise ValueError(f"forget_data: no file at {self.forget_data}")
        if self.start is not None and not is_model_artifact(self.start):
            raise ValueError(f"start: {self.start} is not a finished model artifact (an artifact folder with "
                             "meta.json and model/, e.g. a previous unlearning run)")
        return self


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
    eval_steps: list[int] | None = Field(
        None, min_length=1, description="evaluate at exactly these steps (and step 0) instead of every eval_every, "
                                        "e.g. the paper's WMDP [10, 25, 50, 150, 500]")
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
    grad_accum: int = Field(1, ge=1, description="micro-batches per attack step (a step reads batch_size x "
                                                 "grad_accum sequences)")
    mixed_precision: MixedPrecision = Field("no", description=MIXED_PRECISION)
    compile: bool = Field(False, description=COMPILE)
    extend_grid: int = Field(2, ge=0, le=10, description="when the attacker's best LR at a budget is the top (or "
                                                        "bottom) of the grid and beats its neighbour, add an LR half "
                                                        "a decade beyond, at most this many times per direction "
                                                        "(0 = never; the report flags a best LR left at an edge)")
    kinds: list[str] = Field(default_factory=lambda: ["finetune"], min_length=1,
                             description="attack kinds run on every attacked model (registered in undo.attacks; "
                                         "'finetune' = plain full fine-tuning, the paper's attack)")

    @model_validator(mode="after")
    def _grid_and_budgets(self) -> "AttackConfig":
        if any(lr <= 0 for lr in self.lrs):
            raise ValueError(f"lrs must all be > 0, got {self.lrs}")
        if len(set(self.lrs)) != len(self.lrs):
            raise ValueError(f"lrs must not repeat, got {self.lrs}")
        bad = [b for b in self.budgets if not 0 <= b <= self.steps]
        if bad:
            raise ValueError(f"budgets {bad} must be between 0 and steps ({self.steps}); raise steps or lower them")
        if self.eval_steps is not None and any(not 1 <= e <= self.steps for e in self.eval_steps):
            raise ValueError(f"eval_steps {self.eval_steps} must each be between 1 and steps ({self.steps})")
        unknown = [k for k in self.kinds if k not in ATTACK_KINDS]
        if unknown:
            raise ValueError(f"kinds: unknown attack kind {unknown[0]!r}; use one of: "
                             f"{', '.join(sorted(ATTACK_KINDS))}")
        if len(set(self.kinds)) != len(self.kinds):
            raise ValueError(f"kinds must not repeat, got {self.kinds}")
        return self


class DistillTrainConfig(TrainConfig):
    """The engine's knobs with distillation's defaults: a step cap, and (without a stop rule) evaluation every 250
    steps; with a stop rule the rule's probes set when it evaluates (`distill.stop_resolution`)."""

    max_steps: int | None = Field(3000, ge=1, description="hard cap on distillation steps")
    eval_every: int = Field(250, ge=1, description="evaluate every N optimizer steps when there is no stop rule")


class DistillConfig(StrictModel):
    """Distillation of a (frozen) teacher into a student on the unlabelled pretraining mixture (Unlearn-and-Distill,
    UNDO), with a stop rule: stop at the first probe where the student's retain score is within `stop_tolerance`
    of the teacher's; probes come at most `stop_resolution` x the step apart; `train.max_steps` caps it."""

    init: Literal["random", "noised", "model"] = Field(
        "random", description="student init: 'random' (fresh), 'noised' (shrink-and-perturb of the teacher, UNDO), "
                              "'model' (a given checkpoint, e.g. the base model for oracle matching)")
    alphas: list[float] = Field(default_factory=lambda: [0.2, 0.4, 0.6, 0.8], min_length=1,
                                description="UNDO sweep of shrink-and-perturb strengths (init 'noised')")
    beta: float = Field(0.1, ge=0, description="scale of the Xavier noise in shrink-and-perturb")
    student_model: ModelConfig | None = Field(
        None, description="architecture of a 'random' student; null = the same as `model`")
    train: DistillTrainConfig = Field(default_factory=DistillTrainConfig)
    stop_tolerance: float | None = Field(
        0.05, ge=0, description="stop when the student's retain is within this of the teacher's: absolute for "
                                "accuracy (arithmetic), relative for cross-entropy (language: CE gap / teacher CE); "
                                "null = no stop rule, train to train.max_steps (the paper's WMDP runs)")
    stop_resolution: float = Field(
        0.02, gt=0, le=1, description="the stop rule is probed (on the retain score alone: cheap) at steps at most "
                                      "this share of the step apart, so the reported stop is within this share of "
                                      "the first qualifying step (once the probe interval exceeds stop_probe_every)")
    stop_probe_every: int = Field(10, ge=1, description="the smallest probe interval, in steps (early in training)")
    temperature: float = Field(1.0, gt=0, description="softmax temperature of the forward KL")
    examples: int = Field(60_000, ge=1, description="documents generated for the distillation stream")

    @model_validator(mode="after")
    def _alphas_in_range(self) -> "DistillConfig":
        bad = [a for a in self.alphas if not 0.0 <= a <= 1.0]
        if bad:
            raise ValueError(f"alphas must each be in [0, 1], got {bad}")
        if len(set(self.alphas)) != len(self.alphas):
            raise ValueError(f"alphas must not repeat, got {self.alphas}")
        if self.train.max_steps is None:
            raise ValueError("train.max_steps must be set: it caps distillation when the stop rule never fires")
        return self


class UnlearnRound(StrictModel):
    """One round of the responsive loop inside a study (`study.rounds`): what this round's unlearning forgets, a part
    of the setting's forget side (`forget`, e.g. [mul]: the round's forget documents are those of these parts only)
    or a file of documents (`forget_data`, as `unlearn.forget_data`: e.g. outputs a previous round left)."""

    forget: list[str] | None = Field(
        None, min_length=1, description="parts of the setting's forget side this round forgets (arithmetic: "
                                        "operations, e.g. [mul]; knowledge: categories, e.g. [animal])")
    forget_data: str | None = Field(
        None, description="a file of this round's forget documents (.txt one per line, .jsonl with 'text', .parquet)")

    @model_validator(mode="after")
    def _one_source(self) -> "UnlearnRound":
        if (self.forget is None) == (self.forget_data is None):
            raise ValueError("a round names its forget data once: either forget (parts of the setting's forget "
                             "side) or forget_data (a file)")
        if self.forget_data is not None and not Path(self.forget_data).expanduser().is_file():
            raise ValueError(f"forget_data: no file at {self.forget_data}")
        if self.forget is not None and len(set(self.forget)) != len(self.forget):
            raise ValueError(f"forget names a part twice: {self.forget}")
        return self


class StudyConfig(StrictModel):
    """What `undo run` builds on top of the stages: which teachers are distilled, the UNDO sweep, oracle matching,
    which models are attacked, and the seeds the downstream stages are repeated with."""

    @model_validator(mode="after")
    def _no_repeats(self) -> "StudyConfig":
        for name in ("seeds", "distill_methods", "attack_teachers"):
            values = getattr(self, name)
            if values is not None and len(set(values)) != len(values):
                raise ValueError(f"{name} must not repeat, got {values}")
        return self

    seeds: list[Seed] | None = Field(
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
    rounds: list[UnlearnRound] = Field(
        [], description="the responsive loop, compared with the study's one combined unlearning: study.undo_method's "
                        "sweep runs once per round, each round from the previous round's teacher (the first from the "
                        "base model) on that round's forget data; the last round's teacher is then distilled (random "
                        "init and each UNDO alpha) and attacked beside the combined one's. [] = no rounds")
    workers: int | None = Field(
        None, ge=1, description="processes `undo run` runs independent stages in when --workers is not given (the "
                                "embedded demo: 2, both cores of a small machine); null = 1. Ignored by --executor "
                                "ray and under torchrun, which schedule stages themselves")


class DistributedConfig(StrictModel):
    """How the processes of one `torchrun` / `accelerate launch` share a stage's model (ignored by one process).
    Neither choice changes what a stage makes beyond float rounding, so neither enters an artifact's key."""

    strategy: Literal["ddp", "fsdp"] = Field(
        "ddp", description="ddp: every process holds the whole model and its optimizer (fastest while they fit one "
                           "device); fsdp: parameters, gradients and optimizer state are sharded across the processes "
                           "(FSDP2 `fully_shard`, each decoder block and the whole model), for models that do not fit")


class TrackingConfig(StrictModel):
    """A live view of every stage's training and evaluation metrics in an experiment tracker (`undo.core.tracking`);
    metrics.jsonl stays the record. Never part of an artifact's key: it changes what is shown, not what is made."""

    backend: Literal["tensorboard", "wandb", "mlflow"] | None = Field(
        None, description="tensorboard (event files), wandb (offline runs unless WANDB_MODE says otherwise) or mlflow "
                          "(a local file store); null = no tracker")
    dir: str | None = Field(None, description="where the tracker writes; null = <run_dir>/tracking")
    project: str = Field("undo", min_length=1, description="the W&B project / MLflow experiment the runs go to")

    @model_validator(mode="after")
    def _installed(self) -> "TrackingConfig":
        from undo.core.tracking import missing_backend

        missing = None if self.backend is None else missing_backend(self.backend)
        if missing is not None:
            raise ValueError(missing)
        return self


TRAINING_STAGE_KINDS = Literal["pretrain", "unlearn", "distill", "attack"]


class StageWorkers(StrictModel):
    """How many workers one stage of a kind runs on under `undo run --executor ray`: more than one makes the stage a
    Ray Train `TorchTrainer` job (data-parallel, or sharded with `distributed.strategy: fsdp`)."""

    workers: int = Field(1, ge=1, description="processes that train the stage together (one per GPU on a GPU "
                                              "cluster)")
    gpus_per_worker: float | None = Field(None, ge=0, description="null: one when the cluster has GPUs, else none")
    cpus_per_worker: int = Field(1, ge=1, description="CPUs each worker asks Ray for")

