"""federation/RESULTS.md is exactly what ``junction federate results`` makes of the committed
per-run reports: every figure in it traces to one ``federation/results/runs/<run>/report.json``."""

from __future__ import annotations

import shutil
from pathlib import Path

from service.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_results_md_is_regenerated_from_the_committed_reports(tmp_path: Path) -> None:
    runs = tmp_path / "results" / "runs"
    shutil.copytree(ROOT / "federation" / "results" / "runs", runs)
    for extra in ("rerun", "NOTES.md"):
        src = ROOT / "federation" / "results" / extra
        if src.is_dir():
            shutil.copytree(src, tmp_path / "results" / extra)
        elif src.exists():
            shutil.copyfile(src, tmp_path / "results" / extra)
    out = tmp_path / "RESULTS.md"
    assert main(["federate", "results", str(runs), "--out", str(out)]) == 0
    assert out.read_text() == (ROOT / "federation" / "RESULTS.md").read_text()
    assert (tmp_path / "results" / "plots").is_dir()


def test_every_grid_mlp_run_keeps_its_validation_round_and_reports_say_so() -> None:
    """The method table compares every MLP method on one rule: each grid run keeps its training
    round with the best validation AUC, and each committed MLP report records that choice."""
    from federation.grid import CHOSEN_MLP, MLP_METHODS, load_reports, runs

    grid = runs()
    reports = load_reports(ROOT / "federation" / "results" / "runs")
    for name, cfg in grid.items():
        if cfg.router != "mlp":
            continue
        assert cfg.select_round == "validation", name
        method = name.split("_mlp_")[1].rsplit("_s", 1)[0]
        assert cfg.lrs == MLP_METHODS.get(method, {}).get("lrs", ""), name
        assert method != CHOSEN_MLP or len(cfg.lr_list) > 1, name  # its lr chosen on validation
        assert reports[name]["federated_selection"]["rule"] == "validation", name
        assert reports[name]["config"]["select_round"] == "validation", name
