"""The live environment: the same multi-turn problems, answered by a real model over HTTP.

Each problem is one chat: the sub-questions (MMLU-Pro test questions of one category) are asked
in turn, the model's earlier answers stay in the history, and every call carries ``max_tokens``
= the allocator's budget clamped to what is left of ``B``. Tokens are the backend's reported
``usage.completion_tokens``; a turn fails when ``finish_reason == "length"`` (cut off) or, when
gold answers are available (``shared_data``: MMLU-Pro's raw outputs), when its first standalone
option letter is wrong. It checks a policy trained on replayed responses against live
generations from a different solver (SmolLM2-135M on CPU, or a vLLM backend): the length
distribution differs, so expect the policy to be miscalibrated, and compare methods, not
absolute numbers. The TAB policy is the served one (``artifacts/tab.pt`` by default, the same
action set as the gateway's: no turn is skipped); the summary counts any turn given at most one
token (``skipped_turns``), which only an exhausted budget can cause.

Usage::

    report = run_live(LiveConfig(url="http://127.0.0.1:8081/v1", problems=8), out=Path("r"))
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from budget_controller import baselines as bl
from budget_controller.config import EnvConfig, LiveConfig
from budget_controller.data import Problems, SolverData
from budget_controller.env import Allocator, ReplayEnv
from budget_controller.infer import DEFAULT_CHECKPOINT
from budget_controller.model import BudgetPolicy
from budget_controller.train import policy_allocator

SYSTEM = (
    "You answer a series of multiple-choice questions. Think briefly, then end with "
    "'The answer is (X)' where X is the option letter."
)


_ANSWER = re.compile(r"answer is:?\s*\(?([A-P])\b")
_LETTER = re.compile(r"\(([A-P])\)|\b([A-P])\b")


def extract_answer(reply: str) -> str | None:
    """The letter after "answer is", else the last option-like letter ("(C)" or a lone "C")."""
    found = _ANSWER.findall(reply)
    if found:
        return str(found[-1])
    letters = [a or b for a, b in _LETTER.findall(reply)]
    return letters[-1] if letters else None


@dataclass
class LiveTurn:
    granted: int
    completion_tokens: int
    finish_reason: str
    correct: bool | None
    reply: str = ""  # the first 300 characters, for inspection


def _gold(cfg: LiveConfig) -> dict[str, str]:
    if not cfg.shared_data:
        return {}
    from training.data.mmlu_pro import gold_questions

    return {qid: g[1] for qid, g in gold_questions(Path(cfg.shared_data)).items()}


def run_episode(
    client: httpx.Client,
    cfg: LiveConfig,
    env: ReplayEnv,
    p: Problems,
    allocate: Allocator,
    gold: dict[str, str],
) -> list[LiveTurn]:
    """One problem (``p`` has one row) through the real model."""
    data = env.data
    messages: list[dict[str, str]] = [{"role": "system", "content": SYSTEM}]
    used = np.zeros(1, dtype=np.float32)
    any_trunc = np.zeros(1, dtype=np.float32)
    last_trunc = np.zeros(1, dtype=np.float32)
    turns: list[LiveTurn] = []
    for t in range(int(p.num_turns[0])):
        q = int(p.questions[0, t])
        s = env.state(p, t, used=used, any_trunc=any_trunc, last_trunc=last_trunc)
        asked = float(allocate(s, t)[0])
        granted = int(min(asked, max(float(p.budget[0] - used[0]), 0.0)))
        messages.append({"role": "user", "content": data.queries[q]})
        if granted <= 0:
            turns.append(LiveTurn(0, 0, "length", False))
            messages.append({"role": "assistant", "content": ""})
            any_trunc[:] = last_trunc[:] = 1.0
            continue
        r = client.post(
            "/chat/completions",
            json={
                "model": cfg.model,
                "messages": messages,
                "max_tokens": granted,
                "temperature": 0.0,
            },
        )
        r.raise_for_status()
        body = r.json()
        choice = body["choices"][0]
        text = str(choice["message"].get("content") or "")
        n = int(body["usage"]["completion_tokens"])
        cut = choice.get("finish_reason") == "length"
        want = gold.get(str(data.query_ids[q]))
        correct = None if not want else (not cut and extract_answer(text) == want)
        turns.append(LiveTurn(granted, n, str(choice.get("finish_reason")), correct, text[:300]))
        messages.append({"role": "assistant", "content": text})
        used += n
        any_trunc = np.maximum(any_trunc, float(cut))
        last_trunc[:] = float(cut)
    return turns


def run_live(cfg: LiveConfig, *, out: Path) -> dict[str, Any]:
    t0 = time.time()
    out.mkdir(parents=True, exist_ok=True)
    policy, spec, _ = BudgetPolicy.from_checkpoint(cfg.checkpoint or DEFAULT_CHECKPOINT)
    data = SolverData.load(EnvConfig())
    env = ReplayEnv(data, spec)
    base = data.sample_problems("test", cfg.problems, np.random.default_rng(30_000 + cfg.seed))
    gold = _gold(cfg)
    headers = {"Authorization": f"Bearer {cfg.api_key}"} if cfg.api_key else {}
    results: dict[str, list[dict[str, Any]]] = {}
    with httpx.Client(base_url=cfg.url, timeout=cfg.timeout_s, headers=headers) as client:
        for method in [m.strip() for m in cfg.methods.split(",") if m.strip()]:
            results[method] = []
            for i in range(len(base)):
                p = Problems(
                    base.questions[i : i + 1],
                    base.num_turns[i : i + 1],
                    (cfg.budget_multiple * spec.unit * base.num_turns[i : i + 1]).astype(
                        np.float32
                    ),
                    base.solver[i : i + 1],
                )
                alloc = _allocator(method, p, env, policy)
                turns = run_episode(client, cfg, env, p, alloc, gold)
                results[method].append(
                    {"budget": float(p.budget[0]), "turns": [asdict(x) for x in turns]}
                )
    summary = {m: _summarise(rows) for m, rows in results.items()}
    report = {
        "config": asdict(cfg),
        "summary": summary,
        "episodes": results,
        "seconds": round(time.time() - t0, 1),
    }
    (out / "live_report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def _allocator(method: str, p: Problems, env: ReplayEnv, policy: BudgetPolicy) -> Allocator:
    if method == "static":
        return bl.static(p)
    if method == "difficulty":
        return bl.difficulty(p, env)
    if method == "tab":
        return policy_allocator(policy, env.spec, p, greedy=True)
    raise ValueError(f"live methods are static, difficulty and tab, not {method!r}")


def _summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    tokens = [sum(t["completion_tokens"] for t in r["turns"]) for r in rows]
    turns = [t for r in rows for t in r["turns"]]
    graded = [r for r in rows if all(t["correct"] is not None for t in r["turns"])]
    return {
        "problems": len(rows),
        "turns": len(turns),
        # a turn given at most one token (the old "skip" action) or nothing: never by choice now
        "skipped_turns": sum(t["granted"] <= 1 for t in turns),
        "mean_tokens": float(np.mean(tokens)) if tokens else 0.0,
        "truncated_turn_rate": float(np.mean([t["finish_reason"] == "length" for t in turns]))
        if turns
        else 0.0,
        "max_tokens_respected": all(t["completion_tokens"] <= t["granted"] for t in turns),
        "within_budget": all(tok <= r["budget"] for tok, r in zip(tokens, rows, strict=True)),
        "accuracy": float(np.mean([all(t["correct"] for t in r["turns"]) for r in graded]))
        if graded
        else None,
        # per sub-question: informative where whole problems are rarely solved (small models)
        "turn_accuracy": float(np.mean([bool(t["correct"]) for r in graded for t in r["turns"]]))
        if graded
        else None,
    }
