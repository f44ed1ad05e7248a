"""Operator-facing findings of issue 13 (7): secrets at start-up, /metrics behind the admin
token, a locked database is a 503 with Retry-After and readiness says so."""

from __future__ import annotations

import json
import sqlite3

import pytest
from pydantic import ValidationError

from service.settings import DEFAULT_ADMIN_TOKEN, Settings
from tests.service.helpers import ADMIN, Gateway, assert_error_shape, make_settings, run_gateway


@pytest.mark.parametrize(
    "token",
    [
        DEFAULT_ADMIN_TOKEN.upper(),
        " " + DEFAULT_ADMIN_TOKEN.title() + " ",
        " " * 16,
        "a" * 32,
        "short-secret",
        "secret with spaces in it",
    ],
)
def test_production_refuses_weak_admin_tokens_without_printing_them(token: str) -> None:
    with pytest.raises(ValidationError) as info:
        Settings(environment="production", admin_token=token)
    text = str(info.value)
    assert "JUNCTION_ADMIN_TOKEN" in text
    if token.strip():
        assert token.strip() not in text


def test_production_accepts_a_real_secret() -> None:
    s = Settings(environment="production", admin_token="Zq7-w2Lp9xVr4Kt8Nb3")
    assert s.environment == "production"


def test_metrics_need_the_admin_token_unless_public(tmp_path, gateway: Gateway) -> None:
    assert_error_shape(gateway.client.get("/metrics"), 401)
    assert gateway.client.get("/metrics", headers=ADMIN).status_code == 200
    with run_gateway(make_settings(tmp_path / "pub", metrics_public=True)) as gw:
        assert gw.client.get("/metrics").status_code == 200


def test_a_locked_database_is_a_503_with_retry_after_and_not_ready(
    tmp_path, gateway: Gateway
) -> None:
    path = str(gateway.c.settings.database_url).split("///", 1)[1]
    holder = sqlite3.connect(path, timeout=1)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        r = gateway.admin("POST", "/admin/keys", json={"name": "blocked"})
        err = assert_error_shape(r, 503, "database_busy")
        assert r.headers["retry-after"] == "1"
        assert "busy" in err["message"]
        ready = gateway.client.get("/health/readiness")
        assert ready.status_code == 503 and ready.json()["database"] in ("busy", "down")
    finally:
        holder.rollback()
        holder.close()
    # the connection that got the 503 is still usable, and writes work again
    assert gateway.admin("POST", "/admin/keys", json={"name": "after"}).status_code == 201


def test_streamed_usage_counts_the_prompt_as_the_chat_template_renders_it(
    gateway: Gateway, fake_a
) -> None:
    """llama.cpp sends no usage in streams; the gateway counts. It counted the message texts
    alone (12 tokens where the backend's own JSON usage said 38)."""
    from service.tokens import count_tokens

    gateway.register("model-a", fake_a.url, backend_model="backend-a")
    fake_a.faults.omit_usage = True
    question = "What is the capital of France?"
    r = gateway.client.post(
        "/v1/chat/completions",
        headers=ADMIN,
        json={
            "model": "junction/auto",
            "messages": [{"role": "user", "content": question}],
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    )
    events = [e[6:] for e in r.text.split("\n\n") if e.startswith("data: ")]
    usage = json.loads(events[-2])["usage"]
    rendered = (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
        f"Face<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
    )
    assert usage["prompt_tokens"] == count_tokens([rendered])[0] > 30
