"""``junction research ravan``: Ravan multi-head LoRA vs LoRA FedAvg and FFA-LoRA (NOTES.md (e)).

Digits: an MLP pre-trained on digits 0-4 is adapted federatedly to all ten digits by every method
at equal upload per layer (counted in the report), at each Dirichlet label-skew level. Each
method's learning rate is picked on the validation split in tuning runs (seed ``tune_seed``,
skew ``tune_alpha``); the claims are judged on the test split, means over the report's seeds.
Seed 0's runs at the strongest skew are repeated on ``backend`` (Flower from the CLI) and must
agree with the in-process runs.

Claims: Ravan beats LoRA FedAvg at every skew level; the gap grows with heterogeneity; Ravan
beats FFA-LoRA; Ravan's aggregation is exact (server ΔW = mean of client ΔW) while LoRA's is not.

SmolLM2 (``--llm``, opt-in; ``--no-digits`` skips digits): the same comparison federating
SmolLM2-135M-Instruct over clients that each hold mostly one yes/no text task
(:mod:`.llm`, :mod:`.llm_job`), with the same claims suffixed ``_smollm2``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from training.research.federated import flower_repeat
from training.research.jobs import ResearchJob
from training.research.ravan.claims import accuracy_bars, shared_claims
from training.research.ravan.config import RavanConfig

JOB_NAME = "ravan"


def _quick(cfg: RavanConfig) -> RavanConfig:
    return replace(
        cfg, clients=10, rounds=10, lrs="0.01,0.03", flower_runs=1,
        llm_rounds=3, llm_local_steps=4, llm_eval=16, llm_flower_runs=0,
    )  # fmt: skip


def _alpha_name(a: float | None) -> str:
    return "iid" if a is None else f"{a:g}"


def run(
    cfg: RavanConfig,
    out: Path,
    *,
    seeds: list[int],
    quick: bool,
    progress: bool = True,
    backend: Any = None,
) -> dict[str, Any]:
    from training.research.report import write_report

    t0 = time.time()
    if not (cfg.digits or cfg.llm):
        raise ValueError("nothing to run: both --no-digits and no --llm")
    claims: list[Any] = []
    results: dict[str, Any] = {}
    notes: list[str] = []
    plots: list[str] = []
    if cfg.digits:
        c, r, n, p = _run_digits(cfg, out, seeds=seeds, progress=progress, backend=backend)
        claims += c
        results.update(r)
        notes += n
        plots += p
    if cfg.llm:
        from training.research.ravan.llm_job import run_llm

        c, r, n, p = run_llm(cfg, out, seeds=seeds, quick=quick, progress=progress,
                             backend=backend)  # fmt: skip
        claims += c
        results["smollm2"] = r
        notes += n
        plots += p
    return write_report(
        out, job=JOB_NAME, config=asdict(cfg), claims=claims, results=results,
        seconds=time.time() - t0, seeds=seeds, quick=quick, notes=notes, plots=plots,
    )  # fmt: skip


def _run_digits(
    cfg: RavanConfig, out: Path, *, seeds: list[int], progress: bool, backend: Any
) -> tuple[list[Any], dict[str, Any], list[str], list[str]]:
    from tqdm import tqdm

    from training.research.federated import InProcessBackend
    from training.research.ravan.digits import (
        base_accuracy,
        digits_accuracy,
        digits_experiment,
        spec_of,
    )
    from training.research.ravan.exactness import aggregation_errors
    from training.research.report import Claim, mean_std

    methods, alphas = cfg.method_list(), cfg.alpha_list()
    tune_alpha = None if cfg.tune_alpha == "iid" else float(cfg.tune_alpha)
    lrs = cfg.lr_list()
    total = len(methods) * (len(lrs) + len(alphas) * len(seeds))
    bar = tqdm(total=total, desc=JOB_NAME, disable=not progress)
    local = InProcessBackend()

    tuning: dict[str, dict[str, float]] = {}
    best_lr: dict[str, float] = {}
    for m in methods:
        tuning[m] = {}
        for lr in lrs:
            exp = digits_experiment(
                f"tune-{m}-{lr:g}", cfg, seed=cfg.tune_seed, method=m, alpha=tune_alpha, lr=lr
            )
            (res,) = local.run([exp])
            tuning[m][f"{lr:g}"] = digits_accuracy(exp.config, res.final, split="val")
            bar.update(1)
        best_lr[m] = float(max(tuning[m], key=lambda k: tuning[m][k]))

    acc: dict[str, dict[str, list[float]]] = {m: {} for m in methods}
    curves: dict[str, dict[str, list[float]]] = {m: {} for m in methods}
    headline = []
    for seed in seeds:
        for a in alphas:
            for m in methods:
                exp = digits_experiment(
                    f"{m}-{_alpha_name(a)}-s{seed}", cfg, seed=seed, method=m, alpha=a,
                    lr=best_lr[m], keep_history=seed == seeds[0],
                )  # fmt: skip
                (res,) = local.run([exp])
                acc[m].setdefault(_alpha_name(a), []).append(
                    digits_accuracy(exp.config, res.final, split="test")
                )
                if seed == seeds[0]:
                    curves[m][_alpha_name(a)] = [
                        digits_accuracy(exp.config, h, split="test") for h in res.history
                    ]
                    if a == alphas[-1]:
                        exp.keep_history = False
                        headline.append((exp, res))
                bar.update(1)
    bar.close()

    flower = flower_repeat(backend, headline[: cfg.flower_runs], progress=progress)

    names = [_alpha_name(a) for a in alphas]

    def mean(m: str, a: str) -> float:
        return float(np.mean(acc[m][a]))

    gaps = {a: mean("ravan", a) - mean("lora", a) for a in names} if "lora" in methods else {}
    uploads = {
        m: {"per_layer": spec_of({"method": m, "lora_rank": cfg.lora_rank, "heads": cfg.heads})
            .upload_per_layer(),
            "ranks": spec_of({"method": m, "lora_rank": cfg.lora_rank, "heads": cfg.heads}).ranks}
        for m in methods
    }  # fmt: skip
    for m in methods:
        uploads[m]["total"] = int(sum(uploads[m]["per_layer"].values()))
    exact = aggregation_errors(seed=seeds[0], clients=4)
    claims = []
    if {"lora", "ravan"} <= set(methods):
        claims.append(
            Claim(
                "ravan_beats_lora",
                "Ravan beats LoRA FedAvg at equal (or lower) communication at every "
                "heterogeneity level (digits).",
                holds=all(g > 0 for g in gaps.values())
                and uploads["ravan"]["total"] <= uploads["lora"]["total"],
                figures={
                    "gap_ravan_minus_lora": gaps,
                    **{f"acc_{m}_{a}": mean_std(acc[m][a]) for m in methods for a in names},
                    "upload_per_round": {m: uploads[m]["total"] for m in methods},
                },
                rule="mean test accuracy over seeds: Ravan > LoRA at each skew level, and "
                "Ravan's upload per round <= LoRA's",
                figures_plot=["accuracy.png"],
            )
        )
    if {"ffa", "ravan"} <= set(methods):
        claims.append(
            Claim(
                "ravan_beats_ffa",
                "Ravan beats FFA-LoRA (the other parameter-efficient baseline) at every level.",
                holds=all(mean("ravan", a) > mean("ffa", a) for a in names),
                figures={a: mean("ravan", a) - mean("ffa", a) for a in names},
                rule="mean test accuracy: Ravan > FFA-LoRA at each skew level",
            )
        )
    claims += shared_claims(
        "",
        "",
        gaps=gaps if "lora" in methods else {},
        names=names,
        gap_statement="Ravan's advantage over LoRA FedAvg grows as heterogeneity grows.",
        exact=exact,
        exact_statement="Averaging s_i H_i reproduces the mean of the clients' updates exactly; "
        "LoRA's separate averaging of A and B does not.",
        exact_rule=" (clients after one round of local training)",
        flower=flower,
        flower_statement="The federated rounds on Flower give the in-process results.",
        plot="accuracy.png",
    )
    plots = _plot(out, acc, curves, names, methods)
    notes = [
        "Digits, sklearn's bundled 1,797 images: 30% pre-training (digits 0-4 only), 40% "
        f"federated training over {cfg.clients} clients, 15% validation, 15% test (stratified, "
        "seeded). Base model: MLP 64-128-128-10; adapters on all three Linear layers.",
        f"Upload per round and client: { ({m: uploads[m]['total'] for m in methods}) } parameters "
        f"(ranks { ({m: uploads[m]['ranks'] for m in methods}) }); Ravan's rank is the largest "
        "with h r^2 <= LoRA's upload, so it never sends more than LoRA.",
        f"Learning rates picked on validation (seed {cfg.tune_seed}, skew {cfg.tune_alpha}): "
        f"{best_lr}.",
        "The pre-trained base scores "
        f"{base_accuracy(seeds[0], cfg.pretrain_epochs, split='test'):.3f} on the ten-digit "
        "test split (it never saw digits 5-9).",
    ]
    results = {
        "accuracy": acc, "curves_seed0": curves, "tuning": tuning, "best_lr": best_lr,
        "uploads": uploads, "exactness": exact, "flower": flower,
    }  # fmt: skip
    return claims, results, notes, plots


def _plot(
    out: Path,
    acc: dict[str, dict[str, list[float]]],
    curves: dict[str, dict[str, list[float]]],
    names: list[str],
    methods: list[str],
) -> list[str]:
    from training.research.report import plt_module, save_figure

    plt = plt_module()
    out.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    accuracy_bars(axes[0], acc, names, methods, "alpha")
    axes[0].set_ylabel("test accuracy (10 digits)")
    axes[0].set_ylim(0.4, 1.0)
    axes[0].legend()
    for m in methods:
        axes[1].plot(curves[m][names[-1]], label=m)
    axes[1].set_xlabel("round")
    axes[1].set_ylabel(f"test accuracy, seed 0, alpha={names[-1]}")
    axes[1].legend()
    save_figure(fig, out / "accuracy.png")
    return ["accuracy.png"]


JOB = ResearchJob(
    name=JOB_NAME,
    help="Ravan multi-head LoRA vs LoRA FedAvg and FFA-LoRA at equal upload, digits and "
    "(--llm) SmolLM2 yes/no text tasks",
    config_cls=RavanConfig,
    quick=_quick,
    run=run,
)
