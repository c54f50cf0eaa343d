"""Settings: what a study keeps and removes, its data, and how both are measured (see `base.py`).

Each setting is one module that defines its config section and its setting object and registers the config class;
importing the module (below) is its registration.
"""

from undo.settings.base import (  # noqa: F401
    ACCURACY, NEG_CE, SETTINGS, Score, Setting, SettingConfig, TokenizedSetting, build_setting, parse_setting,
    register_setting,
)
from undo.settings import alphabet, arithmetic, knowledge, language, mcq  # noqa: E402,F401  (registers each)

DEFAULT_SETTING = "arithmetic"  # what a config without `setting.name` means


def score_of(name: str) -> Score:
    """The score of the setting registered under `name` (how its metrics compare and print)."""
    return SETTINGS[name].score
