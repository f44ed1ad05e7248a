"""Fallback until the candidates are exhausted, within a total deadline; cooldown for every
failure class (issue 13, finding 2). Backends are the vLLM-protocol fake over real sockets."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from service.cli.fake_vllm import FakeVLLM
from tests.service.helpers import ADMIN, Gateway, assert_error_shape, make_settings, run_gateway

MSG = [{"role": "user", "content": "Which river runs through Paris?"}]
ALWAYS = 10**9


@pytest.fixture
def fakes() -> Iterator[list[FakeVLLM]]:
    fs = [FakeVLLM(model=f"backend-{i}") for i in range(4)]
    for f in fs:
        f.start_in_thread()
    yield fs
    for f in fs:
        f.stop()


def _gateway(tmp_path, fakes: list[FakeVLLM], **kw) -> Iterator[Gateway]:
    settings = {"upstream_read_timeout_s": 0.5, "cooldown_after_failures": 2, **kw}
    with run_gateway(make_settings(tmp_path, **settings)) as g:
        # model-0 is predicted best, model-3 worst (mean score = p_correct in these tests)
        for i, f in enumerate(fakes):
            scores = [1] * (4 - i) + [0] * i
            r = g.register(f"model-{i}", f.url, backend_model=f"backend-{i}", scores=scores)
            assert r.status_code == 201, r.text
        yield g


@pytest.fixture
def gw(tmp_path, fakes: list[FakeVLLM]) -> Iterator[Gateway]:
    yield from _gateway(tmp_path, fakes)


def chat(gw: Gateway, content: str = "Which river runs through Paris?", **kw) -> httpx.Response:
    return gw.client.post(
        "/v1/chat/completions",
        headers=ADMIN,
        json={"model": "junction/auto", "messages": [{"role": "user", "content": content}], **kw},
    )


def test_three_failing_models_above_the_healthy_one_never_fail_a_request(
    gw: Gateway, fakes: list[FakeVLLM]
) -> None:
    for f in fakes[:3]:
        f.faults.fail_times, f.faults.fail_status = ALWAYS, 503

    def one(i: int) -> httpx.Response:
        with httpx.Client(base_url=gw.url, timeout=30) as c:
            return c.post(
                "/v1/chat/completions",
                headers=ADMIN,
                json={"model": "junction/auto", "messages": [{"role": "user", "content": f"q{i}"}]},
            )

    with ThreadPoolExecutor(12) as ex:
        rs = list(ex.map(one, range(12)))
    assert [r.status_code for r in rs] == [200] * 12
    assert {r.json()["model"] for r in rs} == {"model-3"}
    assert all(gw.c.health.cooling(f"model-{i}") for i in range(3))


def test_a_backend_answering_400_to_everything_is_bypassed_then_cooled_down(
    gw: Gateway, fakes: list[FakeVLLM]
) -> None:
    fakes[0].faults.fail_times, fakes[0].faults.fail_status = ALWAYS, 400
    for i in range(2):
        r = chat(gw, content=f"question {i}")
        assert r.status_code == 200 and r.json()["model"] == "model-1", r.text
    assert gw.c.health.cooling("model-0")
    before = fakes[0].count
    assert chat(gw, content="third").json()["model"] == "model-1"
    assert fakes[0].count == before  # not tried while cooling down
    # a request every backend refuses is the client's fault: 400, and nobody else cools down
    for f in fakes[1:]:
        f.faults.fail_times, f.faults.fail_status = 1, 400
    r = chat(gw, content="fourth")
    assert_error_shape(r, 400, "upstream_rejected")
    assert not any(gw.c.health.cooling(f"model-{i}") for i in (1, 2, 3))


def test_a_backend_that_always_cuts_streams_is_cooled_down(
    gw: Gateway, fakes: list[FakeVLLM]
) -> None:
    fakes[0].faults.cut_after_chunks = 2
    for i in range(2):
        r = chat(gw, content=f"stream {i} with enough words to be cut", stream=True)
        assert r.status_code == 200
        assert '"error"' in r.text and r.text.endswith("data: [DONE]\n\n")
        assert r.headers["x-junction-model"] == "model-0"
    assert gw.c.health.cooling("model-0")
    r = chat(gw, content="stream 3 with enough words to be cut", stream=True)
    assert r.headers["x-junction-model"] == "model-1" and '"error"' not in r.text


def test_a_clean_stream_ends_a_failure_streak(gw: Gateway, fakes: list[FakeVLLM]) -> None:
    fakes[0].faults.cut_after_chunks = 2
    chat(gw, content="one two three four five", stream=True)
    fakes[0].faults.cut_after_chunks = None
    assert '"error"' not in chat(gw, content="clean", stream=True).text
    fakes[0].faults.cut_after_chunks = 2
    chat(gw, content="one two three four five six", stream=True)
    assert not gw.c.health.cooling("model-0")  # failures were not in a row


def test_a_hung_backend_costs_one_read_timeout(gw: Gateway, fakes: list[FakeVLLM]) -> None:
    fakes[0].faults.delay_s = 3.0  # read timeout 0.5 s
    t0 = time.perf_counter()
    r = chat(gw)
    elapsed = time.perf_counter() - t0
    assert r.status_code == 200 and r.json()["model"] == "model-1"
    assert fakes[0].count == 1  # no second attempt on the hung backend
    assert elapsed < 0.95, elapsed  # one 0.5 s timeout, not two


def test_attempts_stop_at_the_total_deadline(tmp_path, fakes: list[FakeVLLM]) -> None:
    for f in fakes:
        f.faults.delay_s = 3.0
    for gw in _gateway(tmp_path, fakes, fallback_deadline_s=1.2):
        t0 = time.perf_counter()
        r = chat(gw)
        elapsed = time.perf_counter() - t0
        assert_error_shape(r, 504, "upstream_timeout")
        assert elapsed < 1.6, elapsed
        assert sum(f.count for f in fakes) == 3  # 0.5 + 0.5 + the 0.2 s left
