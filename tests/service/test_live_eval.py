"""SmolLM2's onboarding evaluations: train-split questions only, scored by the stated answer."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from service.cli.fake_vllm import FakeVLLM
from service.cli.live_eval import ONBOARDING_SPLITS, measure, score_reply
from service.llama_server import ALIAS
from service.pool import LIVE_MODELS
from training.data.build import DERIVED

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def _splits() -> dict[str, str]:
    rows = pq.read_table(DERIVED / "mmlu_pro" / "questions.parquet", columns=["query_id", "split"])
    return {r["query_id"]: r["split"] for r in rows.to_pylist()}


def test_committed_smollm2_evaluations_come_from_training_questions() -> None:
    rows = [json.loads(x) for x in (LIVE_MODELS / f"{ALIAS}.jsonl").read_text().splitlines()]
    splits = _splits()
    assert len(rows) >= 128
    assert {splits[r["query_id"]] for r in rows} <= set(ONBOARDING_SPLITS) == {"train"}
    # each stored reply re-scores to the committed score with today's reader
    for r in rows:
        assert r["score"] == score_reply(r["response"], r["query"], _gold(r)), r


def _gold(row: dict) -> str:
    # the committed score says whether the stated letter was the gold one; recover gold from the
    # data set's records through the same reader the measurement used
    return _GOLD[row["query_id"]]


@pytest.fixture(scope="module", autouse=True)
def _load_gold() -> None:
    if not (SHARED / "mmlu_pro").exists():
        pytest.skip("needs ../shared/data/mmlu_pro")
    from training.data.mmlu_pro import gold_questions

    _GOLD.update({qid: g[1] for qid, g in gold_questions(SHARED).items()})


_GOLD: dict[str, str] = {}


def test_measure_asks_training_questions_and_keeps_replies() -> None:
    fake = FakeVLLM(model=ALIAS, reply="I think the answer is (B).")
    fake.start_in_thread()
    try:
        rows = measure(fake.url, ALIAS, n=6, seed=0, shared_data=SHARED)
    finally:
        fake.stop()
    splits = _splits()
    assert len(rows) == 6 and all(splits[r["query_id"]] == "train" for r in rows)
    assert all(r["response"] == "I think the answer is (B)." for r in rows)
    assert [r["score"] for r in rows] == [float(_GOLD[r["query_id"]] == "B") for r in rows]
