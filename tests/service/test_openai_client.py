"""The official ``openai`` client against a running gateway: chat, streaming with usage, models, errors."""

from __future__ import annotations

import openai
import pytest

from tests.service.helpers import ADMIN_TOKEN, Gateway


@pytest.fixture
def client(gateway: Gateway, fake_a, fake_b) -> openai.OpenAI:
    assert (
        gateway.register(
            "model-a", fake_a.url, backend_model="backend-a", scores=(1, 1, 1, 0)
        ).status_code
        == 201
    )
    assert (
        gateway.register(
            "model-b", fake_b.url, backend_model="backend-b", scores=(1, 0, 0, 0), price=(0.1, 0.2)
        ).status_code
        == 201
    )
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=ADMIN_TOKEN, max_retries=0)


def test_chat_routes_and_reports_the_served_model(client: openai.OpenAI, fake_a) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="junction/auto", messages=[{"role": "user", "content": "What is 2 + 2?"}]
    )
    resp = raw.parse()
    assert resp.model == "model-a"  # p 0.75 vs 0.25 at lambda 0
    assert resp.choices[0].message.content == "backend-a says: What is 2 + 2?"
    assert (
        resp.usage is not None
        and resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens
    )
    h = raw.headers
    assert h["x-junction-model"] == "model-a"
    assert h["x-junction-router"] == "locus"
    assert float(h["x-junction-p-correct"]) == pytest.approx(0.75)
    assert float(h["x-junction-cost-usd"]) > 0
    assert float(h["x-junction-overhead-ms"]) >= 0
    assert h["x-junction-fallbacks"] == "0"
    assert raw.request_id  # x-request-id
    assert fake_a.requests[-1]["model"] == "backend-a"


def test_lambda_and_candidates_through_extra_body_and_headers(client: openai.OpenAI) -> None:
    # a high price sensitivity picks the cheap model
    r = client.chat.completions.create(
        model="junction/auto",
        messages=[{"role": "user", "content": "hello"}],
        extra_body={"routing": {"lambda": 1_000_000}},
    )
    assert r.model == "model-b"
    r = client.chat.completions.create(
        model="junction/auto",
        messages=[{"role": "user", "content": "hello again"}],
        extra_headers={"x-junction-candidates": "model-b"},
    )
    assert r.model == "model-b"


def test_concrete_model_bypasses_routing(client: openai.OpenAI, fake_b) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="model-b", messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.parse().model == "model-b"
    assert raw.headers["x-junction-router"] == "none"
    assert fake_b.count == 1


def test_unknown_fields_are_forwarded_and_max_tokens_unified(client: openai.OpenAI, fake_a) -> None:
    client.chat.completions.create(
        model="model-a",
        messages=[{"role": "user", "content": "one two three"}],
        max_completion_tokens=7,
        extra_body={
            "top_k": 5,
            "chat_template_kwargs": {"enable_thinking": False},
            "routing": {"lambda": 0},
        },
        tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
    )
    sent = fake_a.requests[-1]
    assert sent["top_k"] == 5 and sent["chat_template_kwargs"] == {"enable_thinking": False}
    assert sent["tools"][0]["function"]["name"] == "f"
    assert sent["max_tokens"] == 7 and "max_completion_tokens" not in sent
    assert "routing" not in sent and "budget" not in sent
    client.chat.completions.create(
        model="model-a", messages=[{"role": "user", "content": "x"}], max_tokens=3
    )
    assert fake_a.requests[-1]["max_tokens"] == 3


def test_stream_with_usage_ends_with_the_spec_usage_chunk(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="junction/auto",
            messages=[{"role": "user", "content": "tell me"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert all(c.model == "model-a" for c in chunks)
    *body, last = chunks
    assert last.choices == [] and last.usage is not None and last.usage.completion_tokens == 4
    assert all(c.usage is None for c in body)
    text = "".join(c.choices[0].delta.content or "" for c in body)
    assert text == "backend-a says: tell me"
    assert body[-1].choices[0].finish_reason == "stop"


def test_stream_without_usage_sends_no_usage(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="model-a", messages=[{"role": "user", "content": "x"}], stream=True
        )
    )
    assert all(c.choices for c in chunks)
    assert all(getattr(c, "usage", None) is None for c in chunks)


def test_models_list(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert ids[0] == "junction/auto"
    assert set(ids) == {"junction/auto", "model-a", "model-b"}


def test_completions_endpoint(client: openai.OpenAI, fake_a) -> None:
    r = client.completions.create(model="junction/auto", prompt="Once upon", max_tokens=2)
    assert r.model == "model-a"
    assert r.choices[0].text == "backend-a says:"
    assert r.choices[0].finish_reason == "length"
    stream = list(
        client.completions.create(
            model="model-a", prompt="hi", stream=True, stream_options={"include_usage": True}
        )
    )
    assert stream[-1].choices == [] and stream[-1].usage is not None


def test_errors_surface_as_openai_exceptions(client: openai.OpenAI, gateway: Gateway) -> None:
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "x"}]
        )
    assert e.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="junction/auto", messages=[])
    bad = openai.OpenAI(base_url=gateway.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def test_bare_chat_completions_path(gateway: Gateway, client: openai.OpenAI) -> None:
    r = gateway.client.post(
        "/chat/completions",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        json={"model": "model-a", "messages": [{"role": "user", "content": "x"}]},
    )
    assert r.status_code == 200 and r.json()["model"] == "model-a"
