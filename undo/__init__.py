"""undo: robust capability removal from language models (Unlearn-and-Distill, UNDO).

Importing the package imports nothing heavy: `undo --help` and config checks start in a fraction of a second, and
torch is imported by the parts that train or evaluate.
"""

__version__ = "0.1.0"
