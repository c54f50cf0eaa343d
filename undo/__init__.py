"""undo: robust capability removal from language models (Unlearn-and-Distill, UNDO).

Importing the package imports nothing heavy: `undo --help` and config checks start in a fraction of a second, and
torch is imported by the parts that train or evaluate. The Python API (`undo.session`: `load_study`, `unlearn`,
`distill`, `attack`, `evaluate`) is reached from here and imported on first use (PEP 562).
"""

import importlib

__version__ = "0.1.0"

# The names `undo.<name>` gives, all from undo.session; importing it (and torch) waits until one is asked for.
_SESSION = ("Attacked", "Distilled", "Study", "Unlearned", "attack", "distill", "evaluate", "load_study", "unlearn")


def __getattr__(name: str):
    if name in _SESSION:
        # By name, at run time: the package itself sits below every layer (core reads its version), so it must not
        # import the top layer statically (tests/test_architecture.py reads static imports).
        return getattr(importlib.import_module("undo.session"), name)
    raise AttributeError(f"module 'undo' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_SESSION])
