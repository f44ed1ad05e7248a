"""The verifiable tasks of the ``pubswap`` job: short prompts with one exact answer each.

Four task types, one family per client in the heterogeneous split (arithmetic, string
manipulation, simple logic, comparison). Every instance is generated from a seeded numpy stream;
the test, public and private sets are drawn from separate streams and the public and private sets
never repeat a test question.

Usage::

    items = make_items("add", n=8, rng=np.random.default_rng(0))
    items[0].prompt, items[0].answer          # ("Compute 7 + 5. ...", "12")
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

TASKS = ("add", "upper", "parity", "larger")

WORDS = (
    "cat", "dog", "sun", "tree", "book", "milk", "fish", "bird", "lamp", "door", "rain", "star",
    "cake", "ship", "moon", "hat", "cup", "pen", "box", "car", "bus", "key", "map", "egg",
    "leaf", "rock", "bell", "coat", "frog", "kite", "nest", "ring", "sock", "tent", "wolf", "yarn",
)  # fmt: skip


@dataclass(frozen=True)
class Item:
    task: str
    prompt: str  # the user turn
    answer: str  # the exact expected reply (after :func:`~.rewards.normalise`)


def _add(rng: np.random.Generator) -> tuple[str, str]:
    a, b = (int(v) for v in rng.integers(1, 20, size=2))
    return f"Compute {a} + {b}. Reply with just the number.", str(a + b)


def _upper(rng: np.random.Generator) -> tuple[str, str]:
    w = str(WORDS[int(rng.integers(len(WORDS)))])
    return f"Write the word {w} in capital letters. Reply with just the word.", w.upper()


def _parity(rng: np.random.Generator) -> tuple[str, str]:
    n = int(rng.integers(1, 60))
    return f"Is {n} an even number? Reply with yes or no.", "yes" if n % 2 == 0 else "no"


def _larger(rng: np.random.Generator) -> tuple[str, str]:
    a, b = (int(v) for v in rng.choice(np.arange(10, 100), size=2, replace=False))
    return f"Which is larger, {a} or {b}? Reply with just the number.", str(max(a, b))


GENERATORS: dict[str, Callable[[np.random.Generator], tuple[str, str]]] = {
    "add": _add, "upper": _upper, "parity": _parity, "larger": _larger,
}  # fmt: skip


def make_items(
    task: str, *, n: int, rng: np.random.Generator, exclude: Sequence[Item] = ()
) -> list[Item]:
    """``n`` distinct instances of ``task`` not among ``exclude`` (by prompt)."""
    seen = {it.prompt for it in exclude}
    out: list[Item] = []
    for _ in range(100 * n + 100):
        if len(out) == n:
            break
        prompt, answer = GENERATORS[task](rng)
        if prompt not in seen:
            seen.add(prompt)
            out.append(Item(task, prompt, answer))
    if len(out) < n:
        raise ValueError(f"task {task!r} has fewer than {n} distinct instances outside exclude")
    return out


@dataclass(frozen=True)
class TaskData:
    test: list[Item]  # every task type, the global accuracy's set
    public: list[Item]  # the small shared public set, every task type
    private: list[list[Item]]  # per client: its own task type only


def task_data(
    *, seed: int, clients: int, per_client: int, public_per_task: int, test_per_task: int
) -> TaskData:
    """Client c holds task ``TASKS[c % 4]`` only (the heterogeneous split)."""
    test = [
        it
        for k, t in enumerate(TASKS)
        for it in make_items(t, n=test_per_task, rng=np.random.default_rng([seed, 1, k]))
    ]
    public = [
        it
        for k, t in enumerate(TASKS)
        for it in make_items(
            t, n=public_per_task, rng=np.random.default_rng([seed, 2, k]), exclude=test
        )
    ]
    private = [
        make_items(
            TASKS[c % len(TASKS)],
            n=per_client,
            rng=np.random.default_rng([seed, 3, c]),
            exclude=test + public,
        )  # fmt: skip
        for c in range(clients)
    ]
    return TaskData(test, public, private)
