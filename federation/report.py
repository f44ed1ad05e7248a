"""The human side of ``junction federate simulate`` reports: Markdown summary, plots, and
``federation/RESULTS.md`` from the committed per-run reports.

Plots come from the numbers in ``report.json`` alone: ``frontier.png`` (accuracy-cost curves,
single models and their hull), ``clients.png`` (per-client AUC bars) and ``rounds.png``
(global-test AUC per round, MLP only). :func:`results_markdown` is what
``junction federate results`` writes: every figure in it is read from one ``report.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from training.evaluation.plots import frontier_plot, lines_plot


def _bars(report: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ca = report["client_auc"]
    names = ["local", "federated", "personalized", "centralized", "hull"]
    n = len(ca["federated"])
    x = np.arange(n)
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(max(7, n * 0.9), 4.5))
    for i, name in enumerate(names):
        ax.bar(x + (i - 2) * width, ca[name], width, label=name)
    lo = min(min(v) for v in ca.values())
    ax.set_ylim(max(0.0, lo - 0.05), None)
    ax.set_xticks(x, [str(i) for i in range(n)])
    ax.set_xlabel("client")
    ax.set_ylabel("AUC on the client's own test set (common cost range)")
    ax.set_title(f"{report['config']['router']} router on {report['config']['logs']}: per client")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def write_plots(report: dict[str, Any], out: Path) -> list[Path]:
    curves = {k: (v["cost"], v["acc"]) for k, v in report["curves"].items()}
    singles = {m: (v["cost"], v["acc"]) for m, v in report["single_models"].items()}
    hull = (report["hull"]["cost"], report["hull"]["acc"])
    cfg = report["config"]
    paths = [
        frontier_plot(
            curves,
            singles,
            hull,
            out / "frontier.png",
            title=f"{cfg['router']} router on {cfg['logs']}, "
            f"{cfg['clients']} clients, alpha {cfg['alpha']}",
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
                ylabel="AUC (common cost range)",
                hlines={
                    "centralized": report["auc"]["centralized"],
                    "best local": max(report["auc"]["local"]),
                    "single-model hull": report["auc"]["hull"],
                },
            )
        )
    return paths


def _variant(cfg: dict[str, Any]) -> str:
    """The MLP training method of a run in a few words (K-means: its two passes)."""
    if cfg["router"] != "mlp":
        return "two-pass"
    parts = [f"{cfg.get('head', 'per-model')} head", cfg.get("server_opt", "avg")]
    if cfg.get("server_opt", "avg") != "avg":
        parts[-1] += f" (lr {cfg['server_lr']}, beta {cfg['server_momentum']})"
    if cfg.get("prox_mu", 0.0):
        parts.append(f"prox {cfg['prox_mu']}")
    if cfg.get("client_opt", "adamw") != "adamw":
        parts.append(f"{cfg['client_opt'].upper()} clients")
    if cfg.get("lr", 1e-3) != 1e-3:
        parts.append(f"lr {cfg['lr']:g}")
    return ", ".join(parts)


def _central_label(report: dict[str, Any]) -> str:
    """How the report's centralised router was chosen, in a few words."""
    sel = report.get("central_selection")
    if sel:
        return f" (chosen on validation: lr {sel['lr']:g}, {sel['epochs']} epochs)"
    if report["config"]["router"] == "mlp":
        return " (matched compute)"
    return ""


def _chosen(report: dict[str, Any]) -> str:
    """What the federated router of one run chose on validation, for the main table."""
    if report["config"]["router"] == "kmeans":
        kp = (report.get("kmeans_prior") or {}).get("federated")
        if kp is None:
            return "prior 2 (fixed)"  # runs before the prior was recorded
        return f"prior {kp['prior']:g}" + ("" if kp["rule"] == "validation" else " (fixed)")
    sel = report.get("federated_selection", {})
    lr = report.get("federated_lr")
    at = f" lr {lr['lr']:g}" if lr else ""
    if sel.get("rule") == "validation":
        return f"r{sel['round']}{at}"
    return f"last{at}"


def stage_kept(report: dict[str, Any], stage: str) -> str:
    """Which round an MLP run's join or expansion stage kept (``stage_selection``; runs before
    it kept the last round); nothing for K-means, which has no rounds."""
    st = (report.get("stage_selection") or {}).get(stage)
    if st and st["rule"] == "validation":
        return f" (the stage kept round {st['round']} of {st['of_rounds']}, on validation)"
    return " (the stage kept its last round)" if report["config"]["router"] == "mlp" else ""


def _kept_round(report: dict[str, Any]) -> str:
    sel = report.get("federated_selection")
    if sel is None:
        return ""
    lr = report.get("federated_lr")
    at = f"lr {lr['lr']:g} of {', '.join(f'{x:g}' for x in lr['candidates'])}, " if lr else ""
    cfg = report["config"]
    then = "".join(
        f", then {name}{stage_kept(report, stage)}"
        for name, stage, on in (
            ("the rounds after new clients joined", "join", cfg.get("new_clients")),
            ("the expansion rounds", "expand", cfg.get("expand_model")),
        )
        if on
    )
    if sel["rule"] == "validation":
        return (
            f" ({at}training round {sel['round']} of {sel['of_rounds']}, chosen on validation"
            f"{then})"
        )
    return f" ({at}last round of {sel['of_rounds']}{then})"


def last_round_auc(report: dict[str, Any]) -> float | None:
    """The test AUC of the federated router after its last training round: the federated
    figure itself unless the run kept a round chosen on validation (then the ServerApp's
    per-round figure of the last round)."""
    if report.get("federated_selection", {}).get("rule") != "validation":
        return float(report["auc"]["federated"])
    train = [r for r in report.get("rounds", []) if r["stage"] == "train"]
    return float(train[-1]["auc"]) if train and train[-1]["auc"] is not None else None


def _prior_lines(report: dict[str, Any]) -> list[str]:
    """What the baselines chose on validation: the local MLPs' lr and epochs, the K-means
    routers' shrinkage priors (chosen on validation or fixed by the run)."""
    loc = report.get("local_selection")
    if loc:
        return [
            "- client-local MLPs, lr and epochs chosen on validation (up to the matched epochs): "
            + ", ".join(f"{c['lr']:g}/{c['epochs']}" for c in loc if c)
        ]
    kp = report.get("kmeans_prior")
    if not kp:
        return []

    def say(c: dict[str, Any] | None) -> str:
        if c is None:
            return "n/a"
        return f"{c['prior']:g}" + (" (validation)" if c["rule"] == "validation" else " (fixed)")

    local = ", ".join(f"{c['prior']:g}" for c in kp["local"] if c)
    return [
        f"- K-means shrinkage prior: federated {say(kp['federated'])}, centralised "
        f"{say(kp['centralized'])}, client-local {local} (each chosen on the same validation "
        "set where the run says validation)"
    ]


def method_val_auc(report: dict[str, Any]) -> float:
    """The federated router's validation AUC at the run's own ``lr``, in the round the run
    keeps: what the MLP methods are compared on. Every method is compared at its own lr (the
    chosen method's extra lr candidates are left out, so it gets no more tries than the
    others); a run kept its last round (runs before ``select-round validation``) or the round
    with the best validation AUC, as its report says."""
    lr = report.get("federated_lr")
    own = (lr or {}).get("val_auc", {}).get(f"{report['config']['lr']:g}")
    if own is not None:
        return float(own)
    sel = report.get("federated_selection", {})
    if sel.get("rule") == "validation":
        return float(sel["val_auc"])
    return float(report["val_auc"]["federated"])


def best_local_by_validation(report: dict[str, Any]) -> float:
    """The test AUC of the client-local router with the highest validation AUC (the best local
    router chosen without looking at test)."""
    return float(report["auc"]["local"][int(np.argmax(report["val_auc"]["local"]))])


def write_summary(report: dict[str, Any], path: Path) -> Path:
    cfg, auc, ca, chk = report["config"], report["auc"], report["client_auc"], report["checks"]
    va = report["val_auc"]
    lo, hi = report["cost_range"]
    lines = [
        f"# Federated {cfg['router']} router on {cfg['logs']}",
        "",
        f"{cfg['clients']} clients, task Dirichlet alpha {cfg['alpha']}, logging-policy alpha "
        f"{cfg['model_alpha']}, one logged model per training query, "
        f"{cfg['rounds']} rounds at participation {cfg['participation']}, seed {cfg['seed']}, "
        f"held-out models {cfg['held_out']}d, method: {_variant(cfg)}, robust aggregation "
        f"`{cfg['robust']}`, attack `{cfg['attack']}`. Global test set: "
        f"{report['data']['queries_test']} queries with full labels; validation "
        f"{report['data']['queries_validation']}; {len(report['data']['models'])} models.",
        "",
        f"AUC: {report['auc_definition']}; cost range {lo:.3g} to {hi:.3g} USD per query.",
        "",
        "| router | test AUC | validation AUC |",
        "| --- | --- | --- |",
        f"| federated{_kept_round(report)} | {auc['federated']:.4f} | {va['federated']:.4f} |",
        f"| centralised{_central_label(report)} | {auc['centralized']:.4f} | "
        f"{va['centralized']:.4f} |",
        *(
            [
                f"| centralised, matched compute (earlier baseline) | "
                f"{auc['centralized_matched']:.4f} | {va['centralized_matched']:.4f} |"
            ]
            if "centralized_matched" in auc
            else []
        ),
        *(
            [
                f"| federated, round {bv['round']} of {bv['of_rounds']} (chosen on validation) "
                f"| {bv['test_auc']:.4f} | {bv['val_auc']:.4f} |"
            ]
            if (bv := report.get("federated_round_by_validation"))
            and report.get("federated_selection", {}).get("rule") != "validation"
            else []
        ),
        f"| best local | {max(auc['local']):.4f} | {max(va['local']):.4f} |",
        f"| mean local | {float(np.mean(auc['local'])):.4f} | {float(np.mean(va['local'])):.4f} |",
        f"| single-model hull | {auc['hull']:.4f} | {va['hull']:.4f} |",
        "",
        f"- federated - centralised: {chk['federated_minus_centralized']:+.4f}",
        f"- federated - best local: {chk['federated_minus_best_local']:+.4f}",
        f"- clients where federated beats their local router on their own test set: "
        f"{chk['clients_federated_beats_local']} of {cfg['clients']}",
        f"- clients where the personalised mixture is at least the worse of federated and local: "
        f"{chk['personalized_at_least_worse_of_two']} of {cfg['clients']}"
        + (
            " (shortfall: "
            + ", ".join(f"client {k} by {v:.4f}" for k, v in chk["personalized_shortfall"].items())
            + ")"
            if chk["personalized_shortfall"]
            else ""
        ),
        *_prior_lines(report),
        "",
        "## Per client (own test set)",
        "",
        "| client | logged models | local | federated | personalised | centralised | hull |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for i, c in enumerate(report["data"]["clients"]):
        lines.append(
            f"| {i} | {c['logged_models']} | {ca['local'][i]:.4f} | {ca['federated'][i]:.4f} | "
            f"{ca['personalized'][i]:.4f} | {ca['centralized'][i]:.4f} | {ca['hull'][i]:.4f} |"
        )
    if "expansion" in report:
        e = report["expansion"]
        lines += [
            "",
            f"## Model expansion: {e['model']}",
            "",
            f"AUC before adding it {e['before']:.4f}, after training only its head "
            f"{e['after']:.4f} ({e['after'] - e['before']:+.4f}). Fixed calibration set per "
            f"client (drawn once, {e['calibration_frac']:.0%} of its training queries): "
            f"{e['calibration_rows']} rows.",
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
            + f". Their fixed calibration sets: {n['personalisation_calibration_queries']} queries.",
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
    lines += ["", "Plots: frontier.png, clients.png, rounds.png."]
    path.write_text("\n".join(lines) + "\n")
    return path


def results_table(reports: dict[str, dict[str, Any]]) -> str:
    """One Markdown row per run (name -> report.json): the figures the issue asks for."""
    head = (
        "| run | method | federated | centralised | best local | hull | fed-cen | fed-best local "
        "| clients fed > local | personalised >= worse | val fed / cen / best local | extra |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
    )
    rows = []
    for name, r in sorted(reports.items()):
        a, c, n, va = r["auc"], r["checks"], r["config"]["clients"], r["val_auc"]
        extra = []
        if "expansion" in r:
            e = r["expansion"]
            extra.append(
                f"expansion {e['model']} {e['before']:.4f} -> {e['after']:.4f}, calibration "
                f"rows {sum(e['calibration_rows'])} ({e['calibration_frac']:.0%})"
            )
        if "new_clients" in r:
            j = r["new_clients"]
            own = ", ".join(
                f"{b:.3f}->{x:.3f}"
                for b, x in zip(j["before_on_new_clients"], j["after_on_new_clients"], strict=True)
            )
            extra.append(f"join {j['before']:.4f} -> {j['after']:.4f} (own tests {own})")
        if r["config"]["attack"] != "none":
            extra.append(f"attack {r['config']['attack']}, robust {r['config']['robust']}")
        short = c["personalized_shortfall"]
        pers = f"{c['personalized_at_least_worse_of_two']}/{n}" + (
            " (" + ", ".join(f"c{k} -{v:.3f}" for k, v in short.items()) + ")" if short else ""
        )
        cen = f"{a['centralized']:.4f}"
        if r["config"]["router"] == "mlp":
            cen += " (val-chosen)" if "central_selection" in r else " (matched)"
        rows.append(
            f"| {name} | {_variant(r['config'])} | {a['federated']:.4f} | {cen} "
            f"| {max(a['local']):.4f} | {a['hull']:.4f} | {c['federated_minus_centralized']:+.4f} "
            f"| {c['federated_minus_best_local']:+.4f} | {c['clients_federated_beats_local']}/{n} "
            f"| {pers} | {va['federated']:.4f} / {va['centralized']:.4f} / "
            f"{max(va['local']):.4f} | {'; '.join(extra)} |"
        )
    return head + "\n".join(rows) + "\n"


def _mean(xs: list[float]) -> float:
    return float(np.mean(xs)) if xs else float("nan")


def _sd(xs: list[float]) -> float:
    """Sample standard deviation (n - 1) over seeds; 0 for one seed."""
    return float(np.std(xs, ddof=1)) if len(xs) > 1 else 0.0


def _group(reports: dict[str, dict[str, Any]], prefix: str) -> list[dict[str, Any]]:
    """Reports of one (log, router, method) over its seeds: names ``<prefix>_s<seed>``."""
    return [r for n, r in sorted(reports.items()) if n.rsplit("_s", 1)[0] == prefix]


def results_markdown(
    reports: dict[str, dict[str, Any]],
    *,
    logs: dict[str, str],
    methods: list[str],
    chosen: str,
    reruns: dict[str, bool],
    plots: list[str],
    notes: str = "",
) -> str:
    """``federation/RESULTS.md`` from the committed per-run reports (name -> report.json).

    ``logs``: short name -> description; ``methods``: the MLP methods compared on validation;
    ``chosen``: the one the main rows use; ``reruns``: run name -> whether a second run of its
    command gave a byte-identical report; ``plots``: plot files written beside RESULTS.md;
    ``notes``: hand-written reading of the figures (``federation/results/NOTES.md``), appended.
    """
    any_r = next(iter(reports.values()))
    lines = [
        "# Federated routers: measured figures",
        "",
        "<!-- Generated by `junction federate results federation/results/runs --out "
        "federation/RESULTS.md` from the committed reports; do not edit by hand. -->",
        "",
        "Regenerate this file (no training, seconds) from the committed per-run reports in "
        "`federation/results/runs/<run>/report.json`:",
        "",
        "    junction federate results federation/results/runs --out federation/RESULTS.md",
        "",
        "Re-run any run of the grid (`federation/grid.py` names them all; a run rewrites its "
        "report, byte-identical for the same command) with, e.g.:",
        "",
        "    junction federate grid --out federation/results/runs --only 'rb_kmeans_s0' --force",
        "",
        "Protocol (NOTES.md (b)): Flower 1.42 Simulation Engine (Ray); 10 clients, task Dirichlet "
        "alpha 0.6, logging policy Dirichlet(model-alpha) with one logged model per training "
        "query, 75/25 client splits, the global test set the union of client test splits with "
        "full labels, the log's own validation split set aside (methods are chosen on it, never "
        "on test), participation 0.6, one local epoch per round, 30 rounds, robust aggregation "
        "`clip`. Centralised and local routers use the same architecture as the federated one "
        "(trained with AdamW; the federated clients use the optimiser their run's method names). "
        "Choices on the validation split (the server's own data, never a client's): the "
        "centralised MLP's lr and epochs (early stopping); in the main runs the federated "
        "MLP's client lr (of the same candidates, one federated training each) and its kept "
        "round (`select-round`); every K-means router's shrinkage prior (federated, "
        "centralised and each client-local one alike). Local MLPs train rounds x participation "
        "epochs; a local router routes only among the models its client logged. Held-out "
        "onboarding models stay out unless a run says `held-out include`. Every random choice (partition, client sampling, client dropout, local "
        "shuffles, dropout masks, initialisation) derives from the run seed.",
        "",
        f"**AUC** (every figure below): {any_r['auc_definition']}. The same range serves the "
        "federated, centralised, each local and the personalised router, the client test sets, "
        "the validation set, and the single-model hull (its vertices scored by the same "
        "function), so figures compare like for like. (The previous RESULTS.md normalised each "
        "router over its own cost range; its figures are not comparable with these.)",
        "",
        "Logs:",
        "",
    ]
    lines += [f"- `{k}`: {v}" for k, v in logs.items()]
    # ---- method selection on validation
    lines += [
        "",
        "## MLP method, chosen on validation (seed 0)",
        "",
        "| log | " + " | ".join(f"{m}: fed (kept round) / cen (val)" for m in methods) + " |",
        "| --- | " + " | ".join("---" for _ in methods) + " |",
    ]
    for lg in logs:
        cells = []
        for m in methods:
            r = reports.get(f"{lg}_mlp_{m}_s0")
            if r is None:
                cells.append("not run")
                continue
            cells.append(f"{method_val_auc(r):.4f} / {r['val_auc']['centralized']:.4f}")
        lines.append(f"| {lg} | " + " | ".join(cells) + " |")
    shared_logs = [lg for lg in logs if all(f"{lg}_mlp_{m}_s0" in reports for m in methods)]

    def val_mean(m: str) -> float:
        return _mean([method_val_auc(reports[f"{lg}_mlp_{m}_s0"]) for lg in shared_logs])

    best = max(methods, key=val_mean) if shared_logs else "none (runs missing)"
    lines += [
        "",
        f"Best mean validation AUC of the federated router over the logs where every method ran "
        f"({', '.join(shared_logs) or 'none'}): **{best}**"
        + (" (" + ", ".join(f"{m} {val_mean(m):.4f}" for m in methods) + ")" if shared_logs else "")
        + f". Kept: **{chosen}** (the "
        "main rows below use it; the others are reported here and in the table of every run). "
        "Test figures of the seed-0 runs of every method are in that table too; none of them "
        "was used to choose.",
        "",
        "## Main runs: mean ± standard deviation over seeds 0-2 (test AUC, per-seed figures "
        "in brackets)",
        "",
        "Centralised: for the MLP, the same head as the federated router, lr and epochs chosen "
        "on validation AUC with early stopping (`central_selection` in each report); the "
        "earlier matched-compute centralised MLP (the run's lr, rounds x participation epochs) "
        "is the next column, kept for comparison and not used by the checks. K-means: K = 30; "
        "its shrinkage prior, like the federated and client-local routers', chosen on validation "
        "where the run's `kmeans_prior` says so (runs before that used the fixed prior 2). "
        "*Federated*: the router the run saves and the checks use: the training "
        "round with the best AUC on the server's validation set (`select-round validation`, the "
        "default since the centralised baseline's early stopping uses the same rule and set) "
        "where the run's report says so (`federated_selection`), else the last round. *Fed, last "
        "round*: the test AUC after the last training round, for comparison. *Chosen on "
        "validation*: per seed, the kept round (rN) and, where the run chose it, the client lr "
        "(`lrs`: one federated training per lr; AdamW clients try the centralised MLP's "
        "candidates, SGD clients their own, `federation/grid.py`); "
        "K-means: the shrinkage prior. *Best local*: the highest client-local test AUC (the "
        "target's figure); *val-chosen*: the test AUC of the local router with the best "
        "validation AUC.",
        "",
        "| log, router | federated | chosen on validation (per seed) | fed, last round | "
        "centralised "
        "| centralised, matched (earlier) | best local | best local, val-chosen | hull | "
        "fed - cen | fed within 0.01 of cen | fed > best local | personalised >= worse of fed, "
        "local |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    verdicts: list[str] = []
    for lg in logs:
        for router, prefix in (("mlp", f"{lg}_mlp_{chosen}"), ("kmeans", f"{lg}_kmeans")):
            g = _group(reports, prefix)
            if not g:
                lines.append(f"| {lg} {router} | not run |" + " |" * 12)
                continue
            fed = [r["auc"]["federated"] for r in g]
            cen = [r["auc"]["centralized"] for r in g]
            loc = [max(r["auc"]["local"]) for r in g]
            loc_val = [best_local_by_validation(r) for r in g]
            hull = [r["auc"]["hull"] for r in g]
            fed_last = [x for r in g if (x := last_round_auc(r)) is not None]
            kept = ", ".join(_chosen(r) for r in g)
            matched = [
                r["auc"]["centralized_matched"] for r in g if "centralized_matched" in r["auc"]
            ]
            within = sum(r["checks"]["federated_within_001_of_centralized"] for r in g)
            no_worse = sum(f >= c - 0.01 for f, c in zip(fed, cen, strict=True))
            above = sum(r["checks"]["federated_above_every_local"] for r in g)
            pers = sum(r["checks"]["personalized_at_least_worse_of_two"] for r in g)
            ncl = sum(len(r["client_auc"]["local"]) for r in g)
            short = [
                f"s{r['config']['seed']} client {k} by {v:.4f}"
                for r in g
                for k, v in r["checks"]["personalized_shortfall"].items()
            ]
            selected = sum("central_selection" in r for r in g)

            def cell(xs: list[float], n: int = len(g)) -> str:
                if len(xs) < n:
                    return "n/a" if not xs else f"{len(xs)}/{n} seeds only"
                return (
                    f"{_mean(xs):.4f} ± {_sd(xs):.4f} (" + ", ".join(f"{x:.3f}" for x in xs) + ")"
                )

            diff = [f - c for f, c in zip(fed, cen, strict=True)]
            lines.append(
                f"| {lg} {router} | {cell(fed)} | {kept} | "
                f"{cell(fed_last) if router == 'mlp' else 'n/a'} | {cell(cen)} | "
                f"{cell(matched)} | {cell(loc)} | {cell(loc_val)} | {_mean(hull):.4f} | "
                f"{_mean(diff):+.4f} ± {_sd(diff):.4f} | {within}/{len(g)} seeds | "
                f"{above}/{len(g)} seeds | {pers}/{ncl} clients |"
            )
            ok_cen = within == len(g)
            ok_loc = above == len(g)
            how = ""
            if router == "mlp":
                how = (
                    " (chosen on validation)"
                    if selected == len(g)
                    else f" (chosen on validation on {selected}/{len(g)} seeds, else matched)"
                )
            boot = [
                (r["config"]["seed"], r["bootstrap"][k])
                for r in g
                for k in ("federated_minus_best_local",)
                if "bootstrap" in r
            ]
            resolved = (
                "; fed - best local, paired bootstrap 95% interval per seed: "
                + ", ".join(
                    f"s{sd} {b['gap']:+.4f} [{b['lo']:+.4f}, {b['hi']:+.4f}]" for sd, b in boot
                )
                if boot
                else ""
            )
            verdicts.append(
                f"- {lg} {router}: within 0.01 of centralised{how} on {within}/{len(g)} seeds "
                f"(**{'met' if ok_cen else 'NOT met'}**"
                + (
                    f"; not more than 0.01 below it on {no_worse}/{len(g)}"
                    if no_worse != within
                    else ""
                )
                + "), above the best local router on "
                f"{above}/{len(g)} seeds (**{'met' if ok_loc else 'NOT met'}**); personalised "
                f"at least the worse of federated and local on {pers}/{ncl} clients"
                + (f" (shortfall: {'; '.join(short)})" if short else " (met)")
                + resolved
                + "."
            )
    lines += ["", "Against the targets (3 seeds each; every seed must pass):", "", *verdicts]
    # ---- reproducibility
    lines += ["", "## Same command, same report", ""]
    if reruns:
        lines += [
            f"- `{n}`: a second run of the same command gave a "
            f"{'byte-identical' if same else '**different**'} report.json"
            for n, same in sorted(reruns.items())
        ]
        lines.append(
            "- The test `tests/federation/test_simulation.py::test_same_command_same_report` "
            "compares two runs of a tiny simulation (both router kinds) byte for byte."
        )
    else:
        lines.append("No rerun was recorded.")
    # ---- expansion and new clients
    extra = {n: r for n, r in reports.items() if "expansion" in r or "new_clients" in r}

    if extra:
        lines += ["", "## Model expansion and new clients", ""]
        for n, r in sorted(extra.items()):
            if "expansion" in r:
                e = r["expansion"]
                lines.append(
                    f"- `{n}`: onboarding `{e['model']}` (held out of the first training): test "
                    f"AUC {e['before']:.4f} before, {e['after']:.4f} after "
                    f"({e['after'] - e['before']:+.4f}){stage_kept(r, 'expand')}; each client's "
                    "calibration set is "
                    f"drawn once ({e['calibration_frac']:.0%} of its training queries, rows per "
                    f"client {e['calibration_rows']}, {sum(e['calibration_rows'])} in all) and "
                    "reused every round."
                )
            if "new_clients" in r:
                j = r["new_clients"]
                own = ", ".join(
                    f"{b:.4f} -> {x:.4f}"
                    for b, x in zip(
                        j["before_on_new_clients"], j["after_on_new_clients"], strict=True
                    )
                )
                lines.append(
                    f"- `{n}`: clients {j['clients']} join after {r['config']['rounds']} rounds "
                    f"for {r['config']['join_rounds']} more: global test AUC {j['before']:.4f} "
                    f"-> {j['after']:.4f}{stage_kept(r, 'join')}; on their own test sets {own}; "
                    "their fixed "
                    f"personalisation calibration sets {j['personalisation_calibration_queries']} "
                    "queries."
                )
    if notes:
        lines += ["", notes.strip()]
    lines += ["", "## Every run", "", results_table(reports)]
    if plots:
        lines += ["Plots (drawn from the reports by the same command): "]
        lines += [", ".join(f"`results/{p}`" for p in plots) + "."]
    return "\n".join(lines) + "\n"
