"""No input gets a 500 (issue 13, finding 3 and the input cases of 7): every refusal is a 4xx
in the OpenAI error shape, and the keep-alive connection survives errors."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import httpx
import pytest

from service.cli.fake_vllm import FakeVLLM
from tests.service.helpers import ADMIN, Gateway, assert_error_shape, make_settings, run_gateway

DEEP = 50_000
SURROGATE = '{"role": "user", "content": "bad \\ud800 text"}'
CHAT_BAD = '{"model": "junction/auto", "messages": [' + SURROGATE + "]}"
ROUTE_BAD = '{"messages": [' + SURROGATE + "]}"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeVLLM]:
    f = FakeVLLM(model="backend-a")
    f.start_in_thread()
    yield f
    f.stop()


@pytest.fixture(scope="module")
def gw(tmp_path_factory, fake: FakeVLLM) -> Iterator[Gateway]:
    with run_gateway(make_settings(tmp_path_factory.mktemp("hostile"))) as g:
        assert g.register("model-a", fake.url, backend_model="backend-a").status_code == 201
        yield g


def post(gw: Gateway, path: str, raw: str | bytes, **headers: str) -> httpx.Response:
    return gw.client.post(
        path, headers={**ADMIN, "Content-Type": "application/json", **headers}, content=raw
    )


def _status_ok(r: httpx.Response) -> None:
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    assert_error_shape(r, r.status_code)


@pytest.mark.parametrize(
    ("path", "raw"),
    [
        ("/v1/chat/completions", CHAT_BAD),
        ("/v1/completions", '{"model": "junction/auto", "prompt": "bad \\ud800"}'),
        ("/v1/route", ROUTE_BAD),
        ("/v1/chat/completions", '{"model": "junction/auto\\ud800", "messages": []}'),
    ],
)
def test_lone_surrogates_are_a_400(gw: Gateway, path: str, raw: str) -> None:
    r = post(gw, path, raw)
    assert_error_shape(r, 400, "invalid_json")
    assert "surrogate" in r.json()["error"]["message"]


@pytest.mark.parametrize(
    "path",
    ["/v1/chat/completions", "/v1/completions", "/v1/route", "/v1/evaluations", "/admin/models"],
)
def test_json_nested_50000_deep_is_a_400(gw: Gateway, path: str) -> None:
    raw = '{"messages": ' + "[" * DEEP + "]" * DEEP + "}"
    r = post(gw, path, raw, **{"Idempotency-Key": "deep"})
    assert_error_shape(r, 400, "invalid_json")
    # nested deeper than the bound, but not deep enough to break the parser
    raw = '{"model": "junction/auto", "messages": [{"role": "user", "content": "x", "x": '
    raw += "[" * 100 + "]" * 100 + "}]}"
    assert_error_shape(post(gw, path, raw, **{"Idempotency-Key": "deep2"}), 400, "invalid_json")


def _row(**kw: object) -> dict[str, object]:
    return {
        "query_id": "q1",
        "query": "a question",
        "model": "model-a",
        "score": 1.0,
        "prompt_tokens": 1,
        "completion_tokens": 1,
        **kw,
    }


@pytest.mark.parametrize(
    "row",
    [
        _row(prompt_tokens=2**63 + 5),  # wider than SQLite's INTEGER
        _row(prompt_tokens=2**31 + 5),  # wider than PostgreSQL's INTEGER
        _row(query_id="nul\x00inside"),
        _row(category="\x00"),
        # finite as a double, infinite as the float32 it is stored as (found by the fuzz suite)
        {**_row(embedding=[1e300] * 384), "query": None},
    ],
)
def test_out_of_range_integers_and_nul_are_refused_before_storage(
    gw: Gateway, row: dict[str, object]
) -> None:
    r = post(gw, "/v1/evaluations", json.dumps({"rows": [row]}), **{"Idempotency-Key": "x"})
    _status_ok(r)
    assert gw.client.get("/v1/evaluations", headers=ADMIN).json()["data"] == [] or all(
        e["batch_id"] is None
        for e in gw.client.get("/v1/evaluations", headers=ADMIN).json()["data"]
    )


def test_nul_and_bad_utf8_in_admin_urls_and_bodies(gw: Gateway) -> None:
    _status_ok(gw.admin("GET", "/admin/models/a%00b"))
    _status_ok(gw.admin("GET", "/admin/models/a%ff"))
    _status_ok(gw.admin("GET", "/v1/evaluations?model=%00"))
    body = {"name": "k\x00", "requests_per_minute": 2**40}
    _status_ok(gw.admin("POST", "/admin/keys", json=body))
    _status_ok(gw.admin("POST", "/admin/keys", json={"name": "k", "requests_per_minute": 2**40}))
    _status_ok(gw.admin("DELETE", f"/admin/keys/{2**70}"))


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 3}, "n"),
        ({"max_tokens": "5"}, "max_tokens"),
        ({"stream": "yes"}, "stream"),
        ({"max_tokens": 2**40}, "max_tokens"),
        ({"temperature": "0.5"}, "temperature"),
        ({"stream_options": {"include_usage": "true"}}, "stream_options.include_usage"),
        ({"budget": {"total_tokens": "100"}}, "budget.total_tokens"),
    ],
)
def test_strict_types_where_openai_is_strict(gw: Gateway, extra: dict, param: str) -> None:
    body = {"model": "junction/auto", "messages": [{"role": "user", "content": "hi"}], **extra}
    r = gw.client.post("/v1/chat/completions", headers=ADMIN, json=body)
    err = assert_error_shape(r, 400)
    assert err["param"] == param, err
    if "n" in extra:
        assert "not supported" in err["message"]


@pytest.mark.parametrize("value", ["0", "-5", "many", "99999999999999999999"])
def test_budget_header_must_be_positive(gw: Gateway, value: str) -> None:
    r = gw.client.post(
        "/v1/chat/completions",
        headers={**ADMIN, "x-junction-budget-tokens": value, "x-conversation-id": "c1"},
        json={"model": "junction/auto", "messages": [{"role": "user", "content": "hi"}]},
    )
    err = assert_error_shape(r, 400)
    assert err["param"] == "x-junction-budget-tokens"


def test_openapi_document_references_resolve(gw: Gateway) -> None:
    doc = gw.client.get("/openapi.json").json()
    text = json.dumps(doc)
    schemas = doc["components"]["schemas"]
    refs = {part.split('"')[0] for part in text.split('"$ref": "')[1:]}
    assert refs, "no references at all?"
    for ref in refs:
        assert ref.startswith("#/components/schemas/"), ref
        assert ref.rsplit("/", 1)[1] in schemas, ref
    from jsonschema import Draft202012Validator

    for name, schema in schemas.items():
        Draft202012Validator.check_schema(schema), name


def _raw_http(port: int, requests: list[bytes]) -> list[bytes]:
    """Send requests one after another on ONE socket; return each raw response head."""
    out = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        f = sock.makefile("rb")
        for req in requests:
            sock.sendall(req)
            head = b""
            while not head.endswith(b"\r\n\r\n"):
                line = f.readline()
                if not line:
                    out.append(head)
                    return out
                head += line
            length = next(
                int(h.split(b":")[1])
                for h in head.split(b"\r\n")
                if h.lower().startswith(b"content-length")
            )
            f.read(length)
            out.append(head)
    return out


def test_keep_alive_connection_survives_an_unexpected_error(gw: Gateway, monkeypatch) -> None:
    async def boom(*_a: object, **_k: object) -> None:
        raise RuntimeError("a bug somewhere")

    monkeypatch.setattr(gw.c.openai, "create", boom)
    port = int(gw.url.rsplit(":", 1)[1])
    body = b'{"model": "junction/auto", "messages": [{"role": "user", "content": "hi"}]}'
    tok = ADMIN["Authorization"].encode()
    chat = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: " + tok + b"\r\n"
        b"Content-Type: application/json\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
    ) + body
    models = b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: " + tok + b"\r\n\r\n"
    heads = _raw_http(port, [chat, models, chat, models])
    assert [h.split(b" ")[1] for h in heads] == [b"500", b"200", b"500", b"200"], heads
    assert all(b"connection: close" not in h.lower() for h in heads)
