"""summary.md and plots of ``junction eval generalization`` (every number from report.json)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from training.evaluation import plots

ORDER = (
    "locus_kr",
    "locus_kr_nomargin",
    "mean_kr",
    "blend_kr",
    "ens",
    "cal_kr",
    "dnh",
    "dnh_auc",
    "dnh_auc_all",
    "avg_lam",
    "locus",
    "mf",
    "knn",
    "ridge",
    "best_avg",
)
BASELINES = ("locus", "mf", "knn", "ridge", "best_avg")
REF = {
    "best_single": "true best single model (test)",
    "category_best": "per-category best model, chosen on ALL train evaluations (ceiling)",
    "oracle": "oracle (test)",
}
LABEL = {
    "locus_kr": "LOCUS-KR (served)",
    "locus_kr_nomargin": "LOCUS-KR, no default margin",
    "mean_kr": "mean prior + KR (no LOCUS)",
    "blend_kr": "LOCUS/MF blended prior + KR",
    "ens": "mean of LOCUS, MF, kNN-50, ridge-30",
    "cal_kr": "LOCUS-KR, prior calibrated per model",
    "dnh": "LOCUS-KR, do no harm (uncertainty; val lambda-0 accuracy)",
    "dnh_auc": "LOCUS-KR, do no harm (uncertainty; val frontier AUC)",
    "dnh_auc_all": "LOCUS-KR, do no harm (uncertainty; val frontier AUC, pool with seen models)",
    "avg_lam": "best-average pick per lambda (evidence mean - lambda cost)",
    "locus": "LOCUS alone",
    "mf": "MF",
    "knn": "per-model kNN",
    "ridge": "per-model ridge",
    "best_avg": "best-average pick",
}


def _f(x: Any, nd: int = 3) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


def _ks(routing: dict[str, Any], pool: str) -> list[int]:
    return sorted({int(k.split("/")[1]) for k in routing if k.split("/")[0] == pool})


def _k_table(ks: list[int], rows: dict[str, list[str]]) -> list[str]:
    """A ``| method | k=... |`` table: header, then a row per method (its cells, one a k)."""
    head = ["| method | " + " | ".join(f"k={k}" for k in ks) + " |", "|---|" + "---|" * len(ks)]
    return head + [f"| {LABEL[n]} | " + " | ".join(cells) + " |" for n, cells in rows.items()]


def write_plots(figs: dict[str, Any], out: Path) -> None:
    for ds, kinds in figs.get("kinds", {}).items():
        mk = kinds.get("models")
        if not mk:
            continue
        for pool in ("held", "all"):
            ks = _ks(mk["routing"], pool)
            if not ks:
                continue
            r = mk["routing"]
            plots.lines_plot(
                [float(k) for k in ks],
                {LABEL[n]: [r[f"{pool}/{k}"][n]["accuracy"]["mean"] for k in ks]
                 for n in ORDER if n in r[f"{pool}/{ks[0]}"]},
                out / f"{ds}_accuracy_vs_k_{pool}.png",
                title=f"{ds}, leave-models-out, pool '{pool}': routing accuracy (test)",
                xlabel="evaluations per new model (k)",
                ylabel="routing accuracy at lambda 0",
                logx=True,
                hlines={"best single (test)": sum(
                    r[f"{pool}/{k}"]["ref"]["best_single"]["mean"] for k in ks) / len(ks)},
            )  # fmt: skip
        c = mk["correctness"]
        ks = sorted(int(k) for k in c)
        if ks:
            plots.lines_plot(
                [float(k) for k in ks],
                {LABEL[n]: [c[str(k)][n]["log_loss"]["mean"] for k in ks]
                 for n in ("locus_kr", "locus", "mf", "knn", "ridge", "best_avg") if n in c[str(ks[0])]},
                out / f"{ds}_logloss_vs_k.png",
                title=f"{ds}: correctness log-loss of held-out models (test; lower is better)",
                xlabel="evaluations per new model (k)",
                ylabel="log-loss",
                logx=True,
            )  # fmt: skip
        pr = mk["pairs"]
        ks = sorted(int(k) for k in pr if "/" not in k)
        if ks:
            plots.lines_plot(
                [float(k) for k in ks],
                {LABEL[n]: [pr[str(k)][n]["mean"] for k in ks] for n in ORDER if n in pr[str(ks[0])]},
                out / f"{ds}_apgr_vs_k.png",
                title=f"{ds}: strong/weak pairs of held-out models, mean APGR",
                xlabel="evaluations per new model (k)",
                ylabel="APGR (random = 0.5)",
                logx=True,
                hlines={"random": 0.5},
            )  # fmt: skip
    for name, fr in list(figs.get("frontiers", {}).items()):
        if not fr["curves"] or fr["singles"] is None:
            continue
        ds, rest = name.split(" ", 1)
        fold, pool = rest.rsplit(" ", 1)  # task fold names hold spaces ("computer science")
        if not fold.startswith("models-0") and not fold.startswith("tasks-0"):
            continue
        singles = {f"m{i}": (c, a) for i, (c, a) in enumerate(zip(*fr["singles"], strict=True))}
        plots.frontier_plot(
            {LABEL[n]: tuple(v) for n, v in fr["curves"].items()
             if n in ("locus_kr", "locus", "knn", "best_avg", "mf")},
            singles,
            tuple(fr["hull"]),
            out / f"{ds}_{fold.split(':')[0]}_{pool}_frontier.png",
            title=f"{ds} {fold.split(':')[0]} pool '{pool}', k=128: accuracy-cost frontier",
        )  # fmt: skip


def render_summary(r: dict[str, Any]) -> str:
    cfg = r["config"]
    lines = [
        "# Generalisation benchmark: routing on unseen models and tasks",
        "",
        (
            "Commands: " + "; ".join(f"`{c}`" for c in r["commands"])
            if r.get("commands")
            else f"Command: `junction eval generalization --out {cfg['out']}`"
            + (" --quick" if cfg["quick"] else "")
        )
        + f". Served method: **{LABEL[r['method']]}** (`training/routers/locus_kr.py`): LOCUS's "
        "prior + a shrunk global offset + a shrunk kernel residual over the model's nearest "
        "evaluations, and a default (best-average) model left only for a predicted gain above a "
        "margin. Hyper-parameters of every method are chosen per fold on the other folds' "
        "held-out models, validation questions only.",
        "",
        f"LOCUS per fold: d_model {r['locus_fold_config']['d_model']}, "
        f"{r['locus_fold_config']['steps']} steps, encoder sets of "
        f"{r['locus_fold_config']['enc_set_min']}-{r['locus_fold_config']['enc_set_max']} "
        f"evaluations; MF {r['mf_fold_config']['steps']} steps. {cfg['draws']} seeded draws per k. "
        f"Run time {r['seconds'] / 60:.1f} min (2 shared CPU cores).",
        "",
    ]
    for ds, res in r["datasets"].items():
        lines += [f"## {ds}", ""]
        folds = res["folds"]
        lines.append(
            "Folds: " + "; ".join(f"{n}: {', '.join(f['held'])}" for n, f in folds.items()
                                  if f["kind"] == "models")
        )  # fmt: skip
        lines.append("")
        mk = res["kinds"].get("models")
        if mk:
            for pool in ("held", "all"):
                ks = _ks(mk["routing"], pool)
                if not ks:
                    continue
                what = "held-out models only" if pool == "held" else "held-out plus seen models"
                lines += [
                    f"### Leave-models-out routing accuracy at lambda 0, {what} (test, mean over folds x draws)",
                    "",
                ]
                rr = mk["routing"]
                lines += _k_table(ks, {
                    n: [f"{_f(rr[f'{pool}/{k}'][n]['accuracy']['mean'])} "
                        f"(±{_f(rr[f'{pool}/{k}'][n]['accuracy']['std'])})" for k in ks]
                    for n in ORDER if n in rr[f"{pool}/{ks[0]}"]
                })  # fmt: skip
                for ref in ("best_single", "category_best", "oracle"):
                    if ref not in rr[f"{pool}/{ks[0]}"]["ref"]:
                        continue
                    lines.append(
                        f"| {REF[ref]} | "
                        + " | ".join(_f(rr[f"{pool}/{k}"]["ref"][ref]["mean"]) for k in ks) + " |"
                    )  # fmt: skip
                r128 = rr.get(f"{pool}/128")
                if r128:
                    lines += [
                        "",
                        f"Frontier at k=128 (common cost range AUC; single-model hull "
                        f"{_f(r128['ref']['hull_auc']['mean'])}): "
                        + ", ".join(
                            f"{LABEL[n]} {_f(r128[n]['frontier_auc']['mean'])} "
                            f"(above hull {r128[n]['above_hull']['mean']:.0%})"
                            for n in ORDER if n in r128
                        ),
                    ]  # fmt: skip
                lines.append("")
            c = mk["correctness"]
            ks = sorted(int(k) for k in c)
            lines += [
                "### Correctness prediction of held-out models (test cells): accuracy / log-loss / AUROC",
                "",
            ]
            lines += _k_table(ks, {
                n: [f"{_f(c[str(k)][n]['accuracy']['mean'])} / {_f(c[str(k)][n]['log_loss']['mean'])}"
                    f" / {_f(c[str(k)][n]['auroc']['mean'])}" for k in ks]
                for n in ORDER if n in c[str(ks[0])]
            })  # fmt: skip
            pr = mk["pairs"]
            ks = sorted(int(k) for k in pr if "/" not in k)
            if ks:
                lines += [
                    "",
                    f"### Strong/weak pairs ({len(mk['pair_names'])} pairs >= 5 points apart): "
                    "APGR mean (± std over pairs x draws), CPT(50%)",
                    "",
                ]
                lines += _k_table(ks, {
                    n: [f"{_f(pr[str(k)][n]['mean'])} (±{_f(pr[str(k)][n]['std'])}), "
                        f"CPT {_f(pr[f'{k}/cpt50'][n]['mean'], 2)}" for k in ks]
                    for n in ORDER if n in pr[str(ks[0])]
                })  # fmt: skip
            lines.append("")
        tk = res["kinds"].get("tasks")
        if tk:
            lines += [
                "### Leave-tasks-out (k=128 evaluations from the other tasks; routing among all models)",
                "",
                "| method | accuracy | frontier AUC | above hull |",
                "|---|---|---|---|",
            ]
            rr = tk["routing"]
            key = next(iter(rr))
            for n in ORDER:
                if n in rr[key]:
                    lines.append(
                        f"| {LABEL[n]} | {_f(rr[key][n]['accuracy']['mean'])} | "
                        f"{_f(rr[key][n]['frontier_auc']['mean'])} | "
                        f"{rr[key][n]['above_hull']['mean']:.0%} |"
                    )
            lines.append(
                f"| true best single | {_f(rr[key]['ref']['best_single']['mean'])} | "
                f"hull {_f(rr[key]['ref']['hull_auc']['mean'])} | |"
            )
            lines.append(
                "Task folds: " + "; ".join(n for n, f in folds.items() if f["kind"] == "tasks")
            )
            lines.append("")
        chosen = {n: f["chosen"] for n, f in folds.items()}
        lines += [
            "Chosen hyper-parameters per fold (on the other folds' validation questions): "
            + "; ".join(
                f"{n.split(':')[0]}: KR {tuple(c['locus_kr'])} margin {c['locus_kr_margin']}, "
                f"kNN {c['knn']}, ridge {c['ridge']}"
                for n, c in chosen.items()
            ),
            "",
        ]
    lines += ["## Targets", "", "```", _targets_text(r.get("targets", {})), "```", ""]
    return "\n".join(lines)


def _targets_text(t: dict[str, Any]) -> str:
    import json

    return json.dumps(t, indent=1)
