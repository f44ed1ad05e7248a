"""The contract between the gateway's evaluation rows and their readers outside the gateway
(``training.data.gateway_rows``, used by ``federation.gateway_db``); the end-to-end read is
``tests/federation/test_data_source.py``."""

from __future__ import annotations

import numpy as np

from service.db.models import EvaluationRow
from training.data.gateway_rows import (
    EVALUATION_COLUMNS,
    EVALUATIONS_TABLE,
    from_blob,
    row_to_eval,
    to_blob,
)


def test_the_columns_read_outside_the_gateway_are_the_orm_table_s() -> None:
    table = EvaluationRow.__table__
    assert table.name == EVALUATIONS_TABLE
    assert set(EVALUATION_COLUMNS) <= set(table.columns.keys())


def test_the_blob_codec_round_trips_little_endian_float32() -> None:
    x = np.array([0.25, -1.5, 3.0], dtype=np.float64)
    b = to_blob(x)
    assert b == np.array([0.25, -1.5, 3.0], dtype="<f4").tobytes()
    assert from_blob(b).dtype == np.float32 and from_blob(b).tolist() == [0.25, -1.5, 3.0]


def test_a_stored_row_maps_to_an_eval_row() -> None:
    emb = to_blob([1.0, 0.5])
    r = row_to_eval((None, "q?", emb, "m-a", 1, None, 7, None, "math"), 3, client="acme")
    assert (r.query_id, r.model, r.score, r.prompt_tokens, r.completion_tokens) == (
        "row-3",
        "m-a",
        1.0,
        0,
        7,
    )
    assert r.embedding == (1.0, 0.5) and r.client_id == "acme" and r.category == "math"
