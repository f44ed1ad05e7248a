"""Exact-match rewards of the ``pubswap`` tasks, TRL's reward-function shape.

The graded answer of a completion (:func:`answer_of`) is its first word: the completion's first
non-empty line, its first whitespace-separated token, with surrounding quotes and ``*`` and
trailing ``. , ; : ! ?`` removed. Words after it (the 5-token responses often run on: ``"82, not
67"``) are not graded. The reward is 1.0 when that word equals the item's answer exactly (yes/no
answers compared case-insensitively) and 0.0 otherwise; nothing else is accepted: ``"The answer
is 12"`` grades ``"The"``, ``"FROGS"`` is not ``"FROG"``, ``"12+3"`` is not ``"12"``.

:func:`first_line` is the rule of the job's first version (the whole first line had to be the
answer), kept for the before/after measurement of :mod:`.probe`.

Usage::

    exact_match([" 12.", " 12, which is", "The answer is 12"], answer=["12"] * 3)  # [1, 1, 0]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

RULES = ("first_word", "first_line")


def first_line(completion: str) -> str:
    text = completion.strip().split("\n", 1)[0]
    return text.strip().strip("\"'`*.! ")


def answer_of(completion: str) -> str:
    """The graded answer: the first word of the first non-empty line (see the module doc)."""
    words = completion.strip().split("\n", 1)[0].split()
    if not words:
        return ""
    return words[0].strip("\"'`*").rstrip(".,;:!?").strip("\"'`*")


def is_correct(completion: str, answer: str, *, rule: str = "first_word") -> bool:
    if rule == "first_word":
        got = answer_of(completion)
    elif rule == "first_line":
        got = first_line(completion)
    else:
        raise ValueError(f"unknown rule {rule!r}; known: {', '.join(RULES)}")
    if answer in ("yes", "no"):
        return got.lower() == answer
    return got == answer


def exact_match(completions: Sequence[str], answer: Sequence[str], **kwargs: Any) -> list[float]:
    """1.0 where the completion's graded answer equals the answer, else 0.0."""
    del kwargs
    if len(completions) != len(answer):
        raise ValueError(f"{len(completions)} completions for {len(answer)} answers")
    return [1.0 if is_correct(c, a) else 0.0 for c, a in zip(completions, answer, strict=True)]
