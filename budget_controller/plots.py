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
}


def plot_frontier(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    for name, rows in report["methods"].items():
        color, marker = STYLE.get(name, ("tab:purple", "."))
        mean = rows["mean"]
        xs = [r["tokens"] for r in mean]
        ys = [r["accuracy"] for r in mean]
        if name == "no_budget":
            ax.scatter(xs[:1], ys[:1], color=color, marker=marker, s=60, label=name, zorder=3)
            continue
        ax.plot(xs, ys, color=color, marker=marker, label=name)
        for seed_rows in rows["per_seed"]:
            ax.scatter(
                [r["tokens"] for r in seed_rows],
                [r["accuracy"] for r in seed_rows],
                color=color,
                marker=marker,
                s=10,
                alpha=0.3,
            )
    saved = report["tokens_saved_vs_static"]
    title = "accuracy vs tokens per problem (mean over seeds {})".format(report["seeds"])
    sub = "tokens saved at static's accuracy (mean over the budgets it reaches, max): " + ", ".join(
        f"{m} {saved[m]['mean']:.0%}, {saved[m]['max_mean_over_seeds']:.0%}"
        for m in ("tab", "tab_all_subq")
        if saved[m]["mean"] is not None
    )
    ax.set_title(title + "\n" + sub, fontsize=9)
    ax.set_xlabel("tokens generated per problem")
    ax.set_ylabel("accuracy (every sub-question solved)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
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
            hist = run.get("history") or []
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
