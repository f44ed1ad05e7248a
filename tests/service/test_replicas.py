"""Two gateway replicas sharing PostgreSQL and Redis converge within a second.

The replicas are two independent apps (own event loop, own in-memory state) that share only the
database and Redis, as two processes would.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.service.helpers import ADMIN, Gateway, assert_error_shape, make_settings, run_gateway

pytestmark = pytest.mark.integration


@pytest.fixture
def pair(
    tmp_path, postgres_url: str, redis_url: str, redis_prefix: str
) -> Iterator[tuple[Gateway, Gateway]]:
    kw = {
        "database_url": postgres_url,
        "redis_url": redis_url,
        "redis_prefix": redis_prefix,
        "registry_poll_s": 0.25,
    }
    with (
        run_gateway(make_settings(tmp_path / "a", **kw)) as a,
        run_gateway(make_settings(tmp_path / "b", **kw)) as b,
    ):
        yield a, b


def wait_until(pred, timeout: float = 1.0) -> float:
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"not converged within {timeout} s")
        time.sleep(0.02)
    return time.monotonic() - t0


def models(gw: Gateway) -> set[str]:
    return {m["id"] for m in gw.client.get("/v1/models", headers=ADMIN).json()["data"]}


def test_model_registered_on_one_replica_is_routable_on_the_other(pair, fake_a) -> None:
    a, b = pair
    assert a.register("model-a", fake_a.url, backend_model="backend-a").status_code == 201
    wait_until(lambda: "model-a" in models(b))
    r = b.client.post(
        "/v1/chat/completions",
        headers=ADMIN,
        json={"model": "junction/auto", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert r.status_code == 200 and r.json()["model"] == "model-a"
    assert a.admin("DELETE", "/admin/models/model-a").status_code == 204
    wait_until(lambda: "model-a" not in models(b))


def test_rate_limits_conversations_and_revocation_are_shared(pair, fake_a, fake_b) -> None:
    a, b = pair
    a.register("model-a", fake_a.url, backend_model="backend-a", scores=(1, 1, 1, 0))
    a.register("model-b", fake_b.url, backend_model="backend-b", scores=[1] * 18 + [0] * 7)
    wait_until(lambda: {"model-a", "model-b"} <= models(b))
    created = a.admin(
        "POST", "/admin/keys", json={"name": "shared", "requests_per_minute": 4}
    ).json()
    auth = {"Authorization": f"Bearer {created['key']}"}
    msgs = [{"role": "user", "content": "Write a parser"}]
    # conversation state: turn 1 on replica a (forced to model-b), turn 2 on b sticks to it; a
    # conversation is only ever named explicitly (never inferred from its first message)
    conv = {**auth, "x-conversation-id": "replica-shared-conversation"}
    r1 = a.client.post(
        "/v1/chat/completions",
        headers=conv,
        json={"model": "junction/auto", "messages": msgs, "routing": {"candidates": ["model-b"]}},
    )
    assert r1.json()["model"] == "model-b"
    msgs2 = [
        *msgs,
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "now test it"},
    ]
    r2 = b.client.post(
        "/v1/chat/completions", headers=conv, json={"model": "junction/auto", "messages": msgs2}
    )
    assert r2.json()["model"] == "model-b" and r2.headers["x-junction-sticky"] == "true"
    # the request counter is shared: 2 used, 2 more allowed in total across replicas
    assert (
        a.client.post(
            "/v1/chat/completions", headers=auth, json={"model": "model-a", "messages": msgs}
        ).status_code
        == 200
    )
    assert (
        b.client.post(
            "/v1/chat/completions", headers=auth, json={"model": "model-a", "messages": msgs}
        ).status_code
        == 200
    )
    assert_error_shape(
        a.client.post(
            "/v1/chat/completions", headers=auth, json={"model": "model-a", "messages": msgs}
        ),
        429,
    )
    assert_error_shape(
        b.client.post(
            "/v1/chat/completions", headers=auth, json={"model": "model-a", "messages": msgs}
        ),
        429,
    )
    # revocation on a reaches b's key cache within a second
    other = a.admin("POST", "/admin/keys", json={"name": "other"}).json()
    h2 = {"Authorization": f"Bearer {other['key']}"}
    assert b.client.get("/v1/models", headers=h2).status_code == 200
    assert a.admin("DELETE", f"/admin/keys/{other['id']}").status_code == 204
    wait_until(lambda: b.client.get("/v1/models", headers=h2).status_code == 401)
