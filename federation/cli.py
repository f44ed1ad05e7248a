"""``junction federate``: simulate (Simulation Engine), local deployment (Deployment Engine with
real SuperLink and SuperNode processes), and publishing a trained router to the gateway.

Usage::

    junction federate simulate --logs routerbench --router mlp --clients 10 --alpha 0.6 \\
        --rounds 30 --seed 0 --out reports/fed/rb-mlp
    junction federate deploy --data a.jsonl --data b.jsonl --router kmeans --out reports/fed/dep
    junction federate publish --router reports/fed/rb-mlp/federated/router.pt \\
        --gateway http://127.0.0.1:8000 --name fed-mlp --activate
    junction federate grid --only 'rb_*'           # the committed experiment grid
    junction federate results                      # federation/RESULTS.md from its reports
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from training.config_cli import add_dataclass_args, dataclass_from_args

log = logging.getLogger("junction.federate")


def _simulate(args: argparse.Namespace) -> int:
    from federation.config import FederationConfig
    from federation.simulate import simulate

    cfg = dataclass_from_args(FederationConfig, args)
    report = simulate(cfg, Path(args.out), progress=not args.quiet, verbose=args.verbose)
    auc, chk = report["auc"], report["checks"]
    sys.stdout.write(
        json.dumps(
            {
                "auc": {
                    "federated": round(auc["federated"], 4),
                    "centralized": round(auc["centralized"], 4),
                    "local_max": round(max(auc["local"]), 4),
                },
                "clients_federated_beats_local": chk["clients_federated_beats_local"],
                "out": str(args.out),
            }
        )
        + "\n"
    )
    return 0


def _deploy(args: argparse.Namespace) -> int:
    from federation.config import FederationConfig
    from federation.deploy import run_local_deployment

    cfg = dataclass_from_args(FederationConfig, args)
    path = run_local_deployment(
        cfg, [Path(p) for p in args.data], Path(args.out), timeout=args.timeout
    )
    sys.stdout.write(json.dumps({"router": str(path)}) + "\n")
    return 0


def _publish(args: argparse.Namespace) -> int:
    from federation.publish import publish

    token = args.admin_token or os.environ.get("JUNCTION_ADMIN_TOKEN", "")
    if not token:
        log.error("no admin token: pass --admin-token or set JUNCTION_ADMIN_TOKEN")
        return 2
    row = publish(
        Path(args.router), gateway=args.gateway, name=args.name, token=token,
        activate=args.activate,
    )  # fmt: skip
    sys.stdout.write(json.dumps(row) + "\n")
    return 0


def _table(args: argparse.Namespace) -> int:
    from federation.report import results_table

    reports = {
        str(p.parent.relative_to(args.runs)): json.loads(p.read_text())
        for p in sorted(Path(args.runs).rglob("report.json"))
        if p.parent.name != "federated"
    }
    if not reports:
        log.error("no report.json under %s", args.runs)
        return 1
    sys.stdout.write(results_table(reports))
    return 0


def _grid(args: argparse.Namespace) -> int:
    from federation.grid import run_grid

    done = run_grid(
        Path(args.out), Path(args.scratch), pattern=args.only, force=args.force,
        settings=args.set, suffix=args.suffix,
    )  # fmt: skip
    sys.stdout.write(json.dumps({"ran": done, "out": str(args.out)}) + "\n")
    return 0


def _results(args: argparse.Namespace) -> int:
    from federation.grid import CHOSEN_MLP, LOGS, MLP_METHODS, load_reports
    from federation.report import results_markdown, write_plots

    runs = Path(args.runs)
    reports = load_reports(runs)
    if not reports:
        log.error("no <run>/report.json under %s", runs)
        return 1
    reruns = {
        p.parent.name: p.read_bytes() == (runs / p.parent.name / "report.json").read_bytes()
        for p in sorted((runs.parent / "rerun").glob("*/report.json"))
        if (runs / p.parent.name / "report.json").exists()
    }
    out = Path(args.out)
    plots: list[str] = []
    for name in args.plot:
        if name in reports:
            dest = out.parent / "results" / "plots" / name
            dest.mkdir(parents=True, exist_ok=True)
            for path in write_plots(reports[name], dest):
                plots.append(str(path.relative_to(out.parent / "results")))
    descr = {
        "rb": "RouterBench, 11 models",
        "mm": "MMLU-Pro, its 18 seen models (4 held out for onboarding stay out)",
        "mm22skew": "made by the command from the MMLU-Pro evaluation log: all 22 models "
        "(`--held-out include`) with strong per-client model skew (`--model-alpha 0.1`)",
    }
    text = results_markdown(
        reports,
        logs={k: descr.get(k, str(v)) for k, v in LOGS.items()},
        methods=list(MLP_METHODS),
        chosen=CHOSEN_MLP,
        reruns=reruns,
        plots=plots,
        notes=(runs.parent / "NOTES.md").read_text() if (runs.parent / "NOTES.md").exists() else "",
    )
    out.write_text(text)
    sys.stdout.write(json.dumps({"runs": len(reports), "out": str(out)}) + "\n")
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from federation.config import FederationConfig

    fed = subparsers.add_parser("federate", help="federated router training on Flower")
    sub = fed.add_subparsers(dest="federate_command", required=True, metavar="ACTION")

    s = sub.add_parser(
        "simulate",
        help="the paper's experiment in Flower's Simulation Engine: federated vs centralised vs "
        "local routers; report.json, summary.md, plots",
    )
    add_dataclass_args(s, FederationConfig)
    s.add_argument("--out", required=True, help="output directory")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.add_argument("--verbose", action="store_true", help="Flower's own round-by-round log")
    s.set_defaults(handler=_simulate)

    d = sub.add_parser(
        "deploy",
        help="Flower's Deployment Engine on loopback: a SuperLink and one SuperNode per --data "
        "file (a client's private log), as separate processes; saves the router",
    )
    add_dataclass_args(d, FederationConfig)
    d.add_argument("--data", action="append", required=True, help="one client's evaluation log")
    d.add_argument("--out", required=True, help="where the ServerApp writes router.pt")
    d.add_argument("--timeout", type=float, default=600.0, help="seconds before giving up")
    d.set_defaults(handler=_deploy)

    t = sub.add_parser("table", help="one Markdown table of every simulate report under RUNS")
    t.add_argument("runs", help="a directory holding simulate output directories")
    t.set_defaults(handler=_table)

    g = sub.add_parser(
        "grid",
        help="run the committed experiment grid (federation/grid.py): each missing run's "
        "report.json and summary.md under OUT/<run>",
    )
    g.add_argument("--out", default="federation/results/runs", help="where reports go")
    g.add_argument("--scratch", default="reports/fed", help="routers and plots of each run")
    g.add_argument("--only", default=None, help="shell pattern of run names, e.g. 'rb_*'")
    g.add_argument("--force", action="store_true", help="re-run runs that have a report")
    g.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="a run-config setting on top of every selected run (repeatable), e.g. "
        "local-epochs=2: a variant tried beside the grid; needs --suffix",
    )  # fmt: skip
    g.add_argument(
        "--suffix", default="", help="appended to each run's name (its report folder) with --set"
    )
    g.set_defaults(handler=_grid)

    r = sub.add_parser(
        "results",
        help="federation/RESULTS.md (and its plots) from the committed per-run reports",
    )
    r.add_argument("runs", nargs="?", default="federation/results/runs", help="reports dir")
    r.add_argument("--out", default="federation/RESULTS.md", help="the Markdown file to write")
    r.add_argument(
        "--plot",
        action="append",
        default=["rb_mlp_avg_s0", "mm22skew_mlp_avg_s0", "mm22skew_kmeans_s0"],
        help="runs whose plots to draw beside it",
    )
    r.set_defaults(handler=_results)

    p = sub.add_parser("publish", help="upload a router checkpoint to the gateway's admin API")
    p.add_argument("--router", required=True, help="router checkpoint (router.pt)")
    p.add_argument("--gateway", required=True, help="gateway base URL")
    p.add_argument("--name", required=True, help="router name (lowercase, [a-z0-9_-])")
    p.add_argument("--admin-token", default="", help="admin token (or JUNCTION_ADMIN_TOKEN)")
    p.add_argument("--activate", action="store_true", help="activate the uploaded version")
    p.set_defaults(handler=_publish)
