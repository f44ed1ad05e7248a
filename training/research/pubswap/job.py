"""``junction research pubswap``: federated RLVR with LoRA and public-data swaps (NOTES.md (d)).

Per seed and method (local-only, FedAvg of local GRPO, PubSwap, swap-all), the federated rounds of
:mod:`.train` run on SmolLM2-135M-Instruct with LoRA in process (every Flower client would load
its own copy of the model, which on two cores costs more than the rounds); the global accuracy
(greedy exact match over all four task types) is measured on the final model(s), the drift after
every round of local training. On the Flower backend (the CLI's default) the first seed's PubSwap
run is repeated on Flower's Simulation Engine (``federation.research_app``: each ClientApp calls
the same ``local_rlvr``, the ServerApp the same ``aggregate_rlvr``) and the largest difference of
any final LoRA array is reported (``results.flower``).

Claims: PubSwap reaches the best global accuracy; PubSwap has the smallest client drift.
"""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from training.research.jobs import ResearchJob
from training.research.pubswap.config import PubSwapConfig

JOB_NAME = "pubswap"


def _quick(cfg: PubSwapConfig) -> PubSwapConfig:
    """3 rounds of 1 local step, the public step in round 2 on 4 public prompts, 6 test prompts
    per task type: about 4 minutes on the shared 2-core machine."""
    return replace(
        cfg, rounds=3, local_steps=1, public_every=2, public_per_task=1, test_per_task=6,
        per_client=8,
    )  # fmt: skip


def run(
    cfg: PubSwapConfig,
    out: Path,
    *,
    seeds: list[int],
    quick: bool,
    progress: bool = True,
    backend: Any = None,
) -> dict[str, Any]:
    from tqdm import tqdm

    from training.research.federated import InProcessBackend, flower_repeat
    from training.research.pubswap.train import (
        _policy,
        accuracy,
        experiment_config,
        rlvr_experiment,
    )
    from training.research.report import Claim, mean_std, write_report

    t0 = time.time()
    methods = cfg.method_list()
    bar = tqdm(total=len(seeds) * len(methods), desc=JOB_NAME, disable=not progress)
    acc: dict[str, dict[str, list[float]]] = {m: {} for m in methods}
    drift: dict[str, list[float]] = {m: [] for m in methods}
    drift_curves: dict[str, list[float]] = {}
    repeat_method = "pubswap" if "pubswap" in methods else methods[-1]
    repeat: list[tuple[Any, Any]] = []
    base: dict[str, list[float]] = {}
    for seed in seeds:
        from training.research.pubswap.train import _accuracy_of, _initial

        cfg0 = experiment_config(cfg, seed=seed, method="fedavg")
        for k, v in _accuracy_of(cfg0, _initial(cfg0)).items():
            base.setdefault(k, []).append(v)
        for m in methods:
            exp = rlvr_experiment(f"{m}-s{seed}", cfg, seed=seed, method=m)
            (res,) = InProcessBackend().run([exp])
            if seed == seeds[0] and m == repeat_method:
                repeat = [(exp, res)]
            for k, v in accuracy(exp.config, res.final).items():
                acc[m].setdefault(k, []).append(v)
            d = [float(h["metric.drift"][0]) for h in res.history]
            d = [x for x in d if np.isfinite(x)]
            drift[m].append(float(np.mean(d)))
            if seed == seeds[0]:
                drift_curves[m] = d
            bar.update(1)
        _policy.cache_clear()
    bar.close()
    flower = flower_repeat(backend, repeat, progress=progress)

    def g(m: str) -> float:
        return float(np.mean(acc[m]["global"]))

    others = [m for m in methods if m != "pubswap"]
    claims = []
    if "pubswap" in methods and others:  # a claim against no other method would hold vacuously
        claims = [
            Claim(
                "pubswap_best_global_accuracy",
                "PubSwap reaches the best global accuracy.",
                holds=all(g("pubswap") > g(m) for m in others),
                figures={f"global_{m}": mean_std(acc[m]["global"]) for m in methods}
                | {"base_model": mean_std(base["global"])},
                rule="mean global test accuracy over seeds: PubSwap > every other method",
                figures_plot=["accuracy.png"],
            ),
            Claim(
                "pubswap_smallest_drift",
                "PubSwap has the smallest client drift.",
                holds=all(np.mean(drift["pubswap"]) < np.mean(drift[m]) for m in others),
                figures={f"drift_{m}": mean_std(drift[m]) for m in methods},
                rule="mean over rounds and seeds of mean_k ||theta_k - mean theta|| after local "
                "training: PubSwap < every other method",
                figures_plot=["drift.png"],
            ),
        ]
    plots = _plot(out, acc, drift_curves, methods)
    notes = [
        f"Model: {cfg.model} with PEFT LoRA (rank {cfg.lora_rank}) on q_proj/v_proj of the last "
        f"{cfg.lora_layers} layers; GRPO step of our own (see training/research/pubswap/grpo.py "
        "for why not TRL's GRPOTrainer).",
        f"{cfg.clients} clients, client c holds task type c mod 4 only; {cfg.rounds} rounds of "
        f"{cfg.local_steps} local steps ({cfg.prompts_per_step} prompts x {cfg.group} "
        f"responses of <= {cfg.max_new_tokens} tokens); public step every {cfg.public_every} "
        f"rounds on {4 * cfg.public_per_task} public prompts.",
        f"Prompts: {cfg.prompt_style} style (oneshot: one solved example of the task type, then "
        "the question and the opening of the reply, e.g. '7 + 5 ='; see tasks.render). Reward: 1 "
        "when the first word of the reply's first line equals the answer exactly (rewards.py), "
        f"sampled at temperature 1 with no top-k; Adam lr {cfg.lr}.",
        "Federated rounds run in-process (the functions the Flower apps call); "
        + (
            "not repeated on Flower (in-process backend)."
            if flower.get("skipped")
            else f"seed {seeds[0]}'s {repeat_method} run repeated on Flower: largest difference "
            f"of any final LoRA array {flower['max_abs_difference']:.3g} "
            f"({flower['seconds']:.0f} s)."
        ),
    ]
    results = {
        "accuracy": acc, "drift": drift, "drift_curves_seed0": drift_curves, "base": base,
        "flower": flower,
    }  # fmt: skip
    return write_report(
        out, job=JOB_NAME, config=asdict(cfg), claims=claims, results=results,
        seconds=time.time() - t0, seeds=seeds, quick=quick, notes=notes, plots=plots,
    )  # fmt: skip


def _plot(
    out: Path,
    acc: dict[str, dict[str, list[float]]],
    drift_curves: dict[str, list[float]],
    methods: list[str],
) -> list[str]:
    from training.research.report import plt_module, save_figure

    plt = plt_module()
    out.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5, 4))
    x = np.arange(len(methods))
    ax.bar(x, [np.mean(acc[m]["global"]) for m in methods],
           yerr=[np.std(acc[m]["global"]) for m in methods], capsize=3)  # fmt: skip
    ax.set_xticks(x, methods)
    ax.set_ylabel("global test accuracy (exact match)")
    save_figure(fig, out / "accuracy.png")
    fig, ax = plt.subplots(figsize=(5, 4))
    for m in methods:
        ax.plot(drift_curves.get(m, []), marker="o", label=m)
    ax.set_xlabel("round with local training")
    ax.set_ylabel("client drift (seed 0)")
    ax.legend()
    save_figure(fig, out / "drift.png")
    return ["accuracy.png", "drift.png"]


JOB = ResearchJob(
    name=JOB_NAME,
    help="federated RLVR on SmolLM2 with LoRA: PubSwap vs FedAvg, local-only and swap-all",
    config_cls=PubSwapConfig,
    quick=_quick,
    run=run,
    quick_seeds=1,  # one quick seed is ~3.5 min in process plus ~1.5 min of Flower repeat
)
