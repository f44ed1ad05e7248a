"""Bad input gets a 4xx in the OpenAI error shape and changes nothing."""

from __future__ import annotations

from tests.service.helpers import ADMIN, Gateway, assert_error_shape

CHAT = "/v1/chat/completions"


def _registry_snapshot(gw: Gateway) -> list[str]:
    return [m["name"] for m in gw.admin("GET", "/admin/models").json()["data"]]


def test_missing_and_wrong_auth_are_401(gateway: Gateway) -> None:
    body = {"model": "junction/auto", "messages": [{"role": "user", "content": "hi"}]}
    assert_error_shape(gateway.client.post(CHAT, json=body), 401, "invalid_api_key")
    r = gateway.client.post(CHAT, json=body, headers={"Authorization": "Bearer nope"})
    assert_error_shape(r, 401, "invalid_api_key")
    assert_error_shape(gateway.client.get("/v1/models"), 401)
    assert_error_shape(gateway.client.post("/v1/route", json={"prompt": "x"}), 401)
    assert_error_shape(gateway.client.get("/admin/models"), 401)
    # a client key is not an admin token
    key = gateway.admin("POST", "/admin/keys", json={"name": "c"}).json()["key"]
    r = gateway.client.get("/admin/models", headers={"Authorization": f"Bearer {key}"})
    assert_error_shape(r, 401)


def test_invalid_json_wrong_types_and_unknown_model(gateway: Gateway, fake_a) -> None:
    gateway.register("model-a", fake_a.url, backend_model="backend-a")
    before = _registry_snapshot(gateway)
    h = {**ADMIN, "Content-Type": "application/json"}
    assert_error_shape(
        gateway.client.post(CHAT, content=b"{not json", headers=h), 400, "invalid_json"
    )
    assert_error_shape(gateway.client.post(CHAT, content=b"[1, 2]", headers=h), 400, "invalid_json")
    err = assert_error_shape(
        gateway.client.post(CHAT, json={"model": "junction/auto", "messages": "hi"}, headers=ADMIN),
        400,
        "validation_error",
    )
    assert err["param"] == "messages"
    err = assert_error_shape(
        gateway.client.post(
            CHAT,
            json={
                "model": "junction/auto",
                "messages": [{"role": "user", "content": "x"}],
                "temperature": "hot",
            },
            headers=ADMIN,
        ),
        400,
    )
    assert err["param"] == "temperature"
    assert_error_shape(
        gateway.client.post(
            CHAT,
            json={"model": "nope", "messages": [{"role": "user", "content": "x"}]},
            headers=ADMIN,
        ),
        404,
        "model_not_found",
    )
    assert_error_shape(
        gateway.client.post(
            CHAT,
            json={"model": "junction/auto", "messages": [{"role": "robot", "content": "x"}]},
            headers=ADMIN,
        ),
        400,
    )
    assert fake_a.count == 0  # nothing reached a backend
    assert _registry_snapshot(gateway) == before


def test_huge_body_is_413(tmp_path, fake_a) -> None:
    from tests.service.helpers import make_settings, run_gateway

    with run_gateway(make_settings(tmp_path, max_body_bytes=10_000)) as gw:
        big = {"model": "junction/auto", "messages": [{"role": "user", "content": "x" * 20_000}]}
        assert_error_shape(gw.client.post(CHAT, json=big, headers=ADMIN), 413, "payload_too_large")

        def chunks():
            for _ in range(30):
                yield b"x" * 1000

        # no Content-Length (chunked upload): counted while reading
        r = gw.client.post(
            CHAT, content=chunks(), headers={**ADMIN, "Content-Type": "application/json"}
        )
        assert_error_shape(r, 413, "payload_too_large")


def test_unknown_routes_and_methods_use_the_envelope(gateway: Gateway) -> None:
    assert_error_shape(gateway.client.get("/v1/nothing"), 404, "not_found")
    assert_error_shape(gateway.client.get("/v1/chat/completions"), 405, "method_not_allowed")


def test_admin_validation_is_422_and_names_the_field(gateway: Gateway) -> None:
    r = gateway.admin(
        "POST", "/admin/models", json={"name": "m", "backend": {"url": "ftp://x", "model": "m"}}
    )
    err = assert_error_shape(r, 422, "validation_error")
    assert "pricing" in err["message"] and "backend" in err["message"]
    r = gateway.admin(
        "POST",
        "/admin/models",
        json={
            "name": "m",
            "backend": {"url": "http://127.0.0.1:9/v1", "model": "m"},
            "pricing": {"input_per_mtok": 1, "output_per_mtok": 1},
            "evaluations": [{"query": "q", "score": 1.5}] * 5,
        },
    )
    err = assert_error_shape(r, 422)
    assert "evaluations.0.score" in err["message"]
    r = gateway.admin(
        "POST",
        "/admin/models",
        json={
            "name": "m",
            "backend": {"url": "http://127.0.0.1:9/v1", "model": "m"},
            "pricing": {"input_per_mtok": 1, "output_per_mtok": 1},
            "evaluations": [{"query": "q", "score": 1}],
        },
    )
    err = assert_error_shape(r, 422)
    assert "at least 4" in err["message"]
    assert _registry_snapshot(gateway) == []
