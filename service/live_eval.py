"""Measure a live model on MMLU-Pro test questions: the evaluations it is onboarded with.

Each question (the same question-plus-lettered-options text Junction embeds) is asked once at
temperature 0 with an instruction to answer with the option letter; the first standalone letter
of the reply is compared with the gold answer. Rows follow the evaluation-log schema.

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

INSTRUCTION = "Answer the multiple-choice question with the letter of the correct option only."
_LETTER = re.compile(r"\b([A-P])\b")


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


def extract_letter(reply: str) -> str | None:
    m = _LETTER.search(reply.strip().upper()[:80])
    return m.group(1) if m else None


def measure(url: str, model: str, *, n: int, seed: int, shared_data: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    from training.data.build import DERIVED

    qs = pq.read_table(
        DERIVED / "mmlu_pro" / "questions.parquet", columns=["query_id", "query", "split"]
    ).to_pylist()
    test_ids = {q["query_id"]: q["query"] for q in qs if q["split"] == "test"}
    gold = gold_questions(shared_data)
    ids = sorted(i for i in test_ids if i in gold and gold[i][0].strip() == test_ids[i].strip())
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
                    "score": float(extract_letter(reply) == answer),
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
