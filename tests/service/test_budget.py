"""Conversation token budgets: the TAB policy sets each turn's max_tokens, reserved atomically.

The ledger primitive (in-process, Redis, and the database ledger on SQLite and PostgreSQL) under
concurrency, across replicas and across a restart; the gateway with a fake vLLM (policy-chosen
max_tokens, clamping, a clear 429, a restart on one SQLite file, replicas sharing Redis or one
PostgreSQL); the real SmolLM2 CPU server under concurrent turns of one conversation; and every
backend honouring the grant: a replay model under a small ``max_tokens`` returns at most that
many tokens with ``finish_reason: "length"`` (JSON and stream), and a conversation on a replay
model or on a fake vLLM that ignores ``max_tokens`` never receives more than its budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import itertools
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from budget_controller import BudgetController
from service.budget_ledger import MAX_KEY_CHARS, MAX_TOTAL_TOKENS, DatabaseBudgetLedger
from service.db.engine import Database
from service.db.models import ConversationBudgetRow
from service.llama_server import ALIAS, LlamaServer
from service.state import BudgetLedger, BudgetLedgerStore, MemoryStore, RedisStore
from service.tokens import count_tokens
from service.upstream.replay import ReplayBackend
from tests.service.helpers import (
    ADMIN,
    Gateway,
    HashEncoder,
    assert_error_shape,
    free_port,
    make_settings,
    run_gateway,
)
from training.data.replay import ReplayStore

TTL = 3600
OpenLedger = Callable[[], AbstractAsyncContextManager[BudgetLedgerStore]]
# Where a ledger can live; the durable ones outlive a gateway process and are shared by replicas.
DURABLE = [
    pytest.param("redis", marks=pytest.mark.integration),
    "sqlite",
    pytest.param("postgres", marks=pytest.mark.integration),
]


def _opener(request: pytest.FixtureRequest, tmp_path: Path) -> OpenLedger:
    """Each call opens the ledger afresh on the test's backend, as a new gateway process would."""
    kind: str = request.param
    if kind == "redis":
        url = request.getfixturevalue("redis_url")
        prefix = request.getfixturevalue("redis_prefix")
    elif kind == "postgres":
        url = request.getfixturevalue("postgres_url")
    else:
        url = f"sqlite:///{tmp_path / 'ledger.db'}"

    @asynccontextmanager
    async def open_ledger() -> AsyncIterator[BudgetLedgerStore]:
        if kind == "memory":
            yield MemoryStore()
        elif kind == "redis":
            store = RedisStore(url, prefix=prefix)
            try:
                yield store
            finally:
                await store.close()
        else:
            db = Database(url)
            try:
                await db.migrate()
                yield DatabaseBudgetLedger(db)
            finally:
                await db.dispose()

    return open_ledger


@pytest.fixture(params=["memory", *DURABLE])
def open_ledger(request: pytest.FixtureRequest, tmp_path: Path) -> OpenLedger:
    return _opener(request, tmp_path)


@pytest.fixture(params=DURABLE)
def open_durable_ledger(request: pytest.FixtureRequest, tmp_path: Path) -> OpenLedger:
    return _opener(request, tmp_path)


async def _hammer(
    stores: Sequence[BudgetLedgerStore], key: str, *, total: int, n: int, wanted: int
) -> list[int]:
    """``n`` reservations at once, spread over ``stores`` (replicas) round-robin."""
    grants = await asyncio.gather(
        *(
            stores[i % len(stores)].budget_reserve(key, total=total, wanted=wanted, ttl_s=TTL)
            for i in range(n)
        )
    )
    return [g.granted for g in grants]


async def _ledger_contract(store: BudgetLedgerStore, key: str) -> None:
    granted = await _hammer([store], key, total=100, n=40, wanted=7)
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
    assert after.any_truncated and after.last_truncated  # untouched by a non-turn
    # the first reservation fixed the total: a later, larger total does not raise it
    g = await store.budget_reserve(key, total=10_000, wanted=1000, ttl_s=TTL)
    assert g.granted == 11 and g.ledger.total == 100
    assert g.ledger == await store.budget_get(key)
    assert (
        await store.budget_settle(
            "missing", granted=1, used=1, truncated=False, turn=True, ttl_s=TTL
        )
        is None
    )


def test_ledger_never_overgrants(open_ledger: OpenLedger) -> None:
    async def run() -> None:
        async with open_ledger() as store:
            await _ledger_contract(store, "budget:c")

    asyncio.run(run())


def test_an_expired_ledger_starts_afresh(open_ledger: OpenLedger) -> None:
    async def run() -> None:
        async with open_ledger() as store:
            g = await store.budget_reserve("budget:e", total=100, wanted=60, ttl_s=0)
            assert g.granted == 60
            await asyncio.sleep(0.05)
            assert await store.budget_get("budget:e") is None
            settled = await store.budget_settle(
                "budget:e", granted=60, used=60, truncated=False, turn=True, ttl_s=TTL
            )
            assert settled is None  # too late: the turn's conversation is gone
            g = await store.budget_reserve("budget:e", total=50, wanted=60, ttl_s=TTL)
            assert g.granted == 50 and g.ledger == BudgetLedger(total=50, reserved=50)

    asyncio.run(run())


REPLICAS, RESERVATIONS, WANTED, BUDGET = 4, 200, 7, 1000


def test_replicas_share_one_ledger_that_survives_a_restart(
    open_durable_ledger: OpenLedger,
) -> None:
    """200 reservations at once through 4 independent clients (pools) never over-grant."""

    async def run() -> None:
        async with contextlib.AsyncExitStack() as stack:
            replicas = [
                await stack.enter_async_context(open_durable_ledger()) for _ in range(REPLICAS)
            ]
            granted = await _hammer(
                replicas, "budget:r", total=BUDGET, n=RESERVATIONS, wanted=WANTED
            )
            assert sum(granted) == BUDGET  # every token granted, and none twice
            assert granted.count(WANTED) == BUDGET // WANTED and granted.count(BUDGET % WANTED) == 1
            # every turn settles at once, each using all but (i % 3) of its grant
            used = [max(0, g - i % 3) for i, g in enumerate(granted)]
            await asyncio.gather(
                *(
                    replicas[i % REPLICAS].budget_settle(
                        "budget:r", granted=g, used=u, truncated=u == g, turn=g > 0, ttl_s=TTL
                    )
                    for i, (g, u) in enumerate(zip(granted, used, strict=True))
                )
            )
            before = await replicas[0].budget_get("budget:r")
            assert before is not None
            assert before.spent == sum(used) and before.reserved == 0
            assert before.turns == sum(g > 0 for g in granted)
        async with open_durable_ledger() as again:  # every replica gone; a new one starts
            assert await again.budget_get("budget:r") == before
            g = await again.budget_reserve("budget:r", total=BUDGET, wanted=10_000, ttl_s=TTL)
            assert g.granted == BUDGET - sum(used)

    asyncio.run(run())


def test_replicas_reserving_and_settling_at_once_book_exactly(
    open_durable_ledger: OpenLedger,
) -> None:
    """Turns on 4 replicas reserve, then settle, until the budget is gone: what they booked is
    what the ledger spent, within the budget, and no reservation is left behind."""

    async def run() -> None:
        async with contextlib.AsyncExitStack() as stack:
            replicas = [
                await stack.enter_async_context(open_durable_ledger()) for _ in range(REPLICAS)
            ]
            booked: list[int] = []

            async def turns(worker: int) -> None:
                store = replicas[worker % REPLICAS]
                for i in itertools.count():
                    g = await store.budget_reserve(
                        "budget:m", total=BUDGET, wanted=5 + worker % 7, ttl_s=TTL
                    )
                    if g.granted == 0:
                        return
                    u = max(0, g.granted - (worker + i) % 4)
                    booked.append(u)
                    await store.budget_settle(
                        "budget:m",
                        granted=g.granted,
                        used=u,
                        truncated=False,
                        turn=True,
                        ttl_s=TTL,
                    )

            await asyncio.gather(*(turns(w) for w in range(24)))
            ledger = await replicas[0].budget_get("budget:m")
            assert ledger is not None and ledger.reserved == 0
            assert ledger.spent == sum(booked) and ledger.turns == len(booked)
            assert BUDGET - 3 * 24 <= ledger.spent <= BUDGET

    asyncio.run(run())


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.integration)]
)
def test_database_ledger_purges_expired_rows_and_fits_long_keys(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    if backend == "postgres":
        url = request.getfixturevalue("postgres_url")
    else:
        url = f"sqlite:///{tmp_path / 'ledger.db'}"

    async def rows(db: Database) -> list[str]:
        async with db.engine.connect() as conn:
            return list((await conn.execute(select(ConversationBudgetRow.key))).scalars())

    async def run() -> None:
        db = Database(url)
        try:
            await db.migrate()
            ledger = DatabaseBudgetLedger(db, purge_every_s=0)
            await ledger.budget_reserve("budget:old", total=10, wanted=1, ttl_s=0)
            await asyncio.sleep(0.05)
            # client-chosen ids can be long; two that share a long prefix stay apart
            long_a, long_b = "budget:" + "x" * 400 + "a", "budget:" + "x" * 400 + "b"
            await ledger.budget_reserve(long_a, total=10, wanted=4, ttl_s=TTL)
            await ledger.budget_reserve(long_b, total=20, wanted=9, ttl_s=TTL)
            keys = await rows(db)
            assert "budget:old" not in keys and len(keys) == 2
            assert all(len(k) <= MAX_KEY_CHARS for k in keys)
            a, b = await ledger.budget_get(long_a), await ledger.budget_get(long_b)
            assert a == BudgetLedger(total=10, reserved=4)
            assert b == BudgetLedger(total=20, reserved=9)
            # a budget beyond a 64-bit column is stored as (practically) unlimited
            g = await ledger.budget_reserve("budget:huge", total=10**30, wanted=10**6, ttl_s=TTL)
            assert g.granted == 10**6 and g.ledger.total == MAX_TOTAL_TOKENS
        finally:
            await db.dispose()

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
            gateway.c.budgets.budget_get(key), gateway.server_loop()
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


def _turn_in(gw: Gateway, text: str, *, conv: str, total: int) -> httpx.Response:
    return gw.client.post(
        "/v1/chat/completions", headers=ADMIN, json=_chat(text, conv=conv, total=total)
    )


def _ledger_of(gw: Gateway, key: str) -> BudgetLedger | None:
    return asyncio.run_coroutine_threadsafe(gw.c.budgets.budget_get(key), gw.server_loop()).result(
        10
    )


def test_a_restarted_gateway_continues_the_budget_without_redis(tmp_path, fake_a) -> None:
    """No Redis: the ledger lives in the SQLite file, so a new gateway process on that file
    carries on the conversation with what is left of its budget."""
    fake_a.reply = " ".join(f"w{i}" for i in range(400))
    settings = make_settings(tmp_path)
    assert settings.redis_url is None
    with run_gateway(settings) as g1:
        g1.register("model-a", fake_a.url, backend_model="backend-a")
        r = _turn_in(g1, "What is a river delta?", conv="r", total=300)
        assert r.status_code == 200, r.text
        spent = r.json()["usage"]["completion_tokens"]
        assert int(r.headers["x-junction-budget-remaining"]) == 300 - spent
    with run_gateway(settings) as g2:  # nothing in-process survives; the database does
        assert _ledger_of(g2, "budget:conv:admin:r") == BudgetLedger(
            total=300, spent=spent, turns=1, any_truncated=True, last_truncated=True
        )
        for i in range(100):
            r = _turn_in(g2, f"And follow-up {i}?", conv="r", total=10_000)
            if r.status_code != 200:
                break
            spent += r.json()["usage"]["completion_tokens"]
            # the first turn's total still holds: a later, larger one does not raise it
            assert int(r.headers["x-junction-budget-remaining"]) == 300 - spent
        assert i > 0 and spent == 300
        assert_error_shape(r, 429, "conversation_budget_exceeded")


@pytest.mark.integration
@pytest.mark.parametrize("shared", ["redis", "postgres"])
def test_replicas_share_one_budget_under_concurrency(
    tmp_path, fake_a, shared: str, request: pytest.FixtureRequest
) -> None:
    """Two gateways share one conversation's budget through Redis, or without Redis through
    one PostgreSQL database; a third started afterwards sees what is left."""
    fake_a.reply = " ".join(f"w{i}" for i in range(400))
    if shared == "redis":
        s1 = make_settings(
            tmp_path,
            redis_url=request.getfixturevalue("redis_url"),
            redis_prefix=request.getfixturevalue("redis_prefix"),
        )
    else:
        s1 = make_settings(tmp_path, database_url=request.getfixturevalue("postgres_url"))
    with run_gateway(s1) as g1, run_gateway(s1) as g2:
        assert type(g1.c.budgets).__name__ == (
            "RedisStore" if shared == "redis" else "DatabaseBudgetLedger"
        )
        g1.register("model-a", fake_a.url, backend_model="backend-a")

        def turn(i: int) -> httpx.Response:
            gw = (g1, g2)[i % 2]
            return _turn_in(gw, f"question number {i} about chemistry", conv="shared", total=700)

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
        ledger = _ledger_of(g2, "budget:conv:admin:shared")
        assert ledger is not None and ledger.spent == used and ledger.reserved == 0
        assert ledger.turns == len(ok)
    # a restarted gateway (a new app on the same Redis or database) sees what is left
    with run_gateway(s1) as g3:
        r = _turn_in(g3, "after restart", conv="shared", total=700)
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
            gw.c.budgets.budget_get("budget:conv:admin:live"), gw.server_loop()
        ).result(10)
        assert ledger is not None and ledger.spent == used and ledger.reserved == 0


# --- every backend honours the grant: what reaches the client never exceeds it


@pytest.fixture(scope="module")
def recorded() -> tuple[ReplayStore, str, list[str]]:
    """The real replay store, one data-set model and 12 prompts it answered at length."""
    import pyarrow.parquet as pq

    from training.data.build import DERIVED

    store = ReplayStore.load()
    folder = DERIVED / "mmlu_pro"
    table = pq.read_table(
        folder / "replay.parquet", columns=["query_id", "model", "completion_tokens"]
    ).to_pydict()
    model = "Meta-Llama-3_1-70B"
    long_ids = [
        q
        for q, m, n in zip(
            table["query_id"], table["model"], table["completion_tokens"], strict=True
        )
        if m == model and 150 <= n <= 600
    ][:12]
    qs = pq.read_table(folder / "questions.parquet", columns=["query_id", "query"]).to_pydict()
    text = dict(zip(qs["query_id"], qs["query"], strict=True))
    return store, model, [text[q] for q in long_ids]


def _register_replay(gw: Gateway, model: str) -> None:
    r = gw.admin(
        "POST",
        "/admin/models",
        json={
            "name": model,
            "backend": {"kind": "replay", "dataset": "mmlu_pro"},
            "pricing": {"input_per_mtok": 0.1, "output_per_mtok": 0.1},
            "evaluations": [{"query": f"q{i}", "score": 1} for i in range(4)],
        },
    )
    assert r.status_code == 201, r.text


def _delivered(r: httpx.Response, *, stream: bool) -> tuple[str, str, int]:
    """(text, finish_reason, usage completion tokens) of a response as the client received it."""
    if not stream:
        body = r.json()
        ch = body["choices"][0]
        return ch["message"]["content"], ch["finish_reason"], body["usage"]["completion_tokens"]
    text, finish, usage = "", None, -1
    for line in r.text.splitlines():
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        obj = json.loads(line[6:])
        assert "error" not in obj, obj
        for ch in obj.get("choices") or []:
            text += (ch.get("delta") or {}).get("content") or ""
            finish = ch.get("finish_reason") or finish
        if obj.get("usage"):
            usage = obj["usage"]["completion_tokens"]
    assert finish is not None and usage >= 0
    return text, finish, usage


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_replay_cuts_its_recorded_answer_at_max_tokens(tmp_path, recorded, stream: bool) -> None:
    store, model, prompts = recorded
    answer = store.answer(model, prompts[0])
    assert answer is not None and answer.completion_tokens >= 150
    with run_gateway(make_settings(tmp_path), replay=ReplayBackend(loader=lambda: store)) as gw:
        _register_replay(gw, model)
        for cap in (1, 16, None):
            body: dict[str, Any] = {
                "model": model,
                "messages": [{"role": "user", "content": prompts[0]}],
                "stream": stream,
                "stream_options": {"include_usage": True} if stream else None,
            }
            if cap is not None:
                body["max_tokens"] = cap
            r = gw.client.post("/v1/chat/completions", headers=ADMIN, json=body)
            assert r.status_code == 200, r.text
            text, finish, usage = _delivered(r, stream=stream)
            assert answer.response.startswith(text)
            if cap is None:  # no cap: the whole recorded answer, as recorded
                assert text == answer.response and finish == "stop"
                assert usage == answer.completion_tokens
            else:  # SmolLM2's tokenizer, the one the data set was counted with
                assert count_tokens([text]) == [cap] and usage == cap and finish == "length"


def _ignoring_backend(fake: Any) -> None:
    fake.reply = " ".join(f"word{i}" for i in range(600))
    fake.faults.ignore_max_tokens = True


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("kind", ["replay", "vllm-ignoring-max-tokens"])
def test_a_conversation_never_receives_more_than_its_budget(
    tmp_path, recorded, fake_a, kind: str, stream: bool
) -> None:
    """Turn after turn until the 429: each reply within its grant (counted on the text the client
    got), the conversation within its budget, and the ledger booking exactly what was delivered."""
    store, model, prompts = recorded
    total = 700
    with run_gateway(make_settings(tmp_path), replay=ReplayBackend(loader=lambda: store)) as gw:
        if kind == "replay":
            _register_replay(gw, model)
        else:
            _ignoring_backend(fake_a)
            gw.register(model, fake_a.url, backend_model="backend-a")
        delivered, booked, turns = 0, 0, 0
        history: list[str] = []
        for prompt in prompts:
            body = _chat(prompt, conv=kind, total=total, history=history, stream=stream)
            body["model"] = model
            if stream:
                body["stream_options"] = {"include_usage": True}
            r = gw.client.post("/v1/chat/completions", headers=ADMIN, json=body)
            if r.status_code == 429:
                assert_error_shape(r, 429, "conversation_budget_exceeded")
                break
            assert r.status_code == 200, r.text
            grant = int(r.headers["x-junction-budget-max-tokens"])
            text, finish, usage = _delivered(r, stream=stream)
            n = count_tokens([text])[0]
            assert n <= grant and usage <= grant, (n, usage, grant)
            if kind == "vllm-ignoring-max-tokens":
                assert fake_a.requests[-1]["max_tokens"] == grant  # asked, and ignored
                assert finish == "length" and n == usage == grant
            delivered += n
            booked += usage
            turns += 1
            history.append(prompt)
        assert turns >= 2 and delivered <= total
        key = f"budget:conv:admin:{kind}"
        for _ in range(100):  # a stream's turn is settled just after [DONE]
            ledger = _ledger_of(gw, key)
            if ledger is not None and ledger.reserved == 0 and ledger.turns == turns:
                break
            time.sleep(0.05)
        assert ledger is not None and ledger.spent == booked <= total
