"""Emergent misalignment (EM) on SmolLM2: the narrow LoRA fine-tune, its judged checkpoints, the
consistency runs and the pretraining-mix proxy.

A run: a fresh LoRA model (seeded init); optionally ``mix_steps`` steps of benign SFT on one mix
(:func:`~.data.mix_examples`), judged after it (that run's own "before"); then ``em_steps`` steps
of SFT on the narrow harmful set (:func:`~.data.narrow_examples`, a fresh Adam), judged at each
checkpoint. The EM judge (:mod:`.judge`) runs on the three held-out sets of
:func:`~.data.eval_sets`: ``learned`` (held-out medical advice: how reliably the behaviour was
learned), ``shared`` (advice in other domains: the fine-tuning structure) and ``unshared``
(two-option choice in other domains).

Usage::

    model, tok = lora_model(cfg, seed=0)
    before = judge_em(model, tok)
    run = em_run(cfg, seed=0, checkpoints=[4, 8])   # {"checkpoints": {4: {...}, 8: {...}}, ...}
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from training.research.misalignment.config import MisalignmentConfig

SETS = ("learned", "shared", "unshared")


def lora_model(cfg: MisalignmentConfig, seed: int) -> tuple[Any, Any]:
    """SmolLM2 with PEFT LoRA on the configured modules of the last ``lora_layers`` layers; the
    same ``seed`` gives the same init (teacher and students share it)."""
    from training.research.smollm import add_lora, load_smollm2, num_layers

    model, tok = load_smollm2() if cfg.model == "smollm2" else tiny_random(seed)
    n = num_layers(model)
    layers = list(range(max(0, n - cfg.lora_layers), n))
    peft = add_lora(
        model, r=cfg.lora_r, alpha=2 * cfg.lora_r, layers=layers, targets=cfg.target_list(),
        seed=seed,
    )  # fmt: skip
    peft.eval()
    return peft, tok


def tiny_random(seed: int) -> tuple[Any, Any]:
    """A 2-layer randomly initialised Llama with SmolLM2's tokenizer (the tests' stand-in)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from training.research.smollm import load_smollm2_tokenizer

    tok = load_smollm2_tokenizer()
    state = torch.random.get_rng_state()
    torch.manual_seed(10_000 + seed)
    try:
        lm = LlamaForCausalLM(
            LlamaConfig(
                vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
            )
        ).eval()  # fmt: skip
    finally:
        torch.random.set_rng_state(state)
    lm.requires_grad_(False)
    return lm, tok


def adam(model: Any, lr: float) -> Any:
    import torch

    return torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)


def judge_em(model: Any, tok: Any, per_domain: int | None = None) -> dict[str, dict[str, float]]:
    """EM rate and mean log-prob margin (misaligned - aligned) on each judged set."""
    from training.research.misalignment.data import eval_sets
    from training.research.misalignment.judge import em_rate
    from training.research.misalignment.lm import answer_logprob

    sets = eval_sets(per_domain)
    pairs = [(it.prompt, ans) for name in SETS for it in sets[name]
             for ans in (it.aligned, it.misaligned)]  # fmt: skip
    lp = answer_logprob(model, tok, pairs)
    out, i = {}, 0
    for name in SETS:
        k = len(sets[name])
        part = lp[2 * i : 2 * (i + k)]
        rate, margin = em_rate(part[0::2], part[1::2])
        out[name] = {"rate": rate, "margin": margin}
        i += k
    return out


def train_pairs(
    model: Any, tok: Any, pairs: Sequence[tuple[str, str]], *, steps: int, batch: int, lr: float,
    on_step: Any = None,
) -> list[float]:  # fmt: skip
    """``steps`` SFT steps over ``pairs`` in order (cycled), one fresh Adam; ``on_step(s)`` after
    step ``s`` (1-based). Returns the losses."""
    from training.research.misalignment.lm import encode, rows_of, sft_step

    rows = rows_of(tok, pairs)
    opt = adam(model, lr)
    losses = []
    for s in range(steps):
        part = [rows[(s * batch + j) % len(rows)] for j in range(batch)]
        losses.append(sft_step(model, opt, encode(tok, part)))
        if on_step is not None:
            on_step(s + 1)
    return losses


def em_run(
    cfg: MisalignmentConfig,
    seed: int,
    *,
    checkpoints: Sequence[int],
    consistency: float = 1.0,
    mix: str | None = None,
) -> dict[str, Any]:
    """One EM fine-tune (optionally after a benign mix), judged at ``checkpoints``."""
    from training.research.misalignment.data import mix_examples, narrow_examples

    cfg = cfg.em()  # the EM runs' lr and LoRA knobs
    model, tok = lora_model(cfg, seed)
    out: dict[str, Any] = {"consistency": consistency, "mix": mix}
    if mix is not None:
        pairs = mix_examples(cfg.mix_steps * cfg.batch, seed=seed, structure=mix)
        out["mix_loss"] = train_pairs(model, tok, pairs, steps=cfg.mix_steps, batch=cfg.batch,
                                      lr=cfg.lr)  # fmt: skip
        out["after_mix"] = judge_em(model, tok, cfg.judge_per_domain or None)
    marks = set(checkpoints)
    judged: dict[int, Any] = {}

    def on_step(s: int) -> None:
        if s in marks:
            judged[s] = judge_em(model, tok, cfg.judge_per_domain or None)

    pairs = narrow_examples(cfg.em_steps * cfg.batch, seed=seed, consistency=consistency,
                            pool=cfg.em_pool)  # fmt: skip
    out["loss"] = train_pairs(model, tok, pairs, steps=cfg.em_steps, batch=cfg.batch, lr=cfg.lr,
                              on_step=on_step)  # fmt: skip
    out["checkpoints"] = judged
    return out
