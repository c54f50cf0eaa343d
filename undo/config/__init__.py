"""Experiment configuration: pydantic models for the YAML file (`sections.py`, `experiment.py`; each setting
declares its own section in `undo/settings/`), loading with dotted overrides and one-line errors, and a stable hash
(`loading.py`).

Every field has a default, so an empty file is a complete (general-purpose) experiment; no file at all means the
embedded demo study, `undo/configs/demo.yaml`.
"""

from undo.config.experiment import ExperimentConfig  # noqa: F401
from undo.config.loading import (  # noqa: F401
    DEMO_STUDY, apply_override, config_hash, describe_validation_error, dump_yaml, load_config, validate_config,
)
from undo.config.sections import (  # noqa: F401
    AttackConfig, DistillConfig, DistillTrainConfig, DistributedConfig, MethodSweep, ModelConfig, OracleConfig,
    PretrainConfig, SelectionRule,
    StudyConfig, TrainConfig, UnlearnConfig, UnlearnRound,
)
