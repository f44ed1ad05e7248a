"""The verifiable tasks of the ``pubswap`` job: short prompts with one exact answer each.

Four task types, one family per client in the heterogeneous split (arithmetic, string
manipulation, simple logic, comparison). Every instance is generated from a seeded numpy stream;
the test, public and private sets are drawn from separate streams and the public and private sets
never repeat a test question (nor the fixed one-shot example of their type).

Two task types have small instance pools: ``upper`` (the 36 :data:`WORDS`) and ``parity``
(1..59). Once a draw has used up its type's pool (every instance already taken or excluded),
:func:`make_items` goes on with the type's extension (:data:`EXTENSIONS`: the words of
:data:`MORE_WORDS`, the numbers 60..99), so the default setting (16 test, 2 public and 32 private
prompts per type) has enough distinct instances. The extension is only reached where the pool
alone would have run out, so every set the pool alone could produce is unchanged.

How a prompt reaches the model (:func:`render`, ``prompt_style``):
- ``oneshot`` (default): SmolLM2's ChatML with one solved example of the same task type (a fixed
  instance, :data:`EXAMPLES`, never drawn into the sets), then the question, then the opening of
  the assistant's reply (the item's ``prefill``, e.g. ``"7 + 5 ="`` or ``"The larger number
  is"``), so the completion starts with the answer;
- ``plain``: the question alone as the user turn and an empty assistant turn (the first version
  of the job; SmolLM2-135M-Instruct then almost never starts its reply with the bare answer:
  see the job's README for the measured rates).

Usage::

    items = make_items("add", n=8, rng=np.random.default_rng(0))
    items[0].prompt, items[0].prefill, items[0].answer  # ("Compute 7 + 5. ...", "7 + 5 =", "12")
    render(items[0])                                     # the full one-shot ChatML prompt
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np

TASKS = ("add", "upper", "parity", "larger")

WORDS = (
    "cat", "dog", "sun", "tree", "book", "milk", "fish", "bird", "lamp", "door", "rain", "star",
    "cake", "ship", "moon", "hat", "cup", "pen", "box", "car", "bus", "key", "map", "egg",
    "leaf", "rock", "bell", "coat", "frog", "kite", "nest", "ring", "sock", "tent", "wolf", "yarn",
)  # fmt: skip

# Drawn only once every instance of WORDS is taken (see make_items); none is in WORDS or "pig".
MORE_WORDS = (
    "ant", "bat", "bee", "cow", "fox", "hen", "owl", "pot", "jar", "bag", "bed", "cap", "fan",
    "gum", "ink", "jam", "log", "mug", "net", "oak", "pan", "rug", "saw", "toy", "van", "web",
    "arm", "ear", "leg", "lip", "bowl", "boat", "coin", "desk", "drum", "fork", "gift", "hand",
    "horn", "lock", "nail", "pear", "rope", "salt", "seed", "shoe", "soap", "sand", "wall", "wing",
)  # fmt: skip


@dataclass(frozen=True)
class Item:
    task: str
    prompt: str  # the user turn
    answer: str  # the exact expected answer (what :func:`~.rewards.answer_of` must return)
    prefill: str = ""  # the opening of the assistant's reply in the ``oneshot`` style


def _add_item(a: int, b: int) -> Item:
    return Item(
        "add", f"Compute {a} + {b}. Reply with just the number.", str(a + b), f"{a} + {b} ="
    )


def _upper_item(w: str) -> Item:
    return Item(
        "upper", f"Write the word {w} in capital letters. Reply with just the word.", w.upper(),
        f"In capital letters, {w} is",
    )  # fmt: skip


def _parity_item(n: int) -> Item:
    return Item(
        "parity", f"Is {n} an even number? Reply with yes or no.", "yes" if n % 2 == 0 else "no",
        "Answer:",
    )  # fmt: skip


def _larger_item(a: int, b: int) -> Item:
    return Item(
        "larger", f"Which is larger, {a} or {b}? Reply with just the number.", str(max(a, b)),
        "The larger number is",
    )  # fmt: skip


def _add(rng: np.random.Generator) -> Item:
    a, b = (int(v) for v in rng.integers(1, 20, size=2))
    return _add_item(a, b)


def _upper(rng: np.random.Generator) -> Item:
    return _upper_item(str(WORDS[int(rng.integers(len(WORDS)))]))


def _parity(rng: np.random.Generator) -> Item:
    return _parity_item(int(rng.integers(1, 60)))


def _larger(rng: np.random.Generator) -> Item:
    a, b = (int(v) for v in rng.choice(np.arange(10, 100), size=2, replace=False))
    return _larger_item(a, b)


GENERATORS: dict[str, Callable[[np.random.Generator], Item]] = {
    "add": _add, "upper": _upper, "parity": _parity, "larger": _larger,
}  # fmt: skip


def _more_upper(rng: np.random.Generator) -> Item:
    return _upper_item(str(MORE_WORDS[int(rng.integers(len(MORE_WORDS)))]))


def _more_parity(rng: np.random.Generator) -> Item:
    return _parity_item(int(rng.integers(60, 100)))


# What a task type draws from once its GENERATORS pool is used up (make_items); add (361
# instances) and larger (8010) have none.
EXTENSIONS: dict[str, Callable[[np.random.Generator], Item]] = {
    "upper": _more_upper, "parity": _more_parity,
}  # fmt: skip


@cache
def pool(task: str) -> frozenset[str]:
    """Every prompt the task's GENERATORS entry can produce."""
    if task == "add":
        return frozenset(_add_item(a, b).prompt for a in range(1, 20) for b in range(1, 20))
    if task == "upper":
        return frozenset(_upper_item(w).prompt for w in WORDS)
    if task == "parity":
        return frozenset(_parity_item(n).prompt for n in range(1, 60))
    if task == "larger":
        r = range(10, 100)
        return frozenset(_larger_item(a, b).prompt for a in r for b in r if a != b)
    raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}")


# The solved example shown before every question of its type in the ``oneshot`` style.
EXAMPLES: dict[str, Item] = {
    "add": _add_item(3, 4), "upper": _upper_item("pig"), "parity": _parity_item(9),
    "larger": _larger_item(31, 64),
}  # fmt: skip

STYLES = ("oneshot", "plain")


def render(item: Item, style: str = "oneshot") -> str:
    """The full prompt text of ``item`` in SmolLM2's ChatML (no system turn); the completion the
    model writes after it is what the reward reads."""
    from training.research.smollm import chat_prompt

    if style == "plain":
        return chat_prompt(item.prompt)
    if style != "oneshot":
        raise ValueError(f"unknown prompt style {style!r}; known: {', '.join(STYLES)}")
    ex = EXAMPLES[item.task]
    shot = [("user", ex.prompt), ("assistant", f"{ex.prefill} {ex.answer}".strip())]
    return chat_prompt(item.prompt, before=shot, prefill=item.prefill)


def make_items(
    task: str, *, n: int, rng: np.random.Generator, exclude: Sequence[Item] = ()
) -> list[Item]:
    """``n`` distinct instances of ``task`` not among ``exclude`` (by prompt) and not the task's
    one-shot example.

    Draws from the task's pool (:data:`GENERATORS`) and, only once every pool instance is taken
    or excluded, from its extension (:data:`EXTENSIONS`), on the same ``rng``: a call the pool
    alone can satisfy returns exactly what it returned before the extensions existed."""
    seen = {it.prompt for it in exclude} | {EXAMPLES[task].prompt}
    left = len(pool(task) - seen)  # pool instances still available
    generate = GENERATORS[task]
    out: list[Item] = []
    for _ in range(1000 * n + 1000):
        if len(out) == n:
            break
        if left == 0:  # pool used up
            if task not in EXTENSIONS:
                break  # no more instances exist
            generate, left = EXTENSIONS[task], -1  # -1: drawing from the extension from now on
        item = generate(rng)
        if item.prompt not in seen:
            seen.add(item.prompt)
            out.append(item)
            if left > 0:
                left -= 1
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
