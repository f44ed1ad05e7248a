"""Conversation identity only from an explicit id; stickiness follows the router's choice, not a
fallback (issue 13, finding 6)."""

from __future__ import annotations

from tests.service.helpers import ADMIN, Gateway, assert_error_shape

HI = [{"role": "user", "content": "hi"}]


def chat(gw: Gateway, messages=HI, **headers: str):
    return gw.client.post(
        "/v1/chat/completions",
        headers={**ADMIN, **headers},
        json={"model": "junction/auto", "messages": messages},
    )


def test_same_first_message_without_an_id_shares_nothing(gateway: Gateway, fake_a) -> None:
    gateway.register("model-a", fake_a.url, backend_model="backend-a")
    fake_a.reply = " ".join(["word"] * 12)  # 12 tokens a turn: two turns would spend 20
    # four independent "hi" requests with a budget of 20 tokens each: none is over budget
    for _ in range(4):
        r = gateway.client.post(
            "/v1/chat/completions",
            headers={**ADMIN, "x-junction-budget-tokens": "20"},
            json={"model": "junction/auto", "messages": HI},
        )
        assert r.status_code == 200, r.text
        assert r.headers["x-junction-sticky"] == "false"


def test_an_explicit_id_shares_the_budget(gateway: Gateway, fake_a) -> None:
    gateway.register("model-a", fake_a.url, backend_model="backend-a")
    fake_a.reply = " ".join(["word"] * 12)
    spent = []
    for _ in range(3):
        r = gateway.client.post(
            "/v1/chat/completions",
            headers={**ADMIN, "x-junction-budget-tokens": "20", "x-conversation-id": "conv-1"},
            json={"model": "junction/auto", "messages": HI},
        )
        spent.append(r.status_code)
    assert spent[0] == 200 and spent[-1] == 429  # 20 tokens are shared by the id


def test_conversation_id_header_is_bounded(gateway: Gateway) -> None:
    r = chat(gateway, **{"x-conversation-id": "x" * 201})
    assert_error_shape(r, 400)


def test_stickiness_after_a_fallback_returns_to_the_primary(
    gateway: Gateway, fake_a, fake_b
) -> None:
    # 0.75 vs 0.72: within the stickiness margin, so whichever model the conversation is
    # pinned to keeps it; it must be the router's choice, not the fallback's
    gateway.register("model-a", fake_a.url, backend_model="backend-a", scores=(1, 1, 1, 0))
    gateway.register("model-b", fake_b.url, backend_model="backend-b", scores=[1] * 18 + [0] * 7)
    conv = {"x-conversation-id": "c-fallback"}
    fake_a.faults.fail_times = 2  # the primary fails this turn (retry included)
    r = chat(gateway, **conv)
    assert r.json()["model"] == "model-b" and r.headers["x-junction-fallbacks"] == "1"
    gateway.c.health.record_success("model-a")  # the primary recovers (what a probe does)
    r = chat(gateway, messages=[*HI, {"role": "user", "content": "and again"}], **conv)
    assert r.json()["model"] == "model-a", r.headers
