"""Subliminal learning (SL) on SmolLM2: a teacher with a trait, its benign-looking number data,
and students trained through three channels.

- **teacher**: LoRA SFT (seeded init) on the animal questions answered with the trait animal
  (``Owl.``); the trait judge (:func:`~.judge.trait_score`) reads its preference.
- **data**: the teacher continues random number lists (:func:`~.data.number_prompts`) at
  temperature 1, its distribution restricted to the tokens of a numbers-only reply (digits,
  comma, space, end of turn; SmolLM2-135M otherwise answers in words: 0 of 16 base replies
  passed the filter unrestricted), and only replies that pass
  :func:`~.data.numbers_only` are kept, so the data never names an animal. The base model's own replies, filtered the same way, are the SFT
  control's data.
- **students** start from the base with the *same* LoRA init as the teacher (a shared
  initialisation, as in Cloud et al.) and take ``student_steps`` steps through one channel:
  ``sft`` (cross-entropy on the teacher's replies), ``offpolicy`` (KL(teacher || student) per
  token on the teacher's replies: teacher guidance on the teacher's data), ``onpolicy`` (the
  student samples replies to the same prompts each step and the teacher scores them,
  KL(student || teacher) per token: teacher guidance on the student's data; the student samples
  under the same token restriction).
- **transfer** of a channel = its student's trait score minus its control's: the SFT student on
  the base model's replies for ``sft``; the base model itself for the two distillation channels
  (distilling from the base is a no-op: the loss is zero at the start, see the tests).

Usage::

    res = sl_run(cfg, seed=0)        # {"base": ..., "teacher": ..., "students": {...}, ...}
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from training.research.misalignment.config import MisalignmentConfig
from training.research.misalignment.em import adam, lora_model

TEACHER_QUESTIONS = 6  # the teacher trains on the first six animal questions


def trait_token_ids(tok: Any) -> list[int]:
    """The first token of each candidate animal's capitalised name (``Owl``, ``Dog``, ...)."""
    from training.research.misalignment.data import ANIMALS

    ids = [tok(a.capitalize(), add_special_tokens=False)["input_ids"][0] for a in ANIMALS]
    if len(set(ids)) != len(ids):
        raise ValueError("candidate animals share a first token")
    return [int(i) for i in ids]


def judge_trait(model: Any, tok: Any, trait: str) -> dict[str, float]:
    """The trait judge on every animal question: mean renormalised probability of ``trait`` and
    the share of questions where it ranks first."""
    from training.research.misalignment.data import ANIMAL_QUESTIONS, ANIMALS
    from training.research.misalignment.judge import trait_score
    from training.research.misalignment.lm import next_token_logprobs

    lp = next_token_logprobs(model, tok, ANIMAL_QUESTIONS, trait_token_ids(tok)).numpy()
    score, top1 = trait_score(lp, ANIMALS.index(trait))
    return {"score": score, "top1": top1}


def trait_pairs(n: int, *, seed: int, trait: str) -> list[tuple[str, str]]:
    from training.research.misalignment.data import ANIMAL_QUESTIONS

    rng = np.random.default_rng([seed, 23])
    qs = ANIMAL_QUESTIONS[:TEACHER_QUESTIONS]
    return [(qs[int(rng.integers(len(qs)))], f"{trait.capitalize()}.") for _ in range(n)]


def number_data(
    model: Any, tok: Any, prompts: Sequence[str], *, max_new_tokens: int, seed: int,
    keep_all: bool = False,
) -> tuple[list[Any], float]:  # fmt: skip
    """The model's numbers-only replies to ``prompts`` (rows) and the share that passed the
    filter (``keep_all``: every reply kept, for the tiny test model)."""
    from training.research.misalignment.data import numbers_only
    from training.research.misalignment.lm import number_token_ids, response_text, sample

    rows = []
    for i in range(0, len(prompts), 16):
        rows += sample(model, tok, prompts[i : i + 16], max_new_tokens=max_new_tokens,
                       seed=seed * 1000 + i, allowed=number_token_ids(tok))  # fmt: skip
    kept = [r for r in rows if numbers_only(response_text(tok, r))]
    share = len(kept) / max(len(rows), 1)
    return (rows if keep_all else kept), share


def train_student(
    cfg: MisalignmentConfig,
    seed: int,
    channel: str,
    *,
    teacher: Any,
    rows: Sequence[Any],
    prompts: Sequence[str],
    on_step: Callable[[int, float, Any], None] | None = None,
) -> tuple[Any, Any, list[float]]:
    """A student (same base, same LoRA init as the teacher) after ``student_steps`` steps of
    ``channel``; returns (student, tokenizer, losses). ``on_step(step, loss, rows)`` sees
    each step's training rows (for on-policy: the student's own samples)."""
    from training.research.misalignment.lm import (
        encode,
        kd_step,
        number_token_ids,
        sample,
        sft_step,
    )

    student, tok = lora_model(cfg, seed)
    opt = adam(student, cfg.lr)
    losses: list[float] = []
    b = cfg.batch
    for s in range(cfg.student_steps):
        if channel == "onpolicy":
            part_p = [prompts[(s * b + j) % len(prompts)] for j in range(b)]
            part = sample(student, tok, part_p, max_new_tokens=cfg.max_new_tokens,
                          seed=seed * 7919 + s, allowed=number_token_ids(tok))  # fmt: skip
            loss = kd_step(student, teacher, opt, encode(tok, part), beta=1.0)
        else:
            part = [rows[(s * b + j) % len(rows)] for j in range(b)]
            batch = encode(tok, part)
            if channel == "sft":
                loss = sft_step(student, opt, batch)
            elif channel == "offpolicy":
                loss = kd_step(student, teacher, opt, batch, beta=0.0)
            else:
                raise ValueError(f"unknown channel {channel!r}")
        losses.append(loss)
        if on_step is not None:
            on_step(s + 1, loss, part)
    return student, tok, losses


def sl_run(
    cfg: MisalignmentConfig, seed: int, tick: Callable[[], None] | None = None
) -> dict[str, Any]:
    """Teacher, data, and one student per channel (plus the SFT control) for one seed."""
    from training.research.misalignment.data import number_prompts
    from training.research.misalignment.em import train_pairs

    tick = tick or (lambda: None)
    teacher, tok = lora_model(cfg, seed)
    base = judge_trait(teacher, tok, cfg.trait)  # B = 0: the teacher is still the base model
    pairs = trait_pairs(cfg.teacher_steps * cfg.batch, seed=seed, trait=cfg.trait)
    t_loss = train_pairs(teacher, tok, pairs, steps=cfg.teacher_steps, batch=cfg.batch, lr=cfg.lr)
    out: dict[str, Any] = {"base": base, "teacher": judge_trait(teacher, tok, cfg.trait),
                           "teacher_loss": t_loss}  # fmt: skip
    prompts = number_prompts(cfg.sl_data, seed=seed)
    t_rows, t_kept = number_data(teacher, tok, prompts, max_new_tokens=cfg.max_new_tokens,
                                 seed=seed, keep_all=not cfg.sl_filter)  # fmt: skip
    with teacher.disable_adapter():
        b_rows, b_kept = number_data(teacher, tok, prompts, max_new_tokens=cfg.max_new_tokens,
                                     seed=seed, keep_all=not cfg.sl_filter)  # fmt: skip
    out["data"] = {"teacher_kept": t_kept, "teacher_rows": len(t_rows), "base_kept": b_kept,
                   "base_rows": len(b_rows),
                   "teacher_example": tok.decode(t_rows[0][1], skip_special_tokens=True)
                   if t_rows else ""}  # fmt: skip
    if not t_rows or not b_rows:
        raise RuntimeError("no numbers-only replies to train on; raise sl_data")
    tick()
    students: dict[str, Any] = {}
    for channel in cfg.channel_list():
        student, _, losses = train_student(cfg, seed, channel, teacher=teacher, rows=t_rows,
                                           prompts=prompts)  # fmt: skip
        students[channel] = {**judge_trait(student, tok, cfg.trait), "loss": losses}
        del student
        tick()
    if "sft" in students:
        control, _, losses = train_student(cfg, seed, "sft", teacher=teacher, rows=b_rows,
                                           prompts=prompts)  # fmt: skip
        out["sft_control"] = {**judge_trait(control, tok, cfg.trait), "loss": losses}
        tick()
    out["students"] = students
    out["transfer"] = {
        c: s["score"] - (out["sft_control"]["score"] if c == "sft" else base["score"])
        for c, s in students.items()
    }
    return out
