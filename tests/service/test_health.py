from __future__ import annotations

from tests.service.helpers import ADMIN, Gateway


def test_liveness_readiness_and_metrics(gateway: Gateway, fake_a) -> None:
    assert gateway.client.get("/health/liveness").json() == {"status": "alive"}
    r = gateway.client.get("/health/readiness")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ready" and body["database"] == "ok" and body["store"] == "memory ok"
    assert gateway.client.get("/health").status_code == 200
    gateway.register("model-a", fake_a.url, backend_model="backend-a")
    r = gateway.client.post(
        "/v1/chat/completions",
        headers=ADMIN,
        json={"model": "junction/auto", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert r.status_code == 200
    assert gateway.client.get("/metrics").status_code == 401  # not for every client
    text = gateway.client.get("/metrics", headers=ADMIN).text
    assert 'junction_routing_decisions_total{model="model-a",router="locus"} 1.0' in text
    for stage in ("embed", "score", "upstream", "total"):
        assert f'junction_latency_seconds_count{{stage="{stage}"}}' in text
    assert 'junction_tokens_total{kind="completion",model="model-a"}' in text
    assert "junction_cost_usd_total" in text
