"""Measure a live model on MMLU-Pro training-split questions: the evaluations it is onboarded with.

Onboarding evaluations must not come from the questions routing is evaluated on, so they are drawn
from the train split only (validation is left for tuning, test for evaluation). Each question (the
same question-plus-lettered-options text Junction embeds) is asked once at temperature 0 with an
instruction to answer with the option letter; the letter the reply states
(``training.data.answers.extract_choice``: "answer is (X)", "Answer: X", a leading or lone option
letter, never the article "A" or the pronoun "I") is compared with the gold answer. Rows follow
the evaluation-log schema and keep the reply (``response``), so a better reader can re-score them.

Usage::

    rows = measure(url, "smollm2-135m", n=160, seed=0)
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import httpx

from training.data.answers import extract_choice

INSTRUCTION = "Answer the multiple-choice question with the letter of the correct option only."
# Splits onboarding questions may come from; test questions are for evaluating routing.
ONBOARDING_SPLITS = ("train",)
_OPTION = re.compile(r"^([A-P])\. ", re.MULTILINE)


def gold_questions(shared_data: Path) -> dict[str, tuple[str, str, str]]:
    """query_id -> (query text, gold letter, category), from one model's raw MMLU-Pro outputs."""
    from training.data.mmlu_pro import query_text, read_model_outputs

    zips = sorted(
        (shared_data / "mmlu_pro").glob("model_outputs_*_5shots.zip"),
        key=lambda p: p.stat().st_size,
    )
    out = read_model_outputs(zips[0])
    return {
        r.question_id: (query_text(r.question, r.options), r.answer, r.category)
        for r in out.records
    }


def options_in(query: str) -> int:
    """How many lettered options ("A. ...") the query text lists."""
    return len(_OPTION.findall(query))


def score_reply(reply: str, query: str, answer: str) -> float:
    """1.0 when the reply states the gold option letter, else 0.0."""
    return float(extract_choice(reply, n_options=options_in(query) or None) == answer)


def measure(url: str, model: str, *, n: int, seed: int, shared_data: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    from training.data.build import DERIVED

    qs = pq.read_table(
        DERIVED / "mmlu_pro" / "questions.parquet", columns=["query_id", "query", "split"]
    ).to_pylist()
    pool_ids = {q["query_id"]: q["query"] for q in qs if q["split"] in ONBOARDING_SPLITS}
    gold = gold_questions(shared_data)
    ids = sorted(i for i in pool_ids if i in gold and gold[i][0].strip() == pool_ids[i].strip())
    random.Random(seed).shuffle(ids)
    rows: list[dict[str, Any]] = []
    with httpx.Client(timeout=120) as client:
        for qid in ids[:n]:
            text, answer, category = gold[qid]
            r = client.post(
                url.rstrip("/") + "/chat/completions",
                json={
                    "model": model,
                    "messages": [
                        {"role": "system", "content": INSTRUCTION},
                        {"role": "user", "content": text},
                    ],
                    "temperature": 0,
                    "max_tokens": 16,
                },
            )
            r.raise_for_status()
            body = r.json()
            reply = body["choices"][0]["message"]["content"] or ""
            usage = body.get("usage") or {}
            rows.append(
                {
                    "query_id": qid,
                    "query": text,
                    "model": model,
                    "score": score_reply(reply, text, answer),
                    "prompt_tokens": int(usage.get("prompt_tokens", 0)),
                    "completion_tokens": int(usage.get("completion_tokens", 0)),
                    "category": category,
                    "response": reply,
                }
            )
    return rows


def write_rows(rows: list[dict[str, Any]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
