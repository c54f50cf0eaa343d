"""FLOP accounting, measured on any architecture.

A model's forward FLOPs per token at sequence length T are *counted* by `torch.utils.flop_counter.FlopCounterMode`
on one forward pass of the real shapes (a [1, T] batch), with attention on PyTorch's math kernel so that its two
T x T products are ordinary matmuls the counter sees (a fused CPU kernel would be invisible to it). The count is
cached per architecture and T. Training costs 3 x forward (the backward pass costs twice the forward), a teacher
or frozen reference that only runs forward costs forward.

For a Llama the count equals the formula of Kaplan et al. (2020) and Chinchilla (Hoffmann et al. 2022, appendix F),

    forward = 2 * N_matmul + 4 * n_layers * T * d_attn,

N_matmul the weights of every matmul (attention projections, MLP, LM head; the input embedding is a lookup and
costs nothing, norms are negligible) and 4 * n_layers * T * d_attn the attention itself over the full T x T square
(no causal discount). `analytic_forward_flops_per_token` is that formula, kept as the check of the counter.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode
from transformers.pytorch_utils import Conv1D

from undo.core import sharding


def matmul_parameters(model: nn.Module) -> int:
    """Weights that take part in a matmul: every nn.Linear and GPT-2-style Conv1D (a tied head counts again: it is a
    second matmul with the same weights)."""
    return sum(module.weight.numel() for module in model.modules() if isinstance(module, (nn.Linear, Conv1D)))


def attention_width(model: nn.Module) -> tuple[int, int]:
    """(n_layers, heads * head_dim) read from an HF config."""
    config = model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return config.num_hidden_layers, config.num_attention_heads * head_dim


def analytic_forward_flops_per_token(model: nn.Module, seq_len: int) -> int:
    layers, d_attn = attention_width(model)
    return 2 * matmul_parameters(model) + 4 * layers * seq_len * d_attn


def forward_flops_per_token(model: nn.Module, seq_len: int) -> int:
    """Forward FLOPs per token at sequence length `seq_len`, counted once per architecture and length."""
    config = getattr(model, "config", None)
    # A sharded model (FSDP) is keyed by its own class, so that it shares the count of the same architecture unsharded.
    architecture = (sharding.plain_class(model).__qualname__,
                    config.to_json_string() if config is not None else id(model))
    return _counted_forward_flops(model, architecture, seq_len)


def train_flops_per_token(model: nn.Module, seq_len: int) -> int:
    return 3 * forward_flops_per_token(model, seq_len)


_COUNTS: dict[tuple, int] = {}  # (architecture, seq_len) -> forward FLOPs per token


def _counted_forward_flops(model: nn.Module, architecture: tuple, seq_len: int) -> int:
    key = (architecture, seq_len)
    if key not in _COUNTS:  # a sharded model's forward needs every process: they all count it at the same point
        device = next(model.parameters()).device
        ids = torch.zeros(1, seq_len, dtype=torch.long, device=device)
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
                model(input_ids=ids, use_cache=False)
        finally:
            model.train(was_training)
        total = counter.get_total_flops()
        _COUNTS[key] = -(-total // seq_len)  # per token, rounded up (exact for every architecture seen)
    return _COUNTS[key]
