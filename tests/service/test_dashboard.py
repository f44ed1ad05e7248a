"""The operator dashboard's data: request records, savings against the best single model,
the pool map, traffic, budgets, health, the evaluation-file upload, and who may see it.

A gateway on a loopback port with fake vLLM backends (real HTTP, real SQLite); the browser test
of the page itself is ``test_dashboard_browser.py``.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from service.cli.fake_vllm import FakeVLLM
from service.dashboard.outcomes import OutcomeIndex
from service.dashboard.routes import parse_evaluation_file
from service.dashboard.serving import federation_runs
from service.db.engine import Database
from service.request_log import text_sha256
from tests.service.helpers import ADMIN, Gateway, assert_error_shape

# alpha: mean evaluation score 0.75 (the test LOCUS predicts p = mean score), dear;
# beta: 0.25, ten times cheaper.
ALPHA = (1, 1, 1, 0)
BETA = (1, 0, 0, 0)


def _pool(gw: Gateway, fake: FakeVLLM) -> None:
    for name, scores, price in (("alpha", ALPHA, (1.0, 2.0)), ("beta", BETA, (0.1, 0.2))):
        r = gw.register(name, fake.url, scores=scores, price=price, backend_model="backend-a")
        assert r.status_code == 201, r.text


def _chat(gw: Gateway, text: str, *, key: str | None = None, **body: object) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {key}"} if key else ADMIN
    r = gw.client.post(
        "/v1/chat/completions",
        headers=headers,
        json={"model": "junction/auto", "messages": [{"role": "user", "content": text}], **body},
    )
    assert r.status_code == 200, r.text
    usage = r.json()["usage"]
    return {
        **r.headers,
        "prompt": str(usage["prompt_tokens"]),
        "completion": str(usage["completion_tokens"]),
    }


def test_dashboard_data_needs_the_admin_token(gateway: Gateway) -> None:
    key = gateway.admin("POST", "/admin/keys", json={"name": "tenant"}).json()["key"]
    for path in ("overview", "savings", "frontier", "federation"):
        assert_error_shape(gateway.client.get(f"/dashboard/api/{path}"), 401)
        r = gateway.client.get(f"/dashboard/api/{path}", headers={"Authorization": f"Bearer {key}"})
        assert_error_shape(r, 401)
    r = gateway.client.post("/dashboard/api/evaluations/parse?filename=a.jsonl", content=b"{}")
    assert_error_shape(r, 401)
    # The page is a shell with no data in it, locked down against framing and inline script.
    page = gateway.client.get("/dashboard")
    assert page.status_code == 200
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    assert "alpha" not in page.text and "sessionStorage" not in page.text
    js = gateway.client.get("/dashboard/static/dashboard.js")
    assert js.status_code == 200 and "sessionStorage" in js.text
    assert gateway.client.get("/dashboard/static/plotly.min.js").status_code == 200
    assert_error_shape(gateway.client.get("/dashboard/static/../app.py"), 404)


def test_savings_per_key_against_the_best_single_model(gateway: Gateway, fake_a) -> None:
    _pool(gateway, fake_a)
    key = gateway.admin("POST", "/admin/keys", json={"name": "tenant-a"}).json()
    billed: dict[str, list[float]] = {"admin token": [], "tenant-a": []}
    tokens: list[tuple[int, int]] = []
    served: list[str] = []
    # lambda 0 picks alpha (p 0.75); a large lambda picks the cheap beta (p 0.25).
    for i, lam in enumerate((0.0, 0.0, 1e5, 1e5, 1e5)):
        h = _chat(gateway, f"question {i}", routing={"lambda": lam})
        billed["admin token"].append(float(h["x-junction-cost-usd"]))
        tokens.append((int(h["prompt"]), int(h["completion"])))
        served.append(h["x-junction-model"])
    for i in range(3):
        h = _chat(gateway, f"tenant question {i}", key=key["key"], routing={"lambda": 1e5})
        billed["tenant-a"].append(float(h["x-junction-cost-usd"]))
        tokens.append((int(h["prompt"]), int(h["completion"])))
        served.append(h["x-junction-model"])
    # A request that names its model is recorded but is not routed traffic.
    r = gateway.client.post(
        "/v1/chat/completions",
        headers=ADMIN,
        json={"model": "beta", "messages": [{"role": "user", "content": "named"}]},
    )
    assert r.status_code == 200
    assert served == ["alpha", "alpha", "beta", "beta", "beta", "beta", "beta", "beta"]

    s = gateway.admin("GET", "/dashboard/api/savings").json()
    assert s["best_model"] == "alpha"
    overall = s["overall"]
    assert overall["requests"] == 9 and overall["routed_requests"] == 8
    routed = billed["admin token"] + billed["tenant-a"]
    assert overall["routed_cost_per_1k_usd"] == pytest.approx(1000 * sum(routed) / 8)
    # alpha's prices on each routed request's real prompt and completion tokens.
    alpha = gateway.c.engine.pool.get("alpha")
    assert alpha is not None
    want = 1000 * sum(alpha.cost_usd(p, c) for p, c in tokens) / 8
    assert overall["best_model_cost_per_1k_usd"] == pytest.approx(want)
    rows = gateway.admin("GET", "/dashboard/api/overview").json()
    assert rows["requests"] == 9
    assert overall["best_model_cost_per_1k_usd"] > overall["routed_cost_per_1k_usd"]
    assert overall["saved_fraction"] == pytest.approx(
        1 - overall["routed_cost_per_1k_usd"] / overall["best_model_cost_per_1k_usd"]
    )
    assert overall["predicted_quality_routed"] == pytest.approx((2 * 0.75 + 6 * 0.25) / 8)
    assert overall["predicted_quality_best_model"] == pytest.approx(0.75)
    by_name = {k["name"]: k for k in s["per_key"]}
    assert set(by_name) == {"admin token", "tenant-a"}
    t = by_name["tenant-a"]
    assert t["key_id"] == key["id"] and t["prefix"] == key["prefix"]
    assert t["routed_requests"] == 3
    assert t["routed_cost_per_1k_usd"] == pytest.approx(1000 * sum(billed["tenant-a"]) / 3)
    assert by_name["admin token"]["requests"] == 6
    # No evaluation of these texts exists: no realised quality is claimed.
    assert overall["requests_with_outcomes"] == 0
    assert overall["realised_quality_routed"] is None


def test_realised_quality_comes_from_evaluations_of_the_same_text(gateway: Gateway, fake_a) -> None:
    _pool(gateway, fake_a)
    # gateway.register evaluates alpha on "question 0 for alpha" .. "question 3 for alpha".
    _chat(gateway, "question 3 for alpha", routing={"lambda": 0.0})  # alpha scored 0 on it
    _chat(gateway, "question 0 for alpha", routing={"lambda": 0.0})  # alpha scored 1 on it
    _chat(gateway, "never evaluated", routing={"lambda": 0.0})
    ov = gateway.admin("GET", "/dashboard/api/overview").json()
    alpha = ov["traffic"]["models"]["alpha"]
    assert sum(alpha["requests"]) == 3
    assert sum(alpha["realised_n"]) == 2
    realised = [v for v in alpha["realised"] if v is not None]
    assert realised and realised[-1] == pytest.approx(0.5)
    s = gateway.admin("GET", "/dashboard/api/savings").json()
    assert s["overall"]["requests_with_outcomes"] == 2
    assert s["overall"]["realised_quality_routed"] == pytest.approx(0.5)


def test_overview_maps_every_model_with_neighbours_and_health(gateway: Gateway, fake_a) -> None:
    _pool(gateway, fake_a)
    r = gateway.register("gamma", fake_a.url, scores=(1, 1, 0, 0), backend_model="backend-a")
    assert r.status_code == 201
    ov = gateway.admin("GET", "/dashboard/api/overview").json()
    pool = {m["name"]: m for m in ov["pool"]}
    assert set(pool) == {"alpha", "beta", "gamma"}
    assert [n["model"] for n in pool["gamma"]["neighbours"]][0] in {"alpha", "beta"}
    assert pool["alpha"]["input_per_mtok"] == 1.0 and pool["alpha"]["health"] == "ok"
    assert ov["routers"]["default"] == "locus"
    assert {m["model"] for m in ov["health"]["models"]} == set(pool)


def test_fallbacks_and_budgets_are_recorded(gateway: Gateway, fake_a, fake_b) -> None:
    _pool(gateway, fake_a)
    r = gateway.register("delta", fake_b.url, scores=(1, 1, 1, 1), backend_model="backend-b")
    assert r.status_code == 201
    fake_b.faults.fail_times, fake_b.faults.fail_status = 10, 503
    h = _chat(gateway, "who answers?", routing={"lambda": 0.0})
    assert h["x-junction-fallbacks"] != "0"
    for _ in range(2):
        _chat(gateway, "a budgeted turn", budget={"conversation_id": "c-1", "total_tokens": 400})
    ov = gateway.admin("GET", "/dashboard/api/overview").json()
    assert ov["health"]["fallbacks"] >= 1
    delta = next(m for m in ov["health"]["models"] if m["model"] == "delta")
    assert delta["fell_back_from"] >= 1 and delta["upstream_errors"]
    (conv,) = ov["budgets"]
    assert conv["turns"] == 2 and conv["total"] == 400
    assert conv["left"] == 400 - conv["completion_tokens"]
    assert "c-1" not in json.dumps(ov)  # a digest, not the caller's conversation id


def test_evaluation_upload_parsing() -> None:
    csv_text = (
        'query,score,model\n"a question, with a comma\nand a newline",1,m1\nplain,0,m1\nx,1,m2\n'
    )
    out = parse_evaluation_file(csv_text, filename="e.csv", model="m1")
    assert out["evaluations"] == [
        {"score": 1.0, "query": "a question, with a comma\nand a newline"},
        {"score": 0.0, "query": "plain"},
    ]
    assert out["skipped_other_models"] == 1
    jsonl = '{"query": "q1", "score": 0.5, "prompt_tokens": 12}\n\n{"query": "q2", "score": 1}\n'
    out = parse_evaluation_file(jsonl, filename="e.jsonl", model=None)
    assert out["evaluations"][0] == {"score": 0.5, "query": "q1", "prompt_tokens": 12}
    from service.errors import InvalidRequest

    for text, name, what in (
        ('{"query": "q", "score": 2}\n', "e.jsonl", "e.jsonl:1"),
        ('{"query": "q"}\n', "e.jsonl", "'score'"),
        ('{"score": 1}\n', "e.jsonl", "'query'"),
        ("not json\n", "e.jsonl", "invalid JSON"),
        ("query,score\nq,nan\n", "e.csv", "e.csv:2"),
        ("q,1", "e.txt", ".jsonl or .csv"),
    ):
        with pytest.raises(InvalidRequest, match=what.replace(".", r"\.")):
            parse_evaluation_file(text, filename=name, model=None)


def test_upload_endpoint_answers_in_the_error_shape(gateway: Gateway) -> None:
    r = gateway.admin(
        "POST", "/dashboard/api/evaluations/parse?filename=e.jsonl", content=b'{"score": 1}\n'
    )
    err = assert_error_shape(r, 400)
    assert "e.jsonl:1" in err["message"]
    r = gateway.admin(
        "POST",
        "/dashboard/api/evaluations/parse?filename=e.jsonl",
        content=b'{"query": "q", "score": 1}\n',
    )
    assert r.status_code == 200 and r.json()["evaluations"] == [{"score": 1.0, "query": "q"}]


def test_federation_runs_are_read_from_reports(tmp_path: Path) -> None:
    run = tmp_path / "federation" / "mlp-demo"
    run.mkdir(parents=True)
    (run / "report.json").write_text(
        json.dumps(
            {
                "config": {"router": "mlp", "logs": "routerbench", "clients": 4, "rounds": 2},
                "rounds": [
                    {"stage": "train", "round": 1, "auc": 0.61},
                    {"stage": "train", "round": 2, "auc": None},
                ],
                "auc": {"centralized": 0.7, "federated": 0.65},
            }
        )
    )
    (tmp_path / "federation" / "broken").mkdir()
    (tmp_path / "federation" / "broken" / "report.json").write_text("{")
    out = federation_runs([tmp_path / "federation", tmp_path / "missing"])
    (r,) = out["runs"]
    assert r["name"] == "mlp-demo" and r["clients"] == 4
    assert r["rounds"] == [{"stage": "train", "round": 1, "auc": 0.61}]


def test_outcome_index_prefers_stored_evaluations() -> None:
    idx = OutcomeIndex(stored={("m", text_sha256(" q ")): 1.0})
    assert idx.score("m", text_sha256("q")) == 1.0
    assert idx.score("other", text_sha256("q")) is None


def test_request_records_migration_comes_off_alone(tmp_path: Path) -> None:
    async def run() -> None:
        db = Database(f"sqlite:///{tmp_path / 'm.db'}")
        try:
            await db.migrate()
            from sqlalchemy import inspect

            async def tables() -> set[str]:
                async with db.engine.connect() as conn:
                    return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))

            before = await tables()
            assert "request_records" in before
            await db.migrate("0003", down=True)
            assert await tables() == before - {"request_records"}
            await db.migrate()
            assert await tables() == before
        finally:
            await db.dispose()

    asyncio.run(run())


def test_frontier_on_held_out_data_set_questions(gateway: Gateway) -> None:
    """Replay models of MMLU-Pro: realised accuracy from the data set's recorded outcomes."""
    pool = {
        "gemini-1.5-flash-002": ((1, 1, 1, 1), (0.075, 0.3)),
        "Llama-2-7b-hf": ((1, 0, 0, 0), (0.1, 0.1)),
        "Yi-6B": ((1, 1, 0, 0), (0.05, 0.05)),
    }
    for name, (scores, price) in pool.items():
        r = gateway.register(name, None, scores=scores, price=price, dataset="mmlu_pro")
        assert r.status_code == 201, r.text
    f = gateway.admin("GET", "/dashboard/api/frontier").json()
    assert f["router"] == "locus" and f["dataset"] == "mmlu_pro"
    assert f["questions"] == 400 and f["excluded"] == []
    singles = {m["model"]: m for m in f["models"]}
    assert set(singles) == set(pool)
    (now,) = [p for p in f["points"] if p["current"]]
    assert now["lambda"] == 0.0
    # lambda 0: the test LOCUS predicts each model's mean evaluation score, so gemini everywhere.
    assert now["accuracy"] == pytest.approx(singles["gemini-1.5-flash-002"]["accuracy"])
    assert now["cost_per_1k_usd"] == pytest.approx(
        singles["gemini-1.5-flash-002"]["cost_per_1k_usd"]
    )
    # A huge lambda: the cheapest model everywhere.
    last = f["points"][-1]
    assert last["cost_per_1k_usd"] == pytest.approx(singles["Yi-6B"]["cost_per_1k_usd"])
    costs = [p["cost_per_1k_usd"] for p in f["points"]]
    assert costs == sorted(costs, reverse=True)
    assert 0.0 < singles["Llama-2-7b-hf"]["accuracy"] < singles["gemini-1.5-flash-002"]["accuracy"]


@pytest.mark.integration
def test_records_and_savings_on_postgres(tmp_path: Path, postgres_url: str, fake_a) -> None:
    from tests.service.helpers import make_settings, run_gateway

    with run_gateway(make_settings(tmp_path, database_url=postgres_url)) as gw:
        _pool(gw, fake_a)
        costs = [
            float(_chat(gw, f"pg {i}", routing={"lambda": lam})["x-junction-cost-usd"])
            for i, lam in enumerate((0.0, 1e5, 1e5))
        ]
        s = gw.admin("GET", "/dashboard/api/savings").json()
        assert s["best_model"] == "alpha" and s["overall"]["routed_requests"] == 3
        assert s["overall"]["routed_cost_per_1k_usd"] == pytest.approx(1000 * sum(costs) / 3)
        ov = gw.admin("GET", "/dashboard/api/overview").json()
        assert sum(sum(m["requests"]) for m in ov["traffic"]["models"].values()) == 3


def test_bad_dashboard_input_gets_the_error_shape(gateway: Gateway) -> None:
    assert_error_shape(gateway.admin("GET", "/dashboard/api/overview?hours=0"), 400)
    assert_error_shape(gateway.admin("GET", "/dashboard/api/savings?hours=abc"), 400)
    err = assert_error_shape(gateway.admin("GET", "/dashboard/api/frontier?router=nope"), 400)
    assert "nope" in err["message"]
    for body, name in (
        (b"\xff\xfe\x00garbage", "e.jsonl"),
        (b"[1, 2]\n", "e.jsonl"),
        (b"", "e.csv"),
    ):
        r = gateway.admin("POST", f"/dashboard/api/evaluations/parse?filename={name}", content=body)
        assert_error_shape(r, 400)
    assert_error_shape(gateway.admin("POST", "/dashboard/api/evaluations/parse"), 400)
