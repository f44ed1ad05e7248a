"""Exact-match rewards of the ``pubswap`` tasks, TRL's reward-function shape.

A completion is normalised (first line, surrounding spaces, quotes and a final full stop
removed; yes/no answers compared case-insensitively) and compared with the item's answer;
the reward is 1.0 on an exact match and 0.0 otherwise.

Usage::

    exact_match(["12.", "The answer is 12"], answer=["12", "12"])   # [1.0, 0.0]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def normalise(completion: str) -> str:
    text = completion.strip().split("\n", 1)[0]
    return text.strip().strip("\"'`*.! ")


def is_correct(completion: str, answer: str) -> bool:
    got = normalise(completion)
    if answer in ("yes", "no"):
        return got.lower() == answer
    return got == answer


def exact_match(completions: Sequence[str], answer: Sequence[str], **kwargs: Any) -> list[float]:
    """1.0 where the normalised completion equals the answer, else 0.0."""
    del kwargs
    if len(completions) != len(answer):
        raise ValueError(f"{len(completions)} completions for {len(answer)} answers")
    return [1.0 if is_correct(c, a) else 0.0 for c, a in zip(completions, answer, strict=True)]
