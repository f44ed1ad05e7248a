"""The SmolLM2 part of ``junction research ravan --llm`` (the setting is in :mod:`.llm`).

For each seed, task-skew level and method, one federated run (in-process, the runner of
:mod:`training.research.federated`); the global model is scored on held-out questions of every
task. Seed 0's runs at the strongest skew can be repeated on ``backend`` (Flower from the CLI,
``llm_flower_runs``). The learning rate is one fixed value for every method (``llm_lr``, set up
front, not tuned). Claims: Ravan beats LoRA FedAvg and FFA-LoRA at every level (mean over seeds),
the gap over LoRA grows with skew, and Ravan's aggregation is exact on the real SmolLM2 layers.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from training.research.federated import flower_repeat
from training.research.ravan.claims import accuracy_bars, shared_claims
from training.research.ravan.config import RavanConfig


def run_llm(
    cfg: RavanConfig, out: Path, *, seeds: list[int], quick: bool, progress: bool, backend: Any
) -> tuple[list[Any], dict[str, Any], list[str], list[str]]:
    from tqdm import tqdm

    from training.research.federated import InProcessBackend
    from training.research.ravan.layers import param_count
    from training.research.ravan.llm import (
        _skew_name,
        aggregation_errors_llm,
        llm_accuracy,
        llm_config,
        llm_experiment,
        spec_of,
    )
    from training.research.report import Claim, mean_std

    t0 = time.time()
    methods, skews = cfg.method_list(), cfg.llm_skew_list()
    names = [_skew_name(s) for s in skews]
    if quick:
        seeds = seeds[:1]
    local = InProcessBackend()
    bar = tqdm(total=len(seeds) * len(skews) * len(methods), desc="ravan smollm2",
               disable=not progress)  # fmt: skip

    base = {s: llm_accuracy(llm_config(cfg, seed=s, method="ravan", skew=None), None)
            for s in seeds}  # fmt: skip
    acc: dict[str, dict[str, list[float]]] = {m: {a: [] for a in names} for m in methods}
    per_task: dict[str, dict[str, list[dict[str, float]]]] = {
        m: {a: [] for a in names} for m in methods
    }
    curves: dict[str, list[float]] = {}
    upload: dict[str, int] = {}
    headline = []
    seconds: dict[str, float] = {}
    for seed in seeds:
        for skew, name in zip(skews, names, strict=True):
            for m in methods:
                conf = llm_config(cfg, seed=seed, method=m, skew=skew)
                track = seed == seeds[0] and name == names[-1]
                exp = llm_experiment(f"{m}-{name}-s{seed}", conf, rounds=cfg.llm_rounds,
                                     keep_history=track)  # fmt: skip
                upload[m] = param_count(exp.init)
                tr = time.time()
                (res,) = local.run([exp])
                seconds[exp.name] = time.time() - tr
                a = llm_accuracy(conf, res.final)
                acc[m][name].append(a["mean"])
                per_task[m][name].append(a)
                if track:
                    curves[m] = [base[seed]["mean"]] + [
                        llm_accuracy(conf, h)["mean"] for h in res.history[:-1]
                    ] + [a["mean"]]  # fmt: skip
                    exp.keep_history = False
                    headline.append((exp, res))
                bar.update(1)
    bar.close()

    headline.sort(key=lambda er: er[0].config["method"] != "ravan")  # Ravan's run first
    flower = flower_repeat(backend, headline[: cfg.llm_flower_runs], progress=progress)

    exact_cfg = {m: dict(llm_config(cfg, seed=seeds[0], method=m, skew=skews[-1]),
                         local_steps=2) for m in methods}  # fmt: skip
    exact = {m: aggregation_errors_llm(exact_cfg[m], [0, 1]) for m in methods}
    ranks = {m: spec_of(llm_config(cfg, seed=seeds[0], method=m, skew=None)).ranks
             for m in methods}  # fmt: skip

    def mean(m: str, a: str) -> float:
        return float(np.mean(acc[m][a]))

    def wins(m: str, other: str, a: str) -> str:
        w = sum(x > y for x, y in zip(acc[m][a], acc[other][a], strict=True))
        return f"{w}/{len(acc[m][a])}"

    claims: list[Any] = []
    figs_acc = {f"acc_{m}_{a}": mean_std(acc[m][a]) for m in methods for a in names}
    if {"lora", "ravan"} <= set(methods):
        gaps = {a: mean("ravan", a) - mean("lora", a) for a in names}
        claims.append(
            Claim(
                "ravan_beats_lora_smollm2",
                "SmolLM2 text tasks: Ravan beats LoRA FedAvg at equal (or lower) communication "
                "at every task-skew level.",
                holds=all(g > 0 for g in gaps.values()) and upload["ravan"] <= upload["lora"],
                figures={
                    "gap_ravan_minus_lora": gaps,
                    "seeds_ravan_above_lora": {a: wins("ravan", "lora", a) for a in names},
                    **figs_acc,
                    "base_model_acc": mean_std([b["mean"] for b in base.values()]),
                    "upload_per_round": upload,
                },
                rule="mean held-out accuracy over seeds (all tasks pooled): Ravan > LoRA at each "
                "skew level, and Ravan's upload per round <= LoRA's",
                figures_plot=["smollm2_accuracy.png"],
            )
        )
    if {"ffa", "ravan"} <= set(methods):
        claims.append(
            Claim(
                "ravan_beats_ffa_smollm2",
                "SmolLM2 text tasks: Ravan beats FFA-LoRA at every task-skew level.",
                holds=all(mean("ravan", a) > mean("ffa", a) for a in names)
                and upload["ravan"] <= upload["ffa"],
                figures={
                    "gap_ravan_minus_ffa": {a: mean("ravan", a) - mean("ffa", a) for a in names},
                    "seeds_ravan_above_ffa": {a: wins("ravan", "ffa", a) for a in names},
                    "upload_per_round": upload,
                },
                rule="mean held-out accuracy over seeds: Ravan > FFA-LoRA at each skew level, "
                "and Ravan's upload per round <= FFA-LoRA's",
            )
        )
    claims += shared_claims(
        "_smollm2",
        "SmolLM2 text tasks: ",
        gaps=gaps if {"lora", "ravan"} <= set(methods) else {},
        names=names,
        gap_statement="Ravan's advantage over LoRA FedAvg grows with task skew.",
        exact=exact if {"lora", "ravan"} <= set(methods) else None,
        exact_statement="on SmolLM2's adapted projections, averaging s_i H_i reproduces the "
        "mean of the clients' updates exactly; LoRA's separate averaging of A and B does not.",
        exact_rule=" over all adapted layers (2 clients after 2 local steps of the real client "
        "step)",
        flower=flower,
        flower_statement="the federated rounds on Flower give the in-process results.",
        plot="smollm2_accuracy.png",
    )
    plots = _plot(out, acc, curves, names, methods, base)
    layers = cfg.llm_layers
    notes = [
        f"SmolLM2-135M-Instruct (the gateway's GGUF, de-quantised, float32); tasks "
        f"{cfg.llm_task_list()} (flexmerge's generated yes/no questions; train and test use "
        f"disjoint items); {cfg.llm_clients} clients x {cfg.llm_per_client} training questions; "
        f"skew 'iid' = every task evenly, p = share of the client's primary task "
        f"(tasks[k mod T]), the rest evenly over the others.",
        f"Adapters on {cfg.llm_target_list()} of the last {layers} decoder layers for every "
        f"method; {cfg.llm_rounds} rounds x {cfg.llm_local_steps} local Adam steps of "
        f"{cfg.llm_batch} questions, every client every round, FedAvg weighted by sample count; "
        f"lr {cfg.llm_lr:g} for every method, fixed up front (not tuned on any split).",
        f"Upload per round and client (parameters actually sent): {upload}; ranks per "
        f"projection {ranks} (LoRA rank {cfg.llm_lora_rank}; Ravan {cfg.heads} heads).",
        f"Held-out accuracy: {cfg.llm_eval} test questions per task, balanced yes/no, scored by "
        "the first answer token's log-probability of yes vs no; 0.5 is chance. The base model "
        f"scores {np.mean([b['mean'] for b in base.values()]):.3f} (mean over seeds).",
        "Speed: the frozen layers below the first adapted one run once per question text "
        "(cached hidden states); a test checks the cached path's logits equal the plain forward.",
        f"SmolLM2 part wall time {time.time() - t0:.0f} s.",
    ]
    results = {
        "accuracy": acc, "per_task": per_task, "base": base, "curve_seed0_most_skewed": curves,
        "uploads": upload, "ranks": ranks, "exactness": exact, "flower": flower,
        "run_seconds": seconds, "seconds": time.time() - t0, "seeds": seeds,
    }  # fmt: skip
    return claims, results, notes, plots


def _plot(
    out: Path,
    acc: dict[str, dict[str, list[float]]],
    curves: dict[str, list[float]],
    names: list[str],
    methods: list[str],
    base: dict[int, dict[str, float]],
) -> list[str]:
    from training.research.report import plt_module, save_figure

    plt = plt_module()
    out.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    accuracy_bars(axes[0], acc, names, methods, "skew")
    axes[0].axhline(float(np.mean([b["mean"] for b in base.values()])), color="gray", ls="--",
                    label="base")  # fmt: skip
    axes[0].set_ylabel("held-out accuracy (all tasks)")
    axes[0].set_ylim(0.3, 1.0)
    axes[0].legend()
    for m in methods:
        if m in curves:
            axes[1].plot(curves[m], label=m, marker="o")
    axes[1].set_xlabel("round")
    axes[1].set_ylabel(f"held-out accuracy, seed 0, skew={names[-1]}")
    axes[1].legend()
    save_figure(fig, out / "smollm2_accuracy.png")
    return ["smollm2_accuracy.png"]
