"""Fault injection against a fake backend speaking vLLM's protocol over a real socket.

Before the first byte: retry once, then fall back (nearest in LOCUS space); cooldown after
repeated failures. After the first byte: an error event, then ``[DONE]``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from service.cli.fake_vllm import FakeVLLM
from tests.service.helpers import (
    ADMIN,
    Gateway,
    assert_error_shape,
    free_port,
    make_settings,
    run_gateway,
)

MSG = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture
def gw(tmp_path, fake_a, fake_b) -> Iterator[Gateway]:
    with run_gateway(
        make_settings(tmp_path, upstream_read_timeout_s=0.5, cooldown_after_failures=2)
    ) as g:
        assert (
            g.register(
                "model-a", fake_a.url, backend_model="backend-a", scores=(1, 1, 1, 0)
            ).status_code
            == 201
        )
        assert (
            g.register(
                "model-b", fake_b.url, backend_model="backend-b", scores=(1, 1, 0, 0)
            ).status_code
            == 201
        )
        yield g


def chat(gw: Gateway, **kw) -> httpx.Response:
    return gw.client.post(
        "/v1/chat/completions",
        headers=ADMIN,
        json={"model": "junction/auto", "messages": MSG, **kw},
    )


def sse_events(text: str) -> list[str]:
    return [e[len("data: ") :] for e in text.split("\n\n") if e.startswith("data: ")]


def test_one_5xx_is_retried_on_the_same_backend(gw: Gateway, fake_a: FakeVLLM) -> None:
    fake_a.faults.fail_times = 1
    r = chat(gw)
    assert r.status_code == 200
    assert r.json()["model"] == "model-a"
    assert r.headers["x-junction-fallbacks"] == "0"
    assert fake_a.count == 2


def test_two_5xx_fall_back_to_the_next_candidate(
    gw: Gateway, fake_a: FakeVLLM, fake_b: FakeVLLM
) -> None:
    fake_a.faults.fail_times, fake_a.faults.fail_status = 2, 503
    r = chat(gw)
    assert r.status_code == 200
    assert r.json()["model"] == "model-b"
    assert r.headers["x-junction-model"] == "model-b"
    assert r.headers["x-junction-fallbacks"] == "1"
    assert fake_a.count == 2 and fake_b.count == 1
    assert "junction_fallbacks_total 1.0" in gw.client.get("/metrics", headers=ADMIN).text


def test_cooldown_skips_a_failing_backend_then_probe_or_expiry_restores(
    gw: Gateway, fake_a: FakeVLLM, fake_b: FakeVLLM
) -> None:
    fake_a.faults.fail_times = 2
    assert chat(gw).json()["model"] == "model-b"
    assert gw.c.health.cooling("model-a")
    before = fake_a.count
    r = chat(gw, messages=[{"role": "user", "content": "another question"}])
    assert r.json()["model"] == "model-b" and r.headers["x-junction-fallbacks"] == "0"
    assert fake_a.count == before  # not even tried while cooling down
    assert "model-a" in gw.client.get("/health/readiness").json()["cooling_down"]
    gw.c.health.record_success("model-a")  # what a successful probe does
    assert chat(gw, messages=[{"role": "user", "content": "third"}]).json()["model"] == "model-a"


def test_when_everything_cools_down_the_soonest_is_tried(
    gw: Gateway, fake_a: FakeVLLM, fake_b: FakeVLLM
) -> None:
    fake_a.faults.fail_times = 2
    fake_b.faults.fail_times = 2
    r = chat(gw)
    assert_error_shape(r, 502, "upstream_error")
    assert r.headers["retry-after"] == "5"
    assert gw.c.health.cooling("model-a") and gw.c.health.cooling("model-b")
    r = chat(gw, messages=[{"role": "user", "content": "later"}])
    assert r.status_code == 200  # not refused although every backend is cooling down


def test_timeout_falls_back(gw: Gateway, fake_a: FakeVLLM) -> None:
    fake_a.faults.delay_s = 2.0  # read timeout is 0.5 s
    r = chat(gw)
    assert r.status_code == 200 and r.json()["model"] == "model-b"


def test_unreachable_backend_falls_back(gw: Gateway) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    assert (
        gw.admin(
            "PATCH", "/admin/models/model-a", json={"backend": {"url": dead, "model": "backend-a"}}
        ).status_code
        == 200
    )
    r = chat(gw)
    assert r.status_code == 200 and r.json()["model"] == "model-b"


def test_concrete_model_does_not_fall_back(gw: Gateway, fake_a: FakeVLLM, fake_b: FakeVLLM) -> None:
    fake_a.faults.fail_times = 2
    r = gw.client.post(
        "/v1/chat/completions", headers=ADMIN, json={"model": "model-a", "messages": MSG}
    )
    assert_error_shape(r, 502, "upstream_error")
    assert fake_b.count == 0


def test_timeout_on_concrete_model_is_504(gw: Gateway, fake_a: FakeVLLM) -> None:
    fake_a.faults.delay_s = 2.0
    r = gw.client.post(
        "/v1/chat/completions", headers=ADMIN, json={"model": "model-a", "messages": MSG}
    )
    assert_error_shape(r, 504, "upstream_timeout")


@pytest.mark.parametrize("shape", ["nested", "flat"])
def test_backend_400_is_passed_on_normalised_without_paths_on_a_concrete_model(
    gw: Gateway, fake_a: FakeVLLM, fake_b: FakeVLLM, shape: str
) -> None:
    fake_a.faults.fail_times, fake_a.faults.fail_status, fake_a.faults.error_shape = 1, 400, shape
    r = gw.client.post(
        "/v1/chat/completions", headers=ADMIN, json={"model": "model-a", "messages": MSG}
    )
    err = assert_error_shape(r, 400, "upstream_rejected")
    assert "injected failure 400" in err["message"]
    assert fake_b.count == 0 and not gw.c.health.cooling("model-a")


def test_backend_400_on_a_routed_request_tries_the_next_candidate(
    gw: Gateway, fake_a: FakeVLLM, fake_b: FakeVLLM
) -> None:
    """One 400 might be the request's fault; another backend serving the same request shows it
    was the backend's (issue 13: a backend answering 400 to everything failed every request)."""
    fake_a.faults.fail_times, fake_a.faults.fail_status = 1, 400
    r = chat(gw)
    assert r.status_code == 200 and r.json()["model"] == "model-b"
    assert r.headers["x-junction-fallbacks"] == "1"
    assert not gw.c.health.cooling("model-a")  # one rejection is not yet a pattern


def test_paths_in_backend_errors_are_scrubbed() -> None:
    from service.upstream.client import error_message

    msg = error_message(500, b"Traceback: File /home/user/.venv/lib/llama_cpp/server/app.py line 3")
    assert "/home/user" not in msg and "<path>" in msg
    assert error_message(404, b'{"detail": "Not Found"}') == "Not Found"
    assert error_message(500, b'{"object": "error", "message": "boom", "code": 500}') == "boom"


def test_stream_cut_mid_way_gives_an_error_event_then_done(gw: Gateway, fake_a: FakeVLLM) -> None:
    fake_a.faults.cut_after_chunks = 2
    r = chat(gw, stream=True, stream_options={"include_usage": True})
    assert r.status_code == 200
    events = sse_events(r.text)
    assert events[-1] == "[DONE]"
    err = json.loads(events[-2])
    assert set(err["error"]) == {"message", "type", "param", "code"}
    content = [json.loads(e) for e in events[:-2]]
    assert len(content) == 3 and all(c["model"] == "model-a" for c in content)  # role + 2 pieces


def test_upstream_error_event_mid_stream_is_normalised(gw: Gateway, fake_a: FakeVLLM) -> None:
    fake_a.faults.error_after_chunks = 1
    events = sse_events(chat(gw, stream=True).text)
    assert events[-1] == "[DONE]"
    err = json.loads(events[-2])["error"]
    assert err["code"] == "upstream_error" and "engine died" in err["message"]


def test_stream_fails_over_before_the_first_byte(gw: Gateway, fake_a: FakeVLLM) -> None:
    fake_a.faults.fail_times = 2
    r = chat(gw, stream=True)
    assert r.status_code == 200 and r.headers["x-junction-model"] == "model-b"
    events = sse_events(r.text)
    assert events[-1] == "[DONE]" and json.loads(events[0])["model"] == "model-b"


def test_usage_chunk_with_choices_is_split_into_the_spec_shape(
    gw: Gateway, fake_a: FakeVLLM
) -> None:
    fake_a.faults.usage_with_choices = True
    events = sse_events(chat(gw, stream=True, stream_options={"include_usage": True}).text)
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 8
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop" and chunks[-2]["usage"] is None


def test_backend_without_usage_still_gives_a_counted_usage_chunk(
    gw: Gateway, fake_a: FakeVLLM
) -> None:
    fake_a.faults.omit_usage = True  # what llama.cpp's server does
    events = sse_events(chat(gw, stream=True, stream_options={"include_usage": True}).text)
    last = json.loads(events[-2])
    assert last["choices"] == []
    u = last["usage"]
    assert u["completion_tokens"] > 0 and u["prompt_tokens"] > 0
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]
    assert (
        "stream_options" in fake_a.requests[-1]
        and fake_a.requests[-1]["stream_options"]["include_usage"] is True
    )
