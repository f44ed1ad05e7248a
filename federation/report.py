"""The human side of a ``junction federate simulate`` report: Markdown summary and plots.

Plots come from the numbers in ``report.json`` (and the test matrix for single-model points):
``frontier.png`` (accuracy-cost curves), ``clients.png`` (per-client AUC bars) and
``rounds.png`` (global-test AUC per round, MLP only).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from training.data.matrix import EvalMatrix
from training.evaluation.metrics import upper_hull
from training.evaluation.plots import frontier_plot, lines_plot


def _bars(report: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ca = report["client_auc"]
    names = ["local", "federated", "personalized", "centralized"]
    n = len(ca["federated"])
    x = np.arange(n)
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(max(7, n * 0.9), 4.5))
    for i, name in enumerate(names):
        ax.bar(x + (i - 1.5) * width, ca[name], width, label=name)
    lo = min(min(v) for v in ca.values())
    ax.set_ylim(max(0.0, lo - 0.05), None)
    ax.set_xticks(x, [str(i) for i in range(n)])
    ax.set_xlabel("client")
    ax.set_ylabel("normalised AUC on the client's own test set")
    ax.set_title(f"{report['config']['router']} router on {report['config']['logs']}: per client")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def write_plots(report: dict[str, Any], test: EvalMatrix, out: Path) -> list[Path]:
    curves = {k: (v["cost"], v["acc"]) for k, v in report["curves"].items()}
    obs = test.observed
    singles = {
        m: (
            float(np.nanmean(np.where(obs[:, j], test.cost_usd[:, j], 0.0))),
            float(np.nanmean(np.where(obs[:, j], test.scores[:, j], 0.0))),
        )
        for j, m in enumerate(test.models)
    }
    hc, ha = upper_hull(
        np.array([c for c, _ in singles.values()]), np.array([a for _, a in singles.values()])
    )
    paths = [
        frontier_plot(
            curves,
            singles,
            (hc.tolist(), ha.tolist()),
            out / "frontier.png",
            title=f"{report['config']['router']} router on {report['config']['logs']}, "
            f"{report['config']['clients']} clients, alpha {report['config']['alpha']}",
        ),
        _bars(report, out / "clients.png"),
    ]
    rounds = [r for r in report["rounds"] if r["auc"] is not None and r["stage"] == "train"]
    if len(rounds) > 1:
        paths.append(
            lines_plot(
                [r["round"] for r in rounds],
                {"federated (global test)": [r["auc"] for r in rounds]},
                out / "rounds.png",
                title="federated AUC per round",
                xlabel="round",
                ylabel="normalised AUC",
                hlines={
                    "centralized": report["auc"]["centralized"],
                    "best local": max(report["auc"]["local"]),
                },
            )
        )
    return paths


def write_summary(report: dict[str, Any], path: Path) -> Path:
    cfg, auc, ca, chk = report["config"], report["auc"], report["client_auc"], report["checks"]
    lines = [
        f"# Federated {cfg['router']} router on {cfg['logs']}",
        "",
        f"{cfg['clients']} clients, task Dirichlet alpha {cfg['alpha']}, logging-policy alpha "
        f"{cfg['model_alpha']}, one logged model per training query, "
        f"{cfg['rounds']} rounds at participation {cfg['participation']}, seed {cfg['seed']}, "
        f"robust aggregation `{cfg['robust']}`, attack `{cfg['attack']}`. "
        f"Global test set: {report['data']['queries_test']} queries with full labels.",
        "",
        "## Normalised frontier AUC on the global test set",
        "",
        "| router | AUC |",
        "| --- | --- |",
        f"| federated | {auc['federated']:.4f} |",
        f"| centralised | {auc['centralized']:.4f} |",
        f"| local (min / mean / max over clients) | {min(auc['local']):.4f} / "
        f"{float(np.mean(auc['local'])):.4f} / {max(auc['local']):.4f} |",
        "",
        f"- federated - centralised: {chk['federated_minus_centralized']:+.4f}",
        f"- federated above every local router: {chk['federated_above_every_local']}",
        f"- clients where federated beats their local router on their own test set: "
        f"{chk['clients_federated_beats_local']} of {cfg['clients']}",
        f"- clients where the personalised mixture is at least the worse of federated and local: "
        f"{chk['personalized_at_least_worse_of_two']} of {cfg['clients']}",
        "",
        "## Per client (own test set)",
        "",
        "| client | local | federated | personalised | centralised |",
        "| --- | --- | --- | --- | --- |",
    ]
    for i in range(len(ca["federated"])):
        lines.append(
            f"| {i} | {ca['local'][i]:.4f} | {ca['federated'][i]:.4f} | "
            f"{ca['personalized'][i]:.4f} | {ca['centralized'][i]:.4f} |"
        )
    if "expansion" in report:
        e = report["expansion"]
        lines += [
            "",
            f"## Model expansion: {e['model']}",
            "",
            f"AUC before adding it {e['before']:.4f}, after training only its head "
            f"{e['after']:.4f} ({e['after'] - e['before']:+.4f}).",
        ]
    if "new_clients" in report:
        n = report["new_clients"]
        lines += [
            "",
            f"## New clients {n['clients']} joining after {cfg['rounds']} rounds",
            "",
            f"Global test AUC {n['before']:.4f} before they join, {n['after']:.4f} after "
            f"{cfg['join_rounds']} more rounds. On their own test sets: "
            + ", ".join(
                f"{b:.4f} -> {a:.4f}"
                for b, a in zip(n["before_on_new_clients"], n["after_on_new_clients"], strict=True)
            )
            + ".",
        ]
    rejected = {
        k: v
        for stage in report.get("aggregation", {}).values()
        for r in stage
        for k, v in r.get("rejected", {}).items()
    }
    if rejected:
        lines += ["", "## Rejected updates", ""]
        lines += [f"- client {k}: {v}" for k, v in sorted(rejected.items())]
    lines += [
        "",
        f"Run time {report['seconds']:.0f} s. Plots: frontier.png, clients.png, rounds.png.",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def results_table(reports: dict[str, dict[str, Any]]) -> str:
    """One Markdown row per run (name -> report.json): the figures the issue asks for."""
    head = (
        "| run | federated | centralised | local min-max | fed-cen | fed > every local | "
        "clients fed > local | personalised >= worse | extra |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
    )
    rows = []
    for name, r in sorted(reports.items()):
        a, c, n = r["auc"], r["checks"], r["config"]["clients"]
        extra = []
        if "expansion" in r:
            e = r["expansion"]
            extra.append(f"expansion {e['before']:.4f} -> {e['after']:.4f}")
        if "new_clients" in r:
            j = r["new_clients"]
            own = ", ".join(
                f"{b:.3f}->{x:.3f}"
                for b, x in zip(j["before_on_new_clients"], j["after_on_new_clients"], strict=True)
            )
            extra.append(f"join {j['before']:.4f} -> {j['after']:.4f} (own tests {own})")
        if r["config"]["attack"] != "none":
            extra.append(f"attack {r['config']['attack']}, robust {r['config']['robust']}")
        rows.append(
            f"| {name} | {a['federated']:.4f} | {a['centralized']:.4f} | "
            f"{min(a['local']):.4f}-{max(a['local']):.4f} | "
            f"{c['federated_minus_centralized']:+.4f} | {c['federated_above_every_local']} | "
            f"{c['clients_federated_beats_local']}/{n} | "
            f"{c['personalized_at_least_worse_of_two']}/{n} | {'; '.join(extra)} |"
        )
    return head + "\n".join(rows) + "\n"
