"""Tiny Llama models from config; saved and loaded as Hugging Face directories (safetensors only)."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, PreTrainedModel

from undo.config import ModelConfig
from undo.core.errors import UserError


def llama_config(cfg: ModelConfig, *, pad_id: int, eos_id: int) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=cfg.vocab,
        hidden_size=cfg.width,
        intermediate_size=cfg.mlp_width or 4 * cfg.width,
        num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads,
        num_key_value_heads=cfg.kv_heads or cfg.heads,
        max_position_embeddings=cfg.context,
        initializer_range=cfg.init_std,
        tie_word_embeddings=False,
        pad_token_id=pad_id,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
    )


def build_model(cfg: ModelConfig, *, seed: int, pad_id: int, eos_id: int, tokenizer_size: int) -> LlamaForCausalLM:
    """A freshly initialised model (normal init with std `cfg.init_std`), reproducible from `seed`."""
    if cfg.vocab < tokenizer_size:
        raise UserError(f"model.vocab = {cfg.vocab} is smaller than the tokenizer ({tokenizer_size} tokens); "
                        f"set model.vocab >= {tokenizer_size}")
    # Seed a private generator for the init; the global RNG state is restored so callers stay reproducible.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(llama_config(cfg, pad_id=pad_id, eos_id=eos_id))
    return model


def save_model(model: PreTrainedModel, directory: Path, tokenizer=None) -> None:
    """Write an HF directory that `AutoModelForCausalLM.from_pretrained(directory)` opens (safetensors)."""
    model.save_pretrained(directory, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)


def load_model(directory: str | Path) -> PreTrainedModel:
    """Open a saved model directory; never unpickles (safetensors only), never runs remote code."""
    directory = Path(directory)
    if not (directory / "config.json").is_file():
        raise UserError(f"no model at {directory}: expected an HF model directory with config.json "
                        "(an artifact's model/ folder)")
    if not any(directory.glob("*.safetensors")):
        raise UserError(f"{directory} has no .safetensors weights; undo only loads safetensors checkpoints")
    try:
        return AutoModelForCausalLM.from_pretrained(directory, use_safetensors=True, trust_remote_code=False)
    except (OSError, ValueError) as err:
        raise UserError(f"could not load the model at {directory}: {str(err).splitlines()[0]}") from None


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
