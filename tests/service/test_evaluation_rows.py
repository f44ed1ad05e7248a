"""The one mapping of an evaluation between its wire, input, ORM and public shapes
(``service.evaluations.rows``), and its agreement with federation's reader of stored rows."""

from __future__ import annotations

import numpy as np

from service.admin.protocol import EvaluationIn
from service.evaluations.protocol import EvaluationLogRow
from service.evaluations.rows import EvalInput, to_input, to_orm, to_public
from training.data.gateway_rows import EVALUATION_COLUMNS, row_to_eval
from training.minilm import EMBED_DIM


def log_row() -> EvaluationLogRow:
    return EvaluationLogRow(
        query_id="q1",
        query="2+2?",
        model="m-a",
        score=1,
        prompt_tokens=5,
        completion_tokens=2,
        cost_usd=0.001,
        category="math",
    )


def test_wire_rows_and_jsonl_lines_map_to_the_same_input() -> None:
    expected = EvalInput(
        score=1.0,
        query="2+2?",
        query_id="q1",
        prompt_tokens=5,
        completion_tokens=2,
        cost_usd=0.001,
        category="math",
    )
    assert to_input(log_row()) == expected
    line = {"query_id": "q1", "query": "2+2?", "model": "m-a", "score": 1, "prompt_tokens": 5}
    line |= {"completion_tokens": 2, "cost_usd": 0.001, "category": "math", "response": "4"}
    assert to_input(line) == expected
    # the admin API's rows carry no cost: None, not an error
    admin = EvaluationIn(query="2+2?", score=0.5, query_id="q1")
    assert to_input(admin) == EvalInput(score=0.5, query="2+2?", query_id="q1")


def test_a_stored_row_reads_back_the_same_on_every_side() -> None:
    x = np.linspace(-1, 1, EMBED_DIM, dtype=np.float32)
    orm = to_orm(to_input(log_row()), x, model="m-a", key_id=7, batch_id=3)
    assert (orm.model_name, orm.key_id, orm.batch_id) == ("m-a", 7, 3)
    orm.id = 11
    public = to_public(orm)
    assert public.model_dump() == {
        "id": 11,
        "batch_id": 3,
        "query_id": "q1",
        "query": "2+2?",
        "model": "m-a",
        "score": 1.0,
        "prompt_tokens": 5,
        "completion_tokens": 2,
        "cost_usd": 0.001,
        "category": "math",
    }
    # federation reads the stored columns through training.data.gateway_rows
    r = row_to_eval([getattr(orm, c) for c in EVALUATION_COLUMNS], 0, client="acme")
    assert (r.query_id, r.model, r.score, r.prompt_tokens, r.completion_tokens) == (
        "q1",
        "m-a",
        1.0,
        5,
        2,
    )
    assert (r.query, r.cost_usd, r.category, r.client_id) == ("2+2?", 0.001, "math", "acme")
    assert np.array_equal(np.asarray(r.embedding, dtype=np.float32), x)
