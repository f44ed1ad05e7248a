"""Through the real CPU model: SmolLM2-135M behind llama-cpp-python's server, onboarded from its
committed measured evaluations, called with the official openai client."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from service.llama_server import ALIAS, LlamaServer
from service.pool import LIVE_MODELS, read_live_evaluations
from tests.service.helpers import ADMIN_TOKEN, Gateway, free_port, make_settings, run_gateway

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_committed_smollm2_evaluations_are_valid() -> None:
    evals = read_live_evaluations(LIVE_MODELS / f"{ALIAS}.jsonl")
    assert len(evals) >= 128
    assert all(e.score in (0.0, 1.0) and e.query and e.prompt_tokens for e in evals)


@pytest.fixture(scope="module")
def llama() -> Iterator[LlamaServer]:
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed (pip install 'llama-cpp-python[server]')")
    srv = LlamaServer(port=free_port())
    with pytest.MonkeyPatch.context() as mp:
        # llama-cpp's server reads HOST/PORT/MODEL from the environment: `make run PORT=...`
        # once moved it onto the gateway's port. Decoys here must not reach it.
        mp.setenv("PORT", str(free_port()))
        mp.setenv("MODEL", "/nonexistent.gguf")
        srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def gw(tmp_path, llama: LlamaServer) -> Iterator[Gateway]:
    with run_gateway(
        make_settings(
            tmp_path, smollm2_url=llama.url, min_evaluations=16, upstream_read_timeout_s=60
        )
    ) as g:
        yield g


def test_chat_and_stream_through_smollm2(gw: Gateway) -> None:
    model = gw.admin("GET", f"/admin/models/{ALIAS}").json()
    assert model["num_evaluations"] >= 128 and model["backend"]["url"].endswith("/v1")
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=ADMIN_TOKEN, max_retries=0, timeout=120)
    assert ALIAS in [m.id for m in client.models.list()]
    raw = client.chat.completions.with_raw_response.create(
        model="junction/auto",
        messages=[{"role": "user", "content": "Say hello."}],
        max_completion_tokens=8,
    )
    r = raw.parse()
    assert r.model == ALIAS and raw.headers["x-junction-model"] == ALIAS
    assert r.choices[0].message.content
    assert (
        r.usage is not None and 0 < r.usage.completion_tokens <= 8
    )  # max_completion_tokens sent as max_tokens
    chunks = list(
        client.chat.completions.create(
            model=ALIAS,
            messages=[{"role": "user", "content": "Count to five."}],
            max_tokens=12,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    *body, last = chunks
    assert last.choices == [] and last.usage is not None  # llama.cpp sends none: counted
    assert last.usage.completion_tokens > 0 and last.usage.prompt_tokens > 0
    assert "".join(c.choices[0].delta.content or "" for c in body)
    assert all(c.model == ALIAS for c in chunks)


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


def _gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        # a zombie child of this process counts as gone once it is reaped
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return True
        time.sleep(0.1)
    return False


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_serve_never_leaves_the_model_server_behind(tmp_path, sig: signal.Signals) -> None:
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed")
    port, llama_port = free_port(), free_port()
    env = {
        **os.environ,
        "JUNCTION_DATA_DIR": str(tmp_path),
        "JUNCTION_LOAD_DEFAULT_BUNDLE": "false",
        "JUNCTION_HEALTH_PROBE_INTERVAL_S": "0",
    }
    cmd = [sys.executable, "-m", "service.cli", "serve", "--port", str(port)]
    proc = subprocess.Popen(
        [*cmd, "--smollm2-port", str(llama_port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, "the gateway exited during start-up"
            assert time.monotonic() < deadline, "the gateway did not become ready"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health/liveness", timeout=1).is_success:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        (llama,) = _children(proc.pid)
        assert httpx.get(f"http://127.0.0.1:{llama_port}/v1/models", timeout=5).is_success
        proc.send_signal(sig)
        proc.wait(30)
        assert _gone(llama, 15), f"the model server outlived the gateway ({sig.name})"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
