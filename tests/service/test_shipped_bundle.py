"""The gateway on the REAL shipped bundle (its LOCUS checkpoint and pool, the default encoder; no
stand-in scorer) routes a mixed set of MMLU-Pro test questions better than any single model.

280 test-split questions, 20 from each of the 14 categories (seed 0), go to ``POST /v1/route`` in
quality mode (lambda 0). Routed accuracy is read from the recorded scores of the chosen models'
real answers; the best single model is the pool model with the highest accuracy on the same 280.
"""

from __future__ import annotations

import collections
import json
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.service.helpers import ADMIN, make_settings, run_gateway
from training.data.build import DERIVED

pytestmark = pytest.mark.slow
PER_CATEGORY = 20


def _sample() -> list[tuple[str, str, str]]:
    rows = pq.read_table(
        DERIVED / "mmlu_pro" / "questions.parquet",
        columns=["query_id", "query", "category", "split"],
    ).to_pylist()
    by_cat: dict[str, list[dict]] = collections.defaultdict(list)
    for r in sorted(rows, key=lambda r: r["query_id"]):
        if r["split"] == "test":
            by_cat[r["category"]].append(r)
    rng = np.random.default_rng(0)
    out = []
    for cat in sorted(by_cat):
        for i in sorted(rng.choice(len(by_cat[cat]), size=PER_CATEGORY, replace=False)):
            r = by_cat[cat][i]
            out.append((r["query_id"], r["query"], cat))
    return out


@pytest.mark.xfail(
    strict=True,
    reason=(
        "issue 9's target, not met yet: the shipped LOCUS-KR bundle sends all 280 questions to "
        "gemini-1.5-flash-002 (routed 0.654 = best single 0.654); strict, so the day routing "
        "wins this test fails until the marker is removed"
    ),
)
def test_routing_on_the_shipped_bundle_beats_the_best_single_model(tmp_path) -> None:
    sample = _sample()
    ids = {q for q, _, _ in sample}
    evals = pq.read_table(DERIVED / "mmlu_pro" / "evals.parquet").to_pylist()
    score = {
        (str(r["query_id"]), str(r["model"])): r["score"] for r in evals if r["query_id"] in ids
    }
    settings = make_settings(tmp_path, load_default_bundle=True)
    # encoder=None, locus=None: the gateway's own defaults (the shipped LOCUS, the default encoder);
    # the replay backend is the real one (the bundle models' recorded answers)
    from service.upstream.replay import ReplayBackend

    with run_gateway(settings, encoder=None, locus=None, replay=ReplayBackend()) as gw:
        chosen: list[str] = []
        pool: set[str] = set()
        for _qid, text, _ in sample:
            r = gw.client.post(
                "/v1/route",
                headers=ADMIN,
                json={"messages": [{"role": "user", "content": text}], "mode": "quality"},
            )
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["router"] == "locus" and body["lambda"] == 0.0
            chosen.append(body["model"])
            pool |= {c["model"] for c in body["candidates"]}
    routed = float(np.mean([score[(q, m)] for (q, _, _), m in zip(sample, chosen, strict=True)]))
    single = {m: float(np.mean([score[(q, m)] for q, _, _ in sample])) for m in sorted(pool)}
    best = max(single, key=lambda m: single[m])
    counts = collections.Counter(chosen)
    figures = {
        "questions": len(sample),
        "routed_accuracy": routed,
        "best_single": best,
        "best_single_accuracy": single[best],
        "models_used": len(counts),
        "traffic": dict(counts.most_common()),
    }
    sys.stderr.write("shipped-bundle routing: " + json.dumps(figures) + "\n")
    assert len(counts) > 1, f"all traffic went to one model: {figures}"
    assert routed > single[best], f"routing does not beat the best single model: {figures}"


def test_cost_targets_are_met_on_held_out_test_questions(tmp_path) -> None:
    """Calibrated on the 1,203 validation questions through the gateway's own calibration path,
    every one of the 2,406 test questions routed at the calibrated lambda: the mean cost billed for
    the chosen models' recorded answers lands within 5% of each target (10%, 25%, 50%, 75% of the
    way from the cheapest reachable cost to quality mode's), and spending less buys less
    accuracy."""
    import asyncio

    from service.cli.routing_report import cost_knob, shipped_gateway

    async def measure() -> dict:
        async with shipped_gateway(tmp_path) as (_, c):
            return await cost_knob(c)

    report = asyncio.run(measure())
    sys.stderr.write("cost targets: " + json.dumps(report["targets"]) + "\n")
    assert report["calibration"] == {"split": "val", "queries": 1203}
    assert report["test_queries"] == 2406
    for t in report["targets"]:
        assert abs(t["test_relative_error"]) <= 0.05, t
    accs = [t["test"]["accuracy"] for t in report["targets"]]
    assert accs == sorted(accs) and accs[0] < report["modes"]["quality"]["test"]["accuracy"]
    m = report["modes"]
    assert (
        m["cost"]["test"]["expected_cost_per_1k_usd"]
        < m["balanced"]["test"]["expected_cost_per_1k_usd"]
        < m["quality"]["test"]["expected_cost_per_1k_usd"]
    )
