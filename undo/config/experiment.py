"""The experiment: every config section in one pydantic model, plus the cross-section checks."""

from __future__ import annotations

import inspect
from typing import Any, Literal

from pydantic import Field, SerializeAsAny, field_validator, model_validator

from undo.config.sections import (
    TRAINING_STAGE_KINDS, AttackConfig, DistillConfig, DistributedConfig, MethodSweep, ModelConfig, OracleConfig,
    PretrainConfig, Seed, StageWorkers, StudyConfig, TrackingConfig, UnlearnConfig,
)
from undo.core.checkpoints import check_checkpoint, local_context, local_depth
from undo.schema.strict import StrictModel
from undo.objectives import OBJECTIVES
from undo.settings import DEFAULT_SETTING, SettingConfig, parse_setting


class ExperimentConfig(StrictModel):
    seed: Seed = Field(0, description="derives every RNG: data order, init, noise, generation")
    run_dir: str = Field("runs/demo", description="where artifacts go")
    # Any registered setting's section (undo.settings); `name` picks it, default arithmetic.
    setting: SerializeAsAny[SettingConfig] = Field(default_factory=lambda: parse_setting({}, DEFAULT_SETTING))
    model: ModelConfig = Field(default_factory=ModelConfig)
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig)
    oracle: OracleConfig = Field(default_factory=OracleConfig)
    unlearn: UnlearnConfig = Field(default_factory=UnlearnConfig)
    attack: AttackConfig = Field(default_factory=AttackConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)
    study: StudyConfig = Field(default_factory=StudyConfig)
    distributed: DistributedConfig = Field(default_factory=DistributedConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    resources: dict[TRAINING_STAGE_KINDS, StageWorkers] = Field(
        default_factory=dict, description="per stage kind, the Ray Train workers a stage runs on (`undo run "
                                          "--executor ray` only; other executors run each stage in one process or "
                                          "in torchrun's)")

    @field_validator("setting", mode="before")
    @classmethod
    def _registered_setting(cls, value: Any) -> SettingConfig:
        return parse_setting(value, DEFAULT_SETTING)

    @model_validator(mode="after")
    def _study_names_sweeps(self) -> "ExperimentConfig":
        families = [m.label for m in self.unlearn.methods]
        repeated = sorted({f for f in families if families.count(f) > 1})
        if repeated:
            raise ValueError(f"unlearn.methods: {repeated[0]!r} is swept twice; give one entry with all its lrs and "
                             "knob lists")
        if self.setting.score.relative and self.unlearn.selection.min_retain_fraction == 0:
            raise ValueError("unlearn.selection.min_retain_fraction must be > 0 for a cross-entropy setting (the "
                             "retain CE may grow by 1/fraction); use 0.5 to keep half")
        undo_method = self.study.undo_method if self.study.undo_method != "none" else None
        for where, name in [*(("study.distill_methods", m) for m in self.study.distill_methods or []),
                            *(("study.attack_teachers", m) for m in self.study.attack_teachers or []),
                            ("study.undo_method", undo_method)]:
            if name is not None and name not in families:
                raise ValueError(f"{where}: {name!r} is not swept in unlearn.methods; use one of: "
                                 f"{', '.join(dict.fromkeys(families))}")
        self.setting.check_experiment(self)
        self._check_rounds()
        if self.oracle.pretrained is not None and self.pretrain.oracle:
            raise ValueError("pretrain.oracle: true pretrains an oracle here, but oracle.pretrained names one; keep "
                             "one of them")
        if self.model.pretrained is not None:
            check_checkpoint(self.model.pretrained)
        if self.oracle.pretrained is not None:
            check_checkpoint(self.oracle.pretrained, role="oracle.pretrained")
        self._fit_context_to_checkpoints()
        depth = self.model.layers if self.model.pretrained is None else local_depth(self.model.pretrained)
        for i, sweep in enumerate(self.unlearn.methods):  # a block index past the model fails here, not mid-study
            for layer in _layer_knob_values(sweep):
                if depth is not None and not 0 <= layer < depth:
                    raise ValueError(f"unlearn.methods.{i}: {sweep.method} layer {layer} is out of range for a "
                                     f"{depth}-block model; set knobs.layer to 0..{depth - 1}")
        return self

    def _check_rounds(self) -> None:
        """Rounds run the UNDO family's sweep, and each names parts of the forget side this setting has."""
        if not self.study.rounds:
            return
        if self.undo_family is None:
            raise ValueError("study.rounds runs study.undo_method's sweep in rounds, but the study has no UNDO "
                             "method; set study.undo_method to a swept family")
        parts = self.setting.forget_parts()
        for i, round_ in enumerate(self.study.rounds):
            if round_.forget is None:
                continue
            if not parts:
                raise ValueError(f"study.rounds.{i}: the {self.setting.name} setting's forget side has no parts to "
                                 "choose from; give the round a forget_data file instead")
            unknown = [p for p in round_.forget if p not in parts]
            if unknown:
                raise ValueError(f"study.rounds.{i}: {unknown[0]!r} is not part of the forget side; use some of: "
                                 f"{', '.join(parts)}")

    def _fit_context_to_checkpoints(self) -> None:
        """A checkpoint is trained and evaluated at most at the length it was built for. Left out, `model.context`
        is the shortest local checkpoint's length (config.json), capped at the default (a 131072-position model
        would otherwise make every batch enormous); set longer than a checkpoint's, it is an error."""
        lengths = [(role, source, local_context(source)) for role, source in
                   (("model.pretrained", self.model.pretrained), ("oracle.pretrained", self.oracle.pretrained))
                   if source is not None]
        lengths = [(role, source, n) for role, source, n in lengths if n is not None]
        if not lengths:
            return
        field = ModelConfig.model_fields["context"]
        smallest = next(m.ge for m in field.metadata if getattr(m, "ge", None) is not None)
        role, source, shortest = min(lengths, key=lambda item: item[2])
        if "context" not in self.model.model_fields_set:
            if shortest < smallest:
                raise ValueError(f"{role}: {source} was built for {shortest} positions, fewer than the {smallest} "
                                 "tokens of undo's shortest context; use a checkpoint with a longer context")
            self.model.context = min(shortest, field.default)
        elif self.model.context > shortest:
            raise ValueError(f"model.context ({self.model.context}) is longer than the {shortest} positions {role} "
                             f"({source}) was built for (its config.json); set model.context to {shortest} or less, "
                             f"or leave it out to use {min(shortest, field.default)}")

    @property
    def oracle_source(self) -> Literal["pretrained", "trained"] | None:
        """Where the data-filtered oracle comes from: a checkpoint the user names, pretraining here, or nowhere."""
        if self.oracle.pretrained is not None:
            return "pretrained"
        trained = self.pretrain.oracle if self.pretrain.oracle is not None else self.model.pretrained is None
        return "trained" if trained else None

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
    parameter = inspect.signature(OBJECTIVES[sweep.method].__init__).parameters.get("layer")
    if parameter is None:
        return []
    value = sweep.knobs.get("layer", parameter.default)
    return [v for v in (value if isinstance(value, list) else [value]) if isinstance(v, int)]
