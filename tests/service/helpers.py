"""Helpers for gateway tests: a deterministic encoder, a gateway on a loopback port, factories."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import uvicorn

from service.app import Components, create_app
from service.routing.fallback import ConstantEmbedder
from service.settings import Settings
from service.upstream.replay import ReplayBackend
from training.local_servers import free_port

ADMIN_TOKEN = "test-admin-token-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


class HashEncoder:
    """A deterministic stand-in for MiniLM: unit vectors seeded by the text's hash."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(len(texts))
        rows = []
        for t in texts:
            seed = int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "little")
            v = np.random.default_rng(seed).standard_normal(384).astype(np.float32)
            rows.append(v / np.linalg.norm(v))
        return np.stack(rows) if rows else np.zeros((0, 384), dtype=np.float32)


class DictReplay:
    """A replay store from a dict {(model, prompt): answer}."""

    def __init__(self, answers: dict[tuple[str, str], str]) -> None:
        self.answers = answers

    def answer(self, model: str, prompt_text: str) -> Any:
        text = self.answers.get((model, prompt_text.strip()))
        if text is None:
            return None

        class A:
            response = text
            completion_tokens = len(text.split())

        return A()


class MeanScoreLocus(ConstantEmbedder):
    """A predictable LOCUS stand-in for tests: p_correct = the model's mean evaluation score."""

    router_name = "locus"


def make_settings(tmp: Path, **kw: Any) -> Settings:
    base: dict[str, Any] = {
        "database_url": f"sqlite:///{tmp / 'junction.db'}",
        "admin_token": ADMIN_TOKEN,
        "data_dir": tmp,
        "load_default_bundle": False,
        "health_probe_interval_s": 0,
        "upstream_read_timeout_s": 2.0,
        "cooldown_s": 30.0,
        "min_evaluations": 4,
        "registry_poll_s": 0.1,
    }
    base.update(kw)
    return Settings(**base)


class Gateway:
    def __init__(self, base_url: str, server: uvicorn.Server, app: Any) -> None:
        self.url = base_url
        self.server = server
        self.app = app
        self.client = httpx.Client(base_url=base_url, timeout=30)

    @property
    def c(self) -> Components:
        return self.app.state.components  # type: ignore[no-any-return]

    def server_loop(self) -> Any:
        """The gateway's event loop, for reading its state from a test."""
        return self.c.embedder._worker.get_loop()  # type: ignore[union-attr]

    def admin(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return self.client.request(method, path, headers={**ADMIN, **kw.pop("headers", {})}, **kw)

    def register(
        self,
        name: str,
        url: str | None,
        *,
        scores: Sequence[float] = (1, 1, 0, 1),
        backend_model: str | None = None,
        price: tuple[float, float] = (1.0, 2.0),
        **backend: Any,
    ) -> httpx.Response:
        evals = [{"query": f"question {i} for {name}", "score": s} for i, s in enumerate(scores)]
        be: dict[str, Any] = (
            {"url": url, "model": backend_model or name, **backend}
            if url
            else {"kind": "replay", **backend}
        )
        r = self.admin(
            "POST",
            "/admin/models",
            json={
                "name": name,
                "backend": be,
                "pricing": {"input_per_mtok": price[0], "output_per_mtok": price[1]},
                "evaluations": evals,
            },
        )
        return r


@contextmanager
def run_gateway(settings: Settings, **app_kw: Any) -> Iterator[Gateway]:
    app_kw.setdefault("encoder", HashEncoder())
    app_kw.setdefault("locus", MeanScoreLocus())
    app_kw.setdefault("replay", ReplayBackend(loader=lambda: DictReplay({})))
    app = create_app(settings, **app_kw)
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="on",
        loop="asyncio",
        http="h11",
        ws="none",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("gateway failed to start")
        if time.monotonic() > deadline:
            raise RuntimeError("gateway did not start in 30 s")
        time.sleep(0.02)
    gw = Gateway(f"http://127.0.0.1:{port}", server, app)
    try:
        yield gw
    finally:
        gw.client.close()
        server.should_exit = True
        thread.join(15)


def assert_error_shape(r: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    assert isinstance(err["message"], str) and err["message"]
    if code is not None:
        assert err["code"] == code, err
    return err  # type: ignore[no-any-return]
