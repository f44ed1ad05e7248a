"""Recorded real answers of the data-set models, for the gateway's clearly labelled replay backend.

A data-set model with no live backend can still answer the data set's own prompts: the replay
store holds each model's real recorded response to every MMLU-Pro test-split question, looked up
by the exact query text (question plus lettered options, as ``mmlu_pro.query_text`` writes it).
It never invents an answer: an unknown prompt gives ``None``.

Usage::

    store = ReplayStore.load()
    store.lookup("Yi-6B", text)   # -> the recorded response, or None
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from training.data.build import DERIVED


def _key(text: str) -> str:
    return hashlib.sha256(text.strip().encode()).hexdigest()


@dataclass(frozen=True)
class ReplayAnswer:
    response: str
    completion_tokens: int


class ReplayStore:
    """(model, prompt text) -> the model's recorded real answer."""

    def __init__(self, answers: dict[tuple[str, str], ReplayAnswer]) -> None:
        self._answers = answers

    @classmethod
    def load(cls, dataset: str = "mmlu_pro", derived: Path = DERIVED) -> ReplayStore:
        folder = derived / dataset
        questions = pq.read_table(folder / "questions.parquet", columns=["query_id", "query"])
        text_of = dict(
            zip(
                questions.column("query_id").to_pylist(),
                questions.column("query").to_pylist(),
                strict=True,
            )
        )
        table = pq.read_table(folder / "replay.parquet").to_pydict()
        answers: dict[tuple[str, str], ReplayAnswer] = {}
        for qid, model, response, ct in zip(
            table["query_id"],
            table["model"],
            table["response"],
            table["completion_tokens"],
            strict=True,
        ):
            answers[(str(model), _key(text_of[qid]))] = ReplayAnswer(str(response), int(ct))
        return cls(answers)

    @property
    def models(self) -> list[str]:
        return sorted({m for m, _ in self._answers})

    def __len__(self) -> int:
        return len(self._answers)

    def lookup(self, model: str, prompt_text: str) -> str | None:
        found = self._answers.get((model, _key(prompt_text)))
        return None if found is None else found.response

    def answer(self, model: str, prompt_text: str) -> ReplayAnswer | None:
        return self._answers.get((model, _key(prompt_text)))
