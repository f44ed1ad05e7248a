"""The live environment against the real SmolLM2 CPU server: budgets cap real generations."""

from __future__ import annotations

import importlib.util
import json

import pytest

from budget_controller.config import LiveConfig
from budget_controller.live import run_live
from service.llama_server import ALIAS, LlamaServer
from tests.service.helpers import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_live_episodes_respect_every_budget(tmp_path) -> None:
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed (pip install 'llama-cpp-python[server]')")
    with LlamaServer(port=free_port()) as srv:
        cfg = LiveConfig(
            url=srv.url, model=ALIAS, problems=1, budget_multiple=0.2, methods="static,tab"
        )
        report = run_live(cfg, out=tmp_path)
    saved = json.loads((tmp_path / "live_report.json").read_text())
    assert saved["summary"] == report["summary"]
    for method in ("static", "tab"):
        s = report["summary"][method]
        assert s["problems"] == 1 and s["max_tokens_respected"] and s["within_budget"]
        turns = [t for ep in report["episodes"][method] for t in ep["turns"]]
        assert all(t["completion_tokens"] <= t["granted"] for t in turns)
        assert s["mean_tokens"] > 0
    # at a fifth of a median length per turn static's caps bind: real generations are cut off
    assert report["summary"]["static"]["truncated_turn_rate"] > 0
    # the served policy never gives up a turn: a grant of at most one token only once B is spent
    for ep in report["episodes"]["tab"]:
        spent = 0
        for t in ep["turns"]:
            assert t["granted"] > 1 or spent >= ep["budget"] - 1, ep
            spent += t["completion_tokens"]
