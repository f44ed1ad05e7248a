"""Client keys: hashed, revocable, with request/token rate limits and a spend budget."""

from __future__ import annotations

from sqlalchemy import select

from tests.service.helpers import Gateway, assert_error_shape


def make_key(gw: Gateway, **limits) -> tuple[int, str]:
    r = gw.admin("POST", "/admin/keys", json={"name": "client", **limits})
    assert r.status_code == 201
    return r.json()["id"], r.json()["key"]


def chat(gw: Gateway, key: str, text: str = "hi", **kw):
    return gw.client.post(
        "/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": "model-a", "messages": [{"role": "user", "content": text}], **kw},
    )


def test_keys_are_stored_hashed_and_revocable(gateway: Gateway, fake_a) -> None:
    import asyncio

    from service.db.models import ApiKeyRow

    gateway.register("model-a", fake_a.url, backend_model="backend-a")
    key_id, key = make_key(gateway)
    assert key.startswith("jk-")
    assert chat(gateway, key).status_code == 200

    async def stored() -> list[str]:
        async with gateway.c.db.session() as s:
            return list((await s.execute(select(ApiKeyRow.key_hash))).scalars())

    fut = asyncio.run_coroutine_threadsafe(stored(), gateway.server_loop())
    hashes = fut.result(5)
    assert key not in hashes and len(hashes[0]) == 64
    listed = gateway.admin("GET", "/admin/keys").json()["data"]
    assert listed[0]["prefix"] == key[:8] and "key" not in listed[0]
    assert gateway.admin("DELETE", f"/admin/keys/{key_id}").status_code == 204
    assert_error_shape(chat(gateway, key), 401, "invalid_api_key")
    assert_error_shape(gateway.admin("DELETE", f"/admin/keys/{key_id}"), 404)


def test_request_rate_limit(gateway: Gateway, fake_a) -> None:
    gateway.register("model-a", fake_a.url, backend_model="backend-a")
    _, key = make_key(gateway, requests_per_minute=2)
    assert chat(gateway, key).status_code == 200
    assert chat(gateway, key).status_code == 200
    r = chat(gateway, key)
    assert_error_shape(r, 429, "rate_limit_exceeded")
    assert r.headers["retry-after"] == "60"
    assert fake_a.count == 2


def test_token_rate_limit(gateway: Gateway, fake_a) -> None:
    gateway.register("model-a", fake_a.url, backend_model="backend-a")
    _, key = make_key(gateway, tokens_per_minute=5)
    assert chat(gateway, key).status_code == 200  # uses more than 5 tokens
    assert_error_shape(chat(gateway, key), 429, "rate_limit_exceeded")


def test_spend_budget_is_enforced_with_reservation(gateway: Gateway, fake_a) -> None:
    # $1,000 per million tokens each way: a request of ~13 tokens costs ~$0.013
    gateway.register("model-a", fake_a.url, backend_model="backend-a", price=(1000.0, 1000.0))
    key_id, key = make_key(gateway, budget_usd=0.05)
    # worst case 100 tokens = $0.1 > budget: refused up front
    assert_error_shape(chat(gateway, key, max_tokens=100), 429, "budget_exceeded")
    ok = 0
    for i in range(10):
        r = chat(gateway, key, text=f"q{i}", max_tokens=5)
        if r.status_code != 200:
            assert_error_shape(r, 429, "budget_exceeded")
            break
        ok += 1
    assert 1 <= ok < 10
    import time

    time.sleep(0.3)
    spent = next(
        k for k in gateway.admin("GET", "/admin/keys").json()["data"] if k["id"] == key_id
    )["spent_usd"]
    assert 0 < spent <= 0.05 + 1e-9
