"""``junction research pretrained-fedavg``: FedAvg from pre-trained vs random initialisation
(NOTES.md (j)).

Per seed: the signal-noise data, then FedAvg (IID and label-skewed clients) from the random init,
from the "pre-trained" init (centralised GD on a related source task) and from controlled inits
with a given fraction of aligned filters; the test error and the misaligned filters at
initialisation and after training. The digits check repeats the IID/non-IID comparison with a
small CNN, random vs pre-trained on the other digits. Seed 0's four headline runs are repeated on
Flower (``backend``) and must agree with the in-process ones.

Claims: heterogeneity hurts much less from the pre-trained init; pre-training leaves fewer
misaligned filters; the heterogeneity penalty tracks the misaligned filters (over the sweep).
"""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from training.research.jobs import ResearchJob
from training.research.pretrained_fedavg.config import PretrainedFedAvgConfig

JOB_NAME = "pretrained-fedavg"


def _quick(cfg: PretrainedFedAvgConfig) -> PretrainedFedAvgConfig:
    return replace(
        cfg, rounds=30, aligned_fractions="0,0.5,1", digits_rounds=10, test_size=1000,
        flower_runs=1,
    )  # fmt: skip


def run(
    cfg: PretrainedFedAvgConfig,
    out: Path,
    *,
    seeds: list[int],
    quick: bool,
    progress: bool = True,
    backend: Any = None,
) -> dict[str, Any]:
    from scipy.stats import spearmanr
    from tqdm import tqdm

    from training.research.federated import FedExperiment, InProcessBackend
    from training.research.pretrained_fedavg.digits import (
        digits_error,
        digits_experiment,
        digits_init,
    )
    from training.research.pretrained_fedavg.model import misaligned, test_error
    from training.research.pretrained_fedavg.train import (
        controlled_init,
        experiment_config,
        fedavg_experiment,
        pretrained_init,
        random_init,
        signal,
        test_data,
    )
    from training.research.report import Claim, mean_std, write_report

    t0 = time.time()
    fractions = cfg.fraction_list()
    init_names = ["random", "pretrained"] + [f"aligned={f:g}" for f in fractions]
    bar = tqdm(total=len(seeds) * (len(init_names) + 1), desc=JOB_NAME, disable=not progress)
    rows: dict[str, dict[str, list[float]]] = {n: {} for n in init_names}
    headline: list[FedExperiment] = []
    digits: dict[str, dict[str, list[float]]] = {"random": {}, "pretrained": {}}
    for seed in seeds:
        base = experiment_config(cfg, seed=seed, iid=True)
        mu, test = signal(base), test_data(base)
        inits = {"random": random_init(cfg, seed), "pretrained": pretrained_init(cfg, seed)[0]}
        for f in fractions:
            inits[f"aligned={f:g}"] = controlled_init(cfg, seed, f)
        for name, w0 in inits.items():
            exps = [
                fedavg_experiment(f"{name}-{part}", cfg, seed=seed, iid=part == "iid", init=w0)
                for part in ("iid", "noniid")
            ]
            if seed == seeds[0] and name in ("random", "pretrained"):
                headline += exps
            res = InProcessBackend().run(exps)
            r = rows[name]
            r.setdefault("misaligned_init", []).append(misaligned(w0, mu))
            for part, rr in zip(("iid", "noniid"), res, strict=True):
                r.setdefault(f"error_{part}", []).append(test_error(rr.final["w"], test))
                r.setdefault(f"misaligned_after_{part}", []).append(misaligned(rr.final["w"], mu))
            r.setdefault("penalty", []).append(r["error_noniid"][-1] - r["error_iid"][-1])
            bar.update(1)
        for kind in ("random", "pretrained"):
            w0d = digits_init(
                seed=seed, pretrained=kind == "pretrained", epochs=cfg.digits_pretrain_epochs
            )
            res = InProcessBackend().run(
                [digits_experiment(f"digits-{kind}-{p}", seed=seed, iid=p == "iid", init=w0d,
                                   rounds=cfg.digits_rounds) for p in ("iid", "noniid")]
            )  # fmt: skip
            d = digits[kind]
            for part, rr in zip(("iid", "noniid"), res, strict=True):
                d.setdefault(f"error_{part}", []).append(digits_error(rr.final, seed))
            d.setdefault("penalty", []).append(d["error_noniid"][-1] - d["error_iid"][-1])
        bar.update(1)
    bar.close()

    flower: dict[str, Any] = {"skipped": True}
    if cfg.flower and getattr(backend, "name", "in-process") != "in-process":
        headline = headline[: cfg.flower_runs]
        ref = InProcessBackend().run(headline)
        tf = time.time()
        got = backend.run(headline, progress=progress)
        flower = {
            "backend": getattr(backend, "name", "?"),
            "runs": [e.name for e in headline],
            "max_abs_weight_difference": max(
                float(np.abs(a.final["w"] - b.final["w"]).max())
                for a, b in zip(ref, got, strict=True)
            ),
            "seconds": time.time() - tf,
        }

    def m(name: str, key: str, src: dict[str, dict[str, list[float]]] = rows) -> float:
        return float(np.mean(src[name][key]))

    pen_r, pen_p = m("random", "penalty"), m("pretrained", "penalty")
    sweep_mis = [m(f"aligned={f:g}", "misaligned_init") for f in fractions]
    sweep_pen = [m(f"aligned={f:g}", "penalty") for f in fractions]
    rho = float(spearmanr(sweep_mis, sweep_pen).statistic) if len(fractions) > 2 else float("nan")
    dig_r, dig_p = m("random", "penalty", digits), m("pretrained", "penalty", digits)
    claims = [
        Claim(
            "heterogeneity_hurts_less_from_pretrained",
            "Data heterogeneity hurts test error much less from pre-trained initialisation.",
            holds=pen_r >= 0.01 and pen_p <= 0.5 * pen_r,
            figures={
                "penalty_random": mean_std(rows["random"]["penalty"]),
                "penalty_pretrained": mean_std(rows["pretrained"]["penalty"]),
                **{
                    f"error_{n}_{p}": m(n, f"error_{p}")
                    for n in ("random", "pretrained")
                    for p in ("iid", "noniid")
                },
            },
            rule="the non-IID minus IID test error (mean over seeds) is at least 0.01 from the "
            "random init and at most half of that from the pre-trained init",
            figures_plot=["errors.png"],
        ),
        Claim(
            "pretraining_fewer_misaligned",
            "Pre-training leaves fewer misaligned filters.",
            holds=m("pretrained", "misaligned_init") < m("random", "misaligned_init"),
            figures={
                "misaligned_init_random": rows["random"]["misaligned_init"],
                "misaligned_init_pretrained": rows["pretrained"]["misaligned_init"],
                "filters": 2 * cfg.filters,
                "misaligned_after_noniid_random": rows["random"]["misaligned_after_noniid"],
                "misaligned_after_noniid_pretrained": rows["pretrained"]["misaligned_after_noniid"],
            },
            rule="mean misaligned filters at initialisation: pre-trained < random",
        ),
        Claim(
            "penalty_tracks_misaligned",
            "The heterogeneity penalty tracks the number of misaligned filters.",
            holds=bool(np.isfinite(rho) and rho >= 0.8 and sweep_pen[0] > sweep_pen[-1]),
            figures={
                "aligned_fraction": fractions,
                "misaligned_init": sweep_mis,
                "penalty": sweep_pen,
                "spearman": rho,
            },
            rule="over the aligned-fraction sweep (means over seeds), Spearman correlation of "
            "misaligned filters and penalty >= 0.8, and the all-misaligned penalty above the "
            "all-aligned one",
            figures_plot=["sweep.png"],
        ),
        Claim(
            "digits_check",
            "On digits (3 vs 8, small CNN), label skew hurts less from a pre-trained init.",
            holds=dig_r > 0 and dig_p < dig_r,
            figures={
                "penalty_random": mean_std(digits["random"]["penalty"]),
                "penalty_pretrained": mean_std(digits["pretrained"]["penalty"]),
                **{
                    f"error_{n}_{p}": m(n, f"error_{p}", digits)
                    for n in digits
                    for p in ("iid", "noniid")
                },
            },
            rule="the non-IID minus IID test error is positive from the random init and smaller "
            "from the pre-trained one (means over seeds)",
        ),
    ]
    if not flower.get("skipped"):
        claims.append(
            Claim(
                "flower_matches_in_process",
                "FedAvg on Flower computes the same weights as the in-process runner.",
                holds=flower["max_abs_weight_difference"] <= 1e-9,
                figures=flower,
                rule="max |W_flower - W_in_process| <= 1e-9 over seed 0's headline runs on Flower",
            )
        )
    plots = _plot(out, rows, fractions, sweep_mis, sweep_pen)
    notes = [
        "Data and model as NOTES.md (j): x = [y mu, xi], xi ~ N(0, sigma_p^2) orthogonal to mu, "
        "f = F_+1 - F_-1 with ReLU filters, logistic loss, FedAvg with full-batch local GD.",
        "'Pre-trained' is real pre-training: centralised GD from the random init on a source task "
        f"whose signal has cosine {cfg.source_cosine} with mu; the controlled inits add "
        f"+-{cfg.align_scale} j mu/||mu|| to the random init to fix the aligned fraction.",
        "Digits: 3 vs 8 from sklearn's bundled digits, 10 clients, 90% label skew; the "
        "pre-trained conv layer comes from the other eight digits, the head is fresh.",
    ]
    results = {"synthetic": rows, "digits": digits, "flower": flower}
    return write_report(
        out, job=JOB_NAME, config=asdict(cfg), claims=claims, results=results,
        seconds=time.time() - t0, seeds=seeds, quick=quick, notes=notes, plots=plots,
    )  # fmt: skip


def _plot(
    out: Path, rows: dict[str, Any], fractions: list[float], mis: list[float], pen: list[float]
) -> list[str]:
    from training.research.report import plt_module, save_figure

    plt = plt_module()
    out.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5, 4))
    names = ["random", "pretrained"]
    x = np.arange(len(names))
    for i, part in enumerate(("iid", "noniid")):
        ax.bar(x + 0.4 * i, [np.mean(rows[n][f"error_{part}"]) for n in names], width=0.4,
               yerr=[np.std(rows[n][f"error_{part}"]) for n in names], label=part, capsize=3)  # fmt: skip
    ax.set_xticks(x + 0.2, names)
    ax.set_ylabel("test error")
    ax.legend()
    save_figure(fig, out / "errors.png")
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(mis, pen, "o-")
    for f, a, b in zip(fractions, mis, pen, strict=True):
        ax.annotate(f"aligned {f:g}", (a, b), fontsize=7)
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xlabel("misaligned filters at init")
    ax.set_ylabel("non-IID minus IID test error")
    save_figure(fig, out / "sweep.png")
    return ["errors.png", "sweep.png"]


JOB = ResearchJob(
    name=JOB_NAME,
    help="FedAvg from pre-trained vs random init: heterogeneity penalty and misaligned filters",
    config_cls=PretrainedFedAvgConfig,
    quick=_quick,
    run=run,
)
