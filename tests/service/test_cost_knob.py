"""The cost knob through the app: presets, a calibrated cost target, a per-request cost cap,
their headers, and 400s naming the bad parameter. The curve maths is tested on its own below."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from service.routing.calibration import MODE_QUALITY, Curve, choose, sample_queries
from service.tokens import estimate_tokens
from tests.service.helpers import ADMIN, Gateway, assert_error_shape
from training.data.build import DERIVED

# p_correct = each model's mean score (MeanScoreLocus); prices per million tokens (in, out)
MODELS = {
    "dear": ((1, 1, 1, 1, 1, 1, 1, 0), (10.0, 30.0)),  # 0.875
    "mid": ((1, 1, 1, 1, 1, 0, 0, 0), (1.0, 3.0)),  # 0.625
    "cheap": ((1, 1, 0, 0, 0, 0, 0, 0), (0.05, 0.1)),  # 0.25
}


@pytest.fixture
def pool(gateway: Gateway, fake_a) -> Gateway:
    for name, (scores, price) in MODELS.items():
        r = gateway.register(
            name, fake_a.url, backend_model="backend-a", scores=scores, price=price
        )
        assert r.status_code == 201, r.text
    return gateway


def route(gw: Gateway, prompt: str = "What is 2 + 2?", headers=None, **body):
    return gw.client.post(
        "/v1/route", headers={**ADMIN, **(headers or {})}, json={"prompt": prompt, **body}
    )


def test_presets_are_calibrated_and_ordered(pool: Gateway) -> None:
    out = {m: route(pool, mode=m).json() for m in MODE_QUALITY}
    assert out["quality"]["lambda"] == 0 and out["quality"]["model"] == "dear"
    assert out["quality"]["calibration"] == {"source": "mode", "mode": "quality", "lambda": 0.0}
    bal, cost = out["balanced"]["calibration"], out["cost"]["calibration"]
    assert bal["source"] == "mode" and bal["sample_size"] == 1203
    assert 0 < out["balanced"]["lambda"] < out["cost"]["lambda"]
    # what the presets promise, on the calibration sample: a share of quality mode's predicted
    # accuracy, at a lower predicted cost
    top = route(pool, target_cost_per_1k_usd=1e6).json()["calibration"]  # lambda 0
    assert top["lambda"] == 0.0
    assert bal["predicted_accuracy"] >= 0.95 * top["predicted_accuracy"] - 1e-9
    assert cost["predicted_accuracy"] >= 0.80 * top["predicted_accuracy"] - 1e-9
    assert cost["predicted_cost_per_1k_usd"] < bal["predicted_cost_per_1k_usd"]
    assert bal["predicted_cost_per_1k_usd"] < top["predicted_cost_per_1k_usd"]
    # raw lambda still works and wins nothing by magic: 10 is nothing at these prices
    raw = route(pool, **{"lambda": 10}).json()
    assert raw["model"] == "dear" and raw["calibration"]["source"] == "request"


def _test_questions(n: int) -> list[str]:
    rows = pq.read_table(
        DERIVED / "mmlu_pro" / "questions.parquet", columns=["query_id", "query", "split"]
    ).to_pylist()
    test = sorted((r["query_id"], r["query"]) for r in rows if r["split"] == "test")
    pick = np.random.default_rng(0).choice(len(test), size=n, replace=False)
    return [test[i][1] for i in sorted(pick)]


def test_cost_target_is_met_on_held_out_queries(pool: Gateway) -> None:
    """Calibrated on validation questions, measured on 600 test questions routed one by one."""
    quality = route(pool, target_cost_per_1k_usd=1e6).json()["calibration"]
    target = 0.5 * quality["predicted_cost_per_1k_usd"]
    first = route(pool, target_cost_per_1k_usd=target).json()["calibration"]
    assert first["source"] == "target" and first["target_cost_per_1k_usd"] == target
    assert first["predicted_cost_per_1k_usd"] == pytest.approx(target, rel=0.02)
    costs, chosen = [], set()
    for q in _test_questions(600):
        body = route(pool, q, target_cost_per_1k_usd=target).json()
        pick = next(c for c in body["candidates"] if c["model"] == body["model"])
        costs.append(pick["cost"])
        chosen.add(body["model"])
    realised = 1000 * float(np.mean(costs))
    assert realised == pytest.approx(target, rel=0.05), (realised, target)
    assert len(chosen) >= 2  # the target is met by mixing models, not by one fixed choice


def test_max_cost_caps_each_request(pool: Gateway) -> None:
    free = route(pool).json()
    dear = next(c for c in free["candidates"] if c["model"] == "dear")["cost"]
    mid = next(c for c in free["candidates"] if c["model"] == "mid")["cost"]
    capped = route(pool, max_cost_usd=dear * 0.99).json()
    assert capped["model"] == "mid" and {c["model"] for c in capped["candidates"]} == {
        "mid",
        "cheap",
    }
    assert all(c["cost"] <= dear * 0.99 for c in capped["candidates"])
    # the cap combines with a preset; the same cap through the header
    assert route(pool, mode="quality", max_cost_usd=mid * 0.99).json()["model"] == "cheap"
    h = route(pool, headers={"x-junction-max-cost-usd": str(mid * 0.99)}).json()
    assert h["model"] == "cheap"
    err = assert_error_shape(route(pool, max_cost_usd=1e-12), 400, "no_model_within_max_cost")
    assert err["param"] == "routing.max_cost_usd" and "cheapest" in err["message"]


def test_chat_takes_the_knob_from_body_and_headers(pool: Gateway) -> None:
    chat = {"model": "junction/auto", "messages": [{"role": "user", "content": "hi"}]}
    q = pool.client.post("/v1/chat/completions", headers=ADMIN, json=chat)
    assert q.status_code == 200 and q.headers["x-junction-lambda"] == "0.0"
    c = pool.client.post(
        "/v1/chat/completions", headers={**ADMIN, "x-junction-routing-mode": "cost"}, json=chat
    )
    assert c.status_code == 200 and float(c.headers["x-junction-lambda"]) > 0
    t = pool.client.post(
        "/v1/chat/completions",
        headers=ADMIN,
        json={**chat, "routing": {"target_cost_per_1k_usd": 0.05}},
    )
    assert t.status_code == 200 and float(t.headers["x-junction-lambda"]) > 0
    # the body wins over the headers for how much cost matters
    b = pool.client.post(
        "/v1/chat/completions",
        headers={**ADMIN, "x-junction-routing-mode": "cost"},
        json={**chat, "routing": {"lambda": 0}},
    )
    assert b.headers["x-junction-lambda"] == "0.0"


@pytest.mark.parametrize(
    ("body", "headers", "param"),
    [
        ({"routing": {"mode": "cheap"}}, {}, "routing.mode"),
        ({"routing": {"max_cost_usd": -1}}, {}, "routing.max_cost_usd"),
        ({"routing": {"max_cost_usd": 0}}, {}, "routing.max_cost_usd"),
        ({"routing": {"target_cost_per_1k_usd": "lots"}}, {}, "routing.target_cost_per_1k_usd"),
        ({}, {"x-junction-max-cost-usd": "abc"}, "routing.max_cost_usd"),
        ({}, {"x-junction-routing-mode": "fast"}, "routing.mode"),
        ({}, {"x-junction-target-cost-per-1k-usd": "-3"}, "routing.target_cost_per_1k_usd"),
        ({"routing": {"lambda": 1, "mode": "cost"}}, {}, "routing.mode"),
        ({}, {"x-junction-lambda": "1", "x-junction-routing-mode": "cost"}, "routing.mode"),
    ],
)
def test_bad_knob_values_are_400s_naming_the_param(pool: Gateway, body, headers, param) -> None:
    chat = {"model": "junction/auto", "messages": [{"role": "user", "content": "hi"}], **body}
    r = pool.client.post("/v1/chat/completions", headers={**ADMIN, **headers}, json=chat)
    assert assert_error_shape(r, 400)["param"] == param


def test_route_rejects_bad_knob_values(pool: Gateway) -> None:
    assert assert_error_shape(route(pool, mode="fast"), 400)["param"] == "mode"
    assert assert_error_shape(route(pool, max_cost_usd="x"), 400)["param"] == "max_cost_usd"
    both = route(pool, mode="cost", target_cost_per_1k_usd=1.0)
    assert assert_error_shape(both, 400)["param"] == "target_cost_per_1k_usd"
    hdr = route(pool, headers={"x-junction-routing-mode": "nope"})
    assert assert_error_shape(hdr, 400)["param"] == "mode"
    low = assert_error_shape(
        route(pool, target_cost_per_1k_usd=1e-9), 400, "target_cost_unreachable"
    )
    assert low["param"] == "routing.target_cost_per_1k_usd" and "cheapest" in low["message"]


# --- the curve on its own


def _toy(seed: int = 0, n: int = 400) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    price = np.array([0.1, 0.3, 1.0, 3.0, 10.0])
    p = np.clip(rng.uniform(0.1, 0.6, (n, 5)) + 0.08 * np.log(price)[None], 0, 1)
    cost = rng.integers(20, 600, n)[:, None] * price[None] / 1e6
    return p, cost


def test_choose_breaks_ties_by_cost_and_respects_caps() -> None:
    p = np.array([[0.5, 0.5, 0.4]])
    cost = np.array([[2.0, 1.0, 0.1]])
    assert choose(p, cost, 0.0).tolist() == [1]
    assert choose(p, np.array([[2.0, np.inf, 0.1]]), 0.0).tolist() == [0]
    assert choose(p, cost, 1.0).tolist() == [2]


def test_curve_is_monotone_and_bisection_hits_targets() -> None:
    curve = Curve.build(*_toy())
    lams = [0.0, *np.geomspace(1e-2, 1e5, 40)]
    costs, accs = zip(*(curve.at(lam) for lam in lams), strict=True)
    assert all(a >= b - 1e-15 for a, b in zip(costs, costs[1:], strict=False))
    assert all(a >= b - 1e-15 for a, b in zip(accs, accs[1:], strict=False))
    top, floor = curve.at(0.0)[0], curve.min_cost()
    for share in (0.2, 0.5, 0.9):
        target = floor + share * (top - floor)
        assert curve.at(curve.lambda_for_cost(target))[0] == pytest.approx(target, rel=0.01)
    assert curve.lambda_for_cost(top * 2) == 0.0
    assert curve.at(curve.lambda_for_cost(floor))[0] == pytest.approx(floor)
    with pytest.raises(ValueError, match="cheapest"):
        curve.lambda_for_cost(floor * 0.5)
    for share in (0.95, 0.8):
        lam = curve.lambda_for_quality(share)
        assert curve.at(lam)[1] >= share * curve.at(0.0)[1]
        assert curve.at(lam * 1.01)[1] < share * curve.at(0.0)[1]  # the largest such lambda


def test_sample_queries_is_fixed_and_uses_validation_questions(tmp_path) -> None:
    a, b = sample_queries("mmlu_pro", size=64), sample_queries("mmlu_pro", size=64)
    assert a.texts == b.texts and a.embeddings is not None and a.embeddings.shape == (64, 384)
    rows = pq.read_table(DERIVED / "mmlu_pro" / "questions.parquet", columns=["query", "split"])
    val = {r["query"] for r in rows.to_pylist() if r["split"] == "val"}
    assert set(a.texts) <= val
    f = tmp_path / "traffic.jsonl"
    f.write_text('{"query": "hello"}\n{"query": "hello"}\nplain line\n')
    assert sample_queries(f).texts == ["hello", "plain line"]
    assert estimate_tokens("hello") > 0


def test_targets_count_what_a_choice_is_billed() -> None:
    """The choice is made on expected cost; the target counts the billed cost where known."""
    p, cost = _toy(1)
    spend = cost * np.linspace(1.0, 1.5, cost.shape[1])[None, :]  # dearer models run longer
    billed, expected = Curve.build(p, cost, spend), Curve.build(p, cost)
    target = 0.5 * (billed.min_cost() + billed.at(0.0)[0])
    lam = billed.lambda_for_cost(target)
    assert billed.at(lam)[0] == pytest.approx(target, rel=0.01)
    assert expected.at(lam)[0] < target  # calibrating on expected cost would overspend
    partial = spend.copy()
    partial[:, 0] = np.nan  # no recorded answers: the expected cost stands in
    assert np.array_equal(Curve.build(p, cost, partial).spend[:, 0], cost[:, 0])
