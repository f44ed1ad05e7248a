"""One tenant's evaluation rows never steer another tenant's routing unless an operator trusts
that tenant; non-finite values are refused at the door; one Idempotency-Key is one batch.

Regression tests for issue 13, findings 1 and 5.
"""

from __future__ import annotations

import asyncio
import json
import math
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import func, select

from service.db.models import EvaluationBatchRow, EvaluationRow
from tests.service.helpers import ADMIN, Gateway, assert_error_shape
from tests.service.test_evaluations import new_key, post, rows


def _embedding(gw: Gateway, name: str) -> list[float]:
    return gw.admin("GET", f"/admin/models/{name}").json()["embedding"]  # type: ignore[no-any-return]


def test_untrusted_rows_do_not_move_the_shared_embedding_until_trusted(
    gateway: Gateway, fake_a
) -> None:
    gateway.register("model-a", fake_a.url, backend_model="backend-a", scores=(1, 1, 1, 0))
    before = _embedding(gateway, "model-a")
    assert before == [0.75]
    attacker = new_key(gateway, "attacker")
    r = post(gateway, attacker, {"rows": rows("model-a", 300, 0.0)}, idem="poison")
    assert r.status_code == 201, r.text
    ack = r.json()
    assert ack["accepted"] == 300 and ack["models_refreshed"] == {} and ack["shared"] is False
    # stored (the client sees its rows; federation can use them) ...
    mine = gateway.client.get(
        "/v1/evaluations", headers={"Authorization": f"Bearer {attacker}"}, params={"limit": 1000}
    ).json()["data"]
    assert len(mine) == 300
    # ... but routing for everyone is as before
    assert _embedding(gateway, "model-a") == before
    assert gateway.c.engine.pool.get("model-a").embedding[0] == 0.75
    # another tenant's trusted-but-unrelated refresh does not pull the untrusted rows in
    friend = new_key(gateway, "friend", trusted=True)
    r = post(gateway, friend, {"rows": rows("model-a", 4, 1.0, start=1000)}, idem="f1")
    assert r.json()["models_refreshed"] == {"model-a": 8}
    assert _embedding(gateway, "model-a") == [0.875]
    # the operator trusts the first key: its rows count from now on
    key_id = next(
        k["id"]
        for k in gateway.admin("GET", "/admin/keys").json()["data"]
        if k["name"] == "attacker"
    )
    r = gateway.admin("PATCH", f"/admin/keys/{key_id}", json={"trusted": True})
    assert r.status_code == 200 and r.json()["trusted"] is True
    assert math.isclose(_embedding(gateway, "model-a")[0], 7 / 308, rel_tol=1e-5)
    # and distrusting it again takes them back out
    gateway.admin("PATCH", f"/admin/keys/{key_id}", json={"trusted": False})
    assert _embedding(gateway, "model-a") == [0.875]


def test_non_finite_values_are_refused_and_store_nothing(gateway: Gateway, fake_a) -> None:
    gateway.register("model-a", fake_a.url, backend_model="backend-a")
    key = new_key(gateway, "org", trusted=True)
    row = {**rows("model-a", 1, 1.0)[0], "embedding": [0.1] * 383 + [float("nan")]}
    del row["query"]
    # NaN / Infinity literals and 1e999 (parses as inf) are refused before any schema
    for raw in (
        json.dumps({"rows": [row]}),  # json.dumps writes NaN
        json.dumps({"rows": [{**row, "embedding": [0.1] * 384}]}).replace("0.1]", "1e999]"),
        json.dumps({"rows": [{**rows("model-a", 1, 1.0)[0], "score": 0.5}]}).replace(
            "0.5", "Infinity"
        ),
    ):
        r = gateway.client.post(
            "/v1/evaluations",
            headers={"Authorization": f"Bearer {key}", "Idempotency-Key": "nan"},
            content=raw,
        )
        err = assert_error_shape(r, 400, "invalid_json")
        assert "finite" in err["message"]
    stored = gateway.client.get("/v1/evaluations", headers=ADMIN).json()["data"]
    assert [e for e in stored if e["batch_id"] is not None] == []
    assert gateway.c.engine.pool.get("model-a").embedding.tolist() == [0.75]
    # the admin surface too: a price of 1e999 and a NaN evaluation embedding
    body = {
        "name": "m-inf",
        "backend": {"url": fake_a.url, "model": "backend-a"},
        "pricing": {"input_per_mtok": 1.0, "output_per_mtok": 1.0},
        "evaluations": [{"query": f"q{i}", "score": 1} for i in range(4)],
    }
    raw = json.dumps(body).replace('"output_per_mtok": 1.0', '"output_per_mtok": 1e999')
    r = gateway.client.post(
        "/admin/models", headers={**ADMIN, "Content-Type": "application/json"}, content=raw
    )
    assert r.status_code in (400, 422), r.text
    assert_error_shape(r, r.status_code)
    assert gateway.admin("GET", "/admin/models/m-inf").status_code == 404


def test_concurrent_posts_with_one_key_store_one_batch(gateway: Gateway) -> None:
    body = json.dumps({"rows": rows("some-model", 5, 0.5)})

    def one(_: int) -> tuple[int, dict]:
        r = gateway.client.post(
            "/v1/evaluations", headers={**ADMIN, "Idempotency-Key": "same"}, content=body
        )
        return r.status_code, r.json()

    with ThreadPoolExecutor(10) as ex:
        results = list(ex.map(one, range(10)))
    assert {s for s, _ in results} == {201}, results
    ids = {b["batch_id"] for _, b in results}
    assert len(ids) == 1, results

    async def count() -> tuple[int, int]:
        async with gateway.c.db.session() as s:
            nb = (
                await s.execute(select(func.count()).select_from(EvaluationBatchRow))
            ).scalar_one()
            nr = (await s.execute(select(func.count()).select_from(EvaluationRow))).scalar_one()
        return nb, nr

    nb, nr = asyncio.run_coroutine_threadsafe(count(), gateway.server_loop()).result(10)
    assert (nb, nr) == (1, 5)


def test_retry_after_a_crash_between_commit_and_ack_returns_the_batch_id(
    gateway: Gateway, fake_a
) -> None:
    """A batch committed with its provisional ack (the gateway died before refreshing): the
    retry gets the batch id, and the refresh that was missed happens then."""
    gateway.register("model-a", fake_a.url, backend_model="backend-a", scores=(0, 0, 0, 0))
    body = json.dumps({"rows": rows("model-a", 4, 1.0)})
    raw = body.encode()
    import hashlib

    async def crash_after_commit() -> int:
        async with gateway.c.db.session() as s:
            b = EvaluationBatchRow(
                key_id=None,
                owner="admin",
                idempotency_key="crash",
                request_sha256=hashlib.sha256(raw).hexdigest(),
                response={},  # what the old code left behind on a crash
            )
            s.add(b)
            await s.flush()
            for i, r in enumerate(json.loads(body)["rows"]):
                s.add(
                    EvaluationRow(
                        model_name="model-a",
                        key_id=None,
                        batch_id=b.id,
                        query_id=r["query_id"],
                        query=r["query"],
                        embedding=b"\0" * (4 * 384),
                        score=1.0,
                    )
                )
                del i
            await s.commit()
            return b.id

    bid = asyncio.run_coroutine_threadsafe(crash_after_commit(), gateway.server_loop()).result(10)
    r = gateway.client.post(
        "/v1/evaluations", headers={**ADMIN, "Idempotency-Key": "crash"}, content=raw
    )
    assert r.status_code == 201, r.text
    ack = r.json()
    assert ack["batch_id"] == bid and ack["accepted"] == 4
    assert ack["models_refreshed"] == {"model-a": 8}
    assert _embedding(gateway, "model-a") == [0.5]


def test_ingest_is_capped_per_post_and_per_minute(tmp_path, fake_a) -> None:
    from tests.service.helpers import make_settings, run_gateway

    with run_gateway(
        make_settings(tmp_path, evaluations_max_rows_per_post=50, evaluations_rows_per_minute=80)
    ) as gw:
        key = new_key(gw, "org")
        assert_error_shape(post(gw, key, {"rows": rows("m", 51, 1.0)}, idem="a"), 422)
        assert post(gw, key, {"rows": rows("m", 50, 1.0)}, idem="b").status_code == 201
        r = post(gw, key, {"rows": rows("m", 40, 1.0, start=100)}, idem="c")
        assert_error_shape(r, 429, "rate_limit_exceeded")
        assert r.headers["retry-after"] == "60"


def test_migration_0003_keeps_one_admin_batch_per_key_on_upgrade(tmp_path) -> None:
    """Databases written by the old code hold duplicate admin batches (NULL key_id never
    collided); the upgrade must still build its unique index, and go down again."""
    from sqlalchemy import text

    from service.db.engine import Database

    async def run() -> list[tuple[int, str]]:
        db = Database(f"sqlite:///{tmp_path / 'm.db'}")
        try:
            await db.migrate("0002")
            async with db.engine.begin() as conn:
                for _ in range(3):
                    await conn.execute(
                        text(
                            "INSERT INTO evaluation_batches (key_id, idempotency_key,"
                            " request_sha256, response, created_at)"
                            " VALUES (NULL, 'dup', 'x', '{}', '2026-01-01')"
                        )
                    )
            await db.migrate("0003")
            async with db.engine.connect() as conn:
                got = (
                    await conn.execute(text("SELECT id, owner FROM evaluation_batches ORDER BY id"))
                ).all()
            await db.migrate("0002", down=True)
            await db.migrate("0003")
            return [(int(i), str(o)) for i, o in got]
        finally:
            await db.dispose()

    assert asyncio.run(run()) == [(1, "admin"), (2, "admin#2"), (3, "admin#3")]


@pytest.mark.integration
def test_postgres_one_batch_per_key_and_no_500_from_wide_ints_or_nul(
    tmp_path, postgres_url: str
) -> None:
    from tests.service.helpers import make_settings, run_gateway

    with run_gateway(make_settings(tmp_path, database_url=postgres_url)) as gw:
        test_concurrent_posts_with_one_key_store_one_batch(gw)
        for row in (
            {**rows("m", 1, 1.0)[0], "prompt_tokens": 2**31 + 5},
            {**rows("m", 1, 1.0)[0], "query_id": "nul\x00"},
        ):
            r = gw.client.post(
                "/v1/evaluations",
                headers={**ADMIN, "Idempotency-Key": "pg-bad"},
                content=json.dumps({"rows": [row]}),
            )
            assert r.status_code in (400, 422), r.text
            assert_error_shape(r, r.status_code)
