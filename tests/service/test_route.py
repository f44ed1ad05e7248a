"""``POST /v1/route`` and routing on the conversation (stickiness, token budgets, replay)."""

from __future__ import annotations

from service.upstream.replay import ReplayBackend
from tests.service.helpers import (
    ADMIN,
    DictReplay,
    Gateway,
    assert_error_shape,
    make_settings,
    run_gateway,
)


def test_route_returns_sorted_candidates_without_calling_backends(
    gateway: Gateway, fake_a, fake_b
) -> None:
    gateway.register(
        "model-a", fake_a.url, backend_model="backend-a", scores=(1, 1, 1, 0), price=(10, 10)
    )
    gateway.register(
        "model-b", fake_b.url, backend_model="backend-b", scores=(1, 1, 0, 0), price=(0.1, 0.1)
    )
    r = gateway.client.post("/v1/route", headers=ADMIN, json={"prompt": "What is 2 + 2?"})
    assert r.status_code == 200
    body = r.json()
    assert body["model"] == "model-a" and body["router"] == "locus"
    cands = body["candidates"]
    assert [c["model"] for c in cands] == ["model-a", "model-b"]
    assert cands[0]["p_correct"] == 0.75 and cands[0]["utility"] == 0.75
    assert cands[0]["cost"] > cands[1]["cost"] > 0
    r = gateway.client.post(
        "/v1/route",
        headers=ADMIN,
        json={"messages": [{"role": "user", "content": "hi"}], "lambda": 1e5},
    )
    assert r.json()["model"] == "model-b"
    utils = [c["utility"] for c in r.json()["candidates"]]
    assert utils == sorted(utils, reverse=True)
    r = gateway.client.post(
        "/v1/route", headers=ADMIN, json={"prompt": "x", "candidates": ["model-b"]}
    )
    assert [c["model"] for c in r.json()["candidates"]] == ["model-b"]
    assert fake_a.count == 0 and fake_b.count == 0
    assert_error_shape(
        gateway.client.post(
            "/v1/route", headers=ADMIN, json={"prompt": "x", "candidates": ["zzz"]}
        ),
        404,
        "model_not_found",
    )
    assert_error_shape(
        gateway.client.post(
            "/v1/route",
            headers=ADMIN,
            json={"prompt": "x", "messages": [{"role": "user", "content": "y"}]},
        ),
        400,
    )
    assert_error_shape(
        gateway.client.post("/v1/route", headers=ADMIN, json={"prompt": "x", "lambda": -1}), 400
    )


def _conv(text: str, history: list[dict] | None = None) -> list[dict]:
    return [*(history or []), {"role": "user", "content": text}]


CONV = {**ADMIN, "x-conversation-id": "sorting-session"}


def test_conversation_sticks_to_its_model_unless_the_gain_is_clear(
    gateway: Gateway, fake_a, fake_b
) -> None:
    gateway.register("model-a", fake_a.url, backend_model="backend-a", scores=(1, 1, 1, 0))  # 0.75
    gateway.register(
        "model-b", fake_b.url, backend_model="backend-b", scores=[1] * 18 + [0] * 7
    )  # 0.72
    # turn 1: only model-b is a candidate
    first = gateway.client.post(
        "/v1/chat/completions",
        headers=CONV,
        json={
            "model": "junction/auto",
            "messages": _conv("Write a sorting function"),
            "routing": {"candidates": ["model-b"]},
        },
    )
    assert first.json()["model"] == "model-b"
    history = _conv("Write a sorting function") + [
        {"role": "assistant", "content": first.json()["choices"][0]["message"]["content"]}
    ]
    # turn 2 (same conversation, named by its id): model-a is only 0.03 better: stay
    second = gateway.client.post(
        "/v1/chat/completions",
        headers=CONV,
        json={"model": "junction/auto", "messages": _conv("commit it", history)},
    )
    assert second.json()["model"] == "model-b"
    assert second.headers["x-junction-sticky"] == "true"
    # a fresh conversation picks by utility alone
    third = gateway.client.post(
        "/v1/chat/completions",
        headers=ADMIN,
        json={"model": "junction/auto", "messages": _conv("unrelated")},
    )
    assert third.json()["model"] == "model-a" and third.headers["x-junction-sticky"] == "false"
    # a clear gain switches: a much better model appears
    gateway.register("model-c", fake_a.url, backend_model="backend-a", scores=(1, 1, 1, 1))
    fourth = gateway.client.post(
        "/v1/chat/completions",
        headers=CONV,
        json={"model": "junction/auto", "messages": _conv("and test it", history)},
    )
    assert fourth.json()["model"] == "model-c" and fourth.headers["x-junction-sticky"] == "false"


def test_conversation_token_budget(gateway: Gateway, fake_a) -> None:
    gateway.register("model-a", fake_a.url, backend_model="backend-a")
    body = {
        "model": "junction/auto",
        "messages": _conv("hello there"),
        "budget": {"conversation_id": "c1", "total_tokens": 30},
    }
    r = gateway.client.post("/v1/chat/completions", headers=ADMIN, json=body)
    assert r.status_code == 200
    assert 0 < fake_a.requests[-1]["max_tokens"] <= 30  # the TAB policy picks, within 30
    # the budget counts completion tokens, the ones max_tokens controls (tests/service/test_budget.py)
    assert (
        int(r.headers["x-junction-budget-remaining"]) == 30 - r.json()["usage"]["completion_tokens"]
    )
    for _ in range(10):  # 4 completion tokens a turn
        r = gateway.client.post("/v1/chat/completions", headers=ADMIN, json=body)
        if r.status_code != 200:
            break
    assert_error_shape(r, 429, "conversation_budget_exceeded")
    # header form
    r = gateway.client.post(
        "/v1/chat/completions",
        headers={**ADMIN, "x-conversation-id": "c2", "x-junction-budget-tokens": "2"},
        json={"model": "model-a", "messages": _conv("one two three four")},
    )
    assert r.json()["choices"][0]["finish_reason"] == "length"


def test_replay_models_answer_only_recorded_prompts(tmp_path, fake_a) -> None:
    replay = ReplayBackend(
        loader=lambda: DictReplay({("Yi-6B", "Which is prime? A) 4 B) 7"): "The answer is (B)"})
    )
    with run_gateway(make_settings(tmp_path), replay=replay) as gw:
        r = gw.admin(
            "POST",
            "/admin/models",
            json={
                "name": "Yi-6B",
                "backend": {"kind": "replay", "dataset": "mmlu_pro"},
                "pricing": {"input_per_mtok": 0.1, "output_per_mtok": 0.1},
                "evaluations": [{"query": f"q{i}", "score": 1} for i in range(4)],
            },
        )
        assert r.status_code == 201
        gw.register("model-a", fake_a.url, backend_model="backend-a", scores=(0, 0, 0, 1))
        r = gw.client.post(
            "/v1/chat/completions",
            headers=ADMIN,
            json={"model": "junction/auto", "messages": _conv("Which is prime? A) 4 B) 7")},
        )
        assert (
            r.json()["model"] == "Yi-6B"
            and r.json()["choices"][0]["message"]["content"] == "The answer is (B)"
        )
        assert (
            r.headers["x-junction-backend"] == "replay"
            and r.json()["system_fingerprint"] == "junction-replay"
        )
        r = gw.client.post(
            "/v1/chat/completions",
            headers=ADMIN,
            json={"model": "junction/auto", "messages": _conv("something new")},
        )
        assert r.json()["model"] == "model-a"  # never a different model pretending to be Yi-6B
        r = gw.client.post(
            "/v1/chat/completions",
            headers=ADMIN,
            json={"model": "Yi-6B", "messages": _conv("something new")},
        )
        assert_error_shape(r, 400, "replay_miss")
        r = gw.client.post(
            "/v1/chat/completions",
            headers=ADMIN,
            json={
                "model": "Yi-6B",
                "stream": True,
                "stream_options": {"include_usage": True},
                "messages": _conv("Which is prime? A) 4 B) 7"),
            },
        )
        assert (
            r.status_code == 200
            and r.text.endswith("data: [DONE]\n\n")
            and '"choices":[]' in r.text
        )
