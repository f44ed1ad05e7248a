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
