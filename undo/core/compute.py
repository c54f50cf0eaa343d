"""FLOP accounting.

The formula (Kaplan et al. 2020; Hoffmann et al. 2022, appendix F), per token of a sequence of length T:

    forward  = 2 * N_matmul + 4 * n_layers * T * d_attn
    training = 3 * forward            (the backward pass costs twice the forward)

N_matmul counts the weights of every nn.Linear (attention projections, MLP, LM head); the input embedding is a
lookup and costs nothing, norms are negligible. 4 * n_layers * T * d_attn is the attention itself (scores Q.K^T
and the weighted sum of V, 2 * T * d_attn FLOPs each), counted over the full T x T square as Chinchilla does,
i.e. without discounting the causal mask. d_attn = heads * head_dim (= width for our models).
A teacher that only runs forward (distillation) costs `forward` per token.
"""

from __future__ import annotations

from torch import nn


def matmul_parameters(model: nn.Module) -> int:
    return sum(module.weight.numel() for module in model.modules() if isinstance(module, nn.Linear))


def attention_width(model: nn.Module) -> tuple[int, int]:
    """(n_layers, heads * head_dim) read from an HF config."""
    config = model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return config.num_hidden_layers, config.num_attention_heads * head_dim


def forward_flops_per_token(model: nn.Module, seq_len: int) -> int:
    layers, d_attn = attention_width(model)
    return 2 * matmul_parameters(model) + 4 * layers * seq_len * d_attn


def train_flops_per_token(model: nn.Module, seq_len: int) -> int:
    return 3 * forward_flops_per_token(model, seq_len)
