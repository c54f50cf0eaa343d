"""Models: tiny Llamas built from the config, or any Hugging Face causal LM loaded from a checkpoint; saved and loaded
as Hugging Face folders (safetensors only, no remote code unless the user allows it)."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM
from transformers import PretrainedConfig, PreTrainedModel

from undo.core.checkpoints import check_checkpoint
from undo.core import distributed, sharding
from undo.schema.errors import UserError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# Tiny models on CPU hit denormal floats (small weights times small activations); flushing them to zero makes
# training up to 10x faster and changes no result that matters. Every model is built or loaded through here.
torch.set_flush_denormal(True)


class ModelOptions(Protocol):
    """What this module reads of the model's config section (`undo.config.ModelOptions` has these fields): the shape
    of a tiny Llama built here, or the checkpoint to load, and how to load it."""

    pretrained: str | None
    revision: str | None
    dtype: str
    attn_implementation: str | None
    trust_remote_code: bool
    layers: int
    width: int
    heads: int
    kv_heads: int | None
    mlp_width: int | None
    context: int
    vocab: int
    init_std: float


def llama_config(cfg: ModelOptions, *, pad_id: int, eos_id: int) -> LlamaConfig:
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


def build_model(cfg: ModelOptions, *, seed: int, pad_id: int, eos_id: int, tokenizer_size: int) -> LlamaForCausalLM:
    """A freshly initialised tiny Llama (normal init with std `cfg.init_std`), reproducible from `seed`."""
    if cfg.vocab < tokenizer_size:
        raise UserError(f"model.vocab = {cfg.vocab} is smaller than the tokenizer ({tokenizer_size} tokens); "
                        f"set model.vocab >= {tokenizer_size}")
    return fresh_model(llama_config(cfg, pad_id=pad_id, eos_id=eos_id), seed=seed, dtype=cfg.dtype)


def fresh_model(config: PretrainedConfig, *, seed: int, dtype: str = "float32") -> PreTrainedModel:
    """A randomly initialised model of `config`'s architecture, with that architecture's own init, from `seed`."""
    # Seed a private generator for the init; the global RNG state is restored so callers stay reproducible.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoModelForCausalLM.from_config(config, dtype=DTYPES[dtype])


def pretrained_config(cfg: ModelOptions) -> PretrainedConfig:
    """The architecture of `cfg.pretrained` (its config.json)."""
    try:
        return AutoConfig.from_pretrained(cfg.pretrained, revision=cfg.revision,
                                          trust_remote_code=cfg.trust_remote_code)
    except (OSError, ValueError) as err:
        raise UserError(f"model.pretrained: could not read the config of {cfg.pretrained}: "
                        f"{str(err).splitlines()[0]}") from None


def _from_pretrained(source: str | Path, where: str, **options) -> PreTrainedModel:
    """`AutoModelForCausalLM.from_pretrained`, strictly: weights that do not fit the config (missing, unexpected or
    mis-shaped tensors, which transformers would fill with a random init) and unreadable files are one-line errors."""
    try:
        model, info = AutoModelForCausalLM.from_pretrained(source, use_safetensors=True, output_loading_info=True,
                                                           **options)
    except Exception as err:  # noqa: BLE001 - a damaged or foreign checkpoint raises many kinds
        first = (str(err).splitlines() or [""])[0]
        raise UserError(f"{where}: cannot load a causal language model from {source} ({type(err).__name__}: "
                        f"{first}); it may be truncated or not a checkpoint: restore it, or delete the artifact "
                        "folder to recompute it") from None
    problems = {kind: sorted(info.get(kind) or []) for kind in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if any(problems.values()):
        found = "; ".join(f"{len(keys)} {kind.split('_')[0]} (e.g. {keys[0]})"
                          for kind, keys in problems.items() if keys)
        raise UserError(f"{where}: the weights in {source} do not fit its config.json ({found}); config.json and the "
                        "weights must come from one save_pretrained")
    return model


def load_pretrained(source: str, cfg: ModelOptions, *, revision: str | None = None,
                    role: str = "model.pretrained") -> PreTrainedModel:
    """A user's checkpoint (folder or hub id) in the config's dtype and attention kernel."""
    check_checkpoint(source, role)
    return _from_pretrained(source, role, revision=revision, dtype=DTYPES[cfg.dtype],
                            trust_remote_code=cfg.trust_remote_code,
                            **({"attn_implementation": cfg.attn_implementation} if cfg.attn_implementation else {}))


def load_tokenizer(source: str, cfg: ModelOptions, *, revision: str | None = None, role: str = "model.pretrained"):
    """The checkpoint's own tokenizer. undo opens every document with the end-of-text token, so one must exist."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, revision=revision, trust_remote_code=cfg.trust_remote_code)
    except (OSError, ValueError) as err:
        raise UserError(f"{role}: could not load the tokenizer of {source}: {str(err).splitlines()[0]}; save one "
                        "beside the weights (tokenizer.save_pretrained)") from None
    if tokenizer.eos_token_id is None:
        raise UserError(f"{role}: the tokenizer of {source} has no end-of-text (eos) token; undo opens every document "
                        "with it, so give the tokenizer one")
    return tokenizer


def check_vocabulary(model: PreTrainedModel, tokenizer, where: str) -> None:
    """Every token id the tokenizer can produce must have an embedding row."""
    rows = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > rows:
        raise UserError(f"{where}: the tokenizer has {len(tokenizer)} tokens but the model has {rows} embedding rows; "
                        "use the tokenizer the model was trained with")


def save_model(model: PreTrainedModel, directory: Path, tokenizer=None) -> None:
    """Write an HF directory that `AutoModelForCausalLM.from_pretrained(directory)` opens (safetensors). Under several
    processes only the main one writes (they all hold the same weights); a sharded model is first gathered onto it
    (every process must call this then)."""
    if sharding.is_sharded(model):
        state = sharding.full_state_dict(model)
        if not distributed.is_main():
            return
        model = sharding.plain_copy(model, state)
    if not distributed.is_main():
        return
    model.save_pretrained(directory, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)


def load_model(directory: str | Path, cfg: ModelOptions | None = None) -> PreTrainedModel:
    """Open a saved model directory (an artifact's model/ folder) in the config's dtype; never unpickles
    (safetensors only), runs remote code only if the config allows it."""
    directory = Path(directory)
    if not (directory / "config.json").is_file():
        raise UserError(f"no model at {directory}: expected an HF model directory with config.json "
                        "(an artifact's model/ folder)")
    if not any(directory.glob("*.safetensors")):
        raise UserError(f"{directory} has no .safetensors weights; undo only loads safetensors checkpoints")
    options = {"trust_remote_code": False} if cfg is None else {
        "dtype": DTYPES[cfg.dtype], "trust_remote_code": cfg.trust_remote_code,
        **({"attn_implementation": cfg.attn_implementation} if cfg.attn_implementation else {})}
    return _from_pretrained(directory, f"the model at {directory}", **options)


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
