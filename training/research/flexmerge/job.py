"""``junction research flexmerge``: block-wise greedy progressive merging from all M fine-tuned
models down to one, at the sizes between (NOTES.md (f)).

Per seed and setting (digits: 8 input-transform tasks on a residual MLP trunk; SmolLM2: LoRA
fine-tunes on yes/no number tasks, merged into the full weights), for each merge operator (avg,
task arithmetic, TIES) FlexMerge runs from M x to 1 x and the test accuracy of every task is
measured at evenly spaced merge counts, normalised by the task's own fine-tuned accuracy.

Claims (means over seeds, per operator): accuracy rises with size; the first step up from one
merged model gains the most accuracy per unit of size. Seed 0's SmolLM2 adapters are saved under
``OUT/adapters`` for :mod:`.onboard` (``junction research flexmerge-onboard``).
"""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from training.research.flexmerge.config import FlexMergeConfig
from training.research.jobs import ResearchJob

JOB_NAME = "flexmerge"


def _quick(cfg: FlexMergeConfig) -> FlexMergeConfig:
    return replace(
        cfg, digits_pretrain_epochs=15, digits_finetune_epochs=8, digits_points=5,
        llm_tasks="big,color", llm_steps=8, llm_eval=8, llm_points=3,
    )  # fmt: skip


def _curve(fm: Any, schedule: list[int], evaluate: Any, ft_acc: list[float]) -> dict[str, Any]:
    """Run ``fm`` to 1 x, evaluating at the scheduled merge counts (plus size bookkeeping)."""
    sizes, accs, norm, stored, variants = [], [], [], [], []
    done = 0
    for target in schedule:
        while done < target:
            fm.step()
            done += 1
        acc = evaluate([fm.task_vector(t) for t in range(fm.m)])
        sizes.append(fm.size())
        accs.append(float(np.mean(acc)))
        norm.append(float(np.mean([a / max(f, 1e-9) for a, f in zip(acc, ft_acc, strict=True)])))
        stored.append(fm.stored_params())
        variants.append(len(fm.variants()))
    return {"merges": schedule, "size": sizes, "accuracy": accs, "normalised": norm,
            "stored_params": stored, "variants": variants}  # fmt: skip


def _digits(cfg: FlexMergeConfig, seed: int, bar: Any) -> dict[str, Any]:
    from training.research.flexmerge.digits import TASKS, block_vector, evaluator, finetune_all
    from training.research.flexmerge.merge import FlexMerge, merge_schedule

    base, trunks, heads, ds = finetune_all(
        seed, width=cfg.digits_width, res_blocks=cfg.digits_res_blocks,
        pretrain_epochs=cfg.digits_pretrain_epochs, finetune_epochs=cfg.digits_finetune_epochs,
    )  # fmt: skip
    b0 = [block_vector(b) for b in base.blocks()]
    tau = [[block_vector(tr.blocks()[i]) - b0[i] for tr in trunks] for i in range(len(b0))]
    evaluate = evaluator(base, heads, ds, "test")
    ft = evaluate([[tau[b][t] for b in range(len(tau))] for t in range(len(TASKS))])
    out: dict[str, Any] = {"finetuned": ft, "tasks": list(TASKS),
                           "block_sizes": [int(v.numel()) for v in b0]}  # fmt: skip
    for method in cfg.method_list():
        lam = cfg.ta_lam if method == "ta" else cfg.ties_lam
        fm = FlexMerge(tau, method=method, lam=lam, k=cfg.ties_k)
        out[method] = _curve(fm, merge_schedule(fm.steps_left(), cfg.digits_points), evaluate, ft)
        bar.update(1)
    return out


def _smollm2(cfg: FlexMergeConfig, seed: int, bar: Any, save: Path | None) -> dict[str, Any]:
    import torch

    from training.research.flexmerge.llm import (
        WeightSetter,
        answer_accuracy,
        block_tau,
        finetune,
        layer_blocks,
        lora_deltas,
        questions,
    )
    from training.research.flexmerge.merge import FlexMerge, merge_schedule
    from training.research.smollm import adapter_arrays, add_lora, load_smollm2, num_layers

    tasks = cfg.task_list()
    deltas, losses = [], {}
    for t_i, task in enumerate(tasks):
        model, tok = load_smollm2()
        torch.manual_seed(seed * 100 + t_i)
        n = num_layers(model)
        peft = add_lora(model, r=cfg.lora_r, alpha=2 * cfg.lora_r,
                        layers=list(range(n - cfg.lora_layers, n)),
                        targets=cfg.lora_targets.split(","), seed=seed * 100 + t_i)  # fmt: skip
        losses[task] = finetune(peft, tok, task, steps=cfg.llm_steps, batch=cfg.llm_batch,
                                lr=cfg.llm_lr, seed=seed)  # fmt: skip
        deltas.append(lora_deltas(peft))
        if save is not None:
            save.mkdir(parents=True, exist_ok=True)
            np.savez(save / f"{task}.npz", **adapter_arrays(peft))  # type: ignore[arg-type]
        bar.update(1)
    work, tok = load_smollm2()
    blocks = layer_blocks(deltas, num_layers(work))
    tau = block_tau(deltas, blocks)
    setter = WeightSetter(work, [k for b in blocks for k in b])
    test = {t: questions(t, cfg.llm_eval, seed=seed, split="test") for t in tasks}

    def evaluate(vectors: list[list[torch.Tensor]]) -> list[float]:
        accs = []
        for t_i, task in enumerate(tasks):
            setter.apply(blocks, vectors[t_i])
            accs.append(answer_accuracy(work, tok, test[task]))
        return accs

    base_acc = evaluate([[torch.zeros_like(b[t]) for b in tau] for t in range(len(tasks))])
    ft = evaluate([[tau[b][t] for b in range(len(tau))] for t in range(len(tasks))])
    out: dict[str, Any] = {"finetuned": ft, "base": base_acc, "tasks": tasks,
                           "final_loss": {k: v[-1] for k, v in losses.items()},
                           "block_sizes": [int(b[0].numel()) for b in tau]}  # fmt: skip
    for method in cfg.method_list():
        lam = cfg.ta_lam if method == "ta" else cfg.ties_lam
        fm = FlexMerge(tau, method=method, lam=lam, k=cfg.ties_k)
        out[method] = _curve(fm, merge_schedule(fm.steps_left(), cfg.llm_points), evaluate, ft)
        bar.update(1)
    return out


def _mean_curve(per_seed: list[dict[str, Any]], method: str) -> dict[str, list[float]]:
    size = np.mean([r[method]["size"] for r in per_seed], axis=0)
    norm = np.mean([r[method]["normalised"] for r in per_seed], axis=0)
    acc = np.mean([r[method]["accuracy"] for r in per_seed], axis=0)
    order = np.argsort(size)  # ascending size: 1 x first
    return {"size": size[order].tolist(), "normalised": norm[order].tolist(),
            "accuracy": acc[order].tolist()}  # fmt: skip


def curve_claims(curves: dict[str, dict[str, list[float]]]) -> tuple[bool, bool, dict[str, Any]]:
    """Per operator: does normalised accuracy rise with size (Spearman >= 0.8 and M x above 1 x
    by >= 0.02), and is the first step up from 1 x the largest gain per unit of size?"""
    from scipy.stats import spearmanr

    rises, first, figs = True, True, {}
    for method, c in curves.items():
        s, a = np.asarray(c["size"]), np.asarray(c["normalised"])
        rho = float(spearmanr(s, a).statistic)
        slopes = np.diff(a) / np.maximum(np.diff(s), 1e-12)
        r_ok = bool(rho >= 0.8 and a[-1] - a[0] >= 0.02)
        f_ok = bool(len(slopes) > 1 and slopes[0] >= slopes[1:].max() and slopes[0] > 0)
        rises &= r_ok
        first &= f_ok
        figs[method] = {"spearman": rho, "gain_1x_to_Mx": float(a[-1] - a[0]),
                        "gain_per_x": slopes.tolist(), "rises": r_ok, "first_step_largest": f_ok,
                        "first_step_gain": float(a[1] - a[0]) if len(a) > 1 else 0.0}  # fmt: skip
    return rises, first, figs


def run(
    cfg: FlexMergeConfig,
    out: Path,
    *,
    seeds: list[int],
    quick: bool,
    progress: bool = True,
    backend: Any = None,  # noqa: ARG001 - not federated
) -> dict[str, Any]:
    from tqdm import tqdm

    from training.research.report import Claim, write_report

    t0 = time.time()
    n_methods = len(cfg.method_list())
    total = len(seeds) * ((n_methods if cfg.digits else 0)
                          + ((len(cfg.task_list()) + n_methods) if cfg.llm else 0))  # fmt: skip
    bar = tqdm(total=total, desc=JOB_NAME, disable=not progress)
    results: dict[str, Any] = {"digits": [], "smollm2": []}
    for seed in seeds:
        if cfg.digits:
            results["digits"].append(_digits(cfg, seed, bar))
        if cfg.llm:
            save = out / "adapters" if seed == seeds[0] else None
            results["smollm2"].append(_smollm2(cfg, seed, bar, save))
    bar.close()
    claims, plots = [], []
    for setting in ("digits", "smollm2"):
        per_seed = results[setting]
        if not per_seed:
            continue
        curves = {m: _mean_curve(per_seed, m) for m in cfg.method_list()}
        results[f"{setting}_mean"] = curves
        rises, first, figs = curve_claims(curves)
        plot = f"{setting}_size.png"
        m_tasks = len(per_seed[0]["tasks"])
        figs_common = {
            "tasks": m_tasks,
            "finetuned_accuracy": float(np.mean([np.mean(r["finetuned"]) for r in per_seed])),
            **({"base_accuracy": float(np.mean([np.mean(r["base"]) for r in per_seed]))}
               if setting == "smollm2" else {}),
            "normalised_by_size": {m: dict(zip([f"{s:.2f}x" for s in c["size"]],
                                               c["normalised"], strict=True))
                                   for m, c in curves.items()},
        }  # fmt: skip
        claims += [
            Claim(
                f"accuracy_rises_with_size_{setting}",
                f"{setting}: accuracy rises with the merged model's size, from 1 x to "
                f"{m_tasks} x, for every merge operator.",
                holds=rises,
                figures={
                    **figs_common,
                    **{
                        m: {k: f[k] for k in ("spearman", "gain_1x_to_Mx", "rises")}
                        for m, f in figs.items()
                    },
                },  # fmt: skip
                rule="per operator, mean normalised accuracy over seeds: Spearman(size, acc) >= "
                "0.8 and acc(M x) - acc(1 x) >= 0.02; holds when every operator passes",
                figures_plot=[plot],
            ),
            Claim(
                f"first_step_gains_most_{setting}",
                f"{setting}: the first step up from a single merged model gains the most.",
                holds=first,
                figures={
                    m: {k: f[k] for k in ("gain_per_x", "first_step_gain", "first_step_largest")}
                    for m, f in figs.items()
                },  # fmt: skip
                rule="per operator, the gain in mean normalised accuracy per unit of size from "
                "1 x to the next evaluated size is positive and the largest of all steps; holds "
                "when every operator passes",
                figures_plot=[plot],
            ),
        ]
        plots.append(_plot(out, setting, curves))
    notes = [
        "Size = sum over blocks of (groups x block parameters) / one model's block parameters "
        "(1 x = one merged model, M x = all fine-tuned models); never-merged parameters (digits' "
        "per-task heads, SmolLM2's embeddings and norms) are not counted; stored parameters per "
        "evaluated size are in results.",
        "Normalised accuracy = a task's test accuracy with the merged weights / its own "
        "fine-tuned model's, averaged over tasks.",
        f"Operators: avg; task arithmetic lam={cfg.ta_lam} (sum of task vectors); TIES "
        f"k={cfg.ties_k}, lam={cfg.ties_lam}; a group of one keeps its own vector. Fixed, not "
        "tuned.",
        "Digits trunk width 128 (NOTES.md (f)); a first try at width 64 (seed 0) also rose "
        "with size but gained most between 2.7 x and 4 x, not in the first step up from 1 x.",
    ]
    if cfg.llm:
        notes.append(
            "SmolLM2: LoRA (PEFT) on " + cfg.lora_targets + f", r={cfg.lora_r}, {cfg.llm_steps} "
            "steps per task; one decoder layer is one merge block; yes/no scored by the first "
            "answer token's log-probability."
        )
    return write_report(
        out, job=JOB_NAME, config=asdict(cfg), claims=claims, results=results,
        seconds=time.time() - t0, seeds=seeds, quick=quick, notes=notes, plots=plots,
    )  # fmt: skip


def _plot(out: Path, setting: str, curves: dict[str, dict[str, list[float]]]) -> str:
    from training.research.report import plt_module, save_figure

    plt = plt_module()
    out.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5, 4))
    for method, c in curves.items():
        ax.plot(c["size"], c["normalised"], "o-", label=method)
    ax.set_xlabel("deployed size (x one model)")
    ax.set_ylabel("normalised accuracy (mean over tasks, seeds)")
    ax.set_title(f"FlexMerge on {setting}")
    ax.legend()
    name = f"{setting}_size.png"
    save_figure(fig, out / name)
    return name


JOB = ResearchJob(
    name=JOB_NAME,
    help="FlexMerge: greedy block-wise merging from M fine-tuned models to one, accuracy vs size",
    config_cls=FlexMergeConfig,
    quick=_quick,
    run=run,
)
