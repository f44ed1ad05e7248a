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
            "--train-init-steps",
            "20",
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
        "oracle_turn",
    }
    n_budgets = len(report["budget_multiples"])
    for m in report["methods"].values():
        assert len(m["per_seed"]) == 2 and len(m["mean"]) == n_budgets
        assert all(0 <= r["accuracy"] <= 1 and r["tokens"] >= 0 for r in m["mean"])
        # a turn can be right in a problem that fails: per-turn accuracy is the higher one
        assert all(r["turn_accuracy"] >= r["accuracy"] for r in m["mean"])
    for m in ("static", "difficulty", "tab", "tab_all_subq", "oracle"):
        assert all(r["over_budget_rate"] == 0 for r in report["methods"][m]["mean"])
    for m in ("tab", "tab_all_subq"):
        assert set(report["summary"][m]) >= {
            "tokens_saved_vs_static",
            "tokens_saved_vs_static_per_turn",
            "budgets_reaching_static_accuracy",
            "budgets_reaching_static_accuracy_per_turn",
            "oracle_gap",
            "oracle_gap_per_turn",
        }
        for key in (m, m + "_per_turn"):
            saved = report["tokens_saved_vs_static"][key]
            assert len(saved["per_seed_by_budget"]) == 2
            assert set(report["targets"][key]) >= {"target", "measured_mean", "met"}
    # the policies evaluated have the served action set: no level below the predicted length
    assert min(report["budget_levels"]) >= 1
    alloc = report["allocations"]
    assert {"static", "oracle", "tab"} <= set(alloc)
    assert sum(b["turns"] for b in alloc["oracle"]) == sum(b["turns"] for b in alloc["static"])
    assert (out / "allocations.png").stat().st_size > 0
    # the oracle never needs more tokens than static for static's accuracy
    for key in ("oracle", "oracle_turn_per_turn"):
        assert all(
            v is None or v >= -1e-9
            for s in report["tokens_saved_vs_static"][key]["per_seed_by_budget"]
            for v in s
        )
    assert (out / "frontier.png").stat().st_size > 0 and (out / "training.png").exists()
    assert (out / "checkpoints" / "tab_all_subq_seed1.pt").exists()
    assert "tokens_saved_vs_static" in capsys.readouterr().out
