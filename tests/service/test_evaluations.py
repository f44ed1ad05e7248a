"""``/v1/evaluations``: idempotent, acknowledged after commit, per-client, re-embeds models."""

from __future__ import annotations

import json

from tests.service.helpers import Gateway, assert_error_shape


def rows(model: str, n: int, score: float, start: int = 0) -> list[dict]:
    return [
        {
            "query_id": f"q{start + i}",
            "query": f"log question {start + i}",
            "model": model,
            "score": score,
            "prompt_tokens": 10,
            "completion_tokens": 5,
        }
        for i in range(n)
    ]


def post(gw: Gateway, key: str, body: dict, idem: str | None = "k1"):
    headers = {"Authorization": f"Bearer {key}"}
    if idem:
        headers["Idempotency-Key"] = idem
    return gw.client.post("/v1/evaluations", headers=headers, content=json.dumps(body))


def new_key(gw: Gateway, name: str, *, trusted: bool = False) -> str:
    return gw.admin("POST", "/admin/keys", json={"name": name, "trusted": trusted}).json()["key"]


def test_post_is_idempotent_and_refreshes_the_model(gateway: Gateway, fake_a) -> None:
    gateway.register("model-a", fake_a.url, backend_model="backend-a", scores=(0, 0, 0, 0))
    key = new_key(gateway, "org1", trusted=True)  # untrusted rows move nothing shared
    body = {"rows": rows("model-a", 12, 1.0) + rows("unregistered", 2, 0.5)}
    r = post(gateway, key, body)
    assert r.status_code == 201, r.text
    ack = r.json()
    assert ack["accepted"] == 14
    assert ack["models_refreshed"] == {"model-a": 16}
    assert ack["unregistered_models"] == ["unregistered"]
    # the embedding moved with the new evaluations (constant embedder: the mean score)
    assert gateway.admin("GET", "/admin/models/model-a").json()["embedding"] == [0.75]
    assert gateway.c.engine.pool.get("model-a").embedding[0] == 0.75
    again = post(gateway, key, body)
    assert again.status_code == 201 and again.json() == ack
    assert again.headers["idempotency-replayed"] == "true"
    listed = gateway.client.get(
        "/v1/evaluations", headers={"Authorization": f"Bearer {key}"}, params={"limit": 1000}
    ).json()["data"]
    assert len(listed) == 14  # not stored twice
    changed = {"rows": rows("model-a", 1, 0.0)}
    assert_error_shape(post(gateway, key, changed), 409, "conflict")


def test_clients_see_and_delete_only_their_own_logs(gateway: Gateway) -> None:
    k1, k2 = new_key(gateway, "org1"), new_key(gateway, "org2")
    b1 = post(gateway, k1, {"rows": rows("m", 3, 1.0)}, idem="same").json()["batch_id"]
    post(
        gateway, k2, {"rows": rows("m", 2, 0.0, start=10)}, idem="same"
    )  # same key name, other client
    mine = gateway.client.get("/v1/evaluations", headers={"Authorization": f"Bearer {k2}"}).json()[
        "data"
    ]
    assert [r["query_id"] for r in mine] == ["q10", "q11"]
    r = gateway.client.delete(
        f"/v1/evaluations/batches/{b1}", headers={"Authorization": f"Bearer {k2}"}
    )
    assert_error_shape(r, 404)
    assert (
        gateway.client.delete(
            f"/v1/evaluations/batches/{b1}", headers={"Authorization": f"Bearer {k1}"}
        ).status_code
        == 204
    )
    assert (
        gateway.client.get("/v1/evaluations", headers={"Authorization": f"Bearer {k1}"}).json()[
            "data"
        ]
        == []
    )
    all_rows = gateway.admin("GET", "/v1/evaluations").json()["data"]
    assert len(all_rows) == 2


def test_bad_batches_are_refused_and_store_nothing(gateway: Gateway) -> None:
    key = new_key(gateway, "org1")
    assert_error_shape(post(gateway, key, {"rows": rows("m", 1, 1.0)}, idem=None), 422)
    bad = rows("m", 2, 1.0)
    bad[1]["score"] = 2
    err = assert_error_shape(post(gateway, key, {"rows": bad}), 422, "validation_error")
    assert "rows.1.score" in err["message"]
    missing = rows("m", 1, 1.0)
    del missing[0]["query"]
    assert (
        "query"
        in assert_error_shape(post(gateway, key, {"rows": missing}, idem="x2"), 422)["message"]
    )
    assert_error_shape(post(gateway, key, {"rows": []}, idem="x3"), 422)
    r = gateway.client.post(
        "/v1/evaluations",
        headers={"Authorization": f"Bearer {key}", "Idempotency-Key": "x4"},
        content=b"{oops",
    )
    assert_error_shape(r, 400, "invalid_json")
    assert (
        gateway.client.get("/v1/evaluations", headers={"Authorization": f"Bearer {key}"}).json()[
            "data"
        ]
        == []
    )
