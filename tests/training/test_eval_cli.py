"""The evaluation harness end to end through the CLI, on a small slice of the real MMLU-Pro data."""

import json

import numpy as np
import pytest

from service.cli import main
from training.data import EvalRow, load_matrix, write_log

MODELS = [
    "gemini-1.5-flash-002",
    "Llama-2-7b-hf",
    "Meta-Llama-3_1-70B",
    "Phi-3-mini-4k-instruct",
    "Yi-6B",
    "Mistral-7B-v0.1",
]


@pytest.fixture(scope="module")
def slice_log(tmp_path_factory):
    m = load_matrix("mmlu_pro").select_models(MODELS)
    rng = np.random.default_rng(0)
    rows = []
    for i in rng.choice(m.num_queries, size=400, replace=False):
        for j, name in enumerate(MODELS):
            if np.isnan(m.scores[i, j]):
                continue
            rows.append(
                EvalRow(
                    query_id=str(m.query_ids[i]),
                    model=name,
                    score=float(m.scores[i, j]),
                    prompt_tokens=int(m.prompt_tokens[i, j]),
                    completion_tokens=int(m.completion_tokens[i, j]),
                    embedding=tuple(float(v) for v in m.embeddings[i]),
                    cost_usd=float(m.cost_usd[i, j]),
                    category=str(m.categories[i]),
                )
            )
    return write_log(rows, tmp_path_factory.mktemp("log") / "slice.parquet")


def test_eval_cli_writes_a_complete_report(slice_log, tmp_path):
    out = tmp_path / "report"
    code = main(
        ["eval", "--dataset", str(slice_log), "--out", str(out), "--quick", "--threads", "1",
         "--held-out", "Yi-6B,Mistral-7B-v0.1", "--max-portfolio", "3"]
    )  # fmt: skip
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["held_out"] == ["Yi-6B", "Mistral-7B-v0.1"]
    assert len(report["pool"]) == 4
    methods = report["methods"]
    assert {
        "locus",
        "mf",
        "mlp",
        "kmeans",
        "knn",
        "constant",
        "best_single",
        "random",
        "oracle",
    } <= set(methods)
    oracle = methods["oracle"]["routing_accuracy"]
    for name, m in methods.items():
        assert 0.0 <= m["routing_accuracy"] <= oracle + 1e-9, name
    assert 0.0 < methods["locus"]["correctness_accuracy"] <= 1.0
    assert 0.0 <= methods["mlp"]["frontier_auc"] <= 1.0
    assert set(report["sample_efficiency"]["per_k"]) == {"4", "8", "all"}
    assert report["determinism"]["repeat_bitwise_identical"] is True
    assert np.isfinite(report["geometry"]["euclidean"]["spearman"])
    assert set(report["portfolio"]["k_center"]) == {"2", "3"}
    for png in ("frontier.png", "sample_efficiency.png", "embedding_map.png", "portfolio.png"):
        assert (out / png).stat().st_size > 10_000
    summary = (out / "summary.md").read_text()
    assert "## 8. Determinism" in summary and "locus" in summary


def test_eval_cli_rejects_an_unknown_held_out_model(slice_log, tmp_path):
    with pytest.raises(KeyError, match="unknown model"):
        main(
            [
                "eval",
                "--dataset",
                str(slice_log),
                "--out",
                str(tmp_path),
                "--quick",
                "--held-out",
                "nope",
            ]
        )
