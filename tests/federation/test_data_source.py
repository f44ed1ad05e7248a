"""Where a client's logs come from: its gateway rows (by API key), or a private file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from federation.config import FederationConfig
from federation.data_source import client_data
from federation.gateway_db import read_client_matrix
from federation.partition import partition, to_rows
from tests.service.helpers import HashEncoder, make_settings, run_gateway
from training.data.load import load_matrix
from training.data.schema import write_log


def _rows(model: str, n: int, score: float, prefix: str) -> list[dict]:
    return [
        {
            "query_id": f"{prefix}{i}",
            "query": f"{prefix} question {i}",
            "model": model,
            "score": score,
            "prompt_tokens": 10,
            "completion_tokens": 5,
            "cost_usd": 1e-4,
        }
        for i in range(n)
    ]


def test_client_rows_come_from_the_gateway_database_by_api_key(tmp_path: Path) -> None:
    with run_gateway(make_settings(tmp_path)) as gw:
        keys = {
            org: gw.admin("POST", "/admin/keys", json={"name": org}).json()["key"]
            for org in ("org1", "org2")
        }
        for org, rows in (("org1", _rows("m-a", 6, 1.0, "a")), ("org2", _rows("m-b", 3, 0.0, "b"))):
            r = gw.client.post(
                "/v1/evaluations",
                headers={"Authorization": f"Bearer {keys[org]}", "Idempotency-Key": "1"},
                content=json.dumps({"rows": rows}),
            )
            assert r.status_code == 201, r.text
    stored = HashEncoder().encode(["a question 0"])[0]  # what the test gateway embeds with
    m = read_client_matrix(f"sqlite:///{tmp_path / 'junction.db'}", "org1")
    assert m.models == ["m-a"] and m.num_queries == 6 and np.nanmean(m.scores) == 1.0
    np.testing.assert_allclose(m.embeddings[0], stored, rtol=1e-6)  # the gateway's embedding
    cfg = FederationConfig(test_frac=0.5)
    data = client_data(
        cfg,
        {"gateway-db": f"sqlite:///{tmp_path / 'junction.db'}", "client": "org2"},
        ["m-a", "m-b"],
    )
    assert data.train.models == ["m-a", "m-b"]
    assert (
        data.train.observed[:, 0].sum() == 0 and data.train.num_queries + data.test.num_queries == 3
    )


def test_private_log_file_is_split_and_aligned_to_the_federation(tmp_path: Path) -> None:
    m = load_matrix("routerbench").subset(np.arange(200))
    p = partition(m, clients=2, seed=0)[0]
    path = write_log(to_rows(p.train), tmp_path / "mine.jsonl")
    models = [*reversed(m.models), "not-logged-anywhere"]
    data = client_data(FederationConfig(), {"data-path": str(path), "partition-id": 7}, models)
    assert data.client == 7 and data.train.models == models
    assert data.train.num_queries + data.test.num_queries == p.train.num_queries
    assert abs(data.test.num_queries - 0.25 * p.train.num_queries) <= 1
    assert not data.train.observed[:, -1].any()
