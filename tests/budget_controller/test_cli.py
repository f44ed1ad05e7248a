"""``junction budget eval`` end to end (tiny): report.json with every method, savings, plots."""

from __future__ import annotations

import json

from service.cli import main


def test_budget_eval_writes_report_and_plots(tmp_path, capsys) -> None:
    out = tmp_path / "r"
    rc = main(
        [
            "budget",
            "eval",
            "--out",
            str(out),
            "--seeds",
            "0,1",
            "--steps",
            "2",
            "--num-problems",
            "300",
            "--train-problems-per-step",
            "8",
            "--train-num-generations",
            "4",
            "--train-threads",
            "1",
        ]
    )
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    assert set(report["methods"]) == {
        "static",
        "no_budget",
        "difficulty",
        "tab",
        "tab_all_subq",
        "oracle",
    }
    n_budgets = len(report["budget_multiples"])
    for m in report["methods"].values():
        assert len(m["per_seed"]) == 2 and len(m["mean"]) == n_budgets
        assert all(0 <= r["accuracy"] <= 1 and r["tokens"] >= 0 for r in m["mean"])
    for m in ("static", "difficulty", "tab", "tab_all_subq", "oracle"):
        assert all(r["over_budget_rate"] == 0 for r in report["methods"][m]["mean"])
    for m in ("tab", "tab_all_subq"):
        assert set(report["summary"][m]) >= {"tokens_saved_vs_static", "oracle_gap"}
        saved = report["tokens_saved_vs_static"][m]
        assert len(saved["per_seed_by_budget"]) == 2
        assert set(report["targets"][m]) >= {"target", "measured_mean", "met_by_mean"}
    # the oracle never needs more tokens than static for static's accuracy
    assert all(
        v is None or v >= -1e-9
        for s in report["tokens_saved_vs_static"]["oracle"]["per_seed_by_budget"]
        for v in s
    )
    assert (out / "frontier.png").stat().st_size > 0 and (out / "training.png").exists()
    assert (out / "checkpoints" / "tab_all_subq_seed1.pt").exists()
    assert "tokens_saved_vs_static" in capsys.readouterr().out
