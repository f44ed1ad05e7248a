"""Measure a live model on MMLU-Pro training-split questions: the evaluations it is onboarded with.

Onboarding evaluations must not come from the questions routing is evaluated on, so they are drawn
from the train split only (validation is left for tuning, test for evaluation). Each question (the
same question-plus-lettered-options text Junction embeds) is asked once at temperature 0 with an
instruction to answer with the option letter; the letter the reply states
(``training.data.answers.extract_choice``: "answer is (X)", "Answer: X", a leading or lone option
letter, never the article "A" or the pronoun "I") is compared with the gold answer. Rows follow
the evaluation-log schema and keep the reply (``response``), so a better reader can re-score them.

Usage::

    from training.data.build import SHARED_DATA   # the raw data folder, mmlu_pro/ inside

    rows = measure(url, "smollm2-135m", n=160, seed=0, shared_data=SHARED_DATA)
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from tqdm import tqdm

from training.data.answers import extract_choice
from training.data.mmlu_pro import gold_questions

INSTRUCTION = "Answer the multiple-choice question with the letter of the correct option only."
# Splits onboarding questions may come from; test questions are for evaluating routing.
ONBOARDING_SPLITS = ("train",)
_OPTION = re.compile(r"^([A-P])\. ", re.MULTILINE)


def options_in(query: str) -> int:
    """How many lettered options ("A. ...") the query text lists."""
    return len(_OPTION.findall(query))


def score_reply(reply: str, query: str, answer: str) -> float:
    """1.0 when the reply states the gold option letter, else 0.0."""
    return float(extract_choice(reply, n_options=options_in(query) or None) == answer)


# (messages) -> (reply, prompt tokens, completion tokens)
Ask = Callable[[list[dict[str, str]]], tuple[str, int, int]]


def onboarding_questions(shared_data: Path, n: int, seed: int) -> list[tuple[str, str, str, str]]:
    """``n`` seeded (query_id, text, gold letter, category) from the onboarding splits."""
    import pyarrow.parquet as pq

    from training.data.build import DERIVED

    qs = pq.read_table(
        DERIVED / "mmlu_pro" / "questions.parquet", columns=["query_id", "query", "split"]
    ).to_pylist()
    pool_ids = {q["query_id"]: q["query"] for q in qs if q["split"] in ONBOARDING_SPLITS}
    gold = gold_questions(shared_data)
    ids = sorted(i for i in pool_ids if i in gold and gold[i][0].strip() == pool_ids[i].strip())
    random.Random(seed).shuffle(ids)
    return [(qid, *gold[qid]) for qid in ids[:n]]


def measure_with(
    ask: Ask, model: str, *, n: int, seed: int, shared_data: Path
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for qid, text, answer, category in tqdm(
        onboarding_questions(shared_data, n, seed), desc=f"measure {model}", unit="q"
    ):
        messages = [
            {"role": "system", "content": INSTRUCTION},
            {"role": "user", "content": text},
        ]
        reply, prompt_tokens, completion_tokens = ask(messages)
        rows.append(
            {
                "query_id": qid,
                "query": text,
                "model": model,
                "score": score_reply(reply, text, answer),
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "category": category,
                "response": reply,
            }
        )
    return rows


def measure(url: str, model: str, *, n: int, seed: int, shared_data: Path) -> list[dict[str, Any]]:
    """Through an OpenAI-compatible server (SmolLM2: llama-cpp-python's), temperature 0."""
    with httpx.Client(timeout=120) as client:

        def ask(messages: list[dict[str, str]]) -> tuple[str, int, int]:
            r = client.post(
                url.rstrip("/") + "/chat/completions",
                json={"model": model, "messages": messages, "temperature": 0, "max_tokens": 16},
            )
            r.raise_for_status()
            body = r.json()
            usage = body.get("usage") or {}
            return (
                body["choices"][0]["message"]["content"] or "",
                int(usage.get("prompt_tokens", 0)),
                int(usage.get("completion_tokens", 0)),
            )

        return measure_with(ask, model, n=n, seed=seed, shared_data=shared_data)


def transformers_ask(gguf: Path) -> Ask:
    """The same GGUF's weights de-quantised to fp32 in transformers (needs ``accelerate``),
    greedy, the GGUF's own chat template: for machines where llama.cpp cannot run the model."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    lm = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name).eval()

    def ask(messages: list[dict[str, str]]) -> tuple[str, int, int]:
        text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        ids = tok(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            out = lm.generate(ids, max_new_tokens=16, do_sample=False)
        new = out[0][ids.shape[1] :].tolist()
        return str(tok.decode(new, skip_special_tokens=True)), int(ids.shape[1]), len(new)

    return ask


def write_rows(rows: list[dict[str, Any]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
