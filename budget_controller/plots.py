"""Figures for ``junction budget eval``: the accuracy-tokens frontier and GRPO training curves.

Usage::

    plot_frontier(report, out / "frontier.png")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

STYLE = {
    "static": ("tab:gray", "s"),
    "no_budget": ("black", "x"),
    "difficulty": ("tab:orange", "^"),
    "tab": ("tab:blue", "o"),
    "tab_all_subq": ("tab:green", "D"),
    "oracle": ("tab:red", "*"),
    "oracle_turn": ("tab:red", "*"),
}


def plot_frontier(report: dict[str, Any], path: Path) -> None:
    """Accuracy against tokens per problem, whole-problem (left) and per-turn (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    saved = report["tokens_saved_vs_static"]
    for ax, (metric, suffix, label) in zip(
        axes,
        [
            ("accuracy", "", "whole-problem accuracy (every turn correct)"),
            ("turn_accuracy", "_per_turn", "per-turn accuracy (fraction of turns correct)"),
        ],
        strict=True,
    ):
        for name, rows in report["methods"].items():
            if name.startswith("oracle") and name != ("oracle" if not suffix else "oracle_turn"):
                continue
            color, marker = STYLE.get(name, ("tab:purple", "."))
            mean = rows["mean"]
            xs = [r["tokens"] for r in mean]
            ys = [r[metric] for r in mean]
            if name == "no_budget":
                ax.scatter(xs[:1], ys[:1], color=color, marker=marker, s=60, label=name, zorder=3)
                continue
            ax.plot(xs, ys, color=color, marker=marker, label=name)
            for seed_rows in rows["per_seed"]:
                ax.scatter(
                    [r["tokens"] for r in seed_rows],
                    [r[metric] for r in seed_rows],
                    color=color,
                    marker=marker,
                    s=10,
                    alpha=0.3,
                )
        sub = "tokens saved at static's accuracy (mean over the budgets reached): " + ", ".join(
            f"{m} {saved[m + suffix]['mean']:.0%}"
            for m in ("tab", "tab_all_subq")
            if saved.get(m + suffix, {}).get("mean") is not None
        )
        ax.set_title(f"{label}\n{sub}", fontsize=8)
        ax.set_xlabel("tokens generated per problem")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle(
        "served policies vs baselines, mean over seeds {} (faint: each seed)".format(
            report["seeds"]
        ),
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_allocations(
    allocations: dict[str, dict[str, list[float]]], path: Path, *, budget_multiple: float
) -> None:
    """Each turn's grant against the length its answer needed (log-log), per method.

    On the diagonal a turn gets exactly what it needs; above it tokens are granted but not used;
    below it the answer is cut off. The oracle sits on the diagonal (or at zero: nothing spent on
    problems that cannot fit)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = [
        n for n in ("static", "oracle", "tab", "tab_all_subq", "difficulty") if n in allocations
    ]
    if not names:
        return
    fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 3.8), sharey=True)
    axes = np.atleast_1d(axes)
    rng = np.random.default_rng(0)
    for ax, name in zip(axes, names, strict=True):
        d = allocations[name]
        need = np.asarray(d["needed"])
        raw = np.asarray(d["granted"])
        grant = np.maximum(raw, 0.5)  # zero grants drawn at the bottom
        ok = np.asarray(d["correct"]) > 0.5
        pick = rng.choice(len(need), size=min(3000, len(need)), replace=False)
        for sel, color, lab in ((~ok, "tab:gray", "turn failed"), (ok, "tab:green", "correct")):
            idx = pick[sel[pick]]
            ax.scatter(need[idx], grant[idx], s=3, alpha=0.35, color=color, label=lab)
        lim = [1, max(need.max(), grant.max()) * 1.2]
        ax.plot(lim, lim, color="black", lw=0.8, ls="--")
        ax.set_xscale("log")
        ax.set_yscale("log")
        used = np.minimum(raw, need).sum() / len(need)
        ax.set_title(f"{name}: {used:.0f} tokens/turn, {ok.mean():.2f} correct", fontsize=9)
        ax.set_xlabel("needed length (recorded answer, tokens)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("grant (max_tokens)")
    axes[0].legend(fontsize=7, markerscale=3)
    fig.suptitle(
        f"grant vs needed length per turn at B = {budget_multiple:g} median lengths per turn "
        "(first seed, 3,000 turns drawn)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_training(report: dict[str, Any], path: Path) -> None:
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name in ("tab", "tab_all_subq"):
        color, _ = STYLE[name]
        for run in report["training"].get(name, []):
            hist = [h for h in run.get("history") or [] if "reward" in h]
            steps = [h["step"] for h in hist]
            r = np.array([h["reward"] for h in hist])
            w = min(10, len(r)) or 1
            smooth = np.convolve(r, np.ones(w) / w, mode="valid")  # rolling mean over w steps
            axes[0].plot(steps[w - 1 :], smooth, color=color, alpha=0.7, lw=1.0)
            val = [(h["step"], h["val_reward"]) for h in hist if "val_reward" in h]
            if val:
                axes[1].plot(*zip(*val, strict=True), color=color, marker="o", alpha=0.7)
        axes[0].plot([], [], color=color, label=name)
    axes[0].set_title("GRPO mean trajectory reward (train, rolling mean of 10 steps)")
    axes[1].set_title("greedy reward on val problems")
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
