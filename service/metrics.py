"""Prometheus metrics, one registry per app (no module-level collectors, so tests and several
apps in one process never collide).

Usage::

    m = Metrics()
    m.requests.labels(endpoint="/v1/chat/completions", status="200").inc()
    body = m.render()
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "junction_requests", "HTTP requests answered", ["endpoint", "status"], registry=r
        )
        self.decisions = Counter(
            "junction_routing_decisions",
            "routing decisions per chosen model",
            ["model", "router"],
            registry=r,
        )
        self.latency = Histogram(
            "junction_latency_seconds",
            "latency by stage: embed, score, upstream (first byte), total",
            ["stage"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.fallbacks = Counter(
            "junction_fallbacks", "requests served by another model than chosen", registry=r
        )
        self.retries = Counter("junction_retries", "upstream retries", ["model"], registry=r)
        self.upstream_errors = Counter(
            "junction_upstream_errors", "failed upstream attempts", ["model", "kind"], registry=r
        )
        self.tokens = Counter("junction_tokens", "tokens served", ["model", "kind"], registry=r)
        self.cost = Counter(
            "junction_cost_usd", "USD cost of served requests", ["model"], registry=r
        )
        self.cooling = Gauge(
            "junction_backends_cooling_down", "backends in cooldown now", registry=r
        )
        self.embed_batch = Histogram(
            "junction_embed_batch_size",
            "queries per encoder forward pass",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=r,
        )
        self.registry_models = Gauge(
            "junction_registry_models", "routable models in the registry", registry=r
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
