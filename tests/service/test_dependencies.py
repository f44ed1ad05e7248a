"""Routes through typed dependencies, without a server: ``app.dependency_overrides`` supplies
each collaborator, so the route's own logic (parse, the shared routing-text rule, the response
shape) and the budget step's holds are tested without starting a gateway."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.accounting import Accounting
from service.app import create_app
from service.auth import Principal
from service.deps import get_accounting, get_auth, get_engine, get_metrics, get_openai
from service.errors import BudgetExceeded
from service.metrics import Metrics
from service.openai.grant import Granter
from service.openai.parse import parse_request
from service.routing.engine import Decision, Ranked, RouteQuery
from service.state import MemoryStore
from tests.service.helpers import make_settings

ADMIN = Principal(is_admin=True)


class FakeAuth:
    async def client(self, token: str | None) -> Principal:
        assert token == "k"
        return ADMIN

    def admin(self, token: str | None) -> Principal:
        return ADMIN


class FakeAccounting:
    async def admit_request(self, p: Principal) -> None:
        pass


class FakeEngine:
    """Records the queries it is asked; ranks two models by a fixed utility."""

    def __init__(self) -> None:
        self.queries: list[RouteQuery] = []

    async def decide(self, q: RouteQuery, *, usable: Any = None) -> Decision:
        self.queries.append(q)
        ranked = [Ranked("strong", 0.9, 0.002, 0.9), Ranked("cheap", 0.6, 0.0001, 0.6)]
        return Decision(model="strong", router="locus", lam=0.0, ranked=ranked, embed_ms=1.0)


class FakeServing:
    class decider:  # noqa: N801 - the attribute the route reads
        @staticmethod
        def filters(prompt: str) -> tuple[Any, Any]:
            return (lambda e: True), (lambda e: True)


class Client:
    """Requests straight into the ASGI app (httpx.ASGITransport): no server, no lifespan, so the
    database and encoder are never built; the overrides are all the route gets."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def post(self, path: str, **kw: Any) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as c:
                return await c.post(path, **kw)

        return asyncio.run(go())


@pytest.fixture
def routed(tmp_path: Path) -> tuple[Client, FakeEngine]:
    app = create_app(make_settings(tmp_path))
    engine = FakeEngine()
    app.dependency_overrides.update(
        {
            get_engine: lambda: engine,
            get_openai: lambda: FakeServing(),
            get_metrics: Metrics,
            get_auth: FakeAuth,
            get_accounting: FakeAccounting,
        }
    )
    return Client(app), engine


def test_route_uses_the_chat_routing_text_rule(routed: tuple[Client, FakeEngine]) -> None:
    client, engine = routed
    messages = [
        {"role": "user", "content": "Write a binary search in Rust."},
        {"role": "assistant", "content": "fn search(...)"},
        {"role": "user", "content": "commit it"},
    ]
    r = client.post("/v1/route", headers={"Authorization": "Bearer k"}, json={"messages": messages})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "strong"
    assert [c["model"] for c in body["candidates"]] == ["strong", "cheap"]
    # The same text chat completions route on (service.openai.parse.conversation_text).
    raw = (
        '{"model": "junction/auto", "messages": ' + str(messages).replace("'", '"') + "}"
    ).encode()
    chat = parse_request(raw, {}, ADMIN, "chat")
    assert engine.queries[0].text == chat.route_text == "Write a binary search in Rust.\ncommit it"


def test_route_headers_fill_the_routing_options(routed: tuple[Client, FakeEngine]) -> None:
    client, engine = routed
    r = client.post(
        "/v1/route",
        headers={"Authorization": "Bearer k", "x-junction-lambda": "2.5"},
        json={"prompt": "2 + 2?"},
    )
    assert r.status_code == 200, r.text
    assert engine.queries[0].lam == 2.5 and engine.queries[0].text == "2 + 2?"


def _granter(store: MemoryStore) -> Granter:
    async def embed(texts: Any) -> Any:
        raise AssertionError("no policy is loaded: nothing is embedded")

    g = Granter(budgets=store, accounting=Accounting(store=store, db=None), embed=embed, ttl_s=60)  # type: ignore[arg-type]
    g._ctl_tried = True  # no TAB policy: a turn gets what is left of the budget
    return g


def _req(total: int | None, max_tokens: int | None = None) -> Any:
    body = {"model": "junction/auto", "messages": [{"role": "user", "content": "hi"}]}
    if total is not None:
        body["budget"] = {"conversation_id": "c1", "total_tokens": total}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    import json

    return parse_request(json.dumps(body).encode(), {}, ADMIN, "chat")


def test_a_turn_is_settled_once_and_given_back_on_error() -> None:
    async def run() -> None:
        store = MemoryStore()
        g = _granter(store)
        async with g.turn(_req(100, max_tokens=30)) as turn:
            assert turn.max_tokens == 30 and turn.grant is not None and turn.left == 70
            assert await turn.settle(used=10, truncated=False) == 90
            assert await turn.settle(used=30, truncated=False) == 90  # once only
        with pytest.raises(RuntimeError):
            async with g.turn(_req(100)) as turn:
                assert turn.max_tokens == 90  # what is left
                raise RuntimeError("the upstream failed")
        ledger = await store.budget_get("budget:conv:admin:c1")
        assert ledger is not None and ledger.spent == 10 and ledger.reserved == 0
        async with g.turn(_req(None, max_tokens=7)) as turn:  # no budget: the client's cap
            assert turn.grant is None and turn.max_tokens == 7

    asyncio.run(run())


def test_an_exhausted_conversation_is_refused_before_routing() -> None:
    async def run() -> None:
        store = MemoryStore()
        g = _granter(store)
        async with g.turn(_req(5)) as turn:
            await turn.settle(used=5, truncated=True)
        with pytest.raises(BudgetExceeded):
            async with g.turn(_req(5)):
                pass

    asyncio.run(run())
