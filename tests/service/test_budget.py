"""Conversation token budgets: the TAB policy sets each turn's max_tokens, reserved atomically.

The ledger primitive (in-process and Redis) under concurrency and across a restart; the gateway
with a fake vLLM (policy-chosen max_tokens, clamping, a clear 429, replicas sharing Redis); and
the real SmolLM2 CPU server under concurrent turns of one conversation.
"""

from __future__ import annotations

import asyncio
import importlib.util
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from budget_controller import BudgetController
from service.llama_server import ALIAS, LlamaServer
from service.state import MemoryStore, RedisStore, StateStore
from tests.service.helpers import (
    ADMIN,
    Gateway,
    HashEncoder,
    assert_error_shape,
    free_port,
    make_settings,
    run_gateway,
)

TTL = 3600


async def _hammer(store: StateStore, key: str, *, total: int, n: int, wanted: int) -> list[int]:
    grants = await asyncio.gather(
        *(store.budget_reserve(key, total=total, wanted=wanted, ttl_s=TTL) for _ in range(n))
    )
    return [g.granted for g in grants]


async def _ledger_contract(store: StateStore, key: str) -> None:
    granted = await _hammer(store, key, total=100, n=40, wanted=7)
    assert sum(granted) == 100 and max(granted) == 7 and granted.count(0) == 40 - 15
    ledger = await store.budget_get(key)
    assert ledger is not None and ledger.reserved == 100 and ledger.left == 0
    # settle: a turn used 3 of its 7 tokens (4 come back); another claims 50 (capped at 7)
    after = await store.budget_settle(key, granted=7, used=3, truncated=False, turn=True, ttl_s=TTL)
    assert after is not None and after.spent == 3 and after.reserved == 93 and after.left == 4
    after = await store.budget_settle(key, granted=7, used=50, truncated=True, turn=True, ttl_s=TTL)
    assert after is not None and after.spent == 10 and after.turns == 2
    assert after.any_truncated and after.last_truncated
    # a failed attempt gives its grant back without counting a turn
    after = await store.budget_settle(
        key, granted=7, used=0, truncated=False, turn=False, ttl_s=TTL
    )
    assert after is not None and after.turns == 2 and after.left == 4 + 7
    # the first reservation fixed the total: a later, larger total does not raise it
    g = await store.budget_reserve(key, total=10_000, wanted=1000, ttl_s=TTL)
    assert g.granted == 11 and g.ledger.total == 100
    assert (
        await store.budget_settle(
            "missing", granted=1, used=1, truncated=False, turn=True, ttl_s=TTL
        )
        is None
    )


def test_memory_ledger_never_overgrants() -> None:
    asyncio.run(_ledger_contract(MemoryStore(), "budget:c"))


def test_redis_ledger_never_overgrants_and_survives_restart(redis_url, redis_prefix) -> None:
    async def run() -> None:
        store = RedisStore(redis_url, prefix=redis_prefix)
        await _ledger_contract(store, "budget:c")
        before = await store.budget_get("budget:c")
        await store.close()
        again = RedisStore(redis_url, prefix=redis_prefix)  # a restarted gateway
        assert await again.budget_get("budget:c") == before
        await again.close()

    asyncio.run(run())


def _chat(
    text: str, *, conv: str, total: int, history: list[str] = (), **kw: Any
) -> dict[str, Any]:
    msgs: list[dict[str, str]] = []
    for h in history:
        msgs += [{"role": "user", "content": h}, {"role": "assistant", "content": "ok"}]
    msgs.append({"role": "user", "content": text})
    return {
        "model": "junction/auto",
        "messages": msgs,
        "budget": {"conversation_id": conv, "total_tokens": total},
        **kw,
    }


@pytest.fixture(scope="module")
def controller() -> BudgetController:
    return BudgetController.load()


def test_policy_sets_max_tokens_and_a_spent_budget_gets_a_429(
    gateway: Gateway, fake_a, controller: BudgetController
) -> None:
    fake_a.reply = " ".join(f"w{i}" for i in range(400))  # long: every turn runs to its cap
    gateway.register("model-a", fake_a.url, backend_model="backend-a")
    q1 = "Which gas makes up most of the Earth's atmosphere?"
    expected = controller.choose(
        embedding=HashEncoder().encode([q1])[0],
        turn=0,
        used=0,
        total=500,
        any_truncated=False,
        last_truncated=False,
    )
    r = gateway.client.post(
        "/v1/chat/completions", headers=ADMIN, json=_chat(q1, conv="k", total=500)
    )
    assert r.status_code == 200, r.text
    sent = fake_a.requests[-1]
    assert (
        sent["max_tokens"] == min(expected, 500) == int(r.headers["x-junction-budget-max-tokens"])
    )
    assert "budget" not in sent
    used = r.json()["usage"]["completion_tokens"]
    assert used == sent["max_tokens"] and r.json()["choices"][0]["finish_reason"] == "length"
    assert int(r.headers["x-junction-budget-remaining"]) == 500 - used
    # the client's own max_tokens is a ceiling the policy cannot raise
    r = gateway.client.post(
        "/v1/chat/completions",
        headers=ADMIN,
        json=_chat("And the second most?", conv="k", total=500, history=[q1], max_tokens=3),
    )
    assert fake_a.requests[-1]["max_tokens"] == 3 and r.json()["usage"]["completion_tokens"] == 3
    spent = used + 3
    for i in range(200):
        r = gateway.client.post(
            "/v1/chat/completions",
            headers=ADMIN,
            json=_chat(f"follow-up {i}", conv="k", total=500, history=[q1]),
        )
        if r.status_code != 200:
            break
        assert r.json()["usage"]["completion_tokens"] == fake_a.requests[-1]["max_tokens"]
        spent += r.json()["usage"]["completion_tokens"]
        assert spent <= 500 and int(r.headers["x-junction-budget-remaining"]) == 500 - spent
    assert spent == 500  # every token of the budget was usable, and none more
    err = assert_error_shape(r, 429, "conversation_budget_exceeded")
    assert "500" in err["message"] and err["param"] == "budget.total_tokens"
    n = fake_a.count
    r = gateway.client.post(
        "/v1/chat/completions", headers=ADMIN, json=_chat("more", conv="k", total=500)
    )
    assert r.status_code == 429 and fake_a.count == n  # refused before any backend call


def test_streamed_turns_are_capped_and_settled(gateway: Gateway, fake_a) -> None:
    fake_a.reply = " ".join(f"w{i}" for i in range(400))
    gateway.register("model-a", fake_a.url, backend_model="backend-a")
    body = _chat("Tell me about rivers.", conv="s", total=300, stream=True)
    with gateway.client.stream("POST", "/v1/chat/completions", headers=ADMIN, json=body) as r:
        assert r.status_code == 200
        cap = int(r.headers["x-junction-budget-max-tokens"])
        # sent before the turn ends: what is left with this turn's whole grant held
        assert int(r.headers["x-junction-budget-remaining"]) == 300 - cap
        text = "".join(r.iter_text())
    assert fake_a.requests[-1]["max_tokens"] == cap and "[DONE]" in text
    # the stream's usage is recorded just after [DONE]: the whole cap was generated and spent
    key = "budget:conv:admin:s"
    for _ in range(100):
        ledger = asyncio.run_coroutine_threadsafe(
            gateway.c.store.budget_get(key), gateway.server_loop()
        ).result(10)
        if ledger is not None and ledger.reserved == 0:
            break
        time.sleep(0.05)
    assert ledger is not None and ledger.reserved == 0
    assert ledger.spent == cap and ledger.turns == 1 and ledger.last_truncated
    r = gateway.client.post(
        "/v1/chat/completions", headers=ADMIN, json=_chat("More.", conv="s", total=300)
    )
    assert r.status_code == 200
    n = r.json()["usage"]["completion_tokens"]
    assert int(r.headers["x-junction-budget-remaining"]) == 300 - cap - n


def test_replicas_share_one_budget_under_concurrency(
    tmp_path, fake_a, redis_url, redis_prefix
) -> None:
    fake_a.reply = " ".join(f"w{i}" for i in range(400))
    s1 = make_settings(tmp_path, redis_url=redis_url, redis_prefix=redis_prefix)
    with (
        run_gateway(s1) as g1,
        run_gateway(s1.model_copy(update={"database_url": s1.database_url})) as g2,
    ):
        g1.register("model-a", fake_a.url, backend_model="backend-a")

        def turn(i: int) -> httpx.Response:
            gw = (g1, g2)[i % 2]
            return gw.client.post(
                "/v1/chat/completions",
                headers=ADMIN,
                json=_chat(f"question number {i} about chemistry", conv="shared", total=700),
            )

        for _ in range(100):  # g2 learns of model-a through the shared registry version
            ids = [m["id"] for m in g2.client.get("/v1/models", headers=ADMIN).json()["data"]]
            if "model-a" in ids:
                break
            time.sleep(0.05)
        assert "model-a" in ids
        with ThreadPoolExecutor(12) as pool:
            rs = list(pool.map(turn, range(48)))
        ok = [r for r in rs if r.status_code == 200]
        used = sum(r.json()["usage"]["completion_tokens"] for r in ok)
        assert ok and used <= 700
        for r in rs:
            if r.status_code != 200:
                assert_error_shape(r, 429, "conversation_budget_exceeded")
        # a restarted gateway (a third app on the same Redis) sees what is left
        with run_gateway(s1) as g3:
            r = g3.client.post(
                "/v1/chat/completions",
                headers=ADMIN,
                json=_chat("after restart", conv="shared", total=700),
            )
            if used == 700:
                assert_error_shape(r, 429, "conversation_budget_exceeded")
            else:
                assert r.status_code == 200
                assert r.json()["usage"]["completion_tokens"] <= 700 - used


# --- the real CPU model


@pytest.fixture(scope="module")
def llama() -> Iterator[LlamaServer]:
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed (pip install 'llama-cpp-python[server]')")
    srv = LlamaServer(port=free_port())
    srv.start()
    yield srv
    srv.stop()


@pytest.mark.integration
@pytest.mark.slow
def test_smollm2_turns_are_capped_and_the_total_holds_under_concurrency(tmp_path, llama) -> None:
    from training.encoder import QueryEncoder

    settings = make_settings(
        tmp_path, smollm2_url=llama.url, min_evaluations=16, upstream_read_timeout_s=60
    )
    total = 400
    prompts = [
        "Explain in detail how photosynthesis works.",
        "Write a long story about a dragon.",
        "List the planets of the solar system and describe each.",
        "Describe the history of Rome.",
        "How do vaccines work? Explain step by step.",
        "What is the capital of France?",
    ]
    # The real MiniLM encoder: the policy predicts each turn's length from the query text.
    with run_gateway(settings, encoder=QueryEncoder()) as gw:

        def turn(i: int) -> httpx.Response:
            body = _chat(prompts[i % len(prompts)], conv="live", total=total, temperature=0)
            body["model"] = ALIAS
            return gw.client.post("/v1/chat/completions", headers=ADMIN, json=body, timeout=120)

        with ThreadPoolExecutor(4) as pool:
            rs = list(pool.map(turn, range(16)))
        ok = [r for r in rs if r.status_code == 200]
        assert len(ok) >= 2, [r.text for r in rs]
        used, caps = 0, []
        for r in ok:
            cap = int(r.headers["x-junction-budget-max-tokens"])
            n = r.json()["usage"]["completion_tokens"]
            assert 0 < n <= cap  # the policy's max_tokens caps the real completion
            used += n
            caps.append(cap)
        assert used <= total
        assert min(caps) < total  # turns got the policy's share, not the whole budget
        assert any(r.json()["choices"][0]["finish_reason"] == "length" for r in ok)
        refused = [r for r in rs if r.status_code != 200]
        assert refused  # 16 turns cannot fit in 400 tokens of long answers
        for r in refused:
            assert_error_shape(r, 429, "conversation_budget_exceeded")
        ledger = asyncio.run_coroutine_threadsafe(
            gw.c.store.budget_get("budget:conv:admin:live"), gw.server_loop()
        ).result(10)
        assert ledger is not None and ledger.spent == used and ledger.reserved == 0
