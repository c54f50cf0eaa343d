"""undo: robust capability removal from language models (Unlearn-and-Distill, UNDO)."""

import torch

__version__ = "0.1.0"

# Tiny models on CPU hit denormal floats (small weights times small activations); flushing them to zero
# makes training up to 10x faster and changes no result that matters.
torch.set_flush_denormal(True)
