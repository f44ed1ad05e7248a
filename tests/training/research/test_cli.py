"""``junction research``: every registered job is a subcommand whose flags are its config's fields."""

from __future__ import annotations

import json

from service.cli import build_parser, main
from training.research.jobs import JOBS, load_job


def test_every_job_is_a_subcommand_with_its_config_flags(tmp_path):
    parser = build_parser()
    for name in JOBS:
        args = parser.parse_args(["research", name, "--out", str(tmp_path), "--quick"])
        assert args.job == name and args.quick and args.backend == "flower"
        job = load_job(name)
        assert job.config_cls.__dataclass_fields__.keys() <= vars(args).keys()


def test_cli_runs_a_job_end_to_end(tmp_path, capsys):
    rc = main(
        [
            "research", "ns-nac", "--backend", "in-process", "--seeds", "2", "--quiet",
            "--horizons", "300,600", "--tune-seeds", "1", "--restart-divisors", "4",
            "--alphas", "0.3", "--betas", "0.1", "--out", str(tmp_path),
        ]
    )  # fmt: skip
    assert rc == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["job"] == "ns-nac" and set(line["claims"]) == {
        "sublinear_regret", "restarts_beat_no_restarts", "borl_close_to_tuned",
    }  # fmt: skip
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["config"]["horizons"] == "300,600" and report["seeds"] == [0, 1]


def test_quick_uses_the_jobs_quick_seeds_unless_seeds_is_given(tmp_path, capsys):
    """pubswap's ``--quick`` runs one seed (three would take ~10 min on two cores); ``--seeds``
    still wins."""
    assert load_job("pubswap").quick_seeds == 1
    base = ["research", "pubswap", "--backend", "in-process", "--quiet", "--model", "tiny-random"]
    assert main([*base, "--quick", "--out", str(tmp_path / "q")]) == 0
    assert json.loads((tmp_path / "q" / "report.json").read_text())["seeds"] == [0]
    assert main([*base, "--quick", "--seeds", "2", "--out", str(tmp_path / "s")]) == 0
    assert json.loads((tmp_path / "s" / "report.json").read_text())["seeds"] == [0, 1]
